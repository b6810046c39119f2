//! InitProducerId for idempotent producers (no transactions): hands out
//! producer ids from blocks reserved in the metadata store, so ids are unique
//! across gateways and restarts. A producer that asks again with its id and
//! epoch (KIP-360) keeps the id with the epoch bumped. Sequence checks happen
//! on the partition owner (`logworker::producers`).

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tokio::sync::Mutex;

/// Ids reserved per metadata write.
const BLOCK: i64 = 1000;

/// This gateway's current block of producer ids: [next, end).
#[derive(Default)]
pub struct ProducerIds(Mutex<(i64, i64)>);

impl ProducerIds {
    async fn next(&self, ctx: &Ctx<'_>) -> Option<i64> {
        let mut block = self.0.lock().await;
        if block.0 >= block.1 {
            match ctx.view.meta().allocate_producer_ids(BLOCK).await {
                Ok(start) => *block = (start, start + BLOCK),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reserve producer ids");
                    return None;
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Some(id)
    }
}

/// Answers InitProducerId.
pub async fn handle(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        // Transactions are not offered.
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return resp;
    }
    if !ctx.may_write_idempotently() {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return resp;
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return resp;
    }
    match ctx.producer_ids.next(ctx).await {
        Some(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        None => resp.error_code = ResponseError::CoordinatorNotAvailable.code(),
    }
    resp
}
