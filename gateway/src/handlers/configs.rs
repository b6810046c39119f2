//! Topic configs: the ones we understand, their defaults and validation
//! (shared by CreateTopics, DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs).

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    alter_configs_response, AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::log_policy::LogDefaults;
use kafscale_controlplane::MetaError;

/// Kafka's resource type codes.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka ConfigType codes.
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const SHORT: i8 = 4;
const LONG: i8 = 5;
const DOUBLE: i8 = 6;
const LIST: i8 = 7;
/// Kafka config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// (name, default, type) of every topic config we keep.
fn known(ctx: &Ctx<'_>) -> Vec<(&'static str, String, i8)> {
    vec![
        ("cleanup.policy", "delete".into(), LIST),
        (
            "delete.retention.ms",
            LogDefaults::DELETE_RETENTION_MS.to_string(),
            LONG,
        ),
        (
            "max.message.bytes",
            ctx.cfg.default_max_message_bytes.to_string(),
            INT,
        ),
        ("message.timestamp.type", "CreateTime".into(), STRING),
        (
            "min.cleanable.dirty.ratio",
            LogDefaults::MIN_CLEANABLE_DIRTY_RATIO.to_string(),
            DOUBLE,
        ),
        (
            "min.compaction.lag.ms",
            LogDefaults::MIN_COMPACTION_LAG_MS.to_string(),
            LONG,
        ),
        ("min.insync.replicas", "1".into(), INT),
        ("retention.bytes", "-1".into(), LONG),
        ("retention.ms", "604800000".into(), LONG),
        ("segment.bytes", LogDefaults::SEGMENT_BYTES.to_string(), INT),
        ("segment.ms", LogDefaults::SEGMENT_MS.to_string(), LONG),
    ]
}

pub use kafscale_controlplane::topic_config::validate;

/// One described config entry.
fn entry(
    ctx: &Ctx<'_>,
    name: &str,
    value: String,
    source: i8,
    ty: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = StrBytes::from_string(name.to_string());
    c.value = Some(StrBytes::from_string(value));
    c.read_only = read_only;
    if ctx.version >= 1 {
        c.config_source = source;
    }
    if ctx.version >= 3 {
        c.config_type = ty;
    }
    c
}

/// (name, value, type) of the broker configs a gateway reports: its own
/// settings, fixed at start (so read-only, source STATIC_BROKER_CONFIG).
fn broker_configs(ctx: &Ctx<'_>) -> Vec<(&'static str, String, i8)> {
    let offsets_partitions = ctx
        .view
        .snapshot()
        .topics
        .get(kafscale_controlplane::offsets_topic::OFFSETS_TOPIC)
        .map(|t| t.partitions)
        .unwrap_or(0);
    vec![
        (
            "advertised.listeners",
            format!(
                "PLAINTEXT://{}:{}",
                ctx.cfg.advertised_host, ctx.cfg.advertised_port
            ),
            LIST,
        ),
        (
            "auto.create.topics.enable",
            ctx.cfg.auto_create_topics.to_string(),
            BOOLEAN,
        ),
        ("broker.id", ctx.cfg.node_id.to_string(), INT),
        ("default.replication.factor", "1".into(), SHORT),
        (
            "message.max.bytes",
            ctx.cfg.default_max_message_bytes.to_string(),
            INT,
        ),
        ("min.insync.replicas", "1".into(), INT),
        (
            "num.partitions",
            ctx.cfg.auto_create_partitions.to_string(),
            INT,
        ),
        (
            "offsets.topic.num.partitions",
            offsets_partitions.to_string(),
            INT,
        ),
        (
            "socket.request.max.bytes",
            ctx.cfg.max_frame_bytes.to_string(),
            INT,
        ),
    ]
}

/// The authorization error for `operation` on a config resource: broker
/// configs belong to the cluster resource, as in Kafka.
fn unauthorized(ctx: &Ctx<'_>, resource_type: i8, name: &str, operation: i32) -> Option<i16> {
    match resource_type {
        TOPIC if !ctx.allowed_on_topic(operation, name) => {
            Some(ResponseError::TopicAuthorizationFailed.code())
        }
        BROKER if !ctx.allowed_on_cluster(operation) => {
            Some(ResponseError::ClusterAuthorizationFailed.code())
        }
        _ => None,
    }
}

/// Answers DescribeConfigs for topics and for this broker.
pub async fn describe(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let snap = ctx.view.snapshot();
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let name = res.resource_name.to_string();
        let wanted = res
            .configuration_keys
            .map(|k| k.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let is_wanted = |key: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == key));
        if let Some(code) = unauthorized(ctx, res.resource_type, &name, acl::op::DESCRIBE_CONFIGS) {
            r.error_code = code;
        } else if res.resource_type == BROKER {
            if name.is_empty() || name == ctx.cfg.node_id.to_string() {
                for (key, value, ty) in broker_configs(ctx) {
                    if is_wanted(key) {
                        r.configs
                            .push(entry(ctx, key, value, STATIC_BROKER_CONFIG, ty, true));
                    }
                }
            } else {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(StrBytes::from_string(format!(
                    "unknown broker id '{name}'; this gateway is broker {}",
                    ctx.cfg.node_id
                )));
            }
        } else if res.resource_type != TOPIC {
            r.error_code = ResponseError::InvalidRequest.code();
            r.error_message = Some(StrBytes::from_static_str(
                "only topic and broker configs are supported",
            ));
        } else if let Some(topic) = snap.topics.get(&name) {
            for (key, default, ty) in known(ctx) {
                if !is_wanted(key) {
                    continue;
                }
                let (value, source) = match topic.configs.get(key) {
                    Some(v) => (v.clone(), DYNAMIC_TOPIC_CONFIG),
                    None => (default, DEFAULT_CONFIG),
                };
                r.configs.push(entry(ctx, key, value, source, ty, false));
            }
        } else {
            r.error_code = ResponseError::UnknownTopicOrPartition.code();
        }
        resp.results.push(r);
    }
    resp
}

/// Applies `change` to topic `name` (with `validate_only`, only checks that
/// it exists), answering once this gateway's view shows the change, so a
/// describe right after the alter sees it.
async fn apply(
    ctx: &Ctx<'_>,
    name: &str,
    validate_only: bool,
    change: impl Fn(&mut kafscale_proto::metadata::v1::Topic),
) -> Result<(), (i16, String)> {
    let result = if validate_only {
        match ctx.view.meta().get_topic(name).await {
            Ok(Some(_)) => Ok(None),
            Ok(None) => Err(MetaError::UnknownTopic(name.to_string())),
            Err(e) => Err(e),
        }
    } else {
        ctx.view
            .meta()
            .update_topic(name, |t| {
                change(t);
                Ok(())
            })
            .await
            .map(|updated| Some(updated.configs))
    };
    match result {
        Ok(Some(configs)) => {
            ctx.view
                .wait_for(std::time::Duration::from_secs(3), |s| {
                    s.topics.get(name).is_some_and(|t| t.configs == configs)
                })
                .await;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err((e.kafka_code(), e.to_string())),
    }
}

/// Answers AlterConfigs (the non-incremental API) for topics with Kafka's
/// replace-all semantics: the topic's configs become exactly the ones
/// named, every other one returns to its default. A null value is
/// INVALID_REQUEST, an unknown config or a bad value INVALID_CONFIG, and
/// then nothing of the resource changes; broker configs are static here,
/// so altering them is INVALID_REQUEST.
pub async fn alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let name = res.resource_name.to_string();
        let mut configs = std::collections::HashMap::new();
        let mut checked = Ok(());
        for c in &res.configs {
            let key = c.name.to_string();
            checked = match &c.value {
                None => Err((
                    ResponseError::InvalidRequest.code(),
                    format!("null value not supported for '{key}'"),
                )),
                Some(v) => validate(&key, v).map_err(|m| (ResponseError::InvalidConfig.code(), m)),
            }
            .and_then(|()| match configs.insert(key.clone(), c.value.clone()) {
                Some(_) => Err((
                    ResponseError::InvalidRequest.code(),
                    format!("config '{key}' named twice"),
                )),
                None => Ok(()),
            });
            if checked.is_err() {
                break;
            }
        }
        let result = if let Some(code) =
            unauthorized(ctx, res.resource_type, &name, acl::op::ALTER_CONFIGS)
        {
            Err((code, "not authorized".into()))
        } else if res.resource_type == BROKER {
            Err((
                ResponseError::InvalidRequest.code(),
                "broker configs are static and cannot be altered".into(),
            ))
        } else if res.resource_type != TOPIC {
            Err((
                ResponseError::InvalidRequest.code(),
                "only topic configs are supported".into(),
            ))
        } else {
            match checked {
                Ok(()) => {
                    let replacement: std::collections::HashMap<String, String> = configs
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v?.to_string())))
                        .collect();
                    apply(ctx, &name, req.validate_only, |t| {
                        t.configs = replacement.clone().into_iter().collect();
                    })
                    .await
                }
                Err(e) => Err(e),
            }
        };
        if let Err((code, msg)) = result {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        resp.responses.push(r);
    }
    resp
}

/// Answers IncrementalAlterConfigs for topics (SET and DELETE).
pub async fn incremental_alter(
    ctx: &Ctx<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let name = res.resource_name.to_string();
        let mut changes = Vec::new();
        let mut error: Option<(i16, String)> = None;
        if let Some(code) = unauthorized(ctx, res.resource_type, &name, acl::op::ALTER_CONFIGS) {
            error = Some((code, "not authorized".into()));
        } else if res.resource_type != TOPIC {
            error = Some((
                ResponseError::InvalidRequest.code(),
                "only topic configs are supported".into(),
            ));
        }
        for c in &res.configs {
            let key = c.name.to_string();
            let value = c.value.as_ref().map(|v| v.to_string());
            let checked = match (c.config_operation, &value) {
                (0, Some(v)) => validate(&key, v).map(|_| (key.clone(), value.clone())),
                (0, None) => Err(format!("SET of '{key}' needs a value")),
                (1, _) => validate(
                    &key,
                    &known(ctx)
                        .iter()
                        .find(|k| k.0 == key)
                        .map(|k| k.1.clone())
                        .unwrap_or_default(),
                )
                .map(|_| (key.clone(), None)),
                _ => Err(format!(
                    "operation {} on '{key}' is not supported",
                    c.config_operation
                )),
            };
            match checked {
                Ok(change) => changes.push(change),
                Err(msg) => {
                    error.get_or_insert((ResponseError::InvalidConfig.code(), msg));
                }
            }
        }
        if error.is_none() {
            let result = apply(ctx, &name, req.validate_only, |t| {
                for (k, v) in &changes {
                    match v {
                        Some(v) => t.configs.insert(k.clone(), v.clone()),
                        None => t.configs.remove(k),
                    };
                }
            })
            .await;
            if let Err(e) = result {
                error = Some(e);
            }
        }
        if let Some((code, msg)) = error {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        resp.responses.push(r);
    }
    resp
}
