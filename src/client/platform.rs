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

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::audio::{DTMF_LEVEL_DBFS, DtmfTone, StereoRecorder, Tone};
use super::metrics::{Metrics, record};
use super::network::Impairment;
use super::wire::Message;
use crate::auth::PlatformJwt;
use crate::protocol::{AppAction, DtmfDigit, FRAME_DURATION, Metadata, PlatformEvent, SampleRate, decode_l16, encode_l16};

/// Bytes of the tag at the start of each tagged frame: sequence (u32 LE), send time in ns since
/// the run's epoch (u64 LE), and a marker.
pub const TAG_BYTES: usize = 16;
const TAG_MARKER: [u8; 4] = *b"cpl1";

/// A playout gap shorter than this (in ticks) between two stretches of bot audio is an underrun;
/// a longer one is the end of an utterance.
const GAP_TICKS: u32 = 25;

/// What a call plays, and how the emulator behaves.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The call's rate.
    pub rate: SampleRate,
    /// Metadata headers, flattened into the first message.
    pub headers: Map<String, Value>,
    /// Extra HTTP headers on the upgrade (e.g. `Authorization`).
    pub upgrade_headers: Vec<(String, String)>,
    /// Sign a fresh platform JWT for each call and send it as `Authorization: Bearer <JWT>`,
    /// as the platform does for `{"type":"vonage"}`.
    pub jwt: Option<PlatformJwt>,
    /// What the caller says.
    pub source: Source,
    /// How long the caller streams audio.
    pub duration: Duration,
    /// Hang up this long after the start, even mid-stream.
    pub hangup_after: Option<Duration>,
    /// After the stream ends, how long to keep listening before hanging up.
    pub linger: Duration,
    /// Keypresses to send, as `websocket:dtmf` events.
    pub dtmf: Vec<(Duration, DtmfDigit)>,
    /// How the keypresses reach the bot: as the platform's events, as tones in the audio, or
    /// both.
    pub dtmf_mode: DtmfMode,
    /// Duration of each keypress.
    pub dtmf_duration: Duration,
    /// Frames the playout buffer holds (the platform's limit).
    pub playout_limit: usize,
    /// Close the call on a frame of the wrong size, like the platform.
    pub strict: bool,
    /// Tag frames with sequence numbers and send times (load runs).
    pub tag_frames: bool,
    /// Record a stereo WAV: left what the emulator sent, right what the bot played.
    pub record: Option<PathBuf>,
    /// The network on the platform's sending side: jitter and stalls (late, never lost).
    pub network: Impairment,
    /// A pause in the platform's sending: from this far into the call, for this long, no
    /// frames are sent; the caller's audio resumes where it stopped, at real-time pace.
    pub pause: Option<(Duration, Duration)>,
}

impl CallPlan {
    /// A plan with the defaults: silence for `duration`, 3072-frame playout, lenient.
    pub fn new(rate: SampleRate, duration: Duration) -> CallPlan {
        CallPlan {
            rate,
            headers: Map::new(),
            upgrade_headers: Vec::new(),
            jwt: None,
            source: Source::Silence,
            duration,
            hangup_after: None,
            linger: Duration::from_millis(500),
            dtmf: Vec::new(),
            dtmf_mode: DtmfMode::Event,
            dtmf_duration: Duration::from_millis(100),
            playout_limit: 3072,
            strict: false,
            tag_frames: false,
            record: None,
            network: Impairment::default(),
            pause: None,
        }
    }
}

/// What the emulated caller says.
#[derive(Debug, Clone)]
pub enum Source {
    /// Digital silence.
    Silence,
    /// A continuous sine at this frequency (−12 dBFS).
    Tone(f64),
    /// These samples at the call rate, once, then silence.
    Samples(Arc<[i16]>),
}

/// How the emulator presses keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DtmfMode {
    /// As the platform reports a keypress it detected: a `websocket:dtmf` event only.
    #[default]
    Event,
    /// As a caller's phone sends them when the platform does not detect keys: tones in the
    /// audio only (to test a bot's in-band detection on its own).
    Inband,
    /// Both: the event, and the tones in the audio.
    Both,
}

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

    /// One 20 ms tick scheduled at `scheduled`, run at `now`: the caller's next frame, any due
    /// keypress, one frame of playout, and the hang-up when it is time.
    pub fn handle_tick(&mut self, scheduled: Instant, now: Instant, metrics: &mut Metrics, emit: &mut dyn FnMut(Out<'_>)) {
        if self.closed {
            return;
        }
        let started = *self.started.get_or_insert(scheduled);
        let elapsed = scheduled.saturating_duration_since(started);
        let pause = self.plan.pause.map_or(Duration::ZERO, |(_, length)| length);
        if self.plan.hangup_after.is_some_and(|h| elapsed >= h) || elapsed >= self.plan.duration + pause + self.plan.linger {
            self.close(1000, emit);
            return;
        }
        self.send_due_dtmf(elapsed, now, emit);
        let paused = self.plan.pause.is_some_and(|(at, length)| elapsed >= at && elapsed < at + length);
        let streaming = elapsed < self.plan.duration + pause;
        if paused {
            self.report.frames_paused += 1;
        } else if streaming {
            self.fill_source();
            let n = encode_l16(&self.pcm, &mut self.bytes);
            if self.plan.tag_frames && n >= TAG_BYTES {
                let seq = self.report.frames_sent as u32;
                let sent_ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
                self.bytes[..4].copy_from_slice(&seq.to_le_bytes());
                self.bytes[4..12].copy_from_slice(&sent_ns.to_le_bytes());
                self.bytes[12..16].copy_from_slice(&TAG_MARKER);
            }
            emit(Out::Binary(&self.bytes));
            self.report.frames_sent += 1;
            let late = now.saturating_duration_since(scheduled);
            record(&mut metrics.send_late, late);
            let second = scheduled.saturating_duration_since(self.epoch).as_secs() as usize;
            record(&mut metrics.window(second).send_late, late);
        } else {
            self.pcm.fill(0);
        }
        self.play_out(emit);
    }

    fn fill_source(&mut self) {
        match &self.plan.source {
            Source::Silence => self.pcm.fill(0),
            Source::Tone(_) => match &mut self.tone {
                Some(tone) => tone.fill(&mut self.pcm),
                None => self.pcm.fill(0),
            },
            Source::Samples(samples) => {
                let n = self.pcm.len();
                let from = self.source_pos.min(samples.len());
                let to = (from + n).min(samples.len());
                self.pcm[..to - from].copy_from_slice(&samples[from..to]);
                self.pcm[to - from..].fill(0);
                self.source_pos = from + n;
            }
        }
        if let Some(tone) = &mut self.inband {
            tone.fill(&mut self.pcm);
            if tone.is_finished() {
                self.inband = None;
            }
        }
    }

    fn send_due_dtmf(&mut self, elapsed: Duration, now: Instant, emit: &mut dyn FnMut(Out<'_>)) {
        while let Some(&(at, digit)) = self.plan.dtmf.get(self.dtmf_next) {
            if at > elapsed {
                return;
            }
            self.dtmf_next += 1;
            let ms = u32::try_from(self.plan.dtmf_duration.as_millis()).unwrap_or(u32::MAX);
            if self.plan.dtmf_mode != DtmfMode::Inband {
                self.text = PlatformEvent::Dtmf { digit, duration_ms: Some(ms) }.to_json();
                emit(Out::Text(&self.text));
            }
            self.report.dtmf_sent += 1;
            self.dtmf_waiting = Some(now);
            if self.plan.dtmf_mode != DtmfMode::Event {
                let samples = (u128::from(self.plan.rate.hz()) * self.plan.dtmf_duration.as_nanos() / 1_000_000_000) as u64;
                self.inband = DtmfTone::for_key(digit, self.plan.rate, DTMF_LEVEL_DBFS).ok().map(|t| t.with_length(samples));
            }
        }
    }

    fn play_out(&mut self, emit: &mut dyn FnMut(Out<'_>)) {
        if self.playout.len() >= self.frame_bytes {
            for (dst, src) in self.bytes.iter_mut().zip(self.playout.drain(..self.frame_bytes)) {
                *dst = src;
            }
            decode_l16(&self.bytes, &mut self.played);
            self.played_bytes += self.frame_bytes as u64;
            self.report.frames_played += 1;
            if self.empty_run > 0 && self.playing {
                self.report.underrun_gaps += 1;
                self.report.underrun_ticks += u64::from(self.empty_run);
            }
            self.empty_run = 0;
            self.playing = true;
        } else {
            self.played.fill(0);
            if self.playing {
                self.empty_run += 1;
                if self.empty_run > GAP_TICKS {
                    self.playing = false;
                    self.empty_run = 0;
                }
            }
        }
        if let Some(recorder) = &mut self.recorder
            && let Err(e) = recorder.write(&self.pcm, &self.played)
        {
            self.report.error.get_or_insert_with(|| format!("recording failed: {e}"));
            self.recorder = None;
        }
        self.release_markers(emit);
    }

    fn release_markers(&mut self, emit: &mut dyn FnMut(Out<'_>)) {
        while self.markers.front().is_some_and(|(position, _)| *position <= self.played_bytes) {
            if let Some((_, payload)) = self.markers.pop_front() {
                self.text = PlatformEvent::Notify { payload }.to_json();
                emit(Out::Text(&self.text));
            }
        }
    }

    /// A message from the bot, received at `now`.
    pub fn handle_message(&mut self, now: Instant, message: Message<'_>, metrics: &mut Metrics, emit: &mut dyn FnMut(Out<'_>)) {
        if self.closed {
            return;
        }
        match message {
            Message::Binary(frame) => self.handle_audio(now, frame, metrics, emit),
            Message::Text(text) => match AppAction::parse(text) {
                Ok(AppAction::Clear) => {
                    self.report.clears += 1;
                    self.playout.clear();
                    self.played_bytes = self.queued_bytes;
                    self.text = PlatformEvent::Cleared.to_json();
                    emit(Out::Text(&self.text));
                    self.release_markers(emit);
                }
                Ok(AppAction::Notify { payload }) => {
                    self.report.notifies += 1;
                    self.markers.push_back((self.queued_bytes, payload));
                    self.release_markers(emit);
                }
                Err(e) => {
                    self.report.bad_text += 1;
                    self.violation(format!("text message refused: {e}"));
                }
            },
            Message::Ping(_) | Message::Pong => {}
            Message::Close(code) => {
                self.report.close_code = code.or(Some(1005));
                self.closed = true;
            }
        }
    }

    fn handle_audio(&mut self, now: Instant, frame: &[u8], metrics: &mut Metrics, emit: &mut dyn FnMut(Out<'_>)) {
        self.report.frames_received += 1;
        if frame.len() != self.frame_bytes {
            self.report.wrong_size += 1;
            self.violation(format!("frame of {} bytes, expected {}", frame.len(), self.frame_bytes));
            if self.plan.strict {
                self.report.closed_for_violation = true;
                self.close(1007, emit);
                return;
            }
        }
        let second = now.saturating_duration_since(self.epoch).as_secs() as usize;
        let tag = self.read_tag(frame);
        if let Some((seq, sent_ns)) = tag {
            self.count_seq(seq);
            let rtt = now.saturating_duration_since(self.epoch + Duration::from_nanos(sent_ns));
            record(&mut metrics.rtt, rtt);
            record(&mut metrics.window(second).rtt, rtt);
        }
        if let Some((last, last_sent)) = self.last_arrival {
            let arrival = now.saturating_duration_since(last);
            let deviation = arrival.abs_diff(FRAME_DURATION);
            record(&mut metrics.arrival, deviation);
            record(&mut metrics.window(second).arrival, deviation);
            // RFC 3550 section 6.4.1: D = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16.
            let sent_delta = match (tag, last_sent) {
                (Some((_, sj)), Some(si)) => sj as f64 - si as f64,
                _ => FRAME_DURATION.as_nanos() as f64,
            };
            let d = arrival.as_nanos() as f64 - sent_delta;
            self.jitter_ns += (d.abs() - self.jitter_ns) / 16.0;
        }
        self.last_arrival = Some((now, tag.map(|t| t.1)));
        if let Some(sent_at) = self.dtmf_waiting
            && frame.chunks_exact(2).any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 64)
        {
            self.report.dtmf_latency_ms.push(now.saturating_duration_since(sent_at).as_secs_f64() * 1000.0);
            self.dtmf_waiting = None;
        }
        let frames_buffered = self.playout.len() / self.frame_bytes;
        if frames_buffered >= self.plan.playout_limit {
            self.report.playout_overflow += 1;
            return;
        }
        self.playout.extend(frame);
        self.queued_bytes += frame.len() as u64;
        self.report.playout_high_water = self.report.playout_high_water.max((self.playout.len() / self.frame_bytes) as u64);
    }

    fn read_tag(&self, frame: &[u8]) -> Option<(u32, u64)> {
        if !self.plan.tag_frames || frame.len() < TAG_BYTES || frame[12..16] != TAG_MARKER {
            return None;
        }
        let seq = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&frame[4..12]);
        Some((seq, u64::from_le_bytes(ns)))
    }

    fn count_seq(&mut self, seq: u32) {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if seq as u64 >= self.report.frames_sent {
            self.violation(format!("echoed sequence {seq} was never sent"));
            return;
        }
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.report.duplicated += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.report.echoed += 1;
        match self.highest_seq {
            Some(h) if seq < h => self.report.reordered += 1,
            _ => self.highest_seq = Some(seq),
        }
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
mod tests {
    use super::*;

    fn plan(rate: SampleRate, secs: u64) -> CallPlan {
        CallPlan::new(rate, Duration::from_secs(secs))
    }

    #[derive(Debug, PartialEq)]
    enum Sent {
        Text(String),
        Binary(usize),
        Close(u16),
    }

    fn tick(call: &mut PlatformCall, t: Instant, metrics: &mut Metrics) -> Vec<Sent> {
        let mut out = Vec::new();
        call.handle_tick(t, t, metrics, &mut |o| out.push(sent(o)));
        out
    }

    fn message(call: &mut PlatformCall, t: Instant, m: Message<'_>, metrics: &mut Metrics) -> Vec<Sent> {
        let mut out = Vec::new();
        call.handle_message(t, m, metrics, &mut |o| out.push(sent(o)));
        out
    }

    fn sent(o: Out<'_>) -> Sent {
        match o {
            Out::Text(t) => Sent::Text(t.to_owned()),
            Out::Binary(b) => Sent::Binary(b.len()),
            Out::Close(c) => Sent::Close(c),
        }
    }

    const NOTIFY: &str = r#"{"action":"notify","payload":{"n":1}}"#;
    const ACK: &str = r#"{"event":"websocket:notify","payload":{"n":1}}"#;

    #[test]
    fn sends_one_exact_frame_per_tick_then_hangs_up() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let mut call = PlatformCall::new(Arc::new(plan(SampleRate::Hz24000, 1)), t0);
        assert_eq!(call.metadata(), r#"{"event":"websocket:connected","content-type":"audio/l16;rate=24000"}"#);
        for n in 0..50u32 {
            assert_eq!(tick(&mut call, t0 + FRAME_DURATION * n, &mut m), [Sent::Binary(960)]);
        }
        // Linger (500 ms) with no audio, then close 1000.
        for n in 50..75u32 {
            assert!(tick(&mut call, t0 + FRAME_DURATION * n, &mut m).is_empty());
        }
        assert_eq!(tick(&mut call, t0 + FRAME_DURATION * 75, &mut m), [Sent::Close(1000)]);
        assert!(call.is_done());
        assert_eq!(call.finish().frames_sent, 50);
    }

    #[test]
    fn notify_is_acknowledged_only_once_the_audio_before_it_has_played() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let mut call = PlatformCall::new(Arc::new(plan(SampleRate::Hz8000, 10)), t0);
        // The bot bursts five frames and a notify at once.
        for _ in 0..5 {
            assert!(message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m).is_empty());
        }
        assert!(message(&mut call, t0, Message::Text(NOTIFY), &mut m).is_empty(), "nothing has played yet");
        assert_eq!(call.report().playout_high_water, 5);
        // One frame plays per tick: the acknowledgement comes with the fifth.
        for n in 0..5u32 {
            let out = tick(&mut call, t0 + FRAME_DURATION * n, &mut m);
            if n < 4 {
                assert_eq!(out, [Sent::Binary(320)], "tick {n}");
            } else {
                assert_eq!(out, [Sent::Binary(320), Sent::Text(ACK.into())], "tick {n}");
            }
        }
        // A notify with nothing queued is acknowledged at once.
        assert_eq!(message(&mut call, t0, Message::Text(NOTIFY), &mut m), [Sent::Text(ACK.into())]);
        assert_eq!(call.report().frames_played, 5);
    }

    #[test]
    fn clear_drops_the_buffer_and_is_acknowledged() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let mut call = PlatformCall::new(Arc::new(plan(SampleRate::Hz8000, 10)), t0);
        for _ in 0..100 {
            message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
        }
        message(&mut call, t0, Message::Text(NOTIFY), &mut m);
        tick(&mut call, t0, &mut m);
        let out = message(&mut call, t0, Message::Text(r#"{"action":"clear"}"#), &mut m);
        assert_eq!(out, [Sent::Text(r#"{"event":"websocket:cleared"}"#.into()), Sent::Text(ACK.into())]);
        tick(&mut call, t0 + FRAME_DURATION, &mut m);
        let report = call.finish();
        assert_eq!((report.frames_played, report.clears, report.notifies), (1, 1, 1));
    }

    #[test]
    fn counts_wrong_sizes_and_strict_mode_closes() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let mut lenient = PlatformCall::new(Arc::new(plan(SampleRate::Hz16000, 10)), t0);
        assert!(message(&mut lenient, t0, Message::Binary(&[0u8; 641]), &mut m).is_empty());
        message(&mut lenient, t0, Message::Text("{\"action\":\"dance\"}"), &mut m);
        let report = lenient.finish();
        assert_eq!((report.wrong_size, report.bad_text, report.violation_count()), (1, 1, 2));
        assert_eq!(report.violations[0], "frame of 641 bytes, expected 640");
        let mut strict = PlatformCall::new(Arc::new(CallPlan { strict: true, ..plan(SampleRate::Hz16000, 10) }), t0);
        assert_eq!(message(&mut strict, t0, Message::Binary(&[0u8; 320]), &mut m), [Sent::Close(1007)]);
        assert!(strict.is_done());
        assert!(strict.finish().closed_for_violation);
    }

    #[test]
    fn playout_limit_overflow_and_underrun_gaps() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let mut call = PlatformCall::new(Arc::new(CallPlan { playout_limit: 10, ..plan(SampleRate::Hz8000, 10) }), t0);
        for _ in 0..15 {
            message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
        }
        let mut t = 0u32;
        let mut next = || {
            t += 1;
            t0 + FRAME_DURATION * t
        };
        for _ in 0..10 {
            tick(&mut call, next(), &mut m);
        }
        // Three ticks of silence, then the bot speaks again: one gap of 60 ms.
        for _ in 0..3 {
            tick(&mut call, next(), &mut m);
        }
        message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
        tick(&mut call, next(), &mut m);
        // A long silence is the end of an utterance, not an underrun.
        for _ in 0..40 {
            tick(&mut call, next(), &mut m);
        }
        message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
        tick(&mut call, next(), &mut m);
        let report = call.finish();
        assert_eq!(report.playout_overflow, 5);
        assert_eq!(report.playout_high_water, 10);
        assert_eq!((report.underrun_gaps, report.underrun_ticks), (1, 3));
    }

    #[test]
    fn dtmf_goes_out_on_time_and_echoed_tags_are_matched() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let plan = CallPlan {
            dtmf: vec![(Duration::from_millis(40), DtmfDigit::Digit(5))],
            tag_frames: true,
            source: Source::Samples(vec![1000i16; 8000].into()),
            ..plan(SampleRate::Hz8000, 10)
        };
        let mut call = PlatformCall::new(Arc::new(plan), t0);
        let mut frames = Vec::new();
        for n in 0..4u32 {
            let t = t0 + FRAME_DURATION * n;
            let mut out = Vec::new();
            call.handle_tick(t, t, &mut m, &mut |o| match o {
                Out::Binary(b) => frames.push(b.to_vec()),
                Out::Text(text) => out.push(text.to_owned()),
                Out::Close(_) => {}
            });
            assert_eq!(out.len(), usize::from(n == 2), "the key goes out at 40 ms");
            if n == 2 {
                assert_eq!(out[0], r#"{"event":"websocket:dtmf","digit":"5","duration":100}"#);
            }
        }
        // Echo them back out of order, one twice.
        let back = t0 + FRAME_DURATION * 4;
        for i in [0, 2, 1, 3, 3] {
            message(&mut call, back, Message::Binary(&frames[i]), &mut m);
        }
        let report = call.finish();
        assert_eq!((report.echoed, report.duplicated, report.reordered, report.lost), (4, 1, 1, 0));
        assert_eq!(report.dtmf_sent, 1);
        assert_eq!(report.dtmf_latency_ms.len(), 1, "the first audible frame after the key");
        assert_eq!(m.rtt.len(), 5);
    }

    #[test]
    fn inband_keys_replace_the_callers_audio_for_their_duration() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let plan = CallPlan {
            dtmf: vec![(Duration::from_millis(40), DtmfDigit::Pound)],
            dtmf_mode: DtmfMode::Inband,
            dtmf_duration: Duration::from_millis(70),
            source: Source::Samples(vec![7i16; 8000].into()),
            ..plan(SampleRate::Hz8000, 1)
        };
        let mut call = PlatformCall::new(Arc::new(plan), t0);
        let mut audio = Vec::new();
        for n in 0..10u32 {
            let t = t0 + FRAME_DURATION * n;
            call.handle_tick(t, t, &mut m, &mut |o| match o {
                Out::Binary(b) => audio.extend(b.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]))),
                Out::Text(text) => panic!("inband only, yet {text}"),
                Out::Close(_) => {}
            });
        }
        // The key replaces samples 320..880 (40 ms to 110 ms); the caller's audio is on either side.
        assert!(audio[..320].iter().all(|&s| s == 7));
        assert!(audio[880..].iter().all(|&s| s == 7));
        let tone = &audio[320..880];
        assert!(tone.iter().filter(|&&s| s.unsigned_abs() > 3000).count() > 400, "the tone is there");
        assert!(tone[0].abs() < 100 && tone[tone.len() - 1].abs() < 100, "edges: {} .. {}", tone[0], tone[tone.len() - 1]);
        assert_eq!(call.finish().dtmf_sent, 1);
    }
}
