//! A client's cache figures for Prometheus: the counters of a
//! [`CacheReport`] per level (`memory`, `disk`), and what came from the
//! datanodes, recorded as absolute values by whoever samples the report (the
//! mount, every few seconds), so Prometheus computes hit ratios and rates.

use super::{CacheReport, LevelReport};

impl CacheReport {
    /// Records this report as the client's current cache figures.
    pub fn record(&self) {
        record_level("memory", &self.memory);
        record_level("disk", &self.disk);
        metrics::counter!("strata_cache_remote_blocks_total").absolute(self.remote_blocks);
        metrics::counter!("strata_cache_remote_bytes_total").absolute(self.remote_bytes);
        metrics::counter!("strata_cache_prefetched_blocks_total").absolute(self.prefetched_blocks);
        metrics::counter!("strata_cache_random_reads_total").absolute(self.random_reads);
        metrics::counter!("strata_cache_corrupt_blocks_total", "level" => "disk").absolute(self.corrupt_disk_blocks);
        metrics::counter!("strata_cache_disk_writes_skipped_total").absolute(self.disk_writes_skipped);
        metrics::counter!("strata_delegation_hits_total").absolute(self.delegation_hits);
    }
}

fn record_level(level: &'static str, report: &LevelReport) {
    if !report.enabled {
        return;
    }
    metrics::counter!("strata_cache_hits_total", "level" => level).absolute(report.hits);
    metrics::counter!("strata_cache_misses_total", "level" => level).absolute(report.misses);
    metrics::counter!("strata_cache_hit_bytes_total", "level" => level).absolute(report.hit_bytes);
    metrics::counter!("strata_cache_evictions_total", "level" => level).absolute(report.evictions);
    metrics::gauge!("strata_cache_bytes", "level" => level).set(report.bytes as f64);
    metrics::gauge!("strata_cache_blocks", "level" => level).set(report.blocks as f64);
    metrics::gauge!("strata_cache_capacity_bytes", "level" => level).set(report.capacity as f64);
}
