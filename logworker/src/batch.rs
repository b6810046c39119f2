//! Kafka record batches (magic 2): validation of client bytes and in-place
//! offset assignment.
//!
//! A batch is accepted only if its lengths are consistent, its magic is 2,
//! its CRC32C matches and its record count agrees with its records. The CRC
//! does not cover `baseOffset` or `partitionLeaderEpoch`, so patching those two
//! fields keeps the client's bytes (and checksum) valid.

use crate::crc::Crc32c;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;

/// Bytes before the `batchLength` field's payload (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header.
pub const HEADER_LEN: usize = 61;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const RECORDS_COUNT_OFFSET: usize = 57;

/// Why a batch was rejected, mapped to a Kafka error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    #[error("invalid record batch: {0}")]
    Invalid(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
}

impl BatchError {
    /// The Kafka error code for this rejection.
    pub fn code(&self) -> i16 {
        match self {
            BatchError::Corrupt(_) => ResponseError::CorruptMessage.code(),
            BatchError::Invalid(_) => ResponseError::InvalidRecord.code(),
            BatchError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
        }
    }
}

/// Header facts of one validated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Offset of this batch within the validated buffer.
    pub position: usize,
    /// Total size (LOG_OVERHEAD + batchLength).
    pub size: usize,
    pub record_count: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// Idempotent producer id (−1 when the producer is not idempotent).
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the size of the batch starting at `buf[0]`, if its header is present.
pub fn batch_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, 8);
    if len < 0 {
        return None;
    }
    Some(LOG_OVERHEAD + len as usize)
}

/// Base offset of the batch starting at `buf[0]`.
pub fn base_offset(buf: &[u8]) -> i64 {
    be_i64(buf, 0)
}

/// Last offset of the batch starting at `buf[0]` (header must be present).
pub fn last_offset(buf: &[u8]) -> i64 {
    be_i64(buf, 0) + i64::from(be_i32(buf, LAST_OFFSET_DELTA_OFFSET))
}

/// Max timestamp of the batch starting at `buf[0]`.
pub fn max_timestamp(buf: &[u8]) -> i64 {
    be_i64(buf, MAX_TIMESTAMP_OFFSET)
}

/// Validates every batch in a produce payload. `max_batch_bytes` is the
/// topic's `max.message.bytes`.
pub fn validate(records: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchInfo>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Corrupt("empty record set".into()));
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < HEADER_LEN {
            return Err(BatchError::Corrupt(format!(
                "truncated batch header ({} bytes)",
                rest.len()
            )));
        }
        let size =
            batch_size(rest).ok_or_else(|| BatchError::Corrupt("negative batch length".into()))?;
        if size < HEADER_LEN || size > rest.len() {
            return Err(BatchError::Corrupt(format!(
                "batch length {size} does not fit {} bytes",
                rest.len()
            )));
        }
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        let batch = &rest[..size];
        if batch[16] != 2 {
            return Err(BatchError::Invalid(format!(
                "unsupported magic {}",
                batch[16]
            )));
        }
        if crate::crc::checksum(&batch[ATTRIBUTES_OFFSET..]) != stored_crc(batch) {
            return Err(BatchError::Corrupt("CRC32C mismatch".into()));
        }
        let count = be_i32(batch, RECORDS_COUNT_OFFSET);
        let last_delta = be_i32(batch, LAST_OFFSET_DELTA_OFFSET);
        if count <= 0 || last_delta != count - 1 {
            return Err(BatchError::Invalid(format!(
                "record count {count} inconsistent with last offset delta {last_delta}"
            )));
        }
        let attributes =
            i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]]);
        if attributes & 0x20 != 0 {
            return Err(BatchError::Invalid(
                "control batches may not be produced".into(),
            ));
        }
        if attributes & 0x10 != 0 {
            return Err(BatchError::Invalid(
                "transactional batches are not supported".into(),
            ));
        }
        check_records(batch, attributes & 0x7, count)?;
        out.push(header_info(batch, pos));
        pos += size;
    }
    Ok(out)
}

/// Refuses validated batches holding a record without a key (a compacted
/// topic keeps the latest record per key, so a keyless one has no place).
pub fn require_keys(records: &[u8], infos: &[BatchInfo]) -> Result<(), BatchError> {
    for info in infos {
        let mut b = Bytes::copy_from_slice(&records[info.position..info.position + info.size]);
        let set = RecordBatchDecoder::decode(&mut b)
            .map_err(|e| BatchError::Corrupt(format!("records do not decode: {e}")))?;
        if set.records.iter().any(|r| r.key.is_none()) {
            return Err(BatchError::Invalid(
                "compacted topic cannot accept a record without a key".into(),
            ));
        }
    }
    Ok(())
}

/// The header fields of one whole batch (at least `HEADER_LEN` bytes) found
/// at `position`.
fn header_info(batch: &[u8], position: usize) -> BatchInfo {
    BatchInfo {
        position,
        size: batch.len(),
        record_count: be_i32(batch, RECORDS_COUNT_OFFSET),
        base_timestamp: be_i64(batch, BASE_TIMESTAMP_OFFSET),
        max_timestamp: be_i64(batch, MAX_TIMESTAMP_OFFSET),
        producer_id: be_i64(batch, PRODUCER_ID_OFFSET),
        producer_epoch: i16::from_be_bytes([
            batch[PRODUCER_ID_OFFSET + 8],
            batch[PRODUCER_ID_OFFSET + 9],
        ]),
        base_sequence: be_i32(batch, PRODUCER_ID_OFFSET + 10),
    }
}

/// The base offset and header fields of every batch of a stored chunk
/// (whose CRC the reader verified).
pub fn stored_batches(chunk: Bytes) -> impl Iterator<Item = (i64, BatchInfo)> {
    iter_batches(chunk).map(|b| (base_offset(&b), header_info(&b, 0)))
}

/// Checks that the records inside a batch parse and match `count`.
fn check_records(batch: &[u8], codec: i16, count: i32) -> Result<(), BatchError> {
    if codec == 0 {
        // Uncompressed: walk the length-prefixed records without copying.
        let mut body = &batch[HEADER_LEN..];
        let mut seen = 0;
        while !body.is_empty() {
            let (len, used) =
                read_varint(body).ok_or_else(|| BatchError::Corrupt("bad record length".into()))?;
            if len < 0 || used + len as usize > body.len() {
                return Err(BatchError::Corrupt("record overruns batch".into()));
            }
            body = &body[used + len as usize..];
            seen += 1;
        }
        if seen != count {
            return Err(BatchError::Invalid(format!(
                "batch declares {count} records but holds {seen}"
            )));
        }
        return Ok(());
    }
    // Compressed: walk the records as they decompress, bounded (see inflate).
    crate::inflate::check_count(&batch[HEADER_LEN..], codec, count)
}

/// Zig-zag varint as used in Kafka records; returns (value, bytes used).
fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, b) in buf.iter().take(10).enumerate() {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

/// Copies a validated batch into `out`, patching its base offset and leader
/// epoch. Returns the last offset of the batch.
pub fn append_patched(out: &mut Vec<u8>, batch: &[u8], base: i64, leader_epoch: i32) -> i64 {
    let start = out.len();
    out.extend_from_slice(batch);
    out[start..start + 8].copy_from_slice(&base.to_be_bytes());
    out[start + 12..start + 16].copy_from_slice(&leader_epoch.to_be_bytes());
    base + i64::from(be_i32(batch, LAST_OFFSET_DELTA_OFFSET))
}

/// The CRC a batch header stores (over the batch from its attributes on).
fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_be_bytes([
        batch[CRC_OFFSET],
        batch[CRC_OFFSET + 1],
        batch[CRC_OFFSET + 2],
        batch[CRC_OFFSET + 3],
    ])
}

/// Extends `crc` over a whole batch that [`validate`] accepted (its header
/// patched or not): reads its 21 bytes up to the attributes and takes the
/// stored CRC for the rest, without reading its records again.
pub fn extend_crc(crc: &mut Crc32c, batch: &[u8]) {
    crc.update(&batch[..ATTRIBUTES_OFFSET]);
    crc.append(Crc32c::known(
        stored_crc(batch),
        (batch.len() - ATTRIBUTES_OFFSET) as u64,
    ));
}

/// Iterates the batches of a buffer of whole batches (as stored in a chunk).
pub fn iter_batches(mut buf: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        let size = batch_size(&buf)?;
        if size > buf.len() || size < HEADER_LEN {
            return None;
        }
        let b = buf.split_to(size);
        Some(b)
    })
}

/// Offset and timestamp of the first record at or after `target` timestamp in
/// one batch (decompressing if needed).
pub fn find_timestamp(batch: &Bytes, target: i64) -> Option<(i64, i64)> {
    let mut b = batch.clone();
    let set = RecordBatchDecoder::decode(&mut b).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp >= target)
        .map(|r| (r.offset, r.timestamp))
}

/// Offset and timestamp of the record with the largest timestamp in a batch
/// (the first one on ties).
pub fn find_max_timestamp(batch: &Bytes) -> Option<(i64, i64)> {
    let mut b = batch.clone();
    let set = RecordBatchDecoder::decode(&mut b).ok()?;
    let mut best: Option<(i64, i64)> = None;
    for r in &set.records {
        if best.is_none_or(|(_, ts)| r.timestamp > ts) {
            best = Some((r.offset, r.timestamp));
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes `n` records with the given codec and timestamps starting at `ts`.
    pub fn encode(n: usize, compression: Compression, ts: i64) -> Bytes {
        let keys: Vec<Option<Bytes>> = (0..n).map(|i| Some(Bytes::from(format!("k{i}")))).collect();
        encode_keys(&keys, compression, ts)
    }

    /// Encodes one record per entry of `keys` (100-byte values) with the
    /// given codec and timestamps starting at `ts`.
    pub fn encode_keys(keys: &[Option<Bytes>], compression: Compression, ts: i64) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: ts + i as i64,
                key: key.clone(),
                value: Some(Bytes::from(vec![b'v'; 100])),
                headers: IndexMap::new(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn keyless_records_are_refused_where_keys_are_required() {
        let keyed = encode(3, Compression::Lz4, 0);
        let infos = validate(&keyed, 1 << 20).unwrap();
        assert!(require_keys(&keyed, &infos).is_ok());
        let buf = encode_keys(
            &[Some(Bytes::from_static(b"k")), None],
            Compression::None,
            0,
        );
        let infos = validate(&buf, 1 << 20).unwrap();
        assert_eq!(require_keys(&buf, &infos).unwrap_err().code(), 87);
    }

    #[test]
    fn accepts_valid_batches_of_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode(5, c, 1000);
            let info = validate(&b, 1 << 20).unwrap();
            assert_eq!(info.len(), 1);
            assert_eq!(info[0].record_count, 5);
            assert_eq!(info[0].max_timestamp, 1004);
        }
    }

    #[test]
    fn rejects_bad_crc_truncation_size_and_count() {
        let b = encode(3, Compression::None, 0);
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(validate(&bad, 1 << 20).unwrap_err().code(), 2);
        assert_eq!(validate(&b[..b.len() - 1], 1 << 20).unwrap_err().code(), 2);
        assert_eq!(validate(&b, 10).unwrap_err().code(), 10);
        let mut wrong_count = b.to_vec();
        wrong_count[RECORDS_COUNT_OFFSET + 3] = 2;
        wrong_count[LAST_OFFSET_DELTA_OFFSET + 3] = 1;
        let crc = crc32c::crc32c(&wrong_count[ATTRIBUTES_OFFSET..]);
        wrong_count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate(&wrong_count, 1 << 20).unwrap_err().code(), 87);
    }

    #[test]
    fn a_patched_batch_checksum_comes_from_its_header_and_stored_crc() {
        let mut out = Vec::new();
        for (i, c) in [Compression::None, Compression::Zstd]
            .into_iter()
            .enumerate()
        {
            let b = encode(20 + i, c, 0);
            let start = out.len();
            append_patched(&mut out, &b, 1_000 * i as i64, 3);
            let mut crc = Crc32c::default();
            extend_crc(&mut crc, &out[start..]);
            assert_eq!(
                crc,
                Crc32c::known(crc32c::crc32c(&out[start..]), (out.len() - start) as u64)
            );
        }
    }

    #[test]
    fn patching_keeps_crc_valid_and_sets_offsets() {
        let b = encode(4, Compression::Lz4, 0);
        let mut out = Vec::new();
        let last = append_patched(&mut out, &b, 100, 7);
        assert_eq!(last, 103);
        assert!(validate(&out, 1 << 20).is_ok());
        assert_eq!(base_offset(&out), 100);
        let mut decoded = Bytes::from(out);
        let set = RecordBatchDecoder::decode(&mut decoded).unwrap();
        assert_eq!(set.records[3].offset, 103);
        assert_eq!(set.records[0].partition_leader_epoch, 7);
    }

    #[test]
    fn finds_first_offset_at_or_after_timestamp() {
        let mut out = Vec::new();
        append_patched(&mut out, &encode(10, Compression::Zstd, 500), 20, 0);
        let batch = Bytes::from(out);
        assert_eq!(find_timestamp(&batch, 503), Some((23, 503)));
        assert_eq!(find_timestamp(&batch, 10_000), None);
        assert_eq!(find_max_timestamp(&batch), Some((29, 509)));
    }
}
