//! The synthesis thread (`callpipe-tts`): libespeak-ng driven one sentence at a time, its
//! 22,050 Hz output resampled as it comes to each talk's call rate and published in growing
//! chunks ([`TalkShared`]).
//!
//! * **First audio fast.** The library hands over audio every [`BUFFER_MS`] while it
//!   synthesizes; the first chunk of a talk is published once [`FIRST_CHUNK_MS`] of it is ready,
//!   the next ones double up to [`MAX_CHUNK_MS`]. Talks that have published nothing yet go
//!   first.
//! * **Fair.** Plain text is split into sentences, and the thread takes one sentence of each
//!   talk in turn, so a long text does not hold up a short one. SSML is synthesized whole.
//! * **Stops early.** A cancelled talk (stopped, interrupted, its call ended) stops within the
//!   buffer it is on; its remaining sentences are dropped.
//! * **Frees off the media threads.** The thread keeps every talk until it holds the last
//!   reference, then drops it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_int, c_short, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::espeak::Espeak;
use super::{TalkRequest, TalkShared, TtsError, TtsStats};
use crate::audio::StreamResampler;

/// How much audio the library hands over per callback.
const BUFFER_MS: u32 = 40;
/// The first chunk of a talk.
const FIRST_CHUNK_MS: usize = 60;
/// The largest chunk.
const MAX_CHUNK_MS: usize = 2000;
/// How often an idle thread looks for talks to free.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// What the thread is asked to do.
pub(super) enum Request {
    /// Synthesize a talk.
    Speak { request: TalkRequest, shared: Arc<TalkShared> },
    /// Resolve a language and voice to a library voice name, or say why not.
    Check { language: String, voice: Option<String>, reply: SyncSender<Result<String, TtsError>> },
}

/// The thread's handle: where requests go.
pub(super) struct Engine {
    requests: mpsc::Sender<Request>,
    pub(super) stats: Arc<Counters>,
    /// Languages and voices resolved so far, and what they resolved to: a check answers from
    /// here without waiting behind the sentence being synthesized. At most [`MAX_RESOLVED`].
    resolved: std::sync::Mutex<Vec<Resolved>>,
}

/// A language and voice, and what they resolved to.
type Resolved = ((String, Option<String>), Result<String, TtsError>);

/// How many language and voice pairs [`Engine::check`] remembers.
const MAX_RESOLVED: usize = 256;

/// What the thread has done, for metrics and benchmarks.
#[derive(Debug, Default)]
pub(super) struct Counters {
    talks: AtomicU64,
    audio_samples_22k: AtomicU64,
    synth_ns: AtomicU64,
    first_audio_ns_total: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> TtsStats {
        TtsStats {
            talks: self.talks.load(Ordering::Relaxed),
            audio_seconds: self.audio_samples_22k.load(Ordering::Relaxed) as f64 / 22_050.0,
            synth_seconds: self.synth_ns.load(Ordering::Relaxed) as f64 / 1e9,
            first_audio_seconds_total: self.first_audio_ns_total.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The process's synthesis thread, started on first use.
pub(super) fn engine() -> Result<&'static Engine, TtsError> {
    static ENGINE: OnceLock<Result<Engine, TtsError>> = OnceLock::new();
    ENGINE.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn start() -> Result<Engine, TtsError> {
    let (requests, inbox) = mpsc::channel();
    let (ready, started) = mpsc::sync_channel(1);
    let stats = Arc::new(Counters::default());
    let counters = stats.clone();
    std::thread::Builder::new()
        .name("callpipe-tts".into())
        .spawn(move || match Espeak::initialize(BUFFER_MS, callback) {
            Ok(espeak) => {
                let _ = ready.send(Ok(()));
                Worker { espeak, inbox, talks: VecDeque::new(), kept: Vec::new(), voice: String::new(), counters }.run();
            }
            Err(e) => {
                let _ = ready.send(Err(TtsError::Engine(e)));
            }
        })
        .map_err(|e| TtsError::Engine(e.to_string()))?;
    started.recv().map_err(|_| TtsError::Engine("the synthesis thread ended at start".into()))??;
    Ok(Engine { requests, stats, resolved: std::sync::Mutex::new(Vec::new()) })
}

impl Engine {
    pub(super) fn send(&self, request: Request) -> Result<(), TtsError> {
        self.requests.send(request).map_err(|_| TtsError::Engine("the synthesis thread has ended".into()))
    }

    /// Resolves a language and voice to a library voice name, or says why not: from what was
    /// resolved before, or else a round trip to the thread (which waits for the sentence it is
    /// synthesizing).
    pub(super) fn check(&self, language: &str, voice: Option<&str>) -> Result<String, TtsError> {
        let known = |resolved: &[Resolved]| {
            resolved.iter().find(|((l, v), _)| l == language && v.as_deref() == voice).map(|(_, answer)| answer.clone())
        };
        if let Some(answer) = known(&self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
            return answer;
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Check { language: language.to_owned(), voice: voice.map(str::to_owned), reply })?;
        let answer = answer.recv().map_err(|_| TtsError::Engine("the synthesis thread has ended".into()))?;
        let mut resolved = self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if resolved.len() < MAX_RESOLVED && known(&resolved).is_none() {
            resolved.push(((language.to_owned(), voice.map(str::to_owned)), answer.clone()));
        }
        answer
    }
}

/// Where the library's audio for the sentence being synthesized goes.
struct Sink {
    shared: Arc<TalkShared>,
    resampler: Option<StreamResampler>,
    scratch: Vec<f32>,
    pending: Vec<i16>,
    /// Publish once `pending` holds this many samples.
    target: usize,
    max_target: usize,
    /// Library samples received.
    received: u64,
    queued_at: Instant,
    first_published: bool,
    counters: Arc<Counters>,
}

impl Sink {
    fn feed(&mut self, samples: &[i16]) {
        self.received += samples.len() as u64;
        self.scratch.clear();
        match self.resampler.as_mut() {
            Some(resampler) => {
                let input: Vec<f32> = samples.iter().map(|&s| f32::from(s)).collect();
                resampler.push(&input, &mut self.scratch);
                self.pending.extend(self.scratch.iter().map(|&x| x.round().clamp(-32768.0, 32767.0) as i16));
            }
            None => self.pending.extend_from_slice(samples),
        }
        if self.pending.len() >= self.target && !self.shared.last_slot() {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunk: Arc<[i16]> = std::mem::take(&mut self.pending).into();
        if self.shared.publish(chunk) && !self.first_published {
            self.first_published = true;
            self.counters.first_audio_ns_total.fetch_add(self.queued_at.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.target = (self.target * 2).min(self.max_target);
    }

    fn finish(mut self, failed: bool) {
        if let Some(resampler) = self.resampler.take() {
            self.scratch.clear();
            resampler.finish(&mut self.scratch);
            self.pending.extend(self.scratch.iter().map(|&x| x.round().clamp(-32768.0, 32767.0) as i16));
        }
        self.flush();
        self.counters.audio_samples_22k.fetch_add(self.received, Ordering::Relaxed);
        self.shared.complete(failed);
    }
}

thread_local! {
    /// The sink of the sentence being synthesized, for [`callback`].
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
}

/// The library's audio callback: feeds the current sink; 1 stops synthesis (cancelled).
extern "C" fn callback(wav: *mut c_short, samples: c_int, _events: *mut c_void) -> c_int {
    SINK.with(|sink| {
        let mut sink = sink.borrow_mut();
        let Some(sink) = sink.as_mut() else { return 1 };
        if sink.shared.cancelled() {
            return 1;
        }
        if !wav.is_null() && samples > 0 {
            // SAFETY: the library passes `samples` valid samples at `wav` for this call.
            let audio = unsafe { std::slice::from_raw_parts(wav, samples as usize) };
            sink.feed(audio);
        }
        0
    })
}

/// A talk being synthesized.
struct Talk {
    voice: String,
    ssml: bool,
    pieces: VecDeque<String>,
    sink: Option<Sink>,
}

struct Worker {
    espeak: Espeak,
    inbox: Receiver<Request>,
    talks: VecDeque<Talk>,
    /// Talks done synthesizing, kept until nobody else holds them.
    kept: Vec<Arc<TalkShared>>,
    /// The library's current voice.
    voice: String,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let request = if self.talks.is_empty() {
                match self.inbox.recv_timeout(IDLE_WAIT) {
                    Ok(request) => Some(request),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                self.inbox.try_recv().ok()
            };
            if let Some(request) = request {
                self.accept(request);
                while let Ok(more) = self.inbox.try_recv() {
                    self.accept(more);
                }
            }
            self.kept.retain(|shared| Arc::strong_count(shared) > 1);
            self.step();
        }
    }

    fn accept(&mut self, request: Request) {
        match request {
            Request::Check { language, voice, reply } => {
                let _ = reply.send(self.resolve(&language, voice.as_deref()));
            }
            Request::Speak { request, shared } => {
                self.counters.talks.fetch_add(1, Ordering::Relaxed);
                let voice = match self.resolve(&request.language, request.voice.as_deref()) {
                    Ok(voice) => voice,
                    Err(_) => {
                        shared.complete(true);
                        self.kept.push(shared);
                        return;
                    }
                };
                let to = request.rate.hz();
                let from = self.espeak.rate_hz;
                let ssml = super::is_ssml(&request.text);
                let pieces = if ssml { VecDeque::from([request.text]) } else { super::sentences(&request.text).into() };
                let per_ms = to as usize / 1000;
                let sink = Sink {
                    shared,
                    resampler: StreamResampler::new(from, to),
                    scratch: Vec::new(),
                    pending: Vec::new(),
                    target: FIRST_CHUNK_MS * per_ms,
                    max_target: MAX_CHUNK_MS * per_ms,
                    received: 0,
                    queued_at: request.queued_at,
                    first_published: false,
                    counters: self.counters.clone(),
                };
                self.talks.push_back(Talk { voice, ssml, pieces, sink: Some(sink) });
            }
        }
    }

    /// Synthesizes one sentence of the next talk: one that has published nothing yet first,
    /// else the one whose turn it is.
    fn step(&mut self) {
        let next = self.talks.iter().position(|t| t.sink.as_ref().is_some_and(|s| !s.first_published)).unwrap_or(0);
        let Some(mut talk) = self.talks.remove(next) else { return };
        let Some(sink) = talk.sink.take() else { return };
        let cancelled = sink.shared.cancelled();
        let piece = if cancelled { None } else { talk.pieces.pop_front() };
        let Some(piece) = piece else {
            let shared = sink.shared.clone();
            sink.finish(false);
            self.kept.push(shared);
            return;
        };
        if self.voice != talk.voice && self.espeak.set_voice(&talk.voice) {
            self.voice.clone_from(&talk.voice);
        }
        SINK.with(|s| *s.borrow_mut() = Some(sink));
        let started = Instant::now();
        let result = self.espeak.synth(&piece, talk.ssml);
        self.counters.synth_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let Some(sink) = SINK.with(|s| s.borrow_mut().take()) else { return };
        if result.is_err() && !sink.shared.cancelled() {
            let shared = sink.shared.clone();
            sink.finish(true);
            self.kept.push(shared);
            return;
        }
        talk.sink = Some(sink);
        self.talks.push_back(talk);
    }

    /// The library voice for a BCP-47 `language` (`en-GB`, then `en`) and an optional variant.
    fn resolve(&mut self, language: &str, voice: Option<&str>) -> Result<String, TtsError> {
        let unknown = || TtsError::UnknownLanguage { language: language.to_owned() };
        if language.is_empty() || !language.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(unknown());
        }
        let variant = match voice {
            None | Some("") => String::new(),
            Some(v) if v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && self.espeak.data.join("voices/!v").join(v).is_file() => {
                format!("+{v}")
            }
            Some(v) => return Err(TtsError::UnknownVoice { voice: v.to_owned() }),
        };
        let lower = language.to_ascii_lowercase();
        let primary = lower.split('-').next().unwrap_or_default().to_owned();
        for candidate in [lower, primary] {
            let name = format!("{candidate}{variant}");
            if self.espeak.set_voice(&name) {
                self.voice.clone_from(&name);
                return Ok(name);
            }
        }
        Err(unknown())
    }
}
