//! The per-second line charts: the echo round trip, the calls connected, and the inter-arrival
//! deviation with the emulator's own send lateness. Seconds with no values of a metric leave a
//! gap in its line rather than a zero.

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::format::{axis_fmt, finite_or};
use super::{Area, CALLS_COLOR, FONT, GRID_COLOR, P50_COLOR, P99_COLOR, SEND_LATE_COLOR, plot_err};
use crate::client::ClientError;
use crate::client::report::{LoadReport, SATURATED_SEND_LATE_MS, WindowReport};

/// Echo round trip per second.
pub(super) fn draw_rtt(area: &Area<'_>, report: &LoadReport, x_max: f64) -> Result<(), ClientError> {
    let p50 = runs(&report.windows, |w| (w.rtt.count > 0).then_some(w.rtt.p50));
    let p99 = runs(&report.windows, |w| (w.rtt.count > 0).then_some(w.rtt.p99));
    let y_max = y_end([&p50, &p99]);
    let mut chart = time_chart(area, "Echo round trip per second", x_max, y_max)?;
    draw_runs(&mut chart, &p50, "p50", P50_COLOR, false)?;
    draw_runs(&mut chart, &p99, "p99", P99_COLOR, false)?;
    legend(&mut chart)
}

/// Calls connected per second.
pub(super) fn draw_calls(area: &Area<'_>, report: &LoadReport, x_max: f64) -> Result<(), ClientError> {
    let points: Vec<(f64, f64)> = report.windows.iter().map(|w| (w.second as f64, w.calls as f64)).collect();
    let y_max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let y_max = (y_max * 1.15).ceil().max(5.0);
    let mut chart = ChartBuilder::on(area)
        .caption("Calls connected", (FONT, 19))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("s since start")
        .y_desc("calls")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID_COLOR)
        .x_labels(x_ticks(x_max, 6))
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_err)?;
    let point_size = if points.len() == 1 { 3 } else { 0 };
    chart.draw_series(LineSeries::new(points, CALLS_COLOR.stroke_width(2)).point_size(point_size)).map_err(plot_err)?;
    Ok(())
}

/// Inter-arrival deviation per second, with the emulator's send lateness.
pub(super) fn draw_arrival(area: &Area<'_>, report: &LoadReport, x_max: f64) -> Result<(), ClientError> {
    let p50 = runs(&report.windows, |w| (w.arrival.count > 0).then_some(w.arrival.p50));
    let p99 = runs(&report.windows, |w| (w.arrival.count > 0).then_some(w.arrival.p99));
    let late = runs(&report.windows, |w| (w.send_late.count > 0).then_some(w.send_late.p99));
    let y_max = y_end([&p50, &p99, &late]);
    let mut chart = time_chart(area, "Inter-arrival deviation from 20 ms per second", x_max, y_max)?;
    if y_max > SATURATED_SEND_LATE_MS {
        let line = vec![(0.0, SATURATED_SEND_LATE_MS), (x_max, SATURATED_SEND_LATE_MS)];
        let style = RGBColor(150, 150, 150).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(line, 2, 4, style))
            .map_err(plot_err)?
            .label(format!("saturation ({SATURATED_SEND_LATE_MS} ms)"))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 2, 4, style));
    }
    draw_runs(&mut chart, &p50, "p50", P50_COLOR, false)?;
    draw_runs(&mut chart, &p99, "p99", P99_COLOR, false)?;
    draw_runs(&mut chart, &late, "emulator send lateness p99", SEND_LATE_COLOR, true)?;
    legend(&mut chart)
}

type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A chart of ms over seconds, with its mesh drawn.
fn time_chart<'a, 'b>(area: &'a Area<'b>, caption: &str, x_max: f64, y_max: f64) -> Result<TimeChart<'a, 'b>, ClientError> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 19))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("s since start")
        .y_desc("ms")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID_COLOR)
        .x_labels(x_ticks(x_max, 12))
        .y_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&axis_fmt(y_max, 8))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

/// Draws the runs of one line, with one legend entry (also when there are no values).
fn draw_runs(
    chart: &mut TimeChart<'_, '_>,
    runs: &[Vec<(f64, f64)>],
    label: &str,
    color: RGBColor,
    dashed: bool,
) -> Result<(), ClientError> {
    let style = color.stroke_width(2);
    let anno = chart.draw_series(LineSeries::new(Vec::<(f64, f64)>::new(), style)).map_err(plot_err)?;
    anno.label(label);
    if dashed {
        anno.legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 3, style));
    } else {
        anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    for run in runs {
        if run.len() == 1 {
            chart.draw_series(LineSeries::new(run.clone(), style.filled()).point_size(3)).map_err(plot_err)?;
        } else if dashed {
            chart.draw_series(DashedLineSeries::new(run.clone(), 6, 3, style)).map_err(plot_err)?;
        } else {
            chart.draw_series(LineSeries::new(run.clone(), style)).map_err(plot_err)?;
        }
    }
    Ok(())
}

/// Draws the legend of a time chart.
fn legend<'a, 'b: 'a>(chart: &mut TimeChart<'a, 'b>) -> Result<(), ClientError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FONT, 15))
        .draw()
        .map_err(plot_err)
}

/// Splits the windows into runs of consecutive seconds where `value` is defined and finite.
pub(super) fn runs(windows: &[WindowReport], value: impl Fn(&WindowReport) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last: Option<usize> = None;
    for w in windows {
        let Some(v) = value(w).filter(|v| v.is_finite()) else {
            last = None;
            continue;
        };
        let point = (w.second as f64, v);
        match (last, out.last_mut()) {
            (Some(prev), Some(run)) if w.second == prev + 1 => run.push(point),
            _ => out.push(vec![point]),
        }
        last = Some(w.second);
    }
    out
}

/// The end of the time axis: the run's length, at least 1 s, or 10 s for a run with nothing to show.
pub(super) fn x_end(report: &LoadReport) -> f64 {
    let last = report.windows.iter().map(|w| w.second as f64 + 1.0).fold(0.0_f64, f64::max);
    let end = last.max(finite_or(report.elapsed_s, 0.0).ceil().min(86_400.0));
    if end > 0.0 { end.max(1.0) } else { 10.0 }
}

/// How many ticks a time axis up to `x_max` gets: at most `max`, and no more than one a second.
fn x_ticks(x_max: f64, max: usize) -> usize {
    // x_max is at most a day plus one second, so the cast is exact.
    (x_max.ceil() as usize + 1).clamp(2, max)
}

/// The top of a ms axis: room above the largest value for the legend, at least 1 ms.
fn y_end<const N: usize>(lines: [&Vec<Vec<(f64, f64)>>; N]) -> f64 {
    let top = lines.iter().flat_map(|runs| runs.iter().flatten()).map(|p| p.1).fold(0.0_f64, f64::max);
    if top > 0.0 { top * 1.35 } else { 1.0 }
}
