//! The exposition's text checked against hand-written expectations and read back by a small
//! parser of the format (shared with the server's metrics tests).

use super::*;

/// One sample line, read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Parses exposition text strictly: every line is `# HELP name text`, `# TYPE name type` (once
/// per family, after its HELP and before its samples) or `name{label="value",...} value`, with
/// a valid name, well-formed escapes and a float value; a sample belongs to the family declared
/// last (histogram samples by their `_bucket`, `_sum` and `_count` suffixes).
pub(crate) fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut help: Option<String> = None;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text must end in a line feed".into());
    }
    for line in text.lines() {
        let fail = |why: &str| Err(format!("{why}: {line:?}"));
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else { return fail("TYPE without a type") };
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return fail("unknown type");
            }
            if help.as_deref() != Some(name) {
                return fail("TYPE not right after its HELP");
            }
            if declared.iter().any(|d| d == name) {
                return fail("family declared twice");
            }
            declared.push(name.to_owned());
            family = Some((name.to_owned(), kind.to_owned()));
        } else if line.starts_with('#') || line.is_empty() {
            return fail("unexpected line");
        } else {
            let sample = parse_sample(line).map_err(|e| format!("{e}: {line:?}"))?;
            let Some((name, kind)) = &family else { return fail("sample before any TYPE") };
            let belongs = if kind == "histogram" {
                ["_bucket", "_sum", "_count"].iter().any(|s| sample.name.strip_suffix(s) == Some(name.as_str()))
            } else {
                sample.name == *name
            };
            if !belongs {
                return fail("sample outside its family");
            }
            samples.push(sample);
        }
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            let eq = inner.find("=\"").ok_or("label without =\"")?;
            let label = &inner[..eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let mut value = String::new();
            let mut chars = inner[eq + 2..].char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break eq + 2 + i,
                    (_, '\\') => match chars.next().ok_or("dangling backslash")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    (_, '\n') => return Err("raw line feed in a label value".into()),
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            inner = &inner[end + 1..];
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            inner = inner.strip_prefix(',').ok_or("labels not separated by ,")?;
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')) => {
            v.parse().map_err(|_| format!("bad value {v:?}"))?
        }
        v => return Err(format!("bad value {v:?}")),
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

#[test]
fn a_small_exposition_is_exactly_the_format() {
    let mut out = Exposition::new();
    out.family("callpipe_calls_active", Kind::Gauge, "Calls live now.");
    out.sample(&[("route", "/echo")], 3.0);
    out.sample(&[("route", "/bot"), ("rate", "16000")], 0.5);
    out.family("callpipe_closes_total", Kind::Counter, "Calls closed, by code.");
    out.sample(&[], 12.0);
    out.family("callpipe_closes_total", Kind::Counter, "ignored: the family is being written");
    out.sample(&[("code", "1007")], 1.0);
    out.family("callpipe_odd", Kind::Gauge, "Special values.");
    out.sample(&[("v", "inf")], f64::INFINITY).sample(&[("v", "-inf")], f64::NEG_INFINITY).sample(&[("v", "nan")], f64::NAN);
    out.sample(&[("v", "big")], 18446744073709551615.0).sample(&[("v", "small")], 0.000125);
    let expected = "\
# HELP callpipe_calls_active Calls live now.
# TYPE callpipe_calls_active gauge
callpipe_calls_active{route=\"/echo\"} 3
callpipe_calls_active{route=\"/bot\",rate=\"16000\"} 0.5
# HELP callpipe_closes_total Calls closed, by code.
# TYPE callpipe_closes_total counter
callpipe_closes_total 12
callpipe_closes_total{code=\"1007\"} 1
# HELP callpipe_odd Special values.
# TYPE callpipe_odd gauge
callpipe_odd{v=\"inf\"} +Inf
callpipe_odd{v=\"-inf\"} -Inf
callpipe_odd{v=\"nan\"} NaN
callpipe_odd{v=\"big\"} 18446744073709552000
callpipe_odd{v=\"small\"} 0.000125
";
    let text = out.finish();
    assert_eq!(text, expected);
    let samples = parse(&text).unwrap();
    assert_eq!(samples.len(), 9);
    assert_eq!(samples[1].label("rate"), Some("16000"));
    assert_eq!(samples[3].value, 1.0);
}

#[test]
fn label_values_and_help_are_escaped() {
    let mut out = Exposition::new();
    out.family("x", Kind::Gauge, "A \\ back\nslash and a \"quote\".");
    out.sample(&[("path", "a\\b\"c\nd")], 1.0);
    let text = out.finish();
    assert_eq!(
        text, "# HELP x A \\\\ back\\nslash and a \"quote\".\n# TYPE x gauge\nx{path=\"a\\\\b\\\"c\\nd\"} 1\n",
        "label values escape \\, \" and line feeds; help text \\ and line feeds"
    );
    let samples = parse(&text).unwrap();
    assert_eq!(samples[0].label("path"), Some("a\\b\"c\nd"), "reads back to the original");
}

#[test]
fn a_histogram_in_microseconds_is_exactly_the_format() {
    let h = Histogram::new();
    // 150 µs sits in the fine bucket 144-151 µs, 3000 µs in 2944-3071 µs, 200 ms past every bound.
    for us in [50, 150, 150, 3000, 200_000] {
        h.record_us(us);
    }
    let mut out = Exposition::new();
    out.histogram("lateness_seconds", "How late.", &[("side", "send")], &h, Unit::Microseconds, &[0.0001, 0.001, 0.01]);
    let expected = "\
# HELP lateness_seconds How late.
# TYPE lateness_seconds histogram
lateness_seconds_bucket{side=\"send\",le=\"0.0001\"} 1
lateness_seconds_bucket{side=\"send\",le=\"0.001\"} 3
lateness_seconds_bucket{side=\"send\",le=\"0.01\"} 4
lateness_seconds_bucket{side=\"send\",le=\"+Inf\"} 5
lateness_seconds_sum{side=\"send\"} 0.20335
lateness_seconds_count{side=\"send\"} 5
";
    assert_eq!(out.finish(), expected);
}

#[test]
fn histogram_buckets_are_cumulative_monotone_and_exact_to_the_fine_bucket() {
    // Two series of one family, in nanoseconds, with values spread over every bound.
    let fast = Histogram::new();
    let slow = Histogram::new();
    let mut values = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..5_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Spread from 0 to about 8 s on a log scale, and a bound hit exactly now and then.
        let v = if i % 50 == 0 { 1_000 * (1 + i % 7) } else { (x % 1_000) << ((x >> 59) % 24) };
        values.push(v);
        if i % 2 == 0 { &fast } else { &slow }.record_value(v);
    }
    let mut out = Exposition::new();
    out.histogram("callpipe_processor_seconds", "Time per pass.", &[("processor", "fast")], &fast, Unit::Nanoseconds, PROCESSOR_BOUNDS);
    out.histogram("callpipe_processor_seconds", "Time per pass.", &[("processor", "slow")], &slow, Unit::Nanoseconds, PROCESSOR_BOUNDS);
    let text = out.finish();
    assert_eq!(text.matches("# TYPE").count(), 1, "one family for both series");
    let samples = parse(&text).unwrap();
    for (series, histogram) in [("fast", &fast), ("slow", &slow)] {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.label("processor") == Some(series)).collect();
        let buckets: Vec<&Sample> = mine.iter().copied().filter(|s| s.name.ends_with("_bucket")).collect();
        assert_eq!(buckets.len(), PROCESSOR_BOUNDS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "{series}: cumulative counts never fall");
        let count = mine.iter().find(|s| s.name.ends_with("_count")).unwrap().value;
        let sum = mine.iter().find(|s| s.name.ends_with("_sum")).unwrap().value;
        assert_eq!(buckets.last().unwrap().label("le"), Some("+Inf"));
        assert_eq!(buckets.last().unwrap().value, count, "{series}: +Inf == _count");
        assert_eq!(count, histogram.count() as f64);
        assert!((sum - histogram.sum() as f64 / 1e9).abs() < 1e-12, "{series}: _sum in seconds");
        let recorded: Vec<u64> = values.iter().skip(usize::from(series == "slow")).step_by(2).copied().collect();
        for (bucket, bound) in buckets.iter().zip(PROCESSOR_BOUNDS) {
            let le: f64 = bucket.label("le").unwrap().parse().unwrap();
            assert_eq!(le, *bound);
            let ns = (bound * 1e9).round() as u64;
            let at_or_below = |limit: u64| recorded.iter().filter(|v| **v <= limit).count() as f64;
            // Never a value above the bound; every value a fine bucket's width (6.25 %) below it.
            assert!(bucket.value <= at_or_below(ns), "{series} le={bound}: {} > exact", bucket.value);
            assert!(bucket.value >= at_or_below(ns * 15 / 16), "{series} le={bound}: {} too few", bucket.value);
        }
    }
}

#[test]
fn the_parser_refuses_what_the_format_forbids() {
    for bad in [
        "x 1\n",
        "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} \n",
        "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",
        "# HELP x h\n# TYPE x gauge\nx{a=\"\\t\"} 1\n",
        "# HELP x h\n# TYPE x gauge\ny 1\n",
        "# HELP x h\n# TYPE x gauge\n# HELP x h\n# TYPE x gauge\n",
        "# HELP x h\n# TYPE x gauge\nx 1",
        "# HELP x h\n# TYPE x gauge\nx one\n",
        "# HELP x h\n# TYPE x gauge\n1x 1\n",
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}
