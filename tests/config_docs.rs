//! The configuration tables in docs/configuration.md match the binary: for
//! each subcommand, every documented variable exists with the documented
//! default, and every variable the subcommand reads is documented.

use std::process::Command;

fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args([sub, "--help"])
        .env_clear()
        .output()
        .expect("run kafscale --help");
    // Whitespace collapsed: clap lays help out on one or several lines.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table rows of section "## `kafscale <sub>`": (variable, default cell).
fn documented(sub: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("read docs");
    let heading = format!("## `kafscale {sub}`");
    let section = doc
        .split("\n## ")
        .find(|s| format!("## {s}").starts_with(&heading))
        .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
    section
        .lines()
        .filter(|l| l.starts_with("| `KAFSCALE_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

fn check(sub: &str) {
    let help = help(sub);
    let rows = documented(sub);
    for (var, default) in &rows {
        assert!(
            // Secrets are listed without their value: `[env: VAR]`.
            help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]")),
            "{sub}: {var} is documented but not read by the binary"
        );
        if let Some(d) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            assert!(
                help.contains(&format!("{var}=] [default: {d}]")),
                "{sub}: {var}: documented default {d} not in --help"
            );
        }
    }
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("KAFSCALE_") {
            assert!(
                rows.iter().any(|(d, _)| d == word),
                "{sub}: {word} is read by the binary but not documented"
            );
        }
    }
}

#[test]
fn documented_defaults_match_dev_help() {
    check("dev");
}

#[test]
fn documented_defaults_match_logworker_help() {
    check("logworker");
}

#[test]
fn documented_defaults_match_gateway_help() {
    check("gateway");
}

#[test]
fn documented_defaults_match_operator_help() {
    check("operator");
}
