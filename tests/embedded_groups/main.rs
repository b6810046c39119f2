//! Consumer groups (the classic group protocol: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups) end to end against `kafscale dev`, with librdkafka
//! (through rdkafka) and kcat as the group members. Every expectation is
//! Kafka's behaviour for the same client calls.
//!
//! Group members run in their own threads ([`Member`]); their rebalance
//! callbacks record into one shared [`GroupLog`], which also checks, at the
//! moment a member is handed partitions, that no other member still holds
//! any of them (a member records a revoke before it rejoins, so an overlap in
//! the log is a real double assignment).

#[path = "../common/mod.rs"]
mod common;
mod helpers;
mod members;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{
    consumer, create_topic, fetch_committed, group_member_config, producer, send_signal,
    unique_name, wait_for, watermarks, CommittedOffset, DevOptions, DevServer, CLIENT_TIMEOUT,
};
use futures::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::groups::GroupInfo;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Session timeout of the rdkafka and kcat members (the server's default minimum).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Bound for one rebalance to settle (several heartbeats, join and sync rounds).
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound for a member to close (LeaveGroup) and its thread to finish.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for one piece of blocking client code run by [`blocking`].
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(120);

/// A server (see [`start_server`]) with a topic of `partitions` partitions:
/// (server, bootstrap, topic, group name), names unique per `prefix`.
async fn group_fixture(prefix: &str, partitions: i32) -> (DevServer, String, String, String) {
    let server = start_server().await;
    let bootstrap = server.bootstrap();
    let topic = unique_name(prefix);
    let group = unique_name(&format!("{prefix}-group"));
    create_topic(&bootstrap, &topic, partitions, &[]).await;
    (server, bootstrap, topic, group)
}

/// A server whose groups rebalance without the initial delay.
async fn start_server() -> DevServer {
    DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
        .await
}

use helpers::*;
use members::*;

/// (a) Eager rebalances keep a disjoint and complete split while members join
/// and leave, and a group that commits after processing loses no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_split_stays_complete_and_nothing_is_lost() {
    const PARTITIONS: i32 = 12;
    let (_server, bootstrap, topic, group) = group_fixture("split", PARTITIONS).await;

    let producer = BackgroundProducer::start(&bootstrap, &topic, "rec");
    let log = GroupLog::default();
    let commit_every = Some(Duration::from_millis(200));
    let start = |name: &str| {
        Member::start(
            &log,
            name,
            group_member_config(&bootstrap, &group, name, &[]),
            &topic,
            commit_every,
        )
    };

    let m1 = start("m1");
    let m2 = start("m2");
    let m3 = start("m3");
    let sets = wait_for_split(
        &log,
        &["m1", "m2", "m3"],
        PARTITIONS,
        "3 members to split 12 partitions",
    )
    .await;
    eprintln!("3 members: {sets:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let m4 = start("m4");
    let sets = wait_for_split(
        &log,
        &["m1", "m2", "m3", "m4"],
        PARTITIONS,
        "4 members to split 12 partitions after m4 joined",
    )
    .await;
    eprintln!("4 members: {sets:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    m2.close().await;
    let sets = wait_for_split(
        &log,
        &["m1", "m3", "m4"],
        PARTITIONS,
        "3 members to split 12 partitions after m2 left",
    )
    .await;
    eprintln!("after m2 left: {sets:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let acked = producer.finish().await;
    assert!(acked.len() >= 100, "only {} records produced", acked.len());

    // Every acknowledged record is processed by some member.
    wait_for(
        "the group to consume every acknowledged record",
        Duration::from_secs(60),
        || {
            let inner = log.lock();
            let seen: BTreeSet<&str> = inner
                .members
                .values()
                .flat_map(|m| m.consumed.iter().map(|(_, _, k)| k.as_str()))
                .collect();
            let missing: Vec<&String> = acked
                .keys()
                .filter(|k| !seen.contains(k.as_str()))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} records not consumed yet, e.g. {:?} at {:?}",
                    missing.len(),
                    acked.len(),
                    &missing[..missing.len().min(5)],
                    missing
                        .iter()
                        .take(5)
                        .map(|k| acked[*k])
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;

    // Processed positions are committed: the group's committed offset of
    // every partition reaches the end of the partition.
    let probe = consumer(&bootstrap, &[]);
    let highs: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| (p, watermarks(&probe, &topic, p).1))
        .collect();
    let expected: BTreeMap<i32, Offset> = highs
        .iter()
        .map(|(p, h)| (*p, Offset::Offset(*h)))
        .collect();
    wait_committed(&bootstrap, &group, &topic, &expected, &log).await;

    for member in [&m1, &m3, &m4] {
        member.close().await;
    }
    log.assert_no_violations();

    let inner = log.lock();
    let mut consumed_total = 0usize;
    for (name, record) in &inner.members {
        assert!(
            record.poll_errors.is_empty(),
            "{name} got consumer errors: {:?}",
            record.poll_errors
        );
        assert!(
            !record
                .callbacks
                .iter()
                .any(|c| matches!(c, Callback::Error(_))),
            "{name} got rebalance errors: {:?}",
            record.callbacks
        );
        assert_eq!(record.protocol, "eager", "{name}: rebalance protocol");
        assert!(
            !record.consumed.is_empty(),
            "{name} processed no record at all"
        );
        consumed_total += record.consumed.len();
        // What was consumed is exactly what was acknowledged for that key.
        for (partition, offset, key) in &record.consumed {
            assert_eq!(
                acked.get(key),
                Some(&(*partition, *offset)),
                "{name} consumed {key} at {partition}/{offset}, but it was acknowledged at {:?}",
                acked.get(key)
            );
        }
        if !record.commit_errors.is_empty() {
            eprintln!(
                "{name} commit errors (tolerated): {:?}",
                record.commit_errors
            );
        }
    }
    eprintln!(
        "{} records produced, {consumed_total} processed ({} re-deliveries after rebalances)",
        acked.len(),
        consumed_total - acked.len()
    );
}

/// (b) A new member resumes exactly at the committed offsets; partitions
/// (and groups) without a commit report no offset (-1), not 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_where_a_new_member_resumes() {
    const PARTITIONS: i32 = 4;
    let (_server, bootstrap, topic, group) = group_fixture("resume", PARTITIONS).await;
    produce_numbered(&bootstrap, &topic, &[0, 1, 2, 3], 0, 40).await;

    // A group that never committed (and never existed) has no offsets.
    let never = unique_name("never-committed");
    let none = committed(&bootstrap, &never, &topic, PARTITIONS, CLIENT_TIMEOUT).await;
    assert_eq!(
        offsets_only(&none),
        (0..PARTITIONS).map(|p| (p, Offset::Invalid)).collect(),
        "committed offsets of group {never} that never committed"
    );

    // The first member processes records and commits partition p at
    // commit_at[p] (commit_message of the record just before it); it
    // processes partition 3 too but never commits it.
    let commit_at: BTreeMap<i32, i64> = [(0, 1), (1, 17), (2, 40)].into();
    let (b, g, t, at) = (
        bootstrap.clone(),
        group.clone(),
        topic.clone(),
        commit_at.clone(),
    );
    let from_member = blocking("the first member", move || {
        let consumer: BaseConsumer = group_member_config(&b, &g, "first-member", &[])
            .create()
            .expect("create consumer");
        consumer.subscribe(&[&t]).expect("subscribe");
        let mut done: BTreeSet<i32> = BTreeSet::new();
        let mut seen_p3 = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < at.len() || !seen_p3 {
            assert!(
                Instant::now() < deadline,
                "first member committed only {done:?} within 60 s (saw partition 3: {seen_p3})"
            );
            let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let msg = result.unwrap_or_else(|e| panic!("consumer error: {e}"));
            seen_p3 |= msg.partition() == 3;
            if at.get(&msg.partition()) == Some(&(msg.offset() + 1)) {
                consumer
                    .commit_message(&msg, CommitMode::Sync)
                    .unwrap_or_else(|e| {
                        panic!("commit_message {}/{}: {e}", msg.partition(), msg.offset())
                    });
                done.insert(msg.partition());
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_range(&t, 0, PARTITIONS - 1);
        consumer
            .committed_offsets(tpl, CLIENT_TIMEOUT)
            .expect("committed_offsets from the member")
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect::<BTreeMap<i32, Offset>>()
        // The consumer closes here (LeaveGroup).
    })
    .await;

    let mut expected: BTreeMap<i32, Offset> =
        (0..PARTITIONS).map(|p| (p, Offset::Invalid)).collect();
    for (p, o) in &commit_at {
        expected.insert(*p, Offset::Offset(*o));
    }
    assert_eq!(
        from_member, expected,
        "committed offsets as seen by the member that committed them"
    );
    let fresh = committed(&bootstrap, &group, &topic, PARTITIONS, CLIENT_TIMEOUT).await;
    assert_eq!(
        offsets_only(&fresh),
        expected,
        "committed offsets as seen by a fresh consumer after the member left"
    );

    // More records, so that a partition committed at its end (p2 @ 40) has a
    // next record to resume at.
    produce_numbered(&bootstrap, &topic, &[0, 1, 2, 3], 40, 5).await;

    let (b, g, t) = (bootstrap.clone(), group.clone(), topic.clone());
    let first = blocking("the second member", move || {
        first_records(&b, &g, &t, &[0, 1, 2, 3])
    })
    .await;
    let want: BTreeMap<i32, (i64, String)> = [
        (0, (1, "p0-1".to_string())),
        (1, (17, "p1-17".to_string())),
        (2, (40, "p2-40".to_string())),
        // Never committed: auto.offset.reset=earliest.
        (3, (0, "p3-0".to_string())),
    ]
    .into();
    assert_eq!(
        first, want,
        "first record per partition seen by a new member of {group}"
    );
}

/// (c) Cooperative-sticky: when a third member joins, the two existing
/// members give up only the partitions that move to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_revokes_only_partitions_that_move() {
    const PARTITIONS: i32 = 12;
    let (_server, bootstrap, topic, group) = group_fixture("coop", PARTITIONS).await;

    let log = GroupLog::default();
    let start = |name: &str| {
        Member::start(
            &log,
            name,
            group_member_config(
                &bootstrap,
                &group,
                name,
                &[("partition.assignment.strategy", "cooperative-sticky")],
            ),
            &topic,
            None,
        )
    };
    let _a = start("a");
    let _b = start("b");
    let before = wait_for_split(&log, &["a", "b"], PARTITIONS, "2 cooperative members").await;
    let marks: BTreeMap<&str, usize> = ["a", "b"]
        .into_iter()
        .map(|m| (m, log.callbacks(m).len()))
        .collect();

    let _c = start("c");
    let after = wait_for_split(
        &log,
        &["a", "b", "c"],
        PARTITIONS,
        "3 cooperative members after c joined",
    )
    .await;
    // Let any further rebalance round show up before judging.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = log
        .split(&["a", "b", "c"], PARTITIONS)
        .unwrap_or_else(|e| panic!("split changed after settling: {e}{}", log.describe()));
    assert_eq!(settled, after, "split changed after settling");
    log.assert_no_violations();

    let mut moved: BTreeSet<i32> = BTreeSet::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let callbacks = log.callbacks(name);
        let since = &callbacks[marks[name]..];
        let revoked: BTreeSet<i32> = since
            .iter()
            .filter_map(|c| match c {
                Callback::Revoke(s) => Some(s.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let added: BTreeSet<i32> = since
            .iter()
            .filter_map(|c| match c {
                Callback::Assign(s) => Some(s.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let errors: Vec<&Callback> = since
            .iter()
            .filter(|c| matches!(c, Callback::Error(_)))
            .collect();
        assert!(errors.is_empty(), "{name}: rebalance errors {errors:?}");
        assert_eq!(
            log.lock().members[name].protocol,
            "cooperative",
            "{name}: rebalance protocol"
        );
        let kept: BTreeSet<i32> = before[i].intersection(&after[i]).copied().collect();
        assert!(
            revoked.is_disjoint(&kept),
            "{name} had {:?} revoked, including {:?} which it kept (callbacks since c joined: {since:?})",
            revoked,
            revoked.intersection(&kept).collect::<Vec<_>>()
        );
        assert_eq!(
            revoked,
            before[i].difference(&after[i]).copied().collect(),
            "{name}: revoked partitions must be exactly those it lost (before {:?}, after {:?}, callbacks {since:?})",
            before[i],
            after[i]
        );
        assert!(
            added.is_empty(),
            "{name} was assigned {added:?} although only a member joined (callbacks {since:?})"
        );
        assert!(
            after[i].is_subset(&before[i]),
            "{name}: kept {:?} is not a subset of its previous {:?}",
            after[i],
            before[i]
        );
        moved.extend(revoked);
    }
    assert_eq!(
        moved, after[2],
        "partitions revoked from a and b must be exactly those c got"
    );
    let c_callbacks = log.callbacks("c");
    assert!(
        !c_callbacks
            .iter()
            .any(|c| matches!(c, Callback::Revoke(s) if !s.is_empty())),
        "the new member c had partitions revoked: {c_callbacks:?}"
    );
}

/// (d) Static membership: a member with a `group.instance.id` that restarts
/// within the session timeout gets its partitions back without a rebalance
/// (librdkafka sends no LeaveGroup for static members).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_within_session_timeout_causes_no_rebalance() {
    const PARTITIONS: i32 = 12;
    let (_server, bootstrap, topic, group) = group_fixture("static", PARTITIONS).await;

    let log = GroupLog::default();
    let start = |name: &str, instance: &str| {
        Member::start(
            &log,
            name,
            group_member_config(
                &bootstrap,
                &group,
                instance,
                &[("group.instance.id", instance)],
            ),
            &topic,
            None,
        )
    };
    // "first" joins alone (and leads the group), then "second" joins.
    let mut members: BTreeMap<&str, Member> = BTreeMap::new();
    members.insert("first", start("first", "first"));
    wait_for_split(
        &log,
        &["first"],
        PARTITIONS,
        "the first static member alone",
    )
    .await;
    members.insert("second", start("second", "second"));
    let sets = wait_for_split(&log, &["first", "second"], PARTITIONS, "2 static members").await;
    let mut owned: BTreeMap<&str, BTreeSet<i32>> =
        [("first", sets[0].clone()), ("second", sets[1].clone())].into();
    // Instance id -> name of its current member in the log.
    let mut current: BTreeMap<&str, String> = [
        ("first", "first".to_string()),
        ("second", "second".to_string()),
    ]
    .into();

    // Restart the follower, then the leader (Kafka keeps the first joiner as leader).
    for (round, (restarted, other)) in [("second", "first"), ("first", "second")]
        .into_iter()
        .enumerate()
    {
        let other_name = current[other].clone();
        let other_mark = log.callbacks(&other_name).len();
        let old = members.remove(restarted).expect("member");
        old.close().await;
        let closed_at = Instant::now();
        let name = format!("{restarted}-restart{round}");
        members.insert(
            restarted,
            Member::start(
                &log,
                &name,
                group_member_config(
                    &bootstrap,
                    &group,
                    restarted,
                    &[("group.instance.id", restarted)],
                ),
                &topic,
                None,
            ),
        );
        let back = wait_for(
            &format!("restarted static member {restarted} to get partitions"),
            REBALANCE_TIMEOUT,
            || {
                let got = log.owned(&name);
                if got.is_empty() {
                    Err(log.describe())
                } else {
                    Ok(got)
                }
            },
        )
        .await;
        assert!(
            closed_at.elapsed() < SESSION_TIMEOUT,
            "restarting {restarted} took {:?}, longer than the session timeout: the test cannot judge static membership",
            closed_at.elapsed()
        );
        assert_eq!(
            back,
            owned[restarted],
            "restarted static member {restarted} must get its partitions back{}",
            log.describe()
        );
        // Past the old instance's session timeout: still no rebalance.
        let quiet_until = closed_at + SESSION_TIMEOUT + Duration::from_secs(2);
        tokio::time::sleep(quiet_until.saturating_duration_since(Instant::now())).await;
        let other_since = log.callbacks(&other_name)[other_mark..].to_vec();
        assert!(
            other_since.is_empty(),
            "{other} saw rebalance callbacks when static member {restarted} restarted: {other_since:?}{}",
            log.describe()
        );
        assert_eq!(
            log.owned(&other_name),
            owned[other],
            "{other}'s partitions changed"
        );
        assert_eq!(
            log.callbacks(&name),
            vec![Callback::Assign(owned[restarted].clone())],
            "callbacks of the restarted member {restarted}"
        );
        owned.insert(restarted, back);
        current.insert(restarted, name);
    }
    log.assert_no_violations();
}

/// (e) A member that stops heartbeating (kcat, SIGSTOPped) is expired after
/// the session timeout and its partitions move to the remaining member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_that_stops_heartbeating_expires_after_session_timeout() {
    const PARTITIONS: i32 = 12;
    let (_server, bootstrap, topic, group) = group_fixture("expiry", PARTITIONS).await;

    let kcat_stderr = tempfile::NamedTempFile::new().expect("temp file");
    let session_ms = SESSION_TIMEOUT.as_millis().to_string();
    let kcat = std::process::Command::new("kcat")
        .args(["-b", &bootstrap, "-G", &group])
        .args(["-X", &format!("session.timeout.ms={session_ms}")])
        .args(["-X", "heartbeat.interval.ms=500"])
        .args(["-X", "client.id=kcat-member"])
        .args(["-X", "broker.address.family=v4"])
        .arg(&topic)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(kcat_stderr.reopen().expect("reopen temp file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kcat (it must be installed for this test): {e}"));
    let mut kcat = KillOnDrop(kcat);
    let kcat_log = || std::fs::read_to_string(kcat_stderr.path()).unwrap_or_default();

    let probe = consumer(&bootstrap, &[]);
    let log = GroupLog::default();
    let _member = Member::start(
        &log,
        "rdkafka",
        group_member_config(&bootstrap, &group, "rdkafka-member", &[]),
        &topic,
        None,
    );
    // Both members in the group: the rdkafka member owns exactly half.
    wait_for(
        "kcat and the rdkafka member to share the partitions",
        REBALANCE_TIMEOUT,
        || {
            if let Ok(Some(status)) = kcat.0.try_wait() {
                return Err(format!("kcat exited with {status}: {}", kcat_log()));
            }
            let owned = log.owned("rdkafka");
            if owned.len() != PARTITIONS as usize / 2 {
                return Err(format!(
                    "rdkafka member owns {owned:?}; kcat stderr: {}",
                    kcat_log()
                ));
            }
            match describe_group(&probe, &group)? {
                Some(g) if g.members.len() == 2 => Ok(()),
                other => Err(format!("rdkafka member owns {owned:?}; group: {other:?}")),
            }
        },
    )
    .await;

    send_signal(kcat.0.id(), "STOP");
    let stopped_at = Instant::now();
    wait_for(
        "the rdkafka member to own every partition after kcat stopped heartbeating",
        SESSION_TIMEOUT + Duration::from_secs(10),
        || {
            let owned = log.owned("rdkafka");
            if owned.len() == PARTITIONS as usize {
                Ok(())
            } else {
                Err(log.describe())
            }
        },
    )
    .await;
    let took = stopped_at.elapsed();
    eprintln!("kcat's partitions moved {took:?} after SIGSTOP");
    // kcat's last heartbeat was at most heartbeat.interval.ms before SIGSTOP.
    assert!(
        took >= SESSION_TIMEOUT - Duration::from_secs(2),
        "kcat was expired {took:?} after it stopped, before its session timeout of {SESSION_TIMEOUT:?}"
    );
    let after = describe_group(&probe, &group)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("group {group} not listed"));
    assert_eq!(
        after
            .members
            .iter()
            .map(|m| m.client_id.as_str())
            .collect::<Vec<_>>(),
        vec!["rdkafka-member"],
        "members after kcat expired: {after:?}"
    );
    send_signal(kcat.0.id(), "KILL");
    log.assert_no_violations();
}

/// (f) Committed offsets (with their metadata) survive kill -9 and a clean
/// restart of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_server_restarts() {
    const PARTITIONS: i32 = 3;
    let mut server = start_server().await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("durable");
    let group = unique_name("durable-group");
    create_topic(&bootstrap, &topic, PARTITIONS, &[]).await;
    produce_numbered(&bootstrap, &topic, &[0, 1, 2], 0, 20).await;

    let commit = |offsets: &[(i32, i64, &str)]| {
        let mut tpl = TopicPartitionList::new();
        for (p, o, meta) in offsets {
            tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                .expect("tpl");
            tpl.find_partition(&topic, *p)
                .expect("just added")
                .set_metadata(*meta);
        }
        tpl
    };
    let expect = |offsets: &[(i32, i64, &str)]| -> BTreeMap<i32, CommittedOffset> {
        offsets
            .iter()
            .map(|(p, o, m)| {
                (
                    *p,
                    CommittedOffset {
                        offset: Offset::Offset(*o),
                        metadata: m.to_string(),
                    },
                )
            })
            .collect()
    };

    // 1. A subscribed member consumes everything, commits specific offsets, leaves.
    let first: [(i32, i64, &str); 3] = [(0, 3, "m0"), (1, 11, "meta for p1"), (2, 20, "")];
    let tpl = commit(&first);
    let (b, g, t) = (bootstrap.clone(), group.clone(), topic.clone());
    blocking("the committing member", move || {
        let consumer: BaseConsumer = group_member_config(&b, &g, "committer", &[])
            .create()
            .expect("create consumer");
        consumer.subscribe(&[&t]).expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < 60 {
            assert!(
                Instant::now() < deadline,
                "member consumed only {seen} of 60 records within 60 s"
            );
            if let Some(result) = consumer.poll(Duration::from_millis(100)) {
                result.unwrap_or_else(|e| panic!("consumer error: {e}"));
                seen += 1;
            }
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("commit {tpl:?}: {e}"));
    })
    .await;
    assert_eq!(
        committed(&bootstrap, &group, &topic, PARTITIONS, CLIENT_TIMEOUT).await,
        expect(&first),
        "committed offsets before any restart"
    );

    // 2. kill -9 and restart.
    server.kill9();
    server.restart().await;
    assert_eq!(
        committed(
            &bootstrap,
            &group,
            &topic,
            PARTITIONS,
            Duration::from_secs(60)
        )
        .await,
        expect(&first),
        "committed offsets after kill -9 and restart"
    );
    produce_numbered(&bootstrap, &topic, &[0, 1, 2], 20, 2).await;
    let (b, g, t) = (bootstrap.clone(), group.clone(), topic.clone());
    let resumed = blocking("the member after the restart", move || {
        first_records(&b, &g, &t, &[0, 1, 2])
    })
    .await;
    assert_eq!(
        resumed,
        [
            (0, (3, "p0-3".to_string())),
            (1, (11, "p1-11".to_string())),
            (2, (20, "p2-20".to_string())),
        ]
        .into(),
        "a member of {group} after the restart resumes at the committed offsets"
    );

    // 3. A consumer outside the group protocol (assign only, generation -1)
    //    commits new offsets to the now empty group; then a clean restart.
    let second: [(i32, i64, &str); 3] = [(0, 5, "after kill"), (1, 12, "x"), (2, 22, "end")];
    let tpl = commit(&second);
    let (b, g) = (bootstrap.clone(), group.clone());
    blocking("the standalone commit", move || {
        let standalone = consumer(&b, &[("group.id", &g)]);
        standalone
            .commit(&tpl, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("standalone commit {tpl:?}: {e}"));
    })
    .await;
    assert_eq!(
        committed(&bootstrap, &group, &topic, PARTITIONS, CLIENT_TIMEOUT).await,
        expect(&second),
        "committed offsets after the standalone commit"
    );
    server.terminate(Duration::from_secs(30)).await;
    server.restart().await;
    assert_eq!(
        committed(
            &bootstrap,
            &group,
            &topic,
            PARTITIONS,
            Duration::from_secs(60)
        )
        .await,
        expect(&second),
        "committed offsets after a clean restart"
    );
    server.assert_running();
}

/// (g) ListGroups + DescribeGroups (librdkafka's `rd_kafka_list_groups`):
/// state, protocol, members with client id, host, subscription and
/// assignment; after the members leave, the group (which has committed
/// offsets) stays listed as Empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_list_describes_state_members_and_assignments() {
    const PARTITIONS: i32 = 6;
    let (_server, bootstrap, topic, group) = group_fixture("listed", PARTITIONS).await;
    produce_numbered(
        &bootstrap,
        &topic,
        &(0..PARTITIONS).collect::<Vec<_>>(),
        0,
        2,
    )
    .await;

    let probe = consumer(&bootstrap, &[]);
    let before = probe
        .fetch_group_list(None, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_group_list: {e}"));
    assert!(
        before.groups().is_empty(),
        "a fresh server lists groups: {:?}",
        before
            .groups()
            .iter()
            .map(GroupInfoSnapshot::from)
            .collect::<Vec<_>>()
    );

    let log = GroupLog::default();
    let members: Vec<Member> = ["it-member-a", "it-member-b"]
        .into_iter()
        .map(|name| {
            Member::start(
                &log,
                name,
                group_member_config(&bootstrap, &group, name, &[]),
                &topic,
                Some(Duration::from_millis(200)),
            )
        })
        .collect();
    wait_for_split(
        &log,
        &["it-member-a", "it-member-b"],
        PARTITIONS,
        "2 members",
    )
    .await;

    let info = wait_for(
        "DescribeGroups to show the stable group",
        CLIENT_TIMEOUT,
        || match describe_group(&probe, &group)? {
            Some(g) if g.state == "Stable" && g.members.len() == 2 => Ok(g),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(info.name, group);
    assert_eq!(info.protocol_type, "consumer", "protocol type: {info:?}");
    // librdkafka's default strategy list is "range,roundrobin": both members
    // prefer range.
    assert_eq!(info.protocol, "range", "selected protocol: {info:?}");
    let mut ids = BTreeSet::new();
    for member in &info.members {
        assert!(!member.id.is_empty(), "empty member id: {info:?}");
        assert!(
            ids.insert(member.id.clone()),
            "duplicate member id: {info:?}"
        );
        assert_eq!(
            member.client_host.trim_start_matches('/'),
            "127.0.0.1",
            "client host of {}",
            member.client_id
        );
        let subscription = member
            .metadata
            .as_deref()
            .unwrap_or_else(|| panic!("no member metadata for {}: {info:?}", member.client_id));
        let topics = decode_subscription_topics(subscription)
            .unwrap_or_else(|e| panic!("bad subscription metadata of {}: {e}", member.client_id));
        assert_eq!(
            topics,
            vec![topic.clone()],
            "subscription of {}",
            member.client_id
        );
        let assignment = member
            .assignment
            .as_deref()
            .unwrap_or_else(|| panic!("no member assignment for {}: {info:?}", member.client_id));
        let assignment = decode_assignment(assignment)
            .unwrap_or_else(|e| panic!("bad assignment of {}: {e}", member.client_id));
        let owned = log.owned(&member.client_id);
        assert_eq!(
            assignment,
            BTreeMap::from([(topic.clone(), owned)]),
            "DescribeGroups assignment of {} vs. what it was assigned",
            member.client_id
        );
    }
    let client_ids: BTreeSet<&str> = info.members.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(
        client_ids,
        BTreeSet::from(["it-member-a", "it-member-b"]),
        "member client ids"
    );

    // The group is also in the unfiltered listing, and is the only group.
    let all = probe
        .fetch_group_list(None, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_group_list: {e}"));
    let names: Vec<&str> = all.groups().iter().map(|g| g.name()).collect();
    assert_eq!(names, vec![group.as_str()], "all groups");

    // Once everything is consumed and committed, both members leave. A group
    // with committed offsets stays listed as Empty (Kafka keeps it until the
    // offsets expire).
    let all_committed: BTreeMap<i32, Offset> =
        (0..PARTITIONS).map(|p| (p, Offset::Offset(2))).collect();
    wait_committed(&bootstrap, &group, &topic, &all_committed, &log).await;
    for member in &members {
        member.close().await;
    }
    let empty = wait_for(
        "the group to become Empty",
        CLIENT_TIMEOUT,
        || match describe_group(&probe, &group)? {
            Some(g) if g.state == "Empty" => Ok(g),
            None => Err("the group is not listed by ListGroups".to_string()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(
        empty.members.is_empty(),
        "members of the empty group: {empty:?}"
    );
    assert_eq!(
        empty.protocol_type, "consumer",
        "protocol type of the empty group"
    );
    assert_eq!(empty.protocol, "", "protocol of the empty group");
    log.assert_no_violations();
}

/// Kafka applies a connection's requests in order: 60 OffsetCommits sent
/// back to back on one connection (no waiting for answers) leave the last
/// one committed, and every one is answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_offset_commits_apply_in_request_order() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, ResponseHeader,
        TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};

    let server = common::DevServer::start(common::DevOptions::default()).await;
    let topic = common::unique_name("ordered");
    common::create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let mut conn = common::RawConn::connect(server.kafka_addr()).await;
    let commits = 60i64;
    for i in 1..=commits {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = i;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.clone()));
        t.partitions = vec![p];
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_static_str("pipelined"));
        req.generation_id_or_member_epoch = -1;
        req.topics = vec![t];
        conn.send_frame(&common::encode_request(i as i32, 8, &req))
            .await;
    }
    for i in 1..=commits {
        let frame = conn.read_frame().await.expect("commit response");
        let mut body = bytes::Bytes::from(frame);
        let header = ResponseHeader::decode(&mut body, 1).expect("header");
        assert_eq!(header.correlation_id, i as i32, "answers in request order");
        let resp = OffsetCommitResponse::decode(&mut body, 8).expect("body");
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    }
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.clone()));
    t.partition_indexes = vec![0];
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = GroupId(StrBytes::from_static_str("pipelined"));
    fetch.topics = Some(vec![t]);
    let resp = conn.request(7, &fetch).await;
    assert_eq!(
        resp.topics[0].partitions[0].committed_offset, commits,
        "the last commit sent is the one that stays"
    );
}
