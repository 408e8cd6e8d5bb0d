//! The cachenode's blocks: memory in front of a bounded local disk, filled
//! from the datanodes on a miss. Concurrent misses of one block share one
//! load, whoever asks. Once a level is full, [`Admission`] keeps blocks
//! asked for once (a scan) from pushing out blocks asked for often. Blocks
//! read from the disk are CRC checked (a damaged slot is dropped and the
//! block loaded again); the disk level is indexed again at start, so a
//! restart keeps what it held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_blockcache::{Admission, BlockKey, DiskCache, MemCache};
use strata_common::types::Redundancy;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data::{CacheBlockRequest, CacheSource};
use strata_proto::master as master_pb;
use strata_proto::meta::BlobRef;
use strata_rpc::blob_reader::BlobReader;
use strata_rpc::ec;
use tokio::sync::{OnceCell, Semaphore};

/// Blocks waiting to be written to the disk level at most; past that a
/// loaded block stays in memory only (a fill faster than the disk does not
/// queue up memory).
const DISK_WRITES_PENDING: usize = 64;

/// Where a cachenode's store keeps its blocks and how many.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub memory_bytes: u64,
    /// The disk level's directory and size (0: none).
    pub disk_dir: std::path::PathBuf,
    pub disk_bytes: u64,
    pub block_size: u64,
    /// What the disk level's blocks belong to (the cluster): blocks kept for
    /// another are dropped when it opens.
    pub identity: String,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    rejected: AtomicU64,
}

pub struct CacheStore {
    block_size: u64,
    memory_capacity: u64,
    disk_capacity: u64,
    mem: MemCache,
    disk: Option<Arc<DiskCache>>,
    admission: Admission,
    loading: Mutex<HashMap<BlockKey, Arc<Load>>>,
    reader: BlobReader,
    disk_write_slots: Arc<Semaphore>,
    counters: Counters,
}

/// A block being read from the datanodes (its bytes and CRC once read),
/// shared by everyone who asks meanwhile.
type Load = OnceCell<(Bytes, u32)>;

/// A block's request checked: what to read and from where.
struct Wanted {
    key: BlockKey,
    blob: BlobRef,
    offset: u64,
    length: u64,
    partition: master_pb::DataPartition,
    redundancy: Redundancy,
}

impl CacheStore {
    pub fn open(options: &StoreOptions) -> Result<Arc<CacheStore>> {
        if options.block_size == 0 || options.block_size > strata_rpc::framed::MAX_PAYLOAD {
            return Err(StrataError::invalid(format!("a cache block of {} bytes", options.block_size)));
        }
        let disk = if options.disk_bytes > 0 {
            let cache =
                DiskCache::open(&options.disk_dir, &options.identity, options.block_size, options.disk_bytes, false)?;
            Some(Arc::new(cache))
        } else {
            None
        };
        let blocks = (options.memory_bytes + options.disk_bytes) / options.block_size;
        Ok(Arc::new(CacheStore {
            block_size: options.block_size,
            memory_capacity: options.memory_bytes,
            disk_capacity: options.disk_bytes,
            mem: MemCache::new(options.memory_bytes),
            disk,
            admission: Admission::new(blocks),
            loading: Mutex::new(HashMap::new()),
            reader: BlobReader::default(),
            disk_write_slots: Arc::new(Semaphore::new(DISK_WRITES_PENDING)),
            counters: Counters::default(),
        }))
    }

    /// The block a request names, from memory, disk or the datanodes, with
    /// its CRC32 and where it came from.
    pub async fn block(&self, request: &CacheBlockRequest) -> Result<(Bytes, u32, CacheSource)> {
        let wanted = self.check(request)?;
        let key = wanted.key;
        self.admission.record(&key);
        if let Some(block) = self.mem.get(&key) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            let crc = crc32fast::hash(&block);
            return Ok((block, crc, CacheSource::Memory));
        }
        if let Some(disk) = &self.disk {
            let disk = disk.clone();
            let found = tokio::task::spawn_blocking(move || disk.get_with_crc(&key))
                .await
                .map_err(|e| StrataError::internal(format!("cache disk read task: {e}")))?;
            if let Some((block, crc)) = found {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                self.keep_in_memory(key, &block);
                return Ok((block, crc, CacheSource::Disk));
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let cell = self.loading.lock().unwrap().entry(key).or_default().clone();
        let loaded = cell.get_or_try_init(|| self.load(&wanted)).await.cloned();
        {
            let mut loading = self.loading.lock().unwrap();
            if loading.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                loading.remove(&key);
            }
        }
        let (block, crc) = loaded?;
        Ok((block, crc, CacheSource::Datanodes))
    }

    /// Waits for the disk writes under way, so that once the store is
    /// dropped its disk level is closed (and can be opened again).
    pub async fn flush(&self) {
        let all = self.disk_write_slots.acquire_many(DISK_WRITES_PENDING as u32).await;
        drop(all);
    }

    /// Reads the block from its partition and keeps it where admitted.
    async fn load(&self, wanted: &Wanted) -> Result<(Bytes, u32)> {
        let (block, crc) = self
            .reader
            .read(&wanted.partition, wanted.redundancy, &wanted.blob, wanted.offset, wanted.length, false)
            .await?;
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        if block.len() as u64 != wanted.length {
            return Err(StrataError::internal(format!(
                "blob {} returned {} bytes for a {}-byte block",
                wanted.blob.blob_id,
                block.len(),
                wanted.length
            )));
        }
        let crc = crc.unwrap_or_else(|| crc32fast::hash(&block));
        self.keep_in_memory(wanted.key, &block);
        if let Some(disk) = &self.disk {
            if self.admission.admits(&wanted.key, disk.victim_for(block.len() as u64).as_ref()) {
                let Ok(slot) = self.disk_write_slots.clone().try_acquire_owned() else {
                    tracing::debug!(
                        blob_id = wanted.blob.blob_id,
                        "cache disk writes behind; block kept in memory only"
                    );
                    return Ok((block, crc));
                };
                let (disk, key, copy) = (disk.clone(), wanted.key, block.clone());
                // The reader need not wait for the disk: the block is in memory.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = disk.insert(key, &copy, Some(crc)) {
                        tracing::warn!(error = %e, "writing a block to the cache disk failed");
                    }
                    // The disk level before the slot: see [`CacheStore::flush`].
                    drop(disk);
                    drop(slot);
                });
            } else {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok((block, crc))
    }

    fn keep_in_memory(&self, key: BlockKey, block: &Bytes) {
        if self.admission.admits(&key, self.mem.victim_for(block.len() as u64).as_ref()) {
            self.mem.insert(key, block.clone());
        } else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Validates a request from the wire into what to read.
    fn check(&self, request: &CacheBlockRequest) -> Result<Wanted> {
        if request.block_size != self.block_size {
            return Err(StrataError::invalid(format!(
                "blocks of {} bytes asked of a cachenode keeping {}-byte blocks",
                request.block_size, self.block_size
            )));
        }
        let offset =
            request.block.checked_mul(self.block_size).filter(|offset| *offset < request.blob_size).ok_or_else(
                || {
                    StrataError::new(
                        ErrorCode::InvalidRange,
                        format!("block {} is past the end of a {}-byte blob", request.block, request.blob_size),
                    )
                },
            )?;
        let redundancy = match (request.codec, request.data_shards, request.parity_shards) {
            (ec::CODEC_REPLICA, _, 0) => Redundancy::Replicated { replicas: request.members.len() as u32 },
            (ec::CODEC_RS_GF8, k, m) if k > 0 && m > 0 => Redundancy::ErasureCoded { data: k, parity: m },
            (codec, k, m) => {
                return Err(StrataError::invalid(format!("codec {codec} with {k}+{m} shards")));
            }
        };
        let width = redundancy.validate()?.width() as usize;
        if request.members.len() != width {
            return Err(StrataError::invalid(format!("{} members for a partition of {width}", request.members.len())));
        }
        if let Some(bad) = request.rebuilding.iter().find(|i| **i as usize >= width) {
            return Err(StrataError::invalid(format!("member {bad} of {width} marked rebuilding")));
        }
        // Members are named by their position: ids 1..=width.
        let members = request
            .members
            .iter()
            .enumerate()
            .map(|(i, address)| master_pb::PartitionMember { node_id: i as u64 + 1, address: address.clone() })
            .collect();
        let partition = master_pb::DataPartition {
            id: request.partition_id,
            members,
            rebuilding: request.rebuilding.iter().map(|i| u64::from(*i) + 1).collect(),
            ..Default::default()
        };
        let blob = BlobRef {
            data_partition: request.partition_id,
            blob_id: request.blob_id,
            offset: 0,
            blob_size: request.blob_size,
            codec: request.codec,
        };
        let key = BlockKey::of(&blob, request.block);
        let length = self.block_size.min(request.blob_size - offset);
        Ok(Wanted { key, blob, offset, length, partition, redundancy })
    }

    pub fn report(&self) -> master_pb::CacheTierReport {
        let (mem_blocks, memory_bytes) = self.mem.usage();
        let (disk_blocks, disk_bytes) = self.disk.as_ref().map(|d| d.usage()).unwrap_or_default();
        let evictions = self.mem.evicted.load(Ordering::Relaxed)
            + self.disk.as_ref().map_or(0, |d| d.evicted.load(Ordering::Relaxed));
        master_pb::CacheTierReport {
            memory_capacity: self.memory_capacity,
            memory_bytes,
            disk_capacity: self.disk_capacity,
            disk_bytes,
            blocks: mem_blocks.max(disk_blocks),
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions,
            rejected: self.counters.rejected.load(Ordering::Relaxed),
            corrupt_blocks: self.disk.as_ref().map_or(0, |d| d.corrupt.load(Ordering::Relaxed)),
            loads: self.counters.loads.load(Ordering::Relaxed),
        }
    }

    /// Where `key`'s bytes are in the disk level's file (for tests that damage them).
    pub fn disk_offset(&self, key: &BlockKey) -> Option<u64> {
        self.disk.as_ref()?.block_offset(key)
    }

    /// Drops `key` from memory (tests: the next read goes to the disk level).
    pub fn forget_in_memory(&self, key: &BlockKey) {
        self.mem.remove(key);
    }
}
