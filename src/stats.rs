//! Lock-free counters and latency histograms, written on the media path and read by reports.
//!
//! [`Histogram`] records integer values into fixed buckets with relaxed atomic adds: no lock, no
//! allocation. Values under 64 are exact; above that each power of two is split into 16 buckets,
//! so a percentile is within 6.25 % of the true value. The unit is the caller's: latencies are
//! recorded in microseconds ([`Histogram::record`], [`Histogram::record_us`]), processor times in
//! nanoseconds ([`Histogram::record_value`]); the `*_us` readers assume microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const LINEAR: u64 = 64;
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Octaves above the linear range: 2^6 .. 2^30 (about 18 minutes in µs, 1.07 s in ns); larger
/// values land in the last bucket.
const OCTAVES: u64 = 24;
const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// A fixed-bucket histogram of integer values (microseconds unless its owner says otherwise).
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records a duration.
    pub fn record(&self, value: Duration) {
        self.record_us(u64::try_from(value.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records a value in microseconds.
    pub fn record_us(&self, us: u64) {
        self.record_value(us);
    }

    /// Records a value in the histogram's own unit (e.g. nanoseconds for processor times).
    pub fn record_value(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The sum of the values recorded (wrapping at `u64::MAX`).
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// How many values were at or below `value`, counted by whole buckets: a bucket counts only
    /// if its largest value is at or below `value`, so values in the bucket that straddles
    /// `value` are left out. Exact below 64, within a bucket's width (6.25 %) above.
    pub fn count_at_or_below(&self, value: u64) -> u64 {
        self.buckets.iter().enumerate().take_while(|(i, _)| bucket_edge(*i) <= value).map(|(_, b)| b.load(Ordering::Relaxed)).sum()
    }

    /// A copy of the buckets and the sum, read once, for a consistent report while values are
    /// still being recorded (allocates; never on the media path).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(), sum: self.sum() }
    }

    /// The largest value recorded, in µs.
    pub fn max_us(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The mean, in µs.
    pub fn mean_us(&self) -> f64 {
        let count = self.count();
        if count == 0 { 0.0 } else { self.sum.load(Ordering::Relaxed) as f64 / count as f64 }
    }

    /// The value at quantile `q` (0.0 to 1.0), in µs: the upper edge of the bucket holding it,
    /// capped at the maximum seen. Zero when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return bucket_upper(i).min(self.max_us());
            }
        }
        self.max_us()
    }

    /// How many values exceeded `threshold_us` (counted by bucket: values in the bucket that
    /// holds the threshold count as not exceeding it).
    pub fn count_above_us(&self, threshold_us: u64) -> u64 {
        let from = bucket_of(threshold_us) + 1;
        self.buckets[from.min(BUCKETS)..].iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// A one-line summary: `n=.. p50=..ms p99=..ms p99.9=..ms max=..ms`.
    pub fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "n={} p50={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
            self.count(),
            ms(self.quantile_us(0.5)),
            ms(self.quantile_us(0.99)),
            ms(self.quantile_us(0.999)),
            ms(self.max_us())
        )
    }
}

/// A histogram's buckets and sum as read at one moment: its counts agree with each other, which
/// live reads of a histogram being recorded into need not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    buckets: Box<[u64]>,
    sum: u64,
}

impl Snapshot {
    /// Values recorded: the sum of the buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the values (read just after the buckets: it may include a value recorded
    /// meanwhile).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// As [`Histogram::count_at_or_below`]: values at or below `value`, by whole buckets.
    pub fn count_at_or_below(&self, value: u64) -> u64 {
        self.buckets.iter().enumerate().take_while(|(i, _)| bucket_edge(*i) <= value).map(|(_, b)| b).sum()
    }
}

/// The largest value bucket `index` can hold: its upper edge, and `u64::MAX` for the last
/// bucket, which also takes every value past the range.
fn bucket_edge(index: usize) -> u64 {
    if index + 1 >= BUCKETS { u64::MAX } else { bucket_upper(index) }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros()) - u64::from(LINEAR.trailing_zeros());
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let shift = octave as u32 + LINEAR.trailing_zeros() - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    (LINEAR + octave * SUB + sub) as usize
}

fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let octave = (index - LINEAR) / SUB;
    let sub = (index - LINEAR) % SUB;
    let base = LINEAR << octave;
    let width = base / SUB;
    base + (sub + 1) * width - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for us in (0..2_000_000u64).step_by(7) {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            assert!(bucket_upper(b) >= us, "{us} in bucket {b} with upper {}", bucket_upper(b));
            assert!(bucket_upper(b) as f64 <= us as f64 * 1.0625 + 1.0);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = Histogram::new();
        for us in 1..=1000 {
            h.record_us(us);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile_us(0.5);
        assert!((500..=532).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(h.quantile_us(1.0), 1000);
        assert_eq!(h.max_us(), 1000);
        assert!((h.mean_us() - 500.5).abs() < 1e-9);
        assert!(h.count_above_us(1000) == 0);
        assert!(h.count_above_us(10) >= 989);
        assert_eq!(Histogram::new().quantile_us(0.99), 0);
    }

    #[test]
    fn counts_at_or_below_are_exact_to_the_bucket_and_cumulative() {
        let h = Histogram::new();
        let values = [0u64, 5, 63, 64, 67, 68, 1000, 1_000_000, 5_000_000_000];
        for v in values {
            h.record_value(v);
        }
        assert_eq!(h.sum(), values.iter().sum::<u64>());
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count(), h.count());
        assert_eq!(snapshot.sum(), h.sum());
        // Exact in the linear range.
        for bound in [0, 4, 5, 62, 63] {
            let exact = values.iter().filter(|v| **v <= bound).count() as u64;
            assert_eq!(h.count_at_or_below(bound), exact, "{bound}");
            assert_eq!(snapshot.count_at_or_below(bound), exact, "{bound}");
        }
        // 64..=67 is one bucket: 67 counts it, 66 leaves it out (an undercount, never an over).
        assert_eq!(h.count_at_or_below(66), 3);
        assert_eq!(h.count_at_or_below(67), 5);
        // Never more than the exact count, and monotone.
        let mut last = 0;
        for bound in (0..2_000_000u64).step_by(997).chain([u64::MAX - 1, u64::MAX]) {
            let counted = snapshot.count_at_or_below(bound);
            assert!(counted >= last, "{bound}");
            assert!(counted <= values.iter().filter(|v| **v <= bound).count() as u64, "{bound}");
            last = counted;
        }
        // The value past the range sits in the last bucket, counted only at the very top.
        assert_eq!(h.count_at_or_below(u64::MAX - 1), values.len() as u64 - 1);
        assert_eq!(h.count_at_or_below(u64::MAX), values.len() as u64);
    }
}
