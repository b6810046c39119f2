//! Stored v2 record batches down-converted to magic 0 or 1 messages for
//! Fetch v0–3 (v0–1 read magic 0, v2–3 magic 1), as Kafka does for old
//! consumers.
//!
//! Guarantees: records before the fetch offset are skipped; the output
//! stops once it would pass `limit` bytes, except that the first message is
//! always written if it fits `hard_limit` (so a consumer always makes
//! progress, as KIP-74 lets it); compressed batches are decompressed as a
//! stream only as far as the output needs, and no record longer than
//! `hard_limit` is ever allocated. Messages are written uncompressed;
//! headers, which magic 0 and 1 cannot carry, are dropped (as Kafka drops
//! them). A batch that cannot be read ends the output there.

use super::compression;
use super::message_set::{be_i32, be_i64, put_message};
use bytes::{Bytes, BytesMut};
use std::io::Read;

/// Fixed header of a v2 record batch.
const V2_HEADER_LEN: usize = 61;
/// Batch attribute bits.
const CODEC_MASK: u8 = 0x07;
const LOG_APPEND_TIME: u8 = 0x08;
const CONTROL: u8 = 0x20;

/// The result of one partition's down-conversion.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Converted {
    /// The message set of the requested magic.
    pub messages: Bytes,
    /// Stored bytes the messages came from (whole batches read).
    pub source_bytes: usize,
}

/// Reads a zigzag varint (at most 10 bytes); `None` at the end of input or
/// on a malformed one.
fn varlong(r: &mut impl Read) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).ok()?;
        z |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Reads `len` bytes (`len` ≤ `max`), or fails.
fn exact(r: &mut impl Read, len: i64, max: usize) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok().filter(|l| *l <= max)?;
    let mut v = Vec::new();
    r.take(len as u64).read_to_end(&mut v).ok()?;
    (v.len() == len).then_some(v)
}

/// One v2 record's fields that old messages keep.
struct Record {
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// Reads one record (its length at most `max`), `None` if malformed.
fn record(r: &mut impl Read, max: usize) -> Option<Record> {
    let len = varlong(r)?;
    let body = exact(r, len, max)?;
    let mut b = body.as_slice();
    let mut attributes = [0u8; 1];
    b.read_exact(&mut attributes).ok()?;
    let timestamp_delta = varlong(&mut b)?;
    let offset_delta = varlong(&mut b)?;
    let nullable = |b: &mut &[u8]| -> Option<Option<Vec<u8>>> {
        match varlong(b)? {
            -1 => Some(None),
            n => exact(b, n, max).map(Some),
        }
    };
    let key = nullable(&mut b)?;
    let value = nullable(&mut b)?;
    Some(Record {
        offset_delta,
        timestamp_delta,
        key,
        value,
    })
}

/// Converts the v2 batches `stored` (as a worker answers a fetch) to
/// messages of `magic`, from `fetch_offset` on, within `limit` (see the
/// module docs).
pub fn down_convert(
    stored: &Bytes,
    magic: i8,
    fetch_offset: i64,
    limit: usize,
    hard_limit: usize,
) -> Converted {
    let mut out = BytesMut::new();
    let mut pos = 0;
    let mut source_bytes = 0;
    'batches: while stored.len() - pos >= V2_HEADER_LEN {
        let batch = &stored[pos..];
        let Some(size) = usize::try_from(be_i32(&batch[8..]))
            .ok()
            .map(|l| l + 12)
            .filter(|s| *s >= V2_HEADER_LEN && *s <= batch.len())
        else {
            break;
        };
        let batch = &batch[..size];
        pos += size;
        if batch[16] != 2 {
            break;
        }
        let attributes = batch[22];
        if attributes & CONTROL != 0 {
            continue;
        }
        let base_offset = be_i64(&batch[0..]);
        let base_timestamp = be_i64(&batch[27..]);
        let max_timestamp = be_i64(&batch[35..]);
        let count = be_i32(&batch[57..]);
        if base_offset.saturating_add(i64::from(be_i32(&batch[23..]))) < fetch_offset {
            continue;
        }
        let Ok(mut records) = compression::reader(attributes & CODEC_MASK, &batch[V2_HEADER_LEN..])
        else {
            break;
        };
        source_bytes += size;
        for _ in 0..count.max(0) {
            let Some(r) = record(&mut records, hard_limit) else {
                break 'batches;
            };
            let offset = base_offset.saturating_add(r.offset_delta);
            if offset < fetch_offset {
                continue;
            }
            let size =
                34 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
            let fits = if out.is_empty() {
                size <= hard_limit
            } else {
                out.len() + size <= limit
            };
            if !fits {
                break 'batches;
            }
            let (attrs, timestamp) = if attributes & LOG_APPEND_TIME != 0 {
                (LOG_APPEND_TIME, max_timestamp)
            } else {
                (0, base_timestamp.wrapping_add(r.timestamp_delta))
            };
            let attrs = if magic == 1 { attrs } else { 0 };
            put_message(
                &mut out,
                offset,
                magic,
                attrs,
                timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
            );
        }
    }
    Converted {
        messages: out.freeze(),
        source_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::message_set::{read_messages, BatchWriter};

    fn stored(base: i64, codec: u8, records: &[(i64, &[u8], &[u8])]) -> Bytes {
        let mut w = BatchWriter::default();
        for (ts, k, v) in records {
            w.push(*ts, Some(k), Some(v));
        }
        let mut b = BytesMut::from(&w.finish(codec).expect("batch")[..]);
        b[..8].copy_from_slice(&base.to_be_bytes());
        b.freeze()
    }

    #[test]
    fn round_trip_through_both_magics_and_every_codec() {
        let recs: &[(i64, &[u8], &[u8])] = &[
            (1_000, b"a", b"1"),
            (1_005, b"b", b"22"),
            (990, b"c", b"333"),
        ];
        for codec in 0..=3 {
            let mut data = BytesMut::new();
            data.extend_from_slice(&stored(10, codec, recs));
            data.extend_from_slice(&stored(13, codec, &[(2_000, b"d", b"4")]));
            let data = data.freeze();
            for magic in [0i8, 1] {
                let c = down_convert(&data, magic, 11, 1 << 20, 1 << 20);
                assert_eq!(c.source_bytes, data.len());
                let msgs = read_messages(&c.messages).expect("valid messages with good CRCs");
                let got: Vec<_> = msgs
                    .iter()
                    .map(|m| {
                        (
                            m.offset,
                            m.magic,
                            m.timestamp,
                            m.key.clone(),
                            m.value.clone(),
                        )
                    })
                    .collect();
                let ts = |t: i64| if magic == 1 { t } else { -1 };
                let b = |s: &'static [u8]| Some(Bytes::from_static(s));
                assert_eq!(
                    got,
                    vec![
                        (11, magic, ts(1_005), b(b"b"), b(b"22")),
                        (12, magic, ts(990), b(b"c"), b(b"333")),
                        (13, magic, ts(2_000), b(b"d"), b(b"4")),
                    ],
                    "codec {codec} magic {magic}"
                );
            }
        }
    }

    #[test]
    fn output_is_bounded_but_the_first_message_always_goes() {
        let recs: Vec<(i64, Vec<u8>, Vec<u8>)> = (0..100)
            .map(|i| (i, b"k".to_vec(), vec![b'x'; 100]))
            .collect();
        let refs: Vec<(i64, &[u8], &[u8])> =
            recs.iter().map(|(t, k, v)| (*t, &k[..], &v[..])).collect();
        let data = stored(0, 1, &refs);
        let c = down_convert(&data, 1, 0, 1_000, 1 << 20);
        assert!(c.messages.len() <= 1_000);
        assert_eq!(read_messages(&c.messages).expect("valid").len(), 7);
        let c = down_convert(&data, 1, 0, 10, 1 << 20);
        assert_eq!(read_messages(&c.messages).expect("valid").len(), 1);
        let c = down_convert(&data, 1, 0, 10, 10);
        assert!(c.messages.is_empty());
    }

    #[test]
    fn garbage_ends_the_output_without_panicking() {
        let good = stored(0, 1, &[(0, b"k", b"v")]);
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0xff;
            let _ = down_convert(&Bytes::from(bad), 1, 0, 1 << 20, 1 << 20);
        }
        for cut in 0..good.len() {
            let _ = down_convert(&good.slice(..cut), 0, 0, 1 << 20, 1 << 20);
        }
    }
}
