//! Compaction gives back the space of deleted and replaced blobs: a sealed
//! segment whose garbage reaches the configured fraction has its live records
//! copied to the active segment (each move committed only if the index still
//! points at the old place), then the segment is dropped and its file removed.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use strata_common::config::StoreConfig;
use strata_common::{Result, StrataError};

use super::appender::Job;
use super::keys::segment_disk;
use super::record::{HEADER_LEN, Header};
use super::{Store, internal};

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
            if !info.sealed || info.size == 0 || (info.dead as f64) < ratio * info.size as f64 {
                continue;
            }
            let moved = self.compact_segment(id, info.size)?;
            tracing::info!(segment = id, size = info.size, garbage = info.dead, moved, "segment compacted");
            done += 1;
        }
        Ok(done)
    }

    /// Moves the live records of a segment elsewhere and drops it; answers the bytes moved.
    fn compact_segment(&self, segment: u64, size: u64) -> Result<u64> {
        let disk = segment_disk(segment);
        let file = self.shared.files.get(&self.shared.disks, segment).map_err(|e| internal("opening a segment", e))?;
        let mut offset = 0;
        let mut moved = 0;
        while offset < size {
            let mut head = [0u8; HEADER_LEN];
            file.read_exact_at(&mut head, offset).map_err(|e| internal("reading a record header", e))?;
            let header = Header::decode(&head)
                .map_err(|e| StrataError::new(e.code, format!("segment {segment:x} at {offset}: {}", e.message)))?;
            let record_len = header.record_len();
            let live = self
                .location(header.partition, header.blob)?
                .filter(|loc| loc.segment == segment && loc.record_offset == offset);
            if let Some(loc) = live {
                let mut data = vec![0u8; loc.len as usize];
                file.read_exact_at(&mut data, loc.data_offset()).map_err(|e| internal("reading a record", e))?;
                // The original CRCs travel with the bytes: damage stays detectable.
                let crcs = loc.crcs.clone();
                let data = Bytes::from(data);
                self.submit_blocking(disk, |reply| Job::Put { header, crcs, data, only_if: Some(loc), reply })?;
                moved += record_len;
            }
            offset += record_len;
        }
        self.submit_blocking(disk, |reply| Job::DropSegment { segment, reply })?;
        self.shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(moved)
    }

    fn submit_blocking(&self, disk: usize, job: impl FnOnce(super::appender::Reply) -> Job) -> Result<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.appenders[disk].send(job(tx)).map_err(|_| StrataError::internal("the store is shutting down"))?;
        rx.blocking_recv().map_err(|_| StrataError::internal("the store stopped during compaction"))?
    }
}
