//! The `vad` processor: voice activity detection on the caller's audio, at 8, 16 and 24 kHz,
//! emitting [`Speech`] events: `speech:started` (with the onset's call time, `start_ms`) and
//! `speech:stopped` (with `start_ms` and `duration_ms`). Players with `barge_in = "speech"`
//! stop on `speech:started`, and a fork with `replies = "commands"` passes both on to its target.
//!
//! # The detector
//!
//! [earshot](https://crates.io/crates/earshot): a small neural network (40 KiB of weights
//! compiled into the binary, nothing downloaded) over 40 mel bands of 16 ms frames at 16 kHz,
//! that scores each frame from 0 (no voice) to 1. Calls at 8 or 24 kHz are converted to 16 kHz
//! first with callpipe's real-time [`Resampler`] on a short filter (under 1 ms of delay, which
//! the reported times take back out). Why earshot over WebRTC's VAD (libfvad, the `webrtc-vad`
//! crate): on the corpus of `benches/vad_accuracy.sh` WebRTC's detector raises many more false
//! starts on music and babble, and earshot needs no C code. BENCHMARKS.md has the figures.
//!
//! # When speech starts and stops
//!
//! A frame is voiced when its score reaches `1 - sensitivity` and it is louder than -55 dBFS (the
//! network's context window would otherwise stretch a short burst into the silence after it).
//! Speech *starts* when the voiced frames since an onset cover `min_speech_ms` without a break
//! **and** at least 3 of the last `min_speech_ms` of them are periodic (the pitch check below): the
//! event is emitted then, with `start_ms` the onset (so a cough or an "mm" shorter than
//! `min_speech_ms` never starts speech, and the event comes `min_speech_ms` after the onset at the
//! earliest). A run that waits more than 12 frames (192 ms) past that (and past the wait after held
//! tones, below) for its periodic frames is dated from the window that had them instead of its
//! onset. Speech *stops* when unvoiced frames cover `min_silence_ms` (the hangover): `duration_ms`
//! runs from the onset to the first of those unvoiced frames. A call that ends mid-speech emits
//! `speech:stopped` at its end. Passes without caller audio (a pause) are silence.
//!
//! The pitch check: the 16 kHz audio is averaged down to 4 kHz, and each frame's last 32 ms
//! (mean removed) is periodic when its normalized autocorrelation peaks at 0.6 or more for some
//! pitch period between 2.5 and 14 ms (400 to 70 Hz). White, pink or brown noise peaks around
//! 0.2, voiced speech around 0.85. It only gates the start: once speaking, unvoiced consonants
//! keep speech going as before. It is there because at 8 kHz the network scores noise well
//! above its silence (the band above 4 kHz it expects is missing): without it, steady noise at
//! -40 to -25 dBFS started speech a few hundred times an hour.
//!
//! The music check (`music.rs`, with the held-note check in `pitch.rs`): a frame is *steady*
//! when it is periodic and its autocorrelation over the pitch lags (the 4 kHz window's,
//! normalized by its energy, a by-product of the pitch check) is within 0.08 on average of the
//! frame's 64 ms earlier: the same period and spectrum, held, as a note is and a voice never is
//! (its pitch glides and its formants move; voiced speech frames differ by about 0.2, held
//! notes by about 0.06). Music is *playing* when
//!
//! - two or more steady frames that the network also calls voiced came in the last second (a
//!   held tone it does not hear as a voice, such as mains hum or a fan, is not music, and speech
//!   over it starts only 48 ms later than over silence: the wait after held tones, below);
//! - or a sure sign of music came in the last 10 s: 16 such frames in a second (a note held;
//!   the bench's synthetic voices hold fewer), or two *new notes* in a second that the network
//!   does not call voiced (steady frames on another note than the steady frame before: a tune
//!   in tones it does not hear as a voice; a hum between words is always the same note), or 16
//!   frames in a second of notes *ringing out*: held tones the network does not call voiced
//!   (the same as 64 ms before with a pitch-check peak of 0.4 or more, audible) that are 0.3 dB
//!   or more quieter than 64 ms before, within a second of an attack (a frame 3 dB louder than
//!   the one before), as a plucked string or a piano note fades where a hum holds its level or
//!   wanders as smoothly up as down (on the bench's corpus, 37 of 295 starts over music then
//!   came later, by 220 ms at the median and 1.06 s at most, dated as before). The rests
//!   between phrases do not end the music;
//! - or the call has not yet had 256 ms in a row of frames the network is sure hold no voice
//!   (0.2 under the threshold, or below the level floor; 2 s at most): a call that opens
//!   in the middle of music has no history to tell it by (on the corpus, the first words of
//!   three noisy calls then started 60 to 280 ms later). Words in that opening must pass the
//!   test below, so a word shorter than 352 ms there does not start speech. An opening that
//!   lasts the whole 2 s and holds 16 frames or more that are the same as 64 ms before (with a
//!   pitch-check peak of 0.4 or more, audible, voiced or not) is itself a sure sign: notes and
//!   chords the network half hears, where a talker without a pause holds a vowel still for a
//!   few frames.
//!
//! While music plays, speech starts only once the voiced run lasts 22 frames (352 ms) and its last
//! 22 frames bear a voice's marks: at most one steady frame (no held note), and with one, a level 4
//! dB above the audible frames of the second before them (a voice adds itself to the music, where a
//! melody holding a note over the same accompaniment does not); at least 10 periodic ones (one
//! pitch at a time; a chord's mixed pitches blur the autocorrelation); and a level that moves as
//! syllables do (a standard deviation of 2 dB or more around its straight-line trend, so that a
//! plucked note fading along a line in dB does not pass). It is dated from the run's onset if that
//! came no more than 12 frames before the 22, or if the run rose over the music at its onset (its
//! first 3 frames 6 dB above the audible ones of the 128 ms before) and held no note (4 steady
//! frames in a row): a voice whose own held vowels kept it from passing sooner. Otherwise (a run
//! that began in the music) it is dated from the first of the 22 frames louder than their mean,
//! where the voice rose over the music. Over
//! music `speech:started` therefore comes about 270 ms later than over silence or noise, and a
//! call's first words do too when they come in its first quarter second; without music nothing
//! changes. Once speaking over music, a frame keeps the speech going only if the network scores it
//! 0.2 above the threshold (0.95 at most): music it calls voiced scores lower than a voice over it,
//! and at the plain threshold the music alone held speech on between utterances.
//!
//! After held tones the network does not call voiced (16 frames in the last second that are the
//! same as 64 ms before with a pitch-check peak of 0.4 or more, audible and not voiced: a hum, or
//! notes or chords the network does not hear), a voiced run outside music starts speech up to 3
//! frames (48 ms) past `min_speech_ms`, once the held-note check has judged its first frames: the
//! next note of music whose notes the network did not hear so far, one it does hear, is held, turns
//! the music on meanwhile and is then judged as music is. Speech over a hum starts that much later;
//! over silence, noise and babble nothing changes (on the bench's corpus 39 of 335 starts over
//! music came later, by 40 ms at the median and 160 ms at most, and none over anything else).
//!
//! Measured with `benches/vad_accuracy.sh --min-speech-ms 80` (the defaults: threshold 0.5,
//! `min_speech_ms` 80, `min_silence_ms` 300; synthetic corpus, see benches/vad/README.md),
//! 8 kHz / 16 kHz: false `speech:started` per hour on noise-only audio 0 / 0 (378 / 12 without
//! the pitch check); onset error p90 92 / 98 ms; frame recall at 10 dB SNR 0.98 / 0.97; false
//! starts on the corpus's music 0 / 0 per hour, and on a held-out set of plucked-string and
//! piano music (`benches/vad/heldout_music.py`) 0 / 0 (6 / 6 before the wait after held
//! tones; with the opening ended by any frame not voiced: 6 / 0 and 6 / 6; before the level's
//! lift and trend: 30 / 12 and 6 / 6; before the rests, the opening and the voice's marks:
//! 36 / 96 and 486 / 540; Silero: 0 on both). On six fresh sets of the held-out kind
//! (`benches/vad_fresh_music.sh 4242 9090 31337 2718 1111 2222`, 240 minutes a rate) 2 / 0
//! starts (18 / 16 before notes ringing out counted as music, the dating of a run that rose at
//! its onset, the opening's quiet in a row and its held tones; Silero 0 / 2). Tried and
//! dropped for them: a longer opening (3 s; the onset p90 at 16 kHz to 103 ms, as first words
//! on noisy lines then had to pass the test over music), and waiting 3 frames after an opening
//! that ended without a pause until one comes (at 8 kHz over babble, the p99 of starts after
//! the onset from 370 to 840 ms).
//! Tried and dropped: a fixed higher threshold, a noise-floor gate and a score-mean gate
//! (each cost more onset accuracy than it saved), counting held notes the network does not
//! call voiced (held speech over a hum back by 400 ms), refusing a start whose first frames hold
//! a note, or asking a start without music for one (the bench's synthetic voices hold some:
//! onset p90 over 100 ms), no steady frame at all over music (onset p90 377 ms there), ending
//! the opening only on quiet without a pitch (a hum has one), the level's rise over the last
//! 3 s, the rhythm and the level of the periodic frames alone, none of which kept speech over
//! music apart from music; and waiting after any audible sound rather than after held tones
//! (onset p90 at 16 kHz from 99 to 104 ms), or after any pitched one (starts over babble later,
//! up to 1.1 s; see `music::JUDGE_FRAMES`).
//! `min_speech_ms` 80 rather than 100 takes 20 ms off every barge-in for 36 more false starts an
//! hour on the corpus's music at 16 kHz (none on noise; measured before the music check).
//!
//! # Real time
//!
//! Everything is allocated in `prepare` (the detector's 8 KiB of state, the resampler): a pass
//! converts a frame, scores one or two 16 ms frames, runs the pitch check on a 128-sample
//! window on the stack and moves a few numbers. The events are plain values
//! ([`Event::Speech`]); emitting them allocates nothing. Cost per 20 ms of audio
//! (`cargo bench --bench core -- '^vad/'`, the fixture's speech, a quiet 2-core machine): about
//! 8.6 µs at 16 kHz and 9.8-10.0 µs at 8 and 24 kHz (the conversion and the music check
//! included), of which the
//! network is about two thirds; on a busy machine up to twice that. `vad_scan`'s
//! `us_per_frame` (the accuracy bench's column) adds its harness and score log. BENCHMARKS.md
//! has the figures.

mod music;
mod pitch;

use self::music::MusicCheck;
use self::pitch::{HeldNotes, PERIODIC, PITCH_WINDOW, periodicity};
use super::{Context, Event, Processor, ProcessorError, Setup};
use crate::call::Speech;
use crate::resample::{Resampler, Tuning};

/// Samples of one detector frame: 16 ms at 16 kHz.
const DETECTOR_FRAME: usize = 256;

/// The detector's rate.
const DETECTOR_HZ: u32 = 16_000;

/// The conversion of 8 and 24 kHz calls to the detector's rate: a third of the taps of the
/// converter the audio path uses (a Kaiser window with beta 5, about 54 dB of stopband rather
/// than 70, and about 0.6 ms of delay rather than 1.8). The network only sees 40 mel band
/// energies, for which that is plenty.
const CONVERSION: Tuning = Tuning { span: 10, beta: 5.0, cutoff: 0.92 };

/// The detector frame's duration in ms.
const DETECTOR_FRAME_MS: u64 = 16;

/// A frame quieter than -55 dBFS (RMS) is never voiced, whatever the network says: its
/// context window still hears the speech that just ended, which would lengthen a short burst.
const FLOOR_ENERGY: i64 = {
    // (32768 * 10^(-55/20))^2 * 256
    let rms = 58; // 32768 * 10^(-55/20) = 58.3
    rms * rms * DETECTOR_FRAME as i64
};

/// Periodic frames needed in the last `min_speech_ms` of voiced frames before speech starts
/// (fewer when `min_speech_ms` is under 3 frames).
const PERIODIC_FRAMES: u32 = 3;

/// How many frames past `min_speech_ms` speech may start and still be dated from the run's onset;
/// a run that waited longer for periodic frames starts at the window that had them.
const LATE_START_FRAMES: u64 = 12;

/// While the caller speaks over music, a frame keeps the speech going only if the network
/// scores it this much above the threshold (0.7 at the default sensitivity, 0.95 at most): music the network
/// calls voiced scores lower than a voice over it, and at the plain threshold the music alone
/// kept speech going between utterances (at 8 kHz and 10 dB SNR, 91 % of the corpus's
/// utterances over music had no `speech:stopped` within 500 ms of their end; 30 % with it).
const OVER_MUSIC_MARGIN: f32 = 0.2;

/// The longest `min_speech_ms` and `min_silence_ms`: 10 s.
pub const MAX_VAD_WINDOW_MS: u32 = 10_000;

/// The `vad` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// From 0.05 to 0.95: how readily a frame counts as voiced (a frame is voiced when its
    /// score reaches `1 - sensitivity`). Default 0.5.
    pub sensitivity: f32,
    /// Voiced audio needed, without a break, before speech starts. Default 80 ms.
    pub min_speech_ms: u32,
    /// Unvoiced audio needed before speech stops (the hangover). Default 300 ms.
    pub min_silence_ms: u32,
}

impl Default for VadConfig {
    fn default() -> VadConfig {
        VadConfig { sensitivity: 0.5, min_speech_ms: 80, min_silence_ms: 300 }
    }
}

/// One detector frame as the checks saw it, for tools that study the detector
/// ([`Vad::log_scores`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameLog {
    /// The network's score, 0 to 1.
    pub score: f32,
    /// Whether the frame counted as voiced (the score and the level floor; not the higher bar
    /// that keeps speech going over music).
    pub voiced: bool,
    /// The pitch check's peak autocorrelation, 0 to 1 (periodic from 0.6).
    pub periodicity: f32,
    /// Whether the frame held a note (steady) and was voiced.
    pub steady: bool,
    /// Whether the music check held music to be playing after it.
    pub music: bool,
    /// Whether the frame was a new note the network did not call voiced (the held-note check's).
    pub new_note: bool,
    /// The frame's level, in dB of its mean square in sample units (the music check's): about
    /// 90.3 above dBFS, so -55 dBFS is 35.3.
    pub level_db: f32,
}

/// Where the caller's speech stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not speaking; `onset` is the start of the current run of voiced frames, if any, and
    /// `run` its length in frames.
    Quiet { onset: Option<u64>, run: u64 },
    /// Speaking since `start`; `silence` is the start of the current run of unvoiced frames.
    Speaking { start: u64, silence: Option<u64> },
}

/// Voice activity detection; see `src/processor/vad/mod.rs`.
pub struct Vad {
    config: VadConfig,
    threshold: f32,
    detector: Option<Box<earshot::Detector>>,
    /// The call's audio to 16 kHz (none at 16 kHz).
    resampler: Option<Resampler>,
    /// One 20 ms frame at 16 kHz.
    converted: Vec<i16>,
    /// 16 kHz samples waiting for a whole detector frame.
    pending: Vec<i16>,
    /// Detector frames scored so far.
    frames: u64,
    /// The last [`PITCH_WINDOW`] samples at 4 kHz, oldest first, for the pitch check.
    quarter: [f32; PITCH_WINDOW],
    /// One bit per frame of the current voiced run, newest in bit 0: whether it was periodic.
    periodic: u64,
    /// The held-note check's history.
    held: HeldNotes,
    /// The music check's.
    music: MusicCheck,
    /// The converter's delay, in ms, taken off the reported times.
    delay_ms: u64,
    state: State,
    /// The latest frame's score, for tests and tools.
    last_score: f32,
    /// Every frame's score and what the checks made of it, up to the log's capacity (empty
    /// unless a tool asked for it).
    score_log: Vec<FrameLog>,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad").field("config", &self.config).field("state", &self.state).finish_non_exhaustive()
    }
}

impl Vad {
    /// A detector with `config`, checked here.
    pub fn new(config: VadConfig) -> Result<Vad, ProcessorError> {
        let error = |message: String| Err(ProcessorError::Config { processor: "vad".into(), message });
        if !(0.05..=0.95).contains(&config.sensitivity) {
            return error(format!("sensitivity {} is not between 0.05 and 0.95", config.sensitivity));
        }
        for (name, ms) in [("min_speech_ms", config.min_speech_ms), ("min_silence_ms", config.min_silence_ms)] {
            if ms > MAX_VAD_WINDOW_MS {
                return error(format!("{name} {ms} is over {MAX_VAD_WINDOW_MS}"));
            }
        }
        Ok(Vad {
            config,
            threshold: 1.0 - config.sensitivity,
            detector: None,
            resampler: None,
            converted: Vec::new(),
            pending: Vec::new(),
            frames: 0,
            quarter: [0.0; PITCH_WINDOW],
            periodic: 0,
            held: HeldNotes::new(),
            music: MusicCheck::new(),
            delay_ms: 0,
            state: State::Quiet { onset: None, run: 0 },
            last_score: 0.0,
            score_log: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// The score of the latest 16 ms detector frame (0 to 1).
    pub fn last_score(&self) -> f32 {
        self.last_score
    }

    /// Keeps the scores of the next `frames` detector frames (16 ms each), for tools that
    /// study the detector ([`Vad::score_log`]); the log is allocated here, once.
    pub fn log_scores(&mut self, frames: usize) {
        self.score_log = Vec::with_capacity(frames);
    }

    /// The scores logged since [`Vad::log_scores`], one per 16 ms detector frame, with what the
    /// checks made of each.
    pub fn score_log(&self) -> &[FrameLog] {
        &self.score_log
    }

    /// The delay of the conversion to 16 kHz, taken off the events' times (0 at 16 kHz).
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms
    }

    /// Detector frames scored so far (16 ms each).
    pub fn frames_scored(&self) -> u64 {
        self.frames
    }

    /// Whether the caller is speaking now, as far as the events said.
    pub fn speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Moves the state by one detector frame that starts at `at` ms (call time): the network's
    /// score, whether the frame is voiced (score and level) and periodic (the pitch check).
    fn frame(&mut self, at: u64, score: f32, voiced: bool, periodic: bool, cx: &mut Context<'_>) {
        let voiced = match self.state {
            State::Speaking { .. } if self.music.playing() => voiced && score >= (self.threshold + OVER_MUSIC_MARGIN).min(0.95),
            _ => voiced,
        };
        let min_speech = u64::from(self.config.min_speech_ms);
        let min_silence = u64::from(self.config.min_silence_ms);
        let end = at + DETECTOR_FRAME_MS;
        self.state = match (self.state, voiced) {
            (State::Quiet { onset, run }, true) => {
                let onset = onset.unwrap_or(at);
                let run = run + 1;
                self.periodic = (self.periodic << 1) | u64::from(periodic);
                // The run's last `min_speech_ms` (at most 64 frames) must hold a few periodic
                // frames: voiced speech has a pitch, noise does not.
                let need = min_speech.max(1).div_ceil(DETECTOR_FRAME_MS);
                let window = need.min(64) as u32;
                let mask = if window == 64 { u64::MAX } else { (1u64 << window) - 1 };
                let periodic_frames = (self.periodic & mask).count_ones();
                // Over music, only a long run with a voice's marks starts speech; it is dated
                // from its onset, or where it rose over the music when the run began in it.
                let over_music = self.music.playing();
                // After held tones the network did not hear, the held-note check first judges
                // the run's frames: a held note turns the music on meanwhile.
                let judge = if !over_music && self.music.after_tone() { music::JUDGE_FRAMES } else { 0 };
                let ready = if over_music { self.music.voice_over(run, self.periodic) } else { run >= need + judge };
                if end - onset >= min_speech.max(1) && periodic_frames >= PERIODIC_FRAMES.min(window) && ready {
                    let wait = if over_music { need.max(music::RUN_FRAMES) } else { need + judge };
                    // A run over music that rose over it at its onset and held no note is a
                    // voice from there, though its own held vowels kept it waiting (up to a second).
                    let start = if run <= wait + LATE_START_FRAMES || (over_music && self.music.rose_at_onset(run)) {
                        onset
                    } else if over_music {
                        at.saturating_sub(self.music.rise() * DETECTOR_FRAME_MS)
                    } else {
                        end.saturating_sub(need * DETECTOR_FRAME_MS)
                    };
                    cx.emit(Event::Speech(Speech::Started { start_ms: start }));
                    State::Speaking { start, silence: None }
                } else {
                    State::Quiet { onset: Some(onset), run }
                }
            }
            (State::Quiet { .. }, false) => {
                self.periodic = 0;
                State::Quiet { onset: None, run: 0 }
            }
            (State::Speaking { start, .. }, true) => State::Speaking { start, silence: None },
            (State::Speaking { start, silence }, false) => {
                let silence = silence.unwrap_or(at);
                if end - silence >= min_silence.max(1) {
                    cx.emit(Event::Speech(Speech::Stopped { start_ms: start, duration_ms: silence - start }));
                    self.periodic = 0;
                    State::Quiet { onset: None, run: 0 }
                } else {
                    State::Speaking { start, silence: Some(silence) }
                }
            }
        };
    }
}

impl Processor for Vad {
    fn name(&self) -> &'static str {
        "vad"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let hz = setup.rate.hz();
        self.resampler = if hz == DETECTOR_HZ {
            None
        } else {
            let resampler = Resampler::with_tuning(hz, DETECTOR_HZ, CONVERSION).map_err(|e| ProcessorError::invalid("vad", "", e))?;
            self.delay_ms = resampler.delay().as_millis() as u64;
            Some(resampler)
        };
        let frame = (DETECTOR_HZ / crate::protocol::FRAMES_PER_SECOND) as usize;
        self.converted = vec![0; frame];
        self.pending = Vec::with_capacity(DETECTOR_FRAME + frame);
        self.detector = Some(earshot::Detector::default_boxed());
        self.frames = 0;
        self.quarter = [0.0; PITCH_WINDOW];
        self.periodic = 0;
        self.held = HeldNotes::new();
        self.music = MusicCheck::new();
        self.state = State::Quiet { onset: None, run: 0 };
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        let Some(mut detector) = self.detector.take() else { return };
        match self.resampler.as_mut() {
            Some(resampler) => resampler.process(cx.input(), &mut self.converted),
            None => self.converted.copy_from_slice(cx.input()),
        }
        self.pending.extend_from_slice(&self.converted);
        let mut used = 0;
        while self.pending.len() - used >= DETECTOR_FRAME {
            let frame = &self.pending[used..used + DETECTOR_FRAME];
            let energy: i64 = frame.iter().map(|&x| i64::from(x) * i64::from(x)).sum();
            let score = detector.predict_i16(frame);
            let periodicity = periodicity(&mut self.quarter, &mut self.held, frame);
            let periodic = periodicity >= PERIODIC;
            used += DETECTOR_FRAME;
            let at = (self.frames * DETECTOR_FRAME_MS).saturating_sub(self.delay_ms);
            self.frames += 1;
            self.last_score = score;
            let voiced = score >= self.threshold && energy >= FLOOR_ENERGY;
            let held = self.held.judge(voiced);
            let quiet = music::quiet(score, self.threshold, energy);
            self.music.mark(held, voiced, quiet, energy);
            if self.score_log.len() < self.score_log.capacity() {
                let steady = self.music.steady_frames(1) == 1;
                let (music, new_note, level_db) = (self.music.playing(), held.new_note, self.music.level(0));
                self.score_log.push(FrameLog { score, voiced, periodicity, steady, music, new_note, level_db });
            }
            self.frame(at, score, voiced, periodic, cx);
        }
        self.pending.drain(..used);
        self.detector = Some(detector);
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        if let State::Speaking { start, silence } = self.state {
            let end = silence.unwrap_or((self.frames * DETECTOR_FRAME_MS).saturating_sub(self.delay_ms));
            cx.emit(Event::Speech(Speech::Stopped { start_ms: start, duration_ms: end.saturating_sub(start) }));
            self.state = State::Quiet { onset: None, run: 0 };
        }
    }
}

#[cfg(test)]
mod tests;
