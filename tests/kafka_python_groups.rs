//! Consumer groups through kafka-python, an independent (pure-Python) Kafka
//! protocol implementation: runs `tests/python/groups_check.py` against
//! `kafscale dev`.

mod common;

use common::{run_kafka_python_check, DevOptions, DevServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_consumer_groups_and_group_admin() {
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
            .await;
    run_kafka_python_check("groups_check.py", &server, &[]).await;
}
