//! Result rows and their table.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub clients: usize,
    pub ops: u64,
    /// Operations per second on Strata.
    pub strata_ops_per_sec: f64,
    /// Operations per second of the same workload on the baseline.
    pub baseline_ops_per_sec: f64,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        if self.baseline_ops_per_sec > 0.0 { self.strata_ops_per_sec / self.baseline_ops_per_sec } else { 0.0 }
    }
}

pub fn print_table(rows: &[Row], baseline: &str) {
    println!(
        "{:<10} {:>7} {:>9} {:>14} {:>14} {:>9}",
        "op",
        "clients",
        "ops",
        "strata ops/s",
        format!("{baseline} ops/s"),
        "ratio"
    );
    for r in rows {
        println!(
            "{:<10} {:>7} {:>9} {:>14.0} {:>14.0} {:>9.3}",
            r.workload,
            r.clients,
            r.ops,
            r.strata_ops_per_sec,
            r.baseline_ops_per_sec,
            r.ratio()
        );
    }
}

/// A side-by-side table's header: `first_columns`, a column per target,
/// then one per target after the first for its ratio to the first.
pub fn ratio_header(first_columns: String, labels: &[&str], width: usize) -> String {
    let mut header = first_columns;
    for label in labels {
        header.push_str(&format!(" {label:>width$}"));
    }
    for label in labels.iter().skip(1) {
        header.push_str(&format!(" {:>width$}", format!("{label}/{}", labels[0])));
    }
    header
}
