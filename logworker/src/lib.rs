//! KafScale log worker: validates and sequences record batches, groups them
//! into WAL objects, acknowledges only durable data, caches the tail and
//! serves fetches. Where a produce is sequenced: `wal::writer::WalWriter::append`;
//! flushed: `WalWriter::run`; read back: `reader::read`.

pub mod batch;
pub mod cache;
pub mod completion;
pub mod control;
pub mod crc;
pub mod failpoint;
pub mod gc;
pub mod groups;
pub mod inflate;
pub mod load_report;
pub mod metrics;
pub mod objstore;
pub mod offset_metrics;
pub mod ownership;
pub mod partition;
pub mod producers;
pub mod reader;
pub mod recovery;
pub mod seal;
pub mod segment;
pub mod service;
pub mod wal;
pub mod worker;

pub use worker::{Worker, WorkerConfig};
