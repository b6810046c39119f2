//! Harness for distributed-mode tests: a real etcd, a real S3-compatible
//! server (moto), and `kafscale logworker` / `kafscale gateway` processes on
//! free loopback ports, each of which can be killed (-9), stopped (SIGSTOP),
//! resumed, terminated (SIGTERM) and restarted.
//!
//! Test crates using it declare `mod common; mod common_etcd; mod common_s3;
//! mod common_cluster;`.

#![allow(dead_code)]

pub mod link;

use crate::common::{http_get, https_get, send_signal};
use crate::common_etcd::Etcd;
use crate::common_s3::MotoServer;
use kafscale_controlplane::{Metadata, MetadataStore};
use kafscale_logworker::metrics::S3Metrics;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lease TTL used by cluster tests: failover within a few seconds.
pub const LEASE_TTL_MS: u64 = 3000;
/// How long a process may take to answer `/readyz`. A worker is ready once
/// its assigned partitions are open; an open may wait up to 10 s for each
/// live previous owner to hand over before sealing its stream, and a
/// coordinator slot replays its log, which on a loaded 2-core machine took
/// over 30 s in the long nemesis.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One `kafscale <subcommand>` process.
pub struct Proc {
    pub name: String,
    sub: &'static str,
    env: Vec<(String, String)>,
    http_port: u16,
    log_path: PathBuf,
    child: Option<Child>,
    runs: u32,
    /// Set: the HTTP endpoint serves HTTPS with a certificate of this CA.
    https_ca: Option<PathBuf>,
}

impl Proc {
    fn new(
        name: String,
        sub: &'static str,
        env: Vec<(String, String)>,
        dir: &std::path::Path,
    ) -> Self {
        let http_port = free_port();
        Self {
            log_path: dir.join(format!("{name}.log")),
            name,
            sub,
            env,
            http_port,
            child: None,
            runs: 0,
            https_ca: None,
        }
    }

    fn note(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "===== [test harness] {line} =====");
        }
    }

    /// Sets (or with `None` removes) an env var for the next spawn.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Whether the process is stopped (SIGSTOP), per /proc.
    pub fn is_stopped(&self) -> bool {
        self.pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().next().map(|s| s == "T")
            })
            .unwrap_or(false)
    }

    /// Spawns the process (it must not be running).
    pub fn spawn(&mut self) {
        self.runs += 1;
        self.note(&format!(
            "starting `kafscale {}` run #{}",
            self.sub, self.runs
        ));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        // KAFSCALE_TEST_BIN: a copy of the binary, so that a long run
        // (scripts/nemesis.sh) is not affected by rebuilds while it runs.
        let bin = std::env::var("KAFSCALE_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kafscale").to_string());
        let mut cmd = Command::new(bin);
        cmd.arg(self.sub);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KAFSCALE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env(
            "KAFSCALE_HTTP_ADDR",
            format!("127.0.0.1:{}", self.http_port),
        )
        .env("RUST_BACKTRACE", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn kafscale"));
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            if let Ok((200, _)) = self.http_get("/readyz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} not ready within {READY_TIMEOUT:?}:\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// Spawns and waits until ready.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// The HTTP endpoint address.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.note(&format!("exited: {status}"));
        Some(status)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.note("killed with SIGKILL");
        }
    }

    /// Sends a signal by name (STOP, CONT, TERM).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            self.note(&format!("sending SIG{name}"));
            send_signal(pid, name);
        }
    }

    /// Waits (bounded) for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            self.child.as_ref()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// GET `path` of the HTTP endpoint (over HTTPS when it serves TLS).
    pub async fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.https_ca {
            Some(ca) => https_get(self.http_addr(), path, ca).await,
            None => http_get(self.http_addr(), path).await,
        }
    }

    /// Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http_get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log (all runs).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Options of a cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    pub workers: usize,
    pub gateways: usize,
    /// Extra env for every process.
    pub env: Vec<(String, String)>,
    /// Also create a second bucket and configure it as the read replica.
    pub read_replica: bool,
    /// Extra env for workers only.
    pub worker_env: Vec<(String, String)>,
    /// Extra env for gateways only.
    pub gateway_env: Vec<(String, String)>,
    /// Every worker reaches etcd through its own [`link::TcpLink`]
    /// ([`Cluster::etcd_links`]), which a test can cut to partition that
    /// worker from etcd alone.
    pub etcd_links: bool,
    /// Every worker reaches S3 through its own [`link::TcpLink`]
    /// ([`Cluster::s3_links`]), which a test can cut to partition that
    /// worker from S3 alone.
    pub s3_links: bool,
    /// Set: every process serves its HTTP endpoint over TLS with a
    /// certificate of this CA (`KAFSCALE_HTTP_TLS_*` in `env`), and is
    /// probed over HTTPS.
    pub http_ca: Option<PathBuf>,
}

/// Something between the workers and S3 (a fault-injecting proxy, say), for
/// [`Cluster::start_with_s3_proxy`]: called once with moto's endpoint, it
/// returns the S3 endpoint the workers are given.
#[derive(Clone)]
pub struct S3Proxy(pub Arc<dyn Fn(&str) -> String + Send + Sync>);

impl S3Proxy {
    /// Wraps `f` (moto's endpoint → the workers' endpoint).
    pub fn new(f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for S3Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Proxy(..)")
    }
}

/// etcd + moto + workers + gateways.
pub struct Cluster {
    pub etcd: Etcd,
    pub s3: MotoServer,
    pub workers: Vec<Proc>,
    pub gateways: Vec<Proc>,
    pub namespace: String,
    pub bucket: String,
    pub replica_bucket: Option<String>,
    /// Worker `i`'s link to etcd, when the cluster was started with
    /// [`ClusterOptions::etcd_links`].
    pub etcd_links: Vec<link::TcpLink>,
    link_etcd: bool,
    /// Worker `i`'s link to S3, when the cluster was started with
    /// [`ClusterOptions::s3_links`].
    pub s3_links: Vec<link::TcpLink>,
    /// The S3 server the links lead to.
    link_s3: Option<std::net::SocketAddr>,
    common_env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
    gateway_env: Vec<(String, String)>,
    http_ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    kafka_ports: Vec<u16>,
}

impl Cluster {
    /// Starts etcd, moto, the bucket(s), then every worker and gateway, and
    /// waits until all are ready and every partition of the coordinator topic
    /// is assigned.
    pub async fn start(opts: ClusterOptions) -> Cluster {
        Self::start_inner(opts, None).await
    }

    /// Like [`Cluster::start`], with the workers reaching S3 through the
    /// endpoint `proxy` returns for moto's (the test's own calls through
    /// [`Cluster::s3`] go straight to moto).
    pub async fn start_with_s3_proxy(opts: ClusterOptions, proxy: S3Proxy) -> Cluster {
        Self::start_inner(opts, Some(proxy)).await
    }

    async fn start_inner(opts: ClusterOptions, s3_proxy: Option<S3Proxy>) -> Cluster {
        let etcd = Etcd::start().await;
        let s3 = MotoServer::start();
        let bucket = "kafscale-data".to_string();
        let metrics = S3Metrics::new(&prometheus::Registry::new()).expect("metrics");
        s3.create_bucket(&bucket, metrics.clone()).await;
        let replica_bucket = if opts.read_replica {
            let b = "kafscale-replica".to_string();
            s3.create_bucket(&b, metrics).await;
            Some(b)
        } else {
            None
        };
        let s3cfg = s3.config(&bucket);
        let worker_s3_endpoint = match &s3_proxy {
            Some(proxy) => (proxy.0)(&s3.endpoint),
            None => s3cfg.endpoint.clone().unwrap_or_default(),
        };
        let link_s3 = opts.s3_links.then(|| socket_addr(&worker_s3_endpoint));
        let namespace = format!("it{}", free_port());
        let mut common_env: Vec<(String, String)> = vec![
            ("KAFSCALE_ETCD_ENDPOINTS".into(), etcd.endpoint()),
            ("KAFSCALE_S3_NAMESPACE".into(), namespace.clone()),
            ("KAFSCALE_LEASE_TTL_MS".into(), LEASE_TTL_MS.to_string()),
            ("KAFSCALE_LOG_LEVEL".into(), "info".into()),
        ];
        let worker_env: Vec<(String, String)> = {
            let mut v = vec![
                ("KAFSCALE_S3_BUCKET".into(), bucket.clone()),
                ("KAFSCALE_S3_REGION".into(), s3cfg.region.clone()),
                ("KAFSCALE_S3_ENDPOINT".into(), worker_s3_endpoint),
                ("KAFSCALE_S3_PATH_STYLE".into(), "true".into()),
                // What the default (auto) picks on HTTPS, as on AWS: PUT
                // bodies streamed from their parts, unsigned, with a CRC32C.
                // The signed path is covered by tests/s3_object_store.rs.
                ("KAFSCALE_S3_PAYLOAD_SIGNING".into(), "unsigned".into()),
                (
                    "KAFSCALE_S3_ACCESS_KEY".into(),
                    s3cfg.access_key.clone().unwrap_or_default(),
                ),
                (
                    "KAFSCALE_S3_SECRET_KEY".into(),
                    s3cfg.secret_key.clone().unwrap_or_default(),
                ),
                (
                    "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS".into(),
                    "0".into(),
                ),
                ("KAFSCALE_OFFSETS_TOPIC_PARTITIONS".into(), "8".into()),
            ];
            if let Some(r) = &replica_bucket {
                v.push(("KAFSCALE_S3_READ_BUCKET".into(), r.clone()));
            }
            v.extend(opts.worker_env.iter().cloned());
            v
        };
        common_env.extend(opts.env.iter().cloned());
        let mut dir = tempfile::Builder::new()
            .prefix("kafscale-cluster-")
            .tempdir()
            .expect("temp dir");
        if std::env::var_os("KAFSCALE_TEST_KEEP_LOGS").is_some() {
            // Long runs (scripts/nemesis.sh) keep every process log.
            dir.disable_cleanup(true);
            eprintln!("cluster logs kept in {}", dir.path().display());
        }
        let mut cluster = Cluster {
            etcd,
            s3,
            workers: Vec::new(),
            gateways: Vec::new(),
            namespace,
            bucket,
            replica_bucket,
            etcd_links: Vec::new(),
            link_etcd: opts.etcd_links,
            s3_links: Vec::new(),
            link_s3,
            common_env,
            worker_env,
            gateway_env: opts.gateway_env.clone(),
            http_ca: opts.http_ca.clone(),
            dir,
            kafka_ports: Vec::new(),
        };
        for _ in 0..opts.workers {
            cluster.add_worker().await;
        }
        for _ in 0..opts.gateways {
            cluster.add_gateway().await;
        }
        cluster.wait_all_assigned(Duration::from_secs(30)).await;
        cluster
    }

    /// Panics, with its log's tail, if a worker or gateway has exited
    /// (`when` says when, for the message).
    pub fn assert_all_running(&mut self, when: &str) {
        for (i, w) in self.workers.iter_mut().enumerate() {
            assert!(
                w.try_exit().is_none(),
                "worker {i} exited {when}:\n{}",
                w.log_tail(40)
            );
        }
        for (i, g) in self.gateways.iter_mut().enumerate() {
            assert!(
                g.try_exit().is_none(),
                "gateway {i} exited {when}:\n{}",
                g.log_tail(40)
            );
        }
    }

    /// Starts one more worker (`w<N>`) and waits until it is ready.
    pub async fn add_worker(&mut self) -> usize {
        let i = self.workers.len();
        let mut env = self.common_env.clone();
        env.extend(self.worker_env.iter().cloned());
        env.push(("KAFSCALE_WORKER_ID".into(), format!("w{i}")));
        if self.link_etcd {
            let link = link::TcpLink::start(socket_addr(&self.etcd.endpoint())).await;
            env.push(("KAFSCALE_ETCD_ENDPOINTS".into(), link.endpoint()));
            self.etcd_links.push(link);
        }
        if let Some(s3) = self.link_s3 {
            let link = link::TcpLink::start(s3).await;
            env.push(("KAFSCALE_S3_ENDPOINT".into(), link.endpoint()));
            self.s3_links.push(link);
        }
        env.push((
            "KAFSCALE_GRPC_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        ));
        let mut p = Proc::new(format!("worker-{i}"), "logworker", env, self.dir.path());
        p.https_ca = self.http_ca.clone();
        p.start().await;
        self.workers.push(p);
        i
    }

    /// Starts one more gateway and waits until it is ready.
    pub async fn add_gateway(&mut self) -> usize {
        self.add_gateway_with(&[]).await
    }

    /// Starts one more gateway with the env changes `changes` (a value of
    /// `None` removes the variable) and waits until it is ready.
    pub async fn add_gateway_with(&mut self, changes: &[(&str, Option<&str>)]) -> usize {
        let i = self.gateways.len();
        let port = free_port();
        let mut env = self.common_env.clone();
        env.extend(self.gateway_env.iter().cloned());
        env.push(("KAFSCALE_KAFKA_ADDR".into(), format!("127.0.0.1:{port}")));
        env.push(("KAFSCALE_ADVERTISED_HOST".into(), "127.0.0.1".into()));
        env.push(("KAFSCALE_ADVERTISED_PORT".into(), port.to_string()));
        let mut p = Proc::new(format!("gateway-{i}"), "gateway", env, self.dir.path());
        p.https_ca = self.http_ca.clone();
        for (key, value) in changes {
            p.set_env(key, *value);
        }
        p.start().await;
        self.gateways.push(p);
        self.kafka_ports.push(port);
        i
    }

    /// `bootstrap.servers` of gateway `i`.
    pub fn bootstrap(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.kafka_ports[i])
    }

    /// The Kafka listener of gateway `i`.
    pub fn kafka_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_ports[i]))
    }

    /// The cluster's metadata, read straight from etcd.
    pub async fn meta(&self) -> Metadata {
        let store: Arc<dyn MetadataStore> = Arc::new(self.etcd.store().await);
        Metadata::new(store, &self.namespace)
    }

    /// Worker index owning `topic`/`partition`, per etcd.
    pub async fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let meta = self.meta().await;
        let t = meta.get_topic(topic).await.ok()??;
        let id = kafscale_controlplane::metadata::topic_uuid(&t);
        let assignments = meta.list_assignments().await.ok()?;
        let a = assignments
            .into_iter()
            .find(|(k, _)| *k == (id, partition))?
            .1;
        a.worker_id.strip_prefix('w')?.parse().ok()
    }

    /// Partitions (of every topic) assigned to worker `i`.
    pub async fn owned_by(&self, i: usize) -> usize {
        let meta = self.meta().await;
        let me = format!("w{i}");
        meta.list_assignments()
            .await
            .map(|a| a.iter().filter(|(_, a)| a.worker_id == me).count())
            .unwrap_or(0)
    }

    /// Waits until every partition of every topic is assigned to a
    /// registered worker.
    pub async fn wait_all_assigned(&self, timeout: Duration) {
        let meta = self.meta().await;
        let deadline = Instant::now() + timeout;
        loop {
            let ok = async {
                let workers: std::collections::HashSet<String> = meta
                    .list_workers()
                    .await
                    .ok()?
                    .into_iter()
                    .map(|w| w.worker_id)
                    .collect();
                let assignments: std::collections::HashMap<_, _> =
                    meta.list_assignments().await.ok()?.into_iter().collect();
                let topics = meta.list_topics().await.ok()?;
                Some(
                    !topics.is_empty()
                        && topics.iter().all(|t| {
                            let id = kafscale_controlplane::metadata::topic_uuid(t);
                            (0..t.partitions).all(|p| {
                                assignments
                                    .get(&(id, p))
                                    .is_some_and(|a| workers.contains(&a.worker_id))
                            })
                        }),
                )
            }
            .await
            .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "partitions not all assigned within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every process log's tail, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self.workers.iter().chain(&self.gateways) {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail(lines)));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(80));
        }
    }
}

/// The `host:port` of a plain-HTTP loopback endpoint.
fn socket_addr(endpoint: &str) -> std::net::SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{endpoint} is not a loopback address: {e}"))
}
