//! Benchmarks. Every figure is reported next to a baseline measured in the
//! same run (the same workload on a local directory), because the machines
//! this runs on are shared and noisy: ratios travel, absolute numbers do not.

pub mod data;
pub mod fs;
pub mod meta;
pub mod nodes;
pub mod report;
