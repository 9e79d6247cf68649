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
//! Nothing here allocates in a call's steady state: the frame buffers are sized in
//! [`Session::new`], the audio buffers double up to their bounds with the network's bunching,
//! the queues for rare things start small (`notify` markers) or empty (events: room for a few
//! at the first) and grow once, to their bounds, at their first burst, and full queues drop and
//! count instead of growing. Tests drive it with byte literals and a fake clock.
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

mod config;
mod control;
mod events;
mod inbound;
mod opening;
mod outbound;
mod pass;
mod platform;
mod stats;
mod voice;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use crate::call::StreamEnd;
pub use config::{SessionConfig, TimelineConfig};
pub use control::{Control, SharedAudio};
pub use inbound::{BURST_WINDOW, InboundBuffer, Next};
pub use opening::{CloseCode, FirstMessage, Rejection, admit_first_message, call_id_from};
use outbound::MARKERS_TO_START;
pub use outbound::{MAX_PENDING_MARKERS, Outbound, Released};
pub use platform::{InboundEvent, Transmit};
pub use stats::SessionStats;

use crate::audio::Playback;
use crate::call::Marker;
use crate::processor::{CallInfo, Context, Event, Pass, Pipeline, ProcessorError, Requests, Setup};
use crate::protocol::SampleRate;
use crate::services::Services;
use control::ApiStream;
use platform::Pending;

/// Frames beyond the look-ahead the outbound queue of a pipeline that never queues audio holds:
/// 40 ms of a burst (a late caller's backlog, echoed). More would only stay late: the queue
/// drains at the pace it fills, so every frame of slack a backlog takes up is a frame of delay
/// for the rest of the call.
const QUEUE_SLACK_FRAMES: usize = 2;

/// Frames of audio a pipeline that never queues audio has room for at first, in its outbound
/// queue and in what its pacer released: on a clean network a visit runs one pass, whose frame
/// is released at once and written in the same visit.
const FRAMES_TO_START: usize = 1;

/// How long a wall tick waits for the caller's frame before it runs without it (and, unless the
/// grid is pinned, how early a caller frame may be and still share its tick's pass): half a
/// frame.
const TICK_GRACE: Duration = Duration::from_millis(10);

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
    /// The most entries `transmit` holds (beyond it, audio and markers are dropped and counted).
    transmit_limit: usize,
    released: VecDeque<i16>,
    /// The most samples `released` holds (beyond it, frames are dropped and counted).
    released_limit: usize,
    awaiting_notify: VecDeque<Marker>,
    awaiting_clears: u64,
    stats: SessionStats,
    finished: bool,
    /// A processor asked to hang up (see [`Context::hang_up`]).
    hangup_requested: bool,
    /// Control API state: outbound silence, deaf processors, a stream and DTMF tones.
    muted: bool,
    earmuffed: bool,
    stream: Option<ApiStream>,
    talk: Option<voice::ApiTalk>,
    input_collector: Option<crate::processor::InputCollector>,
    dtmf: Option<Playback>,
    dtmf_next: Option<Playback>,
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
        // counted, so that its echo does not stay late), and no staging for queued audio at all
        // (the control API's stream, talk and tones mix into the pass's frame); one that does
        // gets the configured queue.
        // The first starts with room for what its pass holds on a clean network (a frame) in
        // its queue and in what the pacer released, and doubles each, up to its bound, when a
        // visit runs more passes than before (jitter, a catch-up).
        let (queue_frames, staging, start_frames) = if pipeline.queues_output() {
            (config.outbound_queue_frames, frame * config.outbound_queue_frames.clamp(1, 50), usize::MAX)
        } else {
            ((lookahead + QUEUE_SLACK_FRAMES).min(config.outbound_queue_frames.max(1)), 0, FRAMES_TO_START)
        };
        let transmit_limit = lookahead + MAX_PENDING_MARKERS + crate::processor::MAX_NOTIFIES_PER_PASS + 4;
        Ok(Session {
            rate,
            pipeline,
            inbound: InboundBuffer::new(rate, config.inbound_buffer_frames, config.timeline),
            outbound: Outbound::starting_with(rate, queue_frames, config.lookahead_frames, start_frames),
            requests: Requests::new(staging),
            input: vec![0; frame],
            output: vec![0; frame],
            caller_position: 0,
            wall_position: 0,
            next_wall: None,
            early: TICK_GRACE,
            wall_placed: false,
            wall_input: Vec::new(),
            wall_input_ready: None,
            max_catchup: config.max_catchup,
            // Events are rare: these start empty, make a little room at the first event and
            // grow once more, to their bound, at the first burst (crate::bounded).
            events_now: Vec::new(),
            events_next: Vec::new(),
            events_out: VecDeque::new(),
            transmit: VecDeque::with_capacity(lookahead + MARKERS_TO_START),
            transmit_limit,
            released: VecDeque::with_capacity(frame * (lookahead + 1).min(start_frames)),
            released_limit: frame * (lookahead + 1),
            awaiting_notify: VecDeque::with_capacity(MARKERS_TO_START),
            awaiting_clears: 0,
            stats: SessionStats::default(),
            finished: false,
            hangup_requested: false,
            muted: false,
            earmuffed: false,
            stream: None,
            talk: None,
            input_collector: None,
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

    /// The caller's audio, received by `now`: any number of bytes, re-framed here. Give at
    /// most [`inbound_room`](Session::inbound_room) bytes; more is dropped and counted.
    pub fn handle_audio(&mut self, bytes: &[u8], now: Instant) {
        self.inbound.push(bytes, now);
    }

    /// Bytes of caller audio the session can take now.
    pub fn inbound_room(&self) -> usize {
        self.inbound.room()
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
        self.end_talk(crate::call::TalkEnd::Hangup);
        self.input.fill(0);
        self.output.fill(0);
        self.requests.reset(self.outbound.room());
        let pass =
            Pass { caller: false, wall: false, caller_position: self.caller_position, wall_position: self.wall_position, burst: false };
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
}

/// Moves the first `out.len()` items of `deque` into `out` with two slice copies. The caller
/// guarantees that many are there.
pub(crate) fn pop_front_into<T: Copy>(deque: &mut VecDeque<T>, out: &mut [T]) {
    let (a, b) = front_slices(deque, out.len());
    out[..a.len()].copy_from_slice(a);
    out[a.len()..].copy_from_slice(b);
    deque.drain(..out.len());
}

/// The first `n` entries of `deque` (it holds at least `n`), as the two slices its ring keeps
/// them in (the second empty unless they wrap).
fn front_slices<T>(deque: &VecDeque<T>, n: usize) -> (&[T], &[T]) {
    let (a, b) = deque.as_slices();
    let from_a = n.min(a.len());
    (&a[..from_a], &b[..n - from_a])
}

#[cfg(test)]
mod tests;
