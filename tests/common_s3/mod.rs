//! Harness for tests against a real S3-compatible server: moto (`moto_server`,
//! in memory, honours `If-None-Match: *` with 412).
//!
//! * [`MotoServer::start`] runs `moto_server` on a free loopback port, waits
//!   until it answers HTTP, and kills it when dropped. If `moto_server` is not
//!   installed it panics (the test fails, it is never skipped) and says to run
//!   `scripts/test.sh`, which installs it.
//! * [`MotoServer::config`] / [`MotoServer::create_bucket`] give ready-to-use
//!   [`S3Store`]s (static test credentials, path-style addressing); buckets
//!   are created through the AWS SDK.
//!
//! Every wait is bounded and failures panic with the server's log.

// Each integration test crate uses only a subset of these helpers.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafscale_logworker::metrics::S3Metrics;
use kafscale_logworker::objstore::s3::{S3Config, S3Store};

/// How long moto may take to start answering.
pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);
/// The region the test stores use.
pub const REGION: &str = "us-east-1";

/// A running `moto_server`, killed on drop.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// A loopback port nothing listens on (connections are refused).
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn tail(path: &PathBuf) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(log.len());
    log[start..].to_string()
}

/// Whether an HTTP server answers on `port`.
fn answers_http(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl MotoServer {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port and waits
    /// until it answers. Panics if moto is not installed or does not start.
    pub fn start() -> Self {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("moto_server did not start after 3 attempts; last log:\n{last_log}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir for the moto log");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("create moto log");
        let err = out.try_clone().expect("clone moto log handle");
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "moto_server is not installed (not found on PATH). The S3 tests need a real \
                 S3-compatible server: run scripts/test.sh (it installs moto), or \
                 `python3 -m pip install 'moto[server]'`"
            ),
            Err(e) => panic!("cannot run moto_server: {e}"),
        };
        let mut server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + MOTO_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                // Most likely the port was taken meanwhile: the caller retries.
                return Err(format!(
                    "moto_server exited with {status}:\n{}",
                    tail(&server.log)
                ));
            }
            if answers_http(port) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                panic!(
                    "moto_server did not answer on port {port} within {MOTO_START_TIMEOUT:?}; \
                     log:\n{}",
                    tail(&server.log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far (for assertion messages).
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// A configuration for `bucket` on this server: static test credentials,
    /// path-style addressing.
    pub fn config(&self, bucket: &str) -> S3Config {
        let mut cfg = S3Config::new(bucket, REGION);
        cfg.endpoint = Some(self.endpoint.clone());
        cfg.path_style = true;
        cfg.access_key = Some("testing".into());
        cfg.secret_key = Some("testing".into());
        cfg
    }

    /// A store for `cfg`, which must point at this server.
    pub async fn connect(&self, cfg: S3Config, metrics: S3Metrics) -> S3Store {
        S3Store::connect(cfg, metrics)
            .await
            .expect("build the S3 client")
    }

    /// Creates `bucket` through the SDK and returns a store for it.
    pub async fn create_bucket(&self, bucket: &str, metrics: S3Metrics) -> S3Store {
        let store = self.connect(self.config(bucket), metrics).await;
        if let Err(e) = store.client().create_bucket().bucket(bucket).send().await {
            panic!(
                "create bucket {bucket}: {e:?}\nmoto log:\n{}",
                self.log_tail()
            );
        }
        store
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
