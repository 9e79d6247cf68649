//! How long each processor type's `process` takes, for the metrics endpoint.
//!
//! The server's [`Timings`] registry (one of its [services](crate::services)) holds a
//! [`Histogram`] of nanoseconds per processor type (its
//! [`Processor::name`](super::Processor::name)). The registry's lock is taken only when a
//! [`Pipeline`](super::Pipeline) is prepared (off the media thread) and when a report reads it:
//! each pipeline looks up its stages' histograms once, and the media thread then records into
//! them with relaxed atomic adds only — no lock, no allocation. A pipeline that was never
//! prepared times nothing.
//!
//! # Sampling
//!
//! Timing a pass costs one `Instant::now()` per stage plus one (each stage's end is the next
//! one's start) and a histogram record (three atomic adds and an atomic max) per stage: 35-50 ns
//! per stage on the 2-core development VM (`cargo bench --bench core -- pipeline_timing`), on a
//! media thread that serves hundreds of calls, and more when media threads running the same
//! processor type contend for its histogram. So by default a pipeline times one pass in
//! [`TIMING_INTERVAL`], every stage of that pass, each time recorded once (weight 1), which
//! brings the cost into the benchmark's noise (a few ns per stage per pass). The histograms are
//! therefore a sample of the passes: their counts are 1/[`TIMING_INTERVAL`] of the passes run,
//! their distribution that of all passes. [`Pipeline::set_timing_interval`] changes it per
//! pipeline (1 times every pass).
//!
//! [`Pipeline::set_timing_interval`]: super::Pipeline::set_timing_interval
//!
//! This is the processor layer's only use of the clock, and it only measures: no processor sees
//! the times, and a pass does the same work timed or not.

use std::sync::Arc;
use std::time::Instant;

use crate::services::Timings;
use crate::stats::Histogram;

/// By default a pipeline times one pass in this many (a power of two).
pub const TIMING_INTERVAL: u32 = 16;

/// A pipeline's view of the registry: its stages' histograms, in stage order, and which passes
/// it times.
#[derive(Debug)]
pub(super) struct StageTimers {
    histograms: Vec<Arc<Histogram>>,
    /// `interval - 1` (the interval a power of two), or `None` when timing is off.
    mask: Option<u64>,
    passes: u64,
}

impl StageTimers {
    /// Timers timing one pass in [`TIMING_INTERVAL`], recording nowhere until registered.
    pub fn new() -> StageTimers {
        StageTimers { histograms: Vec::new(), mask: mask_of(TIMING_INTERVAL), passes: 0 }
    }

    /// Records the stages of these types, in order, into `registry`'s histograms.
    pub fn register(&mut self, names: impl Iterator<Item = &'static str>, registry: &Timings) {
        self.histograms = names.map(|name| registry.histogram(name)).collect();
    }

    /// Times one pass in `interval` (rounded up to a power of two); 0 turns timing off.
    pub fn set_interval(&mut self, interval: u32) {
        self.mask = mask_of(interval);
    }

    /// The interval in use: a power of two, or 0 when timing is off.
    pub fn interval(&self) -> u32 {
        self.mask.map_or(0, |mask| u32::try_from(mask + 1).unwrap_or(u32::MAX))
    }

    /// Counts a pass; returns when it started if this pass is timed.
    #[inline]
    pub fn start_pass(&mut self) -> Option<Instant> {
        let timed = self.mask.is_some_and(|mask| self.passes & mask == 0);
        self.passes = self.passes.wrapping_add(1);
        timed.then(Instant::now)
    }

    /// Records stage `stage`'s time, from `start` to now, and returns now (the next stage's
    /// start).
    #[inline]
    pub fn stage_done(&self, stage: usize, start: Instant) -> Instant {
        let now = Instant::now();
        if let Some(histogram) = self.histograms.get(stage) {
            let nanos = now.saturating_duration_since(start).as_nanos();
            histogram.record_value(u64::try_from(nanos).unwrap_or(u64::MAX));
        }
        now
    }
}

/// `interval - 1` for the power of two at or above `interval`; `None` for 0.
fn mask_of(interval: u32) -> Option<u64> {
    (interval > 0).then(|| u64::from(interval).next_power_of_two() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_histogram_per_type_shared_by_every_pipeline() {
        let registry = Timings::default();
        let (mut a, mut b) = (StageTimers::new(), StageTimers::new());
        a.register(["t-echo", "t-dtmf"].into_iter(), &registry);
        b.register(["t-echo"].into_iter(), &registry);
        assert!(Arc::ptr_eq(&a.histograms[0], &b.histograms[0]));
        assert!(!Arc::ptr_eq(&a.histograms[0], &a.histograms[1]));
        let names: Vec<_> = registry.snapshot().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["t-dtmf", "t-echo"]);
    }

    #[test]
    fn one_pass_in_the_interval_is_timed() {
        let registry = Timings::default();
        let mut timers = StageTimers::new();
        timers.register(["t"].into_iter(), &registry);
        assert_eq!(timers.interval(), TIMING_INTERVAL);
        for (interval, expected) in [(0, 0), (1, 1), (3, 4), (16, 16)] {
            timers.set_interval(interval);
            assert_eq!(timers.interval(), expected);
            timers.passes = 0;
            let timed = (0..64).filter(|_| timers.start_pass().is_some()).count();
            assert_eq!(timed, if expected == 0 { 0 } else { 64 / expected as usize }, "interval {interval}");
        }
    }

    #[test]
    fn a_stage_records_its_time_and_hands_on_the_clock() {
        let registry = Timings::default();
        let mut timers = StageTimers::new();
        timers.register(["t-a", "t-b"].into_iter(), &registry);
        let start = Instant::now();
        let next = timers.stage_done(1, start);
        assert!(next >= start);
        let stages = registry.snapshot();
        assert_eq!((stages[0].1.count(), stages[1].1.count()), (0, 1), "only stage 1 recorded");
        assert!(stages[1].1.sum() <= next.duration_since(start).as_nanos() as u64);
        timers.stage_done(7, start); // no such stage: nothing recorded, no panic
        assert_eq!(stages[1].1.count(), 1);
    }
}
