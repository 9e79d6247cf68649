//! What one emulated call did: the [`CallReport`], filled in as the call runs.

/// The outcome of one call.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CallReport {
    /// Frames the emulator sent.
    pub frames_sent: u64,
    /// Frames not sent because the plan paused the platform's sending.
    pub frames_paused: u64,
    /// Binary messages the bot sent.
    pub frames_received: u64,
    /// Bot frames whose size was not exactly 20 ms.
    pub wrong_size: u64,
    /// Frames played out of the playout buffer.
    pub frames_played: u64,
    /// Largest playout buffer, in frames.
    pub playout_high_water: u64,
    /// Bot frames dropped because the playout buffer was full.
    pub playout_overflow: u64,
    /// Gaps in the bot's audio while it was speaking.
    pub underrun_gaps: u64,
    /// Ticks of silence inside those gaps.
    pub underrun_ticks: u64,
    /// `clear` actions received.
    pub clears: u64,
    /// When each `clear` arrived, in ms since the caller's audio started (the time of the
    /// `--play` file's sample then): barge-in latency is this minus the speech's onset.
    pub clears_at_ms: Vec<f64>,
    /// `notify` actions received.
    pub notifies: u64,
    /// Text messages that were not a known action.
    pub bad_text: u64,
    /// Keypresses sent.
    pub dtmf_sent: u64,
    /// For each keypress, ms until the bot's first audible frame after it.
    pub dtmf_latency_ms: Vec<f64>,
    /// Tagged frames that never came back (echo only).
    pub lost: u64,
    /// Tagged frames that came back more than once.
    pub duplicated: u64,
    /// Tagged frames that came back after a later one.
    pub reordered: u64,
    /// Tagged frames that came back.
    pub echoed: u64,
    /// RFC 3550 interarrival jitter at the end of the call, in ms.
    pub jitter_ms: f64,
    /// Frames the emulator could not send because the server stopped reading its socket.
    pub unsent_frames: u64,
    /// Who closed, and how.
    pub close_code: Option<u16>,
    /// Whether the connection and its upgrade succeeded (false: `error` says why not).
    pub connected: bool,
    /// Whether the emulator closed the call because of a protocol violation.
    pub closed_for_violation: bool,
    /// The first few violations, described.
    pub violations: Vec<String>,
    /// Connection error, if the call failed.
    pub error: Option<String>,
}

impl CallReport {
    /// Protocol violations seen: wrong sizes, unknown text, and a server that stopped reading.
    pub fn violation_count(&self) -> u64 {
        self.wrong_size + self.bad_text + u64::from(self.unsent_frames > 0)
    }
}
