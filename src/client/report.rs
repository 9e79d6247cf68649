//! Turning a run into figures: the summary table, the JSON report, and the verdict.

use std::fmt::Write as _;

use serde::Serialize;

use super::engine::RunResult;
use super::metrics::Percentiles;
use super::platform::CallReport;

/// The emulator's send lateness p99 above which its own figures are suspect.
pub const SATURATED_SEND_LATE_MS: f64 = 5.0;

/// Limits that make a load run fail.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Largest acceptable p99 of the deviation of inter-arrival times from 20 ms, in ms.
    pub max_p99_jitter_ms: Option<f64>,
    /// Largest acceptable p99 echo round trip, in ms.
    pub max_p99_rtt_ms: Option<f64>,
    /// Largest acceptable fraction of frames lost (0.0 to 1.0).
    pub max_loss: Option<f64>,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    /// Seconds since the start.
    pub second: usize,
    /// Calls connected.
    pub calls: u64,
    /// Echo round trips completed in this second.
    pub rtt: Percentiles,
    /// Inter-arrival deviation from 20 ms.
    pub arrival: Percentiles,
    /// The emulator's send lateness.
    pub send_late: Percentiles,
}

/// Totals over all calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Calls attempted.
    pub calls: usize,
    /// Calls that could not connect or failed.
    pub failed: usize,
    /// Calls that started and then ended with an error (the connection lost mid-call).
    pub broken: usize,
    /// Tagged frames that did not come back, on the calls that ended without an error.
    pub lost_unbroken: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Tagged frames that did not come back.
    pub lost: u64,
    /// Tagged frames that came back twice.
    pub duplicated: u64,
    /// Tagged frames that came back out of order.
    pub reordered: u64,
    /// Received frames of the wrong size.
    pub wrong_size: u64,
    /// Frames that could not be sent because the server stopped reading.
    pub unsent: u64,
    /// Text messages that were not a known action.
    pub bad_text: u64,
    /// Frames dropped at the playout limit.
    pub playout_overflow: u64,
    /// Gaps in the bot's audio while speaking.
    pub underrun_gaps: u64,
    /// Fraction of tagged frames lost.
    pub loss: f64,
}

/// The whole report of a run, as written by `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The URL.
    pub url: String,
    /// The rate, in Hz.
    pub rate: u32,
    /// Wall time of the run, in s.
    pub elapsed_s: f64,
    /// Totals.
    pub totals: Totals,
    /// Time from connect to completed upgrade.
    pub connect: Percentiles,
    /// Echo round trips.
    pub rtt: Percentiles,
    /// Inter-arrival deviation from 20 ms.
    pub arrival: Percentiles,
    /// RFC 3550 interarrival jitter, one value per call.
    pub jitter: Percentiles,
    /// The emulator's own send lateness.
    pub send_late: Percentiles,
    /// Whether the emulator itself was too late to trust the figures.
    pub client_saturated: bool,
    /// Per-second figures.
    pub windows: Vec<WindowReport>,
    /// Thresholds exceeded, described.
    pub failures: Vec<String>,
    /// The first calls' errors, described.
    pub errors: Vec<String>,
}

impl LoadReport {
    /// Builds the report and checks the thresholds.
    pub fn new(url: &str, rate: u32, result: &RunResult, thresholds: &Thresholds) -> LoadReport {
        let mut totals = Totals { calls: result.reports.len(), ..Totals::default() };
        let mut errors = Vec::new();
        let mut echoed = 0;
        for r in &result.reports {
            if r.error.is_some() && r.frames_sent == 0 {
                totals.failed += 1;
            } else if r.error.is_some() {
                totals.broken += 1;
            } else {
                totals.lost_unbroken += r.lost;
            }
            if let Some(e) = &r.error
                && errors.len() < 10
            {
                errors.push(e.clone());
            }
            totals.frames_sent += r.frames_sent;
            totals.frames_received += r.frames_received;
            totals.lost += r.lost;
            totals.duplicated += r.duplicated;
            totals.reordered += r.reordered;
            totals.wrong_size += r.wrong_size;
            totals.unsent += r.unsent_frames;
            totals.bad_text += r.bad_text;
            totals.playout_overflow += r.playout_overflow;
            totals.underrun_gaps += r.underrun_gaps;
            echoed += r.echoed;
        }
        totals.loss = if echoed + totals.lost == 0 { 0.0 } else { totals.lost as f64 / (echoed + totals.lost) as f64 };
        let m = &result.metrics;
        let windows = m
            .windows
            .iter()
            .enumerate()
            .map(|(second, w)| WindowReport {
                second,
                calls: w.calls,
                rtt: Percentiles::of(&w.rtt),
                arrival: Percentiles::of(&w.arrival),
                send_late: Percentiles::of(&w.send_late),
            })
            .collect();
        let send_late = Percentiles::of(&m.send_late);
        let mut report = LoadReport {
            url: url.to_owned(),
            rate,
            elapsed_s: result.elapsed.as_secs_f64(),
            totals,
            connect: Percentiles::of(&m.connect),
            rtt: Percentiles::of(&m.rtt),
            arrival: Percentiles::of(&m.arrival),
            jitter: Percentiles::of(&m.jitter),
            client_saturated: send_late.p99 > SATURATED_SEND_LATE_MS,
            send_late,
            windows,
            failures: Vec::new(),
            errors,
        };
        report.check(thresholds);
        report
    }

    fn check(&mut self, t: &Thresholds) {
        if let Some(max) = t.max_p99_jitter_ms
            && self.arrival.p99 > max
        {
            self.failures.push(format!("p99 inter-arrival jitter {:.3} ms is over {max} ms", self.arrival.p99));
        }
        if let Some(max) = t.max_p99_rtt_ms
            && self.rtt.p99 > max
        {
            self.failures.push(format!("p99 round trip {:.3} ms is over {max} ms", self.rtt.p99));
        }
        if let Some(max) = t.max_loss
            && self.totals.loss > max
        {
            self.failures.push(format!("loss {:.5} is over {max}", self.totals.loss));
        }
        if self.totals.failed > 0 {
            self.failures.push(format!("{} of {} calls failed", self.totals.failed, self.totals.calls));
        }
        if self.totals.unsent > 0 {
            self.failures.push(format!("{} frames could not be sent: the server stopped reading", self.totals.unsent));
        }
        if self.totals.wrong_size > 0 {
            self.failures.push(format!("{} frames of the wrong size", self.totals.wrong_size));
        }
    }

    /// The summary table printed at the end of a run.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mut s = String::new();
        let _ = writeln!(s, "{} calls to {} at {} Hz in {:.1} s: {} failed", t.calls, self.url, self.rate, self.elapsed_s, t.failed);
        let _ = writeln!(
            s,
            "frames sent {} received {} lost {} ({:.4}%) duplicated {} reordered {} wrong-size {} unsent {}",
            t.frames_sent,
            t.frames_received,
            t.lost,
            t.loss * 100.0,
            t.duplicated,
            t.reordered,
            t.wrong_size,
            t.unsent
        );
        let _ = writeln!(s, "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}", "ms", "p50", "p90", "p99", "p99.9", "max", "count");
        for (name, p) in [
            ("connect", &self.connect),
            ("echo round trip", &self.rtt),
            ("inter-arrival deviation", &self.arrival),
            ("RFC 3550 jitter (per call)", &self.jitter),
            ("emulator send lateness", &self.send_late),
        ] {
            let _ = writeln!(s, "{name:<26} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10}", p.p50, p.p90, p.p99, p.p999, p.max, p.count);
        }
        if self.client_saturated {
            let _ = writeln!(
                s,
                "warning: the emulator sent late (p99 {:.3} ms): it was saturated, so the server's figures may look worse than they are",
                self.send_late.p99
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        for f in &self.failures {
            let _ = writeln!(s, "FAIL: {f}");
        }
        s
    }
}

/// The report of a single `callpipe call`.
pub fn call_summary(url: &str, report: &CallReport, result: &RunResult) -> String {
    let mut s = String::new();
    let r = report;
    let _ = writeln!(
        s,
        "call to {url}: {:.1} s, closed with {}",
        result.elapsed.as_secs_f64(),
        r.close_code.map_or("nothing".into(), |c| c.to_string())
    );
    let _ = writeln!(
        s,
        "frames sent {} received {} played {} wrong-size {} unsent (server not reading) {}",
        r.frames_sent, r.frames_received, r.frames_played, r.wrong_size, r.unsent_frames
    );
    let _ = writeln!(s, "playout buffer high-water {} frames, overflow {} frames", r.playout_high_water, r.playout_overflow);
    let _ = writeln!(s, "underruns: {} gaps ({} ms of silence) while the bot was speaking", r.underrun_gaps, r.underrun_ticks * 20);
    let _ = writeln!(s, "events received: {} clear, {} notify; bad text {}", r.clears, r.notifies, r.bad_text);
    if r.dtmf_sent > 0 {
        let latencies: Vec<String> = r.dtmf_latency_ms.iter().map(|ms| format!("{ms:.1}")).collect();
        let _ = writeln!(s, "dtmf sent {}; ms to the bot's first audio after each: [{}]", r.dtmf_sent, latencies.join(", "));
    }
    if r.echoed > 0 {
        let rtt = Percentiles::of(&result.metrics.rtt);
        let _ = writeln!(s, "echo: {} back, {} lost, round trip p50 {:.3} ms p99 {:.3} ms", r.echoed, r.lost, rtt.p50, rtt.p99);
    }
    let send = Percentiles::of(&result.metrics.send_late);
    let _ = writeln!(s, "emulator send lateness p50 {:.3} ms p99 {:.3} ms", send.p50, send.p99);
    for v in &r.violations {
        let _ = writeln!(s, "violation: {v}");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(s, "error: {e}");
    }
    s
}
