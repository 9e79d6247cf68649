//! The whole-run bar charts: p50, p90, p99, p99.9 and max of one metric, each bar labelled. The
//! report summarises the run's histograms as these percentiles, so they stand in for the
//! histograms.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format::{axis_fmt, finite_or, fmt_ms, thousands};
use super::{Area, FONT, GRID_COLOR, TEXT_COLOR, plot_err};
use crate::client::ClientError;
use crate::client::metrics::Percentiles;

/// One bar chart: p50, p90, p99, p99.9 and max of a metric over the whole run, each bar labelled.
pub(super) fn draw_percentile_bars(area: &Area<'_>, name: &str, p: &Percentiles, color: RGBColor) -> Result<(), ClientError> {
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
