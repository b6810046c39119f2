//! DescribeClientQuotas and AlterClientQuotas: client quotas kept in the
//! metadata store, with Kafka's entity model and filter rules
//! ([`kafscale_controlplane::quota`]). Describing needs DESCRIBE_CONFIGS on
//! the cluster, altering ALTER_CONFIGS, as in Kafka.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl::op;
use kafscale_controlplane::quota::{entity_type, Entity, QuotaError};
use std::collections::{HashMap, HashSet};

/// DescribeClientQuotas match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// A parsed describe filter: exact names (`None`: the default entity) and
/// types that must merely be present.
struct Filter {
    exact: HashMap<String, Option<String>>,
    present: HashSet<String>,
    strict: bool,
}

impl Filter {
    /// Kafka's checks, with the error code and message it answers.
    fn parse(req: &DescribeClientQuotasRequest) -> Result<Self, (ResponseError, String)> {
        let invalid = |m: String| (ResponseError::InvalidRequest, m);
        let mut f = Filter {
            exact: HashMap::new(),
            present: HashSet::new(),
            strict: req.strict,
        };
        for c in &req.components {
            let t = c.entity_type.to_string();
            if t.is_empty() {
                return Err(invalid("Invalid empty entity type.".into()));
            }
            if f.exact.contains_key(&t) || f.present.contains(&t) {
                return Err(invalid(format!(
                    "Entity type {t} cannot appear more than once in the filter."
                )));
            }
            if ![entity_type::USER, entity_type::CLIENT_ID, entity_type::IP].contains(&t.as_str()) {
                return Err((
                    ResponseError::UnsupportedVersion,
                    format!("Unsupported entity type {t}"),
                ));
            }
            let name = c._match.as_ref().map(|m| m.to_string());
            match (c.match_type, name) {
                (MATCH_EXACT, Some(n)) => drop(f.exact.insert(t, Some(n))),
                (MATCH_DEFAULT, None) => drop(f.exact.insert(t, None)),
                (MATCH_SPECIFIED, None) => drop(f.present.insert(t)),
                (MATCH_EXACT, None) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    ))
                }
                (MATCH_DEFAULT | MATCH_SPECIFIED, Some(_)) => {
                    return Err(invalid(
                        "Request specified a match string with a match type that takes none."
                            .into(),
                    ))
                }
                (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
            }
        }
        let has = |t: &str| f.exact.contains_key(t) || f.present.contains(t);
        if has(entity_type::IP) && (has(entity_type::USER) || has(entity_type::CLIENT_ID)) {
            return Err(invalid(
                "Invalid entity filter component combination. IP filter component should not \
                 be used with user or clientId filter component."
                    .into(),
            ));
        }
        Ok(f)
    }

    fn matches(&self, entity: &Entity) -> bool {
        let components = entity.components();
        if self.strict && components.len() != self.exact.len() + self.present.len() {
            return false;
        }
        let get = |t: &str| components.iter().find(|(ct, _)| *ct == t).map(|(_, n)| *n);
        self.exact
            .iter()
            .all(|(t, name)| get(t) == Some(name.as_deref()))
            && self.present.iter().all(|t| get(t).is_some())
    }
}

/// Answers DescribeClientQuotas.
pub async fn describe(
    ctx: &Ctx<'_>,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let mut resp = DescribeClientQuotasResponse::default();
    if !ctx.allowed_on_cluster(op::DESCRIBE_CONFIGS) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        resp.error_message = text("Cluster authorization failed.");
        return resp;
    }
    let filter = match Filter::parse(&req) {
        Ok(f) => f,
        Err((code, msg)) => {
            resp.error_code = code.code();
            resp.error_message = text(msg);
            return resp;
        }
    };
    let stored = match ctx.view.meta().list_client_quotas().await {
        Ok(s) => s,
        Err(e) => {
            resp.error_code = e.kafka_code();
            resp.error_message = text(e.to_string());
            return resp;
        }
    };
    let mut entries = Vec::new();
    for q in stored {
        let Ok(entity) = Entity::from_stored(&q) else {
            continue;
        };
        if !filter.matches(&entity) {
            continue;
        }
        let mut entry = describe_client_quotas_response::EntryData::default();
        entry.entity = entity
            .components()
            .into_iter()
            .map(|(t, n)| {
                let mut e = describe_client_quotas_response::EntityData::default();
                e.entity_type = StrBytes::from_static_str(t);
                e.entity_name = n.map(|n| StrBytes::from_string(n.to_string()));
                e
            })
            .collect();
        let mut values: Vec<_> = q.values.into_iter().collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        entry.values = values
            .into_iter()
            .map(|(k, v)| {
                let mut d = describe_client_quotas_response::ValueData::default();
                d.key = StrBytes::from_string(k);
                d.value = v;
                d
            })
            .collect();
        entries.push(entry);
    }
    resp.entries = Some(entries);
    resp
}

/// Answers AlterClientQuotas: each entity's operations are validated as a
/// whole and applied in one compare-and-swap (or not at all).
pub async fn alter(ctx: &Ctx<'_>, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    let mut resp = AlterClientQuotasResponse::default();
    let authorized = ctx.allowed_on_cluster(op::ALTER_CONFIGS);
    let mut changed = false;
    for entry in req.entries {
        let mut r = alter_client_quotas_response::EntryData::default();
        r.entity = entry
            .entity
            .iter()
            .map(|e| {
                let mut d = alter_client_quotas_response::EntityData::default();
                d.entity_type = e.entity_type.clone();
                d.entity_name = e.entity_name.clone();
                d
            })
            .collect();
        let outcome = if !authorized {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                "Cluster authorization failed.".to_string(),
            ))
        } else {
            validate(&entry)
        };
        match outcome {
            Err((code, msg)) => {
                r.error_code = code.code();
                r.error_message = text(msg);
            }
            Ok(_) if req.validate_only => {}
            Ok((entity, ops)) => match ctx.view.meta().alter_client_quota(&entity, &ops).await {
                Ok(()) => changed = true,
                Err(e) => {
                    r.error_code = e.kafka_code();
                    r.error_message = text(e.to_string());
                }
            },
        }
        resp.entries.push(r);
    }
    if changed {
        // This gateway enforces what it just stored from its next request on.
        if let Err(e) = ctx.view.refresh().await {
            tracing::warn!(error = %e, "cluster view refresh after a quota change failed");
        }
    }
    resp
}

type Ops = Vec<(String, Option<f64>)>;

fn validate(
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<(Entity, Ops), (ResponseError, String)> {
    let invalid = |e: QuotaError| (ResponseError::InvalidRequest, e.to_string());
    let entity = Entity::parse(
        entry
            .entity
            .iter()
            .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
    )
    .map_err(invalid)?;
    let mut ops = Vec::with_capacity(entry.ops.len());
    let mut keys = HashSet::new();
    for o in &entry.ops {
        let key = o.key.to_string();
        if !keys.insert(key.clone()) {
            return Err((
                ResponseError::InvalidRequest,
                format!("Duplicate quota key {key}"),
            ));
        }
        if o.remove {
            kafscale_controlplane::quota::QuotaKind::from_key(&key)
                .ok_or_else(|| invalid(QuotaError::UnknownKey(key.clone())))?;
            ops.push((key, None));
        } else {
            entity.check_value(&key, o.value).map_err(invalid)?;
            ops.push((key, Some(o.value)));
        }
    }
    Ok((entity, ops))
}
