//! Asynchronous offset commits whose results reach
//! [`ConsumerContext::commit_callback`].
//!
//! rust-rdkafka 0.39 submits `commit(.., CommitMode::Async)` through
//! `rd_kafka_commit()` without a reply queue or native callback, so librdkafka
//! drops the result and `commit_callback` is never called for manual async
//! commits (rust-rdkafka issue #856). Here the commit is submitted with
//! `rd_kafka_commit_queue()` instead, naming the consumer's own queue as the
//! reply queue: the result comes back as an `OFFSET_COMMIT` event, which
//! [`BaseConsumer::poll`] hands to `commit_callback` (on the polling thread).
//!
//! This is the crate's only `unsafe` code; it is confined to this module.

use std::marker::PhantomData;
use std::ptr;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;

/// Submits asynchronous commits for one consumer; borrows the consumer so
/// the queue reference it holds cannot outlive the client.
pub struct AsyncCommitter<'a, C: ConsumerContext> {
    consumer: &'a BaseConsumer<C>,
    /// Reference to the consumer (group) queue, owned by this struct.
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Raw pointers are neither `Send` nor `Sync`; keep it that way.
    _not_send: PhantomData<*mut ()>,
}

impl<'a, C: ConsumerContext> AsyncCommitter<'a, C> {
    /// Prepares async commits on `consumer`, which must have a `group.id`.
    pub fn new(consumer: &'a BaseConsumer<C>) -> KafkaResult<Self> {
        // SAFETY: the client pointer is valid while `consumer` is borrowed.
        // The call returns a new reference (or NULL without a group), which
        // `Drop` releases.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        if queue.is_null() {
            return Err(KafkaError::ConsumerCommit(
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__UNKNOWN_GROUP.into(),
            ));
        }
        Ok(Self {
            consumer,
            queue,
            _not_send: PhantomData,
        })
    }

    /// Enqueues a commit of `offsets` and returns at once; the result is
    /// delivered to the context's `commit_callback` by a later `poll()`,
    /// with a copy of `offsets` (carrying per-partition errors).
    pub fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        // SAFETY: all pointers are valid for the duration of the call;
        // librdkafka copies `offsets` and takes its own reference to the
        // queue for the reply. With a queue and no callback the call does not
        // block.
        let err = unsafe {
            rdsys::rd_kafka_commit_queue(
                self.consumer.client().native_ptr(),
                offsets.ptr(),
                self.queue,
                None,
                ptr::null_mut(),
            )
        };
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(KafkaError::ConsumerCommit(err.into()))
        }
    }
}

impl<C: ConsumerContext> Drop for AsyncCommitter<'_, C> {
    fn drop(&mut self) {
        // SAFETY: `queue` is the reference obtained in `new`, released once;
        // the client is still alive because `consumer` is borrowed.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) };
    }
}
