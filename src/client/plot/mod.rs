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
//!
//! `panels` draws the header and the totals, `timeline` the per-second charts, `bars` the
//! whole-run percentiles; `format` writes their numbers.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::ClientError;
use super::metrics::Percentiles;
use super::report::LoadReport;

mod bars;
mod format;
mod panels;
mod timeline;

use bars::draw_percentile_bars;
use panels::{draw_header, draw_totals};
use timeline::{draw_arrival, draw_calls, draw_rtt, x_end};

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

#[cfg(test)]
mod tests {
    use super::timeline::runs;
    use super::*;
    use crate::client::report::{Totals, WindowReport};

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
