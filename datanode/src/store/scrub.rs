//! Scrub rereads every stored blob at a bounded rate, round and round, so that
//! bit rot is found before a reader needs the bytes: a block failing its CRC
//! is counted and its blob recorded for repair (see `Store::bad_blobs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use strata_common::ErrorCode;

use super::Store;
use super::compact::pause;
use super::keys::{self, parse_two};
use super::record::Location;

/// Index entries read per step.
const PAGE: usize = 64;

pub struct Scrubber {
    store: Weak<Store>,
    bytes_per_sec: u64,
}

impl Scrubber {
    pub fn new(store: Arc<Store>, bytes_per_sec: u64) -> Scrubber {
        Scrubber { store: Arc::downgrade(&store), bytes_per_sec: bytes_per_sec.max(1) }
    }

    pub fn run(self) {
        let mut cursor = vec![keys::BLOB];
        while pause(&self.store, Duration::ZERO) {
            let Some(store) = self.store.upgrade() else { return };
            let page = store.blob_page(&cursor);
            drop(store);
            let Some(page) = page else {
                cursor = vec![keys::BLOB];
                if !pause(&self.store, Duration::from_secs(10)) {
                    return;
                }
                continue;
            };
            for (key, location) in &page {
                let Some(store) = self.store.upgrade() else { return };
                let Some((partition, blob)) = parse_two(key) else { continue };
                // The page's location, not a second index lookup: a blob moved
                // by compaction meanwhile reads the same bytes or is NotFound.
                match store.read_at(partition, blob, location, 0, location.len.into()) {
                    Ok(_) => {}
                    Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::Corrupted) => {}
                    Err(e) => tracing::warn!(partition_id = partition, blob_id = blob, error = %e, "scrub read failed"),
                }
                store.shared.stats.scrubbed_bytes.fetch_add(location.len.into(), Ordering::Relaxed);
                drop(store);
                // Paced blob by blob: a page of blobs read in one burst
                // would take the disk and a core from readers for a while.
                let wait = Duration::from_secs_f64(f64::from(location.len) / self.bytes_per_sec as f64);
                if !pause(&self.store, wait) {
                    return;
                }
            }
            cursor = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
        }
    }
}

impl Store {
    /// Index entries after `cursor` (exclusive unless it is the bare prefix); None at the end.
    fn blob_page(&self, cursor: &[u8]) -> Option<Vec<(Vec<u8>, Location)>> {
        let mode = rocksdb::IteratorMode::From(cursor, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.shared.db.iterator(mode) {
            let Ok((key, value)) = item else { break };
            if key[0] != keys::BLOB || out.len() >= PAGE {
                break;
            }
            if *key == *cursor {
                continue;
            }
            if let Ok(location) = Location::decode(&value) {
                out.push((key.to_vec(), location));
            }
        }
        if out.is_empty() { None } else { Some(out) }
    }
}
