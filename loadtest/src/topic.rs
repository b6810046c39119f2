//! Topic preparation: create it if missing and discover its partitions.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// Timeout of one admin or metadata request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Topic to prepare.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic name.
    pub topic: String,
    /// Partitions when creating.
    pub partitions: i32,
    /// Replication factor when creating.
    pub replication_factor: i32,
    /// Extra client properties (e.g. security settings).
    pub props: Vec<(String, String)>,
}

/// Creates the topic (an existing topic is fine; other creation failures are
/// reported as warnings, since the broker may auto-create topics or lack
/// CreateTopics support) and waits until metadata lists its partitions.
/// Returns the partition ids, sorted.
pub fn ensure_topic(spec: &TopicSpec, deadline: Instant) -> anyhow::Result<Vec<i32>> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &spec.bootstrap);
    for (k, v) in &spec.props {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating admin client")?;

    // A full (all-topics) metadata request never auto-creates topics, so an
    // existing topic is detected without side effects.
    let remaining = deadline.saturating_duration_since(Instant::now());
    if let Ok(ids) = partitions_of(&admin, &spec.topic, true, remaining) {
        return Ok(ids);
    }
    create(&admin, spec, deadline);

    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last_problem = match partitions_of(&admin, &spec.topic, false, remaining) {
            Ok(ids) => return Ok(ids),
            Err(problem) => problem,
        };
        if Instant::now() >= deadline {
            bail!(
                "topic {} not available on {}: {last_problem}",
                spec.topic,
                spec.bootstrap
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Issues CreateTopics; only reports problems, since the topic may still
/// appear through auto-creation or another client.
fn create(admin: &AdminClient<DefaultClientContext>, spec: &TopicSpec, deadline: Instant) {
    let timeout = REQUEST_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    if timeout.is_zero() {
        return;
    }
    let new_topic = NewTopic::new(
        &spec.topic,
        spec.partitions,
        TopicReplication::Fixed(spec.replication_factor),
    );
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    match futures::executor::block_on(admin.create_topics([&new_topic], &opts)) {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(name) => {
                        eprintln!("created topic {name} with {} partitions", spec.partitions)
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        eprintln!("warning: could not create topic {name}: {code}; continuing")
                    }
                }
            }
        }
        Err(e) => eprintln!("warning: CreateTopics failed: {e}; continuing"),
    }
}

/// Sorted partition ids of `topic` from a metadata request, or a description
/// of why they are not available. `all_topics` requests metadata for every
/// topic, which never triggers broker-side auto-creation.
fn partitions_of(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    all_topics: bool,
    wait: Duration,
) -> Result<Vec<i32>, String> {
    let filter = (!all_topics).then_some(topic);
    let md = admin
        .inner()
        .fetch_metadata(filter, REQUEST_TIMEOUT.min(wait))
        .map_err(|e| e.to_string())?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| "topic missing from metadata".to_string())?;
    if let Some(e) = t.error() {
        return Err(format!("topic error {:?}", RDKafkaErrorCode::from(e)));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err("topic has no partitions".to_string());
    }
    ids.sort_unstable();
    Ok(ids)
}
