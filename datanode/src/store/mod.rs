//! The datanode's blob store: immutable blobs appended to segment files (many
//! blobs per file, so a small blob costs one seek to read), a RocksDB index
//! from (partition, blob) to location and block CRCs, group-committed writes
//! that return only after `fdatasync` and a synced index batch, ranged reads
//! that check the CRC of every block they touch, deletes that leave garbage
//! for compaction to reclaim, and a rate-limited scrub.

mod appender;
mod compact;
pub mod files;
mod health;
pub mod keys;
pub mod record;
mod scrub;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use rocksdb::DB;
use strata_common::aligned::AlignedBuf;
use strata_common::config::{RaftConfig, StoreConfig};
use strata_common::{ErrorCode, Result, StrataError};
use tokio::sync::oneshot;

use appender::{Appender, Job};
use files::FileCache;
use record::{BLOCK_SIZE, Header, Location, MAX_BLOB, PieceMeta, block_crcs};

/// Read handles kept open at most (see [`FileCache`]).
const OPEN_SEGMENTS: usize = 1024;

/// Counters shown by `StoreStats`.
#[derive(Default)]
pub struct Stats {
    pub blobs: AtomicU64,
    pub corrupt_blocks: AtomicU64,
    pub compactions: AtomicU64,
    pub scrubbed_bytes: AtomicU64,
    pub repaired_blobs: AtomicU64,
}

/// What the appenders, readers and background threads share.
pub struct Shared {
    pub db: Arc<DB>,
    pub disks: Vec<PathBuf>,
    pub files: FileCache,
    pub stats: Stats,
    pub health: health::DiskHealth,
    stop: AtomicBool,
}

/// Totals for `StoreStats` and heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreTotals {
    pub blobs: u64,
    pub live_bytes: u64,
    pub segment_bytes: u64,
    pub segments: u64,
    pub corrupt_blocks: u64,
    pub compactions: u64,
    pub scrubbed_bytes: u64,
    /// Blobs found corrupt and not rewritten yet.
    pub bad_blobs: u64,
    pub repaired_blobs: u64,
}

pub struct Store {
    shared: Arc<Shared>,
    appenders: Vec<mpsc::Sender<Job>>,
    /// Disk of each partition seen so far (persisted under `p`).
    partitions: Mutex<HashMap<u64, usize>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A range of a stored blob as it lies in its segment file (see
/// [`Store::locate_whole_blocks`]). The open file stays readable even if a
/// compaction removes the segment meanwhile.
pub struct FileRange {
    pub file: Arc<std::fs::File>,
    pub file_offset: u64,
    pub length: u64,
    /// CRC32 of the range, from the stored block CRCs.
    pub crc32: u32,
    pub location: Location,
}

fn internal(what: &str, e: impl std::fmt::Display) -> StrataError {
    StrataError::internal(format!("{what}: {e}"))
}

/// Refuses a store whose segments are in another record format than this
/// build's; marks a new store with it.
fn check_format(db: &DB, data_dir: &Path) -> Result<()> {
    let found = db.get([keys::FORMAT]).map_err(|e| internal("reading the store's format", e))?;
    let format = found.map(|v| v.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])));
    match format {
        Some(f) if f == record::VERSION => Ok(()),
        None if db.iterator(rocksdb::IteratorMode::Start).next().is_none() => db
            .put([keys::FORMAT], record::VERSION.to_be_bytes())
            .map_err(|e| internal("recording the store's format", e)),
        other => Err(StrataError::invalid(format!(
            "the store in {} holds records of format {}; this datanode reads format {} only \
             (move its blobs with a datanode of the older version, or start from an empty directory)",
            data_dir.display(),
            other.unwrap_or(1),
            record::VERSION
        ))),
    }
}

impl Store {
    /// Opens (or creates) the store of a datanode whose state lives in `data_dir`.
    pub fn open(data_dir: &Path, config: &StoreConfig, db_config: &RaftConfig) -> Result<Arc<Store>> {
        let disks: Vec<PathBuf> =
            if config.data_dirs.is_empty() { vec![data_dir.join("disk0")] } else { config.data_dirs.clone() };
        if disks.len() > u16::MAX as usize {
            return Err(StrataError::invalid("too many data directories"));
        }
        let db = strata_raftstore::open_db(&data_dir.join("index"), db_config)?;
        check_format(&db, data_dir)?;
        let shared = Arc::new(Shared {
            db,
            disks: disks.clone(),
            files: FileCache::new(OPEN_SEGMENTS),
            stats: Stats::default(),
            health: health::DiskHealth::new(disks.len()),
            stop: AtomicBool::new(false),
        });
        let blobs =
            shared.db.prefix_iterator([keys::BLOB]).take_while(|i| matches!(i, Ok((k, _)) if k[0] == keys::BLOB));
        shared.stats.blobs.store(blobs.count() as u64, Ordering::Relaxed);

        let mut partitions = HashMap::new();
        for item in shared.db.prefix_iterator([keys::PARTITION]) {
            let (key, value) = item.map_err(|e| internal("reading partitions", e))?;
            if key[0] != keys::PARTITION {
                break;
            }
            let disk = value.first().copied().unwrap_or(0) as usize;
            if let Some(id) = keys::parse_one(&key) {
                partitions.insert(id, disk.min(disks.len() - 1));
            }
        }

        let mut appenders = Vec::new();
        let mut threads = Vec::new();
        let segment_size = config.segment_size_mb.max(1) << 20;
        for (disk, dir) in disks.iter().enumerate() {
            let appender = Appender::open(disk, dir.clone(), shared.clone(), segment_size)?;
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("append-{disk}"))
                .spawn(move || appender.run(rx))
                .map_err(|e| internal("starting an appender thread", e))?;
            appenders.push(tx);
            threads.push(thread);
        }
        let store =
            Arc::new(Store { shared, appenders, partitions: Mutex::new(partitions), threads: Mutex::new(threads) });
        store.start_background(config)?;
        Ok(store)
    }

    fn start_background(self: &Arc<Self>, config: &StoreConfig) -> Result<()> {
        let mut threads = self.threads.lock().unwrap();
        let compactor = compact::Compactor::new(self.clone(), config);
        threads.push(
            std::thread::Builder::new()
                .name("compact".into())
                .spawn(move || compactor.run())
                .map_err(|e| internal("starting the compactor", e))?,
        );
        let prober = health::Prober::new(self.clone());
        threads.push(
            std::thread::Builder::new()
                .name("disk-probe".into())
                .spawn(move || prober.run())
                .map_err(|e| internal("starting the disk prober", e))?,
        );
        if config.scrub_mb_per_sec > 0 {
            let scrubber = scrub::Scrubber::new(self.clone(), config.scrub_mb_per_sec << 20);
            threads.push(
                std::thread::Builder::new()
                    .name("scrub".into())
                    .spawn(move || scrubber.run())
                    .map_err(|e| internal("starting the scrubber", e))?,
            );
        }
        Ok(())
    }

    /// Stops the background threads (writes in flight finish first).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The disk `partition` writes to, chosen (most free space) on first use.
    fn disk_of(&self, partition: u64) -> Result<usize> {
        let mut partitions = self.partitions.lock().unwrap();
        if let Some(disk) = partitions.get(&partition) {
            return Ok(*disk);
        }
        let free = |dir: &PathBuf| strata_common::sys::disk_usage(dir).map(|u| u.available_bytes).unwrap_or(0);
        let disk = (0..self.shared.disks.len())
            .filter(|d| !self.shared.health.is_failed(*d))
            .max_by_key(|d| free(&self.shared.disks[*d]))
            .ok_or_else(|| StrataError::unavailable("every disk of this datanode has failed"))?;
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.shared
            .db
            .put_opt(keys::partition(partition), [disk as u8, (disk >> 8) as u8], &options)
            .map_err(|e| internal("recording a partition's disk", e))?;
        partitions.insert(partition, disk);
        Ok(disk)
    }

    async fn submit(&self, disk: usize, job: impl FnOnce(appender::Reply) -> Job) -> Result<bool> {
        let (tx, rx) = oneshot::channel();
        self.appenders[disk]
            .send(job(tx))
            .map_err(|_| StrataError::new(ErrorCode::Unavailable, "the store is shutting down"))?;
        rx.await.map_err(|_| StrataError::new(ErrorCode::Unavailable, "the store stopped during a write"))?
    }

    /// Stores a blob durably (data and index entry fsynced when this returns).
    pub async fn write(&self, partition: u64, blob: u64, meta: PieceMeta, data: Bytes) -> Result<()> {
        if data.len() as u64 > MAX_BLOB {
            return Err(StrataError::invalid(format!("a blob holds at most {MAX_BLOB} bytes, not {}", data.len())));
        }
        let disk = self.disk_of(partition)?;
        if self.shared.health.is_failed(disk) {
            return Err(StrataError::unavailable(format!("the disk of partition {partition} has failed on this node")));
        }
        let crcs = block_crcs(&data);
        let header = Header { partition, blob, len: data.len() as u32, meta };
        self.submit(disk, |reply| Job::Put { header, crcs, data, only_if: None, reply }).await?;
        Ok(())
    }

    /// Removes a blob; answers whether it was stored.
    pub async fn delete(&self, partition: u64, blob: u64) -> Result<bool> {
        let disk = self.disk_of(partition)?;
        self.submit(disk, |reply| Job::Delete { partition, blob, reply }).await
    }

    /// Bytes [offset, offset + length) of a blob (clipped to its end) and its location.
    pub async fn read(
        self: &Arc<Self>,
        partition: u64,
        blob: u64,
        offset: u64,
        length: u64,
    ) -> Result<(Bytes, Location)> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(partition, blob, offset, length))
            .await
            .map_err(|e| internal("reading a blob", e))?
    }

    pub fn location(&self, partition: u64, blob: u64) -> Result<Option<Location>> {
        let value = self.shared.db.get(keys::blob(partition, blob)).map_err(|e| internal("reading the index", e))?;
        value.map(|v| Location::decode(&v)).transpose()
    }

    /// The blob's location; NotFound if it is not stored here.
    fn stored(&self, partition: u64, blob: u64) -> Result<Location> {
        self.location(partition, blob)?.ok_or_else(|| {
            StrataError::new(ErrorCode::NotFound, format!("blob {blob} of partition {partition} is not stored here"))
        })
    }

    pub fn read_blocking(&self, partition: u64, blob: u64, offset: u64, length: u64) -> Result<(Bytes, Location)> {
        // A compaction may move the blob between the lookup and the read: look again once.
        let mut attempt = 0;
        loop {
            let location = self.stored(partition, blob)?;
            match self.read_at(partition, blob, &location, offset, length) {
                Err(e) if e.code == ErrorCode::NotFound && attempt == 0 => attempt += 1,
                other => return other.map(|bytes| (bytes, location)),
            }
        }
    }

    /// Where bytes [offset, offset + length) of a blob are, clipped to its
    /// length, when they are whole blocks (so their CRC comes from the stored
    /// block CRCs): for reads sent straight from the file. None for any other
    /// range, which [`Store::read`] must check block by block.
    pub fn locate_whole_blocks(
        &self,
        partition: u64,
        blob: u64,
        offset: u64,
        length: u64,
    ) -> Result<Option<FileRange>> {
        // A compaction may move the blob between the lookup and the open: look again once.
        let mut attempt = 0;
        loop {
            let location = self.stored(partition, blob)?;
            let len = u64::from(location.len);
            if offset > len {
                return Err(StrataError::invalid(format!("offset {offset} is past the blob's {len} bytes")));
            }
            let length = length.min(len - offset);
            let Some(crc32) = location.range_crc(offset, length) else { return Ok(None) };
            match self.segment_file(&location) {
                Ok(file) => {
                    let file_offset = location.data_offset() + offset;
                    return Ok(Some(FileRange { file, file_offset, length, crc32, location }));
                }
                Err(e) if e.code == ErrorCode::NotFound && attempt == 0 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The segment holding `loc`; NotFound if a compaction removed it.
    fn segment_file(&self, loc: &Location) -> Result<Arc<std::fs::File>> {
        self.shared.files.get(&self.shared.disks, loc.segment).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::Internal };
            StrataError::new(code, format!("opening segment {:x}: {e}", loc.segment))
        })
    }

    fn read_at(&self, partition: u64, blob: u64, loc: &Location, offset: u64, length: u64) -> Result<Bytes> {
        let len = u64::from(loc.len);
        if offset > len {
            return Err(StrataError::invalid(format!("offset {offset} is past the blob's {len} bytes")));
        }
        let end = offset.saturating_add(length).min(len);
        if end == offset {
            return Ok(Bytes::new());
        }
        let first = offset / BLOCK_SIZE;
        let start = first * BLOCK_SIZE;
        let stop = end.div_ceil(BLOCK_SIZE).saturating_mul(BLOCK_SIZE).min(len);
        let file = self.segment_file(loc)?;
        // From the buffer pool: a fresh allocation per read costs page faults.
        let mut buf = AlignedBuf::for_overwrite((stop - start) as usize);
        file.read_exact_at(buf.as_mut_slice(), loc.data_offset() + start)
            .map_err(|e| internal(&format!("reading segment {:x}", loc.segment), e))?;
        for (i, block) in buf.as_slice().chunks(BLOCK_SIZE as usize).enumerate() {
            let index = first as usize + i;
            if crc32fast::hash(block) != loc.crcs[index] {
                self.report_corrupt(partition, blob);
                return Err(StrataError::new(
                    ErrorCode::Corrupted,
                    format!("block {index} of blob {blob} (partition {partition}) fails its CRC"),
                ));
            }
        }
        Ok(Bytes::from_owner(buf).slice((offset - start) as usize..(end - start) as usize))
    }

    /// Counts a corrupt block and remembers the blob for repair.
    fn report_corrupt(&self, partition: u64, blob: u64) {
        self.shared.stats.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(partition_id = partition, blob_id = blob, "corrupt block found");
        if let Err(e) = self.shared.db.put(keys::bad(partition, blob), []) {
            tracing::warn!(error = %e, "recording a corrupt blob failed");
        }
    }

    /// Partitions whose disk has failed here: their data must be rebuilt elsewhere.
    pub fn lost_partitions(&self) -> Vec<u64> {
        let partitions = self.partitions.lock().unwrap();
        let mut lost: Vec<u64> =
            partitions.iter().filter(|(_, disk)| self.shared.health.is_failed(**disk)).map(|(p, _)| *p).collect();
        lost.sort();
        lost
    }

    /// Each data directory and whether its disk has failed.
    pub fn disks(&self) -> Vec<(&Path, bool)> {
        self.shared.disks.iter().enumerate().map(|(d, dir)| (dir.as_path(), self.shared.health.is_failed(d))).collect()
    }

    /// The blob index (for its RocksDB figures).
    pub fn index(&self) -> &DB {
        &self.shared.db
    }

    /// Whether any disk has failed.
    pub fn any_disk_failed(&self) -> bool {
        (0..self.shared.disks.len()).any(|d| self.shared.health.is_failed(d))
    }

    /// Blobs of `partition` with ids above `after`, at most `limit`.
    pub fn list(&self, partition: u64, after: u64, limit: usize) -> Result<Vec<(u64, Location)>> {
        let prefix = keys::blob_prefix(partition);
        let start = keys::blob(partition, after.saturating_add(1));
        let mut out = Vec::new();
        if after == u64::MAX {
            return Ok(out);
        }
        let iter = self.shared.db.iterator(rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| internal("listing blobs", e))?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let (_, blob) = keys::parse_two(&key).ok_or_else(|| StrataError::internal("malformed blob key"))?;
            out.push((blob, Location::decode(&value)?));
        }
        Ok(out)
    }

    /// Counts a corrupt blob rewritten from other members.
    pub fn count_repaired(&self) {
        self.shared.stats.repaired_blobs.fetch_add(1, Ordering::Relaxed);
    }

    /// Blobs found corrupt and not yet rewritten, at most `limit`.
    pub fn bad_blobs(&self, limit: usize) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for item in self.shared.db.prefix_iterator([keys::BAD]) {
            let (key, _) = item.map_err(|e| internal("listing corrupt blobs", e))?;
            if key[0] != keys::BAD || out.len() >= limit {
                break;
            }
            out.extend(keys::parse_two(&key));
        }
        Ok(out)
    }

    /// Every segment and its bookkeeping, as committed.
    fn segments(&self) -> Result<Vec<(u64, keys::SegmentInfo)>> {
        let mut out = Vec::new();
        for item in self.shared.db.prefix_iterator([keys::SEGMENT]) {
            let (key, value) = item.map_err(|e| internal("listing segments", e))?;
            if key[0] != keys::SEGMENT {
                break;
            }
            if let (Some(id), Some(info)) = (keys::parse_one(&key), keys::SegmentInfo::decode(&value)) {
                out.push((id, info));
            }
        }
        Ok(out)
    }

    pub fn totals(&self) -> Result<StoreTotals> {
        let segments = self.segments()?;
        let stats = &self.shared.stats;
        let segment_bytes: u64 = segments.iter().map(|(_, i)| i.size).sum();
        let dead: u64 = segments.iter().map(|(_, i)| i.dead).sum();
        Ok(StoreTotals {
            blobs: stats.blobs.load(Ordering::Relaxed),
            live_bytes: segment_bytes.saturating_sub(dead),
            segment_bytes,
            segments: segments.len() as u64,
            corrupt_blocks: stats.corrupt_blocks.load(Ordering::Relaxed),
            compactions: stats.compactions.load(Ordering::Relaxed),
            scrubbed_bytes: stats.scrubbed_bytes.load(Ordering::Relaxed),
            bad_blobs: self.bad_blobs(usize::MAX)?.len() as u64,
            repaired_blobs: stats.repaired_blobs.load(Ordering::Relaxed),
        })
    }
}

impl Drop for Store {
    /// Lets the appenders finish what was queued and waits for every thread,
    /// so the index is closed when the store is gone.
    fn drop(&mut self) {
        self.shutdown();
        self.appenders.clear();
        let me = std::thread::current().id();
        for thread in self.threads.get_mut().unwrap().drain(..) {
            // The last handle may be dropped by a background thread itself.
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests;
