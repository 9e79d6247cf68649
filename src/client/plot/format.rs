//! How the picture writes numbers and text: ms with the decimals they deserve, axis labels,
//! thousands separators, long text shortened.

/// `v`, or `default` if it is NaN or infinite.
pub(super) fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() { v } else { default }
}

/// A value in ms with as many decimals as it deserves.
pub(super) fn fmt_ms(v: f64) -> String {
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
pub(super) fn axis_fmt(max: f64, ticks: u32) -> impl Fn(&f64) -> String {
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
pub(super) fn thousands(n: u64) -> String {
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
pub(super) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
