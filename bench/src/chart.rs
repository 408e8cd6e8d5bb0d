//! The benchmarks' chart: one bar group per figure, one bar per target,
//! each bar the figure as a ratio to the first target on a logarithmic axis,
//! so figures of different units share one axis.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// What [`ratio_chart`] draws.
pub struct RatioChart<'a> {
    pub caption: String,
    /// One name per figure (bar group), top to bottom.
    pub rows: &'a [String],
    /// One label per target; the first is the one ratios are to.
    pub series: &'a [String],
    /// The ratio of figure `row` for target `series` to the first target.
    pub ratio: &'a dyn Fn(usize, usize) -> f64,
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
pub fn ratio_chart(chart: &RatioChart<'_>, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let groups = chart.rows.len().max(1);
    let targets = chart.series.len();
    let ratio = chart.ratio;
    let ratios = || (0..chart.rows.len()).flat_map(|r| (0..targets).map(move |i| ratio(r, i))).filter(|r| *r > 0.0);
    let longest = ratios().fold(1.0f64, f64::max) * 2.0;
    let shortest = ratios().fold(1.0f64, f64::min) / 2.0;
    let height = (100 + groups * (targets * 9 + 10)).max(400) as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    // Group g is centred on y = groups - 1 - g (the first at the top).
    let caption = chart.caption.clone();
    let (names, series) = (chart.rows, chart.series);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d((shortest..longest).log_scale(), -0.5f64..groups as f64 - 0.5)
        .map_err(|e| draw(&e))?;
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
        .x_desc(format!("ratio to {} (log scale)", series[0]))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| draw(&e))?;
    let bar = 0.8 / targets as f64;
    for (t, label) in series.iter().enumerate() {
        let color = PALETTE[t % PALETTE.len()];
        let bars = (0..names.len()).map(|g| {
            let top = (groups - 1 - g) as f64 + 0.4 - t as f64 * bar;
            Rectangle::new([(shortest, top), (ratio(g, t).max(shortest), top - bar * 0.9)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| draw(&e))?
            .label(label.clone())
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
