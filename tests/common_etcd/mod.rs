//! Harness for tests against a real single-node etcd (3.4 from Debian's
//! `etcd-server` package, installed by `scripts/test.sh`).
//!
//! [`Etcd::start`] launches `etcd` on free loopback ports (client + peer)
//! with a fresh data directory (on `/dev/shm` when available), waits until it
//! serves linearizable reads, and kills it when dropped. It can be killed and
//! restarted on the same ports and data to exercise reconnects. When the
//! `etcd` binary is missing the test fails with instructions instead of
//! silently skipping.

// Each test crate uses only a subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafscale_controlplane::{EtcdStore, MetadataStore};

/// How long etcd may take to answer after it is launched.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd server owned by one test.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

/// The etcd binary: `$ETCD_BIN` or `etcd` on the PATH.
fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// Fails the test with instructions when etcd is not installed.
fn require_etcd() {
    let bin = etcd_bin();
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "etcd is not installed (`{bin} --version` failed). These tests need a real etcd 3.4+: \
         run scripts/test.sh, which installs it, or `sudo apt-get install -y etcd-server \
         etcd-client` (or point ETCD_BIN at an etcd binary)."
    );
}

/// Two distinct free loopback ports.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Etcd {
    /// Starts a fresh etcd and waits until it serves reads. Panics (with the
    /// server log) when it does not come up.
    pub async fn start() -> Etcd {
        require_etcd();
        let dir = match tempfile::Builder::new()
            .prefix("kafscale-etcd-")
            .tempdir_in("/dev/shm")
        {
            Ok(d) => d,
            Err(_) => tempfile::Builder::new()
                .prefix("kafscale-etcd-")
                .tempdir()
                .expect("create etcd temp dir"),
        };
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: 0,
            peer_port: 0,
        };
        // A port picked as free can be taken before etcd binds it: retry.
        for _ in 0..3 {
            (etcd.client_port, etcd.peer_port) = free_ports();
            let _ = std::fs::remove_dir_all(etcd.data_dir());
            etcd.spawn();
            if etcd.wait_ready().await {
                return etcd;
            }
            etcd.kill();
        }
        let last_log = etcd.log();
        panic!("etcd did not become ready; last log lines:\n{last_log}");
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A new store connected to this etcd.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(vec![self.endpoint()], None)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to etcd at {}: {e}\n{}",
                    self.endpoint(),
                    tail(&self.log_path(), 40)
                )
            })
    }

    /// The server log (for failure messages).
    pub fn log(&self) -> String {
        tail(&self.log_path(), 60)
    }

    /// Kills etcd with SIGKILL (data stays for [`Self::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd if running and starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_ready().await,
            "etcd did not come back after a restart:\n{}",
            self.log()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let child = Command::new(etcd_bin())
            .arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            // Fast election, and a 1 s minimum lease TTL (default is 2 s).
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", etcd_bin()));
        self.child = Some(child);
    }

    /// Waits until etcd answers a linearizable read (so it has a leader);
    /// false when it exits or the deadline passes.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(store) = EtcdStore::connect(vec![self.endpoint()], None).await {
                if store.get("/__harness_ready").await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
