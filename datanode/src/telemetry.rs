//! A datanode's figures for Prometheus, sampled every few seconds from the
//! store: blobs and bytes held, segment garbage awaiting compaction, each
//! disk's free space and health, scrub progress, corrupt blocks found and
//! blobs repaired, rebuilds in progress, and the blob index's RocksDB.
//! Requests themselves are counted by the gRPC layer and the framed server.

use std::sync::Arc;
use std::time::Duration;

use strata_node::agent::NodeStats;

use crate::store::Store;

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples `store` (and the rebuilds in `stats`) until the task is aborted.
pub async fn run(store: Arc<Store>, stats: Arc<NodeStats>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let sampled = store.clone();
        // The totals walk the segment index: off the async workers.
        let totals = tokio::task::spawn_blocking(move || sampled.totals()).await;
        match totals {
            Ok(Ok(totals)) => {
                metrics::gauge!("strata_datanode_blobs").set(totals.blobs as f64);
                metrics::gauge!("strata_datanode_live_bytes").set(totals.live_bytes as f64);
                metrics::gauge!("strata_datanode_segment_bytes").set(totals.segment_bytes as f64);
                metrics::gauge!("strata_datanode_garbage_bytes")
                    .set(totals.segment_bytes.saturating_sub(totals.live_bytes) as f64);
                metrics::gauge!("strata_datanode_segments").set(totals.segments as f64);
                metrics::gauge!("strata_datanode_bad_blobs").set(totals.bad_blobs as f64);
                metrics::counter!("strata_datanode_corrupt_blocks_total").absolute(totals.corrupt_blocks);
                metrics::counter!("strata_datanode_compactions_total").absolute(totals.compactions);
                metrics::counter!("strata_datanode_scrubbed_bytes_total").absolute(totals.scrubbed_bytes);
                metrics::counter!("strata_datanode_repaired_blobs_total").absolute(totals.repaired_blobs);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "sampling the store's totals failed"),
            Err(e) => tracing::warn!(error = %e, "sampling the store's totals panicked"),
        }
        for (disk, (dir, failed)) in store.disks().into_iter().enumerate() {
            let disk = disk.to_string();
            metrics::gauge!("strata_datanode_disk_failed", "disk" => disk.clone()).set(f64::from(u8::from(failed)));
            if let Ok(usage) = strata_common::sys::disk_usage(dir) {
                metrics::gauge!("strata_datanode_disk_free_bytes", "disk" => disk.clone())
                    .set(usage.available_bytes as f64);
                metrics::gauge!("strata_datanode_disk_total_bytes", "disk" => disk).set(usage.total_bytes as f64);
            }
        }
        let repairs = stats.repairs.lock().unwrap().len();
        metrics::gauge!("strata_datanode_repairs_in_progress").set(repairs as f64);
        let lost = stats.lost_partitions.lock().unwrap().len();
        metrics::gauge!("strata_datanode_lost_partitions").set(lost as f64);
        strata_raftstore::telemetry::record_rocksdb(store.index(), "index");
    }
}
