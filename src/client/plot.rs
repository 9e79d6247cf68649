//! One SVG picture of a load run (`callpipe load --plot`), about 1200×900, readable at a glance.
//!
//! A header names the URL, the number of calls, the audio rate and the duration (and warns when
//! the emulator itself was saturated). Below it:
//!
//! - top left: the echo round trip per second, p50 and p99, in ms;
//! - top right: the calls connected at the end of each second;
//! - middle left: the deviation of inter-arrival times from 20 ms per second, p50 and p99, with
//!   the emulator's own send lateness p99 as a dashed line, so that a saturated client shows;
//! - middle right: the run's totals and threshold failures, as text;
//! - bottom: one bar chart per metric (round trip, inter-arrival deviation, RFC 3550 jitter, send
//!   lateness) of p50, p90, p99, p99.9 and max over the whole run. The per-run histograms are
//!   summarised as these percentiles in the report, so they stand in for the histograms.
//!
//! Seconds with no values of a metric leave a gap in its line rather than a zero. Text is laid
//! out with plotters' built-in estimate (there is no font backend) and written by the SVG backend
//! as `<text>` elements, which the viewer renders with its own sans-serif font.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ClientError;
use super::metrics::Percentiles;
use super::report::{LoadReport, SATURATED_SEND_LATE_MS, WindowReport};

/// Width of the picture, in px.
const WIDTH: u32 = 1200;
/// Height of the picture, in px.
const HEIGHT: u32 = 900;
/// Font of all text.
const FONT: &str = "sans-serif";

const P50_COLOR: RGBColor = RGBColor(31, 119, 180);
const P99_COLOR: RGBColor = RGBColor(214, 39, 40);
const SEND_LATE_COLOR: RGBColor = RGBColor(255, 127, 14);
const CALLS_COLOR: RGBColor = RGBColor(44, 160, 44);
const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);
const TEXT_COLOR: RGBColor = RGBColor(40, 40, 40);
const WARN_COLOR: RGBColor = RGBColor(200, 0, 0);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Writes the report's plots as one SVG file at `path`.
///
/// Drawing errors are [`ClientError::Invalid`], writing the file [`ClientError::Io`].
pub fn write_svg(report: &LoadReport, path: &Path) -> Result<(), ClientError> {
    let svg = render(report)?;
    std::fs::write(path, svg)?;
    Ok(())
}

/// Maps a plotters error.
fn plot_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Invalid(format!("plot: {e}"))
}

/// Draws the whole picture into a string.
fn render(report: &LoadReport) -> Result<String, ClientError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (header, body) = root.split_vertically(62);
        draw_header(&header, report)?;
        let (row1, rest) = body.split_vertically(290);
        let (row2, row3) = rest.split_vertically(272);
        let (rtt_area, calls_area) = row1.split_horizontally(800);
        let (arrival_area, totals_area) = row2.split_horizontally(800);

        let x_max = x_end(report);
        draw_rtt(&rtt_area, report, x_max)?;
        draw_calls(&calls_area, report, x_max)?;
        draw_arrival(&arrival_area, report, x_max)?;
        draw_totals(&totals_area, report)?;

        let bars = row3.split_evenly((1, 4));
        let metrics: [(&str, &Percentiles, RGBColor); 4] = [
            ("echo round trip", &report.rtt, P50_COLOR),
            ("inter-arrival deviation", &report.arrival, RGBColor(148, 103, 189)),
            ("RFC 3550 jitter (per call)", &report.jitter, RGBColor(23, 190, 207)),
            ("emulator send lateness", &report.send_late, SEND_LATE_COLOR),
        ];
        for (area, (name, p, color)) in bars.iter().zip(metrics) {
            draw_percentile_bars(area, name, p, color)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The title and a line of context.
fn draw_header(area: &Area<'_>, report: &LoadReport) -> Result<(), ClientError> {
    let centre = i32::try_from(WIDTH / 2).unwrap_or(600);
    let title = format!(
        "{}: {} calls, {} Hz audio, {:.1} s",
        shorten(&report.url, 72),
        report.totals.calls,
        report.rate,
        finite_or(report.elapsed_s, 0.0)
    );
    let style = TextStyle::from((FONT, 26).into_font().style(FontStyle::Bold)).color(&TEXT_COLOR).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(title, (centre, 8), style)).map_err(plot_err)?;
    let (line, color) = if report.client_saturated {
        (
            format!(
                "WARNING: the emulator itself sent late (send lateness p99 {} ms > {} ms): the server's figures may look worse than they are",
                fmt_ms(report.send_late.p99),
                SATURATED_SEND_LATE_MS
            ),
            WARN_COLOR,
        )
    } else {
        (
            format!(
                "per-second lines skip seconds with no values · emulator send lateness p99 {} ms (saturated above {} ms)",
                fmt_ms(report.send_late.p99),
                SATURATED_SEND_LATE_MS
            ),
            RGBColor(100, 100, 100),
        )
    };
    let style = TextStyle::from((FONT, 18).into_font()).color(&color).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(line, (centre, 38), style)).map_err(plot_err)?;
    Ok(())
}

/// Echo round trip per second.
fn draw_rtt(area: &Area<'_>, report: &LoadReport, x_max: f64) -> Result<(), ClientError> {
    let p50 = runs(&report.windows, |w| (w.rtt.count > 0).then_some(w.rtt.p50));
    let p99 = runs(&report.windows, |w| (w.rtt.count > 0).then_some(w.rtt.p99));
    let y_max = y_end([&p50, &p99]);
    let mut chart = time_chart(area, "Echo round trip per second", x_max, y_max)?;
    draw_runs(&mut chart, &p50, "p50", P50_COLOR, false)?;
    draw_runs(&mut chart, &p99, "p99", P99_COLOR, false)?;
    legend(&mut chart)
}

/// Calls connected per second.
fn draw_calls(area: &Area<'_>, report: &LoadReport, x_max: f64) -> Result<(), ClientError> {
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
fn draw_arrival(area: &Area<'_>, report: &LoadReport, x_max: f64) -> Result<(), ClientError> {
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

/// The run's totals as text in a frame.
fn draw_totals(area: &Area<'_>, report: &LoadReport) -> Result<(), ClientError> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (i32::try_from(w).unwrap_or(400), i32::try_from(h).unwrap_or(270));
    area.draw(&Rectangle::new([(8, 8), (w - 10, h - 8)], RGBColor(180, 180, 180).stroke_width(1))).map_err(plot_err)?;
    let t = &report.totals;
    let mut lines: Vec<(String, RGBColor)> = vec![
        ("Totals".to_owned(), TEXT_COLOR),
        (format!("calls {}, failed {}", thousands(t.calls as u64), t.failed), if t.failed > 0 { WARN_COLOR } else { TEXT_COLOR }),
        (format!("frames sent {}, received {}", thousands(t.frames_sent), thousands(t.frames_received)), TEXT_COLOR),
        (format!("lost {} ({:.4} %), duplicated {}, reordered {}", t.lost, t.loss * 100.0, t.duplicated, t.reordered), TEXT_COLOR),
        (format!("wrong size {}, bad text {}", t.wrong_size, t.bad_text), if t.wrong_size > 0 { WARN_COLOR } else { TEXT_COLOR }),
        (format!("playout overflow {}, underrun gaps {}", t.playout_overflow, t.underrun_gaps), TEXT_COLOR),
        (format!("connect p50 {} ms, p99 {} ms", fmt_ms(report.connect.p50), fmt_ms(report.connect.p99)), TEXT_COLOR),
        (format!("round trip p50 {} ms, p99 {} ms", fmt_ms(report.rtt.p50), fmt_ms(report.rtt.p99)), TEXT_COLOR),
        (format!("send lateness p99 {} ms", fmt_ms(report.send_late.p99)), if report.client_saturated { WARN_COLOR } else { TEXT_COLOR }),
    ];
    if report.failures.is_empty() {
        lines.push(("thresholds: all met".to_owned(), CALLS_COLOR));
    }
    let room = usize::try_from((h - 40) / 21).unwrap_or(0).saturating_sub(lines.len());
    let shown = report.failures.len().min(room);
    for (i, f) in report.failures.iter().take(shown).enumerate() {
        let more = report.failures.len() - shown;
        let text = if i + 1 == shown && more > 0 {
            format!("FAIL: {} (+{more} more)", shorten(f, 34))
        } else {
            format!("FAIL: {}", shorten(f, 50))
        };
        lines.push((text, WARN_COLOR));
    }
    for (i, (text, color)) in lines.into_iter().enumerate() {
        let font = if i == 0 { (FONT, 19).into_font().style(FontStyle::Bold) } else { (FONT, 17).into_font() };
        let style = TextStyle::from(font).color(&color).pos(Pos::new(HPos::Left, VPos::Top));
        let y = 18 + i32::try_from(i).unwrap_or(0) * 21 + if i > 0 { 6 } else { 0 };
        area.draw(&Text::new(text, (20, y), style)).map_err(plot_err)?;
    }
    Ok(())
}

/// One bar chart: p50, p90, p99, p99.9 and max of a metric over the whole run, each bar labelled.
fn draw_percentile_bars(area: &Area<'_>, name: &str, p: &Percentiles, color: RGBColor) -> Result<(), ClientError> {
    const NAMES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];
    let values = [p.p50, p.p90, p.p99, p.p999, p.max].map(|v| finite_or(v, 0.0).max(0.0));
    let top = values.iter().copied().fold(0.0_f64, f64::max);
    let y_max = if top > 0.0 { top * 1.2 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{name} (n={})", thousands(p.count)), (FONT, 17))
        .margin(8)
        .x_label_area_size(26)
        .y_label_area_size(48)
        .build_cartesian_2d((0u32..4u32).into_segmented(), 0.0..y_max)
        .map_err(plot_err)?;
    let x_names = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            usize::try_from(*i).ok().and_then(|i| NAMES.get(i)).map_or(String::new(), |s| (*s).to_owned())
        }
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID_COLOR)
        .y_desc("ms")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .y_labels(5)
        .x_label_formatter(&x_names)
        .y_label_formatter(&axis_fmt(y_max, 5))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style_func(move |x, _| match x {
                    SegmentValue::Exact(4) => color.mix(0.55).filled(),
                    _ => color.filled(),
                })
                .margin(6)
                .data((0u32..5).zip(values)),
        )
        .map_err(plot_err)?;
    if p.count > 0 {
        let style = TextStyle::from((FONT, 14).into_font()).color(&TEXT_COLOR).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series((0u32..5).zip(values).map(|(i, v)| Text::new(fmt_ms(v), (SegmentValue::CenterOf(i), v), style.clone())))
            .map_err(plot_err)?;
    } else {
        let style = TextStyle::from((FONT, 16).into_font()).color(&RGBColor(120, 120, 120)).pos(Pos::new(HPos::Center, VPos::Center));
        chart.draw_series(std::iter::once(Text::new("no values", (SegmentValue::CenterOf(2), y_max / 2.0), style))).map_err(plot_err)?;
    }
    Ok(())
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
fn runs(windows: &[WindowReport], value: impl Fn(&WindowReport) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
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
fn x_end(report: &LoadReport) -> f64 {
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

/// `v`, or `default` if it is NaN or infinite.
fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() { v } else { default }
}

/// A value in ms with as many decimals as it deserves.
fn fmt_ms(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Tick labels of an axis from 0 to `max` with about `ticks` ticks, all with the same decimals.
fn axis_fmt(max: f64, ticks: u32) -> impl Fn(&f64) -> String {
    let step = max / f64::from(ticks.max(1));
    let decimals = if step >= 1.0 {
        0
    } else if step >= 0.1 {
        1
    } else if step >= 0.01 {
        2
    } else {
        3
    };
    move |v: &f64| format!("{v:.decimals$}")
}

/// `n` with commas between groups of three digits.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `s` cut to `max` characters, with an ellipsis if cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::Totals;

    fn pct(count: u64, base: f64) -> Percentiles {
        if count == 0 {
            return Percentiles { count: 0, p50: 0.0, p90: 0.0, p99: 0.0, p999: 0.0, max: 0.0 };
        }
        Percentiles { count, p50: base, p90: base * 1.6, p99: base * 3.0, p999: base * 5.0, max: base * 8.0 }
    }

    fn sample(windows: usize) -> LoadReport {
        let windows = (0..windows)
            .map(|s| {
                let x = s as f64;
                let ramp = (s.min(10) * 50) as u64;
                // A gap in the round trips at second 20, and a burst of send lateness at 30..35.
                let rtt_count = if s == 20 { 0 } else { ramp * 50 };
                let late = if (30..35).contains(&s) { 4.0 + (x - 30.0) } else { 0.05 + 0.01 * (x % 3.0) };
                WindowReport {
                    second: s,
                    calls: ramp,
                    rtt: pct(rtt_count, 0.8 + 0.02 * x + if s % 13 == 0 { 1.5 } else { 0.0 }),
                    arrival: pct(ramp * 50, 0.3 + 0.05 * (x % 7.0)),
                    send_late: pct(ramp * 50, late),
                }
            })
            .collect();
        LoadReport {
            url: "ws://127.0.0.1:8080/media".to_owned(),
            rate: 16000,
            elapsed_s: 45.2,
            totals: Totals {
                calls: 500,
                failed: 2,
                frames_sent: 1_100_000,
                frames_received: 1_099_000,
                lost: 12,
                loss: 0.00002,
                ..Totals::default()
            },
            connect: pct(500, 3.0),
            rtt: pct(1_000_000, 1.1),
            arrival: pct(1_000_000, 0.4),
            jitter: pct(500, 0.2),
            send_late: pct(1_000_000, 1.9),
            client_saturated: true,
            windows,
            failures: vec!["2 of 500 calls failed".to_owned(), "p99 round trip 3.300 ms is over 3 ms".to_owned()],
            errors: Vec::new(),
        }
    }

    fn write_and_read(report: &LoadReport, name: &str) -> String {
        let path = std::env::temp_dir().join(format!("callpipe-plot-{}-{name}.svg", std::process::id()));
        let written = write_svg(report, &path);
        let svg = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        assert!(written.is_ok(), "{written:?}");
        match svg {
            Ok(svg) => svg,
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }

    #[test]
    fn writes_an_svg_with_lines() {
        let svg = write_and_read(&sample(45), "full");
        assert!(svg.starts_with("<svg"), "{}", svg.chars().take(200).collect::<String>());
        assert!(svg.contains("ws://127.0.0.1:8080/media"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        assert!(svg.contains("emulator send lateness p99"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    fn empty() -> LoadReport {
        let mut report = sample(0);
        for p in [&mut report.connect, &mut report.rtt, &mut report.arrival, &mut report.jitter, &mut report.send_late] {
            *p = pct(0, 0.0);
        }
        report.elapsed_s = 0.0;
        report.totals = Totals::default();
        report.client_saturated = false;
        report.failures.clear();
        report
    }

    #[test]
    fn writes_an_empty_report() {
        let svg = write_and_read(&empty(), "empty");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("ws://127.0.0.1:8080/media"));
        assert!(svg.contains("no values"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn windows_with_zero_counts_and_odd_values() {
        let mut report = sample(5);
        for w in &mut report.windows {
            w.rtt = pct(0, 0.0);
        }
        report.windows[2].arrival.p99 = f64::NAN;
        report.elapsed_s = f64::INFINITY;
        let svg = write_and_read(&report, "odd");
        assert!(svg.starts_with("<svg"));
    }

    #[test]
    fn runs_break_at_gaps() {
        let mut report = sample(6);
        report.windows[2].rtt.count = 0;
        let r = runs(&report.windows, |w| (w.rtt.count > 0).then_some(w.rtt.p50));
        assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn errors_are_io_errors() {
        let path = std::env::temp_dir().join("callpipe-no-such-dir").join("x").join("plot.svg");
        assert!(matches!(write_svg(&sample(3), &path), Err(ClientError::Io(_))));
    }

    /// Writes `/tmp/sample_plot.svg` for a look: `cargo test --lib client::plot -- --ignored`.
    #[test]
    #[ignore = "writes /tmp/sample_plot.svg"]
    fn sample_plot() {
        assert!(write_svg(&sample(45), Path::new("/tmp/sample_plot.svg")).is_ok());
        assert!(write_svg(&sample(0), Path::new("/tmp/sample_plot_no_windows.svg")).is_ok());
        assert!(write_svg(&empty(), Path::new("/tmp/sample_plot_empty.svg")).is_ok());
        let mut short = sample(3);
        short.elapsed_s = 2.4;
        assert!(write_svg(&short, Path::new("/tmp/sample_plot_short.svg")).is_ok());
    }
}
