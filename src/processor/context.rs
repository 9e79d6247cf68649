//! The per-pass [`Context`] a processor works through, and the [`Requests`] it collects.
//!
//! Everything here writes into buffers sized at preparation, except the list of emitted events,
//! which starts empty and grows at most twice in a call (`crate::bounded`). When a bounded buffer
//! is full the request is dropped and counted, never grown.

use std::time::Instant;

use super::{Event, Marker};
use crate::bounded::GrowOnce;
use crate::protocol::SampleRate;

/// Most events processors may emit in one pass; more are dropped and counted.
pub const MAX_EVENTS_PER_PASS: usize = 32;

/// Room an event list of a call makes at its first event (a pass's list: at the first event a
/// processor emits; the session's lists: at the first event they hold). They start with none: a
/// call without events (an echo) carries no room for them.
pub(crate) const EVENTS_TO_START: usize = 4;

/// Most `notify` requests processors may make in one pass; more are dropped and counted.
pub const MAX_NOTIFIES_PER_PASS: usize = 8;

/// What the processors asked for during one pass, collected for the session to act on.
#[derive(Debug)]
pub struct Requests {
    pub(crate) clear: bool,
    pub(crate) hangup: bool,
    pub(crate) notifies: Vec<Marker>,
    pub(crate) events: Vec<(Option<usize>, Event)>,
    pub(crate) queued: Vec<i16>,
    pub(crate) queue_room: usize,
    pub(crate) dropped_events: u64,
    pub(crate) dropped_notifies: u64,
    pub(crate) dropped_samples: u64,
}

impl Requests {
    /// Buffers for a session whose outbound queue holds at most `queue_capacity` samples.
    pub fn new(queue_capacity: usize) -> Requests {
        Requests {
            clear: false,
            hangup: false,
            notifies: Vec::with_capacity(MAX_NOTIFIES_PER_PASS),
            // Empty until a processor emits the call's first event; grows once more, to the
            // limit, at the first pass that emits more than EVENTS_TO_START.
            events: Vec::new(),
            queued: Vec::with_capacity(queue_capacity),
            queue_room: queue_capacity,
            dropped_events: 0,
            dropped_notifies: 0,
            dropped_samples: 0,
        }
    }

    /// Forgets the requests of the previous pass (keeps the drop counters and the buffers);
    /// `queue_room` is how much audio the next pass may queue. The session calls this before
    /// every pass; a test that drives a processor by hand does the same.
    pub fn reset(&mut self, queue_room: usize) {
        self.clear = false;
        self.hangup = false;
        self.notifies.clear();
        self.events.clear();
        self.queued.clear();
        self.queue_room = queue_room.min(self.queued.capacity());
    }
}

impl Requests {
    /// Whether a processor asked for a `clear` in this pass.
    pub fn clear_requested(&self) -> bool {
        self.clear
    }

    /// Whether a processor asked to hang up the call in this pass.
    pub fn hangup_requested(&self) -> bool {
        self.hangup
    }

    /// The `notify` markers requested in this pass, in order.
    pub fn notifies(&self) -> &[Marker] {
        &self.notifies
    }

    /// The events emitted in this pass, each with the index of the stage that emitted it.
    pub fn events(&self) -> &[(Option<usize>, Event)] {
        &self.events
    }

    /// The audio queued in this pass.
    pub fn queued(&self) -> &[i16] {
        &self.queued
    }
}

/// Which clock a processor follows (see [`Processor::timeline`](super::Processor::timeline)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeline {
    /// The caller's timeline: one pass per frame the platform delivered (or pause silence),
    /// when it arrives, in order, never skipped. Stages that consume the caller's audio
    /// (recorders, detectors, forks to transcription, echo).
    Caller,
    /// The wall clock: one pass per 20 ms of real time, whether or not the caller's frame has
    /// arrived. Stages that generate audio (players, tone generators, the conference mix).
    Wall,
    /// Every pass: the stage looks at [`Context::pass`] itself (e.g. a wrapper of other
    /// stages).
    Both,
}

/// Which clocks one pass serves, and where each stands.
///
/// On a clean network every pass serves both: the caller's frame arrives within its wall tick.
/// When the caller's frames are late the session runs *wall-only* passes for the ticks that
/// cannot wait (generated audio keeps its pace), and *caller-only* passes when the late frames
/// arrive (every one of them goes through, back to back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// The pass carries a frame of the caller's timeline: audio the platform delivered, or
    /// silence for a pause (then [`Context::input_present`] is false).
    pub caller: bool,
    /// The pass is a tick of the wall clock: 20 ms of outbound time.
    pub wall: bool,
    /// Frames of the caller's timeline before this pass.
    pub caller_position: u64,
    /// Wall ticks before this pass.
    pub wall_position: u64,
    /// The caller's frame came in a burst: it and the 8 frames before it each arrived within
    /// 10 ms of the one before (see [`InboundBuffer::in_burst`](crate::session::InboundBuffer::in_burst)),
    /// the backlog of a stall (or of a media thread held up) going through back to back,
    /// faster than real time.
    /// A stage that hands the caller's audio to a consumer paced in real time (the recorder's
    /// writer) keeps such a burst whole rather than dropping what its usual bound cannot take.
    pub burst: bool,
}

impl Pass {
    /// A pass that serves both clocks, both at `position` (what a test driving a processor by
    /// hand usually wants).
    pub fn both(position: u64) -> Pass {
        Pass { caller: true, wall: true, caller_position: position, wall_position: position, burst: false }
    }

    /// Whether a stage following `timeline` runs in this pass.
    pub fn runs(&self, timeline: Timeline) -> bool {
        match timeline {
            Timeline::Caller => self.caller,
            Timeline::Wall => self.wall,
            Timeline::Both => true,
        }
    }
}

/// One processor's view of one 20 ms pass.
#[derive(Debug)]
pub struct Context<'a> {
    now: Instant,
    pass: Pass,
    timeline: Timeline,
    rate: SampleRate,
    input: &'a mut [i16],
    input_present: bool,
    output: &'a mut [i16],
    output_written: bool,
    requests: &'a mut Requests,
    stage: usize,
    /// The stage that emitted the event being handled (`None`: the platform, the control API,
    /// or a pipeline around this one).
    origin: Option<usize>,
}

impl<'a> Context<'a> {
    /// A context over the given buffers. `input` and `output` are one frame long.
    pub fn new(
        now: Instant,
        position: u64,
        rate: SampleRate,
        input: &'a mut [i16],
        input_present: bool,
        output: &'a mut [i16],
        requests: &'a mut Requests,
    ) -> Context<'a> {
        debug_assert_eq!(input.len(), rate.frame_samples());
        debug_assert_eq!(output.len(), rate.frame_samples());
        Context {
            now,
            pass: Pass::both(position),
            timeline: Timeline::Both,
            rate,
            input,
            input_present,
            output,
            output_written: false,
            requests,
            stage: 0,
            origin: None,
        }
    }

    /// The same context for a pass that serves the clocks `pass` says (by default, both).
    pub fn with_pass(mut self, pass: Pass) -> Context<'a> {
        self.pass = pass;
        self
    }

    pub(crate) fn set_stage(&mut self, stage: usize, timeline: Timeline) {
        self.stage = stage;
        self.timeline = timeline;
    }

    pub(crate) fn set_origin(&mut self, origin: Option<usize>) {
        self.origin = origin;
    }

    /// In [`Processor::handle_event`](super::Processor::handle_event): whether the event came
    /// from outside the route's stages (the platform, the control API) or from a stage before
    /// this one. `on_event` triggers listen to those only, so that a chain of prompts runs
    /// forward: a `talk` after an `input` does not start the `input` again when it ends.
    pub fn event_from_upstream(&self) -> bool {
        self.origin.is_none_or(|origin| origin < self.stage)
    }

    /// When this pass runs: for a pass on the wall clock its tick's scheduled instant, for a
    /// caller-only pass the instant its frame is taken.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The pass number on the processor's own clock: for a [`Timeline::Wall`] stage wall ticks
    /// since the call started, for the others frames of the caller's timeline (20 ms each) before
    /// this one.
    pub fn position(&self) -> u64 {
        match self.timeline {
            Timeline::Wall => self.pass.wall_position,
            Timeline::Caller | Timeline::Both => self.pass.caller_position,
        }
    }

    /// Which clocks this pass serves.
    pub fn pass(&self) -> Pass {
        self.pass
    }

    /// The call's sample rate.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// The caller's frame, as changed by earlier processors. Silence in a pause, and in a
    /// wall-only pass.
    pub fn input(&self) -> &[i16] {
        self.input
    }

    /// The caller's frame, to change for the processors after this one (e.g. to mute a tone).
    pub fn input_mut(&mut self) -> &mut [i16] {
        self.input
    }

    /// Whether this pass carries audio the platform delivered (false for pause silence and in
    /// wall-only passes).
    pub fn input_present(&self) -> bool {
        self.input_present
    }

    /// The outbound frame for this pass, as written by earlier processors.
    pub fn output(&self) -> &[i16] {
        self.output
    }

    /// Whether any processor has written to this pass's outbound frame.
    pub fn output_written(&self) -> bool {
        self.output_written
    }

    /// The outbound frame, to write into directly. Marks the frame as written, so it is sent.
    pub fn output_mut(&mut self) -> &mut [i16] {
        self.output_written = true;
        self.output
    }

    /// The caller's frame and the outbound frame together, e.g. to copy one into the other.
    /// Marks the outbound frame as written.
    pub fn input_and_output_mut(&mut self) -> (&[i16], &mut [i16]) {
        self.output_written = true;
        (self.input, self.output)
    }

    /// Mixes `samples` into the outbound frame from its start, saturating. Extra samples are
    /// ignored. Marks the frame as written.
    pub fn mix_output(&mut self, samples: &[i16]) {
        self.output_written = true;
        for (out, s) in self.output.iter_mut().zip(samples) {
            *out = out.saturating_add(*s);
        }
    }

    /// Appends audio of any length to the outbound stream, after everything already queued; the
    /// session re-frames it and the pacer plays it out in real time. Returns how many samples
    /// were accepted: the queue is bounded, and what does not fit is dropped and counted.
    pub fn enqueue_output(&mut self, samples: &[i16]) -> usize {
        let r = &mut *self.requests;
        let room = r.queue_room.saturating_sub(r.queued.len());
        let n = samples.len().min(room);
        r.queued.extend_from_slice(&samples[..n]);
        r.dropped_samples += (samples.len() - n) as u64;
        n
    }

    /// Samples that [`enqueue_output`](Self::enqueue_output) would still accept in this pass.
    pub fn output_room(&self) -> usize {
        self.requests.queue_room.saturating_sub(self.requests.queued.len())
    }

    /// Barge-in: drops all of callpipe's pending outbound audio (including what earlier
    /// processors wrote in this pass), then sends `{"action":"clear"}` to the platform.
    pub fn clear(&mut self) {
        self.requests.clear = true;
        self.requests.queued.clear();
        self.output.fill(0);
        self.output_written = false;
    }

    /// Asks to be told, with [`Event::NotifyPlayed`], when everything queued so far (including
    /// this pass's output) has played at the platform. A processor chooses its own markers,
    /// below [`Marker::FORK_BASE`] (a plain number converts).
    pub fn notify(&mut self, marker: impl Into<Marker>) {
        if self.requests.notifies.len() < self.requests.notifies.capacity() {
            self.requests.notifies.push(marker.into());
        } else {
            self.requests.dropped_notifies += 1;
        }
    }

    /// Asks callpipe to hang up the call: the connection closes with 1000 after the audio
    /// already released has been sent, and the call's `hangup` reason is `"processor"`.
    pub fn hang_up(&mut self) {
        self.requests.hangup = true;
    }

    /// Events that [`emit`](Self::emit) would still accept in this pass.
    pub fn events_room(&self) -> usize {
        MAX_EVENTS_PER_PASS - self.requests.events.len()
    }

    /// Emits an event: to the call's event stream, and to the other processors at the next pass.
    pub fn emit(&mut self, event: Event) {
        if self.requests.events.len() < MAX_EVENTS_PER_PASS {
            self.requests.events.room_for_one_from(EVENTS_TO_START, MAX_EVENTS_PER_PASS);
            self.requests.events.push((Some(self.stage), event));
        } else {
            self.requests.dropped_events += 1;
        }
    }
}
