//! CRC32C (Castagnoli), the checksum of Kafka record batches, WAL chunks,
//! segment blocks and the objects' footers.
//!
//! Record bytes pass through the worker once: the produce path checks each
//! batch's own CRC32C (which covers the batch from its attributes on), and
//! every later checksum over the same bytes (the WAL chunk, the WAL object's
//! `x-amz-checksum-crc32c`, the segment block and object) is derived from
//! checksums already known, with [`Crc32c::append`], instead of reading the
//! bytes again.
//!
//! Deriving works on the polynomial the CRC stands for: the CRC of `A || B`
//! is the CRC of `A` shifted by `len(B)` bytes (multiplied by `x^(8·len(B))`
//! modulo the CRC polynomial) plus the CRC of `B`. The conditioning of the
//! standard CRC (initial value and final XOR of all ones) cancels out in
//! that sum. A shift takes one multiplication modulo the polynomial per set
//! bit of the length, about a hundred nanoseconds whatever the length.

/// The CRC-32C polynomial, bit-reflected (the lowest bit is the highest
/// power of `x`, as in the reflected CRC itself).
const POLY: u32 = 0x82F6_3B78;

/// `a · b` modulo the polynomial, both in the reflected representation
/// (bit 31 is `x^0`, bit 0 is `x^31`).
const fn mul_mod_poly(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut power = 0;
    while power < 32 {
        if a & (1 << (31 - power)) != 0 {
            product ^= b;
        }
        // b · x: one step towards the high powers, reduced by the polynomial
        // when the x^31 term overflows.
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        power += 1;
    }
    product
}

/// `x^(2^k)` modulo the polynomial for every `k` a shift of a `u64` byte
/// count can need (`8·len` has up to 67 bits).
const X_POW_2K: [u32; 67] = {
    let mut table = [0u32; 67];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < table.len() {
        table[k] = p;
        p = mul_mod_poly(p, p);
        k += 1;
    }
    table
};

/// `x^(8·bytes)` modulo the polynomial: the factor that shifts a CRC past
/// `bytes` bytes.
fn shift_factor(bytes: u64) -> u32 {
    let mut factor = 1u32 << 31; // x^0
    let mut rest = bytes;
    let mut k = 3; // one byte is x^(2^3)
    while rest != 0 {
        if rest & 1 != 0 {
            factor = mul_mod_poly(X_POW_2K[k], factor);
        }
        rest >>= 1;
        k += 1;
    }
    factor
}

/// The CRC32C of `A || B` from the CRC32C of `A`, the CRC32C of `B` and the
/// length of `B`, without reading either.
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    if len_b == 0 {
        return crc_a;
    }
    mul_mod_poly(shift_factor(len_b), crc_a) ^ crc_b
}

/// Below this many bytes the CPU's CRC32 instruction, byte by byte, beats
/// the carry-less-multiply folding of `crc-fast` and a [`combine`].
const SMALL: usize = 256;

/// The CRC32C of `data`, with the fastest code the CPU allows (`crc-fast`
/// folds with carry-less multiplication, about twice the speed of the CRC32
/// instruction on the large buffers of the produce path).
pub fn checksum(data: &[u8]) -> u32 {
    if data.len() < SMALL {
        return crc32c::crc32c(data);
    }
    // The CRC-32/ISCSI algorithm is CRC32C; its value fits 32 bits.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// The CRC32C of bytes given piece by piece, each piece either read or, when
/// its own CRC32C is already known, only counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc32c {
    value: u32,
    len: u64,
}

impl Crc32c {
    /// The checksum of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self {
            value: checksum(data),
            len: data.len() as u64,
        }
    }

    /// A checksum already known: `value` is the CRC32C of `len` bytes.
    pub fn known(value: u32, len: u64) -> Self {
        Self { value, len }
    }

    /// Extends the checksum over `data`, reading it.
    pub fn update(&mut self, data: &[u8]) {
        if data.len() < SMALL {
            self.value = crc32c::crc32c_append(self.value, data);
            self.len += data.len() as u64;
        } else {
            self.append(Self::of(data));
        }
    }

    /// Extends the checksum over bytes whose own checksum is `next`,
    /// without reading them.
    pub fn append(&mut self, next: Crc32c) {
        self.value = combine(self.value, next.value, next.len);
        self.len += next.len;
    }

    /// The CRC32C of all bytes so far.
    pub fn value(self) -> u32 {
        self.value
    }

    /// How many bytes the checksum covers.
    pub fn len(self) -> u64 {
        self.len
    }

    /// Whether the checksum covers no bytes.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that are not periodic over short lengths.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn checksum_is_crc32c_on_both_sides_of_the_small_cutoff() {
        assert_eq!(checksum(b"123456789"), 0xE306_9283); // the standard check value
        for n in [0, 1, SMALL - 1, SMALL, SMALL + 1, 4096, 100_003] {
            let data = bytes(n, n as u64);
            assert_eq!(checksum(&data), crc32c::crc32c(&data), "{n} bytes");
        }
    }

    #[test]
    fn combining_two_checksums_is_the_checksum_of_the_concatenation() {
        let data = bytes(70_000, 7);
        for split in [0, 1, 7, 21, 255, 256, 4096, 65_536, 69_999, 70_000] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
                crc32c::crc32c(&data),
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_checksum_built_from_read_and_known_pieces_matches_one_pass() {
        let data = bytes(300_000, 3);
        let cuts = [0, 21, 1_000, 1_021, 66_000, 66_300, 200_000, 300_000];
        for read_first in [true, false] {
            let mut crc = Crc32c::default();
            for (i, w) in cuts.windows(2).enumerate() {
                let piece = &data[w[0]..w[1]];
                if (i % 2 == 0) == read_first {
                    crc.update(piece);
                } else {
                    crc.append(Crc32c::known(crc32c::crc32c(piece), piece.len() as u64));
                }
            }
            assert_eq!(crc.len(), data.len() as u64);
            assert_eq!(crc.value(), crc32c::crc32c(&data));
        }
    }

    #[test]
    fn shifts_compose_up_to_the_largest_lengths() {
        // x^(8a) · x^(8b) = x^(8(a+b)): checks the table entries no buffer
        // here is long enough to reach.
        for (a, b) in [
            (1u64, 1u64),
            (3, 1 << 40),
            (u64::MAX / 2, u64::MAX / 2 + 1),
            (1 << 63, (1 << 63) - 1),
        ] {
            assert_eq!(
                mul_mod_poly(shift_factor(a), shift_factor(b)),
                shift_factor(a + b),
                "{a} + {b}"
            );
        }
        assert_eq!(combine(0x1234_5678, 0, 0), 0x1234_5678);
    }
}
