//! Server-wide counters, updated with relaxed atomics from media threads and call tasks and read by the
//! periodic summary (and, later, the metrics endpoint).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::media::MediaStats;
use crate::session::CloseCode;
use crate::stats::Histogram;

/// Frames written more than this after their playout deadline count as late.
pub const LATE_THRESHOLD_US: u64 = 1000;

/// Counters of the whole server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Calls accepted (metadata valid and a route found).
    pub calls_total: AtomicU64,
    /// Calls live now.
    pub calls_active: AtomicU64,
    /// Upgrades refused with HTTP 404 (no route for the path).
    pub rejected_not_found: AtomicU64,
    /// Upgrades refused with HTTP 503 (at capacity or draining).
    pub rejected_unavailable: AtomicU64,
    /// Handshakes that failed or timed out.
    pub failed_handshakes: AtomicU64,
    /// Calls closed by callpipe with 1003.
    pub closed_1003: AtomicU64,
    /// Calls closed by callpipe with 1007.
    pub closed_1007: AtomicU64,
    /// Calls closed by callpipe with 1008.
    pub closed_1008: AtomicU64,
    /// Calls closed by callpipe with 1009.
    pub closed_1009: AtomicU64,
    /// Calls closed by callpipe with 1011.
    pub closed_1011: AtomicU64,
    /// Audio frames received.
    pub frames_in: AtomicU64,
    /// Audio frames sent.
    pub frames_out: AtomicU64,
    /// Inbound frames of the wrong size.
    pub wrong_size: AtomicU64,
    /// Outbound frames written more than [`LATE_THRESHOLD_US`] after their playout deadline
    /// (the platform may have run dry before they arrived).
    pub late_frames: AtomicU64,
    /// Text messages that were not valid JSON objects.
    pub bad_text: AtomicU64,
    /// How long after its grid instant (the tick that released it) each outbound frame was
    /// written to the socket.
    pub send_lateness: Histogram,
    /// Upgrades refused with HTTP 401, by reason (`missing`, `expired`, `bad_signature`, …).
    pub rejected_unauthorized: Mutex<BTreeMap<&'static str, u64>>,
    /// Control API requests refused with 401.
    pub control_unauthorized: AtomicU64,
    /// Calls closed because they sent more text messages per second than allowed.
    pub closed_text_flood: AtomicU64,
    /// Calls closed because no audio arrived for the idle timeout.
    pub closed_idle: AtomicU64,
    /// Calls hung up at the maximum call duration.
    pub hangups_max_duration: AtomicU64,
    /// Calls hung up through the control API.
    pub hangups_api: AtomicU64,
    /// Caller bytes dropped because a call's inbound ring was full (ring overruns in).
    pub ring_overrun_in_bytes: AtomicU64,
    /// Frames dropped because a call's outbound rings were full, over ended calls.
    pub ring_overrun_out: AtomicU64,
    /// Passes that ran without the caller's frame (inbound underruns), over ended calls.
    pub input_missing: AtomicU64,
    /// Per-route call counters, in the configuration's order.
    pub routes: Vec<RouteStats>,
}

/// One route's call counters.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// The route's path.
    pub path: String,
    /// Calls live on the route now.
    pub calls_active: AtomicU64,
    /// Calls accepted on the route.
    pub calls_total: AtomicU64,
}

impl ServerStats {
    /// Counters for routes with these paths, in order.
    pub fn new(paths: impl IntoIterator<Item = String>) -> ServerStats {
        ServerStats {
            routes: paths.into_iter().map(|path| RouteStats { path, ..RouteStats::default() }).collect(),
            ..ServerStats::default()
        }
    }

    /// Counts an upgrade refused with 401.
    pub fn count_unauthorized(&self, reason: &'static str) {
        let mut map = self.rejected_unauthorized.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Upgrades refused with 401, in all.
    pub fn unauthorized_total(&self) -> u64 {
        self.rejected_unauthorized.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// Counts a close callpipe initiated because of the peer's input.
    pub fn count_close(&self, code: CloseCode) {
        let counter = match code {
            CloseCode::Unsupported => &self.closed_1003,
            CloseCode::Invalid => &self.closed_1007,
            CloseCode::Policy => &self.closed_1008,
            CloseCode::TooBig => &self.closed_1009,
            CloseCode::Internal => &self.closed_1011,
            CloseCode::Normal | CloseCode::Away => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The summary log line.
    pub fn summary(&self, media: &MediaStats) -> String {
        let r = Ordering::Relaxed;
        format!(
            "calls active={} total={} frames in={} out={} late(>1ms)={} wrong_size={} rejected 401={} 404={} 503={} closes 1003={} 1007={} 1008={} 1009={} 1011={} | send lateness {} | media tick lateness {} skipped_ticks={}",
            self.calls_active.load(r),
            self.calls_total.load(r),
            self.frames_in.load(r),
            self.frames_out.load(r),
            self.late_frames.load(r),
            self.wrong_size.load(r),
            self.unauthorized_total(),
            self.rejected_not_found.load(r),
            self.rejected_unavailable.load(r),
            self.closed_1003.load(r),
            self.closed_1007.load(r),
            self.closed_1008.load(r),
            self.closed_1009.load(r),
            self.closed_1011.load(r),
            self.send_lateness.summary(),
            media.tick_lateness.summary(),
            media.skipped_ticks.load(r),
        )
    }
}
