//! The WAL object format (version 1). One object holds the batches of many
//! partitions from one flush. Documented in docs/storage-format.md.
//!
//! ```text
//! object  := header chunk* footer trailer
//! header  := magic "KSWAL\0\0\x01" (8 bytes)
//! chunk   := the record batches of one partition, offsets assigned, back to back
//! footer  := entry_count:u32 entry*
//! entry   := topic_id:[16] partition:i32 base_offset:i64 last_offset:i64
//!            max_timestamp:i64 position:u64 length:u32 batch_count:u32 crc32c:u32
//! trailer := footer_position:u64 footer_crc32c:u32 magic "KSWF" (16 bytes)
//! ```
//! All integers are big-endian. `crc32c` of an entry covers its chunk bytes;
//! the footer CRC covers the footer. An object whose trailer or footer does not
//! verify is treated as never written (it cannot have been acknowledged).

use crate::crc::{self, Crc32c};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Leading magic of a WAL object, including the format version.
pub const HEADER_MAGIC: &[u8; 8] = b"KSWAL\0\0\x01";
const TRAILER_MAGIC: &[u8; 4] = b"KSWF";
/// Trailer length in bytes.
pub const TRAILER_LEN: usize = 16;
const ENTRY_LEN: usize = 16 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4;

/// Where one partition's chunk lives inside a WAL object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkEntry {
    pub topic_id: Uuid,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub position: u64,
    pub length: u32,
    pub batch_count: u32,
    pub crc: u32,
}

impl ChunkEntry {
    /// Where the chunk ends in its object; `None` if a corrupt entry's end
    /// does not fit in 64 bits.
    pub fn end(&self) -> Option<u64> {
        self.position.checked_add(u64::from(self.length))
    }
}

/// Errors reading a WAL object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("WAL object too short ({0} bytes)")]
    TooShort(usize),
    #[error("bad WAL magic")]
    BadMagic,
    #[error("WAL footer checksum mismatch")]
    FooterCrc,
    #[error("WAL footer malformed: {0}")]
    Malformed(&'static str),
    #[error("WAL chunk checksum mismatch")]
    ChunkCrc,
}

/// A chunk to be written: one partition's batches.
#[derive(Debug, Clone)]
pub struct ChunkInput {
    pub topic_id: Uuid,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub batch_count: u32,
    pub data: Bytes,
    /// The CRC32C of `data` when the writer already knows it (derived from
    /// the batches' own checksums); computed from `data` when `None`.
    pub crc: Option<u32>,
}

/// A WAL or segment object as the parts it is written in, back to back,
/// with the CRC32C of all of them.
#[derive(Debug, Clone)]
pub struct EncodedParts {
    pub parts: Vec<Bytes>,
    pub crc: u32,
}

/// Serializes chunks into one WAL object, as the parts it is written in,
/// back to back: the header, each chunk's own bytes (not copied) and the
/// footer with the trailer. Returns the parts and the chunks' entries; the
/// object's CRC32C is derived from the chunks', so a chunk whose CRC is
/// known is not read at all.
pub fn encode_parts(chunks: Vec<ChunkInput>) -> (EncodedParts, Vec<ChunkEntry>) {
    let mut parts = Vec::with_capacity(chunks.len() + 2);
    parts.push(Bytes::from_static(HEADER_MAGIC));
    let mut object_crc = Crc32c::of(HEADER_MAGIC);
    let mut position = HEADER_MAGIC.len() as u64;
    let mut entries = Vec::with_capacity(chunks.len());
    for c in chunks {
        let crc = c.crc.unwrap_or_else(|| crc::checksum(&c.data));
        object_crc.append(Crc32c::known(crc, c.data.len() as u64));
        let entry = ChunkEntry {
            topic_id: c.topic_id,
            partition: c.partition,
            base_offset: c.base_offset,
            last_offset: c.last_offset,
            max_timestamp: c.max_timestamp,
            position,
            length: c.data.len() as u32,
            batch_count: c.batch_count,
            crc,
        };
        position += c.data.len() as u64;
        entries.push(entry);
        parts.push(c.data);
    }
    let mut footer = BytesMut::with_capacity(4 + entries.len() * ENTRY_LEN + TRAILER_LEN);
    footer.put_u32(entries.len() as u32);
    for e in &entries {
        footer.put_slice(e.topic_id.as_bytes());
        footer.put_i32(e.partition);
        put_entry_fields(&mut footer, e);
    }
    put_trailer(&mut footer, position, TRAILER_MAGIC);
    object_crc.update(&footer);
    parts.push(footer.freeze());
    let crc = object_crc.value();
    (EncodedParts { parts, crc }, entries)
}

/// [`encode_parts`] into one buffer: the object and its entries.
pub fn encode(chunks: &[ChunkInput]) -> (Bytes, Vec<ChunkEntry>) {
    let (encoded, entries) = encode_parts(chunks.to_vec());
    (Bytes::from(encoded.parts.concat()), entries)
}

/// Ends a footer, the object's last part, that starts at `footer_pos` in
/// the object, with the trailer WAL objects and segments share: footer
/// position, footer CRC32C, `magic`.
pub(crate) fn put_trailer(footer: &mut BytesMut, footer_pos: u64, magic: &[u8; 4]) {
    let footer_crc = crc::checksum(footer);
    footer.put_u64(footer_pos);
    footer.put_u32(footer_crc);
    footer.put_slice(magic);
}

/// Writes the fields of a chunk entry that WAL and segment footers share
/// (all but the topic and partition), in their stored order.
pub(crate) fn put_entry_fields(out: &mut BytesMut, e: &ChunkEntry) {
    out.put_i64(e.base_offset);
    out.put_i64(e.last_offset);
    out.put_i64(e.max_timestamp);
    out.put_u64(e.position);
    out.put_u32(e.length);
    out.put_u32(e.batch_count);
    out.put_u32(e.crc);
}

/// Reads what [`put_entry_fields`] wrote, as an entry of a chunk of
/// `topic_id` / `partition`. The caller checks that enough bytes remain.
pub(crate) fn get_entry_fields(f: &mut impl Buf, topic_id: Uuid, partition: i32) -> ChunkEntry {
    ChunkEntry {
        topic_id,
        partition,
        base_offset: f.get_i64(),
        last_offset: f.get_i64(),
        max_timestamp: f.get_i64(),
        position: f.get_u64(),
        length: f.get_u32(),
        batch_count: f.get_u32(),
        crc: f.get_u32(),
    }
}

/// Reads a trailer written by [`put_trailer`] at the end of an object of
/// `object_len` bytes (an 8-byte header, a footer of at least `min_footer`
/// bytes): (footer position, footer CRC32C).
pub(crate) fn get_trailer(
    trailer: &[u8],
    object_len: u64,
    magic: &[u8; 4],
    min_footer: usize,
) -> Result<(u64, u32), FormatError> {
    let header = HEADER_MAGIC.len() as u64;
    let (min_footer, trailer_len) = (min_footer as u64, TRAILER_LEN as u64);
    if trailer.len() != TRAILER_LEN || object_len < header + min_footer + trailer_len {
        return Err(FormatError::TooShort(object_len as usize));
    }
    if &trailer[TRAILER_LEN - 4..] != magic {
        return Err(FormatError::BadMagic);
    }
    let mut t = trailer;
    let footer_pos = t.get_u64();
    let footer_crc = t.get_u32();
    // Checked: a corrupt trailer may hold any position.
    let footer_end = footer_pos.checked_add(min_footer);
    if footer_pos < header || footer_end.is_none_or(|end| end > object_len - trailer_len) {
        return Err(FormatError::Malformed("footer position out of range"));
    }
    Ok((footer_pos, footer_crc))
}

/// Decodes and verifies the footer of a whole object.
pub fn decode_footer(object: &[u8]) -> Result<Vec<ChunkEntry>, FormatError> {
    let len = object.len();
    if len < HEADER_MAGIC.len() + 4 + TRAILER_LEN {
        return Err(FormatError::TooShort(len));
    }
    if &object[..8] != HEADER_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let (footer_pos, footer_crc) = decode_trailer(&object[len - TRAILER_LEN..], len as u64)?;
    decode_footer_bytes(
        &object[footer_pos as usize..len - TRAILER_LEN],
        footer_pos,
        footer_crc,
    )
}

/// Decodes the 16-byte trailer of an object of `object_len` bytes:
/// (footer position, footer CRC32C).
pub fn decode_trailer(trailer: &[u8], object_len: u64) -> Result<(u64, u32), FormatError> {
    get_trailer(trailer, object_len, TRAILER_MAGIC, 4)
}

/// Decodes and verifies footer bytes (from `footer_pos` up to the trailer).
pub fn decode_footer_bytes(
    footer: &[u8],
    footer_pos: u64,
    footer_crc: u32,
) -> Result<Vec<ChunkEntry>, FormatError> {
    if crc::checksum(footer) != footer_crc {
        return Err(FormatError::FooterCrc);
    }
    let mut f = footer;
    if f.remaining() < 4 {
        return Err(FormatError::Malformed("footer too short"));
    }
    let count = f.get_u32() as usize;
    if f.remaining() != count * ENTRY_LEN {
        return Err(FormatError::Malformed(
            "entry count does not match footer size",
        ));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let mut id = [0u8; 16];
        f.copy_to_slice(&mut id);
        let partition = f.get_i32();
        let e = get_entry_fields(&mut f, Uuid::from_bytes(id), partition);
        if e.position < 8
            || e.end().is_none_or(|end| end > footer_pos)
            || e.last_offset < e.base_offset
        {
            return Err(FormatError::Malformed("chunk entry out of range"));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Leading magic of a seal object (see `seal`).
pub const SEAL_MAGIC: &[u8; 8] = b"KSSEAL\0\x01";

/// What a seal object closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKind {
    /// The end of the stream: no object at or after it belongs to the stream.
    End,
    /// A sequence number that was never written (a failed or in-flight PUT).
    Hole,
}

/// A seal object: magic, kind byte (`E` or `H`), then the sealer's name.
pub fn encode_seal(kind: SealKind, sealer: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(9 + sealer.len());
    out.put_slice(SEAL_MAGIC);
    out.put_u8(match kind {
        SealKind::End => b'E',
        SealKind::Hole => b'H',
    });
    out.put_slice(sealer.as_bytes());
    out.freeze()
}

/// The kind of a seal object, or None if `object` is not a seal.
pub fn decode_seal(object: &[u8]) -> Option<SealKind> {
    if object.len() < 9 || &object[..8] != SEAL_MAGIC {
        return None;
    }
    match object[8] {
        b'E' => Some(SealKind::End),
        b'H' => Some(SealKind::Hole),
        _ => None,
    }
}

/// Verifies a chunk read back from an object against its entry.
pub fn verify_chunk(entry: &ChunkEntry, data: &[u8]) -> Result<(), FormatError> {
    if data.len() != entry.length as usize || crc::checksum(data) != entry.crc {
        return Err(FormatError::ChunkCrc);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(p: i32, base: i64, data: &'static [u8]) -> ChunkInput {
        ChunkInput {
            topic_id: Uuid::from_u128(42),
            partition: p,
            base_offset: base,
            last_offset: base + 1,
            max_timestamp: 77,
            batch_count: 1,
            data: Bytes::from_static(data),
            crc: None,
        }
    }

    #[test]
    fn round_trip() {
        let (obj, entries) = encode(&[chunk(0, 10, b"hello"), chunk(3, 0, b"world!")]);
        let decoded = decode_footer(&obj).unwrap();
        assert_eq!(decoded, entries);
        for e in &decoded {
            let data = &obj[e.position as usize..(e.position + u64::from(e.length)) as usize];
            verify_chunk(e, data).unwrap();
        }
        assert_eq!(decoded[1].partition, 3);
        assert_eq!(&obj[decoded[1].position as usize..][..6], b"world!");
    }

    #[test]
    fn torn_or_corrupt_objects_are_rejected() {
        let (obj, entries) = encode(&[chunk(0, 0, b"abcdef")]);
        for cut in [0, 5, obj.len() / 2, obj.len() - 1] {
            assert!(decode_footer(&obj[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = obj.to_vec();
        let at = flipped.len() - TRAILER_LEN - 3;
        flipped[at] ^= 1;
        assert_eq!(decode_footer(&flipped), Err(FormatError::FooterCrc));
        assert_eq!(
            verify_chunk(&entries[0], b"abcdeX"),
            Err(FormatError::ChunkCrc)
        );
    }

    /// Regression (found by tests/fuzz_decoders.rs): a trailer whose footer
    /// position is near 2^64 overflowed the range check.
    #[test]
    fn a_footer_position_near_the_end_of_u64_is_out_of_range() {
        let mut trailer = BytesMut::new();
        trailer.put_u64(u64::MAX - 1);
        trailer.put_u32(0);
        trailer.put_slice(TRAILER_MAGIC);
        assert_eq!(
            decode_trailer(&trailer, 1 << 20),
            Err(FormatError::Malformed("footer position out of range"))
        );
    }

    #[test]
    fn parts_are_the_object_and_chunks_are_not_copied() {
        let inputs = [chunk(0, 10, b"hello"), chunk(3, 0, b"world!")];
        let (encoded, entries) = encode_parts(inputs.to_vec());
        let parts = encoded.parts;
        assert_eq!(parts.len(), 4, "header, two chunks, footer");
        assert_eq!(parts[1].as_ptr(), inputs[0].data.as_ptr(), "no copy");
        let (whole, whole_entries) = encode(&inputs);
        assert_eq!(whole, Bytes::from(parts.concat()));
        assert_eq!(encoded.crc, crc32c::crc32c(&whole));
        assert_eq!(entries, whole_entries);
        assert_eq!(decode_footer(&whole), Ok(entries));
    }

    #[test]
    fn a_known_chunk_checksum_is_taken_as_given() {
        // The writer derives a chunk's CRC from its batches; the encoder
        // trusts it for the entry and the object's CRC and reads nothing.
        let mut known = chunk(1, 0, b"abc");
        known.crc = Some(crc32c::crc32c(b"abc"));
        let (encoded, entries) = encode_parts(vec![known.clone(), chunk(2, 0, b"defg")]);
        let whole = encoded.parts.concat();
        assert_eq!(encoded.crc, crc32c::crc32c(&whole));
        assert_eq!(entries[0].crc, crc32c::crc32c(b"abc"));
        // A wrong one is written as given, and reading the chunk finds it.
        known.crc = Some(7);
        let (obj, entries) = encode(&[known]);
        let e = &entries[0];
        let data = &obj[e.position as usize..][..e.length as usize];
        assert_eq!(verify_chunk(e, data), Err(FormatError::ChunkCrc));
    }
}
