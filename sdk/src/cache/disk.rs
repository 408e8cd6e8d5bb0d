//! L2: blocks in files under a local cache directory, one file per block
//! (opened, read and closed on each access, so no descriptor stays open per
//! block). Each file ends with the CRC32 of its block, checked on every read;
//! a damaged or torn file is dropped and read again from the datanodes, so
//! writes need no fsync. The index (which blocks, their sizes, least recently
//! used first) lives in memory and is rebuilt from the directory when a mount
//! starts, so the cache outlives restarts. A lock file keeps two processes
//! from sharing one directory.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use lru::LruCache;
use strata_common::{Result, StrataError};

use super::BlockKey;

const LOCK_FILE: &str = "LOCK";
const CRC_LEN: usize = 4;

pub struct DiskCache {
    /// Where the blocks of this block size live (`DIR/b<size>`).
    root: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    /// Files found damaged (CRC, length) and dropped.
    pub corrupt: AtomicU64,
    /// Held for as long as the cache is open (an flock on `LOCK`).
    _lock: File,
}

struct Index {
    blocks: LruCache<BlockKey, u64>,
    bytes: u64,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StrataError {
    StrataError::internal(format!("{what} {}: {e}", path.display()))
}

fn parse_name(name: &str) -> Option<BlockKey> {
    let mut parts = name.split('-').map(|p| u64::from_str_radix(p, 16));
    let key =
        BlockKey { data_partition: parts.next()?.ok()?, blob_id: parts.next()?.ok()?, block: parts.next()?.ok()? };
    parts.next().is_none().then_some(key)
}

impl DiskCache {
    /// Opens (creating) the cache in `dir` for blocks of `block_size` bytes,
    /// indexing what an earlier run left there.
    pub fn open(dir: &Path, block_size: u64, capacity: u64) -> Result<DiskCache> {
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
        let root = dir.join(format!("b{block_size}"));
        fs::create_dir_all(&root).map_err(|e| io_error("creating", &root, e))?;
        let cache = DiskCache {
            root,
            capacity,
            index: Mutex::new(Index { blocks: LruCache::unbounded(), bytes: 0 }),
            corrupt: AtomicU64::new(0),
            _lock: lock,
        };
        cache.load()?;
        Ok(cache)
    }

    /// Indexes the block files found, oldest first (so they are dropped first).
    fn load(&self) -> Result<()> {
        let mut found: Vec<(SystemTime, BlockKey, u64)> = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(|e| io_error("listing", &self.root, e))? {
            let shard = shard.map_err(|e| io_error("listing", &self.root, e))?.path();
            let Ok(entries) = fs::read_dir(&shard) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry.metadata().ok();
                match (parse_name(&name), meta) {
                    (Some(key), Some(meta)) if meta.len() > CRC_LEN as u64 => {
                        let used = meta.accessed().or_else(|_| meta.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((used, key, meta.len() - CRC_LEN as u64));
                    }
                    // Unfinished writes of an earlier run, or stray files.
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|(used, _, _)| *used);
        for (_, key, size) in found {
            self.index_insert(key, size);
        }
        Ok(())
    }

    fn path(&self, key: &BlockKey) -> PathBuf {
        self.root
            .join(format!("{:02x}", key.blob_id & 0xff))
            .join(format!("{:x}-{:x}-{:x}", key.data_partition, key.blob_id, key.block))
    }

    /// Adds `key` to the index and removes the files of the blocks dropped to make room.
    fn index_insert(&self, key: BlockKey, size: u64) {
        let mut dropped = Vec::new();
        {
            let mut index = self.index.lock().unwrap();
            if let Some(old) = index.blocks.put(key, size) {
                index.bytes -= old;
            }
            index.bytes += size;
            while index.bytes > self.capacity {
                let Some((old_key, old_size)) = index.blocks.pop_lru() else { break };
                index.bytes -= old_size;
                dropped.push(old_key);
            }
        }
        for key in dropped {
            let _ = fs::remove_file(self.path(&key));
        }
    }

    fn forget(&self, key: &BlockKey) {
        let mut index = self.index.lock().unwrap();
        if let Some(size) = index.blocks.pop(key) {
            index.bytes -= size;
        }
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.index.lock().unwrap().blocks.contains(key)
    }

    /// The block, if cached and intact. Blocking: call from a blocking thread.
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        // Looked up in the index first (which also marks it recently used).
        self.index.lock().unwrap().blocks.get(key)?;
        let path = self.path(key);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "reading a cached block failed");
                }
                self.forget(key);
                return None;
            }
        };
        let intact = bytes.len() >= CRC_LEN && {
            let (block, crc) = bytes.split_at(bytes.len() - CRC_LEN);
            crc32fast::hash(block).to_le_bytes() == crc
        };
        if !intact {
            tracing::warn!(path = %path.display(), "a cached block failed its checksum; dropped");
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            self.forget(key);
            let _ = fs::remove_file(&path);
            return None;
        }
        bytes.truncate(bytes.len() - CRC_LEN);
        Some(Bytes::from(bytes))
    }

    /// Stores a block (written to a temporary file, then renamed into
    /// place). Blocking: call from a blocking thread.
    pub fn insert(&self, key: BlockKey, block: &[u8]) -> Result<()> {
        let size = block.len() as u64;
        if size > self.capacity {
            return Ok(());
        }
        let path = self.path(&key);
        let dir = path.parent().expect("a block path has a shard directory");
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(block)?;
            file.write_all(&crc32fast::hash(block).to_le_bytes())?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("writing the cached block", &path, e));
        }
        self.index_insert(key, size);
        Ok(())
    }

    /// (blocks, bytes) held.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.index.lock().unwrap();
        (index.blocks.len() as u64, index.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(blob_id: u64, block: u64) -> BlockKey {
        BlockKey { data_partition: 7, blob_id, block }
    }

    #[test]
    fn blocks_survive_a_restart_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = DiskCache::open(dir.path(), 1024, 10_000).unwrap();
            cache.insert(key(1, 0), &[1; 1000]).unwrap();
            cache.insert(key(1, 1), &[2; 500]).unwrap();
            assert!(
                DiskCache::open(dir.path(), 1024, 10_000).is_err(),
                "a second process must not share the directory"
            );
        }
        let cache = DiskCache::open(dir.path(), 1024, 10_000).unwrap();
        assert_eq!(cache.usage(), (2, 1500));
        assert_eq!(cache.get(&key(1, 1)).unwrap(), Bytes::from(vec![2; 500]));
        // Flip a byte of the first block: the read drops it.
        let path = cache.path(&key(1, 0));
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(cache.get(&key(1, 0)).is_none());
        assert_eq!(cache.corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(cache.usage(), (1, 500));
        assert!(!path.exists());
    }

    #[test]
    fn drops_least_recently_used_files_past_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1024, 2000).unwrap();
        for blob in 1..=3 {
            cache.insert(key(blob, 0), &[blob as u8; 1000]).unwrap();
        }
        assert_eq!(cache.usage(), (2, 2000));
        assert!(cache.get(&key(1, 0)).is_none());
        assert!(!cache.path(&key(1, 0)).exists());
        assert_eq!(cache.get(&key(3, 0)).unwrap()[0], 3);
    }
}
