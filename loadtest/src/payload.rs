//! Record payload layout shared by producers and consumers.
//!
//! Every record value starts with a fixed [`HEADER_LEN`]-byte header, followed by
//! filler bytes up to the requested record size:
//!
//! | bytes    | field                                             |
//! |----------|---------------------------------------------------|
//! | `0..8`   | scheduled send time, unix nanoseconds, u64 BE     |
//! | `8..16`  | run id, u64 BE (filters records of other runs)    |
//! | `16..20` | producer id, u32 BE                               |
//! | `20..28` | sequence number (global record index), u64 BE     |
//! | `28..30` | magic `b"KS"`                                     |
//! | `30`     | layout version ([`VERSION`])                      |
//! | `31`     | flags (bit 0: warm-up record)                     |
//!
//! The filler is pseudo-random, i.e. effectively incompressible, so that
//! compression settings do not inflate throughput numbers.

use std::fmt;

/// Size in bytes of the header embedded at the start of every payload.
pub const HEADER_LEN: usize = 32;

/// Version of the payload layout written by this build.
pub const VERSION: u8 = 1;

const MAGIC: [u8; 2] = *b"KS";
const FLAG_WARMUP: u8 = 0x01;

/// Decoded payload header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Intended (scheduled) send time in unix nanoseconds.
    pub scheduled_ns: u64,
    /// Identifier of the load-test run that produced the record.
    pub run_id: u64,
    /// Index of the producer that sent the record.
    pub producer_id: u32,
    /// Global record index within its phase.
    pub sequence: u64,
    /// Whether the record belongs to the warm-up phase (excluded from stats).
    pub warmup: bool,
}

/// Reasons a payload cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// The payload is shorter than [`HEADER_LEN`].
    TooShort {
        /// Actual payload length.
        len: usize,
    },
    /// The magic bytes do not match: not a load-test record.
    BadMagic,
    /// The layout version is not understood by this build.
    UnsupportedVersion(u8),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => {
                write!(
                    f,
                    "payload of {len} bytes is shorter than the {HEADER_LEN}-byte header"
                )
            }
            Self::BadMagic => write!(f, "payload does not carry the load-test magic bytes"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported payload layout version {v}"),
        }
    }
}

impl std::error::Error for PayloadError {}

impl Header {
    /// Writes the header into a header-sized buffer.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..8].copy_from_slice(&self.scheduled_ns.to_be_bytes());
        out[8..16].copy_from_slice(&self.run_id.to_be_bytes());
        out[16..20].copy_from_slice(&self.producer_id.to_be_bytes());
        out[20..28].copy_from_slice(&self.sequence.to_be_bytes());
        out[28..30].copy_from_slice(&MAGIC);
        out[30] = VERSION;
        out[31] = if self.warmup { FLAG_WARMUP } else { 0 };
    }

    /// Decodes the header from the start of a payload.
    pub fn decode(buf: &[u8]) -> Result<Self, PayloadError> {
        let h = buf
            .first_chunk::<HEADER_LEN>()
            .ok_or(PayloadError::TooShort { len: buf.len() })?;
        if h[28..30] != MAGIC {
            return Err(PayloadError::BadMagic);
        }
        if h[30] != VERSION {
            return Err(PayloadError::UnsupportedVersion(h[30]));
        }
        Ok(Self {
            scheduled_ns: be_u64(h, 0),
            run_id: be_u64(h, 8),
            producer_id: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
            sequence: be_u64(h, 20),
            warmup: h[31] & FLAG_WARMUP != 0,
        })
    }
}

fn be_u64(h: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Reusable payload buffer: filler is generated once, only the header is
/// rewritten per record.
#[derive(Debug)]
pub struct PayloadBuilder {
    buf: Vec<u8>,
}

impl PayloadBuilder {
    /// Creates a builder for payloads of exactly `record_size` bytes; the filler
    /// is derived deterministically from `seed`.
    pub fn new(record_size: usize, seed: u64) -> Result<Self, PayloadError> {
        if record_size < HEADER_LEN {
            return Err(PayloadError::TooShort { len: record_size });
        }
        let mut buf = vec![0u8; record_size];
        // xorshift64*: cheap, deterministic, incompressible enough.
        let mut state = seed | 1;
        for chunk in buf.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(Self { buf })
    }

    /// Writes `header` into the buffer and returns the full payload.
    pub fn build(&mut self, header: &Header) -> &[u8] {
        if let Some(out) = self.buf.first_chunk_mut::<HEADER_LEN>() {
            header.write(out);
        }
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(h: &Header, buf: &mut [u8]) {
        let out = buf
            .first_chunk_mut::<HEADER_LEN>()
            .expect("buffer fits header");
        h.write(out);
    }

    fn sample() -> Header {
        Header {
            scheduled_ns: 1_700_000_000_123_456_789,
            run_id: 0xDEAD_BEEF_0102_0304,
            producer_id: 7,
            sequence: 123_456,
            warmup: false,
        }
    }

    #[test]
    fn roundtrip() {
        let mut buf = [0u8; 64];
        let h = sample();
        encode(&h, &mut buf);
        assert_eq!(Header::decode(&buf), Ok(h));
        let w = Header { warmup: true, ..h };
        encode(&w, &mut buf);
        assert_eq!(Header::decode(&buf), Ok(w));
    }

    #[test]
    fn scheduled_time_is_first_eight_bytes_big_endian() {
        let mut buf = [0u8; HEADER_LEN];
        encode(&sample(), &mut buf);
        assert_eq!(buf[..8], 1_700_000_000_123_456_789u64.to_be_bytes());
        assert_eq!(buf[16..20], 7u32.to_be_bytes());
        assert_eq!(buf[20..28], 123_456u64.to_be_bytes());
    }

    #[test]
    fn rejects_short_foreign_and_future_payloads() {
        assert_eq!(
            Header::decode(&[0u8; 10]),
            Err(PayloadError::TooShort { len: 10 })
        );
        assert_eq!(
            Header::decode(&[0u8; 31]),
            Err(PayloadError::TooShort { len: 31 })
        );
        assert_eq!(Header::decode(&[0u8; 40]), Err(PayloadError::BadMagic));
        let mut buf = [0u8; HEADER_LEN];
        encode(&sample(), &mut buf);
        buf[30] = 99;
        assert_eq!(
            Header::decode(&buf),
            Err(PayloadError::UnsupportedVersion(99))
        );
    }

    #[test]
    fn builder_keeps_size_and_filler() {
        assert!(PayloadBuilder::new(HEADER_LEN - 1, 1).is_err());
        let mut b = PayloadBuilder::new(1000, 42).expect("builder");
        let first = b.build(&sample()).to_vec();
        let next = Header {
            sequence: 9,
            ..sample()
        };
        let second = b.build(&next).to_vec();
        assert_eq!(first.len(), 1000);
        assert_eq!(first[HEADER_LEN..], second[HEADER_LEN..]);
        assert_eq!(Header::decode(&second), Ok(next));
        // Filler is not trivially compressible (not all one byte value).
        let distinct: std::collections::HashSet<u8> = first[HEADER_LEN..].iter().copied().collect();
        assert!(distinct.len() > 100);
        // Exact-header-size payloads work too.
        let mut exact = PayloadBuilder::new(HEADER_LEN, 1).expect("builder");
        assert_eq!(Header::decode(exact.build(&sample())), Ok(sample()));
    }
}
