//! The [`Processor`] trait: the one extension point of the media path.
//!
//! A call's [`Pipeline`] is an ordered chain of processors built from its route. Every 20 ms the
//! media thread runs one *pass*: each processor in turn sees the caller's frame (as changed by the
//! processors before it), may change it, may mix audio into the outbound frame, queue longer
//! audio, emit events, and ask for a `clear` or a `notify`.
//!
//! # The real-time contract
//!
//! * [`Processor::prepare`] runs once, on a blocking thread before the call joins a media
//!   thread, when the rate and frame size are known. Allocate everything there. A processor
//!   that needs files or the network gets them from the server's services
//!   ([`Setup::services`]: the recorder's writer, the fork connections) and keeps only its end
//!   of their rings: processors own no thread, runtime, socket or file.
//! * [`Processor::process`] and [`Processor::handle_event`] run on a media thread that serves
//!   many calls. They must not allocate, free, lock, block, log, format strings or touch files.
//!   File and network work belongs to a service fed by a ring (see the recorder and fork
//!   processors, and [`crate::services`]). [`Event::Custom`] carries its data behind an [`Arc`](std::sync::Arc): building
//!   one allocates, so make it off the media thread (in `prepare`, or on the processor's own
//!   thread or task) or on rare occasions only; moving and cloning it never allocates.
//! * One pass is exactly one frame of call time, whether or not the caller's frame arrived:
//!   [`Context::input_present`] says which. Pipelines therefore keep time with the call.
//!
//! # Metrics
//!
//! [`Pipeline::run`] times each stage's `process` on one pass in [`TIMING_INTERVAL`] into a
//! histogram per processor type in the server's [`Timings`] (see `processor/timing.rs`); the
//! services count the bytes recorded and each fork name's connections and traffic.

pub(crate) mod conference;
mod context;
mod denoise;
mod dtmf;
mod dtmf_gen;
mod echo;
mod fork;
mod input;
mod play;
mod record;
mod registry;
mod resample;
mod talk;
pub(crate) mod template;
pub mod testkit;
mod timing;
mod trigger;
mod vad;

use std::time::Duration;

pub use crate::services::Timings;
pub use conference::{
    Admitted, Conference, ConferenceConfig, ConferenceRecording, ConferenceSettings, ConferenceState, ConferenceStats, ConferenceSummary,
    Conferences, Join as ConferenceJoin, JoinError as ConferenceJoinError, MemberState, MemberView, Membership, Mixer, MixerMember,
    NameError as ConferenceNameError, Role as ConferenceRole, check_name as check_conference_name,
};
pub(crate) use context::EVENTS_TO_START;
pub use context::{Context, MAX_EVENTS_PER_PASS, MAX_NOTIFIES_PER_PASS, Pass, Requests, Timeline};
pub use denoise::{Denoise, DenoiseConfig};
pub use dtmf::{DtmfDetect, DtmfDetectConfig};
pub use dtmf_gen::{DtmfSend, DtmfSendConfig, MAX_DIGITS, render_dtmf};
pub use echo::Echo;
#[cfg(feature = "opus")]
pub use fork::ForkOpusEncoder;
pub use fork::{
    Command as ForkCommand, DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL, Fork, ForkCodec, ForkConfig, ForkCounters, ForkReplies, ForkSend,
    ForkTotals, parse_command as parse_fork_command,
};
pub use input::{Collector as InputCollector, Input, InputConfig, MAX_INPUT_TIME_OUT_S};
pub use play::{Play, PlayConfig};
#[cfg(feature = "opus")]
pub use record::OpusFileError;
pub use record::{
    OPUS_FEATURE_MISSING, Record, RecordChannels, RecordConfig, RecordError, RecordFormat, RecordingOutcome, SinkError as RecordSinkError,
};
pub use registry::{Factory, Params, ProcessorRegistry, ProcessorSpec};
pub use resample::Resample;
pub use talk::{Talk, TalkConfig};
pub use timing::TIMING_INTERVAL;
pub use vad::{FrameLog, MAX_VAD_WINDOW_MS, Vad, VadConfig};

pub use crate::call::{CallId, CallInfo, DtmfSource, Event, Marker};
use crate::protocol::SampleRate;
use crate::services::Services;

/// What a processor learns before the first frame.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// The call's sample rate.
    pub rate: SampleRate,
    /// The call.
    pub call: &'a CallInfo,
    /// The server's services: files and network connections live there, not in processors.
    pub services: &'a Services,
}

impl Setup<'_> {
    /// Samples per 20 ms frame at the call's rate.
    pub fn frame_samples(&self) -> usize {
        self.rate.frame_samples()
    }
}

/// Why a processor could not be built or prepared.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// A parameter is missing or out of range.
    #[error("processor {processor}: {message}")]
    Config {
        /// The processor type.
        processor: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter names something that cannot be used, for a reason of its own (a trust file,
    /// a codec, a template, a rate pair): the reason is behind `source()`.
    #[error("processor {processor}: {what}{source}")]
    Invalid {
        /// The processor type.
        processor: String,
        /// Which parameter, as `` `name`: `` (or empty when the reason names it).
        what: String,
        /// Why.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The route names a processor type that is not registered.
    #[error("unknown processor type {kind:?} (known: {})", known.join(", "))]
    Unknown {
        /// The type the route names.
        kind: String,
        /// The registered types, sorted.
        known: Vec<String>,
    },
}

impl ProcessorError {
    /// A [`ProcessorError::Invalid`] of `processor`'s parameter `what` (e.g. `` "`codec`" ``, or
    /// `""` when `source` names it), caused by `source`.
    pub fn invalid(processor: &str, what: &str, source: impl std::error::Error + Send + Sync + 'static) -> ProcessorError {
        let what = if what.is_empty() { String::new() } else { format!("{what}: ") };
        ProcessorError::Invalid { processor: processor.to_owned(), what, source: std::sync::Arc::new(source) }
    }
}

/// Errors compare by what they say: two `Invalid` errors are equal when their processors,
/// parameters and messages are.
impl PartialEq for ProcessorError {
    fn eq(&self, other: &ProcessorError) -> bool {
        match (self, other) {
            (ProcessorError::Config { processor: a, message: m }, ProcessorError::Config { processor: b, message: n }) => a == b && m == n,
            (ProcessorError::Unknown { kind: a, known: k }, ProcessorError::Unknown { kind: b, known: l }) => a == b && k == l,
            (ProcessorError::Invalid { .. }, ProcessorError::Invalid { .. }) => self.to_string() == other.to_string(),
            _ => false,
        }
    }
}

impl Eq for ProcessorError {}

/// One stage of a call's media pipeline. See the [module docs](self) for the real-time contract.
pub trait Processor: Send + 'static {
    /// A short name for logs and metrics, e.g. `"echo"`.
    fn name(&self) -> &'static str;

    /// Called once before the first frame. Allocate here.
    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let _ = setup;
        Ok(())
    }

    /// Called once per pass of the processor's [`timeline`](Processor::timeline). Must not
    /// allocate, lock or block.
    fn process(&mut self, cx: &mut Context<'_>);

    /// The clock whose passes this processor runs in. The default, [`Timeline::Caller`], sees
    /// every frame the platform delivered exactly once, in order, plus silence for real
    /// pauses; a processor that generates audio on its own (a player) follows
    /// [`Timeline::Wall`] so that late caller audio never holds it up.
    fn timeline(&self) -> Timeline {
        Timeline::Caller
    }

    /// Whether this processor may queue audio with [`Context::enqueue_output`]. A call whose
    /// processors never do needs an outbound queue of a few frames only (the look-ahead), not
    /// the configured `outbound_queue_frames`: a processor that only writes or mixes its pass's
    /// frame says `false` and saves its calls that memory. In a call whose processors all say
    /// `false`, [`Context::output_room`] is 0: what one queues anyway is dropped and counted.
    fn queues_output(&self) -> bool {
        true
    }

    /// Called at the start of a pass for each event that arrived since the previous pass:
    /// platform events, and events emitted by *other* processors in the previous pass.
    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        let _ = (event, cx);
    }

    /// Called once when the call ends, for whatever reason. May flush (the pass's output is still
    /// delivered when the call is being hung up by callpipe).
    fn finish(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The delay this processor adds between its input and its output.
    fn delay(&self) -> Duration {
        Duration::ZERO
    }

    /// How many players in this processor are playing to the caller now (a player mid-file
    /// counts one). The control API shows the call's total.
    fn players_active(&self) -> u64 {
        0
    }

    /// A conference member's way to its conference: the [`conference`](Conference) processor
    /// returns its [`ConferenceJoin`] here, once, after `prepare`; the server admits it and
    /// places the call on the conference's media thread. Other processors keep the default.
    fn take_conference_join(&mut self) -> Option<ConferenceJoin> {
        None
    }
}

/// A call's ordered chain of processors.
pub struct Pipeline {
    stages: Vec<Box<dyn Processor>>,
    timers: timing::StageTimers,
}

impl Pipeline {
    /// A pipeline running `stages` in order.
    ///
    /// Times one pass in [`TIMING_INTERVAL`] once prepared.
    pub fn new(stages: Vec<Box<dyn Processor>>) -> Pipeline {
        Pipeline { stages, timers: timing::StageTimers::new() }
    }

    /// Times one pass in `passes` (rounded up to a power of two; 1 times every pass, 0 none).
    /// Applies to this pipeline's own stages: a `resample` stage's inner pipeline keeps its own
    /// setting.
    pub fn set_timing_interval(&mut self, passes: u32) {
        self.timers.set_interval(passes);
    }

    /// One pass in how many is timed: a power of two, or 0 when timing is off.
    pub fn timing_interval(&self) -> u32 {
        self.timers.interval()
    }

    /// Prepares every stage, and registers the stages' types in the services' [`Timings`] (a
    /// lock, an allocation: off the media thread).
    pub fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        self.timers.register(self.stages.iter().map(|s| s.name()), &setup.services.timings);
        self.stages.iter_mut().try_for_each(|stage| stage.prepare(setup))
    }

    /// The stages' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stages.iter().map(|s| s.name())
    }

    /// The number of stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether the pipeline has no stages.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The sum of the stages' delays.
    pub fn delay(&self) -> Duration {
        self.stages.iter().map(|s| s.delay()).sum()
    }

    /// The conference joins of the stages (see [`Processor::take_conference_join`]), taken.
    pub fn take_conference_joins(&mut self) -> Vec<ConferenceJoin> {
        self.stages.iter_mut().filter_map(|s| s.take_conference_join()).collect()
    }

    /// Players playing now, over every stage.
    pub fn players_active(&self) -> u64 {
        self.stages.iter().map(|s| s.players_active()).sum()
    }

    /// Whether any stage may queue audio (see [`Processor::queues_output`]).
    pub fn queues_output(&self) -> bool {
        self.stages.iter().any(|s| s.queues_output())
    }

    /// Delivers `events` (each with the index of the stage that emitted it, or `None` for the
    /// platform) to every other stage, then runs one pass.
    ///
    /// On a timed pass (one in [`Pipeline::timing_interval`]) each stage's `process` is timed
    /// and recorded in nanoseconds in its type's histogram in the services' [`Timings`]: one clock read per
    /// stage plus one, each stage's end being the next one's start. A stage that runs a pipeline
    /// of its own (`resample`) is timed whole, its inner stages included (and their clock reads);
    /// the inner stages are also timed under their own types, on the same passes.
    pub fn run(&mut self, events: &[(Option<usize>, Event)], cx: &mut Context<'_>) {
        for (origin, event) in events {
            cx.set_origin(*origin);
            for (i, stage) in self.stages.iter_mut().enumerate() {
                if *origin != Some(i) {
                    cx.set_stage(i, stage.timeline());
                    stage.handle_event(event, cx);
                }
            }
        }
        cx.set_origin(None);
        let pass = cx.pass();
        match self.timers.start_pass() {
            None => {
                for (i, stage) in self.stages.iter_mut().enumerate() {
                    let timeline = stage.timeline();
                    if pass.runs(timeline) {
                        cx.set_stage(i, timeline);
                        stage.process(cx);
                    }
                }
            }
            Some(mut start) => {
                for (i, stage) in self.stages.iter_mut().enumerate() {
                    let timeline = stage.timeline();
                    if pass.runs(timeline) {
                        cx.set_stage(i, timeline);
                        stage.process(cx);
                    }
                    start = self.timers.stage_done(i, start);
                }
            }
        }
    }

    /// Lets every stage finish.
    pub fn finish(&mut self, cx: &mut Context<'_>) {
        for (i, stage) in self.stages.iter_mut().enumerate() {
            cx.set_stage(i, stage.timeline());
            stage.finish(cx);
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::protocol::Metadata;

    use super::*;

    /// Halves the caller's audio and emits one event on the first pass.
    struct Halve;

    impl Processor for Halve {
        fn name(&self) -> &'static str {
            "halve"
        }

        fn process(&mut self, cx: &mut Context<'_>) {
            for s in cx.input_mut() {
                *s /= 2;
            }
            if cx.position() == 0 {
                cx.emit(Event::Cleared);
            }
        }
    }

    /// Copies what it hears to the output and records the events it is given.
    #[derive(Default)]
    struct Listen {
        events: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    }

    impl Processor for Listen {
        fn name(&self) -> &'static str {
            "listen"
        }

        fn process(&mut self, cx: &mut Context<'_>) {
            let (input, output) = cx.input_and_output_mut();
            output.copy_from_slice(input);
        }

        fn handle_event(&mut self, event: &Event, _cx: &mut Context<'_>) {
            self.events.lock().unwrap().push(event.clone());
        }
    }

    #[test]
    fn later_stages_see_earlier_changes_and_events_reach_the_others() {
        let rate = SampleRate::Hz8000;
        let listen = Listen::default();
        let heard = listen.events.clone();
        let mut pipeline = Pipeline::new(vec![Box::new(Halve), Box::new(listen)]);
        let mut requests = Requests::new(1600);
        let mut input = vec![1000i16; 160];
        let mut output = vec![0i16; 160];
        let now = Instant::now();
        let mut cx = Context::new(now, 0, rate, &mut input, true, &mut output, &mut requests);
        pipeline.run(&[], &mut cx);
        assert!(cx.output_written());
        assert_eq!(output[0], 500, "the second stage heard the first stage's change");
        // The event emitted by stage 0 goes to stage 1 at the next pass, not back to stage 0.
        let events = requests.events.clone();
        assert_eq!(events, [(Some(0), Event::Cleared)]);
        requests.reset(1600);
        let mut input = vec![1000i16; 160];
        let mut cx = Context::new(now, 1, rate, &mut input, true, &mut output, &mut requests);
        pipeline.run(&events, &mut cx);
        assert_eq!(*heard.lock().unwrap(), [Event::Cleared], "stage 1 got stage 0's event once");
        assert_eq!(pipeline.names().collect::<Vec<_>>(), ["halve", "listen"]);
    }

    /// Sleeps 1 ms per pass: a stage whose time has a known lower bound.
    struct Nap(&'static str);

    impl Processor for Nap {
        fn name(&self) -> &'static str {
            self.0
        }

        fn process(&mut self, _cx: &mut Context<'_>) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Runs `passes` passes of `pipeline` at 8 kHz.
    fn run_passes(pipeline: &mut Pipeline, passes: u64) {
        let rate = SampleRate::Hz8000;
        let mut requests = Requests::new(1600);
        let (mut input, mut output) = (vec![0i16; 160], vec![0i16; 160]);
        for position in 0..passes {
            requests.reset(1600);
            let mut cx = Context::new(Instant::now(), position, rate, &mut input, true, &mut output, &mut requests);
            pipeline.run(&[], &mut cx);
        }
    }

    #[test]
    fn timed_passes_record_each_stage_in_nanoseconds_under_its_type() {
        let mut pipeline = Pipeline::new(vec![Box::new(Nap("timing-test-nap")), Box::new(Halve), Box::new(Nap("timing-test-nap-2"))]);
        let services = Services::new();
        let call = CallInfo { id: "t".into(), path: "/t".into(), metadata: Metadata::new(SampleRate::Hz8000) };
        pipeline.prepare(&Setup { rate: SampleRate::Hz8000, call: &call, services: &services }).unwrap();
        assert_eq!(pipeline.timing_interval(), TIMING_INTERVAL);
        pipeline.set_timing_interval(2);
        let nap = services.timings.histogram("timing-test-nap");
        let nap2 = services.timings.histogram("timing-test-nap-2");
        run_passes(&mut pipeline, 6);
        assert_eq!((nap.count(), nap2.count()), (3, 3), "one pass in two, each stage once per timed pass");
        assert!(nap.sum() >= 3_000_000 && nap2.sum() >= 3_000_000, "at least 1 ms a pass, in ns: {} {}", nap.sum(), nap2.sum());
        assert!(services.timings.snapshot().iter().any(|(name, _)| *name == "halve"), "every stage's type is registered");
        pipeline.set_timing_interval(0);
        run_passes(&mut pipeline, 4);
        assert_eq!(nap.count(), 3, "timing off");
    }

    #[test]
    fn a_resample_stage_is_timed_whole_and_its_inner_stages_too() {
        let inner = Pipeline::new(vec![Box::new(Nap("timing-test-inner-nap"))]);
        let resample = Resample::new(SampleRate::Hz16000, inner);
        let call = CallInfo { id: "t".into(), path: "/t".into(), metadata: Metadata::new(SampleRate::Hz8000) };
        let services = Services::new();
        let mut pipeline = Pipeline::new(vec![Box::new(resample)]);
        pipeline.prepare(&Setup { rate: SampleRate::Hz8000, call: &call, services: &services }).unwrap();
        let outer = services.timings.histogram("resample");
        let inner = services.timings.histogram("timing-test-inner-nap");
        let (count, sum) = (outer.count(), outer.sum());
        // The default interval: the first pass is timed, outside and inside.
        run_passes(&mut pipeline, u64::from(TIMING_INTERVAL) + 1);
        assert_eq!(inner.count(), 2, "the inner stage is timed on the same passes as the wrapper");
        assert!(inner.sum() >= 2_000_000);
        assert_eq!(outer.count(), count + 2);
        assert!(outer.sum() - sum >= 2_000_000, "the wrapper's time includes its inner stage's");
    }

    #[test]
    fn requests_are_bounded_and_counted() {
        let rate = SampleRate::Hz8000;
        let mut requests = Requests::new(320);
        let mut input = vec![0i16; 160];
        let mut output = vec![0i16; 160];
        let mut cx = Context::new(Instant::now(), 0, rate, &mut input, false, &mut output, &mut requests);
        assert_eq!(cx.enqueue_output(&[1; 300]), 300);
        assert_eq!(cx.enqueue_output(&[1; 300]), 20, "only what fits");
        assert_eq!(cx.output_room(), 0);
        for m in 0..20 {
            cx.notify(m);
        }
        for _ in 0..40 {
            cx.emit(Event::Cleared);
        }
        cx.clear();
        assert_eq!(cx.output_room(), 320, "clear also drops what this pass queued");
        assert_eq!(requests.dropped_samples, 280);
        assert_eq!(requests.dropped_notifies, 20 - MAX_NOTIFIES_PER_PASS as u64);
        assert_eq!(requests.dropped_events, 40 - MAX_EVENTS_PER_PASS as u64);
    }
}
