//! `strata bench --target A --target B …`: the workloads our users run
//! ([`workloads`]), against any directories, side by side. Each round runs
//! every workload on every target in turn (A B A B …), so a noisy machine
//! slows all targets alike; the report keeps the median of the rounds and
//! the ratio of each target to the first. A target that is a Strata mount
//! also reports what its caches did during each workload.

pub mod io;
pub mod output;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::median;
use strata_sdk::cache::{CacheReport, read_report};
pub use workloads::{FsConfig, Measure};

/// A directory to measure, and the name it has in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub label: String,
    pub dir: PathBuf,
}

/// `LABEL=DIR`, or just `DIR` (labelled by its last component).
impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        let (label, dir) = match text.split_once('=') {
            Some((label, dir)) => (label.to_string(), PathBuf::from(dir)),
            None => {
                let dir = PathBuf::from(text);
                let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| text.into());
                (label, dir)
            }
        };
        if label.is_empty() || dir.as_os_str().is_empty() {
            return Err(format!("a target is LABEL=DIR or DIR, not {text:?}"));
        }
        Ok(Target { label, dir })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Seq,
    Rand,
    Small,
    Meta,
    Epoch,
}

impl Workload {
    pub const ALL: [Workload; 5] = [Workload::Seq, Workload::Rand, Workload::Small, Workload::Meta, Workload::Epoch];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Seq => "seq",
            Workload::Rand => "rand",
            Workload::Small => "small",
            Workload::Meta => "meta",
            Workload::Epoch => "epoch",
        }
    }

    fn run(self, dir: &Path, config: &FsConfig) -> anyhow::Result<Vec<Measure>> {
        match self {
            Workload::Seq => workloads::seq(dir, config),
            Workload::Rand => workloads::rand(dir, config),
            Workload::Small => workloads::small(dir, config),
            Workload::Meta => workloads::meta(dir, config),
            Workload::Epoch => workloads::epoch(dir, config),
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(text: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == text)
            .ok_or_else(|| format!("unknown workload {text:?} (seq, rand, small, meta, epoch)"))
    }
}

/// What a Strata mount's caches did during one workload run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheDelta {
    pub memory_hits: u64,
    pub memory_misses: u64,
    pub disk_hits: u64,
    pub disk_misses: u64,
    pub remote_blocks: u64,
    pub remote_bytes: u64,
    /// Blocks the cachenodes (L3) had, and ones they filled from the datanodes.
    #[serde(default)]
    pub shared_hits: u64,
    #[serde(default)]
    pub shared_fills: u64,
}

impl CacheDelta {
    fn between(before: &CacheReport, after: &CacheReport) -> CacheDelta {
        CacheDelta {
            memory_hits: after.memory.hits.saturating_sub(before.memory.hits),
            memory_misses: after.memory.misses.saturating_sub(before.memory.misses),
            disk_hits: after.disk.hits.saturating_sub(before.disk.hits),
            disk_misses: after.disk.misses.saturating_sub(before.disk.misses),
            remote_blocks: after.remote_blocks.saturating_sub(before.remote_blocks),
            remote_bytes: after.remote_bytes.saturating_sub(before.remote_bytes),
            shared_hits: after.shared.hits.saturating_sub(before.shared.hits),
            shared_fills: after.shared.fills.saturating_sub(before.shared.fills),
        }
    }

    fn add(&mut self, other: &CacheDelta) {
        self.memory_hits += other.memory_hits;
        self.memory_misses += other.memory_misses;
        self.disk_hits += other.disk_hits;
        self.disk_misses += other.disk_misses;
        self.remote_blocks += other.remote_blocks;
        self.remote_bytes += other.remote_bytes;
        self.shared_hits += other.shared_hits;
        self.shared_fills += other.shared_fills;
    }
}

/// One figure across targets: every round's value and the median.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub workload: Workload,
    pub metric: String,
    pub unit: String,
    /// Per target (in target order), the value of each round.
    pub values: Vec<Vec<f64>>,
    pub medians: Vec<f64>,
}

impl Row {
    /// Median of target `i` over the first target's.
    pub fn ratio(&self, i: usize) -> f64 {
        if self.medians[0] > 0.0 { self.medians[i] / self.medians[0] } else { 0.0 }
    }
}

/// Totals of a Strata target's cache activity over all rounds of a workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRow {
    pub workload: Workload,
    pub target: String,
    pub delta: CacheDelta,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub targets: Vec<Target>,
    pub rounds: usize,
    pub config: FsConfig,
    pub rows: Vec<Row>,
    pub caches: Vec<CacheRow>,
}

/// Runs `workloads` on every target for `rounds` rounds. Each target works
/// in a `strata-bench` directory of its own, removed at the end.
pub fn run(
    targets: &[Target],
    workloads: &[Workload],
    rounds: usize,
    config: &FsConfig,
    progress: impl Fn(&str),
) -> anyhow::Result<Report> {
    anyhow::ensure!(!targets.is_empty(), "give at least one --target");
    let dirs: Vec<PathBuf> = targets.iter().map(|t| t.dir.join("strata-bench")).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut caches: Vec<CacheRow> = Vec::new();
    for round in 0..rounds.max(1) {
        for &workload in workloads {
            for (t, target) in targets.iter().enumerate() {
                progress(&format!("round {}/{}: {} on {}", round + 1, rounds.max(1), workload.name(), target.label));
                let before = read_report(&target.dir).ok();
                let measures = workload
                    .run(&dirs[t], config)
                    .with_context(|| format!("{} on {}", workload.name(), target.label))?;
                if let (Some(before), Ok(after)) = (before, read_report(&target.dir)) {
                    let delta = CacheDelta::between(&before, &after);
                    match caches.iter_mut().find(|c| c.workload == workload && c.target == target.label) {
                        Some(row) => row.delta.add(&delta),
                        None => caches.push(CacheRow { workload, target: target.label.clone(), delta }),
                    }
                }
                for m in measures {
                    let index = match rows.iter().position(|r| r.workload == workload && r.metric == m.metric) {
                        Some(i) => i,
                        None => {
                            rows.push(Row {
                                workload,
                                metric: m.metric.clone(),
                                unit: m.unit.clone(),
                                values: vec![Vec::new(); targets.len()],
                                medians: Vec::new(),
                            });
                            rows.len() - 1
                        }
                    };
                    rows[index].values[t].push(m.value);
                }
            }
        }
    }
    for row in &mut rows {
        row.medians = row.values.iter().map(|v| median(v)).collect();
    }
    for dir in &dirs {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            progress(&format!("could not remove {}: {e}", dir.display()));
        }
    }
    Ok(Report { targets: targets.to_vec(), rounds: rounds.max(1), config: config.clone(), rows, caches })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> FsConfig {
        FsConfig {
            jobs: 2,
            seq_size: 1 << 20,
            io_sizes: vec![1 << 20],
            direct: false,
            drop_caches: false,
            rand_file_size: 1 << 20,
            rand_ops: 50,
            small_files: 20,
            small_size: 1000,
            meta_files: 40,
            meta_threads: 2,
            epoch_files: 10,
            epoch_size: 5000,
            epoch_workers: 2,
            epochs: 2,
        }
    }

    #[test]
    fn every_workload_runs_on_two_directories_and_reports_ratios() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let targets = vec![
            Target { label: "a".into(), dir: a.path().into() },
            format!("{}", b.path().display()).parse::<Target>().unwrap(),
        ];
        let report = run(&targets, &Workload::ALL, 2, &tiny(), |_| {}).unwrap();
        let metrics: Vec<String> = report.rows.iter().map(|r| format!("{} {}", r.workload.name(), r.metric)).collect();
        for expected in
            ["seq write 1MiB", "seq reread 1MiB", "rand read 4KiB", "small reread", "meta rename", "epoch 2"]
        {
            assert!(metrics.iter().any(|m| m == expected), "{expected} missing from {metrics:?}");
        }
        for row in &report.rows {
            assert_eq!(row.values.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2], "{row:?}");
            assert!(row.medians.iter().all(|m| *m > 0.0), "{row:?}");
            assert_eq!(row.ratio(0), 1.0);
        }
        assert!(report.caches.is_empty(), "local directories have no Strata caches");
        let json = a.path().join("report.json");
        output::write_json(&report, &json).unwrap();
        let again = output::read_json(&json).unwrap();
        assert_eq!(again.rows.len(), report.rows.len());
        let png = a.path().join("report.png");
        output::plot(&again, &png).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"), "a PNG is written");
        assert!(!a.path().join("strata-bench").exists(), "the work directory is removed");
        assert!("=x".parse::<Target>().is_err());
    }
}
