//! Write-ahead log: the object format and the group-commit writer.

pub mod format;
pub mod writer;

/// Key of WAL object `seq` of a worker stream:
/// `<ns>/wal/<worker-id>/<stream-epoch>/<seq:020>`.
pub fn object_key(namespace: &str, worker_id: &str, stream_epoch: u64, seq: u64) -> String {
    format!(
        "{}{seq:020}",
        stream_prefix(namespace, worker_id, stream_epoch)
    )
}

/// Prefix of every object of one worker stream.
pub fn stream_prefix(namespace: &str, worker_id: &str, stream_epoch: u64) -> String {
    format!("{namespace}/wal/{worker_id}/{stream_epoch:020}/")
}
