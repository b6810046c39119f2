//! Message sets of magic 0 and 1 (Produce v0–2), validated and up-converted
//! to one v2 record batch, as Kafka 3.x brokers do on the way in.
//!
//! Format: a sequence of `offset i64, size i32, message`; a message is
//! `crc u32 (CRC-32/IEEE of the rest), magic i8, attributes i8,
//! [timestamp i64 (magic 1)], key bytes, value bytes`. Attributes bits 0–2
//! are the codec; a compressed message (a *wrapper*) holds in its value a
//! message set of the same magic, uncompressed.
//!
//! Errors are Kafka's: a damaged message (bad CRC, sizes that do not fit,
//! truncation, unknown magic or codec) is CORRUPT_MESSAGE; a well-formed
//! one Kafka refuses (a v2 batch in an old Produce, a wrapper inside a
//! wrapper, inner messages of another magic, magic-1 inner offsets out of
//! order, an empty wrapper) is INVALID_RECORD; zstd, which needs magic 2, is
//! UNSUPPORTED_COMPRESSION_TYPE; more than `cap` bytes after decompression
//! is MESSAGE_TOO_LARGE. Lengths are never trusted: each is checked against
//! the bytes that are there before it is used, and decompression stops at
//! `cap` bytes for the whole set.

use super::compression::{self, InflateError};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

/// Smallest message of each magic (header, null key and value).
const MIN_MESSAGE: [usize; 2] = [14, 22];
/// `offset` and `size` before each message.
const LOG_OVERHEAD: usize = 12;
/// A magic-1 attribute: the timestamp is the broker's append time.
const LOG_APPEND_TIME: u8 = 0x08;
/// Fixed header of a v2 record batch.
const V2_HEADER_LEN: usize = 61;

/// Why a message set was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageSetError {
    #[error("corrupt message: {0}")]
    Corrupt(String),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("compression codec {0} needs record batches of magic 2")]
    UnsupportedCompression(u8),
    #[error("message set inflates beyond {0} bytes")]
    TooLarge(usize),
}

impl MessageSetError {
    /// The Kafka error code the partition is answered with.
    pub fn code(&self) -> i16 {
        match self {
            Self::Corrupt(_) => ResponseError::CorruptMessage.code(),
            Self::Invalid(_) => ResponseError::InvalidRecord.code(),
            Self::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType.code(),
            Self::TooLarge(_) => ResponseError::MessageTooLarge.code(),
        }
    }
}

impl From<InflateError> for MessageSetError {
    fn from(e: InflateError) -> Self {
        match e {
            InflateError::TooLarge(cap) => Self::TooLarge(cap),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

fn corrupt(msg: impl Into<String>) -> MessageSetError {
    MessageSetError::Corrupt(msg.into())
}

/// One message of a set, its key and value shared with the set's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub offset: i64,
    pub magic: i8,
    pub attributes: u8,
    /// -1 for magic 0.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// The big-endian i32 at the start of `b` (at least 4 bytes).
pub(crate) fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The big-endian i64 at the start of `b` (at least 8 bytes).
pub(crate) fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Reads a `bytes` field of `msg` at `*at`.
fn field(msg: &Bytes, at: &mut usize) -> Result<Option<Bytes>, MessageSetError> {
    let len = msg
        .get(*at..*at + 4)
        .map(be_i32)
        .ok_or_else(|| corrupt("truncated key or value length"))?;
    *at += 4;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| corrupt(format!("negative length {len}")))?;
    if len > msg.len() - *at {
        return Err(corrupt(format!(
            "length {len} exceeds the {} bytes left in the message",
            msg.len() - *at
        )));
    }
    let b = msg.slice(*at..*at + len);
    *at += len;
    Ok(Some(b))
}

/// Splits a message set into checked messages (CRC, magic, sizes).
pub fn read_messages(set: &Bytes) -> Result<Vec<Message>, MessageSetError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < set.len() {
        let rest = &set[pos..];
        if rest.len() < LOG_OVERHEAD {
            return Err(corrupt(format!(
                "truncated message header ({} bytes)",
                rest.len()
            )));
        }
        let offset = be_i64(rest);
        let size = be_i32(&rest[8..]);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s >= MIN_MESSAGE[0])
            .ok_or_else(|| corrupt(format!("message size {size} below the minimum")))?;
        if size > rest.len() - LOG_OVERHEAD {
            return Err(corrupt(format!(
                "message size {size} exceeds the {} bytes left",
                rest.len() - LOG_OVERHEAD
            )));
        }
        let msg = set.slice(pos + LOG_OVERHEAD..pos + LOG_OVERHEAD + size);
        let magic = msg[4] as i8;
        if magic == 2 {
            return Err(MessageSetError::Invalid(
                "record batches of magic 2 need Produce v3 or later".into(),
            ));
        }
        if !(0..=1).contains(&magic) {
            return Err(corrupt(format!("unknown magic {magic}")));
        }
        if size < MIN_MESSAGE[magic as usize] {
            return Err(corrupt(format!("message size {size} below the minimum")));
        }
        let crc = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
        if crc32fast::hash(&msg[4..]) != crc {
            return Err(corrupt("CRC mismatch"));
        }
        let attributes = msg[5];
        let mut at = 6;
        let mut timestamp = -1;
        if magic == 1 {
            timestamp = be_i64(&msg[6..]);
            at = 14;
        }
        let key = field(&msg, &mut at)?;
        let value = field(&msg, &mut at)?;
        if at != msg.len() {
            return Err(corrupt("trailing bytes after the value"));
        }
        out.push(Message {
            offset,
            magic,
            attributes,
            timestamp,
            key,
            value,
        });
        pos += LOG_OVERHEAD + size;
    }
    Ok(out)
}

/// Up-converts a Produce v0–2 message set into one v2 record batch
/// (offsets from 0, no producer id), compressed with the codec of its first
/// wrapper message (uncompressed if there is none). At most `cap` bytes are
/// decompressed for the whole set; nothing is returned on any error.
pub fn up_convert(set: &Bytes, cap: usize) -> Result<Bytes, MessageSetError> {
    let outer = read_messages(set)?;
    if outer.is_empty() {
        return Err(corrupt("empty message set"));
    }
    let mut batch = BatchWriter::default();
    let mut codec = None;
    let mut budget = cap;
    for m in outer {
        match m.attributes & 0x07 {
            0 => batch.push(m.timestamp, m.key.as_deref(), m.value.as_deref()),
            c @ 1..=3 => {
                let value = m.value.as_ref().ok_or_else(|| {
                    MessageSetError::Invalid("compressed message without a value".into())
                })?;
                let inflated = compression::inflate(c, value, budget, m.magic == 0)?;
                budget -= inflated.len();
                let inner = read_messages(&Bytes::from(inflated))?;
                if inner.is_empty() {
                    return Err(MessageSetError::Invalid(
                        "compressed message with no inner messages".into(),
                    ));
                }
                let mut last_offset = None;
                for i in inner {
                    if i.magic != m.magic {
                        return Err(MessageSetError::Invalid(format!(
                            "inner message of magic {} in a wrapper of magic {}",
                            i.magic, m.magic
                        )));
                    }
                    if i.attributes & 0x07 != 0 {
                        return Err(MessageSetError::Invalid(
                            "compressed message inside a compressed message".into(),
                        ));
                    }
                    if m.magic == 1 {
                        if last_offset.is_some_and(|l| i.offset <= l) {
                            return Err(MessageSetError::Invalid(
                                "inner offsets out of order".into(),
                            ));
                        }
                        last_offset = Some(i.offset);
                    }
                    let ts = if m.attributes & LOG_APPEND_TIME != 0 {
                        m.timestamp
                    } else {
                        i.timestamp
                    };
                    batch.push(ts, i.key.as_deref(), i.value.as_deref());
                }
                codec.get_or_insert(c);
            }
            4 => return Err(MessageSetError::UnsupportedCompression(4)),
            c => return Err(corrupt(format!("unknown compression codec {c}"))),
        }
    }
    batch
        .finish(codec.unwrap_or(0))
        .map_err(|e| corrupt(format!("cannot recompress: {e}")))
}

/// Writes a v2 record batch record by record.
#[derive(Default)]
pub struct BatchWriter {
    records: BytesMut,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
}

fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_varbytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

impl BatchWriter {
    /// Appends a record without headers.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        if self.count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let mut body =
            BytesMut::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.put_i8(0);
        put_varlong(&mut body, timestamp.wrapping_sub(self.first_timestamp));
        put_varlong(&mut body, i64::from(self.count));
        put_varbytes(&mut body, key);
        put_varbytes(&mut body, value);
        put_varlong(&mut body, 0);
        put_varlong(&mut self.records, body.len() as i64);
        self.records.put_slice(&body);
        self.count += 1;
    }

    /// The batch, its records compressed with `codec` (0–3).
    pub fn finish(self, codec: u8) -> std::io::Result<Bytes> {
        let records = if codec == 0 {
            self.records.to_vec()
        } else {
            compression::deflate(codec, &self.records)?
        };
        let mut out = BytesMut::with_capacity(V2_HEADER_LEN + records.len());
        out.put_i64(0);
        out.put_i32((V2_HEADER_LEN - LOG_OVERHEAD + records.len()) as i32);
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2);
        out.put_u32(0); // CRC, below
        out.put_i16(i16::from(codec));
        out.put_i32(self.count - 1);
        out.put_i64(self.first_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(-1); // producer id
        out.put_i16(-1); // producer epoch
        out.put_i32(-1); // base sequence
        out.put_i32(self.count);
        out.put_slice(&records);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

/// Writes one magic 0 or 1 message at `offset` (tests and down-conversion).
pub fn put_message(
    out: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: u8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let size = MIN_MESSAGE[usize::from(magic == 1)]
        + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len);
    out.reserve(LOG_OVERHEAD + size);
    out.put_i64(offset);
    out.put_i32(size as i32);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i8(magic);
    out.put_u8(attributes);
    if magic == 1 {
        out.put_i64(timestamp);
    }
    for b in [key, value] {
        match b {
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            None => out.put_i32(-1),
        }
    }
    let crc = crc32fast::hash(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn set(magic: i8, msgs: &[(i64, &[u8], &[u8])]) -> BytesMut {
        let mut out = BytesMut::new();
        for (i, (ts, k, v)) in msgs.iter().enumerate() {
            put_message(&mut out, i as i64, magic, 0, *ts, Some(k), Some(v));
        }
        out
    }

    fn wrapped(magic: i8, codec: u8, inner: &[u8]) -> Bytes {
        let packed = compression::deflate(codec, inner).expect("compress");
        let mut out = BytesMut::new();
        put_message(&mut out, 1, magic, codec, 99, None, Some(&packed));
        out.freeze()
    }

    fn decoded(batch: &Bytes) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
        let mut b = batch.clone();
        let rs = RecordBatchDecoder::decode(&mut b).expect("a valid v2 batch");
        rs.records
            .into_iter()
            .map(|r| (r.offset, r.timestamp, r.key, r.value))
            .collect()
    }

    #[test]
    fn uncompressed_and_compressed_sets_of_both_magics_become_one_v2_batch() {
        let msgs: &[(i64, &[u8], &[u8])] = &[(1000, b"k1", b"v1"), (1001, b"k2", b"value two")];
        for magic in [0i8, 1] {
            let plain = set(magic, msgs).freeze();
            let mut sources = vec![(0u8, plain.clone())];
            for codec in 1..=3 {
                sources.push((codec, wrapped(magic, codec, &plain)));
            }
            for (codec, source) in sources {
                let batch = up_convert(&source, 1 << 20).expect("converted");
                assert_eq!(i16::from_be_bytes([batch[21], batch[22]]), i16::from(codec));
                let records = decoded(&batch);
                let want_ts = |ts: i64| if magic == 1 { ts } else { -1 };
                assert_eq!(
                    records,
                    vec![
                        (
                            0,
                            want_ts(1000),
                            Some(Bytes::from_static(b"k1")),
                            Some(Bytes::from_static(b"v1"))
                        ),
                        (
                            1,
                            want_ts(1001),
                            Some(Bytes::from_static(b"k2")),
                            Some(Bytes::from_static(b"value two"))
                        ),
                    ],
                    "magic {magic} codec {codec}"
                );
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let good = set(1, &[(5, b"k", b"v")]).freeze();
        assert!(up_convert(&good, 1 << 20).is_ok());
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x01;
            let err = up_convert(&Bytes::from(bad), 1 << 20);
            // The offset field is not covered by the CRC (and ignored).
            if i < 8 {
                assert!(err.is_ok(), "byte {i}");
            } else {
                assert!(err.is_err(), "flipping byte {i} was accepted");
            }
        }
    }

    #[test]
    fn kafkas_error_codes_for_bad_sets() {
        let corrupt_code = ResponseError::CorruptMessage.code();
        let invalid_code = ResponseError::InvalidRecord.code();
        let code = |s: &[u8]| up_convert(&Bytes::copy_from_slice(s), 1 << 20).map_err(|e| e.code());
        // Bad CRC.
        let mut bad_crc = set(0, &[(0, b"k", b"v")]).to_vec();
        bad_crc[12] ^= 0xff;
        assert_eq!(code(&bad_crc), Err(corrupt_code));
        // Unknown magic (CRC made right).
        let mut m = BytesMut::new();
        put_message(&mut m, 0, 1, 0, 0, None, Some(b"v"));
        m[16] = 7;
        let crc = crc32fast::hash(&m[16..]);
        m[12..16].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(code(&m), Err(corrupt_code));
        // Truncated.
        let whole = set(1, &[(0, b"k", b"v")]);
        assert_eq!(code(&whole[..whole.len() - 1]), Err(corrupt_code));
        assert_eq!(code(b""), Err(corrupt_code));
        // Nested compression.
        let inner = wrapped(1, 1, &set(1, &[(0, b"k", b"v")]));
        assert_eq!(code(&wrapped(1, 1, &inner)), Err(invalid_code));
        // Inner magic differs from the wrapper's.
        assert_eq!(
            code(&wrapped(1, 1, &set(0, &[(0, b"k", b"v")]))),
            Err(invalid_code)
        );
        // Magic-1 inner offsets out of order.
        let mut ooo = BytesMut::new();
        put_message(&mut ooo, 5, 1, 0, 0, None, Some(b"a"));
        put_message(&mut ooo, 3, 1, 0, 0, None, Some(b"b"));
        assert_eq!(code(&wrapped(1, 2, &ooo)), Err(invalid_code));
        // zstd needs magic 2.
        let mut z = BytesMut::new();
        put_message(&mut z, 0, 1, 4, 0, None, Some(b"x"));
        assert_eq!(
            code(&z),
            Err(ResponseError::UnsupportedCompressionType.code())
        );
    }

    #[test]
    fn inner_sizes_that_lie_and_inflation_beyond_the_cap_are_refused() {
        // An inner message claiming 1 GiB.
        let mut lie = set(1, &[(0, b"k", b"v")]);
        lie[8..12].copy_from_slice(&(1i32 << 30).to_be_bytes());
        assert!(matches!(
            up_convert(&wrapped(1, 1, &lie), 1 << 20),
            Err(MessageSetError::Corrupt(_))
        ));
        // 8 MiB of zeros compress to little; the cap is 1 MiB.
        let big = vec![0u8; 8 << 20];
        let mut m = BytesMut::new();
        put_message(&mut m, 0, 1, 0, 0, None, Some(&big));
        for codec in 1..=3 {
            assert_eq!(
                up_convert(&wrapped(1, codec, &m), 1 << 20),
                Err(MessageSetError::TooLarge(1 << 20))
            );
        }
    }
}
