//! FindCoordinator: every gateway fronts every coordinator, so the answer is
//! this gateway (the group request is then forwarded to the worker that owns
//! the group's slot). Transaction coordinators do not exist: transactions
//! are not offered.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::offsets_topic::OFFSETS_TOPIC;

/// Answers a FindCoordinator request (single key before v4, batched from v4).
pub fn handle(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let error = if req.key_type != 0 {
        E::InvalidRequest.code()
    } else if !ctx.view.snapshot().topics.contains_key(OFFSETS_TOPIC) {
        E::CoordinatorNotAvailable.code()
    } else {
        0
    };
    // A group the principal may not DESCRIBE has no coordinator for it.
    let error_for = |group: &str| {
        if error == 0 && !ctx.allowed_on_group(acl::op::DESCRIBE, group) {
            E::GroupAuthorizationFailed.code()
        } else {
            error
        }
    };
    let message = |code: i16| {
        (code == E::InvalidRequest.code())
            .then(|| StrBytes::from_static_str("only group coordinators exist (no transactions)"))
    };
    let node = |code: i16| if code == 0 { ctx.cfg.node_id } else { -1 };
    let host = |code: i16| {
        StrBytes::from_string(if code == 0 {
            ctx.cfg.advertised_host.clone()
        } else {
            String::new()
        })
    };
    let port = |code: i16| {
        if code == 0 {
            ctx.cfg.advertised_port
        } else {
            -1
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let error = error_for(k);
                let mut c = Coordinator::default();
                c.key = k.clone();
                c.node_id = BrokerId(node(error));
                c.host = host(error);
                c.port = port(error);
                c.error_code = error;
                c.error_message = message(error);
                c
            })
            .collect();
    } else {
        let error = error_for(&req.key);
        resp.error_code = error;
        if ctx.version >= 1 {
            resp.error_message = message(error);
        }
        resp.node_id = BrokerId(node(error));
        resp.host = host(error);
        resp.port = port(error);
    }
    resp
}
