//! Write-ahead log: the object format, the flush policy and the group-commit writer.

pub mod format;
pub mod policy;
pub mod writer;

/// Key of WAL object `seq` of a worker stream:
/// `<ns>/wal/<worker-id>/<stream-epoch>/<seq:020>`.
pub fn object_key(namespace: &str, worker_id: &str, stream_epoch: u64, seq: u64) -> String {
    format!(
        "{}{seq:020}",
        stream_prefix(namespace, worker_id, stream_epoch)
    )
}

/// Splits a WAL object key into its stream prefix (as [`stream_prefix`]
/// builds it) and sequence number.
pub fn split_object_key(key: &str) -> Option<(&str, u64)> {
    let (stream, seq) = key.rsplit_once('/')?;
    Some((&key[..=stream.len()], seq.parse().ok()?))
}

/// Prefix of every object of one worker stream.
pub fn stream_prefix(namespace: &str, worker_id: &str, stream_epoch: u64) -> String {
    format!("{namespace}/wal/{worker_id}/{stream_epoch:020}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_split_back_into_stream_and_sequence() {
        let key = object_key("ns", "w-1", 7, 42);
        assert_eq!(
            split_object_key(&key),
            Some((stream_prefix("ns", "w-1", 7).as_str(), 42))
        );
        assert_eq!(split_object_key("ns/wal/w-1/x"), None);
    }
}
