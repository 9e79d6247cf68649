//! One call as a state machine, with no socket, thread or clock of its own.
//!
//! A [`Session`] lives on a media thread. The caller's bytes go in through
//! [`handle_audio`](Session::handle_audio) with their arrival instant, platform events through
//! [`handle_platform`](Session::handle_platform), and time through
//! [`handle_tick`](Session::handle_tick). The session keeps two clocks (see `docs/media.md`):
//! the caller's timeline, on which every frame that arrived runs one pass of the caller-timeline
//! stages when it arrives (the rules for late frames, stalls and pauses are in [`InboundBuffer`]),
//! and the wall clock, whose 20 ms ticks run the wall stages (generated audio) whether or not the
//! caller's frame came; a frame that arrives within half a frame of its tick shares its pass.
//! After each pass the pacer decides what may leave. What leaves comes out of
//! [`poll_transmit`](Session::poll_transmit) (exact frames, `clear`, `notify`) and
//! [`poll_event`](Session::poll_event) (events for logs and webhooks).
//!
//! Nothing here allocates after [`Session::new`]: every queue is sized there and full queues drop
//! and count instead of growing. Tests drive it with byte literals and a fake clock.
//!
//! # Events
//!
//! An event a processor emits in one pass reaches the other processors at the next pass, and
//! goes out through [`poll_event`](Session::poll_event) right after that pass (at the end of the
//! call, at [`finish`](Session::finish)): one pass, 20 ms, after it was emitted. The session
//! moves each event from buffer to buffer and never copies it, so an [`Event::Custom`] made on
//! another thread (a fork's text reply, say) is neither allocated nor freed here: the media
//! thread lets go of it before it leaves, and its data is freed by whoever takes it from
//! `poll_event`. The exception is a full queue: an event dropped because `poll_event`'s queue
//! (64 events) is full is freed here, and counted in `dropped_requests`. The session's own
//! events (a platform keypress, a stream's end) go out at once; they hold no heap data.

mod control;
mod inbound;
mod opening;
mod outbound;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use crate::call::StreamEnd;
pub use control::{Control, SharedAudio};
pub use inbound::{BURST_WINDOW, InboundBuffer, Next, TimelineConfig};
pub use opening::{CloseCode, FirstMessage, Rejection, admit_first_message, call_id_from};
pub use outbound::{MAX_PENDING_MARKERS, Outbound, Released};

use crate::processor::{CallInfo, Context, DtmfSource, Event, Pass, Pipeline, ProcessorError, Requests, Setup};
use crate::protocol::{DtmfDigit, FRAME_DURATION, MAX_FRAME_BYTES, SampleRate, encode_l16};
use crate::services::Services;
use control::ApiAudio;

/// Frames beyond the look-ahead the outbound queue of a pipeline that never queues audio holds:
/// 200 ms of a burst (a late caller's backlog, echoed).
const QUEUE_SLACK_FRAMES: usize = 10;

/// Events kept for the next pass (platform events and processors' emitted events).
const MAX_PENDING_EVENTS: usize = 64;

/// Room for events a session starts with.
const EVENTS_TO_START: usize = 8;

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

/// How long a wall tick waits for the caller's frame before it runs without it (and, unless the
/// grid is pinned, how early a caller frame may be and still share its tick's pass): half a
/// frame.
const TICK_GRACE: Duration = Duration::from_millis(10);

/// An event from the platform, in the form the media thread takes (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundEvent {
    /// `websocket:dtmf`.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// Its duration, when the platform gave one.
        duration_ms: Option<u32>,
    },
    /// `websocket:cleared`.
    Cleared,
    /// `websocket:notify` carrying one of our markers.
    NotifyPlayed {
        /// The marker.
        marker: u64,
    },
}

/// Something to send to the platform, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// One frame, encoded into the caller's buffer; it starts to play at `deadline`.
    Audio {
        /// The tick (on the call's 20 ms grid) at which the pacer let it leave: it should be on
        /// the wire right after this instant.
        released: Instant,
        /// When the platform should start playing it; at or after `released`, by up to the
        /// look-ahead.
        deadline: Instant,
        /// Bytes written into the buffer: always exactly one frame.
        len: usize,
    },
    /// `{"action":"clear"}`.
    Clear,
    /// `{"action":"notify","payload":{"callpipe_marker":N}}`.
    Notify {
        /// The marker.
        marker: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Audio { released: Instant, deadline: Instant },
    Clear,
    Notify(u64),
}

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

/// One call's media state. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    rate: SampleRate,
    pipeline: Pipeline,
    inbound: InboundBuffer,
    outbound: Outbound,
    requests: Requests,
    input: Vec<i16>,
    output: Vec<i16>,
    caller_position: u64,
    wall_position: u64,
    /// The next wall tick's scheduled instant (set by the first tick).
    next_wall: Option<Instant>,
    /// How early a caller frame may share a wall tick's pass: [`TICK_GRACE`], or zero once the
    /// grid is pinned ([`Session::pin_wall_grid`]).
    early: Duration,
    /// Whether the grid has been placed: on the caller's first frame, or pinned.
    wall_placed: bool,
    /// The caller's newest frame that no wall pass has seen yet (after the caller-timeline
    /// stages), for the next wall-only pass: wall-clock stages that listen (a conference) hear
    /// the caller with at most a frame of delay, whatever the arrival phase.
    wall_input: Vec<i16>,
    /// Whether `wall_input` holds such a frame, and whether it was audio (not pause silence).
    wall_input_ready: Option<bool>,
    max_catchup: Duration,
    events_now: Vec<(Option<usize>, Event)>,
    events_next: Vec<(Option<usize>, Event)>,
    events_out: VecDeque<Event>,
    transmit: VecDeque<Pending>,
    released: VecDeque<i16>,
    awaiting_notify: VecDeque<u64>,
    awaiting_clears: u64,
    stats: SessionStats,
    finished: bool,
    /// A processor asked to hang up (see [`Context::hang_up`]).
    hangup_requested: bool,
    /// Control API state: outbound silence, deaf processors, a stream and DTMF tones.
    muted: bool,
    earmuffed: bool,
    stream: Option<ApiAudio>,
    dtmf: Option<ApiAudio>,
    dtmf_next: Option<ApiAudio>,
}

impl Session {
    /// Prepares `pipeline` for a call at `rate` and sizes every buffer.
    /// The processors get `services` for their files and connections.
    pub fn new(
        rate: SampleRate,
        call: &CallInfo,
        mut pipeline: Pipeline,
        config: SessionConfig,
        services: &Services,
    ) -> Result<Session, ProcessorError> {
        pipeline.prepare(&Setup { rate, call, services })?;
        let frame = rate.frame_samples();
        let lookahead = config.lookahead_frames.max(1) as usize;
        // A pipeline that never queues audio needs room for the look-ahead and a burst of
        // `QUEUE_SLACK_FRAMES` (beyond that, what a stall's backlog produces is dropped and
        // counted, so that its echo does not stay late), and no staging for queued audio but a
        // frame (the control API's stream mixes into it); one that does gets the configured
        // queue.
        let (queue_frames, staging) = if pipeline.queues_output() {
            (config.outbound_queue_frames, frame * config.outbound_queue_frames.clamp(1, 50))
        } else {
            ((lookahead + QUEUE_SLACK_FRAMES).min(config.outbound_queue_frames.max(1)), frame)
        };
        let transmit_capacity = lookahead + MAX_PENDING_MARKERS + crate::processor::MAX_NOTIFIES_PER_PASS + 4;
        Ok(Session {
            rate,
            pipeline,
            inbound: InboundBuffer::new(rate, config.inbound_buffer_frames, config.timeline),
            outbound: Outbound::new(rate, queue_frames, config.lookahead_frames),
            requests: Requests::new(staging),
            input: vec![0; frame],
            output: vec![0; frame],
            caller_position: 0,
            wall_position: 0,
            next_wall: None,
            early: TICK_GRACE,
            wall_placed: false,
            wall_input: vec![0; frame],
            wall_input_ready: None,
            max_catchup: config.max_catchup,
            // Events are rare: these start small and grow (up to MAX_PENDING_EVENTS) with the
            // first bursts of them, then stay.
            events_now: Vec::with_capacity(EVENTS_TO_START),
            events_next: Vec::with_capacity(EVENTS_TO_START),
            events_out: VecDeque::with_capacity(EVENTS_TO_START),
            transmit: VecDeque::with_capacity(transmit_capacity),
            released: VecDeque::with_capacity(frame * (lookahead + 1)),
            awaiting_notify: VecDeque::with_capacity(MAX_PENDING_MARKERS),
            awaiting_clears: 0,
            stats: SessionStats::default(),
            finished: false,
            hangup_requested: false,
            muted: false,
            earmuffed: false,
            stream: None,
            dtmf: None,
            dtmf_next: None,
        })
    }

    /// Pins the wall clock's grid: ticks at `first` and every 20 ms after, and a caller frame
    /// shares a tick's pass only once the tick is due (never early). A media thread pins the
    /// grid of a conference member to its mixer's cycle, so that the member's wall pass falls
    /// between two mixes exactly once whatever the arrival phase of its caller's frames.
    pub fn pin_wall_grid(&mut self, first: Instant) {
        self.next_wall = Some(first);
        self.early = Duration::ZERO;
        self.wall_placed = true;
    }

    /// The call's sample rate.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// The conference joins of the pipeline's stages, taken (see
    /// [`Processor::take_conference_join`](crate::processor::Processor::take_conference_join)).
    pub fn take_conference_joins(&mut self) -> Vec<crate::processor::ConferenceJoin> {
        self.pipeline.take_conference_joins()
    }

    /// The pipeline's total processing delay.
    pub fn pipeline_delay(&self) -> Duration {
        self.pipeline.delay()
    }

    /// When the session next has something to do if nothing arrives: its next wall tick (once
    /// the tick's frame has had its grace), the end of a frame's hold, the next frame of pause
    /// silence. A media thread visits it then (or sooner, when something arrives).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let grace = self.tick_grace();
        let wall = self.next_wall.map(|wall| wall + grace);
        match (wall, self.inbound.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long a wall tick waits for its caller frame: [`TICK_GRACE`] once the caller's audio
    /// has started, nothing before (there is no frame to wait for).
    fn tick_grace(&self) -> Duration {
        if self.inbound.frames() > 0 { TICK_GRACE } else { Duration::ZERO }
    }

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

    /// The caller's audio, received by `now`: any number of bytes, re-framed here. Give at
    /// most [`inbound_room`](Session::inbound_room) bytes; more is dropped and counted.
    pub fn handle_audio(&mut self, bytes: &[u8], now: Instant) {
        self.inbound.push(bytes, now);
    }

    /// Bytes of caller audio the session can take now.
    pub fn inbound_room(&self) -> usize {
        self.inbound.room()
    }

    /// A platform event; processors see it at the next pass. A platform keypress also goes out
    /// at once (through [`poll_event`](Session::poll_event)), for the call's event stream.
    pub fn handle_platform(&mut self, event: InboundEvent) {
        let event = match event {
            InboundEvent::Dtmf { digit, duration_ms } => {
                let event = Event::Dtmf { digit, start_ms: None, duration_ms, source: DtmfSource::Platform };
                self.emit_own(event);
                return;
            }
            InboundEvent::Cleared => {
                if self.awaiting_clears == 0 {
                    self.stats.unmatched_acks += 1;
                    return;
                }
                self.awaiting_clears -= 1;
                Event::Cleared
            }
            InboundEvent::NotifyPlayed { marker } => match self.awaiting_notify.iter().position(|m| *m == marker) {
                Some(i) => {
                    self.awaiting_notify.remove(i);
                    Event::NotifyPlayed { marker }
                }
                None => {
                    self.stats.unmatched_acks += 1;
                    return;
                }
            },
        };
        self.push_event(None, event);
    }

    /// A command from the control plane; it applies from the next pass.
    pub fn handle_control(&mut self, command: Control) {
        match command {
            Control::Mute(on) => {
                // Silence at once: what waits here is dropped too (the platform holds at most
                // the look-ahead).
                if on && !self.muted {
                    self.outbound.clear();
                }
                self.muted = on;
            }
            Control::Earmuff(on) => self.earmuffed = on,
            Control::Stream { id, audio, loops, gain } => {
                self.end_stream(StreamEnd::Replaced);
                self.stream = Some(ApiAudio::new(id, audio, loops, gain));
            }
            Control::StopStream => self.end_stream(StreamEnd::Stopped),
            Control::Dtmf { audio } => {
                // Keys follow the ones playing (one sequence may wait; a newer one replaces it).
                let keys = ApiAudio::new(0, audio, 1, 1.0);
                if self.dtmf.is_none() {
                    self.dtmf = Some(keys);
                } else {
                    self.dtmf_next = Some(keys);
                }
            }
            Control::Clear => self.clear_outbound(),
            Control::Notify { marker } => {
                if !self.outbound.mark(marker) {
                    self.send_notify(marker);
                }
            }
        }
    }

    /// Ends the API's stream, if one plays, with an event.
    fn end_stream(&mut self, reason: StreamEnd) {
        if let Some(stream) = self.stream.take() {
            self.emit_own(Event::StreamDone { id: stream.id, reason });
        }
    }

    /// An event of the session's own: to the processors at the next pass, and out.
    fn emit_own(&mut self, event: Event) {
        if self.events_out.len() < MAX_PENDING_EVENTS {
            self.events_out.push_back(event.clone());
        } else {
            self.stats.dropped_requests += 1;
        }
        self.push_event(None, event);
    }

    /// Lets time pass to `now`: runs a pass for every frame of the caller's timeline that is
    /// ready (each sharing the pass of the wall tick it falls in, when one is due), then a
    /// wall-only pass for every tick that has waited half a frame for its frame in vain, and
    /// after each pass lets the pacer release frames. Call it whenever audio has arrived and
    /// at least once a millisecond or so; a call with nothing to do costs a few comparisons.
    pub fn handle_tick(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let mut wall = *self.next_wall.get_or_insert(now);
        self.inbound.start(now);
        let grace = self.tick_grace();
        let behind = now.saturating_duration_since(wall);
        if behind > self.max_catchup {
            // Too far behind to make every tick of generated audio up: skip to the present on
            // purpose (the caller's timeline loses nothing).
            let skipped = (behind.as_nanos() / FRAME_DURATION.as_nanos()) as u64;
            self.stats.skipped_ticks += skipped;
            wall += FRAME_DURATION * u32::try_from(skipped).unwrap_or(u32::MAX);
        }
        loop {
            let present = match self.inbound.poll(now, &mut self.input) {
                Next::Frame => true,
                Next::Pause => false,
                Next::Wait => break,
            };
            if !self.wall_placed {
                // The grid follows the caller's frames from the first one on, so that each
                // shares its tick's pass.
                self.wall_placed = true;
                wall = wall.min(now);
            }
            let tick = wall <= now + self.early;
            let fresh = self.run_pass(now, present, true, tick);
            if tick {
                wall += FRAME_DURATION;
                self.wall_input_ready = None;
            } else {
                self.wall_input.copy_from_slice(&self.input);
                self.wall_input_ready = Some(present);
            }
            self.release(now, fresh, false);
        }
        while wall + grace <= now {
            let present = match self.wall_input_ready.take() {
                Some(present) => {
                    self.input.copy_from_slice(&self.wall_input);
                    present
                }
                None => {
                    self.input.fill(0);
                    false
                }
            };
            let fresh = self.run_pass(wall, present, false, true);
            self.stats.wall_only += 1;
            self.release(wall, fresh, false);
            wall += FRAME_DURATION;
        }
        self.next_wall = Some(wall);
    }

    /// One pipeline pass over `self.input`. `caller`: it carries a frame of the caller's
    /// timeline (`present`: audio, not pause silence); `wall`: it is a wall tick. Returns
    /// whether any audio was queued for the platform.
    fn run_pass(&mut self, now: Instant, mut present: bool, caller: bool, wall: bool) -> bool {
        if self.earmuffed {
            self.input.fill(0);
            present = false;
        }
        self.output.fill(0);
        self.requests.reset(self.outbound.room());
        std::mem::swap(&mut self.events_now, &mut self.events_next);
        let pass = Pass { caller, wall, caller_position: self.caller_position, wall_position: self.wall_position };
        let mut cx = Context::new(now, self.caller_position, self.rate, &mut self.input, present, &mut self.output, &mut self.requests)
            .with_pass(pass);
        self.pipeline.run(&self.events_now, &mut cx);
        let written = cx.output_written();
        self.publish_seen_events();
        self.caller_position += u64::from(caller);
        self.wall_position += u64::from(wall);
        self.stats.passes += 1;
        let written = if wall { self.play_api_audio(written) } else { self.muted_output(written) };
        self.apply_requests(written);
        written || !self.requests.queued.is_empty()
    }

    /// Mute on a pass that plays no API audio.
    fn muted_output(&mut self, written: bool) -> bool {
        if self.muted {
            self.requests.queued.clear();
            return false;
        }
        written
    }

    /// Adds the API's stream and DTMF to this pass's output and applies mute. Returns whether
    /// the output now carries audio.
    fn play_api_audio(&mut self, mut written: bool) -> bool {
        if let Some(stream) = self.stream.as_mut() {
            // Mixed into what goes out in this pass: this pass's frame, or, when the processors
            // queued audio instead (a `resample` wrapper does), the head of that audio.
            let frame = self.output.len();
            let queued = &mut self.requests.queued;
            let target = if !written && !queued.is_empty() {
                if queued.len() < frame {
                    queued.resize(frame, 0);
                }
                &mut queued[..frame]
            } else {
                written = true;
                &mut self.output[..]
            };
            if stream.play_into(target, false) {
                self.end_stream(StreamEnd::Finished);
            }
        }
        if let Some(dtmf) = self.dtmf.as_mut() {
            // The tones replace everything else while they play.
            self.requests.queued.clear();
            if dtmf.play_into(&mut self.output, true) {
                self.dtmf = self.dtmf_next.take();
            }
            written = true;
        }
        self.muted_output(written)
    }

    /// Ends the call: lets every processor finish, then (when callpipe is the one hanging up)
    /// pads and releases a trailing partial frame. Later ticks do nothing.
    pub fn finish(&mut self, now: Instant, hanging_up: bool) {
        if self.finished {
            return;
        }
        // Whatever the caller's timeline still holds goes through first: nothing is lost.
        while self.inbound.take_remaining(&mut self.input) {
            let fresh = self.run_pass(now, true, true, false);
            self.release(now, fresh, false);
        }
        self.finished = true;
        self.end_stream(StreamEnd::Hangup);
        self.input.fill(0);
        self.output.fill(0);
        self.requests.reset(self.outbound.room());
        let pass = Pass { caller: false, wall: false, caller_position: self.caller_position, wall_position: self.wall_position };
        let mut cx = Context::new(now, self.caller_position, self.rate, &mut self.input, false, &mut self.output, &mut self.requests)
            .with_pass(pass);
        self.pipeline.finish(&mut cx);
        let written = cx.output_written();
        self.apply_requests(written);
        self.publish_pending_events();
        if hanging_up {
            self.release(now, true, true);
        }
    }

    /// Whether a processor has asked to hang up the call ([`Context::hang_up`]). The media
    /// thread then hangs up through the call's link, as the control API does.
    pub fn hangup_requested(&self) -> bool {
        self.hangup_requested
    }

    /// Whether [`finish`](Session::finish) has run.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next thing to send, in order. Audio is encoded into `frame`, which must hold a frame.
    pub fn poll_transmit(&mut self, frame: &mut [u8; MAX_FRAME_BYTES]) -> Option<Transmit> {
        match self.transmit.pop_front()? {
            Pending::Audio { released, deadline } => {
                let samples = self.rate.frame_samples();
                let mut pcm = [0i16; crate::protocol::MAX_FRAME_SAMPLES];
                pop_front_into(&mut self.released, &mut pcm[..samples]);
                let len = encode_l16(&pcm[..samples], frame);
                Some(Transmit::Audio { released, deadline, len })
            }
            Pending::Clear => Some(Transmit::Clear),
            Pending::Notify(marker) => Some(Transmit::Notify { marker }),
        }
    }

    /// The next event the processors emitted.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events_out.pop_front()
    }

    fn push_event(&mut self, origin: Option<usize>, event: Event) {
        if self.events_next.len() < MAX_PENDING_EVENTS {
            self.events_next.push((origin, event));
        } else {
            self.stats.dropped_requests += 1;
        }
    }

    fn apply_requests(&mut self, written: bool) {
        self.hangup_requested |= self.requests.hangup;
        if self.requests.clear {
            self.clear_outbound();
        }
        self.outbound.append(&self.requests.queued);
        if written {
            self.outbound.append(&self.output);
        }
        for i in 0..self.requests.notifies.len() {
            let marker = self.requests.notifies[i];
            if !self.outbound.mark(marker) {
                self.send_notify(marker);
            }
        }
        // Moved, never copied: each event waits in `events_next` for the other processors, and
        // goes out after they have seen it (see `publish_seen_events`).
        let Session { requests, events_next, events_out, stats, .. } = self;
        for (origin, event) in requests.events.drain(..) {
            if events_next.len() < MAX_PENDING_EVENTS {
                events_next.push((origin, event));
            } else {
                // No room for the processors: it goes out at once, unseen.
                stats.dropped_requests += 1;
                publish(events_out, stats, event);
            }
        }
    }

    /// Moves the events the processors have just seen out of `events_now`: the processors'
    /// own go out (through [`poll_event`](Session::poll_event)), the platform's and the
    /// session's (which went out when they arrived, or never go out) end here.
    fn publish_seen_events(&mut self) {
        let Session { events_now, events_out, stats, .. } = self;
        for (origin, event) in events_now.drain(..) {
            if origin.is_some() {
                publish(events_out, stats, event);
            }
        }
    }

    /// At the end of the call: the processors' events no pass will show them go out now.
    fn publish_pending_events(&mut self) {
        std::mem::swap(&mut self.events_now, &mut self.events_next);
        self.publish_seen_events();
    }

    fn release(&mut self, now: Instant, fresh: bool, finishing: bool) {
        let Session { outbound, transmit, released, stats, .. } = self;
        let mut notifies = [0u64; MAX_PENDING_MARKERS];
        let mut n_notifies = 0;
        outbound.release(now, fresh, finishing, |r| match r {
            Released::Frame { deadline, samples } => {
                if transmit.len() < transmit.capacity() && released.len() + samples.len() <= released.capacity() {
                    released.extend(samples);
                    transmit.push_back(Pending::Audio { released: now, deadline });
                    stats.frames_released += 1;
                } else {
                    stats.dropped_out += 1;
                }
            }
            Released::Notify(marker) => {
                if transmit.len() < transmit.capacity() && n_notifies < notifies.len() {
                    transmit.push_back(Pending::Notify(marker));
                    notifies[n_notifies] = marker;
                    n_notifies += 1;
                } else {
                    stats.dropped_requests += 1;
                }
            }
        });
        for marker in &notifies[..n_notifies] {
            self.await_notify(*marker);
        }
    }

    /// Drops the audio queued here and asks the platform to drop its buffer.
    fn clear_outbound(&mut self) {
        self.outbound.clear();
        self.push_transmit(Pending::Clear);
        self.awaiting_clears += 1;
        self.stats.clears += 1;
    }

    fn send_notify(&mut self, marker: u64) {
        self.push_transmit(Pending::Notify(marker));
        self.await_notify(marker);
    }

    fn await_notify(&mut self, marker: u64) {
        if self.awaiting_notify.len() == self.awaiting_notify.capacity() {
            self.awaiting_notify.pop_front();
            self.stats.dropped_requests += 1;
        }
        self.awaiting_notify.push_back(marker);
        self.stats.notifies += 1;
    }

    fn push_transmit(&mut self, pending: Pending) {
        if self.transmit.len() < self.transmit.capacity() {
            self.transmit.push_back(pending);
        } else {
            self.stats.dropped_requests += 1;
        }
    }
}

/// Queues `event` for [`Session::poll_event`]; when that queue is full it is dropped here and
/// counted (the one case in which the media thread frees an event's data).
fn publish(events_out: &mut VecDeque<Event>, stats: &mut SessionStats, event: Event) {
    if events_out.len() < MAX_PENDING_EVENTS {
        events_out.push_back(event);
    } else {
        stats.dropped_requests += 1;
    }
}

/// Moves the first `out.len()` items of `deque` into `out` with two slice copies. The caller
/// guarantees that many are there.
pub(crate) fn pop_front_into<T: Copy>(deque: &mut VecDeque<T>, out: &mut [T]) {
    let n = out.len();
    let (a, b) = deque.as_slices();
    let from_a = n.min(a.len());
    out[..from_a].copy_from_slice(&a[..from_a]);
    out[from_a..].copy_from_slice(&b[..n - from_a]);
    deque.drain(..n);
}

#[cfg(test)]
mod tests;
