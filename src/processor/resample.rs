//! `resample`: runs part of a pipeline at another rate.
//!
//! ```toml
//! # A bot that wants 16 kHz, whatever rate the call has.
//! processors = [{ type = "resample", rate = 16000, processors = [{ type = "dtmf_detect" }, { type = "echo" }] }]
//! ```
//!
//! The wrapper converts each caller frame to `rate` and runs its inner processors on it, as one
//! pipeline with its own events; what they write to the outbound frame, and any audio they queue,
//! is converted back to the call's rate. Each direction goes through a [`Resampler`] that keeps
//! its state from frame to frame (a missing caller frame is silence through the same filter,
//! never a reset), so the inner processors hear a continuous signal. [`Processor::delay`]
//! reports the two conversions' delay (about 1.9 ms each way between 8 and 16 kHz) plus the inner
//! processors' own.
//!
//! * Events pass both ways: the call's events (DTMF, notify acknowledgements, other processors'
//!   events) reach the inner processors, and theirs reach the call's event stream and the
//!   processors outside. `clear` and `notify` requests pass out unchanged; a `notify` still comes
//!   after all the audio queued before it.
//! * Changes the inner processors make to the caller's audio (`mute` in `dtmf_detect`, say) stay
//!   inside the wrapper: processors after it hear the call's audio as it came in.

use std::time::Duration;

use super::{Context, Event, Pipeline, Processor, ProcessorError, Requests, Setup};
use crate::protocol::SampleRate;
use crate::resample::Resampler;

/// Outbound audio the inner processors may queue ahead, in frames at the inner rate (as the
/// session's default outbound queue).
const QUEUE_FRAMES: usize = 50;

/// The origin given to outer events from stages after the `resample`: after every inner stage.
const DOWNSTREAM: usize = usize::MAX;

/// Runs an inner [`Pipeline`] at a fixed rate inside a call at any rate. See the
/// module docs in `src/processor/resample.rs`.
pub struct Resample {
    rate: SampleRate,
    inner: Pipeline,
    state: Option<State>,
}

/// Everything sized at preparation.
struct State {
    call_rate: SampleRate,
    /// Caller audio, call rate → inner rate.
    down: Resampler,
    /// The inner outbound frame, inner rate → call rate.
    up: Resampler,
    /// Audio the inner processors queued, inner rate → call rate.
    queue: Resampler,
    input: Vec<i16>,
    output: Vec<i16>,
    converted: Vec<i16>,
    /// Whether the previous pass's inner frame carried audio (its tail is still in `up`).
    output_ringing: bool,
    /// Queued inner audio not yet converted: less than one inner frame.
    staged: Vec<i16>,
    /// Whether `queue`'s filter still holds audio that has not been sent.
    queue_ringing: bool,
    /// About how much of the converted queued audio the call's queue still holds, in samples at
    /// the call rate (what was queued, less a frame per pass).
    outstanding: usize,
    requests: Requests,
    /// Events for the inner pipeline's next pass: the call's, then the inner processors' own.
    events: Vec<(Option<usize>, Event)>,
    dropped_events: u64,
}

impl Resample {
    /// Runs `inner` at `rate`.
    pub fn new(rate: SampleRate, inner: Pipeline) -> Resample {
        Resample { rate, inner, state: None }
    }

    /// The rate the inner processors run at.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Events for the inner processors that did not fit in a pass's bounded buffer.
    pub fn dropped_events(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.dropped_events + s.requests.dropped_events)
    }
}

impl State {
    /// Converts staged queued audio to the call rate and queues it there, whole frames at a time.
    /// A partial frame waits for more, so that a stream queued piecemeal is filtered as one; it
    /// is flushed (padded, with the filter's tail but none of the padding's silence) when `force`
    /// says a notify must follow it, or when the call's queue is about to run dry without it
    /// (the stream has paused or ended).
    fn drain_queue(&mut self, cx: &mut Context<'_>, force: bool) {
        let in_len = self.queue.input_frame_len();
        let out_len = self.queue.output_frame_len();
        let mut start = 0;
        while self.staged.len() - start >= in_len {
            self.queue.process(&self.staged[start..start + in_len], &mut self.converted);
            self.outstanding += cx.enqueue_output(&self.converted[..out_len]);
            start += in_len;
            self.queue_ringing = true;
        }
        let rest = self.staged.len() - start;
        let flush = force || self.outstanding < self.call_rate.frame_samples();
        if flush && (rest > 0 || self.queue_ringing) {
            // Real audio in the padded frame, then the filter's ring-out: the rest is silence.
            let ratio = (self.queue.to_hz(), self.queue.from_hz());
            let mut wanted = (rest * ratio.0 as usize).div_ceil(ratio.1 as usize) + self.queue.tail_len();
            let mut padded = [0i16; crate::protocol::MAX_FRAME_SAMPLES];
            padded[..rest].copy_from_slice(&self.staged[start..]);
            start = self.staged.len();
            let mut source = &padded[..in_len];
            while wanted > 0 {
                self.queue.process(source, &mut self.converted);
                let n = wanted.min(out_len);
                self.outstanding += cx.enqueue_output(&self.converted[..n]);
                wanted -= n;
                source = &[];
            }
            // The filter now holds only silence.
            self.queue_ringing = false;
        }
        self.staged.drain(..start);
    }
}

impl State {
    /// Passes the inner pass's requests out to the call, converted to its rate, in the order the
    /// session applies them: clear, queued audio, the frame (`written` says whether the inner
    /// processors wrote one), notifies, events. At the `end` of the call every staged sample is
    /// flushed.
    fn pass_out(&mut self, cx: &mut Context<'_>, written: bool, end: bool) {
        if self.requests.clear {
            cx.clear();
            self.staged.clear();
            self.queue.reset();
            self.queue_ringing = false;
        }
        self.staged.extend_from_slice(&self.requests.queued);
        let force = end || !self.requests.notifies.is_empty();
        self.drain_queue(cx, force);
        if written || self.output_ringing {
            self.up.process(&self.output, &mut self.converted);
            cx.mix_output(&self.converted);
        }
        self.output_ringing = written;
        for &marker in &self.requests.notifies {
            cx.notify(marker);
        }
        for (_, event) in &self.requests.events {
            cx.emit(event.clone());
        }
    }
}

impl Processor for Resample {
    fn name(&self) -> &'static str {
        "resample"
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let error = |e: crate::resample::ResampleError| ProcessorError::invalid("resample", "", e);
        let (outer, inner) = (setup.rate.hz(), self.rate.hz());
        let down = Resampler::new(outer, inner).map_err(error)?;
        let up = Resampler::new(inner, outer).map_err(error)?;
        let queue = Resampler::new(inner, outer).map_err(error)?;
        self.inner.prepare(&Setup { rate: self.rate, ..*setup })?;
        let inner_frame = self.rate.frame_samples();
        self.state = Some(State {
            call_rate: setup.rate,
            down,
            up,
            queue,
            input: vec![0; inner_frame],
            output: vec![0; inner_frame],
            converted: vec![0; setup.rate.frame_samples()],
            output_ringing: false,
            staged: Vec::with_capacity(inner_frame * (QUEUE_FRAMES + 1)),
            queue_ringing: false,
            outstanding: 0,
            requests: Requests::new(inner_frame * QUEUE_FRAMES),
            events: Vec::with_capacity(2 * super::MAX_EVENTS_PER_PASS),
            dropped_events: 0,
        });
        Ok(())
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        let Some(state) = self.state.as_mut() else { return };
        if state.events.len() < state.events.capacity() {
            // An event from a stage after this one stays downstream of every inner stage, so
            // their `on_event` triggers ignore it as they would outside.
            let origin = if cx.event_from_upstream() { None } else { Some(DOWNSTREAM) };
            state.events.push((origin, event.clone()));
        } else {
            state.dropped_events += 1;
        }
    }

    fn timeline(&self) -> super::Timeline {
        // The inner stages run on their own clocks: the pass says which run.
        super::Timeline::Both
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        let Some(state) = self.state.as_mut() else { return };
        if cx.pass().caller {
            state.down.process(cx.input(), &mut state.input);
        } else {
            // A wall-only pass carries no caller audio: the input converter keeps its state for
            // the caller's next frame.
            state.input.fill(0);
        }
        state.output.fill(0);
        // The inner processors may queue what the call's queue has room for, less what waits here.
        let room = cx.output_room() * self.rate.hz() as usize / state.call_rate.hz() as usize;
        state.requests.reset(room.saturating_sub(state.staged.len()));
        let mut inner_cx =
            Context::new(cx.now(), cx.position(), self.rate, &mut state.input, cx.input_present(), &mut state.output, &mut state.requests)
                .with_pass(cx.pass());
        self.inner.run(&state.events, &mut inner_cx);
        let written = inner_cx.output_written();
        state.events.clear();

        state.outstanding = state.outstanding.saturating_sub(state.call_rate.frame_samples());
        state.pass_out(cx, written, false);
        // The inner processors' events reach the other inner processors at the next pass.
        let State { requests, events, dropped_events, .. } = state;
        for (origin, event) in &requests.events {
            if events.len() < events.capacity() {
                events.push((*origin, event.clone()));
            } else {
                *dropped_events += 1;
            }
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        let Some(state) = self.state.as_mut() else { return };
        state.input.fill(0);
        state.output.fill(0);
        state.requests.reset(state.requests.queued.capacity());
        let mut inner_cx =
            Context::new(cx.now(), cx.position(), self.rate, &mut state.input, false, &mut state.output, &mut state.requests);
        self.inner.finish(&mut inner_cx);
        let written = inner_cx.output_written();
        state.pass_out(cx, written, true);
    }

    fn delay(&self) -> Duration {
        let conversions = self.state.as_ref().map_or(Duration::ZERO, |s| s.down.delay() + s.up.delay());
        conversions + self.inner.delay()
    }

    fn take_conference_join(&mut self) -> Option<super::ConferenceJoin> {
        // A route joins one conference at most (checked when the configuration loads).
        self.inner.take_conference_joins().pop()
    }

    fn players_active(&self) -> u64 {
        self.inner.players_active()
    }
}

impl std::fmt::Debug for Resample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resample").field("rate", &self.rate).field("inner", &self.inner).finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::call::Marker;
    use std::f64::consts::PI;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::processor::{CallInfo, DtmfSource, Echo};
    use crate::protocol::{DtmfDigit, Metadata};

    fn call() -> CallInfo {
        let metadata = Metadata::parse(r#"{"content-type":"audio/l16;rate=8000"}"#).unwrap();
        CallInfo { id: "c1".into(), path: "/bot".into(), metadata }
    }

    /// Notes what the inner pipeline sees, emits one event at pass 1, queues `queue` samples of
    /// a 1 kHz tone at pass 2 and then asks for a notify.
    #[derive(Default)]
    struct Probe {
        seen: Arc<Mutex<Vec<String>>>,
        queue: usize,
        rate: u32,
    }

    impl Processor for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }

        fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
            self.rate = setup.rate.hz();
            self.seen.lock().unwrap().push(format!("prepare {}", self.rate));
            Ok(())
        }

        fn process(&mut self, cx: &mut Context<'_>) {
            self.seen.lock().unwrap().push(format!("frame {}", cx.input().len()));
            if cx.position() == 1 {
                cx.emit(Event::Cleared);
            }
            if cx.position() == 2 {
                let tone: Vec<i16> =
                    (0..self.queue).map(|n| (8000.0 * (2.0 * PI * 1000.0 * n as f64 / f64::from(self.rate)).sin()) as i16).collect();
                assert_eq!(cx.enqueue_output(&tone), self.queue);
                cx.notify(7);
            }
        }

        fn handle_event(&mut self, event: &Event, _cx: &mut Context<'_>) {
            self.seen.lock().unwrap().push(format!("event {event:?}"));
        }
    }

    struct Call {
        stage: Resample,
        requests: Requests,
        position: u64,
        now: Instant,
    }

    impl Call {
        fn new(rate: SampleRate, inner_rate: SampleRate, inner: Vec<Box<dyn Processor>>) -> Call {
            let mut stage = Resample::new(inner_rate, Pipeline::new(inner));
            let call = call();
            stage.prepare(&Setup { rate, call: &call, services: &crate::services::Services::new() }).unwrap();
            Call { stage, requests: Requests::new(rate.frame_samples() * 50), position: 0, now: Instant::now() }
        }

        /// One pass with `input` (one call frame) and these events; returns the outbound frame
        /// and whether it was written.
        fn pass(&mut self, rate: SampleRate, input: &[i16], events: &[Event]) -> (Vec<i16>, bool) {
            let mut input = input.to_vec();
            let mut output = vec![0i16; rate.frame_samples()];
            self.requests.reset(self.requests.queued.capacity());
            let mut cx = Context::new(self.now, self.position, rate, &mut input, true, &mut output, &mut self.requests);
            for event in events {
                self.stage.handle_event(event, &mut cx);
            }
            self.stage.process(&mut cx);
            let written = cx.output_written();
            self.position += 1;
            (output, written)
        }
    }

    #[test]
    fn an_echo_at_16_khz_on_an_8_khz_call_returns_the_tone_clean_and_reports_its_delay() {
        let rate = SampleRate::Hz8000;
        let mut call = Call::new(rate, SampleRate::Hz16000, vec![Box::new(Echo::new(0).unwrap())]);
        let delay = call.stage.delay();
        assert!(delay > Duration::from_millis(3) && delay < Duration::from_millis(4), "two conversions: {delay:?}");
        let (amplitude, freq) = (16000.0, 1000.0);
        let mut out = Vec::new();
        for frame in 0..20 {
            let input: Vec<i16> =
                (0..160).map(|i| (amplitude * (2.0 * PI * freq * (frame * 160 + i) as f64 / 8000.0).cos()).round() as i16).collect();
            let (output, written) = call.pass(rate, &input, &[]);
            assert!(written);
            out.extend(output.iter().map(|&s| f64::from(s)));
        }
        // Compare the last 100 ms with the input delayed by the reported delay.
        let d = delay.as_secs_f64();
        let (mut signal, mut error) = (0.0, 0.0);
        for (n, y) in out.iter().enumerate().skip(800) {
            let expected = amplitude * (2.0 * PI * freq * (n as f64 / 8000.0 - d)).cos();
            signal += expected * expected;
            error += (y - expected).powi(2);
        }
        let snr = 10.0 * (signal / error).log10();
        assert!(snr > 45.0, "the echo is the input, {delay:?} later: {snr:.1} dB");
    }

    #[test]
    fn inner_processors_run_at_their_rate_and_events_and_requests_cross_the_boundary() {
        let rate = SampleRate::Hz8000;
        let probe = Probe { queue: 1000, ..Probe::default() };
        let seen = probe.seen.clone();
        let mut call = Call::new(rate, SampleRate::Hz16000, vec![Box::new(probe)]);
        let digit = Event::Dtmf { digit: DtmfDigit::Digit(5), start_ms: None, duration_ms: Some(100), source: DtmfSource::Platform };
        call.pass(rate, &[0; 160], std::slice::from_ref(&digit));
        call.pass(rate, &[0; 160], &[]);
        assert_eq!(call.requests.events.len(), 1, "the inner event is the call's");
        assert_eq!(call.requests.events[0].1, Event::Cleared);
        let (_, written) = call.pass(rate, &[0; 160], &[]);
        assert!(!written, "nothing was written to the frame");
        // 1000 samples at 16 kHz: 500 at 8 kHz, then the filter's ring-out, flushed for the notify.
        let tail = Resampler::new(16000, 8000).unwrap().tail_len();
        assert_eq!(call.requests.queued.len(), 500 + tail);
        assert_eq!(call.requests.notifies, [Marker(7)], "the notify follows the audio");
        call.pass(rate, &[0; 160], &[]);
        assert!(call.requests.queued.is_empty(), "nothing left behind");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], "prepare 16000");
        assert_eq!(seen[1], format!("event {digit:?}"), "the call's event reached the inner processor");
        assert!(seen[2..].iter().filter(|s| s.starts_with("frame")).all(|s| s == "frame 320"));
    }

    #[test]
    fn queued_audio_in_pieces_comes_out_as_one_stream_without_seams() {
        /// Queues a 1 kHz tone at 24 kHz in pieces of 600 samples (25 ms, a little faster than real
        /// time, as a streaming source would) every pass for 16 passes.
        struct Stream {
            n: usize,
        }
        impl Processor for Stream {
            fn name(&self) -> &'static str {
                "stream"
            }
            fn process(&mut self, cx: &mut Context<'_>) {
                if cx.position() < 16 {
                    let piece: Vec<i16> =
                        (self.n..self.n + 600).map(|n| (8000.0 * (2.0 * PI * 1000.0 * n as f64 / 24000.0).sin()).round() as i16).collect();
                    self.n += 600;
                    cx.enqueue_output(&piece);
                }
            }
        }
        let rate = SampleRate::Hz8000;
        let mut call = Call::new(rate, SampleRate::Hz24000, vec![Box::new(Stream { n: 0 })]);
        let mut out = Vec::new();
        for _ in 0..25 {
            call.pass(rate, &[0; 160], &[]);
            out.extend_from_slice(&call.requests.queued);
        }
        // 16 × 600 samples at 24 kHz are 3200 at 8 kHz, then the filter's ring-out, once.
        let tail = Resampler::new(24000, 8000).unwrap().tail_len();
        assert_eq!(out.len(), 3200 + tail);
        // One continuous tone: compare with the tone delayed by the filter, away from the ends.
        let d = Resampler::new(24000, 8000).unwrap().delay().as_secs_f64();
        let worst = out[100..3100]
            .iter()
            .enumerate()
            .map(|(i, &y)| (f64::from(y) - 8000.0 * (2.0 * PI * 1000.0 * ((i + 100) as f64 / 8000.0 - d)).sin()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 40.0, "no seam between pieces: worst error {worst}");
    }
}
