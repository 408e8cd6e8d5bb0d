//! The report of `strata bench --target …` as a table, as JSON and as a
//! PNG bar chart ([`crate::chart`]).

use std::path::Path;

use anyhow::Context;

use super::Report;
use strata_common::size::format_size;

pub fn print_table(report: &Report) {
    let labels: Vec<&str> = report.targets.iter().map(|t| t.label.as_str()).collect();
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0).max(12);
    let first_columns = format!("{:<6} {:<14} {:<10}", "load", "figure", "unit");
    println!("{}", crate::report::ratio_header(first_columns, &labels, width));
    for row in &report.rows {
        let mut line = format!("{:<6} {:<14} {:<10}", row.workload.name(), row.metric, row.unit);
        for median in &row.medians {
            line.push_str(&format!(" {median:>width$.1}"));
        }
        for i in 1..labels.len() {
            line.push_str(&format!(" {:>width$.3}", row.ratio(i)));
        }
        println!("{line}");
    }
    println!("(medians of {} rounds; ratios are each target over {})", report.rounds, labels[0]);
    if report.caches.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<6} {:<width$} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "load", "strata mount", "mem hits", "mem miss", "disk hits", "disk miss", "L3 hits", "L3 fills", "from nodes"
    );
    for c in &report.caches {
        println!(
            "{:<6} {:<width$} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
            c.workload.name(),
            c.target,
            c.delta.memory_hits,
            c.delta.memory_misses,
            c.delta.disk_hits,
            c.delta.disk_misses,
            c.delta.shared_hits,
            c.delta.shared_fills,
            format_size(c.delta.remote_bytes)
        );
    }
}

/// A report written by [`write_json`], to print or plot again.
pub fn read_json(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("decoding {}", path.display()))
}

pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The report as a chart (see [`crate::chart`]).
pub fn plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    let rows: Vec<String> =
        report.rows.iter().map(|r| format!("{} {} ({})", r.workload.name(), r.metric, r.unit)).collect();
    let series: Vec<String> = report.targets.iter().map(|t| t.label.clone()).collect();
    let ratio = |row: usize, target: usize| report.rows[row].ratio(target);
    let caption = format!("strata bench: medians of {} rounds, as a ratio to {}", report.rounds, series[0]);
    crate::chart::ratio_chart(&crate::chart::RatioChart { caption, rows: &rows, series: &series, ratio: &ratio }, path)
}
