//! A file's extent map: which blob ranges hold which bytes of the file.
//!
//! Stored normalized: extents never overlap, keyed by their file offset, so
//! "the newest write wins" is settled when a write commits. A write loads the
//! extents overlapping its range, applies its extents in order in memory
//! (cutting what they cover), and writes back only what changed. Extents are
//! at most [`MAX_EXTENT`] long.

use std::collections::BTreeMap;

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{BlobRef, Extent, Inode, PunchHoleOp, WriteExtentsOp};
use strata_raftstore::KvRead;

use crate::gc::{self, RefDeltas};
use crate::keys;
use crate::txn::{S_IFMT, S_IFREG, Txn, is_dir};

/// Longest extent (and so longest blob piece) one entry may describe.
pub const MAX_EXTENT: u64 = 64 << 20;

fn decode(bytes: &[u8]) -> Result<Extent> {
    Extent::decode(bytes).map_err(|e| StrataError::new(ErrorCode::Corrupted, format!("decoding an extent: {e}")))
}

/// Extents of `ino` overlapping [start, end), in file order (unclipped).
///
/// Extents never overlap, so only the last one starting at or before `start`
/// can reach into the range from the left: one reverse seek finds it, and a
/// forward scan bounded at `end` finds the rest. Neither walks the deleted
/// keys that overwrites leave elsewhere in the file.
pub fn overlapping(kv: &impl KvRead, ino: u64, start: u64, end: u64) -> Result<Vec<Extent>> {
    if start >= end {
        return Ok(Vec::new());
    }
    let prefix = keys::extents(ino);
    let mut out = Vec::new();
    if let Some((_, value)) = kv.last_at_or_before(&prefix, &start.to_be_bytes())? {
        let extent = decode(&value)?;
        if extent.file_offset < start && extent.file_offset + extent.length > start {
            out.push(extent);
        }
    }
    let mut from = start;
    loop {
        let page = kv.scan_range(&prefix, &from.to_be_bytes(), &end.to_be_bytes(), 1024)?;
        let full = page.len() == 1024;
        for (_, value) in page {
            let extent = decode(&value)?;
            from = extent.file_offset + 1;
            out.push(extent);
        }
        if !full {
            return Ok(out);
        }
    }
}

/// The part of `extent` inside [start, end), if any.
fn clip(extent: &Extent, start: u64, end: u64) -> Option<Extent> {
    let from = extent.file_offset.max(start);
    let to = (extent.file_offset + extent.length).min(end);
    if from >= to {
        return None;
    }
    let mut blob = extent.blob.unwrap_or_default();
    blob.offset += from - extent.file_offset;
    Some(Extent { file_offset: from, length: to - from, blob: Some(blob) })
}

/// The extents covering [offset, offset + length), clipped to it; gaps are holes.
pub fn read(kv: &impl KvRead, ino: u64, offset: u64, length: u64) -> Result<Vec<Extent>> {
    let end = offset.saturating_add(length);
    Ok(overlapping(kv, ino, offset, end)?.iter().filter_map(|e| clip(e, offset, end)).collect())
}

/// Cuts [start, end) out of `map` (file offset → extent), keeping what lies outside.
fn cut(map: &mut BTreeMap<u64, Extent>, start: u64, end: u64) {
    let hit: Vec<u64> = map.range(..end).filter(|(_, e)| e.file_offset + e.length > start).map(|(k, _)| *k).collect();
    for key in hit {
        let old = map.remove(&key).expect("listed");
        if let Some(left) = clip(&old, old.file_offset, start) {
            map.insert(left.file_offset, left);
        }
        if let Some(right) = clip(&old, end, old.file_offset + old.length) {
            map.insert(right.file_offset, right);
        }
    }
}

/// Writes back the difference between the extents loaded and the new map,
/// moving blob references with it.
fn store(txn: &mut Txn<'_, '_>, ino: u64, before: &[Extent], after: &BTreeMap<u64, Extent>) -> Result<()> {
    let mut refs = RefDeltas::default();
    for old in before {
        if after.get(&old.file_offset) != Some(old) {
            txn.delete(&keys::extent(ino, old.file_offset));
            refs.add(old.blob.as_ref(), -1);
        }
    }
    for extent in after.values() {
        if !before.contains(extent) {
            txn.put(&keys::extent(ino, extent.file_offset), &extent.encode_to_vec());
            refs.add(extent.blob.as_ref(), 1);
        }
    }
    gc::apply(txn, refs)
}

fn regular_file(txn: &Txn<'_, '_>, ino: u64) -> Result<Inode> {
    let inode = txn.must_inode(ino)?;
    if is_dir(&inode) {
        return Err(StrataError::new(ErrorCode::IsDir, format!("inode {ino} is a directory")));
    }
    if inode.mode & S_IFMT != S_IFREG {
        return Err(StrataError::invalid(format!("inode {ino} is not a regular file")));
    }
    Ok(inode)
}

/// Commits written data: each extent replaces what covered its range.
pub fn write(txn: &mut Txn<'_, '_>, op: WriteExtentsOp) -> Result<Inode> {
    let mut inode = regular_file(txn, op.ino)?;
    if op.extents.is_empty() {
        return Ok(inode);
    }
    let mut low = u64::MAX;
    let mut high = 0;
    for e in &op.extents {
        if e.length == 0 || e.length > MAX_EXTENT {
            return Err(StrataError::invalid(format!("an extent is 1 byte to {MAX_EXTENT} bytes, not {}", e.length)));
        }
        let end = e
            .file_offset
            .checked_add(e.length)
            .ok_or_else(|| StrataError::invalid("extent past the largest offset"))?;
        if e.blob.is_none() {
            return Err(StrataError::invalid("an extent needs its blob"));
        }
        low = low.min(e.file_offset);
        high = high.max(end);
    }
    let before = overlapping(txn.kv(), op.ino, low, high)?;
    let mut map: BTreeMap<u64, Extent> = before.iter().map(|e| (e.file_offset, *e)).collect();
    for e in &op.extents {
        cut(&mut map, e.file_offset, e.file_offset + e.length);
        map.insert(e.file_offset, *e);
    }
    store(txn, op.ino, &before, &map)?;
    inode.size = inode.size.max(high);
    inode.mtime_ns = txn.now_ns;
    inode.ctime_ns = txn.now_ns;
    txn.put_inode(inode.clone());
    Ok(inode)
}

/// Drops the data past `size` (a truncate), cutting the extent that crosses it.
pub fn truncate(txn: &mut Txn<'_, '_>, ino: u64, size: u64) -> Result<()> {
    let before = overlapping(txn.kv(), ino, size, u64::MAX)?;
    let mut map: BTreeMap<u64, Extent> = before.iter().map(|e| (e.file_offset, *e)).collect();
    cut(&mut map, size, u64::MAX);
    store(txn, ino, &before, &map)
}

/// Turns [offset, offset + length) of a regular file into a hole (fallocate
/// PUNCH_HOLE): the extents there are cut, the size stays.
pub fn punch_hole(txn: &mut Txn<'_, '_>, op: PunchHoleOp) -> Result<Inode> {
    let mut inode = regular_file(txn, op.ino)?;
    let end = op.offset.checked_add(op.length).ok_or_else(|| StrataError::invalid("hole past the largest offset"))?;
    if op.length == 0 {
        return Err(StrataError::invalid("a hole needs a length"));
    }
    let before = overlapping(txn.kv(), op.ino, op.offset, end)?;
    let mut map: BTreeMap<u64, Extent> = before.iter().map(|e| (e.file_offset, *e)).collect();
    cut(&mut map, op.offset, end);
    store(txn, op.ino, &before, &map)?;
    inode.mtime_ns = txn.now_ns;
    inode.ctime_ns = txn.now_ns;
    txn.put_inode(inode.clone());
    Ok(inode)
}

/// Deletes every extent of an inode being reclaimed.
pub fn delete_all(txn: &mut Txn<'_, '_>, ino: u64) -> Result<()> {
    let mut refs = RefDeltas::default();
    for (key, value) in txn.kv().scan_prefix(&keys::extents(ino))? {
        txn.delete(&key);
        refs.add(decode(&value)?.blob.as_ref(), -1);
    }
    gc::apply(txn, refs)
}

/// The blob a test or tool names: partition, blob, offset.
pub fn blob(data_partition: u64, blob_id: u64, offset: u64) -> BlobRef {
    BlobRef { data_partition, blob_id, offset, blob_size: MAX_EXTENT, codec: 0 }
}
