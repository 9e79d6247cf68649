//! Per-call limits of the media path ([`SessionConfig`]): the pacer's look-ahead, the sizes of
//! the inbound and outbound queues, the caller-timeline rules and how far a call may fall behind
//! its wall clock. Every field has a safe default; `[media]` in the configuration sets them.

use std::time::Duration;

/// Per-call limits of the media path. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Frames the pacer may keep ahead at the platform (docs/protocol.md section 3). Default 3.
    pub lookahead_frames: u32,
    /// Capacity of the outbound queue, in frames. Default 50 (one second).
    pub outbound_queue_frames: usize,
    /// Capacity of the inbound buffer, in frames. Default 16.
    pub inbound_buffer_frames: usize,
    /// The caller-timeline rules: jitter allowance, the wait before pause silence, the hard
    /// bound on lateness.
    pub timeline: TimelineConfig,
    /// How far behind its wall clock a call may fall and still make up every missed tick.
    /// Default 200 ms; beyond it ticks are skipped on purpose and counted.
    pub max_catchup: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            lookahead_frames: 3,
            outbound_queue_frames: 50,
            inbound_buffer_frames: 16,
            timeline: TimelineConfig::default(),
            max_catchup: Duration::from_millis(200),
        }
    }
}

/// The caller-timeline rules of one call. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineConfig {
    /// Lateness that is only network jitter: a frame up to this late never ends a pause.
    /// Default 100 ms.
    pub jitter: Duration,
    /// How long past its due instant a missing frame is waited for before silence passes run
    /// (the platform is taken to have paused). Default 1 s: a 300 ms TCP stall (or a 900 ms
    /// one) loses nothing and adds no silence.
    pub max_wait: Duration,
    /// A frame later than this (after the rules above) is dropped and counted. Default 5 s.
    pub max_backlog: Duration,
}

impl Default for TimelineConfig {
    fn default() -> TimelineConfig {
        TimelineConfig { jitter: Duration::from_millis(100), max_wait: Duration::from_secs(1), max_backlog: Duration::from_secs(5) }
    }
}
