//! What the emulator measures, in HDR histograms: one [`Metrics`] per driver thread, merged at
//! the end, with a window per second for plots over time.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest value histograms hold: 60 s in µs. Larger values are clamped.
const MAX_US: u64 = 60_000_000;

/// A histogram of microseconds with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; `new_with_bounds` only fails on
    // inconsistent bounds.
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 sigfigs is valid")))
}

/// Records a duration in µs, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, value: Duration) {
    let us = u64::try_from(value.as_micros()).unwrap_or(MAX_US).clamp(1, MAX_US);
    let _ = h.record(us);
}

/// Figures of one second of the run.
#[derive(Debug, Clone)]
pub struct Window {
    /// Echo round trips that completed in this second.
    pub rtt: Histogram<u64>,
    /// Deviation of inter-arrival times from 20 ms.
    pub arrival: Histogram<u64>,
    /// The emulator's own send lateness.
    pub send_late: Histogram<u64>,
    /// Calls connected at the end of the second.
    pub calls: u64,
}

impl Window {
    fn new() -> Window {
        Window { rtt: histogram(), arrival: histogram(), send_late: histogram(), calls: 0 }
    }
}

/// The histograms of one driver thread (or, merged, of the whole run).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Time from TCP connect to a completed upgrade.
    pub connect: Histogram<u64>,
    /// Echo round-trip time (tagged frames that came back).
    pub rtt: Histogram<u64>,
    /// |inter-arrival − 20 ms| of the frames the server sent.
    pub arrival: Histogram<u64>,
    /// RFC 3550 interarrival jitter of each call at its end.
    pub jitter: Histogram<u64>,
    /// How late the emulator sent each frame after its scheduled instant.
    pub send_late: Histogram<u64>,
    /// Per-second windows, indexed by seconds since the run started.
    pub windows: Vec<Window>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty histograms.
    pub fn new() -> Metrics {
        Metrics {
            connect: histogram(),
            rtt: histogram(),
            arrival: histogram(),
            jitter: histogram(),
            send_late: histogram(),
            windows: Vec::new(),
        }
    }

    /// The window for second `second` of the run, created on first use (bounded to one day).
    pub fn window(&mut self, second: usize) -> &mut Window {
        let second = second.min(86_400);
        if self.windows.len() <= second {
            self.windows.resize_with(second + 1, Window::new);
        }
        &mut self.windows[second]
    }

    /// Adds another thread's figures.
    pub fn merge(&mut self, other: &Metrics) {
        let _ = self.connect.add(&other.connect);
        let _ = self.rtt.add(&other.rtt);
        let _ = self.arrival.add(&other.arrival);
        let _ = self.jitter.add(&other.jitter);
        let _ = self.send_late.add(&other.send_late);
        for (i, w) in other.windows.iter().enumerate() {
            let mine = self.window(i);
            let _ = mine.rtt.add(&w.rtt);
            let _ = mine.arrival.add(&w.arrival);
            let _ = mine.send_late.add(&w.send_late);
            mine.calls += w.calls;
        }
    }
}

/// Percentiles of a histogram, in ms.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a µs histogram, in ms.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles { count: 0, p50: 0.0, p90: 0.0, p99: 0.0, p999: 0.0, max: 0.0 };
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_reports_percentiles() {
        let mut a = Metrics::new();
        let mut b = Metrics::new();
        for ms in 1..=100u64 {
            record(&mut a.rtt, Duration::from_millis(ms));
            record(&mut b.window(3).rtt, Duration::from_millis(ms));
        }
        record(&mut b.rtt, Duration::from_secs(3600));
        a.merge(&b);
        let p = Percentiles::of(&a.rtt);
        assert_eq!(p.count, 101);
        assert!((p.p50 - 51.0).abs() < 0.1, "{p:?}");
        assert!((p.max - 60_000.0).abs() < 60.0, "clamped to 60 s: {p:?}");
        assert_eq!(a.windows.len(), 4);
        assert_eq!(a.windows[3].rtt.len(), 100);
        assert_eq!(Percentiles::of(&histogram()).count, 0);
    }
}
