//! Consumer groups through kafka-python, an independent (pure-Python) Kafka
//! protocol implementation: runs `tests/python/groups_check.py` against
//! `kafscale dev`. kafka-python must be installed (scripts/test.sh does it);
//! a missing module fails the test rather than skipping it.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{DevOptions, DevServer};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/groups_check.py");
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_consumer_groups_and_group_admin() {
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import kafka; print(kafka.__version__)"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); run scripts/test.sh to install it"));
    assert!(
        probe.status.success(),
        "kafka-python is not importable ({}); run scripts/test.sh, which installs kafka-python==3.0.12:\n{}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
    eprintln!(
        "kafka-python {}",
        String::from_utf8_lossy(&probe.stdout).trim()
    );

    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
            .await;
    let child = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .args(["--bootstrap", &server.bootstrap()])
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run python3 {SCRIPT}: {e}"));
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{SCRIPT} did not finish within {SCRIPT_TIMEOUT:?}\n--- server log tail ---\n{}",
                server.log_tail(80)
            )
        })
        .expect("groups_check.py output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{SCRIPT} failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server log tail ---\n{}",
        output.status,
        server.log_tail(80)
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
}
