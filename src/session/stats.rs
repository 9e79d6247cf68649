//! A session's counters ([`SessionStats`]): passes, the caller's timeline (pause silence,
//! drops, stalls), the pacer's releases and drops, requests and players. The media thread
//! publishes them as plain integers.

use super::Session;

/// Counters of one session. Plain integers: the media thread publishes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Passes run: caller frames, pause silence and wall-only ticks.
    pub passes: u64,
    /// Frames of silence put into the caller's timeline for the platform's pauses.
    pub input_missing: u64,
    /// Wall ticks that ran without a caller frame because it was late (or the platform paused).
    pub wall_only: u64,
    /// Wall ticks skipped because the call fell more than `max_catchup` behind.
    pub skipped_ticks: u64,
    /// Frames released to the platform.
    pub frames_released: u64,
    /// Inbound frames dropped for lateness beyond the hard bound, plus whole frames' worth of
    /// overflow.
    pub dropped_in: u64,
    /// Network stalls whose backlog was caught up (every frame went through).
    pub catchups: u64,
    /// Outbound frames' worth of audio dropped because the queue was full.
    pub dropped_out: u64,
    /// Partial outbound frames completed with silence.
    pub padded_frames: u64,
    /// `clear` requests sent.
    pub clears: u64,
    /// `notify` requests sent.
    pub notifies: u64,
    /// Events or requests dropped because a per-pass buffer was full.
    pub dropped_requests: u64,
    /// Platform acknowledgements that matched nothing we sent.
    pub unmatched_acks: u64,
    /// Players playing now: the processors' and the control API's stream.
    pub players_active: u64,
}

impl Session {
    /// Passes run so far.
    pub fn passes(&self) -> u64 {
        self.stats.passes
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        let frame = self.rate.frame_samples() as u64;
        SessionStats {
            dropped_in: self.inbound.dropped_frames() + self.inbound.overflow_bytes().div_ceil(frame * 2),
            input_missing: self.inbound.pause_frames(),
            dropped_out: self.stats.dropped_out + (self.outbound.dropped_samples() + self.requests.dropped_samples).div_ceil(frame),
            padded_frames: self.outbound.padded_frames(),
            catchups: self.inbound.stalls(),
            dropped_requests: self.stats.dropped_requests + self.requests.dropped_events + self.requests.dropped_notifies,
            players_active: self.pipeline.players_active() + u64::from(self.stream.is_some()),
            ..self.stats
        }
    }
}
