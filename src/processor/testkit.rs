//! Running one processor by hand, pass by pass, on a fake clock: how a processor's author (and
//! callpipe's own tests) see what it does to the caller's audio, what it sends, what it emits
//! and what it asks for, without a session, a socket or a thread.
//!
//! A [`Harness`] prepares the processor for a call at a rate, then runs passes as the session
//! would on the caller's timeline: each frame given is one pass, numbered from 0, at the fake
//! instant `start + 20 ms × pass`. Platform events ([`Harness::deliver`]) reach the processor at
//! the next pass, before its `process`, as the session delivers them. Everything the passes
//! produced accumulates in the harness's public fields.
//!
//! ```
//! use callpipe::processor::testkit::Harness;
//! use callpipe::processor::{Context, Event, Processor};
//! use callpipe::protocol::{DtmfDigit, SampleRate};
//!
//! /// Sends the caller's audio back at half volume, and barges in on any keypress.
//! struct HalfEcho;
//!
//! impl Processor for HalfEcho {
//!     fn name(&self) -> &'static str { "half-echo" }
//!     fn process(&mut self, cx: &mut Context<'_>) {
//!         let (input, output) = cx.input_and_output_mut();
//!         for (out, s) in output.iter_mut().zip(input) { *out = out.saturating_add(*s / 2) }
//!     }
//!     fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
//!         if let Event::Dtmf { .. } = event { cx.clear() }
//!     }
//! }
//!
//! let mut h = Harness::new(HalfEcho, SampleRate::Hz8000).unwrap();
//! h.run(&[1000; 160 * 3]);                       // three frames of the caller
//! assert_eq!(h.sent.len(), 160 * 3);
//! assert!(h.sent.iter().all(|&s| s == 500));     // sent back at half volume
//! h.press(DtmfDigit::Digit(5));                  // the platform reports a key...
//! h.run(&[0; 160]);                              // ...which the next pass sees
//! assert_eq!(h.clears, vec![3]);                 // pass 3 asked for a clear
//! ```

use std::time::{Duration, Instant};

use super::{CallInfo, Context, DtmfSource, Event, Processor, ProcessorError, Requests, Setup};
use crate::call::Marker;
use crate::protocol::{DtmfDigit, FRAME_DURATION, Metadata, SampleRate};
use crate::services::Services;

/// Runs one processor pass by pass. See the [module docs](self).
pub struct Harness<P: Processor> {
    /// The processor, prepared.
    pub processor: P,
    /// The services it was prepared with: a set of its own (a recorder that writes real files,
    /// fork connections that really connect), shared with nothing else.
    pub services: Services,
    /// The call's rate.
    pub rate: SampleRate,
    /// The next pass's number (also the number of passes run).
    pub position: u64,
    /// The instant of pass 0; pass `n` runs at `start + 20 ms × n`.
    pub start: Instant,
    /// The caller's audio as the processor left it (e.g. muted), pass after pass.
    pub heard: Vec<i16>,
    /// The outbound frame of each pass, one after the other (silence where nothing was
    /// written).
    pub sent: Vec<i16>,
    /// Whether each pass wrote its outbound frame.
    pub written: Vec<bool>,
    /// The audio queued with `enqueue_output`, in order, with no pacing.
    pub queued: Vec<i16>,
    /// Every event emitted, with the pass that emitted it.
    pub events: Vec<(u64, Event)>,
    /// The passes that asked for `clear`.
    pub clears: Vec<u64>,
    /// The `notify` markers asked for, with their pass.
    pub notifies: Vec<(u64, Marker)>,
    /// The passes that asked to hang up.
    pub hangups: Vec<u64>,
    requests: Requests,
    pending: Vec<Event>,
}

/// Room for queued audio, in samples: a minute at the call's rate.
fn queue_room(rate: SampleRate) -> usize {
    rate.frame_samples() * 50 * 60
}

impl<P: Processor> Harness<P> {
    /// `processor`, prepared for a call at `rate` (id `test`, path `/test`, no headers).
    pub fn new(processor: P, rate: SampleRate) -> Result<Harness<P>, ProcessorError> {
        let call = CallInfo { id: "test".into(), path: "/test".into(), metadata: Metadata::new(rate) };
        Harness::with_call(processor, rate, &call)
    }

    /// `processor`, prepared for `call` at `rate`.
    pub fn with_call(mut processor: P, rate: SampleRate, call: &CallInfo) -> Result<Harness<P>, ProcessorError> {
        let services = Services::new();
        processor.prepare(&Setup { rate, call, services: &services })?;
        Ok(Harness {
            processor,
            services,
            rate,
            position: 0,
            start: Instant::now(),
            heard: Vec::new(),
            sent: Vec::new(),
            written: Vec::new(),
            queued: Vec::new(),
            events: Vec::new(),
            clears: Vec::new(),
            notifies: Vec::new(),
            hangups: Vec::new(),
            requests: Requests::new(queue_room(rate)),
            pending: Vec::new(),
        })
    }

    /// The fake instant of the next pass.
    pub fn now(&self) -> Instant {
        self.start + FRAME_DURATION * u32::try_from(self.position).unwrap_or(u32::MAX)
    }

    /// Runs `audio`, the caller's, one pass per 20 ms frame (the last padded with silence).
    pub fn run(&mut self, audio: &[i16]) {
        let n = self.rate.frame_samples();
        for chunk in audio.chunks(n) {
            let mut input = vec![0i16; n];
            input[..chunk.len()].copy_from_slice(chunk);
            self.pass(&mut input, true);
        }
    }

    /// Runs `ms` of the caller's silence (frames of zeros that arrived).
    pub fn silence(&mut self, ms: u64) {
        let frames = ms.div_ceil(20) as usize;
        self.run(&vec![0; frames * self.rate.frame_samples()]);
    }

    /// Runs `ms` of a pause in the platform's sending: passes whose input is silence that did
    /// not arrive (`input_present()` is false).
    pub fn pause(&mut self, ms: u64) {
        let n = self.rate.frame_samples();
        for _ in 0..ms.div_ceil(20) {
            let mut input = vec![0i16; n];
            self.pass(&mut input, false);
        }
    }

    /// Delivers `event` to the processor at the next pass, before its `process`.
    pub fn deliver(&mut self, event: Event) {
        self.pending.push(event);
    }

    /// The platform reports `digit` (a `websocket:dtmf`), delivered at the next pass.
    pub fn press(&mut self, digit: DtmfDigit) {
        self.deliver(Event::Dtmf { digit, start_ms: None, duration_ms: Some(100), source: DtmfSource::Platform });
    }

    /// Ends the call: the processor's `finish`, in a pass of its own (not counted).
    pub fn finish(&mut self) {
        let n = self.rate.frame_samples();
        let (mut input, mut output) = (vec![0i16; n], vec![0i16; n]);
        self.requests.reset(queue_room(self.rate));
        let now = self.now();
        let mut cx = Context::new(now, self.position, self.rate, &mut input, false, &mut output, &mut self.requests);
        self.processor.finish(&mut cx);
        self.collect();
    }

    /// How long the passes run so far cover.
    pub fn elapsed(&self) -> Duration {
        FRAME_DURATION * u32::try_from(self.position).unwrap_or(u32::MAX)
    }

    /// The names of the [`Event::Custom`] events emitted, in order.
    pub fn custom_events(&self) -> Vec<&'static str> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Custom { name, .. } => Some(*name),
                _ => None,
            })
            .collect()
    }

    fn pass(&mut self, input: &mut [i16], present: bool) {
        let n = self.rate.frame_samples();
        let mut output = vec![0i16; n];
        self.requests.reset(queue_room(self.rate));
        let now = self.now();
        let mut cx = Context::new(now, self.position, self.rate, input, present, &mut output, &mut self.requests);
        for event in std::mem::take(&mut self.pending) {
            self.processor.handle_event(&event, &mut cx);
        }
        self.processor.process(&mut cx);
        self.written.push(cx.output_written());
        self.heard.extend_from_slice(input);
        self.sent.extend_from_slice(&output);
        self.collect();
        self.position += 1;
    }

    fn collect(&mut self) {
        let pass = self.position;
        if self.requests.clear_requested() {
            self.clears.push(pass);
        }
        if self.requests.hangup_requested() {
            self.hangups.push(pass);
        }
        self.notifies.extend(self.requests.notifies().iter().map(|&m| (pass, m)));
        self.queued.extend_from_slice(self.requests.queued());
        for (_, event) in self.requests.events.drain(..) {
            self.events.push((pass, event));
        }
    }
}

/// Test signals: a seeded noise source and a synthetic voice, the same on every run.
pub mod signal {
    use std::f64::consts::TAU;

    /// A xorshift generator: the same noise on every run for a seed (which must not be 0).
    #[derive(Debug, Clone)]
    pub struct Rng(pub u64);

    impl Rng {
        /// A uniform sample in [0, 1).
        pub fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        /// A Gaussian sample (Box-Muller), unit variance.
        pub fn gauss(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
        }
    }

    /// Vowels' first three formants in Hz: /a/, /i/, /u/, /e/, /o/.
    const VOWELS: [[f64; 3]; 5] =
        [[730.0, 1090.0, 2440.0], [270.0, 2290.0, 3010.0], [300.0, 870.0, 2240.0], [530.0, 1840.0, 2480.0], [570.0, 840.0, 2410.0]];

    /// Voice-like audio at `hz`: `syllables` syllables of voiced speech, each 120 to 260 ms
    /// long with 20 ms fades, its pitch gliding from 0.85-1.25 × `f0` to 0.8-1.15 × `f0` with a
    /// 2 % vibrato, its harmonics shaped by a vowel's formants; 40 to 120 ms of silence after
    /// each. RMS about 3000 while voiced. Not speech to a listener, but it has what noise
    /// suppression and pitch checks look for.
    pub fn syllables(hz: u32, syllables: usize, f0: f64, rng: &mut Rng) -> Vec<f64> {
        let fs = f64::from(hz);
        let ms = |m: f64| (m * fs / 1000.0) as usize;
        let mut out = Vec::new();
        let mut phases = [0.0f64; 64];
        for _ in 0..syllables {
            let len = ms(120.0 + 140.0 * rng.uniform());
            let formants = VOWELS[(rng.uniform() * 5.0) as usize % 5];
            let (f_start, f_end) = (f0 * (0.85 + 0.4 * rng.uniform()), f0 * (0.8 + 0.35 * rng.uniform()));
            let fade = ms(20.0);
            for n in 0..len {
                let t = n as f64 / len as f64;
                let pitch = f_start + (f_end - f_start) * t + 0.02 * f0 * (TAU * 5.0 * n as f64 / fs).sin();
                let envelope = (n.min(len - 1 - n) as f64 / fade as f64).min(1.0);
                let mut x = 0.0;
                for (k, phase) in phases.iter_mut().enumerate() {
                    let f = (k + 1) as f64 * pitch;
                    if f > 0.45 * fs {
                        break;
                    }
                    *phase = (*phase + TAU * f / fs) % TAU;
                    let shape: f64 = formants.iter().map(|&fm| 1.0 / (1.0 + ((f - fm) / 80.0).powi(2))).sum();
                    x += (shape + 0.03) * 300.0 / (f / 100.0).sqrt() * phase.sin();
                }
                out.push(envelope * x);
            }
            out.resize(out.len() + ms(40.0 + 80.0 * rng.uniform()), 0.0);
        }
        out
    }
}
