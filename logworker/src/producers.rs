//! Idempotent producers: per partition, each producer id's epoch and its
//! last five batches' sequence ranges (Kafka keeps five, matching
//! `max.in.flight.requests.per.connection` ≤ 5 for idempotent clients).
//!
//! Guarantees while the partition stays with this owner: a retried batch
//! (same producer, epoch and sequence range as one of the last five) is not
//! appended again and is answered with the original offset once that is
//! durable; a gap in sequence numbers is refused with
//! OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is refused with
//! INVALID_PRODUCER_EPOCH. A new owner rebuilds the state from the batches
//! in the newest WAL objects of each stream holding the partition's data
//! (where every batch still unacknowledged when a writer died is), so
//! retries across a failover are answered with their original offsets; a
//! producer whose last batch is older than that is unknown to the new owner
//! and may continue at any sequence.

use crate::batch::BatchInfo;
use crate::completion::Completion;
use kafka_protocol::error::ResponseError;
use std::collections::{HashMap, VecDeque};

/// How many recent batches per producer are remembered.
const REMEMBERED: usize = 5;

/// One remembered batch.
#[derive(Clone)]
struct Entry {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    done: Completion,
}

#[derive(Default)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Entry>,
}

/// What to do with an incoming batch.
pub enum Verdict {
    /// Append it (then `record` it).
    Append,
    /// Already appended at `base_offset`: answer with it once `done`.
    Duplicate { base_offset: i64, done: Completion },
    /// Refuse it with this error code.
    Refuse(i16),
}

/// Producer state of one partition.
#[derive(Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

impl std::fmt::Debug for ProducerStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerStates")
            .field("producers", &self.producers.len())
            .finish()
    }
}

fn last_seq(b: &BatchInfo) -> i32 {
    // Sequences wrap at i32::MAX, like Kafka's.
    ((i64::from(b.base_sequence) + i64::from(b.record_count) - 1) % (i64::from(i32::MAX) + 1))
        as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Decides what to do with a batch of an idempotent producer
    /// (`producer_id ≥ 0`).
    pub fn check(&mut self, b: &BatchInfo) -> Verdict {
        let Some(p) = self.producers.get_mut(&b.producer_id) else {
            return Verdict::Append;
        };
        if b.producer_epoch < p.epoch {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch.code());
        }
        if b.producer_epoch > p.epoch {
            // A bumped epoch starts its sequences at 0. (librdkafka bumps it
            // after local message timeouts and re-sends what was in flight
            // under new sequences: a batch that was durable is then stored
            // twice, as with any Kafka broker.)
            tracing::info!(
                producer_id = b.producer_id,
                from = p.epoch,
                to = b.producer_epoch,
                base_sequence = b.base_sequence,
                "idempotent producer bumped its epoch"
            );
            return if b.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber.code())
            };
        }
        let last = last_seq(b);
        if let Some(e) = p
            .batches
            .iter()
            .find(|e| e.first_seq == b.base_sequence && e.last_seq == last)
        {
            return match e.done.borrow().as_ref() {
                // Never made durable: the retry appends it again.
                Some(Err(_)) => Verdict::Append,
                _ => Verdict::Duplicate {
                    base_offset: e.base_offset,
                    done: e.done.clone(),
                },
            };
        }
        match p.batches.back() {
            Some(e) if next_seq(e.last_seq) != b.base_sequence => {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber.code())
            }
            _ => Verdict::Append,
        }
    }

    /// Remembers a batch found in the durable log by a new owner, so that
    /// retries of it across the ownership change are answered with its
    /// offset and the producer's sequence continues from it. Batches must
    /// come in offset order.
    pub fn restore(&mut self, b: &BatchInfo, base_offset: i64) {
        self.record(b, base_offset, crate::completion::durable());
    }

    /// Remembers an appended batch.
    pub fn record(&mut self, b: &BatchInfo, base_offset: i64, done: Completion) {
        let p = self.producers.entry(b.producer_id).or_default();
        if b.producer_epoch != p.epoch {
            p.epoch = b.producer_epoch;
            p.batches.clear();
        }
        // A failed batch re-appended replaces its old entry.
        p.batches
            .retain(|e| !(e.first_seq == b.base_sequence && e.last_seq == last_seq(b)));
        p.batches.push_back(Entry {
            first_seq: b.base_sequence,
            last_seq: last_seq(b),
            base_offset,
            done,
        });
        while p.batches.len() > REMEMBERED {
            p.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    fn batch(pid: i64, epoch: i16, seq: i32, n: i32) -> BatchInfo {
        BatchInfo {
            position: 0,
            size: 0,
            record_count: n,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    fn done(ok: bool) -> Completion {
        let v = if ok {
            Ok(())
        } else {
            Err(crate::completion::WalError::ShuttingDown)
        };
        watch::channel(Some(v)).1
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut s = ProducerStates::default();
        let b0 = batch(7, 0, 0, 3);
        assert!(matches!(s.check(&b0), Verdict::Append));
        s.record(&b0, 100, done(true));
        match s.check(&b0) {
            Verdict::Duplicate { base_offset, .. } => assert_eq!(base_offset, 100),
            _ => panic!("retry must be a duplicate"),
        }
        let gap = batch(7, 0, 5, 1);
        assert!(matches!(s.check(&gap), Verdict::Refuse(45)));
        let b1 = batch(7, 0, 3, 2);
        assert!(matches!(s.check(&b1), Verdict::Append));
        s.record(&b1, 103, done(false));
        // A failed batch is appended again on retry.
        assert!(matches!(s.check(&b1), Verdict::Append));
        assert!(matches!(s.check(&batch(7, 1, 4, 1)), Verdict::Refuse(45)));
        let e1 = batch(7, 1, 0, 1);
        assert!(matches!(s.check(&e1), Verdict::Append));
        s.record(&e1, 110, done(true));
        assert!(matches!(s.check(&batch(7, 0, 5, 1)), Verdict::Refuse(47)));
        // Unknown producers are accepted at any sequence.
        assert!(matches!(s.check(&batch(8, 0, 42, 1)), Verdict::Append));
    }
}
