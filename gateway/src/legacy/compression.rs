//! Bounded (de)compression for message-set conversion: gzip (1), snappy
//! (2), lz4 (3) and, for reading stored batches, zstd (4).
//!
//! Guarantees: [`inflate`] never holds more than `cap` decompressed bytes
//! (a stream that inflates further is refused after `cap` bytes of work),
//! snappy's declared lengths are checked against `cap` before anything is
//! allocated, and [`reader`] decompresses only as far as it is read.

use std::io::{self, Read, Write};

/// Largest zstd window accepted from a stored batch (16 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// The xerial snappy-java framing Kafka's Java clients use.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block we write (snappy-java's default).
const XERIAL_BLOCK: usize = 32 << 10;

/// Why compressed bytes could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// The codec's data is damaged or truncated.
    #[error("cannot decompress: {0}")]
    Corrupt(String),
    /// The data decompresses to more than the allowed bytes.
    #[error("decompresses to more than {0} bytes")]
    TooLarge(usize),
    /// Not a codec this format has.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
}

fn corrupt(e: impl std::fmt::Display) -> InflateError {
    InflateError::Corrupt(e.to_string())
}

/// Decompresses `data` (codec 1–4) whole, refusing output beyond `cap`.
/// `legacy_lz4_header`: the lz4 frame comes from a magic-0 message, whose
/// producers (following Kafka 0.8–0.9) computed the frame header checksum
/// over the wrong bytes; it is ignored, as Kafka ignores it.
pub fn inflate(
    codec: u8,
    data: &[u8],
    cap: usize,
    legacy_lz4_header: bool,
) -> Result<Vec<u8>, InflateError> {
    if codec == 2 {
        return snappy(data, cap);
    }
    let fixed;
    let data = if codec == 3 && legacy_lz4_header {
        fixed = fix_lz4_header_checksum(data)?;
        &fixed[..]
    } else {
        data
    };
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    reader(codec, data)?
        .take(limit)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > cap {
        return Err(InflateError::TooLarge(cap));
    }
    Ok(out)
}

/// A streaming decompressor of `data` (codec 0–4; 0 reads `data` as is).
/// Snappy has no stream form here: it is decompressed whole, which its
/// ratio bounds (at most ~24× of `data`).
pub fn reader<'a>(codec: u8, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, InflateError> {
    Ok(match codec {
        0 => Box::new(data),
        1 => Box::new(flate2::read::MultiGzDecoder::new(data)),
        2 => Box::new(io::Cursor::new(snappy(
            data,
            data.len().saturating_mul(24).max(1 << 16),
        )?)),
        3 => Box::new(lz4::Decoder::new(data).map_err(corrupt)?),
        4 => {
            let mut d = zstd::stream::read::Decoder::new(data).map_err(corrupt)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
            Box::new(d)
        }
        c => return Err(InflateError::UnknownCodec(c)),
    })
}

/// Raw snappy (one block) or xerial-framed snappy, at most `cap` bytes.
fn snappy(data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let block = |b: &[u8], out: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(b).map_err(corrupt)?;
        if out.len().saturating_add(len) > cap {
            return Err(InflateError::TooLarge(cap));
        }
        let at = out.len();
        out.resize(at + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(b, &mut out[at..])
            .map_err(corrupt)?;
        out.truncate(at + n);
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("truncated snappy-java header"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated snappy-java block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let b = tail
            .get(..len)
            .ok_or_else(|| corrupt("snappy-java block longer than its data"))?;
        block(b, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

/// Compresses `data` with codec 1–3 as Kafka's clients do (gzip; snappy in
/// xerial framing; lz4 frames of independent 64 KiB blocks).
pub fn deflate(codec: u8, data: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data)?;
            e.finish()
        }
        2 => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let c = enc.compress_vec(chunk).map_err(io::Error::other)?;
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())?;
            e.write_all(data)?;
            let (out, result) = e.finish();
            result.map(|_| out)
        }
        c => Err(io::Error::other(format!("cannot compress with codec {c}"))),
    }
}

/// The lz4 frame `data` with its header checksum recomputed.
fn fix_lz4_header_checksum(data: &[u8]) -> Result<Vec<u8>, InflateError> {
    const MAGIC: [u8; 4] = 0x184D_2204u32.to_le_bytes();
    if data.len() < 7 || data[..4] != MAGIC {
        return Err(corrupt("not an lz4 frame"));
    }
    let flags = data[4];
    let descriptor_end =
        6 + if flags & 0x08 != 0 { 8 } else { 0 } + if flags & 0x01 != 0 { 4 } else { 0 };
    if data.len() <= descriptor_end {
        return Err(corrupt("truncated lz4 frame header"));
    }
    let mut fixed = data.to_vec();
    fixed[descriptor_end] = (xxh32_short(&data[4..descriptor_end]) >> 8) as u8;
    Ok(fixed)
}

/// XXH32 with seed 0 of fewer than 16 bytes (an lz4 frame descriptor).
fn xxh32_short(data: &[u8]) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    debug_assert!(data.len() < 16);
    let mut h = P5.wrapping_add(data.len() as u32);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        h = h
            .wrapping_add(w.wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &b in words.remainder() {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_matches_the_reference_values() {
        assert_eq!(xxh32_short(b""), 0x02CC_5D05);
        assert_eq!(xxh32_short(b"a"), 0x550D_7456);
        assert_eq!(xxh32_short(b"abc"), 0x32D1_53FF);
    }

    #[test]
    fn every_codec_round_trips_and_is_capped() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 7).to_be_bytes())
            .collect();
        for codec in 1..=3 {
            let packed = deflate(codec, &data).expect("compress");
            assert_eq!(inflate(codec, &packed, data.len(), false), Ok(data.clone()));
            assert_eq!(
                inflate(codec, &packed, data.len() - 1, false),
                Err(InflateError::TooLarge(data.len() - 1)),
                "codec {codec}"
            );
            let mut streamed = Vec::new();
            reader(codec, &packed)
                .expect("reader")
                .read_to_end(&mut streamed)
                .expect("stream");
            assert_eq!(streamed, data);
        }
    }

    #[test]
    fn a_magic_0_lz4_frame_with_a_wrong_header_checksum_is_read() {
        let packed = deflate(3, b"hello hello hello").expect("lz4");
        let mut broken = packed.clone();
        broken[6] ^= 0x5a; // the header checksum (no optional fields)
        assert!(inflate(3, &broken, 1 << 10, false).is_err());
        assert_eq!(
            inflate(3, &broken, 1 << 10, true),
            Ok(b"hello hello hello".to_vec())
        );
    }

    #[test]
    fn a_snappy_length_that_lies_allocates_nothing() {
        // A raw snappy block declaring 2^32-1 bytes.
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(
            inflate(2, &lie, 1 << 20, false),
            Err(InflateError::TooLarge(_)) | Err(InflateError::Corrupt(_))
        ));
    }
}
