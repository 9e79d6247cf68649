//! The Prometheus text exposition format, version 0.0.4, written by hand.
//!
//! [`Exposition`] builds one scrape's text: each metric *family* gets its `# HELP` and `# TYPE`
//! lines once, followed by its samples, one per line, `name{label="value",...} value`. Label
//! values are escaped as the format requires (backslash, double quote, line feed), and so is help
//! text (backslash, line feed). Metric and label names are the caller's constants: they are
//! checked by `debug_assert!` only (`[a-zA-Z_:][a-zA-Z0-9_:]*` and `[a-zA-Z_][a-zA-Z0-9_]*`,
//! counters ending in `_total`).
//!
//! [`Exposition::histogram`] writes a [`stats::Histogram`](crate::stats::Histogram) as a
//! Prometheus histogram: cumulative `_bucket{le="..."}` counts at the bounds given (in seconds),
//! the `+Inf` bucket, `_sum` in seconds and `_count`. The histogram's own buckets are finer than
//! any Prometheus bound list (exact below 64 of its unit, 16 per octave above): a fine bucket is
//! counted under a bound only if its upper edge is at or below the bound, so each `le` count is
//! exact to the fine bucket's resolution (within 6.25 % of the bound) and never counts a value
//! above its bound.
//!
//! No I/O: [`Exposition::finish`] returns the text, to be served with [`CONTENT_TYPE`].

use std::fmt::Write as _;

use crate::stats::Histogram;

/// The HTTP `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds in seconds for pacing lateness: 0.1 ms to 100 ms.
pub const LATENESS_BOUNDS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.1];

/// Bucket bounds in seconds for a processor's time per pass: 1 µs to 10 ms.
pub const PROCESSOR_BOUNDS: &[f64] =
    &[0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01];

/// The unit a [`Histogram`] was recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds ([`Histogram::record`], [`Histogram::record_us`]).
    Microseconds,
    /// Nanoseconds (processor times).
    Nanoseconds,
}

impl Unit {
    /// Units in one second (exact as a float, so conversions round once).
    fn per_second(self) -> f64 {
        match self {
            Unit::Microseconds => 1e6,
            Unit::Nanoseconds => 1e9,
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that only goes up (its name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count; written with [`Exposition::histogram`].
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One scrape's text, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    /// The family being written: its name and type.
    current: Option<(String, Kind)>,
    /// Families already closed, to catch one written twice (debug builds only).
    #[cfg(debug_assertions)]
    closed: Vec<String>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts family `name`: writes its `# HELP` and `# TYPE` lines. Calling it again with the
    /// name of the family being written does nothing, so samples of one family may be added by
    /// several calls; a family must not be started again after another one.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Exposition {
        if let Some((current, current_kind)) = &self.current {
            if current == name {
                debug_assert_eq!(*current_kind, kind, "family {name} written with two types");
                return self;
            }
            #[cfg(debug_assertions)]
            self.closed.push(current.clone());
        }
        #[cfg(debug_assertions)]
        debug_assert!(!self.closed.iter().any(|c| c == name), "family {name} started twice");
        debug_assert!(is_metric_name(name), "invalid metric name {name:?}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "counter {name} must end in _total");
        self.text.push_str("# HELP ");
        self.text.push_str(name);
        self.text.push(' ');
        push_escaped(&mut self.text, help, false);
        self.text.push_str("\n# TYPE ");
        self.text.push_str(name);
        self.text.push(' ');
        self.text.push_str(kind.as_str());
        self.text.push('\n');
        self.current = Some((name.to_owned(), kind));
        self
    }

    /// Adds a sample with `labels` to the counter or gauge family being written.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Exposition {
        let Some((name, kind)) = self.current.take() else {
            debug_assert!(false, "sample written before any family");
            return self;
        };
        debug_assert!(kind != Kind::Histogram, "histogram samples are written by Exposition::histogram");
        self.line(&name, "", labels, None, value);
        self.current = Some((name, kind));
        self
    }

    /// Writes `histogram` (recorded in `unit`) as one series of histogram family `name`, with cumulative buckets at
    /// `bounds` (seconds, ascending), `+Inf`, `_sum` in seconds and `_count`. Starts the family
    /// unless it is the one being written, so a family's series may come from several calls.
    ///
    /// The counts come from one [`snapshot`](Histogram::snapshot) of the histogram, so they agree
    /// with each other (`+Inf` equals `_count`) while values are still being recorded.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
        unit: Unit,
        bounds: &[f64],
    ) -> &mut Exposition {
        debug_assert!(labels.iter().all(|(label, _)| *label != "le"), "`le` is the histogram's own label");
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        self.family(name, Kind::Histogram, help);
        let snapshot = histogram.snapshot();
        let mut le = String::new();
        for &bound in bounds {
            // The largest whole unit at or below the bound, the epsilon absorbing the rounding
            // of bound × units per second (0.0001 × 1e6 may come out a hair under 100).
            let units = (bound * unit.per_second() * (1.0 + 1e-12)).floor();
            let count = if units < 0.0 { 0 } else { snapshot.count_at_or_below(units as u64) };
            le.clear();
            push_number(&mut le, bound);
            self.line(name, "_bucket", labels, Some(&le), count as f64);
        }
        let count = snapshot.count();
        self.line(name, "_bucket", labels, Some("+Inf"), count as f64);
        self.line(name, "_sum", labels, None, snapshot.sum() as f64 / unit.per_second());
        self.line(name, "_count", labels, None, count as f64);
        self
    }

    /// The text, every line ending in a line feed.
    pub fn finish(self) -> String {
        self.text
    }

    /// Writes `name{labels,le="..."} value` (`suffix` appended to the name).
    fn line(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
        let text = &mut self.text;
        text.push_str(name);
        text.push_str(suffix);
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (label, value)) in all.enumerate() {
            debug_assert!(is_label_name(label), "invalid label name {label:?}");
            text.push(if i == 0 { '{' } else { ',' });
            text.push_str(label);
            text.push_str("=\"");
            push_escaped(text, value, true);
            text.push('"');
        }
        if !labels.is_empty() || le.is_some() {
            text.push('}');
        }
        text.push(' ');
        push_number(text, value);
        text.push('\n');
    }
}

/// Appends `text` escaped: backslash and line feed always, the double quote in label values.
fn push_escaped(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends a sample value as the format spells it: `+Inf`, `-Inf`, `NaN`, or the shortest
/// decimal that reads back as the same float (`3`, `0.0001`).
fn push_number(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{value}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
pub(crate) mod tests;
