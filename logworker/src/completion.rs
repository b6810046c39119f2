//! Durability completions: the one signal by which every part of the write
//! path learns whether appended data became durable.
//!
//! This module sits at the bottom of the write path (it imports nothing of
//! the worker's own), so the path reads as a line: batch validation →
//! producers → partition log → WAL writer, each depending only on the ones
//! before it and on this module.
//!
//! Guarantees: a [`Completion`] resolves exactly once, to `Ok` only after the
//! WAL object holding the data was created in the object store, or to the
//! [`WalError`] that says why it never will be; a writer that goes away
//! without resolving it reads as [`WalError::ShuttingDown`].

use crate::objstore::ObjectError;
use kafka_protocol::error::ResponseError;
use tokio::sync::watch;

/// Why an append was not (or will not be) made durable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    /// The object store failed the write (after the store's own retries).
    #[error("storage write failed: {0}")]
    Storage(#[from] ObjectError),
    /// A newer owner sealed this worker's stream.
    #[error("WAL stream fenced by a newer owner")]
    Fenced,
    #[error("worker is shutting down")]
    ShuttingDown,
    #[error("partition is being handed over to a new owner")]
    NotOwner,
    /// The store has not finished the oldest WAL write for this long, so
    /// nothing new is taken until it answers (as a Kafka broker refuses
    /// produces to a failed log directory).
    #[error("object store not answering: the oldest WAL write has waited {0:?}")]
    Stalled(std::time::Duration),
}

impl WalError {
    /// The Kafka error a client sees for this failure on a partition: the
    /// partition moved (retry at the new owner), or the write failed
    /// (retriable storage error). Group APIs translate the same codes to
    /// their coordinator equivalents in one place
    /// (`groups::coordinator_code`).
    pub fn kafka_code(&self) -> i16 {
        match self {
            WalError::Fenced | WalError::ShuttingDown | WalError::NotOwner => {
                ResponseError::NotLeaderOrFollower.code()
            }
            WalError::Storage(e) => e.kafka_code(),
            WalError::Stalled(_) => ResponseError::KafkaStorageError.code(),
        }
    }
}

/// Resolution of one flush, shared by every append in it.
pub type Completion = watch::Receiver<Option<Result<(), WalError>>>;

/// The sending side of a [`Completion`].
pub type CompletionSender = watch::Sender<Option<Result<(), WalError>>>;

/// A completion that has not resolved yet, and its sender.
pub fn pending() -> (CompletionSender, Completion) {
    watch::channel(None)
}

/// A completion that is already resolved as durable (data found in the
/// durable log, e.g. by a new owner).
pub fn durable() -> Completion {
    watch::channel(Some(Ok(()))).1
}

/// Waits until appended data is durable, or reports why it never will be.
pub async fn wait_durable(mut c: Completion) -> Result<(), WalError> {
    match c.wait_for(|v| v.is_some()).await {
        Ok(v) => v.clone().unwrap_or(Err(WalError::ShuttingDown)),
        Err(_) => Err(WalError::ShuttingDown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_writer_reads_as_shutting_down() {
        let (tx, c) = pending();
        drop(tx);
        assert_eq!(wait_durable(c).await, Err(WalError::ShuttingDown));
        assert_eq!(wait_durable(durable()).await, Ok(()));
    }

    #[test]
    fn every_wal_error_has_one_retriable_kafka_code() {
        let storage = WalError::Storage(ObjectError::Transient {
            key: "k".into(),
            reason: "503".into(),
        });
        for e in [
            storage,
            WalError::Stalled(std::time::Duration::from_secs(10)),
        ] {
            assert_eq!(e.kafka_code(), ResponseError::KafkaStorageError.code());
        }
        for e in [WalError::Fenced, WalError::ShuttingDown, WalError::NotOwner] {
            assert_eq!(e.kafka_code(), ResponseError::NotLeaderOrFollower.code());
        }
    }
}
