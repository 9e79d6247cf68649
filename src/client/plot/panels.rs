//! The picture's text: the header (what was run, and whether the emulator itself was saturated)
//! and the frame of the run's totals and threshold failures.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format::{finite_or, fmt_ms, shorten, thousands};
use super::{Area, CALLS_COLOR, FONT, TEXT_COLOR, WARN_COLOR, WIDTH, plot_err};
use crate::client::ClientError;
use crate::client::report::{LoadReport, SATURATED_SEND_LATE_MS};

/// The title and a line of context.
pub(super) fn draw_header(area: &Area<'_>, report: &LoadReport) -> Result<(), ClientError> {
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

/// The run's totals as text in a frame.
pub(super) fn draw_totals(area: &Area<'_>, report: &LoadReport) -> Result<(), ClientError> {
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
