//! L2: blocks in one sparse file of fixed-size slots under the local cache
//! directory. A slot is a 4 KiB header (the block's key, its length, the
//! CRC32 of its bytes, a write sequence and the header's own CRC) followed by
//! room for one block. A block shorter than the slot (a small file's only
//! block) leaves the rest of the slot a hole, punched if an earlier block
//! there was longer, so the capacity counts the bytes of blocks, not slots:
//! there is a slot per 64 KiB of capacity (or per block, if blocks are
//! larger). Storing a block is one positioned
//! write into a free or evicted slot: no file is created, renamed or removed
//! per block (with a file per block those cost as much CPU as the reads they
//! served; `docs/PERFORMANCE.md`). One descriptor stays open, whatever the
//! number of blocks.
//!
//! The block's CRC is checked on every read; a damaged or torn slot (a crash
//! mid-write) is dropped and the block read again from the datanodes, so
//! writes need no fsync. The index (which block is in which slot, least
//! recently used first) lives in memory and is rebuilt at start from the
//! slot headers, ordered by their write sequence, so the cache outlives
//! restarts. A lock file keeps two processes from sharing one directory.
//!
//! With `direct` (`strata mount --cache-direct-io`) the file is opened with
//! O_DIRECT where the file system allows it: a block received from a
//! datanode (page-aligned by the frame reader) goes from that buffer to the
//! disk without a copy into the page cache, and the cache does not hold its
//! bytes twice. That costs less CPU per block stored, but a block read back
//! always comes from the disk; through the page cache a recently stored
//! block is read back from memory while the machine has memory to spare
//! (measured: cold sequential reads 0.60 against 0.50 of a FUSE passthrough,
//! warm rereads 0.76 against 1.06; docs/PERFORMANCE.md). Off by default.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use lru::LruCache;
use strata_common::aligned::{ALIGN, AlignedBuf, round_up};
use strata_common::{Result, StrataError};

use crate::BlockKey;

const LOCK_FILE: &str = "LOCK";
/// Names the volume whose blocks the directory holds (see [`DiskCache::open`]).
const IDENTITY_FILE: &str = "VOLUME";
/// Bytes before each slot's block (keeps blocks page-aligned in the file).
pub const SLOT_HEADER: u64 = 4096;
const MAGIC: u32 = 0x5354_4c32; // "STL2"
/// magic, partition, blob, block, length, block CRC, sequence, header CRC.
const HEADER_LEN: usize = 4 + 8 + 8 + 8 + 4 + 4 + 8 + 4;
/// A slot per this many bytes of capacity (at least a slot per block).
const CAPACITY_PER_SLOT: u64 = 64 << 10;

/// The name of the cache file for blocks of `block_size` bytes.
pub fn cache_file_name(block_size: u64) -> String {
    format!("blocks-{block_size}.cache")
}

pub struct DiskCache {
    file: File,
    /// Opened with O_DIRECT (buffers, offsets and lengths page-aligned).
    direct: bool,
    path: PathBuf,
    block_size: u64,
    /// Slot i starts at i * slot_size.
    slot_size: u64,
    /// Bytes of blocks it may hold.
    capacity: u64,
    index: Mutex<Index>,
    /// Held shared while a slot is read, exclusively while it is written, so
    /// a reader never mixes a header with another block's bytes.
    slot_locks: Vec<RwLock<()>>,
    /// Slots found damaged (CRC, length) and dropped.
    pub corrupt: AtomicU64,
    /// Blocks dropped to make room.
    pub evicted: AtomicU64,
    /// Held for as long as the cache is open (an flock on `LOCK`).
    _lock: File,
}

#[derive(Clone, Copy)]
struct Slot {
    index: u32,
    len: u32,
}

struct Index {
    blocks: LruCache<BlockKey, Slot>,
    free: Vec<u32>,
    /// Bytes of each slot that may hold data (the rest is a hole).
    slot_lens: Vec<u32>,
    bytes: u64,
    next_sequence: u64,
}

struct Header {
    key: BlockKey,
    len: u32,
    crc: u32,
    sequence: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&MAGIC.to_le_bytes());
        put(&self.key.data_partition.to_le_bytes());
        put(&self.key.blob_id.to_le_bytes());
        put(&self.key.block.to_le_bytes());
        put(&self.len.to_le_bytes());
        put(&self.crc.to_le_bytes());
        put(&self.sequence.to_le_bytes());
        let crc = crc32fast::hash(&out[..HEADER_LEN - 4]);
        out[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The header in `bytes`, if it is one (never-written slots are zeros).
    fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes = bytes.get(..HEADER_LEN)?;
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if u32_at(0) != MAGIC || crc32fast::hash(&bytes[..HEADER_LEN - 4]) != u32_at(HEADER_LEN - 4) {
            return None;
        }
        Some(Header {
            key: BlockKey { data_partition: u64_at(4), blob_id: u64_at(12), block: u64_at(20) },
            len: u32_at(28),
            crc: u32_at(32),
            sequence: u64_at(36),
        })
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StrataError {
    StrataError::internal(format!("{what} {}: {e}", path.display()))
}

impl DiskCache {
    /// Opens (creating) the cache in `dir` for blocks of `block_size` bytes
    /// of what `identity` names (a client's volume, a cachenode's cluster),
    /// at most `capacity` bytes of them, indexing what an earlier run left if
    /// it cached for the same identity (blocks of another volume or cluster
    /// are dropped: their keys may name other bytes here); `direct`: with
    /// O_DIRECT (where the file system allows it).
    pub fn open(dir: &Path, identity: &str, block_size: u64, capacity: u64, direct: bool) -> Result<DiskCache> {
        if block_size == 0 || block_size > u32::MAX as u64 {
            return Err(StrataError::invalid(format!("a disk cache block of {block_size} bytes")));
        }
        fs::create_dir_all(dir).map_err(|e| io_error("creating the cache directory", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(|e| io_error("creating", &lock_path, e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StrataError::invalid(format!(
                "the cache directory {} is in use by another mount (give each mount its own --cache-dir)",
                dir.display()
            )));
        }
        let name = cache_file_name(block_size);
        remove_other_layouts(dir, &name);
        claim_for(dir, identity)?;
        let path = dir.join(&name);
        let open = |flags: i32| {
            OpenOptions::new().read(true).write(true).create(true).truncate(false).custom_flags(flags).open(&path)
        };
        let direct_file =
            if direct && block_size.is_multiple_of(ALIGN as u64) { open(libc::O_DIRECT).ok() } else { None };
        let direct = direct_file.is_some();
        let file = match direct_file {
            Some(file) => file,
            // tmpfs and a few others refuse O_DIRECT: go through the page cache there.
            None => open(0).map_err(|e| io_error("opening", &path, e))?,
        };
        let slot_size = SLOT_HEADER + block_size;
        let slots = (capacity / CAPACITY_PER_SLOT).max(capacity / block_size).max(1);
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        // Slots past a smaller capacity than last time are given back.
        let in_use = u64::from(slots) * slot_size;
        let len = file.metadata().map_err(|e| io_error("reading the size of", &path, e))?.len();
        if len > in_use {
            file.set_len(in_use).map_err(|e| io_error("shrinking", &path, e))?;
        }
        let cache = DiskCache {
            file,
            direct,
            path,
            block_size,
            slot_size,
            capacity,
            index: Mutex::new(Index {
                blocks: LruCache::unbounded(),
                free: Vec::new(),
                slot_lens: vec![0; slots as usize],
                bytes: 0,
                next_sequence: 1,
            }),
            slot_locks: (0..slots).map(|_| RwLock::new(())).collect(),
            corrupt: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            _lock: lock,
        };
        cache.load(slots.min(len.div_ceil(slot_size) as u32), len.min(in_use))?;
        Ok(cache)
    }

    /// Indexes the blocks in the first `written` slots of the `file_len`
    /// bytes of the file, least recently written first (so they are dropped
    /// first); every other slot is free.
    fn load(&self, written: u32, file_len: u64) -> Result<()> {
        let mut found: Vec<(u64, BlockKey, Slot)> = Vec::new();
        let mut free: Vec<u32> = Vec::new();
        let mut lens = vec![0u32; self.slot_locks.len()];
        let mut page = AlignedBuf::new(ALIGN);
        for slot in 0..written {
            let read = self.read_at_least(&mut [page.padded_mut()], u64::from(slot) * self.slot_size, HEADER_LEN);
            match read.ok().and_then(|()| Header::decode(page.as_slice())) {
                Some(h)
                    if u64::from(h.len) <= self.block_size
                        && u64::from(slot) * self.slot_size + SLOT_HEADER + u64::from(h.len) <= file_len =>
                {
                    lens[slot as usize] = h.len;
                    found.push((h.sequence, h.key, Slot { index: slot, len: h.len }))
                }
                _ => {
                    // Unknown contents: the next block written here punches the rest.
                    lens[slot as usize] = self.block_size as u32;
                    free.push(slot)
                }
            }
        }
        found.sort_by_key(|(sequence, _, _)| *sequence);
        let mut index = self.index.lock().unwrap();
        index.next_sequence = found.last().map_or(1, |(sequence, _, _)| sequence + 1);
        for (_, key, slot) in found {
            index.bytes += u64::from(slot.len);
            if let Some(old) = index.blocks.put(key, slot) {
                // The same block twice (an interrupted replacement): keep the later.
                index.bytes -= u64::from(old.len);
                free.push(old.index);
            }
        }
        // Slots never written yet come after the ones found free, taken in order.
        free.extend(written..self.slot_locks.len() as u32);
        free.reverse();
        index.free = free;
        index.slot_lens = lens;
        // A smaller capacity than last time: the least recent go.
        while index.bytes > self.capacity {
            let Some((_, old)) = index.blocks.pop_lru() else { break };
            index.bytes -= u64::from(old.len);
            index.free.push(old.index);
        }
        Ok(())
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.index.lock().unwrap().blocks.contains(key)
    }

    fn forget(&self, key: &BlockKey, slot: u32) {
        let mut index = self.index.lock().unwrap();
        if index.blocks.peek(key).is_some_and(|s| s.index == slot) {
            let dropped = index.blocks.pop(key).expect("just seen");
            index.bytes -= u64::from(dropped.len);
            index.free.push(slot);
        }
    }

    /// The block, if cached and intact. Blocking: call from a blocking thread.
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.get_with_crc(key).map(|(block, _)| block)
    }

    /// [`DiskCache::get`] with the block's CRC32 (checked against its bytes).
    pub fn get_with_crc(&self, key: &BlockKey) -> Option<(Bytes, u32)> {
        // Looked up in the index first (which also marks it recently used).
        let slot = *self.index.lock().unwrap().blocks.get(key)?;
        let offset = u64::from(slot.index) * self.slot_size;
        let _reading = self.slot_locks[slot.index as usize].read().unwrap();
        let wanted = SLOT_HEADER as usize + slot.len as usize;
        // Header and block in buffers of their own: a block's buffer is the
        // size of one received from a datanode, so the two reuse each other's.
        let mut page = AlignedBuf::for_overwrite(SLOT_HEADER as usize);
        let mut buffer = AlignedBuf::for_overwrite(slot.len as usize);
        if let Err(e) = self.read_at_least(&mut [page.padded_mut(), buffer.padded_mut()], offset, wanted) {
            tracing::warn!(path = %self.path.display(), slot = slot.index, error = %e, "reading a cached block failed");
            self.forget(key, slot.index);
            return None;
        }
        let header = Header::decode(page.as_slice());
        // Rewritten for another block since the index was read: a plain miss.
        if header.as_ref().is_some_and(|h| h.key != *key) {
            return None;
        }
        let block = Bytes::from_owner(buffer);
        match header {
            Some(h) if h.len == slot.len && crc32fast::hash(&block) == h.crc => Some((block, h.crc)),
            _ => {
                tracing::warn!(path = %self.path.display(), slot = slot.index, "a cached block failed its checksum; dropped");
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                self.forget(key, slot.index);
                None
            }
        }
    }

    /// Stores a block in a free slot, or in the least recently used one's;
    /// `crc` is the block's CRC32 if the caller has it already.
    /// Blocking: call from a blocking thread.
    pub fn insert(&self, key: BlockKey, block: &[u8], crc: Option<u32>) -> Result<()> {
        if block.len() as u64 > self.block_size {
            return Err(StrataError::invalid(format!(
                "a {}-byte block in a disk cache of {}-byte blocks",
                block.len(),
                self.block_size
            )));
        }
        let len = block.len() as u64;
        if len > self.capacity {
            return Ok(());
        }
        let (slot, sequence, earlier_len) = {
            let mut index = self.index.lock().unwrap();
            if index.blocks.contains(&key) {
                return Ok(());
            }
            // Room in bytes and a slot: the least recently used blocks go.
            while index.bytes + len > self.capacity || index.free.is_empty() {
                let Some((_, old)) = index.blocks.pop_lru() else { break };
                index.bytes -= u64::from(old.len);
                index.free.push(old.index);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            let Some(slot) = index.free.pop() else { return Ok(()) };
            index.next_sequence += 1;
            (slot, index.next_sequence - 1, index.slot_lens[slot as usize])
        };
        let header =
            Header { key, len: block.len() as u32, crc: crc.unwrap_or_else(|| crc32fast::hash(block)), sequence };
        let offset = u64::from(slot) * self.slot_size;
        let written = {
            let _writing = self.slot_locks[slot as usize].write().unwrap();
            self.write_slot(offset, &header, block).and_then(|()| {
                // What an earlier, longer block left past this one: a hole again.
                let (kept, earlier) = (round_up(block.len()) as u64, round_up(earlier_len as usize) as u64);
                if earlier > kept { self.punch(offset + SLOT_HEADER + kept, earlier - kept) } else { Ok(()) }
            })
        };
        let mut index = self.index.lock().unwrap();
        if let Err(e) = written {
            // Whatever the slot holds now, the next writer punches it.
            index.slot_lens[slot as usize] = self.block_size as u32;
            index.free.push(slot);
            return Err(io_error("writing a cached block to", &self.path, e));
        }
        index.slot_lens[slot as usize] = block.len() as u32;
        index.bytes += block.len() as u64;
        if let Some(old) = index.blocks.put(key, Slot { index: slot, len: block.len() as u32 }) {
            // Stored twice meanwhile: keep this copy.
            index.bytes -= u64::from(old.len);
            index.free.push(old.index);
        }
        Ok(())
    }

    /// Writes a slot: its header page, then the block, in one call. The
    /// whole header page is written (a partial page would have to be read
    /// first); with O_DIRECT a block not page-aligned in memory or in length
    /// (a blob's last) is copied into an aligned buffer first.
    fn write_slot(&self, offset: u64, header: &Header, block: &[u8]) -> std::io::Result<()> {
        let mut page = AlignedBuf::new(SLOT_HEADER as usize);
        page.as_mut_slice()[..HEADER_LEN].copy_from_slice(&header.encode());
        let aligned = (block.as_ptr() as usize).is_multiple_of(ALIGN) && block.len().is_multiple_of(ALIGN);
        let copy;
        let data = if self.direct && !aligned {
            let mut buffer = AlignedBuf::new(block.len());
            buffer.as_mut_slice().copy_from_slice(block);
            copy = buffer;
            copy.padded()
        } else {
            block
        };
        let parts = [
            libc::iovec { iov_base: page.as_slice().as_ptr() as *mut _, iov_len: page.len() },
            libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() },
        ];
        let total = page.len() + data.len();
        // SAFETY: both iovecs point at live buffers of the lengths given.
        let n = unsafe { libc::pwritev(self.file.as_raw_fd(), parts.as_ptr(), 2, offset as libc::off_t) };
        match n {
            n if n < 0 => Err(std::io::Error::last_os_error()),
            n if n as usize != total => Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("wrote {n} of {total} bytes of a cache slot"),
            )),
            _ => Ok(()),
        }
    }

    /// Deallocates [offset, offset + len) of the file (it reads as zeros).
    fn punch(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a descriptor this cache owns.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Reads from `offset` into `parts` one after the other (for O_DIRECT,
    /// whole padded allocations); at least `needed` bytes must come (the
    /// file may end within the last part's padding).
    fn read_at_least(&self, parts: &mut [&mut [u8]], offset: u64, needed: usize) -> std::io::Result<()> {
        let mut done = 0;
        while done < needed {
            // What is left of the parts past the `done` bytes read so far.
            let mut skip = done;
            let mut left = Vec::with_capacity(parts.len());
            for part in parts.iter_mut() {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let rest = &mut part[skip..];
                left.push(libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() });
                skip = 0;
            }
            if left.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            // SAFETY: every iovec points into a live, uniquely borrowed part of its length.
            let n = unsafe {
                libc::preadv(self.file.as_raw_fd(), left.as_ptr(), left.len() as i32, (offset + done as u64) as i64)
            };
            match n {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n if n > 0 => done += n as usize,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// The block an insert of `len` bytes would drop first, if it would drop any.
    pub fn victim_for(&self, len: u64) -> Option<BlockKey> {
        let index = self.index.lock().unwrap();
        if index.bytes + len <= self.capacity && !index.free.is_empty() {
            return None;
        }
        index.blocks.peek_lru().map(|(key, _)| *key)
    }

    /// (blocks, bytes) held.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.index.lock().unwrap();
        (index.blocks.len() as u64, index.bytes)
    }

    /// Where `key`'s bytes are in the cache file, if cached (for tests that damage them).
    pub fn block_offset(&self, key: &BlockKey) -> Option<u64> {
        let slot = *self.index.lock().unwrap().blocks.peek(key)?;
        Some(u64::from(slot.index) * self.slot_size + SLOT_HEADER)
    }
}

/// Removes what other block sizes and earlier layouts (a file per block in
/// `b<size>/` directories) left in `dir`: unusable here, and taking space.
/// Makes `dir` the cache of the volume `identity`: if it held another's
/// blocks (or blocks of unknown origin), they go first.
fn claim_for(dir: &Path, identity: &str) -> Result<()> {
    let path = dir.join(IDENTITY_FILE);
    if fs::read(&path).is_ok_and(|held| held == identity.as_bytes()) {
        return Ok(());
    }
    remove_other_layouts(dir, "");
    let temporary = dir.join(format!("{IDENTITY_FILE}.tmp"));
    fs::write(&temporary, identity).map_err(|e| io_error("writing", &temporary, e))?;
    fs::rename(&temporary, &path).map_err(|e| io_error("renaming", &temporary, e))?;
    tracing::info!(dir = %dir.display(), identity, "disk cache claimed for a volume; blocks of any other dropped");
    Ok(())
}

fn remove_other_layouts(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let old_directory =
            name.strip_prefix('b').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let other_file = name.starts_with("blocks-") && name.ends_with(".cache") && name != keep;
        let removed = if old_directory && path.is_dir() {
            fs::remove_dir_all(&path)
        } else if other_file {
            fs::remove_file(&path)
        } else {
            continue;
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "removing an unusable cache layout failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn key(blob_id: u64, block: u64) -> BlockKey {
        BlockKey { data_partition: 7, blob_id, block }
    }

    fn flip_byte(dir: &Path, block_size: u64, offset: u64) {
        let file = OpenOptions::new().read(true).write(true).open(dir.join(cache_file_name(block_size))).unwrap();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, offset).unwrap();
        byte[0] ^= 0xff;
        file.write_all_at(&byte, offset).unwrap();
    }

    #[test]
    fn blocks_of_another_volume_or_cluster_are_dropped_not_served() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = DiskCache::open(dir.path(), "volume a id 1 created 5", 1024, 10_000, false).unwrap();
            cache.insert(key(1, 0), &[1; 1000], None).unwrap();
        }
        {
            let cache = DiskCache::open(dir.path(), "volume a id 1 created 5", 1024, 10_000, false).unwrap();
            assert_eq!(cache.get(&key(1, 0)).unwrap(), Bytes::from(vec![1; 1000]), "the same volume keeps its blocks");
        }
        // A new cluster: the same name and id, blob 1 again, other bytes.
        let cache = DiskCache::open(dir.path(), "volume a id 1 created 9", 1024, 10_000, false).unwrap();
        assert_eq!(cache.usage(), (0, 0));
        assert!(cache.get(&key(1, 0)).is_none(), "a block cached for another volume is never served");
    }

    #[test]
    fn blocks_survive_a_restart_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = DiskCache::open(dir.path(), "v", 1024, 10_000, false).unwrap();
            cache.insert(key(1, 0), &[1; 1000], None).unwrap();
            cache.insert(key(1, 1), &[2; 500], None).unwrap();
            assert!(
                DiskCache::open(dir.path(), "v", 1024, 10_000, false).is_err(),
                "a second process must not share the directory"
            );
        }
        let cache = DiskCache::open(dir.path(), "v", 1024, 10_000, false).unwrap();
        assert_eq!(cache.usage(), (2, 1500));
        assert_eq!(cache.get(&key(1, 1)).unwrap(), Bytes::from(vec![2; 500]));
        // Flip a byte of the first block: the read drops it.
        let offset = cache.block_offset(&key(1, 0)).unwrap();
        flip_byte(dir.path(), 1024, offset + 10);
        assert!(cache.get(&key(1, 0)).is_none());
        assert_eq!(cache.corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(cache.usage(), (1, 500));
        // Its slot is reused.
        cache.insert(key(2, 0), &[3; 1024], None).unwrap();
        assert_eq!(cache.get(&key(2, 0)).unwrap(), Bytes::from(vec![3; 1024]));
        assert_eq!(cache.usage(), (2, 1524));
    }

    #[test]
    fn page_sized_blocks_round_trip_aligned_or_not() {
        round_trip(false);
        round_trip(true);
    }

    fn round_trip(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut aligned = AlignedBuf::new(8192);
        aligned.as_mut_slice().iter_mut().enumerate().for_each(|(i, b)| *b = (i % 253) as u8);
        let short: Vec<u8> = (0..5000).map(|i| (i % 7) as u8).collect();
        {
            let cache = DiskCache::open(dir.path(), "v", 8192, 4 * 8192, direct).unwrap();
            cache.insert(key(1, 0), aligned.as_slice(), None).unwrap();
            cache.insert(key(1, 1), &short[1..], None).unwrap();
            assert_eq!(cache.get(&key(1, 0)).unwrap(), aligned.as_slice());
        }
        let cache = DiskCache::open(dir.path(), "v", 8192, 4 * 8192, direct).unwrap();
        assert_eq!(cache.usage(), (2, 8192 + 4999));
        assert_eq!(cache.get(&key(1, 0)).unwrap(), aligned.as_slice());
        assert_eq!(cache.get(&key(1, 1)).unwrap(), &short[1..]);
        let offset = cache.block_offset(&key(1, 1)).unwrap();
        flip_byte(dir.path(), 8192, offset + 4998);
        assert!(cache.get(&key(1, 1)).is_none(), "damage in the last byte is found");
        assert_eq!(cache.corrupt.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn small_blocks_use_the_capacity_in_bytes_and_the_disk_sparsely() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let block = 1 << 20;
        let cache = DiskCache::open(dir.path(), "v", block, 2 * block, false).unwrap();
        // Twenty 100 KiB blocks fit in 2 MiB, though only two 1 MiB ones would.
        for blob in 0..20 {
            cache.insert(key(blob, 0), &vec![blob as u8; 100 << 10], None).unwrap();
        }
        assert_eq!(cache.usage(), (20, 20 * (100 << 10)));
        // A whole block makes room by dropping the least recently used.
        cache.insert(key(99, 0), &vec![9; block as usize], None).unwrap();
        let (blocks, bytes) = cache.usage();
        assert!(
            bytes <= 2 * block && blocks == 1 + (2 * block - block) / (100 << 10),
            "{blocks} blocks, {bytes} bytes"
        );
        assert!(cache.get(&key(0, 0)).is_none() && cache.get(&key(19, 0)).is_some());
        // Fill every slot with small blocks again: the big block's slot is punched.
        for blob in 100..140 {
            cache.insert(key(blob, 0), &vec![1; 50 << 10], None).unwrap();
        }
        let (blocks, bytes) = cache.usage();
        let allocated = fs::metadata(dir.path().join(cache_file_name(block))).unwrap().blocks() * 512;
        let budget = bytes + blocks * (SLOT_HEADER + ALIGN as u64);
        assert!(allocated <= budget, "{allocated} bytes on disk for {blocks} blocks of {bytes} bytes");
    }

    #[test]
    fn drops_least_recently_used_blocks_past_capacity_and_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = DiskCache::open(dir.path(), "v", 1000, 2000, false).unwrap();
            for blob in 1..=3 {
                cache.insert(key(blob, 0), &[blob as u8; 1000], None).unwrap();
            }
            assert_eq!(cache.usage(), (2, 2000));
            assert!(cache.get(&key(1, 0)).is_none());
            assert_eq!(cache.get(&key(3, 0)).unwrap()[0], 3);
            // Written in the order 2, 3: after a restart 2 is still the older.
        }
        let cache = DiskCache::open(dir.path(), "v", 1000, 2000, false).unwrap();
        assert_eq!(cache.usage(), (2, 2000));
        cache.insert(key(4, 0), &[4; 1000], None).unwrap();
        assert!(cache.get(&key(2, 0)).is_none());
        assert_eq!(cache.get(&key(3, 0)).unwrap()[0], 3);
        assert_eq!(cache.get(&key(4, 0)).unwrap()[0], 4);
        drop(cache);
        // A smaller capacity keeps what fits in its slots; another block size starts empty.
        let cache = DiskCache::open(dir.path(), "v", 1000, 1000, false).unwrap();
        assert_eq!(cache.usage().0, 1);
        drop(cache);
        let cache = DiskCache::open(dir.path(), "v", 512, 2048, false).unwrap();
        assert_eq!(cache.usage(), (0, 0));
        assert!(!dir.path().join(cache_file_name(1000)).exists());
        assert!(cache.insert(key(5, 0), &[5; 600], None).is_err(), "larger than a block");
    }
}
