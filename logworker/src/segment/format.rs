//! The segment object format (version 1): one partition's record batches
//! over a contiguous offset range, written by compaction. Documented in
//! docs/storage-format.md.
//!
//! ```text
//! segment := header block* footer trailer
//! header  := magic "KSSEG\0\0\x01" (8 bytes)
//! block   := whole record batches of the partition, back to back, as stored
//! footer  := topic_id:[16] partition:i32 base_offset:i64 end_offset:i64
//!            entry_count:u32 entry*
//! entry   := base_offset:i64 last_offset:i64 max_timestamp:i64 position:u64
//!            length:u32 batch_count:u32 crc32c:u32
//! trailer := footer_position:u64 footer_crc32c:u32 magic "KSSF" (16 bytes)
//! ```
//! All integers are big-endian. The segment covers offsets
//! `[base_offset, end_offset)` (gaps allowed: failed flushes, compacted keys);
//! `end_offset` is the next segment's base offset. The entries are the offset
//! index (blocks in offset order) and the time index (each block's largest
//! timestamp); `crc32c` of an entry covers its block, the footer CRC covers
//! the footer. A segment whose trailer or footer does not verify is never
//! served.

use crate::crc::{self, Crc32c};
use crate::wal::format::{
    get_entry_fields, get_trailer, put_entry_fields, put_trailer, ChunkEntry, EncodedParts,
    FormatError,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Leading magic of a segment, including the format version.
pub const HEADER_MAGIC: &[u8; 8] = b"KSSEG\0\0\x01";
const TRAILER_MAGIC: &[u8; 4] = b"KSSF";
/// Trailer length in bytes.
pub const TRAILER_LEN: usize = 16;
const HEAD_LEN: usize = 16 + 4 + 8 + 8 + 4;
const ENTRY_LEN: usize = 8 + 8 + 8 + 8 + 4 + 4 + 4;

/// One block to be written: whole batches of the partition, in pieces
/// (the WAL chunks it is made of) that become parts of the segment object
/// as they are, so compaction copies no record bytes in memory.
#[derive(Debug, Clone)]
pub struct BlockInput {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub batch_count: u32,
    pub data: Vec<Bytes>,
    /// The CRC32C of the pieces, back to back, when it is known (derived
    /// from the chunks' own checksums); computed from them when `None`.
    pub crc: Option<u32>,
}

impl BlockInput {
    /// The block's length in bytes.
    pub fn len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }

    /// Whether the block holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoded segment footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub topic_id: Uuid,
    pub partition: i32,
    pub base_offset: i64,
    pub end_offset: i64,
    /// The blocks, as chunk entries of this partition.
    pub blocks: Vec<ChunkEntry>,
}

/// Serializes a segment of `[base_offset, end_offset)` as the object's
/// parts, in order: the header, each block's pieces as they are (no copy of
/// the records), and the footer with its trailer. Returns the parts with
/// the object's CRC32C (a block whose CRC is known is not read) and the
/// segment's index.
pub fn encode_parts(
    topic_id: Uuid,
    partition: i32,
    base_offset: i64,
    end_offset: i64,
    blocks: &[BlockInput],
) -> (EncodedParts, SegmentIndex) {
    let pieces: usize = blocks.iter().map(|b| b.data.len()).sum();
    let mut parts = Vec::with_capacity(pieces + 2);
    parts.push(Bytes::from_static(HEADER_MAGIC));
    let mut object_crc = Crc32c::of(HEADER_MAGIC);
    let mut position = HEADER_MAGIC.len() as u64;
    let mut entries = Vec::with_capacity(blocks.len());
    for b in blocks {
        let start = position;
        let mut read = Crc32c::default();
        for piece in &b.data {
            if b.crc.is_none() {
                read.update(piece);
            }
            position += piece.len() as u64;
            parts.push(piece.clone());
        }
        let crc = b.crc.unwrap_or(read.value());
        object_crc.append(Crc32c::known(crc, position - start));
        entries.push(ChunkEntry {
            topic_id,
            partition,
            base_offset: b.base_offset,
            last_offset: b.last_offset,
            max_timestamp: b.max_timestamp,
            position: start,
            length: (position - start) as u32,
            batch_count: b.batch_count,
            crc,
        });
    }
    let mut footer = BytesMut::with_capacity(HEAD_LEN + entries.len() * ENTRY_LEN + TRAILER_LEN);
    footer.put_slice(topic_id.as_bytes());
    footer.put_i32(partition);
    footer.put_i64(base_offset);
    footer.put_i64(end_offset);
    footer.put_u32(entries.len() as u32);
    for e in &entries {
        put_entry_fields(&mut footer, e);
    }
    put_trailer(&mut footer, position, TRAILER_MAGIC);
    object_crc.update(&footer);
    parts.push(footer.freeze());
    let index = SegmentIndex {
        topic_id,
        partition,
        base_offset,
        end_offset,
        blocks: entries,
    };
    let crc = object_crc.value();
    (EncodedParts { parts, crc }, index)
}

/// [`encode_parts`] into one buffer: the object and its index.
pub fn encode(
    topic_id: Uuid,
    partition: i32,
    base_offset: i64,
    end_offset: i64,
    blocks: &[BlockInput],
) -> (Bytes, SegmentIndex) {
    let (encoded, index) = encode_parts(topic_id, partition, base_offset, end_offset, blocks);
    (Bytes::from(encoded.parts.concat()), index)
}

/// The footer position and CRC from a segment's trailer (the last
/// [`TRAILER_LEN`] bytes of an object of `object_len` bytes).
pub fn decode_trailer(trailer: &[u8], object_len: u64) -> Result<(u64, u32), FormatError> {
    get_trailer(trailer, object_len, TRAILER_MAGIC, HEAD_LEN)
}

/// Decodes and verifies a footer read from `footer_pos` (its bytes up to the
/// trailer).
pub fn decode_footer(
    footer: &[u8],
    footer_pos: u64,
    crc: u32,
) -> Result<SegmentIndex, FormatError> {
    if crc::checksum(footer) != crc {
        return Err(FormatError::FooterCrc);
    }
    if footer.len() < HEAD_LEN {
        return Err(FormatError::Malformed("footer shorter than its head"));
    }
    let mut f = footer;
    let topic_id = Uuid::from_slice(&f[..16]).map_err(|_| FormatError::Malformed("topic id"))?;
    f.advance(16);
    let partition = f.get_i32();
    let base_offset = f.get_i64();
    let end_offset = f.get_i64();
    let count = f.get_u32() as usize;
    if f.len()
        != count
            .checked_mul(ENTRY_LEN)
            .ok_or(FormatError::Malformed("count"))?
    {
        return Err(FormatError::Malformed(
            "entry count does not match footer size",
        ));
    }
    let mut blocks = Vec::with_capacity(count);
    let mut previous_end = HEADER_MAGIC.len() as u64;
    for _ in 0..count {
        let e = get_entry_fields(&mut f, topic_id, partition);
        let in_order = blocks
            .last()
            .is_none_or(|p: &ChunkEntry| e.base_offset > p.last_offset);
        let Some(end) = e.end().filter(|end| *end <= footer_pos) else {
            return Err(FormatError::Malformed("block entry out of range"));
        };
        if e.position < previous_end
            || e.last_offset < e.base_offset
            || e.base_offset < base_offset
            || e.last_offset >= end_offset
            || !in_order
        {
            return Err(FormatError::Malformed("block entry out of range"));
        }
        previous_end = end;
        blocks.push(e);
    }
    if end_offset < base_offset {
        return Err(FormatError::Malformed("segment ends before it starts"));
    }
    Ok(SegmentIndex {
        topic_id,
        partition,
        base_offset,
        end_offset,
        blocks,
    })
}

/// Decodes and verifies the footer of a whole segment object.
pub fn decode(object: &[u8]) -> Result<SegmentIndex, FormatError> {
    let len = object.len();
    if len < HEADER_MAGIC.len() + HEAD_LEN + TRAILER_LEN {
        return Err(FormatError::TooShort(len));
    }
    if &object[..HEADER_MAGIC.len()] != HEADER_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let (pos, crc) = decode_trailer(&object[len - TRAILER_LEN..], len as u64)?;
    decode_footer(&object[pos as usize..len - TRAILER_LEN], pos, crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::verify_chunk;

    fn block(base: i64, last: i64, fill: u8) -> BlockInput {
        BlockInput {
            base_offset: base,
            last_offset: last,
            max_timestamp: base * 10,
            batch_count: 1,
            // Two pieces, as compaction joins chunks into a block.
            data: vec![
                Bytes::from(vec![fill; 100 + base as usize]),
                Bytes::from(vec![fill ^ 0xff; 7]),
            ],
            crc: None,
        }
    }

    #[test]
    fn a_segment_round_trips_and_every_block_verifies() {
        let id = Uuid::from_u128(7);
        let blocks = [block(10, 19, 1), block(25, 30, 2)];
        let (obj, index) = encode(id, 3, 10, 40, &blocks);
        let decoded = decode(&obj).expect("decodes");
        assert_eq!(decoded, index);
        assert_eq!((decoded.base_offset, decoded.end_offset), (10, 40));
        for (e, b) in decoded.blocks.iter().zip(&blocks) {
            let start = e.position as usize;
            let data = &obj[start..start + e.length as usize];
            assert_eq!(data, &b.data.concat()[..]);
            verify_chunk(e, data).expect("block checksum");
        }
    }

    #[test]
    fn the_parts_of_a_segment_are_the_blocks_pieces_themselves() {
        let blocks = [block(10, 19, 1), block(25, 30, 2)];
        let (encoded, index) = encode_parts(Uuid::from_u128(7), 3, 10, 40, &blocks);
        let parts = encoded.parts;
        // Header, four pieces, footer: the pieces are shared, not copied.
        assert_eq!(parts.len(), 6);
        let pieces = blocks.iter().flat_map(|b| &b.data);
        for (part, piece) in parts[1..5].iter().zip(pieces) {
            assert_eq!(part.as_ptr(), piece.as_ptr());
        }
        let (joined, joined_index) = encode(Uuid::from_u128(7), 3, 10, 40, &blocks);
        assert_eq!(parts.concat(), joined.to_vec());
        assert_eq!(encoded.crc, crc32c::crc32c(&joined));
        assert_eq!(index, joined_index);
    }

    #[test]
    fn a_known_block_checksum_gives_the_same_segment_without_reading_it() {
        let id = Uuid::from_u128(7);
        let read = [block(10, 19, 1), block(25, 30, 2)];
        let known: Vec<BlockInput> = read
            .iter()
            .map(|b| BlockInput {
                crc: Some(crc32c::crc32c(&b.data.concat())),
                ..b.clone()
            })
            .collect();
        let (a, index_a) = encode_parts(id, 3, 10, 40, &read);
        let (b, index_b) = encode_parts(id, 3, 10, 40, &known);
        assert_eq!((a.crc, &index_a), (b.crc, &index_b));
        assert_eq!(a.parts.concat(), b.parts.concat());
    }

    #[test]
    fn damage_anywhere_in_the_footer_or_trailer_is_detected() {
        let (obj, _) = encode(Uuid::from_u128(1), 0, 0, 10, &[block(0, 9, 5)]);
        let footer_start = obj.len() - TRAILER_LEN - HEAD_LEN - ENTRY_LEN;
        for i in footer_start..obj.len() {
            let mut bad = obj.to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(decode(&obj[..obj.len() - 1]).is_err());
        let mut wal_magic = obj.to_vec();
        wal_magic[..8].copy_from_slice(crate::wal::format::HEADER_MAGIC);
        assert_eq!(decode(&wal_magic), Err(FormatError::BadMagic));
    }

    #[test]
    fn an_empty_segment_is_valid() {
        // A range whose records were all removed (a compacted topic) still
        // advances the compacted offset.
        let (obj, index) = encode(Uuid::from_u128(2), 1, 5, 9, &[]);
        assert_eq!(decode(&obj).expect("decodes"), index);
    }
}
