//! Benchmarks. Every figure is reported next to a baseline measured in the
//! same run (the same workload on a local directory), because the machines
//! this runs on are shared and noisy: ratios travel, absolute numbers do not.

pub mod chart;
pub mod data;
pub mod fs;
pub mod meta;
pub mod nodes;
pub mod report;
pub mod s3;

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
