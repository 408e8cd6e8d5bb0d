//! Keys of the datanode's RocksDB index. One DB per node serves every disk:
//! - `b` partition blob → [`Location`](super::record::Location) of a stored blob;
//! - `s` segment → [`SegmentInfo`] (size, garbage, sealed);
//! - `p` partition → the disk its blobs go to;
//! - `x` partition blob → a blob found corrupt, waiting for repair;
//! - `v` → the record format the segments are written in (u16, big-endian).
//!
//! Integers are big-endian so that keys sort numerically.

pub const BLOB: u8 = b'b';
pub const SEGMENT: u8 = b's';
pub const PARTITION: u8 = b'p';
pub const BAD: u8 = b'x';
pub const FORMAT: u8 = b'v';

pub fn blob(partition: u64, blob: u64) -> Vec<u8> {
    two(BLOB, partition, blob)
}

pub fn bad(partition: u64, blob: u64) -> Vec<u8> {
    two(BAD, partition, blob)
}

pub fn segment(segment: u64) -> Vec<u8> {
    one(SEGMENT, segment)
}

pub fn partition(partition: u64) -> Vec<u8> {
    one(PARTITION, partition)
}

/// Prefix of every blob key of `partition`.
pub fn blob_prefix(partition: u64) -> Vec<u8> {
    one(BLOB, partition)
}

fn one(tag: u8, a: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(tag);
    k.extend_from_slice(&a.to_be_bytes());
    k
}

fn two(tag: u8, a: u64, b: u64) -> Vec<u8> {
    let mut k = one(tag, a);
    k.extend_from_slice(&b.to_be_bytes());
    k
}

/// The two numbers of a `b` or `x` key.
pub fn parse_two(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 17 {
        return None;
    }
    Some((u64::from_be_bytes(key[1..9].try_into().ok()?), u64::from_be_bytes(key[9..17].try_into().ok()?)))
}

/// The number of an `s` or `p` key.
pub fn parse_one(key: &[u8]) -> Option<u64> {
    if key.len() != 9 {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
}

/// Bookkeeping of one segment file, kept in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentInfo {
    /// Bytes written to the file (its length once all writes landed).
    pub size: u64,
    /// Bytes of records no index entry points to any more.
    pub dead: u64,
    /// No more appends: a candidate for compaction.
    pub sealed: bool,
}

impl SegmentInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.dead.to_le_bytes());
        out.push(self.sealed as u8);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SegmentInfo> {
        if bytes.len() != 17 {
            return None;
        }
        Some(SegmentInfo {
            size: u64::from_le_bytes(bytes[0..8].try_into().ok()?),
            dead: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            sealed: bytes[16] != 0,
        })
    }
}

/// Segment ids carry their disk in the top 16 bits, so a location names its file.
pub fn segment_disk(segment: u64) -> usize {
    (segment >> 48) as usize
}

pub fn segment_id(disk: usize, seq: u64) -> u64 {
    ((disk as u64) << 48) | (seq & ((1 << 48) - 1))
}
