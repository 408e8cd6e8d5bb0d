//! Compaction gives back the space of deleted and replaced blobs: a sealed
//! segment whose garbage reaches the configured fraction has its live records
//! copied to the active segment (each move committed only if the index still
//! points at the old place), then the segment is dropped and its file removed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use strata_common::config::StoreConfig;
use strata_common::{Result, StrataError};

use super::appender::Job;
use super::keys::{self, segment_disk};
use super::record::{HEADER_LEN, Header, Location};
use super::{Store, internal};

/// The active segment is compacted early only from this size on.
const MIN_ACTIVE_COMPACTION: u64 = 8 << 20;

pub struct Compactor {
    store: Weak<Store>,
    ratio: f64,
    interval: Duration,
}

/// Sleeps up to `total` in short steps; false once the store is gone or stopping.
pub fn pause(store: &Weak<Store>, total: Duration) -> bool {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    loop {
        match store.upgrade() {
            Some(s) if !s.stopping() => {}
            _ => return false,
        }
        if slept >= total {
            return true;
        }
        std::thread::sleep(step.min(total - slept));
        slept += step;
    }
}

impl Compactor {
    pub fn new(store: Arc<Store>, config: &StoreConfig) -> Compactor {
        Compactor {
            store: Arc::downgrade(&store),
            ratio: config.compact_garbage_ratio.clamp(0.01, 1.0),
            interval: Duration::from_secs(config.compact_interval_secs.max(1)),
        }
    }

    pub fn run(self) {
        while pause(&self.store, self.interval) {
            let Some(store) = self.store.upgrade() else { return };
            if let Err(e) = store.compact_once(self.ratio) {
                tracing::warn!(error = %e, "compaction failed");
            }
        }
    }
}

impl Store {
    /// Compacts every sealed segment whose garbage reaches `ratio`; answers how many.
    pub fn compact_once(&self, ratio: f64) -> Result<usize> {
        let mut done = 0;
        for (id, info) in self.segments()? {
            if self.stopping() {
                break;
            }
            if info.size == 0 || (info.dead as f64) < ratio * info.size as f64 {
                continue;
            }
            // A mostly dead active segment is sealed first (small ones are left to fill).
            if !info.sealed
                && (info.size < MIN_ACTIVE_COMPACTION
                    || !self.submit_blocking(segment_disk(id), |reply| Job::Seal { segment: id, reply })?)
            {
                continue;
            }
            // Sealing may have come after more appends: take the final size.
            let Some(size) = self.segments()?.into_iter().find(|(s, _)| *s == id).map(|(_, i)| i.size) else {
                continue;
            };
            let moved = self.compact_segment(id, size)?;
            tracing::info!(segment = id, size = info.size, garbage = info.dead, moved, "segment compacted");
            done += 1;
        }
        Ok(done)
    }

    /// Moves the live records of a segment elsewhere and drops it; answers the bytes moved.
    fn compact_segment(&self, segment: u64, size: u64) -> Result<u64> {
        let file = self.shared.files.get(&self.shared.disks, segment).map_err(|e| internal("opening a segment", e))?;
        let mut offset = 0;
        let mut moved = 0;
        while offset < size {
            let mut head = [0u8; HEADER_LEN];
            file.read_exact_at(&mut head, offset).map_err(|e| internal("reading a record header", e))?;
            let header = match Header::decode(&head) {
                Ok(header) => header,
                Err(e) => {
                    // Without this header the records after it cannot be found by
                    // walking: find the segment's live blobs through the index instead.
                    tracing::warn!(segment, offset, error = %e, "damaged record header; compacting through the index");
                    return self.compact_through_index(segment);
                }
            };
            let record_len = header.record_len();
            let live = self
                .location(header.partition, header.blob)?
                .filter(|loc| loc.segment == segment && loc.record_offset == offset);
            if let Some(loc) = live {
                moved += self.move_record(&file, header.partition, header.blob, loc)?;
            }
            offset += record_len;
        }
        self.drop_segment(segment)?;
        Ok(moved)
    }

    /// Moves every blob the index places in `segment` (a full index scan), then drops it.
    fn compact_through_index(&self, segment: u64) -> Result<u64> {
        let file = self.shared.files.get(&self.shared.disks, segment).map_err(|e| internal("opening a segment", e))?;
        let mut moved = 0;
        for item in self.shared.db.prefix_iterator([keys::BLOB]) {
            let (key, value) = item.map_err(|e| internal("scanning the index", e))?;
            if key[0] != keys::BLOB {
                break;
            }
            let loc = Location::decode(&value)?;
            let Some((partition, blob)) = keys::parse_two(&key) else { continue };
            if loc.segment == segment {
                moved += self.move_record(&file, partition, blob, loc)?;
            }
        }
        self.drop_segment(segment)?;
        Ok(moved)
    }

    /// Appends a live record again, committed only if the index still points
    /// at `loc`; answers the bytes moved.
    fn move_record(&self, file: &File, partition: u64, blob: u64, loc: Location) -> Result<u64> {
        let mut data = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut data, loc.data_offset()).map_err(|e| internal("reading a record", e))?;
        let header = Header { partition, blob, len: loc.len, meta: loc.meta };
        // The original CRCs travel with the bytes: damage stays detectable.
        let crcs = loc.crcs.clone();
        let (moved, data) = (loc.record_len(), Bytes::from(data));
        let disk = segment_disk(loc.segment);
        self.submit_blocking(disk, |reply| Job::Put { header, crcs, data, only_if: Some(loc), reply })?;
        Ok(moved)
    }

    fn drop_segment(&self, segment: u64) -> Result<()> {
        self.submit_blocking(segment_disk(segment), |reply| Job::DropSegment { segment, reply })?;
        self.shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn submit_blocking(&self, disk: usize, job: impl FnOnce(super::appender::Reply) -> Job) -> Result<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.appenders[disk].send(job(tx)).map_err(|_| StrataError::internal("the store is shutting down"))?;
        rx.blocking_recv().map_err(|_| StrataError::internal("the store stopped during compaction"))?
    }
}
