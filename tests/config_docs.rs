//! The configuration table in docs/configuration.md matches the binary:
//! every documented variable exists with the documented default, and every
//! variable the binary reads is documented.

use std::process::Command;

#[test]
fn documented_defaults_match_dev_help() {
    let help = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(["dev", "--help"])
        .env_clear()
        .output()
        .expect("run kafscale dev --help");
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("read docs");
    let mut documented = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `KAFSCALE_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let var = cells[1].trim_matches('`');
        let default = cells[2];
        documented.push(var.to_string());
        assert!(
            help.contains(&format!("[env: {var}=")),
            "{var} is documented but not read by the binary"
        );
        if let Some(d) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            assert!(
                help.contains(&format!("{var}=] [default: {d}]")),
                "{var}: documented default {d} not in --help"
            );
        }
    }
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("KAFSCALE_") {
            assert!(
                documented.iter().any(|d| d == word),
                "{word} is read by the binary but not documented"
            );
        }
    }
}
