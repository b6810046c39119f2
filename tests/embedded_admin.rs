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
