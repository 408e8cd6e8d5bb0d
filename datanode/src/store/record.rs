//! The on-disk format of one stored blob: a fixed header, the CRC32 of every
//! block, then the bytes. Segment files are a sequence of these records, so a
//! segment can be read back without the index (compaction, checks), and the
//! index entry ([`Location`]) carries the same CRCs so a read needs no extra
//! seek for them.
//!
//! Every record starts on a 4 KiB page and fills whole pages (zeros pad its
//! end), so the appender writes records with O_DIRECT: a blob goes from its
//! buffer to the disk without a copy into the page cache (that copy was half
//! of a busy datanode's CPU; docs/PERFORMANCE.md). A record of at least
//! [`ALIGNED_DATA_MIN`] bytes also pads its header to whole pages, so its data
//! is page-aligned in the segment; a smaller one keeps the data right after
//! its header, so a small blob takes one page, as a small file does on ext4.

use strata_common::{ErrorCode, Result, StrataError};

/// Every stored byte belongs to a block of this size with its own CRC32; a
/// ranged read checks the blocks it covers.
pub const BLOCK_SIZE: u64 = 64 * 1024;
/// Largest blob (or shard) a datanode stores.
pub const MAX_BLOB: u64 = 64 << 20;

const MAGIC: u32 = 0x5342_4c42; // "SBLB"
/// The record format; a store records the one it was written in (`keys::FORMAT`).
pub const VERSION: u16 = 2;
/// Bytes of the fixed header, its own CRC included.
pub const HEADER_LEN: usize = 48;

/// Records of at least this many data bytes have page-aligned data.
pub const ALIGNED_DATA_MIN: u64 = BLOCK_SIZE;
/// The page every record starts on and is padded to.
pub const PAGE: u64 = strata_common::aligned::ALIGN as u64;

fn whole_pages(len: u64) -> u64 {
    len.div_ceil(PAGE) * PAGE
}

/// Bytes from a record's start to its data, for `len` data bytes: header
/// and CRCs, padded to whole pages for a large record.
pub fn head_len(len: u64) -> u64 {
    let head = HEADER_LEN as u64 + 4 * block_count(len) as u64;
    if len >= ALIGNED_DATA_MIN { whole_pages(head) } else { head }
}

/// Bytes a record of `len` data bytes takes in its segment: whole pages.
pub fn record_len(len: u64) -> u64 {
    whole_pages(head_len(len) + len)
}

/// How a stored piece relates to its blob (see `BlobMeta` in data.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PieceMeta {
    pub codec: u8,
    pub shard: u8,
    pub data_shards: u8,
    pub parity_shards: u8,
    pub blob_size: u64,
}

impl TryFrom<&strata_proto::data::BlobMeta> for PieceMeta {
    type Error = StrataError;
    fn try_from(m: &strata_proto::data::BlobMeta) -> Result<PieceMeta> {
        let small = |v: u32, what: &str| {
            u8::try_from(v).map_err(|_| StrataError::invalid(format!("{what} {v} is out of range")))
        };
        let meta = PieceMeta {
            codec: small(m.codec, "codec")?,
            shard: small(m.shard, "shard")?,
            data_shards: small(m.data_shards, "data_shards")?,
            parity_shards: small(m.parity_shards, "parity_shards")?,
            blob_size: m.blob_size,
        };
        if meta.codec > 1 {
            return Err(StrataError::invalid(format!("unknown codec {}", meta.codec)));
        }
        if meta.codec == 1 && meta.shard >= meta.data_shards.saturating_add(meta.parity_shards) {
            return Err(StrataError::invalid(format!("shard {} is outside the stripe", meta.shard)));
        }
        Ok(meta)
    }
}

impl From<PieceMeta> for strata_proto::data::BlobMeta {
    fn from(m: PieceMeta) -> Self {
        strata_proto::data::BlobMeta {
            codec: m.codec.into(),
            shard: m.shard.into(),
            data_shards: m.data_shards.into(),
            parity_shards: m.parity_shards.into(),
            blob_size: m.blob_size,
        }
    }
}

/// Identity and shape of a record, as written in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub partition: u64,
    pub blob: u64,
    pub len: u32,
    pub meta: PieceMeta,
}

pub fn block_count(len: u64) -> usize {
    len.div_ceil(BLOCK_SIZE) as usize
}

/// CRC32 of each block of `data`.
pub fn block_crcs(data: &[u8]) -> Vec<u32> {
    data.chunks(BLOCK_SIZE as usize).map(crc32fast::hash).collect()
}

impl Header {
    /// Header, CRCs: everything written before the data.
    pub fn encode(&self, crcs: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * crcs.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.blob.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        let m = self.meta;
        out.extend_from_slice(&[m.codec, m.shard, m.data_shards, m.parity_shards]);
        out.extend_from_slice(&m.blob_size.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_LEN);
        for c in crcs {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Parses and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<Header> {
        let corrupt = |what: &str| StrataError::new(ErrorCode::Corrupted, format!("record header: {what}"));
        if bytes.len() < HEADER_LEN {
            return Err(corrupt("truncated"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        if u32_at(0) != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if crc32fast::hash(&bytes[..HEADER_LEN - 4]) != u32_at(HEADER_LEN - 4) {
            return Err(corrupt("checksum mismatch"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(corrupt(&format!("format {version}, not {VERSION}")));
        }
        if u32_at(28) as u64 != BLOCK_SIZE {
            return Err(corrupt("unsupported block size"));
        }
        Ok(Header {
            partition: u64_at(8),
            blob: u64_at(16),
            len: u32_at(24),
            meta: PieceMeta {
                codec: bytes[32],
                shard: bytes[33],
                data_shards: bytes[34],
                parity_shards: bytes[35],
                blob_size: u64_at(36),
            },
        })
    }

    /// Bytes of the whole record: header, CRCs, data and padding.
    pub fn record_len(&self) -> u64 {
        record_len(self.len.into())
    }
}

/// Where a blob's bytes are and how to check them: the index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    /// Offset of the record's header in the segment.
    pub record_offset: u64,
    pub len: u32,
    pub meta: PieceMeta,
    pub crcs: Vec<u32>,
}

impl Location {
    /// Offset of the first data byte in the segment.
    pub fn data_offset(&self) -> u64 {
        self.record_offset + head_len(self.len.into())
    }

    /// The CRC32 of bytes [offset, offset + len) of the blob, from the stored
    /// block CRCs, when the range is made of whole blocks (it may end at the
    /// blob's end); None otherwise. A read that checked those blocks answers
    /// its CRC without a second pass over the bytes.
    pub fn range_crc(&self, offset: u64, len: u64) -> Option<u32> {
        let end = offset.checked_add(len)?;
        let whole = offset.is_multiple_of(BLOCK_SIZE) && (end.is_multiple_of(BLOCK_SIZE) || end == u64::from(self.len));
        if len == 0 || !whole || end > u64::from(self.len) {
            return None;
        }
        let first = (offset / BLOCK_SIZE) as usize;
        let mut hasher = crc32fast::Hasher::new_with_initial_len(0, 0);
        for (i, crc) in self.crcs.get(first..end.div_ceil(BLOCK_SIZE) as usize)?.iter().enumerate() {
            let block_start = (first + i) as u64 * BLOCK_SIZE;
            let block_len = BLOCK_SIZE.min(end - block_start);
            hasher.combine(&crc32fast::Hasher::new_with_initial_len(*crc, block_len));
        }
        Some(hasher.finalize())
    }

    pub fn record_len(&self) -> u64 {
        record_len(self.len.into())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 4 * self.crcs.len());
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.record_offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        let m = self.meta;
        out.extend_from_slice(&[m.codec, m.shard, m.data_shards, m.parity_shards]);
        out.extend_from_slice(&m.blob_size.to_le_bytes());
        for c in &self.crcs {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Location> {
        if bytes.len() < 32 || !(bytes.len() - 32).is_multiple_of(4) {
            return Err(StrataError::new(ErrorCode::Corrupted, "index entry has a bad length"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        let crcs: Vec<u32> = bytes[32..].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        if crcs.len() != block_count(len.into()) {
            return Err(StrataError::new(ErrorCode::Corrupted, "index entry's CRC count does not match its length"));
        }
        Ok(Location {
            segment: u64_at(0),
            record_offset: u64_at(8),
            len,
            meta: PieceMeta {
                codec: bytes[20],
                shard: bytes[21],
                data_shards: bytes[22],
                parity_shards: bytes[23],
                blob_size: u64_at(24),
            },
            crcs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_crcs_come_from_the_block_crcs() {
        let data: Vec<u8> = (0..3 * BLOCK_SIZE as usize + 1234).map(|i| (i * 31 % 251) as u8).collect();
        let meta = PieceMeta { codec: 0, shard: 0, data_shards: 1, parity_shards: 0, blob_size: data.len() as u64 };
        let loc = Location { segment: 1, record_offset: 0, len: data.len() as u32, meta, crcs: block_crcs(&data) };
        let b = BLOCK_SIZE as usize;
        for (offset, len) in [(0, data.len()), (0, b), (b, 2 * b), (2 * b, data.len() - 2 * b), (3 * b, 1234)] {
            let expected = crc32fast::hash(&data[offset..offset + len]);
            assert_eq!(loc.range_crc(offset as u64, len as u64), Some(expected), "{offset}+{len}");
        }
        for (offset, len) in [(1, b), (0, b + 1), (0, 0), (b, data.len())] {
            assert_eq!(loc.range_crc(offset as u64, len as u64), None, "{offset}+{len}");
        }
    }

    #[test]
    fn header_and_location_round_trip() {
        let meta = PieceMeta { codec: 1, shard: 2, data_shards: 4, parity_shards: 2, blob_size: 1 << 22 };
        let header = Header { partition: 7, blob: 99, len: 200_000, meta };
        let crcs = vec![1, 2, 3, 4];
        let bytes = header.encode(&crcs);
        assert_eq!(bytes.len(), HEADER_LEN + 16);
        assert_eq!(Header::decode(&bytes).unwrap(), header);
        // A large record: the header has a page of its own, the data fills whole pages.
        assert_eq!(header.record_len(), PAGE + 200_704);

        let loc = Location { segment: 3, record_offset: 4096, len: 200_000, meta, crcs };
        assert_eq!(Location::decode(&loc.encode()).unwrap(), loc);
        assert_eq!(loc.data_offset(), 4096 + PAGE);
        assert_eq!(loc.record_len(), header.record_len());
    }

    #[test]
    fn records_fill_whole_pages_and_a_small_one_keeps_its_data_by_its_header() {
        // (data bytes, pages): a 48-byte header and one CRC before the data.
        for (len, pages) in [(1, 1), (100, 1), (4000, 1), (4044, 1), (4045, 2), (4096, 2), (60_000, 15)] {
            assert_eq!(head_len(len), 52, "{len}");
            assert_eq!(record_len(len), pages * PAGE, "{len}");
        }
        for len in [BLOCK_SIZE, BLOCK_SIZE + 1, 1 << 20, MAX_BLOB] {
            assert_eq!(head_len(len) % PAGE, 0, "{len}");
            assert_eq!(record_len(len) % PAGE, 0, "{len}");
            assert!(record_len(len) - len < 2 * PAGE + 4 * block_count(len) as u64, "{len}");
        }
    }

    #[test]
    fn damaged_header_is_refused() {
        let header = Header { partition: 1, blob: 2, len: 10, meta: PieceMeta::default() };
        let mut bytes = header.encode(&[0]);
        bytes[17] ^= 1;
        assert_eq!(Header::decode(&bytes).unwrap_err().code, ErrorCode::Corrupted);
        // A record of another format, its header checksum intact.
        let mut bytes = header.encode(&[0]);
        bytes[4] = 1;
        let crc = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
        bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        assert!(Header::decode(&bytes).unwrap_err().message.contains("format 1"));
        assert!(Location::decode(&[0; 33]).is_err());
    }
}
