//! Plots for a run, as SVG: latency over time (one point per completed operation, coloured
//! by outcome) and throughput over time (completions per second by outcome), both with the
//! fault windows shaded. Reads the history and fault records; writes only the SVG files.

use std::path::Path;

use plotters::prelude::*;

use crate::history::{History, OpType};
use crate::nemesis::FaultRecord;

const OK: RGBColor = RGBColor(40, 120, 200);
const FAIL: RGBColor = RGBColor(220, 60, 40);
const INFO: RGBColor = RGBColor(240, 160, 0);
const FAULT: RGBColor = RGBColor(120, 120, 120);

fn colour(kind: OpType) -> RGBColor {
    match kind {
        OpType::Ok => OK,
        OpType::Fail => FAIL,
        _ => INFO,
    }
}

/// (completion time in s, latency in ms, outcome) of every invoke/complete pair.
fn latencies(history: &History) -> Vec<(f64, f64, OpType)> {
    history
        .pairs()
        .into_iter()
        .filter_map(|(inv, done)| {
            let done = done?;
            let t = done.time_ns as f64 / 1e9;
            let ms = done.time_ns.saturating_sub(inv.time_ns) as f64 / 1e6;
            Some((t, ms.max(0.01), done.kind))
        })
        .collect()
}

/// Shades the fault windows from `y0` to `y1` on a chart with an f64 time axis.
macro_rules! shade {
    ($chart:expr, $faults:expr, $y0:expr, $y1:expr) => {
        $chart
            .draw_series($faults.iter().map(|f| {
                let x0 = f.start_ns as f64 / 1e9;
                let x1 = f.end_ns as f64 / 1e9;
                Rectangle::new([(x0, $y0), (x1, $y1)], FAULT.mix(0.15).filled())
            }))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        $chart
            // Labels only while they fit; long runs list their faults in summary.md.
            .draw_series(
                $faults
                    .iter()
                    .take(if $faults.len() <= 20 { usize::MAX } else { 0 })
                    .map(|f| {
                        let x0 = f.start_ns as f64 / 1e9;
                        Text::new(f.kind.clone(), (x0, $y1), ("sans-serif", 11).into_font())
                    }),
            )
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?
    };
}

/// Draws the legend and writes the file (a macro: the two charts have different coordinate
/// types, latency being log-scaled).
macro_rules! finish {
    ($chart:expr, $root:expr) => {
        $chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        $root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    };
}

/// Writes `latency.svg` and `throughput.svg` into `dir`.
pub fn write_plots(dir: &Path, history: &History, faults: &[FaultRecord]) -> anyhow::Result<()> {
    let points = latencies(history);
    let t_max = points
        .iter()
        .map(|p| p.0)
        .chain(faults.iter().map(|f| f.end_ns as f64 / 1e9))
        .fold(1.0_f64, f64::max);
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot: {e}");

    // Latency, log scale. Past MAX_POINTS, ok points are sampled (every fail and info
    // point is kept) so the SVG stays small; the caption says so.
    const MAX_POINTS: usize = 8_000;
    let stride = points.len().div_ceil(MAX_POINTS).max(1);
    let caption = if stride > 1 {
        format!("latency over time (shaded: fault windows; 1 in {stride} ok points shown)")
    } else {
        "latency over time (shaded: fault windows)".to_string()
    };
    let path = dir.join("latency.svg");
    let root = SVGBackend::new(&path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let l_max = points.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, (0.01..l_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    shade!(chart, faults, 0.01, l_max);
    for kind in [OpType::Ok, OpType::Fail, OpType::Info] {
        let c = colour(kind);
        chart
            .draw_series(
                points
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| p.2 == kind && (kind != OpType::Ok || i % stride == 0))
                    .map(|(_, p)| p)
                    .map(|p| Circle::new((p.0, p.1), 1, c.filled())),
            )
            .map_err(|e| err(&e))?
            .label(format!("{kind:?}").to_lowercase())
            .legend(move |(x, y)| Circle::new((x, y), 3, c.filled()));
    }
    finish!(chart, root);
    drop(chart);
    drop(root);

    // Throughput: completions per second by outcome.
    let secs = t_max.ceil() as usize + 1;
    let mut buckets = vec![[0u32; 3]; secs];
    for p in &points {
        let i = (p.0 as usize).min(secs - 1);
        let k = match p.2 {
            OpType::Ok => 0,
            OpType::Fail => 1,
            _ => 2,
        };
        buckets[i][k] += 1;
    }
    let y_max = buckets
        .iter()
        .flat_map(|b| b.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let path = dir.join("throughput.svg");
    let root = SVGBackend::new(&path, (1200, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "throughput over time (shaded: fault windows)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("ops/s")
        .draw()
        .map_err(|e| err(&e))?;
    shade!(chart, faults, 0.0, y_max);
    for (k, kind) in [OpType::Ok, OpType::Fail, OpType::Info]
        .into_iter()
        .enumerate()
    {
        let c = colour(kind);
        chart
            .draw_series(LineSeries::new(
                buckets
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i as f64 + 0.5, b[k] as f64)),
                c.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(format!("{kind:?}").to_lowercase())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    finish!(chart, root);
    Ok(())
}
