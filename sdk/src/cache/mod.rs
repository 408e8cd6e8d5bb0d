//! The client's block caches: L1 in memory and L2 on a local disk, in front
//! of the datanodes. Blobs never change once written, so a block is keyed by
//! (data partition, blob id, block index) and can never be stale: a file
//! overwritten elsewhere points at other blobs. A block is the unit fetched:
//! a read that misses loads the whole block (so random reads bring in their
//! neighbourhood), concurrent misses of one block share one fetch, and
//! read-ahead ([`BlockCache::prefetch`]) loads blocks in the background.

mod telemetry;
pub mod tier;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data::CacheBlockRequest;
use strata_proto::meta::BlobRef;
use tokio::sync::{OnceCell, Semaphore};

use crate::data::DataClient;
pub use strata_blockcache::{BlockKey, DiskCache, MemCache, disk};
pub use tier::{SharedTier, TierReport};

/// Default size of a cached block.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
/// What a random read fetches from the datanodes is rounded out to this (a page).
pub const RANDOM_READ_ALIGN: u64 = 4096;
/// A reader waits this long for a load of the same block by someone else,
/// then loads it itself (every step of a load has its own, shorter timeout).
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Blocks being read ahead at once, per mount.
const PREFETCH_IN_FLIGHT: usize = 16;
/// Blocks waiting to be written to the disk cache at most; past that, a
/// block loaded while memory caching is on is not written (readers never
/// wait for the disk level, and a stream faster than the disk cache's writes
/// does not queue up memory).
const DISK_WRITES_PENDING: usize = 32;

thread_local! {
    /// Set while [`reading_in_place`] runs on this thread.
    static IN_PLACE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with the disk level read on this thread rather than on a
/// blocking thread of the runtime. For callers on threads of their own that
/// may wait on the local disk (a FUSE session thread): a block read from the
/// page cache takes less time than handing it to another thread and back.
pub fn reading_in_place<T>(work: impl FnOnce() -> T) -> T {
    /// Restores the flag however `work` ends (a panic included).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_PLACE.set(self.0);
        }
    }
    let _restore = Restore(IN_PLACE.replace(true));
    work()
}

/// `bytes` if a read of `blob` returned the `expected` length.
fn exactly(bytes: Bytes, expected: u64, blob: &BlobRef) -> Result<Bytes> {
    if bytes.len() as u64 != expected {
        return Err(StrataError::internal(format!(
            "blob {} returned {} bytes for a {expected}-byte read",
            blob.blob_id,
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The cache levels of one client. A size of 0 turns a level off.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// L1: bytes of blocks kept in memory.
    pub mem_bytes: u64,
    /// L2: the directory holding cached blocks, and how many bytes it may hold.
    pub disk_dir: Option<PathBuf>,
    pub disk_bytes: u64,
    /// Bytes per block (the unit fetched, cached and checked).
    pub block_size: u64,
    /// L2 with O_DIRECT (see [`disk`]).
    pub disk_direct_io: bool,
    /// L3: ask the cluster's cachenodes for blocks missed here (see [`tier`]).
    pub shared_tier: bool,
}

#[derive(Default)]
struct LevelCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
}

impl LevelCounters {
    fn hit(&self, bytes: usize) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.hit_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn report(&self, enabled: bool, capacity: u64, (blocks, bytes): (u64, u64), evictions: u64) -> LevelReport {
        LevelReport {
            enabled,
            capacity,
            blocks,
            bytes,
            evictions,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            hit_bytes: self.hit_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One cache level in a [`CacheReport`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LevelReport {
    pub enabled: bool,
    /// Bytes it may hold.
    pub capacity: u64,
    /// Blocks and bytes it holds now.
    pub blocks: u64,
    pub bytes: u64,
    /// Block lookups answered here, and the bytes they returned.
    pub hits: u64,
    pub misses: u64,
    pub hit_bytes: u64,
    /// Blocks dropped to make room for others.
    #[serde(default)]
    pub evictions: u64,
}

/// What the caches of a client did (`strata cache stats`, `strata bench`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheReport {
    pub block_size: u64,
    pub memory: LevelReport,
    pub disk: LevelReport,
    /// L3: the cluster's cachenodes.
    #[serde(default)]
    pub shared: TierReport,
    /// Blocks loaded from the datanodes, and bytes read from them in all
    /// (including reads that bypass the caches).
    pub remote_blocks: u64,
    pub remote_bytes: u64,
    /// Blocks loaded by read-ahead.
    pub prefetched_blocks: u64,
    /// Random reads that fetched only their own bytes from the datanodes
    /// (see [`BlockCache::read_random`]).
    #[serde(default)]
    pub random_reads: u64,
    /// Disk-cached blocks that failed their checksum (dropped, read again).
    pub corrupt_disk_blocks: u64,
    /// Blocks not written to the disk cache because its writes fell behind
    /// (they stay in memory; the disk level only misses them later).
    #[serde(default)]
    pub disk_writes_skipped: u64,
    /// Lookups, attributes and opens the mount answered from metadata
    /// delegations (no round trip to a metanode).
    #[serde(default)]
    pub delegation_hits: u64,
}

/// The extended attribute of a mount's root that reads as the JSON
/// [`CacheReport`] of the mount (not listed, read-only).
pub const CACHE_STATS_XATTR: &str = "user.strata.cache_stats";

/// The cache report of the Strata mount at `mountpoint` (read from its
/// root's [`CACHE_STATS_XATTR`]); an error if it is not a Strata mount.
pub fn read_report(mountpoint: &std::path::Path) -> Result<CacheReport> {
    let not_strata = |e: String| {
        StrataError::invalid(format!(
            "reading the cache statistics of {} (is it a Strata mount?): {e}",
            mountpoint.display()
        ))
    };
    let path =
        std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).map_err(|e| not_strata(e.to_string()))?;
    let name = std::ffi::CString::new(CACHE_STATS_XATTR).expect("no NUL in the name");
    let mut buffer = vec![0u8; 64 << 10];
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
    if n < 0 {
        return Err(not_strata(std::io::Error::last_os_error().to_string()));
    }
    buffer.truncate(n as usize);
    serde_json::from_slice(&buffer).map_err(|e| not_strata(e.to_string()))
}

pub struct BlockCache {
    data: Arc<DataClient>,
    block_size: u64,
    mem: Option<MemCache>,
    mem_capacity: u64,
    disk: Option<Arc<DiskCache>>,
    disk_capacity: u64,
    /// L3, once set (see [`BlockCache::set_shared_tier`]).
    tier: OnceLock<Arc<SharedTier>>,
    /// Blocks being fetched: later readers of the same block wait for it.
    loading: Mutex<HashMap<BlockKey, Arc<OnceCell<Bytes>>>>,
    prefetch_slots: Arc<Semaphore>,
    disk_write_slots: Arc<Semaphore>,
    disk_writes_skipped: AtomicU64,
    mem_counters: LevelCounters,
    disk_counters: LevelCounters,
    remote_blocks: AtomicU64,
    prefetched_blocks: AtomicU64,
    random_reads: AtomicU64,
}

impl BlockCache {
    /// The caches `config` asks for, over `data`. Opening the disk level
    /// indexes the blocks an earlier run left in its directory.
    pub fn new(data: Arc<DataClient>, config: &CacheConfig) -> Result<Arc<BlockCache>> {
        if config.block_size == 0 {
            return Err(StrataError::invalid("the cache block size must not be 0"));
        }
        let disk = match (&config.disk_dir, config.disk_bytes) {
            (Some(dir), bytes) if bytes > 0 => {
                let identity = data.identity();
                Some(Arc::new(DiskCache::open(dir, identity, config.block_size, bytes, config.disk_direct_io)?))
            }
            _ => None,
        };
        Ok(Arc::new(BlockCache {
            data,
            block_size: config.block_size,
            mem: (config.mem_bytes > 0).then(|| MemCache::new(config.mem_bytes)),
            mem_capacity: config.mem_bytes,
            disk_capacity: if disk.is_some() { config.disk_bytes } else { 0 },
            disk,
            tier: OnceLock::new(),
            loading: Mutex::new(HashMap::new()),
            prefetch_slots: Arc::new(Semaphore::new(PREFETCH_IN_FLIGHT)),
            disk_write_slots: Arc::new(Semaphore::new(DISK_WRITES_PENDING)),
            disk_writes_skipped: AtomicU64::new(0),
            mem_counters: LevelCounters::default(),
            disk_counters: LevelCounters::default(),
            remote_blocks: AtomicU64::new(0),
            prefetched_blocks: AtomicU64::new(0),
            random_reads: AtomicU64::new(0),
        }))
    }

    /// Whether any level is on (if not, reads go straight to the datanodes
    /// for exactly the bytes asked). L3 counts while it has cachenodes.
    pub fn enabled(&self) -> bool {
        self.mem.is_some() || self.disk.is_some() || self.shared_nodes() > 0
    }

    /// Live cachenodes of the shared tier known now (0: no tier).
    pub fn shared_nodes(&self) -> usize {
        self.tier.get().map_or(0, |t| t.node_count())
    }

    /// Puts the shared tier (L3) behind the client's own levels: blocks they
    /// miss are asked of a cachenode before the datanodes.
    pub fn set_shared_tier(&self, tier: Arc<SharedTier>) {
        if self.tier.set(tier).is_err() {
            tracing::warn!("the shared cache tier was set twice; keeping the first");
        }
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The blocks of `blob` covering [offset, offset + length) of it.
    fn blocks(&self, blob: &BlobRef, offset: u64, length: u64) -> std::ops::Range<u64> {
        let end = offset.saturating_add(length).min(blob.blob_size);
        if end <= offset {
            return 0..0;
        }
        offset / self.block_size..end.div_ceil(self.block_size)
    }

    /// Bytes [offset, offset + length) of a blob, through the caches.
    pub async fn read(&self, blob: &BlobRef, offset: u64, length: u64) -> Result<Bytes> {
        if !self.enabled() {
            return self.data.read(blob, offset, length).await;
        }
        let range = self.blocks(blob, offset, length);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let base = range.start * self.block_size;
        let blocks = try_join_all(range.clone().map(|index| self.block(blob, index))).await?;
        // Every block but a blob's last is whole (checked when loaded; a
        // block cached for other bytes would not be, and is not sliced).
        for (index, block) in range.zip(&blocks) {
            let expected = self.block_size.min(blob.blob_size.saturating_sub(index * self.block_size));
            if block.len() as u64 != expected {
                return Err(StrataError::new(
                    ErrorCode::Corrupted,
                    format!("block {index} of blob {} has {} bytes, not {expected}", blob.blob_id, block.len()),
                ));
            }
        }
        let start = (offset - base) as usize;
        let end = (offset.saturating_add(length).min(blob.blob_size) - base) as usize;
        if let [block] = blocks.as_slice() {
            return Ok(block.slice(start..end));
        }
        let mut out = BytesMut::with_capacity(end);
        for block in &blocks {
            out.extend_from_slice(block);
        }
        Ok(out.freeze().slice(start..end))
    }

    /// Bytes [offset, offset + length) of a blob for a random read: from the
    /// caches when they hold every block covering it, else only those bytes
    /// (rounded out to [`RANDOM_READ_ALIGN`]) from the datanodes, so the
    /// read waits for its own bytes, not a whole block's (the datanode
    /// still checks the CRCs of what it reads). The blocks are loaded whole
    /// in the background as read-ahead is, when its slots are free, so a
    /// file read at random again comes from the caches.
    pub async fn read_random(self: &Arc<Self>, blob: &BlobRef, offset: u64, length: u64) -> Result<Bytes> {
        let held = |index: u64| {
            let key = BlockKey::of(blob, index);
            self.mem.as_ref().is_some_and(|m| m.contains(&key)) || self.disk.as_ref().is_some_and(|d| d.contains(&key))
        };
        if self.enabled() && self.blocks(blob, offset, length).all(held) {
            return self.read(blob, offset, length).await;
        }
        let end = offset.saturating_add(length).min(blob.blob_size);
        if end <= offset {
            return Ok(Bytes::new());
        }
        let start = offset - offset % RANDOM_READ_ALIGN;
        let stop = end.div_ceil(RANDOM_READ_ALIGN).saturating_mul(RANDOM_READ_ALIGN).min(blob.blob_size);
        self.prefetch(blob, offset, length);
        let bytes = exactly(self.data.read(blob, start, stop - start).await?, stop - start, blob)?;
        self.random_reads.fetch_add(1, Ordering::Relaxed);
        Ok(bytes.slice((offset - start) as usize..(end - start) as usize))
    }

    /// Starts loading the blocks of [offset, offset + length) of a blob that
    /// are not in memory yet, without waiting for them. Best effort: when the
    /// read-ahead slots are busy the rest is left for the reads themselves.
    pub fn prefetch(self: &Arc<Self>, blob: &BlobRef, offset: u64, length: u64) {
        if !self.enabled() {
            return;
        }
        for index in self.blocks(blob, offset, length) {
            let key = BlockKey::of(blob, index);
            let cached = match (&self.mem, &self.disk) {
                (Some(mem), _) => mem.contains(&key),
                (None, Some(disk)) => disk.contains(&key),
                (None, None) => true,
            };
            if cached || self.loading.lock().unwrap().contains_key(&key) {
                continue;
            }
            let Ok(slot) = self.prefetch_slots.clone().try_acquire_owned() else { return };
            let cache = self.clone();
            let blob = *blob;
            self.prefetched_blocks.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Err(e) = cache.block(&blob, index).await {
                    tracing::debug!(blob_id = blob.blob_id, block = index, error = %e, "read-ahead failed");
                }
                drop(slot);
            });
        }
    }

    /// One block: from memory, else from disk, else from the datanodes
    /// (one fetch shared by everyone who asks meanwhile).
    async fn block(&self, blob: &BlobRef, index: u64) -> Result<Bytes> {
        let key = BlockKey::of(blob, index);
        if let Some(block) = self.in_memory(&key) {
            return Ok(block);
        }
        let cell = {
            let mut loading = self.loading.lock().unwrap();
            if !loading.contains_key(&key)
                && let Some(block) = self.in_memory(&key)
            {
                // A load that just ended: it put the block in memory before
                // dropping its cell, so this is no second load.
                return Ok(block);
            }
            loading.entry(key).or_default().clone()
        };
        if self.mem.is_some() {
            self.mem_counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        let shared = cell.get_or_try_init(|| self.load(blob, key));
        let loaded = match tokio::time::timeout(LOAD_WAIT, shared).await {
            Ok(loaded) => loaded.cloned(),
            Err(_) => {
                // Whoever loads it is stuck: load it here, apart from them.
                tracing::warn!(
                    blob_id = key.blob_id,
                    block = key.block,
                    "a shared block load is stuck; loading it again"
                );
                self.load(blob, key).await
            }
        };
        let mut loading = self.loading.lock().unwrap();
        if loading.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(&key);
        }
        loaded
    }

    /// The block from L1, counted as a hit.
    fn in_memory(&self, key: &BlockKey) -> Option<Bytes> {
        let block = self.mem.as_ref()?.get(key)?;
        self.mem_counters.hit(block.len());
        Some(block)
    }

    async fn load(&self, blob: &BlobRef, key: BlockKey) -> Result<Bytes> {
        if let Some(disk) = &self.disk {
            let from_disk = if IN_PLACE.get() {
                disk.get(&key)
            } else {
                let disk = disk.clone();
                tokio::task::spawn_blocking(move || disk.get(&key))
                    .await
                    .map_err(|e| StrataError::internal(format!("disk cache read task: {e}")))?
            };
            if let Some(block) = from_disk {
                self.disk_counters.hit(block.len());
                if let Some(mem) = &self.mem {
                    mem.insert(key, block.clone());
                }
                return Ok(block);
            }
            self.disk_counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        let offset = key.block * self.block_size;
        let length = self.block_size.min(blob.blob_size.saturating_sub(offset));
        let (block, crc) = match self.read_shared_tier(blob, key.block, length).await {
            Some((block, crc)) => (block, Some(crc)),
            None => {
                let (block, crc) = self.data.read_with_crc(blob, offset, length).await?;
                self.remote_blocks.fetch_add(1, Ordering::Relaxed);
                (exactly(block, length, blob)?, crc)
            }
        };
        if let Some(mem) = &self.mem {
            mem.insert(key, block.clone());
        }
        if let Some(disk) = &self.disk {
            self.store_on_disk(disk, key, &block, crc).await;
        }
        Ok(block)
    }

    /// Block `index` of `blob` from L3, if there is one and it gives it;
    /// `fill_only`: the cachenode keeps it and answers without its bytes.
    async fn ask_shared_tier(&self, blob: &BlobRef, index: u64, fill_only: bool) -> Option<(Bytes, u32)> {
        let tier = self.tier.get()?;
        let partition = self.data.partition(blob.data_partition).await.ok()?;
        let request = tier::request_for(blob, index, self.block_size, &partition, self.data.redundancy());
        tier.block(&CacheBlockRequest { fill_only, ..request }).await
    }

    /// Block `index` of `blob` (`length` bytes) from L3.
    async fn read_shared_tier(&self, blob: &BlobRef, index: u64, length: u64) -> Option<(Bytes, u32)> {
        let (block, crc) = self.ask_shared_tier(blob, index, false).await?;
        // A cachenode answering with another length is not trusted with this block.
        exactly(block, length, blob).ok().map(|block| (block, crc))
    }

    /// Loads block `index` of `blob` into L3 without bringing it here
    /// (warm-up: the cachenode reads it from the datanodes itself); whether
    /// the tier took it.
    pub async fn warm_shared_tier(&self, blob: &BlobRef, index: u64) -> bool {
        self.ask_shared_tier(blob, index, true).await.is_some()
    }

    /// Writes a loaded block to the disk level. With memory on the reader
    /// need not wait (the block is there), and when the disk writes fall
    /// behind the block is not written at all; without memory the next read
    /// of the block must find it on disk, so the reader waits.
    async fn store_on_disk(&self, disk: &Arc<DiskCache>, key: BlockKey, block: &Bytes, crc: Option<u32>) {
        let slot = if self.mem.is_some() {
            match self.disk_write_slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    self.disk_writes_skipped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        } else {
            match self.disk_write_slots.clone().acquire_owned().await {
                Ok(slot) => slot,
                Err(_) => return, // never closed
            }
        };
        let (disk, copy) = (disk.clone(), block.clone());
        let stored = tokio::task::spawn_blocking(move || {
            // A failed write only loses a cache entry.
            if let Err(e) = disk.insert(key, &copy, crc) {
                tracing::warn!(error = %e, "writing to the disk cache failed");
            }
            drop(slot);
        });
        if self.mem.is_none() {
            let _ = stored.await;
        }
    }

    pub fn report(&self) -> CacheReport {
        let mem_usage = self.mem.as_ref().map(MemCache::usage).unwrap_or_default();
        let disk_usage = self.disk.as_ref().map(|d| d.usage()).unwrap_or_default();
        let mem_evicted = self.mem.as_ref().map_or(0, |m| m.evicted.load(Ordering::Relaxed));
        let disk_evicted = self.disk.as_ref().map_or(0, |d| d.evicted.load(Ordering::Relaxed));
        CacheReport {
            block_size: self.block_size,
            memory: self.mem_counters.report(self.mem.is_some(), self.mem_capacity, mem_usage, mem_evicted),
            disk: self.disk_counters.report(self.disk.is_some(), self.disk_capacity, disk_usage, disk_evicted),
            shared: self.tier.get().map(|t| t.report()).unwrap_or_default(),
            remote_blocks: self.remote_blocks.load(Ordering::Relaxed),
            remote_bytes: self.data.stats.bytes_read.load(Ordering::Relaxed),
            prefetched_blocks: self.prefetched_blocks.load(Ordering::Relaxed),
            random_reads: self.random_reads.load(Ordering::Relaxed),
            corrupt_disk_blocks: self.disk.as_ref().map_or(0, |d| d.corrupt.load(Ordering::Relaxed)),
            disk_writes_skipped: self.disk_writes_skipped.load(Ordering::Relaxed),
            // The block cache does not know the namespace client: the mount fills it in.
            delegation_hits: 0,
        }
    }
}
