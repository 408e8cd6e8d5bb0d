//! The report of `strata bench --target …` as a table, as JSON and as a
//! PNG bar chart (each figure as a ratio to the first target, one bar group
//! per workload figure, so figures of different units share one axis).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::Report;
use strata_common::size::format_size;

pub fn print_table(report: &Report) {
    let labels: Vec<&str> = report.targets.iter().map(|t| t.label.as_str()).collect();
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0).max(12);
    let mut header = format!("{:<6} {:<14} {:<10}", "load", "figure", "unit");
    for label in &labels {
        header.push_str(&format!(" {label:>width$}"));
    }
    for label in labels.iter().skip(1) {
        header.push_str(&format!(" {:>width$}", format!("{label}/{}", labels[0])));
    }
    println!("{header}");
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
        "{:<6} {:<width$} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "load", "strata mount", "mem hits", "mem miss", "disk hits", "disk miss", "from nodes"
    );
    for c in &report.caches {
        println!(
            "{:<6} {:<width$} {:>10} {:>10} {:>10} {:>10} {:>12}",
            c.workload.name(),
            c.target,
            c.delta.memory_hits,
            c.delta.memory_misses,
            c.delta.disk_hits,
            c.delta.disk_misses,
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

/// A font for the chart's text: plotters draws text with a font it is given.
const FONT_FILES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let bytes = FONT_FILES
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .context("no font found (install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("the font file is not usable"))
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One bar group per figure (a row, labelled on the left), one bar per
/// target, lengths as ratios to the first target on a logarithmic axis
/// (ratios here span 0.01 to 1,000).
pub fn plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let groups = report.rows.len().max(1);
    let targets = report.targets.len();
    let ratios = || report.rows.iter().flat_map(|r| (0..targets).map(|i| r.ratio(i))).filter(|r| *r > 0.0);
    let longest = ratios().fold(1.0f64, f64::max) * 2.0;
    let shortest = ratios().fold(1.0f64, f64::min) / 2.0;
    let height = (100 + groups * (targets * 9 + 10)).max(400) as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let caption =
        format!("strata bench: medians of {} rounds, as a ratio to {}", report.rounds, report.targets[0].label);
    // Group g is centred on y = groups - 1 - g (the first at the top).
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d((shortest..longest).log_scale(), -0.5f64..groups as f64 - 0.5)
        .map_err(|e| draw(&e))?;
    let names: Vec<String> =
        report.rows.iter().map(|r| format!("{} {} ({})", r.workload.name(), r.metric, r.unit)).collect();
    let name_at = |y: &f64| {
        let g = groups as f64 - 1.0 - y.round();
        if (y - y.round()).abs() > 0.01 || g < 0.0 {
            String::new()
        } else {
            names.get(g as usize).cloned().unwrap_or_default()
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(groups)
        .y_label_formatter(&name_at)
        .x_desc(format!("ratio to {} (log scale)", report.targets[0].label))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| draw(&e))?;
    let bar = 0.8 / targets as f64;
    for (t, target) in report.targets.iter().enumerate() {
        let color = PALETTE[t % PALETTE.len()];
        let bars = report.rows.iter().enumerate().map(|(g, row)| {
            let top = (groups - 1 - g) as f64 + 0.4 - t as f64 * bar;
            Rectangle::new([(shortest, top), (row.ratio(t).max(shortest), top - bar * 0.9)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| draw(&e))?
            .label(target.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}
