//! The `kafscale dev` server process: spawn, readiness, kill -9, restart, HTTP, waits.

use super::*;

/// Options for [`DevServer::start`].
#[derive(Clone, Debug, Default)]
pub struct DevOptions {
    /// Reuse this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Extra `KAFSCALE_*` (or other) environment variables; they override the defaults.
    pub env: Vec<(String, String)>,
    /// Set: the HTTP endpoint serves HTTPS (`KAFSCALE_HTTP_TLS_*` in `env`)
    /// with a certificate of this CA, and is probed over HTTPS.
    pub https_ca: Option<PathBuf>,
}

impl DevOptions {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The HTTP endpoint serves HTTPS with a certificate of the CA in `ca`.
    pub fn https_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.https_ca = Some(ca.into());
        self
    }
}

/// A running `kafscale dev` process with its own ports, data dir and log file.
pub struct DevServer {
    child: Option<Child>,
    /// Holds the temporary directory (log file, and data dir unless one was given).
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    kafka_port: u16,
    http_port: u16,
    grpc_port: u16,
    env: Vec<(String, String)>,
    runs: u32,
    https_ca: Option<PathBuf>,
}

impl DevServer {
    /// Spawns `kafscale dev` and waits until `GET /readyz` answers 200.
    pub async fn start(opts: DevOptions) -> DevServer {
        let tmp = tempfile::Builder::new()
            .prefix("kafscale-it-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let [kafka_port, http_port, grpc_port] = free_ports();
        let log_path = tmp.path().join("server.log");
        let mut server = DevServer {
            child: None,
            _tmp: tmp,
            data_dir,
            log_path,
            kafka_port,
            http_port,
            grpc_port,
            env: opts.env,
            runs: 0,
            https_ca: opts.https_ca,
        };
        server.spawn_and_wait_ready().await;
        server
    }

    /// `host:port` of the Kafka listener, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port))
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// GET `path` of the HTTP endpoint (over HTTPS when it serves TLS).
    pub async fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.https_ca {
            Some(ca) => https_get(self.http_addr(), path, ca).await,
            None => http_get(self.http_addr(), path).await,
        }
    }

    /// Prometheus text of `GET /metrics` (panics unless it answers 200).
    pub async fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics").await.expect("scrape /metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Last `lines` lines of the server log (all runs, appended).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILLs the server (no graceful shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let status = child.wait().expect("wait for killed server");
            self.note(&format!(
                "killed with SIGKILL by the test harness ({status})"
            ));
        }
    }

    /// Process id of the running server, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server gracefully: SIGTERM, then waits (bounded by `timeout`)
    /// for it to flush and exit, and asserts that it exited with status 0.
    /// Follow with [`DevServer::restart`] for a clean restart.
    pub async fn terminate(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.note("sending SIGTERM (graceful shutdown requested by the test harness)");
        send_signal(child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.note("did not exit after SIGTERM; killed with SIGKILL");
                panic!(
                    "kafscale dev did not exit within {timeout:?} after SIGTERM (server log printed below)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.note(&format!("exited after SIGTERM ({status})"));
        assert!(
            status.success(),
            "kafscale dev exited with {status} after SIGTERM (server log printed below)"
        );
    }

    /// Sets (or with `None` removes) an environment variable for the next
    /// start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; returns its
    /// status (it is reaped), or `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().expect("try_wait");
            if let Some(status) = status {
                self.child = None;
                self.note(&format!("exited on its own ({status})"));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts the server on the same data dir and ports (kill -9 first if
    /// it is still running) and waits until it is ready again.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait_ready().await;
    }

    /// Panics if the process has exited (Drop then prints the server log).
    pub fn assert_running(&mut self) {
        let exited = self.child.as_mut().map(|c| c.try_wait().expect("try_wait"));
        match exited {
            Some(None) => {}
            Some(Some(status)) => {
                panic!("kafscale dev exited unexpectedly with {status} (server log printed below)",)
            }
            None => panic!("kafscale dev is not running (killed by the test)"),
        }
    }

    fn note(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(f, "===== [test harness] {line} =====");
        }
    }

    /// Starts the server and waits until it is ready. A listener port taken
    /// between [`free_ports`] choosing it and the server binding it (another
    /// test's socket got it meanwhile) is not the server's fault: the first
    /// start then moves to fresh ports, a restart (whose clients know the
    /// ports) tries the same ones again a little later.
    async fn spawn_and_wait_ready(&mut self) {
        const ATTEMPTS: u32 = 10;
        for attempt in 1..=ATTEMPTS {
            let log_before = self.log().len();
            self.spawn();
            let Err(status) = self.wait_ready().await else {
                return;
            };
            let this_run = self.log().get(log_before..).unwrap_or_default().to_string();
            if attempt == ATTEMPTS || !this_run.contains("Address already in use") {
                panic!(
                    "kafscale dev exited with {status} before /readyz answered 200 (server log printed below)",
                );
            }
            self.child = None;
            if self.runs == 1 {
                [self.kafka_port, self.http_port, self.grpc_port] = free_ports();
                self.runs = 0;
            } else {
                self.runs -= 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            self.note("a port was taken by another socket; starting again");
        }
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        self.note(&format!(
            "starting `kafscale dev` run #{} (kafka {}, http {}, grpc {}, data {})",
            self.runs,
            self.kafka_port,
            self.http_port,
            self.grpc_port,
            self.data_dir.display()
        ));
        let mut cmd = Command::new(kafscale_bin());
        cmd.arg("dev");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KAFSCALE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("KAFSCALE_DATA_DIR", &self.data_dir)
            .env(
                "KAFSCALE_KAFKA_ADDR",
                format!("127.0.0.1:{}", self.kafka_port),
            )
            .env("KAFSCALE_ADVERTISED_HOST", "127.0.0.1")
            .env("KAFSCALE_ADVERTISED_PORT", self.kafka_port.to_string())
            .env(
                "KAFSCALE_HTTP_ADDR",
                format!("127.0.0.1:{}", self.http_port),
            )
            .env(
                "KAFSCALE_GRPC_ADDR",
                format!("127.0.0.1:{}", self.grpc_port),
            )
            .env("KAFSCALE_LOG_LEVEL", "info")
            .env("RUST_BACKTRACE", "1");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", kafscale_bin()));
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200; `Err` with the exit status if the
    /// process exited first. Panics if it is not ready in time.
    async fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let started = Instant::now();
        let mut last = String::from("no attempt yet");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                return Err(status);
            }
            match self.http_get("/readyz").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("HTTP {status}: {body}"),
                Err(e) => last = format!("error: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "kafscale dev not ready within {READY_TIMEOUT:?} (last /readyz: {last}) (server log printed below)",
        );
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kafscale dev log (last 150 lines of {}) ---\n{}\n--- end of server log ---",
                self.log_path.display(),
                self.log_tail(150)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Distinct free loopback ports (all bound at once, then released).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<StdTcpListener> = (0..N)
        .map(|_| StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// Minimal HTTP/1.1 GET; returns (status, body). Bounded by a 3 s timeout.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        get_over(stream, addr, path).await
    };
    let response = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP timeout"))??;
    parse_http(response)
}

/// [`http_get`] over TLS, trusting the CA certificates in `ca_file` (the
/// server's certificate must name 127.0.0.1).
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    ca_file: &Path,
) -> std::io::Result<(u16, String)> {
    use rustls::pki_types::pem::PemObject;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| invalid(e.to_string()))?
    {
        roots
            .add(c.map_err(|e| invalid(e.to_string()))?)
            .map_err(|e| invalid(e.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::from(addr.ip());
        let stream = connector.connect(name, tcp).await?;
        get_over(stream, addr, path).await
    };
    let response = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTPS timeout"))??;
    parse_http(response)
}

/// Sends a GET of `path` on `stream` and reads the whole response.
async fn get_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // A TLS peer may close without close_notify once the body is sent.
    match stream.read_to_end(&mut response).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(response)
}

/// (status, body) of an HTTP/1.1 response.
fn parse_http(response: Vec<u8>) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad HTTP response: {text:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A unique-enough name for topics (tests run in parallel, each has its own server anyway).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Polls `cond` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`poll_until`], but `cond` says why it is not satisfied yet
/// (`Err(reason)`); the last reason is part of the panic message on timeout.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match cond() {
            Ok(v) => return v,
            Err(reason) => reason,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last state: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the async `cond` every 200 ms until it holds; panics naming `what`
/// if it has not within `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends signal `name` (`"STOP"`, `"CONT"`, `"TERM"`, `"KILL"`, ...) to
/// process `pid` through `sh -c kill` (no libc dependency); panics if that fails.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run `kill -{name} {pid}`: {e}"));
    assert!(
        status.success(),
        "`kill -{name} {pid}` failed with {status}"
    );
}

/// What `kafscale ctl` printed and whether it succeeded.
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// The JSON it printed (for `--json` runs that succeeded).
    pub fn json(&self) -> serde_json::Value {
        assert!(self.success, "kafscale ctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("kafscale ctl printed no JSON ({e}): {}", self.stdout))
    }
}

/// Runs `kafscale ctl ARGS --addr ADDR` (the process's control API).
pub async fn ctl(addr: SocketAddr, args: &[&str]) -> CtlOutput {
    let out = tokio::process::Command::new(kafscale_bin())
        .arg("ctl")
        .args(args)
        .args(["--addr", &addr.to_string()])
        .output()
        .await
        .expect("run kafscale ctl");
    CtlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `kafscale` binary the tests run: `KAFSCALE_TEST_BIN` if set (a copy,
/// so that rebuilds while tests run do not change what they test), else
/// the one cargo built for this test run.
pub fn kafscale_bin() -> String {
    std::env::var("KAFSCALE_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kafscale").to_string())
}

/// The value of the series `name{labels}` in a Prometheus text scrape (0 if
/// absent); `labels` as exported, in label-name order.
pub fn metric_value(scrape: &str, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(&series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
