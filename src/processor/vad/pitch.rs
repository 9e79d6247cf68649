//! The `vad`'s pitch check and held-note check: how periodic a detector frame is, and whether it
//! holds a note. See the module docs of `vad` for what they gate and why.

use super::DETECTOR_FRAME;

/// The pitch check runs at 4 kHz: a quarter of the detector's rate.
const PITCH_DECIMATION: usize = 4;

/// Samples of one detector frame at 4 kHz.
const PITCH_HOP: usize = DETECTOR_FRAME / PITCH_DECIMATION;

/// The pitch check's window at 4 kHz: 32 ms, the current detector frame and the one before.
pub(super) const PITCH_WINDOW: usize = 2 * PITCH_HOP;

/// The shortest and longest pitch period looked for, in 4 kHz samples: 400 Hz to 70 Hz.
const PITCH_LAGS: std::ops::RangeInclusive<usize> = 10..=57;

/// A frame is periodic when its normalized autocorrelation peaks at or above this, somewhere in
/// the pitch range (white or pink noise peaks around 0.2; voiced speech around 0.85).
pub(super) const PERIODIC: f32 = 0.6;

/// How many pitch lags the check tries.
const LAG_COUNT: usize = *PITCH_LAGS.end() - *PITCH_LAGS.start() + 1;

/// A frame is *steady* (a held note) when it is periodic and its autocorrelation over the pitch
/// lags (normalized by the window's energy) differs from that of the frame this many frames
/// earlier (64 ms) by less than [`STEADY_DISTANCE`] on average: the same waveform, period and
/// spectrum, held. Speech never holds still that long: its pitch glides and its formants move.
const STEADY_SPAN: usize = 4;

/// See [`STEADY_SPAN`]; voiced speech frames differ by about 0.2 (median), held notes by 0.06.
const STEADY_DISTANCE: f32 = 0.08;

/// A steady frame the network does not call voiced is a *new note* when its autocorrelation
/// differs from that of the steady frame before it by more than this on average: another held
/// sound than the one before (a tune), not the same one back (a hum between words). A held
/// vowel between two stretches of a hum makes the hum's return a new note; it takes two such
/// in a second to count as a tune, which the speech fixture over a hum never gives (the tests
/// check three sentences), where requiring the steady frame before to be unvoiced as well took
/// the onset p90 of `benches/vad_accuracy.sh` at 16 kHz over 100 ms (speech over its music).
const NEW_NOTE_DISTANCE: f32 = 0.25;

/// How periodic the audio is around one detector frame (256 samples at 16 kHz): the peak,
/// over pitch periods from 2.5 to 14 ms, of the normalized autocorrelation of the last
/// 32 ms at 4 kHz (each 4 kHz sample the mean of 4, the window's mean removed). 0 to 1;
/// about 0.2 for white or pink noise, 0.8 to 1 for voiced speech (and for most music).
///
/// It also hands `held` the frame's autocorrelation over those periods (normalized by the
/// window's energy), from which it tells whether the frame holds a note ([`Held`]).
pub(super) fn periodicity(quarter: &mut [f32; PITCH_WINDOW], held: &mut HeldNotes, frame: &[i16]) -> f32 {
    quarter.copy_within(PITCH_HOP.., 0);
    for (out, four) in quarter[PITCH_WINDOW - PITCH_HOP..].iter_mut().zip(frame.chunks_exact(PITCH_DECIMATION)) {
        *out = four.iter().map(|&x| f32::from(x)).sum::<f32>() * 0.25;
    }
    let mean = quarter.iter().sum::<f32>() / PITCH_WINDOW as f32;
    let mut x = [0.0f32; PITCH_WINDOW];
    for (x, q) in x.iter_mut().zip(quarter.iter()) {
        *x = q - mean;
    }
    // Energies of the window's head and tail for each lag, kept up to date as the lag grows.
    let total: f32 = x.iter().map(|v| v * v).sum();
    let first = *PITCH_LAGS.start();
    let mut head: f32 = total - x[PITCH_WINDOW - first..].iter().map(|v| v * v).sum::<f32>();
    let mut tail: f32 = total - x[..first].iter().map(|v| v * v).sum::<f32>();
    let mut best = 0.0f32;
    let mut profile = [0.0f32; LAG_COUNT];
    for lag in PITCH_LAGS {
        if lag > first {
            head -= x[PITCH_WINDOW - lag] * x[PITCH_WINDOW - lag];
            tail -= x[lag - 1] * x[lag - 1];
        }
        let cross = dot(&x[..PITCH_WINDOW - lag], &x[lag..]);
        profile[lag - first] = cross;
        let norm = head * tail;
        if cross > 0.0 && norm > 0.0 {
            let r = cross * cross / norm;
            if r > best {
                best = r;
            }
        }
    }
    let best = best.sqrt();
    held.push(&mut profile, total, best);
    best
}

/// What the held-note check made of a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Held {
    /// Periodic and the same as 64 ms before: a note held ([`STEADY_SPAN`]).
    pub(super) steady: bool,
    /// Steady, not voiced, and on another note than the steady frame before it
    /// ([`NEW_NOTE_DISTANCE`]).
    pub(super) new_note: bool,
    /// The same as 64 ms before as a steady frame is, with a peak of [`SUSTAINED_PEAK`] or more
    /// where a steady one has [`PERIODIC`]: a held note, or a held chord whose mixed pitches
    /// blur the peak.
    pub(super) sustained: bool,
}

/// See [`Held::sustained`].
const SUSTAINED_PEAK: f32 = 0.4;

/// The held-note check's history: the normalized autocorrelations of the last [`STEADY_SPAN`]
/// frames and of the last steady frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeldNotes {
    profiles: [[f32; LAG_COUNT]; STEADY_SPAN],
    /// The slot of the oldest profile, [`STEADY_SPAN`] frames back.
    next: usize,
    /// The profile of the last steady frame: the note held last.
    note: [f32; LAG_COUNT],
    /// The slot of the latest frame's profile.
    latest: usize,
    /// Whether the latest frame was steady.
    steady: bool,
    /// Whether the latest frame was sustained ([`Held::sustained`]).
    sustained: bool,
}

impl HeldNotes {
    pub(super) fn new() -> HeldNotes {
        HeldNotes { profiles: [[0.0; LAG_COUNT]; STEADY_SPAN], next: 0, note: [0.0; LAG_COUNT], latest: 0, steady: false, sustained: false }
    }

    /// What the latest frame held, once the network has said whether it was `voiced`; a steady
    /// frame becomes the note the next one is compared with.
    pub(super) fn judge(&mut self, voiced: bool) -> Held {
        if !self.steady {
            return Held { sustained: self.sustained, ..Held::default() };
        }
        let profile = &self.profiles[self.latest];
        let apart: f32 = self.note.iter().zip(profile.iter()).map(|(a, b)| (a - b).abs()).sum();
        let new_note = !voiced && apart > NEW_NOTE_DISTANCE * LAG_COUNT as f32;
        self.note = *profile;
        Held { steady: true, new_note, sustained: true }
    }

    /// Takes one frame's autocorrelation (`profile`, over the pitch lags; `total` the window's
    /// energy) and its peak (`best`; periodic from [`PERIODIC`]).
    fn push(&mut self, profile: &mut [f32; LAG_COUNT], total: f32, best: f32) {
        let scale = if total > 0.0 { 1.0 / total } else { 0.0 };
        let old = &mut self.profiles[self.next];
        let mut distance = 0.0f32;
        for (new, old) in profile.iter_mut().zip(old.iter()) {
            *new *= scale;
            distance += (*new - old).abs();
        }
        *old = *profile;
        self.latest = self.next;
        self.next = (self.next + 1) % STEADY_SPAN;
        let same = distance < STEADY_DISTANCE * LAG_COUNT as f32;
        self.steady = best >= PERIODIC && same;
        self.sustained = best >= SUSTAINED_PEAK && same;
    }
}

/// The dot product of `a` and `b` (as long as the shorter), in eight lanes that the compiler
/// can vectorize (a plain `sum` of f32 stays sequential).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    for (a8, b8) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += a8[k] * b8[k];
        }
    }
    let tail: f32 = a[n / 8 * 8..].iter().zip(&b[n / 8 * 8..]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::testkit::signal::Rng;

    /// White noise with an RMS of 3000.
    fn noise(n: usize, seed: u64) -> Vec<i16> {
        let mut rng = Rng(seed);
        (0..n).map(|_| (3000.0 * rng.gauss()).clamp(-32768.0, 32767.0) as i16).collect()
    }

    #[test]
    fn periodicity_tells_a_pitch_from_noise() {
        let mut quarter = [0.0; PITCH_WINDOW];
        let mut steady = HeldNotes::new();
        let noise = noise(DETECTOR_FRAME * 2, 99);
        periodicity(&mut quarter, &mut steady, &noise[..DETECTOR_FRAME]);
        let r = periodicity(&mut quarter, &mut steady, &noise[DETECTOR_FRAME..]);
        assert!(r < 0.45, "white noise: {r}");
        // A 120 Hz voice-like tone: a fundamental and a few harmonics, at 16 kHz.
        let tone: Vec<i16> = (0..DETECTOR_FRAME * 2)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                let w = std::f64::consts::TAU * 120.0 * t;
                (3000.0 * (w.sin() + 0.6 * (2.0 * w).sin() + 0.4 * (3.0 * w).sin())) as i16
            })
            .collect();
        let mut quarter = [0.0; PITCH_WINDOW];
        periodicity(&mut quarter, &mut steady, &tone[..DETECTOR_FRAME]);
        let r = periodicity(&mut quarter, &mut steady, &tone[DETECTOR_FRAME..]);
        assert!(r > 0.9, "a 120 Hz tone: {r}");
    }

    /// A tone at `hz(t)` (a fundamental and two harmonics) for `frames` detector frames at 16 kHz.
    fn tone(frames: usize, hz: impl Fn(f64) -> f64) -> Vec<i16> {
        let mut phase = 0.0f64;
        (0..DETECTOR_FRAME * frames)
            .map(|i| {
                phase += std::f64::consts::TAU * hz(i as f64 / 16_000.0) / 16_000.0;
                (3000.0 * (phase.sin() + 0.6 * (2.0 * phase).sin() + 0.4 * (3.0 * phase).sin())) as i16
            })
            .collect()
    }

    /// The steady frames and the new notes among them, frame by frame, with none voiced.
    fn held(audio: &[i16]) -> Vec<Held> {
        let (mut quarter, mut notes) = ([0.0; PITCH_WINDOW], HeldNotes::new());
        audio
            .chunks_exact(DETECTOR_FRAME)
            .map(|frame| {
                periodicity(&mut quarter, &mut notes, frame);
                notes.judge(false)
            })
            .collect()
    }

    #[test]
    fn a_held_note_is_steady_and_a_gliding_voice_is_not() {
        let steady_frames = |audio: &[i16]| held(audio).iter().filter(|h| h.steady).count();
        // A held 147 Hz note for 0.5 s: steady from its fifth frame on.
        let note = steady_frames(&tone(32, |_| 147.0));
        assert!(note >= 25, "a held note: {note} steady frames of 32");
        // A voice-like glide, 120 to 180 Hz over 0.5 s (about 1 % a frame).
        let glide = steady_frames(&tone(32, |t| 120.0 + 120.0 * t));
        assert!(glide < 2, "a gliding pitch: {glide} steady frames of 32");
        assert!(steady_frames(&noise(DETECTOR_FRAME * 32, 5)) == 0, "noise is never steady");
    }

    #[test]
    fn a_tune_changes_notes_and_a_hum_does_not() {
        let new_notes = |audio: &[i16]| held(audio).iter().filter(|h| h.new_note).count();
        // A hum broken by 192 ms of noise every 496 ms: steady again after each break, the
        // same note each time.
        let mut hum = tone(160, |_| 120.0);
        for (i, chunk) in hum.chunks_mut(DETECTOR_FRAME * 31).enumerate() {
            let n = chunk.len().min(DETECTOR_FRAME * 12);
            chunk[..n].copy_from_slice(&noise(n, i as u64 + 1));
        }
        assert!(new_notes(&hum) <= 1, "a broken hum: {} new notes", new_notes(&hum));
        // Five notes of 300 ms, a scale: each a new note once it holds.
        let scale = [196.0, 220.0, 247.0, 262.0, 294.0];
        let tune = tone(95, |t| scale[((t / 0.3) as usize).min(4)]);
        let changes = new_notes(&tune);
        assert!((4..=6).contains(&changes), "five notes: {changes} new notes");
    }
}
