//! `--plot FILE`: an SVG with two panels: throughput over time, one line per mode
//! (sampled once per second during the phases), with a dashed vertical line and the
//! phase's name where each phase of each mode began (in the mode's colour; each mode's
//! time counts from its own load), and write amplification per mode over
//! all its write phases (load and updates): from the stores' own counters in `bench`,
//! from /proc/self/io (counted alike for every store) in `compare`.

use super::phase::Sample;
use super::report::PhaseReport;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
/// Height of one row of phase labels, as a share of the throughput axis: each mode's
/// labels get their own row, so that modes whose phases begin at the same time do
/// not print over each other.
const PHASE_LABEL_ROW_SHARE: f64 = 0.05;

/// Which bytes written the write-amplification panel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAmpSource {
    /// Device + LSM bytes from each store's own counters (`write_amp`).
    StoreCounters,
    /// This process's /proc/self/io bytes (`io_write_amp`).
    ProcessIo,
}

/// Total write amplification of `mode` over its write phases, as the report defines it.
fn mode_write_amp(rows: &[PhaseReport], mode: &str, source: WriteAmpSource) -> f64 {
    let (mut written, mut user) = (0u64, 0u64);
    for r in rows.iter().filter(|r| r.mode == mode && r.user_bytes > 0) {
        written += match source {
            WriteAmpSource::StoreCounters => r.device_write_bytes + r.lsm_write_bytes,
            WriteAmpSource::ProcessIo => r.io_write_bytes.unwrap_or(0),
        };
        user += r.user_bytes;
    }
    if user == 0 {
        0.0
    } else {
        written as f64 / user as f64
    }
}

type TimeChart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws a dashed vertical line where each of `mode`'s phases began, with the phase's
/// name beside it near the bottom, in the colour of the mode's throughput line.
fn mark_phase_starts(
    chart: &mut TimeChart,
    rows: &[PhaseReport],
    mode: &str,
    mode_index: usize,
    kops_max: f64,
) -> Result<(), String> {
    let color = COLORS[mode_index % COLORS.len()];
    let label_y = kops_max * PHASE_LABEL_ROW_SHARE * (mode_index as f64 + 0.5);
    for r in rows.iter().filter(|r| r.mode == mode) {
        let t = r.began_at_seconds;
        chart
            .draw_series(DashedLineSeries::new(
                [(t, 0.0), (t, kops_max)],
                6,
                4,
                color.mix(0.6).stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Text::new(
                r.phase.clone(),
                (t, label_y),
                ("sans-serif", 12).into_font().color(&color),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn write_svg(
    path: &Path,
    samples: &[(String, Vec<Sample>)],
    rows: &[PhaseReport],
    source: WriteAmpSource,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(800);

    let t_max = samples
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.at_seconds))
        .fold(1.0f64, f64::max);
    let kops_max = samples
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.ops_per_sec / 1000.0))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("throughput over time", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..kops_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the mode's load began")
        .y_desc("kops/s")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (mode, _)) in samples.iter().enumerate() {
        mark_phase_starts(&mut chart, rows, mode, i, kops_max)?;
    }
    for (i, (mode, points)) in samples.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.at_seconds, p.ops_per_sec / 1000.0)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(mode.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;

    let modes: Vec<&str> = samples.iter().map(|(m, _)| m.as_str()).collect();
    let amps: Vec<f64> = modes
        .iter()
        .map(|m| mode_write_amp(rows, m, source))
        .collect();
    let amp_max = amps.iter().copied().fold(1.0f64, f64::max) * 1.2;
    let mut bars = ChartBuilder::on(&right)
        .caption("write amplification (load + updates)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (0..modes.len().max(1) as u32 - 1).into_segmented(),
            0.0..amp_max,
        )
        .map_err(|e| e.to_string())?;
    bars.configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => modes.get(*i as usize).unwrap_or(&"").to_string(),
            _ => String::new(),
        })
        .y_desc(match source {
            WriteAmpSource::StoreCounters => "(device + LSM bytes written) / user bytes",
            WriteAmpSource::ProcessIo => "(/proc/self/io bytes written) / user bytes",
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, amp) in amps.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        bars.draw_series(
            Histogram::vertical(&bars)
                .style(color.filled())
                .margin(20)
                .data([(i as u32, *amp)]),
        )
        .map_err(|e| e.to_string())?;
        // Name and value above the bar: axis labels of a one-bar chart may be elided.
        bars.draw_series(std::iter::once(Text::new(
            format!("{} {amp:.2}", modes[i]),
            (SegmentValue::CenterOf(i as u32), amp + amp_max * 0.03),
            ("sans-serif", 16).into_font().color(&BLACK),
        )))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
