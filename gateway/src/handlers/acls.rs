//! DescribeAcls, CreateAcls and DeleteAcls over the ACL bindings kept in the
//! metadata store. Without an authorizer every call answers
//! SECURITY_DISABLED, as a Kafka broker without `authorizer.class.name`
//! does. Reads go to the store (a client sees its own writes at once); after
//! a change this gateway refreshes its view, other gateways follow their
//! watches.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl::{self, AclBinding, AclFilter};
use std::collections::BTreeMap;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The error every ACL call of this request gets before touching the store:
/// SECURITY_DISABLED without an authorizer, CLUSTER_AUTHORIZATION_FAILED
/// unless the principal may perform `operation` on the cluster.
fn refusal(ctx: &Ctx<'_>, operation: i32) -> Option<(i16, &'static str)> {
    if ctx.cfg.authorizer.is_none() {
        Some((E::SecurityDisabled.code(), "No Authorizer is configured."))
    } else if !ctx.allowed_on_cluster(operation) {
        Some((E::ClusterAuthorizationFailed.code(), "not authorized"))
    } else {
        None
    }
}

/// The [`AclFilter`] of a DescribeAcls request or a DeleteAcls filter (two
/// wire types with the same fields).
macro_rules! acl_filter {
    ($f:expr) => {
        AclFilter {
            resource_type: $f.resource_type_filter.into(),
            resource_name: $f.resource_name_filter.as_ref().map(|n| n.to_string()),
            pattern_type: $f.pattern_type_filter.into(),
            principal: $f.principal_filter.as_ref().map(|p| p.to_string()),
            host: $f.host_filter.as_ref().map(|h| h.to_string()),
            operation: $f.operation.into(),
            permission_type: $f.permission_type.into(),
        }
    };
}

/// Answers DescribeAcls: the matching bindings grouped by resource pattern.
pub async fn describe(ctx: &Ctx<'_>, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    if let Some((code, msg)) = refusal(ctx, acl::op::DESCRIBE) {
        resp.error_code = code;
        resp.error_message = Some(s(msg));
        return resp;
    }
    let f = acl_filter!(req);
    if let Err(msg) = f.validate() {
        resp.error_code = E::InvalidRequest.code();
        resp.error_message = Some(s(&msg));
        return resp;
    }
    let bindings = match ctx.view.meta().list_acls().await {
        Ok(b) => b,
        Err(e) => {
            resp.error_code = e.kafka_code();
            resp.error_message = Some(s(&e.to_string()));
            return resp;
        }
    };
    let mut by_resource: BTreeMap<(i32, String, i32), Vec<AclDescription>> = BTreeMap::new();
    for b in bindings.into_iter().filter(|b| f.matches(b)) {
        let mut d = AclDescription::default();
        d.principal = s(&b.principal);
        d.host = s(&b.host);
        d.operation = b.operation as i8;
        d.permission_type = b.permission_type as i8;
        by_resource
            .entry((b.resource_type, b.resource_name, b.pattern_type))
            .or_default()
            .push(d);
    }
    resp.resources = by_resource
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = rt as i8;
            r.resource_name = s(&name);
            r.pattern_type = pt as i8;
            r.acls = acls;
            r
        })
        .collect();
    resp
}

/// Answers CreateAcls: each creation is validated on its own; valid ones are
/// stored together.
pub async fn create(ctx: &Ctx<'_>, req: CreateAclsRequest) -> CreateAclsResponse {
    let refused = refusal(ctx, acl::op::ALTER);
    let mut results = Vec::with_capacity(req.creations.len());
    let mut valid = Vec::new();
    for c in &req.creations {
        let b = AclBinding {
            resource_type: c.resource_type.into(),
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type.into(),
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation.into(),
            permission_type: c.permission_type.into(),
        };
        let outcome = match refused {
            Some((code, msg)) => Err((code, msg.to_string())),
            None => acl::validate(&b).map_err(|m| (E::InvalidRequest.code(), m)),
        };
        let mut r = AclCreationResult::default();
        match outcome {
            Ok(()) => valid.push((results.len(), b)),
            Err((code, msg)) => {
                r.error_code = code;
                r.error_message = Some(s(&msg));
            }
        }
        results.push(r);
    }
    if !valid.is_empty() {
        let bindings: Vec<AclBinding> = valid.iter().map(|(_, b)| b.clone()).collect();
        if let Err(e) = ctx.view.meta().create_acls(&bindings).await {
            for (i, _) in &valid {
                results[*i].error_code = e.kafka_code();
                results[*i].error_message = Some(s(&e.to_string()));
            }
        }
        refresh(ctx).await;
    }
    let mut resp = CreateAclsResponse::default();
    resp.results = results;
    resp
}

/// Answers DeleteAcls: every binding matching a filter is removed and listed
/// under that filter.
pub async fn delete(ctx: &Ctx<'_>, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut resp = DeleteAclsResponse::default();
    let refused = refusal(ctx, acl::op::ALTER);
    let stored = match refused {
        Some(_) => Ok(Vec::new()),
        None => ctx.view.meta().list_acls().await,
    };
    let mut doomed: Vec<AclBinding> = Vec::new();
    for f in &req.filters {
        let mut fr = DeleteAclsFilterResult::default();
        let f = acl_filter!(f);
        let checked = match (&refused, &stored, f.validate()) {
            (Some((code, msg)), _, _) => Err((*code, msg.to_string())),
            (None, Err(e), _) => Err((e.kafka_code(), e.to_string())),
            (None, Ok(_), Err(msg)) => Err((E::InvalidRequest.code(), msg)),
            (None, Ok(all), Ok(())) => Ok(all),
        };
        match checked {
            Err((code, msg)) => {
                fr.error_code = code;
                fr.error_message = Some(s(&msg));
            }
            Ok(all) => {
                for b in all.iter().filter(|b| f.matches(b)) {
                    let mut m = DeleteAclsMatchingAcl::default();
                    m.resource_type = b.resource_type as i8;
                    m.resource_name = s(&b.resource_name);
                    m.pattern_type = b.pattern_type as i8;
                    m.principal = s(&b.principal);
                    m.host = s(&b.host);
                    m.operation = b.operation as i8;
                    m.permission_type = b.permission_type as i8;
                    fr.matching_acls.push(m);
                    doomed.push(b.clone());
                }
            }
        }
        resp.filter_results.push(fr);
    }
    if !doomed.is_empty() {
        if let Err(e) = ctx.view.meta().delete_acls(&doomed).await {
            for fr in &mut resp.filter_results {
                if !fr.matching_acls.is_empty() {
                    fr.error_code = e.kafka_code();
                    fr.error_message = Some(s(&e.to_string()));
                    fr.matching_acls.clear();
                }
            }
        }
        refresh(ctx).await;
    }
    resp
}

/// Makes this gateway enforce a change at once.
async fn refresh(ctx: &Ctx<'_>) {
    if let Err(e) = ctx.view.refresh().await {
        tracing::warn!(error = %e, "view refresh after an ACL change failed");
    }
}
