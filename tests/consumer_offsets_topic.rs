//! `__consumer_offsets` in Kafka's own record schemas.
//!
//! - Burrow (Debian's `burrow`, LinkedIn's consumer-lag monitor, Sarama
//!   inside) reads the topic itself: it decodes Kafka's OffsetCommit and
//!   GroupMetadata records and reports a group's lag from them and the
//!   partitions' high watermarks. Against `kafscale dev`, with a real
//!   ZooKeeper (Debian's `zookeeper`, which Burrow needs for its own
//!   coordination), for a group whose committed offsets the test chose.
//! - The upgrade: a coordinator log written in the protobuf records of
//!   earlier releases (the failpoint `groups.protobuf_records` makes the
//!   coordinator write them) is read after a restart and rewritten in
//!   Kafka's schemas, every old key tombstoned.

mod common;

use common::*;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Killed {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Killed(
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{cmd:?}: {e} (scripts/test.sh installs burrow and zookeeper)")
            }),
    )
}

/// Debian's ZooKeeper, standalone, on `port`.
fn zookeeper(dir: &Path, port: u16) -> Killed {
    let cfg = dir.join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n",
            dir.join("zk-data").display()
        ),
    )
    .expect("zoo.cfg");
    spawn(
        Command::new("java")
            .args([
                "-Xmx128m",
                "-cp",
                "/usr/share/java/zookeeper.jar:/etc/zookeeper/conf",
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&cfg),
        &dir.join("zookeeper.log"),
    )
}

/// Whether ZooKeeper answers its `srvr` command with a server mode (it
/// accepts connections before it serves sessions).
async fn zookeeper_serves(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut answer = String::new();
    s.write_all(b"srvr").await.is_ok()
        && tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut answer))
            .await
            .is_ok()
        && answer.contains("Mode: standalone")
}

fn burrow(dir: &Path, zk: u16, http: u16, bootstrap: &str) -> Killed {
    std::fs::write(
        dir.join("burrow.toml"),
        format!(
            r#"[general]
pidfile="{dir}/burrow.pid"

[logging]
level="info"

[zookeeper]
servers=["127.0.0.1:{zk}"]
timeout=6
root-path="/burrow"

[client-profile.kafscale]
client-id="burrow"
kafka-version="1.0.0"

[cluster.local]
class-name="kafka"
servers=["{bootstrap}"]
client-profile="kafscale"
topic-refresh=2
offset-refresh=1

[consumer.local]
class-name="kafka"
cluster="local"
servers=["{bootstrap}"]
client-profile="kafscale"
start-latest=false

[httpserver.default]
address="127.0.0.1:{http}"

[storage.default]
class-name="inmemory"
workers=2
intervals=10
expire-group=604800
min-distance=1
"#,
            dir = dir.display()
        ),
    )
    .expect("burrow.toml");
    spawn(
        Command::new("Burrow").arg("--config-dir").arg(dir),
        &dir.join("burrow.log"),
    )
}

/// A member of `group` subscribed to `topic` (all of whose partitions it
/// gets) that committed `offsets[p]` for each partition p.
async fn join_and_commit(
    bootstrap: &str,
    group: &str,
    topic: &str,
    offsets: &[i64],
) -> rdkafka::consumer::BaseConsumer {
    let member = group_member_config(bootstrap, group, "lag-member", &[])
        .create::<rdkafka::consumer::BaseConsumer>()
        .expect("group member");
    member.subscribe(&[topic]).expect("subscribe");
    wait_for("an assignment", Duration::from_secs(30), || {
        member.poll(Duration::from_millis(100));
        match member.assignment() {
            Ok(a) if a.count() == offsets.len() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o))
            .expect("partition");
    }
    member.commit(&tpl, CommitMode::Sync).expect("commit");
    member
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burrow_reports_the_lag_of_committed_offsets() {
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
            .await;
    let bootstrap = server.bootstrap();
    let topic = "burrow-lagged";
    let group = "burrow-group";
    create_topic(&bootstrap, topic, 2, &[]).await;
    let p = producer(&bootstrap, &[]);
    for (partition, n) in [(0, 10), (1, 6)] {
        for i in 0..n {
            p.send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key("k")
                    .payload(&format!("v{i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let [zk_port, http_port] = free_ports::<2>();
    let _zk = zookeeper(dir.path(), zk_port);
    // Burrow gives up at once if ZooKeeper (a JVM) does not serve yet.
    let serving = tokio::time::timeout(Duration::from_secs(60), async {
        while !zookeeper_serves(zk_port).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(serving.is_ok(), "ZooKeeper did not start");
    let _burrow = burrow(dir.path(), zk_port, http_port, &bootstrap);
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let burrow_log = || std::fs::read_to_string(dir.path().join("burrow.log")).unwrap_or_default();

    // Burrow keeps commits only for partitions whose end offsets it knows:
    // wait until it has fetched them.
    let topic_path = format!("/v3/kafka/local/topic/{topic}");
    let known = tokio::time::timeout(Duration::from_secs(60), async {
        while get_json(http, &topic_path)
            .await
            .is_none_or(|v| v["offsets"] != serde_json::json!([10, 6]))
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    if known.is_err() {
        panic!(
            "Burrow never listed the topic's end offsets: {:?}\n--- burrow log ---\n{}\n--- zookeeper log ---\n{}",
            http_get(http, &topic_path).await,
            burrow_log(),
            std::fs::read_to_string(dir.path().join("zookeeper.log")).unwrap_or_default()
        );
    }

    // A real group member (so GroupMetadata records carry members and
    // assignments) commits 4 of 10 and 6 of 6.
    let member = join_and_commit(&bootstrap, group, topic, &[4, 6]).await;

    let lag_path = format!("/v3/kafka/local/consumer/{group}/lag");
    let mut last = serde_json::Value::Null;
    let reported = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(v) = get_json(http, &lag_path).await {
                let status = &v["status"];
                let lags: Vec<(i64, i64)> = status["partitions"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                (
                                    p["partition"].as_i64().unwrap_or(-1),
                                    p["current_lag"].as_i64().unwrap_or(-1),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if status["totallag"] == 6 && lags.len() == 2 {
                    return (lags, v);
                }
                last = v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let Ok((mut lags, v)) = reported else {
        panic!(
            "Burrow reported no lag of 6; last answer {last}\n--- burrow log ---\n{}",
            burrow_log()
        );
    };
    lags.sort();
    assert_eq!(lags, [(0, 6), (1, 0)], "{v}");
    assert_eq!(v["status"]["partitions"][0]["topic"], topic);
    // Burrow decoded every offset record. Burrow 1.2.1 reads group metadata
    // values up to v1 only, so it skips the v3 ones Kafka 3.9 (and we) write,
    // as it does against Kafka: that is the only decoding failure allowed.
    let log = burrow_log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed to decode"))
        .collect();
    for l in &failures {
        assert!(
            l.contains(r#""message_type":"metadata""#)
                && l.contains(r#""reason":"value version""#)
                && l.contains(r#""version":3"#),
            "Burrow could not decode a record: {l}"
        );
    }
    drop(member);
}

/// A record of `__consumer_offsets` read as Kafka's published schemas say
/// (OffsetCommitKey v0–1 / OffsetCommitValue v0–3, GroupMetadataKey v2), or
/// `Other` for keys that are not Kafka's (the protobuf of earlier releases).
#[derive(Debug, PartialEq)]
enum Kafka {
    /// group, topic, partition, committed offset (None: tombstone)
    Offset(String, String, i32, Option<i64>),
    /// group, generation (None: tombstone)
    Group(String, Option<i32>),
    Other,
}

fn read_kafka(key: &[u8], value: Option<&[u8]>) -> Kafka {
    fn i16_at(b: &[u8], at: &mut usize) -> i16 {
        let v = i16::from_be_bytes([b[*at], b[*at + 1]]);
        *at += 2;
        v
    }
    fn i32_at(b: &[u8], at: &mut usize) -> i32 {
        let v = i32::from_be_bytes(b[*at..*at + 4].try_into().expect("4 bytes"));
        *at += 4;
        v
    }
    fn str_at(b: &[u8], at: &mut usize) -> String {
        let n = i16_at(b, at) as usize;
        let s = String::from_utf8(b[*at..*at + n].to_vec()).expect("utf8");
        *at += n;
        s
    }
    if key.first() != Some(&0) {
        return Kafka::Other;
    }
    let mut at = 0;
    match i16_at(key, &mut at) {
        0 | 1 => {
            let (g, t, p) = (
                str_at(key, &mut at),
                str_at(key, &mut at),
                i32_at(key, &mut at),
            );
            let offset = value.map(|v| {
                let mut at = 0;
                let version = i16_at(v, &mut at);
                assert!((0..=3).contains(&version), "OffsetCommitValue v{version}");
                i64::from_be_bytes(v[2..10].try_into().expect("offset"))
            });
            Kafka::Offset(g, t, p, offset)
        }
        2 => {
            let g = str_at(key, &mut at);
            let generation = value.map(|v| {
                let mut at = 0;
                assert_eq!(i16_at(v, &mut at), 3, "GroupMetadataValue version");
                str_at(v, &mut at);
                i32_at(v, &mut at)
            });
            Kafka::Group(g, generation)
        }
        v => panic!("unknown key version {v}"),
    }
}

/// A record of `__consumer_offsets`: (partition, offset, key, value).
type OffsetsRecord = (i32, i64, Vec<u8>, Option<Vec<u8>>);

/// Every record of `__consumer_offsets`.
fn offsets_topic(bootstrap: &str) -> Vec<OffsetsRecord> {
    let probe = consumer(bootstrap, &[]);
    let md = probe
        .fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let (_, all) = consume_all(
        bootstrap,
        "__consumer_offsets",
        partitions,
        Duration::from_secs(60),
    );
    all.into_values()
        .flatten()
        .map(|c| (c.partition, c.offset, c.key.unwrap_or_default(), c.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_of_earlier_releases_are_read_and_rewritten_in_kafkas_schemas() {
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0)
            .env("KAFSCALE_FAILPOINT", "groups.protobuf_records"),
    )
    .await;
    let bootstrap = server.bootstrap();
    let topic = "upgraded";
    create_topic(&bootstrap, topic, 1, &[]).await;
    commit_offset(&bootstrap, "old-simple", topic, 7);
    drop(join_and_commit(&bootstrap, "old-group", topic, &[3]).await);
    let before = offsets_topic(&bootstrap);
    assert!(
        before.len() >= 3
            && before
                .iter()
                .all(|(_, _, k, _)| read_kafka(k, None) == Kafka::Other),
        "the failpoint wrote the old format: {before:?}"
    );

    server.set_env("KAFSCALE_FAILPOINT", None);
    server.restart().await;
    assert_eq!(committed_offset(&bootstrap, "old-simple", topic), Some(7));
    assert_eq!(committed_offset(&bootstrap, "old-group", topic), Some(3));
    let after = offsets_topic(&bootstrap);
    // Every old key is tombstoned after its records.
    for (p, o, k, _) in &before {
        assert!(
            after
                .iter()
                .any(|(p2, o2, k2, v2)| p2 == p && o2 > o && k2 == k && v2.is_none()),
            "no tombstone for the old record at {p}/{o}"
        );
    }
    // The live state is in Kafka's records, after those tombstones.
    let kafka: Vec<Kafka> = after
        .iter()
        .filter(|(_, _, k, _)| k.first() == Some(&0))
        .map(|(_, _, k, v)| read_kafka(k, v.as_deref()))
        .collect();
    for (group, offset) in [("old-simple", 7), ("old-group", 3)] {
        let last = kafka.iter().rev().find_map(|r| match r {
            Kafka::Offset(g, t, 0, o) if g == group && t == topic => Some(*o),
            _ => None,
        });
        assert_eq!(last, Some(Some(offset)), "{group}: {kafka:?}");
    }
    assert!(
        kafka
            .iter()
            .any(|r| matches!(r, Kafka::Group(g, Some(_)) if g == "old-group")),
        "the group's snapshot in Kafka's schema: {kafka:?}"
    );
    let upgrades = |log: &str| log.matches("coordinator log upgraded").count();
    let migrated = upgrades(&server.log());
    assert!(migrated >= 1, "the upgrade is logged");

    // A commit after the upgrade, a restart: the state holds and nothing is
    // migrated again.
    commit_offset(&bootstrap, "old-simple", topic, 9);
    server.restart().await;
    assert_eq!(committed_offset(&bootstrap, "old-simple", topic), Some(9));
    assert_eq!(committed_offset(&bootstrap, "old-group", topic), Some(3));
    assert_eq!(upgrades(&server.log()), migrated, "migrated once");
}
