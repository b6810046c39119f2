//! Topic lifecycle through real clients: CreatePartitions grows a topic and
//! the new partitions take writes; DeleteTopics removes it (and a second
//! delete reports UNKNOWN_TOPIC_OR_PARTITION); DescribeCluster names the
//! gateway as broker and controller.

mod common;

use common::*;
use kafka_protocol::messages::{ApiKey, DescribeClusterRequest};
use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_delete_topics_and_describe_cluster() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("admin");
    create_topic(&bootstrap, &topic, 2, &[]).await;
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));

    // Growing works, shrinking is refused.
    let grown = admin
        .create_partitions([&NewPartitions::new(&topic, 5)], &opts)
        .await
        .expect("CreatePartitions");
    assert!(grown[0].is_ok(), "{grown:?}");
    let shrunk = admin
        .create_partitions([&NewPartitions::new(&topic, 3)], &opts)
        .await
        .expect("CreatePartitions");
    assert!(
        matches!(&shrunk[0], Err((_, RDKafkaErrorCode::InvalidPartitions))),
        "{shrunk:?}"
    );
    let producer = producer(&bootstrap, &[]);
    let delivery = producer
        .send(
            FutureRecord::to(&topic).partition(4).key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce to a new partition");
    assert_eq!((delivery.partition, delivery.offset), (4, 0));

    // DescribeCluster over the raw protocol.
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let v = conn.negotiate(ApiKey::DescribeCluster, 1).await;
    let described = conn.request(v, &DescribeClusterRequest::default()).await;
    assert_eq!(described.error_code, 0);
    assert_eq!(described.brokers.len(), 1);
    assert_eq!(
        described.brokers[0].port,
        i32::from(server.kafka_addr().port())
    );
    assert_eq!(described.controller_id, described.brokers[0].broker_id);
    assert!(!described.cluster_id.is_empty());

    // Delete, then deleting again is an unknown topic.
    let deleted = admin
        .delete_topics(&[&topic], &opts)
        .await
        .expect("DeleteTopics");
    assert!(deleted[0].is_ok(), "{deleted:?}");
    let again = admin
        .delete_topics(&[&topic], &opts)
        .await
        .expect("DeleteTopics");
    assert!(
        matches!(
            &again[0],
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))
        ),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_are_described_altered_and_enforced() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};

    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("configs");
    create_topic(&bootstrap, &topic, 1, &[("retention.ms", "1000")]).await;
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let describe = || async {
        let r = admin
            .describe_configs([&ResourceSpecifier::Topic(&topic)], &opts)
            .await
            .expect("DescribeConfigs");
        r.into_iter()
            .next()
            .expect("one resource")
            .expect("resource ok")
    };
    let before = describe().await;
    let retention = before.get("retention.ms").expect("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("1000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    let max = before.get("max.message.bytes").expect("max.message.bytes");
    assert_eq!(max.value.as_deref(), Some("1048588"));
    assert_eq!(max.source, ConfigSource::Default);

    // Shrink max.message.bytes and drop retention.ms through IncrementalAlterConfigs.
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let v = conn.negotiate(ApiKey::IncrementalAlterConfigs, 1).await;
    let mut set = AlterableConfig::default();
    set.name = StrBytes::from_static_str("max.message.bytes");
    set.config_operation = 0;
    set.value = Some(StrBytes::from_static_str("2000"));
    let mut del = AlterableConfig::default();
    del.name = StrBytes::from_static_str("retention.ms");
    del.config_operation = 1;
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.clone());
    res.configs = vec![set, del];
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res.clone()];
    let altered = conn.request(v, &req).await;
    assert_eq!(altered.responses[0].error_code, 0, "{altered:?}");
    // An unknown config is rejected with INVALID_CONFIG and changes nothing.
    res.configs[0].name = StrBytes::from_static_str("no.such.config");
    req.resources = vec![res];
    let rejected = conn.request(v, &req).await;
    assert_eq!(rejected.responses[0].error_code, 40, "{rejected:?}");

    let after = describe().await;
    assert_eq!(
        after
            .get("max.message.bytes")
            .and_then(|c| c.value.as_deref()),
        Some("2000")
    );
    assert!(matches!(
        after.get("retention.ms").map(|c| &c.source),
        Some(ConfigSource::Default)
    ));

    // The worker enforces the new limit.
    let producer = producer(&bootstrap, &[("message.send.max.retries", "0")]);
    let big = vec![b'x'; 5000];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&big),
                Duration::from_secs(5),
            )
            .await;
        match r {
            Err((e, _))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                break
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "5000-byte record not rejected after max.message.bytes=2000: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// DeleteRecords advances the log start offset (durably): earliest offsets
/// move, a target past the high watermark is refused, and a restart keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_advances_the_log_start_offset_durably() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let mut server = common::DevServer::start(common::DevOptions::default()).await;
    let topic = common::unique_name("delrec");
    common::create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let batch = common::encode_batch(
        &(0..10)
            .map(|i| (None, Some(bytes::Bytes::from(format!("v{i}")))))
            .collect::<Vec<_>>(),
    );
    let mut conn = common::RawConn::connect(server.kafka_addr()).await;
    let produced = conn
        .request(9, &common::produce_request(&topic, 0, batch))
        .await;
    assert_eq!(common::only_partition(&produced).error_code, 0);
    let delete = |offset: i64| {
        let mut p = DeleteRecordsPartition::default();
        p.partition_index = 0;
        p.offset = offset;
        let mut t = DeleteRecordsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.clone()));
        t.partitions = vec![p];
        let mut r = DeleteRecordsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 5000;
        r
    };
    let resp = conn.request(2, &delete(4)).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 4));
    let too_far = conn.request(2, &delete(11)).await;
    assert_eq!(
        too_far.topics[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let consumer = common::consumer(&server.bootstrap(), &[]);
    assert_eq!(common::watermarks(&consumer, &topic, 0), (4, 10));
    drop(consumer);
    server.kill9();
    server.restart().await;
    let consumer = common::consumer(&server.bootstrap(), &[]);
    assert_eq!(
        common::watermarks(&consumer, &topic, 0),
        (4, 10),
        "the log start offset survives a restart"
    );
}

/// DescribeLogDirs reports one directory (the object store) with each
/// partition's stored bytes; moving a replica there is a no-op, anywhere
/// else is LOG_DIR_NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_dirs_report_stored_bytes() {
    use kafka_protocol::messages::alter_replica_log_dirs_request::{
        AlterReplicaLogDir, AlterReplicaLogDirTopic,
    };
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{AlterReplicaLogDirsRequest, DescribeLogDirsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let server = common::DevServer::start(common::DevOptions::default()).await;
    let topic = common::unique_name("logdirs");
    common::create_topic(&server.bootstrap(), &topic, 2, &[]).await;
    let batch = common::encode_batch(&[(None, Some(bytes::Bytes::from(vec![7u8; 1000])))]);
    let mut conn = common::RawConn::connect(server.kafka_addr()).await;
    let produced = conn
        .request(9, &common::produce_request(&topic, 1, batch.clone()))
        .await;
    assert_eq!(common::only_partition(&produced).error_code, 0);
    let name = TopicName(StrBytes::from_string(topic.clone()));
    let mut t = DescribableLogDirTopic::default();
    t.topic = name.clone();
    t.partitions = vec![0, 1];
    let mut req = DescribeLogDirsRequest::default();
    req.topics = Some(vec![t]);
    let resp = conn.request(4, &req).await;
    assert_eq!(resp.results.len(), 1);
    let dir = &resp.results[0];
    assert_eq!(dir.error_code, 0);
    let sizes: Vec<(i32, i64)> = dir.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    assert_eq!(sizes, vec![(0, 0), (1, batch.len() as i64)]);
    let alter = |path: &str| {
        let mut t = AlterReplicaLogDirTopic::default();
        t.name = name.clone();
        t.partitions = vec![0];
        let mut d = AlterReplicaLogDir::default();
        d.path = StrBytes::from_string(path.to_string());
        d.topics = vec![t];
        let mut r = AlterReplicaLogDirsRequest::default();
        r.dirs = vec![d];
        r
    };
    let here = conn.request(2, &alter(dir.log_dir.as_str())).await;
    assert_eq!(here.results[0].partitions[0].error_code, 0);
    let elsewhere = conn.request(2, &alter("/somewhere/else")).await;
    assert_eq!(elsewhere.results[0].partitions[0].error_code, 57);
}

/// The gateway describes its own broker configs (static, read-only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_are_described() {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let server = common::DevServer::start(common::DevOptions::default()).await;
    let admin = common::admin(&server.bootstrap());
    let results = admin
        .describe_configs(
            &[ResourceSpecifier::Broker(0)],
            &AdminOptions::new().request_timeout(Some(CLIENT_TIMEOUT)),
        )
        .await
        .expect("describe configs");
    let resource = results[0].as_ref().expect("broker resource");
    let listeners = resource
        .get("advertised.listeners")
        .expect("advertised.listeners described");
    assert_eq!(
        listeners.value.as_deref(),
        Some(format!("PLAINTEXT://127.0.0.1:{}", server.kafka_addr().port()).as_str())
    );
    assert!(listeners.is_read_only);
    assert_eq!(listeners.source, ConfigSource::StaticBroker);
    assert_eq!(
        resource
            .get("offsets.topic.num.partitions")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("50")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_through_topics_with_cursors() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    use kafka_protocol::messages::{DescribeTopicPartitionsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let server = DevServer::start(DevOptions::default()).await;
    let prefix = unique_name("dtp");
    let (a, b) = (format!("{prefix}-a"), format!("{prefix}-b"));
    create_topic(&server.bootstrap(), &a, 3, &[]).await;
    create_topic(&server.bootstrap(), &b, 2, &[]).await;
    let name = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    // Pages of two partitions over b, a and a missing topic (answered in name order).
    let mut req = DescribeTopicPartitionsRequest::default();
    req.topics = [&b, &a, &format!("{prefix}-missing")]
        .iter()
        .map(|t| TopicRequest::default().with_name(name(t)))
        .collect();
    req.response_partition_limit = 2;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let resp = conn.request(0, &req).await;
        pages += 1;
        for t in &resp.topics {
            let tname = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            if tname.ends_with("-missing") {
                assert_eq!(t.error_code, 3, "missing topic: UNKNOWN_TOPIC_OR_PARTITION");
                seen.push((tname, -1));
                continue;
            }
            assert_eq!(t.error_code, 0, "{t:?}");
            assert!(!t.topic_id.is_nil());
            for p in &t.partitions {
                assert_eq!(
                    (p.error_code, p.leader_id.0, p.replica_nodes.len()),
                    (0, 0, 1)
                );
                seen.push((tname.clone(), p.partition_index));
            }
        }
        match resp.next_cursor {
            Some(c) => {
                req.cursor = Some(
                    Cursor::default()
                        .with_topic_name(c.topic_name)
                        .with_partition_index(c.partition_index),
                )
            }
            None => break,
        }
        assert!(pages < 10, "cursor does not advance");
    }
    let want = vec![
        (a.clone(), 0),
        (a.clone(), 1),
        (a.clone(), 2),
        (b.clone(), 0),
        (b.clone(), 1),
        (format!("{prefix}-missing"), -1),
    ];
    assert_eq!(seen, want);
    assert_eq!(pages, 3, "5 partitions in pages of 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_storage_configs_are_refused_with_invalid_config() {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for (key, value) in [
        ("segment.bytes", "-5"),
        ("retention.bytes", "-2"),
        ("retention.ms", "soon"),
        ("segment.ms", "-7"),
        ("cleanup.policy", "shred"),
        ("cleanup.policy", ""),
        ("delete.retention.ms", "-1"),
        ("min.compaction.lag.ms", "-3"),
    ] {
        let name = unique_name("badcfg");
        let t = NewTopic::new(&name, 1, TopicReplication::Fixed(1)).set(key, value);
        let created = admin
            .create_topics([&t], &opts)
            .await
            .expect("CreateTopics");
        assert!(
            matches!(&created[0], Err((_, RDKafkaErrorCode::InvalidConfig))),
            "{key}={value}: {created:?}"
        );
        // All topics, not this one by name (which could auto-create it).
        let md = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("metadata");
        assert!(
            md.topics().iter().all(|t| t.name() != name),
            "{key}={value} created the topic anyway"
        );
    }
}
