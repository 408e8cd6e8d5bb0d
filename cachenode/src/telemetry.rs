//! A cachenode's figures, sampled every second from its store: for the
//! heartbeat (the master shows them in `strata node list` and the console)
//! and for Prometheus. Requests themselves are counted by the framed server.

use std::sync::Arc;
use std::time::Duration;

use strata_node::agent::NodeStats;

use crate::store::CacheStore;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples `store` into `stats` and the metrics until the task is aborted.
pub async fn run(store: Arc<CacheStore>, stats: Arc<NodeStats>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let report = store.report();
        metrics::gauge!("strata_cachenode_bytes", "level" => "memory").set(report.memory_bytes as f64);
        metrics::gauge!("strata_cachenode_bytes", "level" => "disk").set(report.disk_bytes as f64);
        metrics::gauge!("strata_cachenode_capacity_bytes", "level" => "memory").set(report.memory_capacity as f64);
        metrics::gauge!("strata_cachenode_capacity_bytes", "level" => "disk").set(report.disk_capacity as f64);
        metrics::counter!("strata_cachenode_hits_total").absolute(report.hits);
        metrics::counter!("strata_cachenode_misses_total").absolute(report.misses);
        metrics::counter!("strata_cachenode_evictions_total").absolute(report.evictions);
        metrics::counter!("strata_cachenode_rejected_total").absolute(report.rejected);
        metrics::counter!("strata_cachenode_corrupt_blocks_total").absolute(report.corrupt_blocks);
        *stats.cache.lock().unwrap() = Some(report);
    }
}
