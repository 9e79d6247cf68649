//! Server-wide counters, updated with relaxed atomics from connection tasks and read by the
//! periodic summary (and, later, the metrics endpoint).

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
}

impl ServerStats {
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
            "calls active={} total={} frames in={} out={} late(>1ms)={} wrong_size={} rejected 404={} 503={} closes 1003={} 1007={} 1008={} 1009={} 1011={} | send lateness {} | media tick lateness {} skipped_ticks={}",
            self.calls_active.load(r),
            self.calls_total.load(r),
            self.frames_in.load(r),
            self.frames_out.load(r),
            self.late_frames.load(r),
            self.wrong_size.load(r),
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
