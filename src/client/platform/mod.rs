//! One emulated platform call, as a state machine with no socket and no clock of its own.
//!
//! It behaves as docs/protocol.md describes the platform: one metadata frame, then exactly one 20 ms
//! frame per tick on an absolute clock; the bot's audio goes into a bounded playout buffer that
//! plays one frame per tick; `clear` drops the buffer and is acknowledged with
//! `websocket:cleared`; `notify` is acknowledged only when everything before it has *played*.
//! Everything the bot does wrong is counted, and strict mode closes the call on a wrong frame
//! size as the platform does.
//!
//! With `tag_frames`, each sent frame carries its sequence number and send time in its first
//! 16 bytes, so that an echo can be matched: round-trip time, loss, duplicates and reordering.
//!
//! The call's two inputs have a file each: `tick` is what happens every 20 ms (the caller's frame,
//! keys, playout, the hang-up), `inbound` what the bot sends. `plan` holds what the call is told to
//! do, `outcome` what it reports, `tag` the frame tags' layout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::audio::{DtmfTone, StereoRecorder, Tone};
use crate::protocol::Metadata;

mod inbound;
mod outcome;
mod plan;
mod tag;
mod tick;

pub use outcome::CallReport;
pub use plan::{CallPlan, DtmfMode, Source};
pub use tag::TAG_BYTES;

/// What the call wants sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
    /// A close frame with this code; the call is over after it.
    Close(u16),
}

/// One emulated call.
#[derive(Debug)]
pub struct PlatformCall {
    plan: Arc<CallPlan>,
    epoch: Instant,
    frame_bytes: usize,
    started: Option<Instant>,
    tone: Option<Tone>,
    source_pos: usize,
    dtmf_next: usize,
    inband: Option<DtmfTone>,
    playout: VecDeque<u8>,
    queued_bytes: u64,
    played_bytes: u64,
    markers: VecDeque<(u64, Value)>,
    empty_run: u32,
    playing: bool,
    dtmf_waiting: Option<Instant>,
    last_arrival: Option<(Instant, Option<u64>)>,
    jitter_ns: f64,
    seen: Vec<u64>,
    highest_seq: Option<u32>,
    pcm: Vec<i16>,
    played: Vec<i16>,
    bytes: Vec<u8>,
    text: String,
    recorder: Option<StereoRecorder>,
    report: CallReport,
    closed: bool,
}

impl PlatformCall {
    /// A call following `plan`. Tag timestamps count from `epoch`.
    pub fn new(plan: Arc<CallPlan>, epoch: Instant) -> PlatformCall {
        let rate = plan.rate;
        let tone = match plan.source {
            Source::Tone(hz) => Tone::new(hz, -12.0, rate).ok(),
            _ => None,
        };
        let recorder = match &plan.record {
            Some(path) => match StereoRecorder::create(path, rate) {
                Ok(r) => Some(r),
                Err(e) => {
                    let mut call = PlatformCall::new(Arc::new(CallPlan { record: None, ..(*plan).clone() }), epoch);
                    call.report.error = Some(format!("cannot record: {e}"));
                    return call;
                }
            },
            None => None,
        };
        PlatformCall {
            frame_bytes: rate.frame_bytes(),
            epoch,
            started: None,
            tone,
            source_pos: 0,
            dtmf_next: 0,
            inband: None,
            playout: VecDeque::new(),
            queued_bytes: 0,
            played_bytes: 0,
            markers: VecDeque::new(),
            empty_run: 0,
            playing: false,
            dtmf_waiting: None,
            last_arrival: None,
            jitter_ns: 0.0,
            seen: Vec::new(),
            highest_seq: None,
            pcm: vec![0; rate.frame_samples()],
            played: vec![0; rate.frame_samples()],
            bytes: vec![0; rate.frame_bytes()],
            text: String::new(),
            recorder,
            report: CallReport { connected: true, ..CallReport::default() },
            closed: false,
            plan,
        }
    }

    /// The metadata frame to send first.
    pub fn metadata(&self) -> String {
        Metadata { rate: self.plan.rate, headers: self.plan.headers.clone() }.to_json()
    }

    /// Whether the call is over (closed by either side).
    pub fn is_done(&self) -> bool {
        self.closed
    }

    /// The report so far.
    pub fn report(&self) -> &CallReport {
        &self.report
    }

    fn violation(&mut self, what: String) {
        if self.report.violations.len() < 5 {
            self.report.violations.push(what);
        }
    }

    fn close(&mut self, code: u16, emit: &mut dyn FnMut(Out<'_>)) {
        if !self.closed {
            self.closed = true;
            self.report.close_code = Some(code);
            emit(Out::Close(code));
        }
    }

    /// `frames` of this tick's audio could not be written because the server is not reading:
    /// they are counted as unsent instead of sent.
    pub fn note_unsent(&mut self, frames: u64) {
        if frames == 0 {
            return;
        }
        if self.report.unsent_frames == 0 {
            self.violation("the server stopped reading: frames could not be sent".into());
        }
        self.report.frames_sent -= frames.min(self.report.frames_sent);
        self.report.unsent_frames += frames;
    }

    /// The connection ended without a close frame.
    pub fn handle_lost(&mut self, error: &str) {
        if !self.closed {
            self.closed = true;
            self.report.close_code = Some(1006);
            self.report.error.get_or_insert_with(|| error.to_owned());
        }
    }

    /// Ends the call: finishes the recording and the counts.
    pub fn finish(mut self) -> CallReport {
        if self.plan.tag_frames {
            self.report.lost = self.report.frames_sent.saturating_sub(self.report.echoed);
        }
        self.report.jitter_ms = self.jitter_ns / 1e6;
        if let Some(recorder) = self.recorder.take()
            && let Err(e) = recorder.finish()
        {
            self.report.error.get_or_insert_with(|| format!("recording failed: {e}"));
        }
        self.report
    }
}

#[cfg(test)]
mod tests;
