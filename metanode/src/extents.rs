//! A file's extent map: which blob ranges hold which bytes of the file.
//!
//! Stored normalized: extents never overlap, so "the newest write wins" is
//! settled when a write commits. A write loads the extents around its range,
//! applies its extents in order in memory (cutting what they cover), and
//! writes back only what changed. Extents are at most [`MAX_EXTENT`] long.
//!
//! Stored in chunks: one key per [`CHUNK`] bytes of the file holds every
//! extent piece inside that range (extents crossing a chunk boundary are
//! split there). An overwrite rewrites the value of the chunk keys it
//! touches, never deleting keys: with a key per extent, random overwrites
//! left a delete marker at every offset ever written, which every later
//! scan of the file walked (until RocksDB compacted them away), and an
//! overwrite-heavy file slowed down more with each write (fsx: 157 → 73
//! ops/s over 20,000 operations).

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

/// Bytes of the file one stored chunk covers: small enough that rewriting a
/// chunk of small random writes stays cheap (at most a few hundred pieces),
/// large enough that a sequentially written file has a handful of keys.
pub const CHUNK: u64 = 4 << 20;

fn chunk_start(offset: u64) -> u64 {
    offset - offset % CHUNK
}

fn corrupted(e: prost::DecodeError) -> StrataError {
    StrataError::new(ErrorCode::Corrupted, format!("decoding an extent chunk: {e}"))
}

/// The pieces one chunk value holds, in file order.
fn decode_chunk(mut bytes: &[u8]) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(Extent::decode_length_delimited(&mut bytes).map_err(corrupted)?);
    }
    Ok(out)
}

fn encode_chunk(pieces: &[Extent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.len() * 40);
    for piece in pieces {
        piece.encode_length_delimited(&mut out).expect("a Vec grows as needed");
    }
    out
}

/// Every stored piece of `ino` in the chunks that [start, end) touches, in
/// file order: a superset of what overlaps the range, whole chunks at a time
/// (a write rewrites whole chunks).
fn chunk_pieces(kv: &impl KvRead, ino: u64, start: u64, end: u64) -> Result<Vec<Extent>> {
    if start >= end {
        return Ok(Vec::new());
    }
    let prefix = keys::extents(ino);
    let to = chunk_start(end - 1).checked_add(CHUNK).map_or_else(|| vec![0xff; 9], |to| to.to_be_bytes().to_vec());
    let mut from = chunk_start(start).to_be_bytes().to_vec();
    let mut out = Vec::new();
    loop {
        let page = kv.scan_range(&prefix, &from, &to, 256)?;
        let full = page.len() == 256;
        for (key, value) in &page {
            out.extend(decode_chunk(value)?);
            from = [&key[prefix.len()..], &[0u8][..]].concat();
        }
        if !full {
            return Ok(out);
        }
    }
}

/// How many chunk keys hold `ino`'s extents (for tests and diagnostics).
pub fn stored_chunks(kv: &impl KvRead, ino: u64) -> Result<usize> {
    Ok(kv.scan_prefix(&keys::extents(ino))?.len())
}

/// Stored pieces of `ino` overlapping [start, end), in file order (unclipped).
pub fn overlapping(kv: &impl KvRead, ino: u64, start: u64, end: u64) -> Result<Vec<Extent>> {
    let pieces = chunk_pieces(kv, ino, start, end)?;
    Ok(pieces.into_iter().filter(|e| e.file_offset < end && e.file_offset + e.length > start).collect())
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

/// Whether `next` continues `prev` in the same blob across a chunk boundary
/// (one extent that storage split).
fn continues(prev: &Extent, next: &Extent) -> bool {
    let (Some(a), Some(b)) = (prev.blob.as_ref(), next.blob.as_ref()) else { return false };
    next.file_offset.is_multiple_of(CHUNK)
        && prev.file_offset + prev.length == next.file_offset
        && a.data_partition == b.data_partition
        && a.blob_id == b.blob_id
        && a.codec == b.codec
        && a.blob_size == b.blob_size
        && a.offset + prev.length == b.offset
}

/// The extents covering [offset, offset + length), clipped to it; gaps are
/// holes. Pieces that storage split at chunk boundaries come back joined.
pub fn read(kv: &impl KvRead, ino: u64, offset: u64, length: u64) -> Result<Vec<Extent>> {
    let end = offset.saturating_add(length);
    let mut out: Vec<Extent> = Vec::new();
    for piece in overlapping(kv, ino, offset, end)?.iter().filter_map(|e| clip(e, offset, end)) {
        match out.last_mut() {
            Some(prev) if continues(prev, &piece) => prev.length += piece.length,
            _ => out.push(piece),
        }
    }
    Ok(out)
}

/// `extent` cut at chunk boundaries, keyed by the chunk each piece is in.
fn split_at_chunks(extent: &Extent) -> impl Iterator<Item = (u64, Extent)> + '_ {
    let end = extent.file_offset + extent.length;
    let mut at = extent.file_offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let chunk = chunk_start(at);
        let piece_end = end.min(chunk.saturating_add(CHUNK));
        let piece = clip(extent, at, piece_end)?;
        at = piece_end;
        Some((chunk, piece))
    })
}

/// Pieces grouped by the chunk they are in, each group in file order.
fn by_chunk<'a>(extents: impl Iterator<Item = &'a Extent>) -> BTreeMap<u64, Vec<Extent>> {
    let mut chunks: BTreeMap<u64, Vec<Extent>> = BTreeMap::new();
    for extent in extents {
        for (chunk, piece) in split_at_chunks(extent) {
            chunks.entry(chunk).or_default().push(piece);
        }
    }
    chunks
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

/// Writes back the chunks whose pieces changed between `before` (every
/// piece of the chunks loaded) and `after`, moving blob references with them.
fn store(txn: &mut Txn<'_, '_>, ino: u64, before: &[Extent], after: &BTreeMap<u64, Extent>) -> Result<()> {
    let old = by_chunk(before.iter());
    let new = by_chunk(after.values());
    let mut refs = RefDeltas::default();
    let chunks: std::collections::BTreeSet<u64> = old.keys().chain(new.keys()).copied().collect();
    for chunk in chunks {
        let (was, now) =
            (old.get(&chunk).map_or(&[][..], Vec::as_slice), new.get(&chunk).map_or(&[][..], Vec::as_slice));
        if was == now {
            continue;
        }
        // Pieces the chunk keeps cancel out (-1 then +1 on the same blob).
        for piece in was {
            refs.add(piece.blob.as_ref(), -1);
        }
        for piece in now {
            refs.add(piece.blob.as_ref(), 1);
        }
        let key = keys::extent(ino, chunk);
        if now.is_empty() {
            txn.delete(&key);
        } else {
            txn.put(&key, &encode_chunk(now));
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
    let before = chunk_pieces(txn.kv(), op.ino, low, high)?;
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
    let before = chunk_pieces(txn.kv(), ino, size, u64::MAX)?;
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
    let before = chunk_pieces(txn.kv(), op.ino, op.offset, end)?;
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
        for piece in decode_chunk(&value)? {
            refs.add(piece.blob.as_ref(), -1);
        }
    }
    gc::apply(txn, refs)
}

/// The blob a test or tool names: partition, blob, offset.
pub fn blob(data_partition: u64, blob_id: u64, offset: u64) -> BlobRef {
    BlobRef { data_partition, blob_id, offset, blob_size: MAX_EXTENT, codec: 0 }
}
