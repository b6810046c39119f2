//! Bounded decompression of the records section of a compressed batch, for
//! validation only (stored bytes stay as the client sent them).
//!
//! Guarantees, whatever the input:
//! - gzip, lz4 and zstd are decompressed as a stream and walked record by
//!   record; the decompressed bytes are never held whole, so memory stays
//!   at the decoders' buffers (zstd's window is capped at
//!   [`ZSTD_WINDOW_LOG_MAX`]) however far a batch inflates;
//! - snappy is decompressed block by block into a buffer no larger than the
//!   format allows for the block's size (snappy inflates at most ~21×), so a
//!   length header that lies allocates nothing beyond that;
//! - at most [`MAX_INFLATED_BYTES`] are decompressed per batch (a "zip
//!   bomb" is refused after that much work), and the walk stops at the first
//!   record beyond the declared count.

use crate::batch::BatchError;
use std::io::{self, BufRead, BufReader, Read};

/// Most bytes one batch may decompress to.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Largest zstd window accepted (2^24 = 16 MiB; producers use far less).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Snappy cannot expand by more than this factor (a 3-byte copy emits at
/// most 64 bytes), with room to spare.
const SNAPPY_MAX_RATIO: usize = 24;

/// The xerial snappy-java framing Kafka's Java clients use: an 8-byte magic,
/// two 4-byte version fields, then blocks of `u32 length + raw snappy`.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

fn corrupt(what: impl std::fmt::Display) -> BatchError {
    BatchError::Corrupt(format!("cannot decompress records: {what}"))
}

/// Checks that the compressed records section `data` (codec from the batch
/// attributes: 1 gzip, 2 snappy, 3 lz4, 4 zstd) holds exactly `expected`
/// length-prefixed records; fails as soon as it holds more.
pub fn check_count(data: &[u8], codec: i16, expected: i32) -> Result<(), BatchError> {
    let seen = count_records(data, codec, expected)?;
    if seen != expected {
        return Err(BatchError::Invalid(format!(
            "batch declares {expected} records but holds {seen}"
        )));
    }
    Ok(())
}

fn count_records(data: &[u8], codec: i16, expected: i32) -> Result<i32, BatchError> {
    match codec {
        1 => walk(flate2::read::GzDecoder::new(data), expected),
        2 => count_snappy(data, expected),
        3 => walk(lz4::Decoder::new(data).map_err(corrupt)?, expected),
        4 => {
            let mut d = zstd::stream::read::Decoder::new(data).map_err(corrupt)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
            walk(d, expected)
        }
        other => Err(BatchError::Invalid(format!(
            "unknown compression codec {other}"
        ))),
    }
}

fn count_snappy(data: &[u8], expected: i32) -> Result<i32, BatchError> {
    if data.len() < XERIAL_MAGIC.len() || &data[..XERIAL_MAGIC.len()] != XERIAL_MAGIC {
        // Raw snappy (librdkafka): one block.
        let inflated = snappy_block(data, MAX_INFLATED_BYTES as usize)?;
        return walk(inflated.as_slice(), expected);
    }
    if data.len() < XERIAL_HEADER_LEN {
        return Err(corrupt("truncated snappy-java header"));
    }
    let mut rest = &data[XERIAL_HEADER_LEN..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("truncated snappy-java block length"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt("snappy-java block overruns the batch"))?;
        let budget = (MAX_INFLATED_BYTES as usize).saturating_sub(out.len());
        out.extend_from_slice(&snappy_block(block, budget)?);
        rest = &rest[4 + len..];
    }
    walk(out.as_slice(), expected)
}

/// One raw snappy block, refusing before allocating if its declared length
/// exceeds what the block could encode or `budget`.
fn snappy_block(block: &[u8], budget: usize) -> Result<Vec<u8>, BatchError> {
    let declared = snap::raw::decompress_len(block).map_err(corrupt)?;
    let possible = block.len().saturating_mul(SNAPPY_MAX_RATIO) + 64;
    if declared > possible {
        return Err(corrupt(format!(
            "snappy block of {} bytes declares {declared} bytes",
            block.len()
        )));
    }
    if declared > budget {
        return Err(too_inflated());
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .map_err(corrupt)
}

fn too_inflated() -> BatchError {
    BatchError::Invalid(format!(
        "records decompress to more than {MAX_INFLATED_BYTES} bytes"
    ))
}

/// Walks length-prefixed records from `inflated` (bounded to
/// [`MAX_INFLATED_BYTES`]) without keeping them, returning how many there
/// are.
fn walk(inflated: impl Read, expected: i32) -> Result<i32, BatchError> {
    let mut r = BufReader::with_capacity(64 * 1024, inflated.take(MAX_INFLATED_BYTES + 1));
    let mut seen: i32 = 0;
    let mut total: u64 = 0;
    while let Some((len, used)) = read_varint(&mut r)? {
        if len < 0 {
            return Err(BatchError::Corrupt("negative record length".into()));
        }
        seen += 1;
        if seen > expected {
            return Err(BatchError::Invalid(format!(
                "batch declares {expected} records but holds more"
            )));
        }
        total += used as u64 + len as u64;
        if total > MAX_INFLATED_BYTES {
            return Err(too_inflated());
        }
        let skipped = io::copy(&mut (&mut r).take(len as u64), &mut io::sink()).map_err(corrupt)?;
        if skipped != len as u64 {
            return Err(BatchError::Corrupt("record overruns batch".into()));
        }
    }
    Ok(seen)
}

/// Reads a zig-zag varint; `None` at a clean end of stream.
fn read_varint(r: &mut impl BufRead) -> Result<Option<(i64, usize)>, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let byte = match r.fill_buf().map_err(corrupt)?.first() {
            Some(b) => *b,
            None if i == 0 => return Ok(None),
            None => return Err(BatchError::Corrupt("truncated record length".into())),
        };
        r.consume(1);
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1)));
        }
    }
    Err(BatchError::Corrupt("bad record length".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// `n` records of `size` zero bytes each, length-prefixed (the record
    /// bodies need not parse: only the framing is checked).
    fn records(n: usize, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut v = (size as u64) << 1;
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
            out.extend(std::iter::repeat_n(0u8, size));
        }
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        let (out, r) = e.finish();
        r.unwrap();
        out
    }

    #[test]
    fn counts_records_for_every_codec() {
        let plain = records(100, 37);
        let snappy = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in plain.chunks(1000) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        for (codec, data) in [
            (1, gzip(&plain)),
            (2, snappy),
            (2, xerial),
            (3, lz4(&plain)),
            (4, zstd(&plain)),
        ] {
            assert_eq!(check_count(&data, codec, 100), Ok(()), "codec {codec}");
            assert!(check_count(&data, codec, 99).is_err(), "codec {codec}");
            assert!(check_count(&data, codec, 101).is_err(), "codec {codec}");
        }
    }

    #[test]
    fn a_batch_that_inflates_past_the_limit_is_refused_without_holding_it() {
        // 300 records of 1 MiB of zeros compress to a few hundred KiB.
        let one = records(1, 1 << 20);
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        for _ in 0..300 {
            e.write_all(&one).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
        assert_eq!(check_count(&bomb, 4, 300), Err(too_inflated()));
        // One record that declares more than the limit is refused unread.
        let mut huge = Vec::new();
        let mut v = (MAX_INFLATED_BYTES + 1) << 1;
        while v >= 0x80 {
            huge.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        huge.push(v as u8);
        assert_eq!(check_count(&gzip(&huge), 1, 1), Err(too_inflated()));
    }

    #[test]
    fn a_snappy_length_that_lies_allocates_nothing() {
        // Declares 4 GiB in a 6-byte block.
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(
            check_count(&lie, 2, 1),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for codec in 1..=4 {
            for data in [&b""[..], b"\x00", b"garbage garbage garbage", &[0xff; 64]] {
                assert!(
                    check_count(data, codec, 1).is_err(),
                    "codec {codec} {data:?}"
                );
            }
        }
        assert!(matches!(
            check_count(b"x", 7, 1),
            Err(BatchError::Invalid(_))
        ));
    }
}
