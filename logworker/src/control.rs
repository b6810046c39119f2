//! What the control API (`kafscale.control.v1`) asks of a log worker: its
//! status, a drain on request, and a flush on request.
//!
//! Guarantees:
//! - A requested drain moves partitions the way any reassignment does: the
//!   worker's registration says it is draining, the assigner gives its
//!   partitions and coordinator slots to other live workers (bumping their
//!   epochs), and this worker hands each over without a seal once
//!   everything it accepted is durable. Produces in flight are answered or
//!   retried by the gateway at the new owner; none is lost or refused.
//! - A draining worker opens no partition until undrained.
//! - A flush answers once everything appended before the call is durable.

use crate::completion::WalError;
use crate::worker::Worker;
use kafscale_controlplane::offsets_topic::OFFSETS_TOPIC;
use kafscale_controlplane::MetaError;
use kafscale_proto::control::v1 as pb;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a requested drain waits for the assigner and the handovers.
const DRAIN_WAIT: Duration = Duration::from_secs(120);

/// Why a requested drain did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no other live worker could take this worker's partitions")]
    NoOtherWorker,
    #[error("{remaining} partitions still owned after {waited:?}; the worker stays draining")]
    Timeout { remaining: usize, waited: Duration },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl Worker {
    /// The worker's part of a control-API status: owned partitions and
    /// coordinator slots with their epochs, the WAL and the caches.
    pub fn control_status(&self) -> pb::StatusResponse {
        let mut partitions: Vec<pb::OwnedPartition> = self
            .partitions
            .iter()
            .map(|p| {
                let log = p.value();
                pb::OwnedPartition {
                    topic: log.topic.clone(),
                    partition: log.id.partition,
                    leader_epoch: log.leader_epoch,
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                    compacted_offset: log.compacted_offset(),
                }
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut coordinator_slots: Vec<pb::CoordinatorSlot> = self
            .groups
            .slot_group_counts()
            .into_iter()
            .map(|(slot, groups)| pb::CoordinatorSlot {
                slot,
                leader_epoch: partitions
                    .iter()
                    .find(|p| p.topic == OFFSETS_TOPIC && p.partition == slot)
                    .map_or(-1, |p| p.leader_epoch),
                groups: groups as u32,
            })
            .collect();
        coordinator_slots.sort_by_key(|s| s.slot);
        pb::StatusResponse {
            draining: self.draining.load(Ordering::SeqCst),
            partitions,
            coordinator_slots,
            wal: Some(self.wal.status()),
            cache: Some(pb::CacheStatus {
                tail_cache_bytes: self.wal.tail_cache().used() as u64,
                tail_cache_capacity_bytes: self.cfg.cache_bytes as u64,
                segment_cache_bytes: self.source.blocks.bytes() as u64,
                segment_cache_capacity_bytes: self.cfg.segment_cache_bytes as u64,
            }),
            ..Default::default()
        }
    }

    /// Drains on request: marks the registration draining so the assigner
    /// moves every partition and slot to other live workers, then waits
    /// until this worker owns, opens and hands over nothing. Returns how
    /// many partitions it owned when the drain began. Refused, with nothing
    /// changed, when no other live worker could take them.
    pub async fn drain_on_request(&self) -> Result<usize, DrainError> {
        let others = self
            .meta
            .list_workers()
            .await?
            .into_iter()
            .filter(|w| w.worker_id != self.cfg.worker_id && !w.draining)
            .count();
        if others == 0 {
            return Err(DrainError::NoOtherWorker);
        }
        let owned = self.partitions.len() + self.opening.len();
        self.draining.store(true, Ordering::SeqCst);
        if let Err(e) = self.set_registered_draining(true).await {
            self.draining.store(false, Ordering::SeqCst);
            return Err(e.into());
        }
        tracing::info!(
            partitions = owned,
            "drain requested: waiting for the assigner to move partitions"
        );
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        loop {
            let remaining = self.partitions.len() + self.opening.len() + self.handovers.len();
            if remaining == 0 {
                tracing::info!(partitions = owned, "drained on request");
                return Ok(owned);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DrainError::Timeout {
                    remaining,
                    waited: DRAIN_WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends a drain: the worker is assignable again and opens what the
    /// assigner gives it.
    pub async fn undrain(&self) -> Result<(), MetaError> {
        self.set_registered_draining(false).await?;
        self.draining.store(false, Ordering::SeqCst);
        self.opened.notify_one();
        tracing::info!("undrained: assignable again");
        Ok(())
    }

    /// Writes the WAL buffer now; answers once everything appended before
    /// the call is durable, with the stream sequence durable so far.
    pub async fn flush(&self) -> Result<u64, WalError> {
        self.wal.flush_now().await
    }

    async fn set_registered_draining(&self, draining: bool) -> Result<(), MetaError> {
        self.update_registration(|r| r.draining = draining).await
    }
}
