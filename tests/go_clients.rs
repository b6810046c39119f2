//! The Go Kafka clients Debian ships, against `kafscale dev`: Sarama 1.22
//! (`golang-github-shopify-sarama-dev`) at the protocol baselines 0.10.2.0,
//! 1.0.0 and 2.1.0 (its `Config.Version`), and segmentio kafka-go 0.2
//! (`golang-github-segmentio-kafka-go-dev`, fixed old versions). Each
//! produces, consumes in a consumer group that commits, resumes from its
//! commits after the server restarts, and creates and lists topics.
//!
//! The clients run inside `tests/go/gocompat`, built offline in GOPATH mode
//! against Debian's gocode tree (scripts/test.sh installs the packages).
//! The gateway's request counters show which (old) versions they spoke.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Builds `tests/go/gocompat` once per test binary; its path.
fn gocompat() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let gopath = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocompat");
        let src = gopath.join("src/gocompat");
        std::fs::create_dir_all(&src).expect("GOPATH dir");
        let main = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/gocompat/main.go");
        std::fs::copy(main, src.join("main.go")).expect("copy gocompat source");
        let bin = gopath.join("bin/gocompat");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPROXY", "off")
            .env(
                "GOPATH",
                format!("{}:/usr/share/gocode", gopath.display()),
            )
            .output()
            .unwrap_or_else(|e| {
                panic!("go not found ({e}): scripts/test.sh installs golang-go and the client packages")
            });
        assert!(
            out.status.success(),
            "building gocompat failed (are golang-github-shopify-sarama-dev and \
             golang-github-segmentio-kafka-go-dev installed?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
    .clone()
}

/// Runs one gocompat scenario; its output lines, or its error output.
async fn run(server: &DevServer, args: &[String]) -> Result<Vec<String>, String> {
    let bin = gocompat();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args).args(["-brokers", &server.bootstrap()]);
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| format!("gocompat {args:?} timed out"))?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The values a group scenario consumed, sorted, and the extra ones.
fn consumed(lines: &[String]) -> (Vec<String>, Vec<String>) {
    let pick = |tag: &str| {
        let mut v: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(tag).map(str::to_string))
            .collect();
        v.sort();
        v
    };
    (pick("msg "), pick("extra "))
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    v.sort();
    v
}

fn served(scrape: &str, api: &str, version: i16) -> bool {
    metric_value(
        scrape,
        "kafscale_gateway_requests_total",
        &format!("api=\"{api}\",version=\"{version}\""),
    ) > 0.0
}

/// One client at one baseline: its scenario arguments.
struct Client {
    name: &'static str,
    /// gocompat scenario prefix ("sarama" or "kafkago").
    kind: &'static str,
    version: Option<&'static str>,
}

impl Client {
    fn args<'a>(&'a self, scenario: &str, rest: &[&'a str]) -> Vec<String> {
        let mut a = vec![format!("{}-{scenario}", self.kind)];
        if let Some(v) = self.version {
            a.extend(["-version".to_string(), v.to_string()]);
        }
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    }

    fn tag(&self) -> String {
        self.name.replace(['.', ' '], "")
    }
}

async fn go(server: &DevServer, args: Vec<String>) -> Vec<String> {
    run(server, &args).await.unwrap_or_else(|e| {
        panic!(
            "gocompat {args:?} failed: {e}\n--- server log ---\n{}",
            server.log_tail(40)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_produce_consume_in_groups_resume_after_restart_and_admin() {
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
            .await;
    let clients = [
        Client {
            name: "sarama 0.10.2.0",
            kind: "sarama",
            version: Some("0.10.2.0"),
        },
        Client {
            name: "sarama 1.0.0",
            kind: "sarama",
            version: Some("1.0.0"),
        },
        Client {
            name: "sarama 2.1.0",
            kind: "sarama",
            version: Some("2.1.0"),
        },
        Client {
            name: "kafka-go",
            kind: "kafkago",
            version: None,
        },
    ];
    // Admin: CreateTopics (v0 at 0.10.2 and in kafka-go), then list.
    for c in &clients {
        let topic = format!("go-admin-{}", c.tag());
        match run(&server, &c.args("admin", &["-topic", &topic])).await {
            Ok(lines) => {
                assert!(lines.contains(&format!("created {topic}")), "{}", c.name);
                assert!(
                    lines.contains(&format!("listed {topic} partitions 2")),
                    "{}: {lines:?}",
                    c.name
                );
            }
            // Sarama needs 0.11 for DescribeConfigs, which ListTopics sends:
            // it refuses by itself at 0.10.2, whatever the broker.
            Err(e) if c.version == Some("0.10.2.0") => {
                assert!(e.contains("ListTopics") && e.contains("version"), "{e}");
                let meta = server.metrics().await;
                assert!(
                    served(&meta, "CreateTopics", 0),
                    "CreateTopic v0 reached us"
                );
            }
            Err(e) => panic!("{} admin: {e}", c.name),
        }
    }
    // Produce 10, consume them in a group that commits.
    for c in &clients {
        let (topic, group) = (format!("go-{}", c.tag()), format!("go-g-{}", c.tag()));
        let produced = go(&server, c.args("produce", &["-topic", &topic, "-n", "10"])).await;
        assert_eq!(produced, ["produced 10"], "{}", c.name);
        let lines = go(
            &server,
            c.args("group", &["-topic", &topic, "-group", &group, "-n", "10"]),
        )
        .await;
        let (got, extra) = consumed(&lines);
        assert_eq!(got, values("m", 10), "{}", c.name);
        assert!(extra.is_empty(), "{}: extra {extra:?}", c.name);
    }
    let scrape = server.metrics().await;
    for (api, version) in [
        ("Produce", 2),
        ("Fetch", 2),
        ("Fetch", 3),
        ("OffsetCommit", 1),
        ("OffsetCommit", 2),
        ("OffsetFetch", 1),
        ("JoinGroup", 1),
        ("SyncGroup", 0),
        ("Heartbeat", 0),
        ("FindCoordinator", 0),
        ("ListOffsets", 1),
        ("Metadata", 0),
        ("CreateTopics", 0),
        ("DescribeConfigs", 0),
    ] {
        assert!(
            served(&scrape, api, version),
            "no Go client sent {api} v{version}"
        );
    }

    // The commits survive a restart: after 3 more records each group reads
    // exactly those.
    server.restart().await;
    for c in &clients {
        let (topic, group) = (format!("go-{}", c.tag()), format!("go-g-{}", c.tag()));
        go(
            &server,
            c.args(
                "produce",
                &["-topic", &topic, "-n", "3", "-prefix", "again"],
            ),
        )
        .await;
        let lines = go(
            &server,
            c.args("group", &["-topic", &topic, "-group", &group, "-n", "3"]),
        )
        .await;
        let (got, extra) = consumed(&lines);
        assert_eq!(
            got,
            values("again", 3),
            "{} resumed from its commits",
            c.name
        );
        assert!(extra.is_empty(), "{}: re-read {extra:?}", c.name);
    }
}
