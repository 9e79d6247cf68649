//! The `vad`'s music check: whether music is playing, and whether a voiced run heard over it is
//! a voice. See the module docs of `vad` for what it gates and why, and BENCHMARKS.md for what
//! each part is worth.

use super::DETECTOR_FRAME;
use super::pitch::Held;

/// Steady frames the network calls voiced, in the last second (64 frames), that mean music is
/// playing: a background of held notes.
const MUSIC_FRAMES: u32 = 2;

/// Steady voiced frames in the last second that are a sure sign of music (a held note makes
/// most of its frames steady; the bench's synthetic voices, monotonous as they are, hold fewer).
/// They keep the music on for [`MUSIC_MEMORY_FRAMES`] after.
const SURE_MUSIC_FRAMES: u32 = 16;

/// New notes that the network does not call voiced, in the last second, that are as sure a
/// sign: a tune in tones the network does not hear as a voice (a plucked string, a bell), where
/// a hum between words is always the same note.
const SURE_NEW_NOTES: u32 = 2;

/// Frames of struck tones in the last second (64) that are as sure a sign (see
/// [`STRUCK_FALL_DB`]): a quarter second of plucked or struck strings ringing out.
const SURE_STRUCK_FRAMES: u32 = 16;

/// A held tone the network does not call voiced is *struck* when its level is at least this
/// much under that of the frame [`STRUCK_SPAN`] before: the same note fading as it rings out,
/// where a hum holds its level. A plucked string or a piano note rings out for seconds and the
/// network rarely calls its tail voiced; its first frames, loud, it sometimes does, and a
/// piano's two slightly detuned strings keep them from ever holding still, so that these
/// notes gave no other sure sign. `benches/vad_fresh_music.sh` (four sets of such music, 160
/// minutes a rate): false starts from 16 / 12 to 5 / 2 (8 / 16 kHz), with the dating of
/// [`MusicCheck::rose_at_onset`] and the opening's quiet in a row ([`OPENING_QUIET_FRAMES`]);
/// a fall of 0.5 dB left two more at 16 kHz on seeds 4242 and 9090.
const STRUCK_FALL_DB: f32 = 0.3;

/// See [`STRUCK_FALL_DB`]: 4 frames, the span of the held-note check (64 ms).
const STRUCK_SPAN: usize = 4;

/// A struck tone comes within [`STRUCK_AFTER_FRAMES`] of an *attack*, a frame at least this much
/// louder than the one before: a note is struck before it rings out. A tone whose level only
/// wanders (two hums beating, a level that jitters) rises as smoothly as it falls and never
/// counts. The fresh sets' starts are the same without it (`benches/vad_fresh_music.sh`);
/// asking 6 dB left one more at 8 kHz, and asking every frame of the span to be no louder than
/// the one before (no attack) left 9 / 6 instead of 2 / 0: a ringing note's level wobbles.
const STRUCK_ATTACK_DB: f32 = 3.0;

/// See [`STRUCK_ATTACK_DB`]: a second (64 frames).
const STRUCK_AFTER_FRAMES: u32 = 64;

/// How long music stays on after a sure sign of it: 640 frames, about 10 s, so that a rest
/// between phrases does not end it.
const MUSIC_MEMORY_FRAMES: u32 = 640;

/// Frames of held tones the network does not call voiced (see [`MusicCheck::mark`]), in
/// the last second (64), after which a voiced run outside music waits [`JUDGE_FRAMES`] before
/// it starts speech ([`MusicCheck::after_tone`]): 256 ms of a hum, or of notes or chords the
/// network does not hear.
const TONE_FRAMES: u32 = 16;

/// See [`MusicCheck::after_tone`]: the frames a voiced run outside music waits past
/// `min_speech_ms` after tones. The held-note check compares a frame with the one 64 ms before
/// it, so a note held from the run's first frame is steady from its fifth, and two steady
/// frames (the sixth) turn the music on; one frame more takes a note's attack. The first note
/// the network hears after notes it did not is then judged as music is, not started as speech.
/// `benches/vad_accuracy.sh`: the held-out music's starts from 6 / 6 an hour to 0 / 0 (8 / 16
/// kHz) with no other figure of its tables changed; 20 fresh files of the held-out set's kind
/// (`heldout_music.py --seed 4242 --files 20`): 6 / 10 starts in 40 minutes to 3 / 3 (4 frames
/// made speech over a hum start more than 200 ms after its onset). Counting every audible frame
/// with a pitch-check peak of 0.4 or more as a tone, held or not, left 2 / 2, but 76 of the
/// corpus's 123 starts over babble then came later (median 60 ms, up to 1.1 s); held notes
/// alone (a peak of 0.6, not chords), 4 / 4.
pub(super) const JUDGE_FRAMES: u64 = 3;

/// A call counts as music until this many frames (256 ms) in a row were quiet (see
/// [`OPENING_QUIET_MARGIN`]), or for [`OPENING_MAX_FRAMES`] at most: a call that starts in the
/// middle of music has no history to tell it by. Words in that opening must pass
/// [`MusicCheck::voice_over`], so a word shorter than 352 ms there does not start speech. In a
/// row: chords the network half hears score under the quiet mark for a few frames at a time;
/// counted wherever they came, such frames ended the opening of 2 of 20 fresh files of the
/// held-out kind at 8 kHz (`heldout_music.py --seed 31337 --files 20`) within their first
/// second, and the next chord started speech. No figure of `benches/vad_accuracy.sh` changed;
/// the first words of three of its noisy calls were emitted 60 to 280 ms later.
const OPENING_QUIET_FRAMES: u32 = 16;

/// A frame is quiet, for the end of the opening, when the network scores it this far below the
/// threshold (under 0.3 at the default sensitivity; at most 0.4 of the threshold below it, so
/// that a high sensitivity keeps a margin to end on) or it is below the level floor: a talker's
/// pause, where the network is sure. Music between the notes it calls voiced (a struck note's
/// fading tail, a held tone) scores just under the threshold instead: counted as quiet, 256 ms
/// of such a tail ended the opening of one of the corpus's music files at 8 kHz, and the next
/// note started speech as if over silence (`benches/vad_accuracy.sh`: 6 false starts an hour on
/// its music at 8 kHz, none with this; any margin from 0.1 to 0.35 gave the same tables).
const OPENING_QUIET_MARGIN: f32 = 0.2;

/// Whether a frame the network scored `score` (at sensitivity `threshold`), of `energy` (the
/// sum of its squared samples), is quiet for the end of the opening (see
/// [`OPENING_QUIET_MARGIN`]).
pub(super) fn quiet(score: f32, threshold: f32, energy: i64) -> bool {
    score < threshold - OPENING_QUIET_MARGIN.min(threshold * 0.4) || energy < super::FLOOR_ENERGY
}

/// See [`OPENING_QUIET_FRAMES`]: 125 frames, 2 s. Music that played from the start has shown
/// itself by then (held notes), and a call whose first seconds are voiced throughout (a talker
/// without a pause, a line whose noise the network hears as voice) is not held back longer.
const OPENING_MAX_FRAMES: u32 = 125;

/// Held tones in an opening that lasted [`OPENING_MAX_FRAMES`] (frames the same as 64 ms before
/// with a pitch-check peak of 0.4 or more, audible, voiced or not) that make it a sure sign of
/// music: a quarter second's worth in its 2 s. Most false starts left on fresh music of the
/// held-out kind came just after such an opening, whose notes and chords the network half
/// heard without a quarter second of quiet, and whose held frames were scattered (25 to 46 of
/// them, never 16 in one second as [`SURE_MUSIC_FRAMES`] asks), where a talker's vowels hold
/// still for a few frames in 2 s. With this, `benches/vad_fresh_music.sh` (seeds 4242 9090
/// 31337 2718, 160 minutes a rate): 5 / 2 starts to 2 / 0 (8 / 16 kHz), and 0 / 0 on two
/// sets made after it (1111 2222); nothing on the bench's corpus changed.
const OPENING_HELD_FRAMES: u32 = 16;

/// Over music, speech starts only once the voiced run lasts this many frames (352 ms) and passes
/// [`MusicCheck::voice_over`].
pub(super) const RUN_FRAMES: u64 = 22;

/// See [`MusicCheck::voice_over`]: at most this many steady frames in the run's last
/// [`RUN_FRAMES`].
const RUN_STEADY: u32 = 1;

/// See [`MusicCheck::voice_over`]: at least this many periodic frames in the run's last
/// [`RUN_FRAMES`]: a voice has one pitch at a time, where the mixed pitches of chords and
/// strummed strings blur the autocorrelation.
const RUN_PERIODIC: u32 = 10;

/// See [`MusicCheck::voice_over`]: the standard deviation of the frame levels over the run's
/// last [`RUN_FRAMES`] around their straight-line trend, in dB, at least: syllables and the
/// gaps between them, where a held chord or a bowed phrase keeps its level and a struck or
/// plucked note fades along a straight line in dB. The trend is taken out because such a note's
/// fade alone spread its levels enough to pass; without it, 1 false start in 10 minutes of the
/// corpus's music at 16 kHz, none with it, and no change in onsets (any threshold from 1 to
/// 2 dB gave the same).
const RUN_LEVEL_SPREAD_DB: f32 = 2.0;

/// See [`MusicCheck::voice_over`]: a run over music with a steady frame among its last
/// [`RUN_FRAMES`] must be this much louder (the mean of its frame levels, in dB) than the
/// [`LIFT_BEFORE_FRAMES`] before them. A voice adds itself to the music; a melody line that
/// holds a note over the same accompaniment does not raise the level. Any lift from 3.5 to
/// 6 dB gave the same false starts and onsets in `benches/vad_accuracy.sh`.
const LIFT_DB: f32 = 4.0;

/// See [`LIFT_DB`]: the frames (about 1 s) before the run's last [`RUN_FRAMES`] that its level
/// is compared with.
const LIFT_BEFORE_FRAMES: usize = 64;

/// See [`MusicCheck::rose_at_onset`]: a voiced run's first frames, how many are compared with
/// the frames before it.
const ONSET_RISE_FRAMES: usize = 3;

/// See [`MusicCheck::rose_at_onset`]: the frames before a voiced run that its first frames are
/// compared with (128 ms).
const ONSET_BEFORE_FRAMES: usize = 8;

/// See [`MusicCheck::rose_at_onset`]: how much louder, in dB.
const ONSET_RISE_DB: f32 = 6.0;

/// The frame levels kept: the run's last [`RUN_FRAMES`] and the [`LIFT_BEFORE_FRAMES`] before.
const LEVEL_HISTORY: usize = RUN_FRAMES as usize + LIFT_BEFORE_FRAMES;

/// Whether music is playing and what the last [`RUN_FRAMES`] frames were like.
#[derive(Debug, Clone, Copy)]
pub(super) struct MusicCheck {
    /// One bit per frame, newest in bit 0: steady and voiced.
    steady_voiced: u64,
    /// One bit per frame, newest in bit 0: a new note the network did not call voiced.
    quiet_notes: u64,
    /// One bit per frame, newest in bit 0: a held tone the network does not call voiced: a
    /// note or a chord held (the held-note check's [`Held::sustained`]), audible (at least the
    /// level floor) and not voiced.
    tones: u64,
    /// One bit per frame, newest in bit 0: a struck tone ([`STRUCK_FALL_DB`]).
    struck: u64,
    /// Frames since the last attack ([`STRUCK_ATTACK_DB`], saturating).
    since_attack: u32,
    /// Frames since the last sure sign of music (saturating).
    since_sure: u32,
    /// Quiet frames in a row, for [`OPENING_QUIET_FRAMES`]; it stops counting once it gets
    /// there.
    quiet: u32,
    /// Held tones in the call's opening, for [`OPENING_HELD_FRAMES`].
    opening_held: u32,
    /// Frames since the call began (saturating), for [`OPENING_MAX_FRAMES`].
    frames: u32,
    /// The level (dB) of the last [`LEVEL_HISTORY`] frames, a ring; `next` is the oldest.
    levels: [f32; LEVEL_HISTORY],
    next: usize,
}

impl MusicCheck {
    pub(super) fn new() -> MusicCheck {
        MusicCheck {
            steady_voiced: 0,
            quiet_notes: 0,
            tones: 0,
            struck: 0,
            since_attack: u32::MAX,
            since_sure: u32::MAX,
            quiet: 0,
            opening_held: 0,
            frames: 0,
            levels: [0.0; LEVEL_HISTORY],
            next: 0,
        }
    }

    /// Records one detector frame: what the held-note check made of it, whether it was voiced,
    /// whether it was quiet (see [`OPENING_QUIET_MARGIN`]), and its energy (the sum of its
    /// squared samples).
    pub(super) fn mark(&mut self, held: Held, voiced: bool, quiet: bool, energy: i64) {
        self.levels[self.next] = level_db(energy);
        self.next = (self.next + 1) % LEVEL_HISTORY;
        self.steady_voiced = (self.steady_voiced << 1) | u64::from(held.steady && voiced);
        self.quiet_notes = (self.quiet_notes << 1) | u64::from(held.new_note && !voiced);
        let audible = energy >= super::FLOOR_ENERGY;
        let tone = held.sustained && !voiced && audible;
        self.tones = (self.tones << 1) | u64::from(tone);
        let attack = self.level(0) - self.level(1) >= STRUCK_ATTACK_DB;
        self.since_attack = if attack { 0 } else { self.since_attack.saturating_add(1) };
        let struck = tone && self.since_attack < STRUCK_AFTER_FRAMES && self.level(STRUCK_SPAN) - self.level(0) >= STRUCK_FALL_DB;
        self.struck = (self.struck << 1) | u64::from(struck);
        let opening = self.opening();
        if opening {
            self.opening_held += u32::from(held.sustained && audible);
        }
        if self.quiet < OPENING_QUIET_FRAMES {
            self.quiet = if quiet { self.quiet + 1 } else { 0 };
        }
        self.frames = self.frames.saturating_add(1);
        // The opening ended with this frame, at its limit rather than on a pause.
        let ended_busy = opening && !self.opening() && self.quiet < OPENING_QUIET_FRAMES;
        let sure = self.steady_voiced.count_ones() >= SURE_MUSIC_FRAMES
            || self.quiet_notes.count_ones() >= SURE_NEW_NOTES
            || self.struck.count_ones() >= SURE_STRUCK_FRAMES
            || (ended_busy && self.opening_held >= OPENING_HELD_FRAMES);
        self.since_sure = if sure { 0 } else { self.since_sure.saturating_add(1) };
    }

    /// Whether music is playing: a few steady voiced frames in the last second, a sure sign of
    /// music in the [`MUSIC_MEMORY_FRAMES`] before, or the call's opening.
    pub(super) fn playing(&self) -> bool {
        self.steady_voiced.count_ones() >= MUSIC_FRAMES || self.since_sure <= MUSIC_MEMORY_FRAMES || self.opening()
    }

    /// Whether the call is still in its opening: no [`OPENING_QUIET_FRAMES`] of quiet in a row
    /// yet, and fewer than [`OPENING_MAX_FRAMES`] frames.
    fn opening(&self) -> bool {
        self.quiet < OPENING_QUIET_FRAMES && self.frames < OPENING_MAX_FRAMES
    }

    /// Whether held tones the network does not call voiced (a hum, or notes or chords it does
    /// not hear) filled [`TONE_FRAMES`] of the last second. A voiced run that follows them, or
    /// comes over them, may be the next note of that music, one the network does hear: outside
    /// music such a run starts speech up to [`JUDGE_FRAMES`] later, once the held-note check has
    /// judged its frames.
    pub(super) fn after_tone(&self) -> bool {
        self.tones.count_ones() >= TONE_FRAMES
    }

    /// Steady voiced frames among the last `frames` (at most 64).
    pub(super) fn steady_frames(&self, frames: u32) -> u32 {
        let mask = if frames >= 64 { u64::MAX } else { (1u64 << frames) - 1 };
        (self.steady_voiced & mask).count_ones()
    }

    /// Whether a voiced run of `run` frames, with `periodic` one bit per frame of it (newest in
    /// bit 0), is a voice over the music rather than the music: at least [`RUN_FRAMES`] long,
    /// and over its last [`RUN_FRAMES`] frames not held notes (at most [`RUN_STEADY`] steady
    /// frames, and with one, [`LIFT_DB`] louder than the second before), pitched (at least
    /// [`RUN_PERIODIC`] periodic frames: a voice has one pitch at a time, a chord several) and
    /// moving in level as syllables do (a spread around the level's trend of at least
    /// [`RUN_LEVEL_SPREAD_DB`]).
    pub(super) fn voice_over(&self, run: u64, periodic: u64) -> bool {
        let window = (1u64 << RUN_FRAMES) - 1;
        let steady = self.steady_frames(RUN_FRAMES as u32);
        run >= RUN_FRAMES
            && steady <= RUN_STEADY
            && (periodic & window).count_ones() >= RUN_PERIODIC
            && self.level_spread() >= RUN_LEVEL_SPREAD_DB
            && (steady == 0 || self.lift() >= LIFT_DB)
    }

    /// The level of the frame `back` frames before the latest (0 to [`LEVEL_HISTORY`] - 1), in dB.
    pub(super) fn level(&self, back: usize) -> f32 {
        self.levels[(self.next + LEVEL_HISTORY - 1 - back) % LEVEL_HISTORY]
    }

    /// The mean of the last [`RUN_FRAMES`] frame levels, in dB.
    fn mean_level(&self) -> f32 {
        (0..RUN_FRAMES as usize).map(|back| self.level(back)).sum::<f32>() / RUN_FRAMES as f32
    }

    /// The standard deviation of the last [`RUN_FRAMES`] frame levels around their least-squares
    /// straight line, in dB.
    fn level_spread(&self) -> f32 {
        let n = RUN_FRAMES as usize;
        let mean = self.mean_level();
        let middle = (n - 1) as f32 / 2.0;
        // Oldest first: frame `i` of the window is `n - 1 - i` back.
        let point = |i: usize| (i as f32 - middle, self.level(n - 1 - i) - mean);
        let (mut sxy, mut sxx) = (0.0f32, 0.0f32);
        for (x, y) in (0..n).map(point) {
            sxy += x * y;
            sxx += x * x;
        }
        let slope = sxy / sxx;
        let squares: f32 = (0..n).map(point).map(|(x, y)| (y - slope * x) * (y - slope * x)).sum();
        (squares / n as f32).sqrt()
    }

    /// How much louder the last [`RUN_FRAMES`] frames are than the audible ones among the
    /// [`LIFT_BEFORE_FRAMES`] before them (as many as the call has had), in dB of their mean
    /// levels. Silent frames (a rest in the music) are left out: at 0 dB they would pull the
    /// mean down and let any run after a rest pass. With no audible frame before, unbounded.
    fn lift(&self) -> f32 {
        let run = RUN_FRAMES as usize;
        let before = (self.frames as usize).saturating_sub(run).min(LIFT_BEFORE_FRAMES);
        // Audible: at least the `vad`'s level floor (-55 dBFS), below which no frame is voiced.
        let floor = level_db(super::FLOOR_ENERGY);
        let (sum, audible) = (run..run + before)
            .map(|back| self.level(back))
            .filter(|&level| level >= floor)
            .fold((0.0f32, 0u32), |(sum, n), level| (sum + level, n + 1));
        if audible == 0 {
            return f32::INFINITY;
        }
        self.mean_level() - sum / audible as f32
    }

    /// Where a voice over the music began, in frames before the latest (0 to [`RUN_FRAMES`] - 1),
    /// for a run that started in the music itself: the first of the last [`RUN_FRAMES`] frames
    /// louder than their mean.
    pub(super) fn rise(&self) -> u64 {
        let n = RUN_FRAMES as usize;
        let mean = self.mean_level();
        // Oldest first: the frame `n - 1` back is the run window's first.
        let first = (0..n).find(|k| self.level(n - 1 - k) >= mean).unwrap_or(n - 1);
        (n - 1 - first) as u64
    }

    /// Whether a voiced run of `run` frames (at most 64, a second) rose over the music at its
    /// onset: its first [`ONSET_RISE_FRAMES`] frames [`ONSET_RISE_DB`] louder than the audible
    /// ones among the [`ONSET_BEFORE_FRAMES`] before it (or none of those audible), and no note
    /// held in it (4 steady frames in a row). Such a run is a voice from its first frame, though
    /// its own held vowels kept it from passing [`MusicCheck::voice_over`] sooner; one that began
    /// in the music rises later, at [`MusicCheck::rise`]. A longer run is not judged: the
    /// steady frames are kept for a second only.
    pub(super) fn rose_at_onset(&self, run: u64) -> bool {
        let run = run as usize;
        const _: () = assert!(64 + ONSET_BEFORE_FRAMES <= LEVEL_HISTORY, "the levels before a run are kept");
        if !(ONSET_RISE_FRAMES..=64).contains(&run) {
            return false;
        }
        let first = (run - ONSET_RISE_FRAMES..run).map(|back| self.level(back)).sum::<f32>() / ONSET_RISE_FRAMES as f32;
        let floor = level_db(super::FLOOR_ENERGY);
        let (sum, audible) = (run..run + ONSET_BEFORE_FRAMES)
            .map(|back| self.level(back))
            .filter(|&level| level >= floor)
            .fold((0.0f32, 0u32), |(sum, n), level| (sum + level, n + 1));
        let window = if run == 64 { u64::MAX } else { (1u64 << run) - 1 };
        let steady = self.steady_voiced & window;
        let held = steady & (steady >> 1) & (steady >> 2) & (steady >> 3);
        held == 0 && (audible == 0 || first - sum / audible as f32 >= ONSET_RISE_DB)
    }
}

/// A detector frame's level in dB (of its mean square, plus one), from its `energy` (the sum of
/// its squared samples).
pub(super) fn level_db(energy: i64) -> f32 {
    10.0 * (energy as f32 / DETECTOR_FRAME as f32 + 1.0).log10()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quiet_is_well_below_the_threshold_or_below_the_floor() {
        use super::quiet;
        let loud = super::super::FLOOR_ENERGY * 100;
        // At the default sensitivity: under 0.3.
        assert!(quiet(0.29, 0.5, loud));
        assert!(!quiet(0.31, 0.5, loud), "just under the threshold is a note's tail, not quiet");
        assert!(quiet(0.49, 0.5, super::super::FLOOR_ENERGY - 1), "below the level floor, whatever the score");
        // A high sensitivity keeps a margin of 0.4 of its threshold: under 0.06 at 0.1.
        assert!(quiet(0.05, 0.1, loud));
        assert!(!quiet(0.07, 0.1, loud));
    }

    use super::*;

    /// The energy of a frame at `db` dBFS (RMS).
    fn energy(db: f32) -> i64 {
        let rms = 32768.0 * 10f32.powf(db / 20.0);
        (rms * rms * DETECTOR_FRAME as f32) as i64
    }

    const STEADY: Held = Held { steady: true, new_note: false, sustained: true };
    const PLAIN: Held = Held { steady: false, new_note: false, sustained: false };
    const NEW_NOTE: Held = Held { steady: true, new_note: true, sustained: true };

    /// A check past the call's opening: a quarter second of silence.
    fn opened() -> MusicCheck {
        let mut music = MusicCheck::new();
        assert!(music.playing(), "a call opens as music");
        for _ in 0..OPENING_QUIET_FRAMES {
            music.mark(PLAIN, false, true, 0);
        }
        assert!(!music.playing(), "a quarter second of silence is not music");
        music
    }

    #[test]
    fn frames_just_under_the_threshold_do_not_end_the_opening() {
        // A struck note's tail: not voiced, but not quiet either, for half a second.
        let mut music = MusicCheck::new();
        for _ in 0..2 * OPENING_QUIET_FRAMES {
            music.mark(PLAIN, false, false, energy(-30.0));
        }
        assert!(music.playing(), "music's tail between its notes is still the opening");
        for _ in 0..OPENING_QUIET_FRAMES {
            music.mark(PLAIN, false, true, energy(-30.0));
        }
        assert!(!music.playing(), "a quarter second the network is sure of ends it");
    }

    #[test]
    fn the_opening_ends_after_a_quarter_second_of_quiet_in_a_row() {
        // Chords the network half hears: a few frames under the quiet mark at a time.
        let mut music = MusicCheck::new();
        for i in 0..OPENING_MAX_FRAMES - 1 {
            music.mark(PLAIN, false, i % 8 < 6, energy(-30.0));
        }
        assert!(music.playing(), "six quiet frames out of eight, for two seconds less a frame");
        let mut pause = MusicCheck::new();
        for i in 0..40 {
            pause.mark(PLAIN, i < 20, i >= 24, energy(-30.0));
        }
        assert!(!pause.playing(), "a word, then 16 quiet frames in a row");
    }

    #[test]
    fn an_opening_that_lasted_two_seconds_and_held_tones_is_music() {
        // Held the same as 64 ms before, not steady: a chord, or a vowel.
        const SUSTAINED: Held = Held { steady: false, new_note: false, sustained: true };
        // Chords the network half hears: never a quarter second of quiet in a row, and a held
        // tone every sixth frame (21 in the two seconds).
        let mut music = MusicCheck::new();
        for i in 0..OPENING_MAX_FRAMES {
            music.mark(if i % 6 == 0 { SUSTAINED } else { PLAIN }, false, i % 8 < 6, energy(-30.0));
        }
        assert!(music.playing(), "an opening of chords");
        for _ in 0..MUSIC_MEMORY_FRAMES {
            music.mark(PLAIN, false, false, energy(-30.0));
        }
        assert!(music.playing(), "10 s on, as after any sure sign");
        // A talker without a pause holds a vowel now and then; 15 such frames in the two
        // seconds are not yet music.
        let mut talker = MusicCheck::new();
        for i in 0..OPENING_MAX_FRAMES {
            talker.mark(if i % 8 == 0 && i < 120 { SUSTAINED } else { PLAIN }, true, false, energy(-30.0));
        }
        assert_eq!(talker.opening_held, OPENING_HELD_FRAMES - 1);
        assert!(!talker.playing(), "a talker");
        // Held tones in an opening that a pause ended count for nothing.
        let mut paused = MusicCheck::new();
        for i in 0..OPENING_MAX_FRAMES {
            paused.mark(if i < 40 { SUSTAINED } else { PLAIN }, false, (40..56).contains(&i), energy(-30.0));
        }
        assert!(!paused.playing(), "a hum, then a pause");
    }

    #[test]
    fn the_opening_ends_after_a_quarter_second_without_voice_or_two_seconds_at_most() {
        let mut music = MusicCheck::new();
        for _ in 0..OPENING_MAX_FRAMES - 1 {
            music.mark(PLAIN, true, false, energy(-20.0));
        }
        assert!(music.playing(), "voiced from the start: still the opening");
        music.mark(PLAIN, true, false, energy(-20.0));
        assert!(!music.playing(), "two seconds: the opening is over");
    }

    #[test]
    fn held_notes_are_music_and_a_sure_sign_lasts_through_a_rest() {
        let mut music = opened();
        music.mark(STEADY, true, false, energy(-20.0));
        assert!(!music.playing(), "one steady frame is not music");
        music.mark(STEADY, true, false, energy(-20.0));
        assert!(music.playing(), "two are");
        // Two steady frames leave the music on for a second only.
        for _ in 0..64 {
            music.mark(PLAIN, false, true, 0);
        }
        assert!(!music.playing(), "a second after two steady frames");
        // A held note (a second of steady voiced frames), then a rest of 9 s: still music.
        for _ in 0..64 {
            music.mark(STEADY, true, false, energy(-20.0));
        }
        for _ in 0..(64 + 9 * 62) {
            music.mark(PLAIN, false, true, 0);
        }
        assert!(music.playing(), "a 9 s rest after a held note");
        for _ in 0..62 * 2 {
            music.mark(PLAIN, false, true, 0);
        }
        assert!(!music.playing(), "11 s after the last held note");
    }

    #[test]
    fn a_tune_the_network_does_not_hear_as_voice_is_music_and_one_hum_is_not() {
        let mut music = opened();
        // A hum: steady and never voiced, always the same note.
        for i in 0..200 {
            music.mark(if i == 0 { NEW_NOTE } else { STEADY }, false, false, energy(-35.0));
        }
        assert!(!music.playing(), "a hum is not music");
        // Notes that change every 300 ms.
        for i in 0..64 {
            music.mark(if i % 19 == 0 { NEW_NOTE } else { STEADY }, false, false, energy(-30.0));
        }
        assert!(music.playing(), "a tune of unvoiced notes is music");
    }

    #[test]
    fn a_voice_over_music_moves_in_level_has_a_pitch_and_holds_no_note() {
        let all_periodic = u64::MAX;
        // Syllables: 5 frames at -20 dBFS, 3 at -30, repeated.
        let syllables = |music: &mut MusicCheck, held: Held| {
            for i in 0..RUN_FRAMES {
                music.mark(held, true, false, energy(if i % 8 < 5 { -20.0 } else { -30.0 }));
            }
        };
        let mut music = opened();
        syllables(&mut music, PLAIN);
        assert!(music.voice_over(RUN_FRAMES, all_periodic));
        assert!(!music.voice_over(RUN_FRAMES - 1, all_periodic), "a run shorter than 352 ms");
        assert!(!music.voice_over(RUN_FRAMES, 0x1ff), "9 periodic frames: chords, not a voice");
        // The same level throughout: a chord held, or a bowed note.
        let mut flat = opened();
        for _ in 0..RUN_FRAMES {
            flat.mark(PLAIN, true, false, energy(-20.0));
        }
        assert!(!flat.voice_over(RUN_FRAMES, all_periodic), "a level that does not move");
        // A struck note fading 1 dB a frame: its levels spread (6.3 dB), but along a line.
        let mut fading = opened();
        for i in 0..RUN_FRAMES {
            fading.mark(PLAIN, true, false, energy(-10.0 - i as f32));
        }
        assert!(fading.level_spread() < 0.1, "{}", fading.level_spread());
        assert!(!fading.voice_over(RUN_FRAMES, all_periodic), "a note that fades");
        // Held notes in the run.
        let mut held = opened();
        syllables(&mut held, STEADY);
        assert!(!held.voice_over(RUN_FRAMES, all_periodic), "held notes");
    }

    #[test]
    fn a_run_over_music_holding_a_note_is_a_voice_only_if_it_is_louder_than_the_music_before() {
        let all_periodic = u64::MAX;
        // A second of the accompaniment at -26 dBFS, then a run that moves as syllables do,
        // one of its frames steady, at `loud` and 10 dB under it.
        let run = |loud: f32| {
            let mut music = opened();
            for _ in 0..LIFT_BEFORE_FRAMES {
                music.mark(PLAIN, true, false, energy(-26.0));
            }
            for i in 0..RUN_FRAMES {
                let held = if i == 10 { STEADY } else { PLAIN };
                music.mark(held, true, false, energy(if i % 8 < 5 { loud } else { loud - 10.0 }));
            }
            assert_eq!(music.steady_frames(RUN_FRAMES as u32), 1);
            music
        };
        // The run's mean is loud - 3.2 dB (15 frames at `loud`, 7 at 10 dB under).
        assert!(run(-16.0).voice_over(RUN_FRAMES, all_periodic), "6.8 dB over the second before: a voice");
        assert!(!run(-20.0).voice_over(RUN_FRAMES, all_periodic), "2.8 dB over it: the melody itself");
        // Without the steady frame the same quiet run passes: the lift is asked only of a run
        // that holds a note.
        let mut plain = opened();
        for _ in 0..LIFT_BEFORE_FRAMES {
            plain.mark(PLAIN, true, false, energy(-26.0));
        }
        for i in 0..RUN_FRAMES {
            plain.mark(PLAIN, true, false, energy(if i % 8 < 5 { -20.0 } else { -30.0 }));
        }
        assert!(plain.voice_over(RUN_FRAMES, all_periodic));
        // A rest in the music just before the run does not count: at 0 dB its frames would
        // pull the second before down by 20 dB and let the melody through.
        let mut rest = opened();
        for i in 0..LIFT_BEFORE_FRAMES {
            rest.mark(PLAIN, true, false, if i < 40 { energy(-26.0) } else { 0 });
        }
        for i in 0..RUN_FRAMES {
            let held = if i == 10 { STEADY } else { PLAIN };
            rest.mark(held, true, false, energy(if i % 8 < 5 { -20.0 } else { -30.0 }));
        }
        assert!(rest.lift() < LIFT_DB, "{}", rest.lift());
        assert!(!rest.voice_over(RUN_FRAMES, all_periodic), "the melody after a rest");
    }

    #[test]
    fn a_quarter_second_of_held_tones_in_the_last_second_is_after_tones() {
        let mut music = MusicCheck::new();
        let audible = energy(-30.0);
        for _ in 0..TONE_FRAMES - 1 {
            music.mark(STEADY, false, false, audible);
        }
        assert!(!music.after_tone(), "15 frames of a held tone");
        music.mark(STEADY, false, false, audible);
        assert!(music.after_tone(), "16 frames of a held tone");
    }

    #[test]
    fn voice_silence_and_sounds_that_hold_no_note_are_not_tones_and_tones_age_out() {
        let audible = energy(-30.0);
        let count = |frame: fn(&mut MusicCheck)| {
            let mut music = MusicCheck::new();
            for _ in 0..64 {
                frame(&mut music);
            }
            music.after_tone()
        };
        assert!(!count(|m| m.mark(STEADY, true, false, energy(-30.0))), "voiced: a voice or a note it hears");
        assert!(!count(|m| m.mark(STEADY, false, false, 0)), "under the level floor");
        assert!(!count(|m| m.mark(PLAIN, false, false, energy(-30.0))), "no note held: noise, babble");
        let mut music = MusicCheck::new();
        for _ in 0..TONE_FRAMES {
            music.mark(STEADY, false, false, audible);
        }
        for _ in 0..64 - TONE_FRAMES {
            music.mark(PLAIN, false, false, audible);
        }
        assert!(music.after_tone(), "the tone is still within the second");
        music.mark(PLAIN, false, false, audible);
        assert!(!music.after_tone(), "its first frame is more than a second back");
    }

    #[test]
    fn notes_ringing_out_are_music_and_a_hum_or_a_fading_noise_is_not() {
        // A plucked string ringing out: a held tone, not voiced, 0.2 dB quieter each frame. Its
        // first 4 frames come after silence, so they are not quieter than 64 ms before.
        let ringing = |i: u32| energy(-30.0 - 0.2 * i as f32);
        let mut music = opened();
        for i in 0..STRUCK_SPAN as u32 + SURE_STRUCK_FRAMES - 1 {
            music.mark(STEADY, false, false, ringing(i));
        }
        assert!(!music.playing(), "15 frames of it");
        music.mark(STEADY, false, false, ringing(STRUCK_SPAN as u32 + SURE_STRUCK_FRAMES - 1));
        assert!(music.playing(), "16 frames of it are music");
        // A hum holds its level; a noise that fades holds no note; a note the network calls
        // voiced is judged by the voice's rules.
        for (held, voiced, fall) in [(STEADY, false, 0.0), (PLAIN, false, 0.2), (STEADY, true, 0.2)] {
            let mut other = opened();
            for i in 0..200 {
                other.mark(held, voiced, false, energy(-30.0 - fall * (i % 40) as f32));
            }
            assert_eq!(other.struck, 0, "{held:?} voiced {voiced}, {fall} dB a frame");
        }
        // A hum whose level wanders, as two hums beating do (6 dB over 2 s), or jitters by up
        // to 1 dB from frame to frame, falls in many frames but was never struck: it rises as
        // smoothly as it falls. The first second (its own onset after silence) is left out.
        let wandering = |name: &str, mut level: Box<dyn FnMut(u32) -> f32>| {
            let mut hum = opened();
            for i in 0..64 {
                hum.mark(STEADY, false, false, energy(level(i)));
            }
            let mut struck = 0;
            for i in 64..1000 {
                hum.mark(STEADY, false, false, energy(level(i)));
                struck += hum.struck & 1;
            }
            assert_eq!(struck, 0, "a {name} hum");
            assert!(!hum.playing(), "a {name} hum is not music");
        };
        wandering("beating", Box::new(|i| -30.0 + 3.0 * (std::f32::consts::TAU * i as f32 / 125.0).sin()));
        let mut jitter = crate::processor::testkit::signal::Rng(7);
        wandering("jittering", Box::new(move |_| -30.0 + jitter.gauss() as f32 * 0.5));
    }

    #[test]
    fn a_run_that_rose_over_the_music_at_its_onset_is_a_voice_from_there_unless_it_holds_a_note() {
        // A second of music at -30 dBFS, then a run of 30 frames 10 dB louder from its first,
        // with a steady frame at each frame `held` returns true for.
        let run = |held: fn(u64) -> bool| {
            let mut music = opened();
            for _ in 0..64 {
                music.mark(PLAIN, true, false, energy(-30.0));
            }
            for i in 0..30 {
                music.mark(if held(i) { STEADY } else { PLAIN }, true, false, energy(-20.0));
            }
            music
        };
        assert!(run(|_| false).rose_at_onset(30));
        assert!(!run(|_| false).rose_at_onset(40), "a run that began in the music 10 frames earlier");
        assert!(run(|i| (10..13).contains(&i)).rose_at_onset(30), "a vowel held for 3 frames");
        assert!(!run(|i| (10..14).contains(&i)).rose_at_onset(30), "a note held for 4: music");
        // After a rest, any run rose at its onset.
        let mut rest = opened();
        for _ in 0..30 {
            rest.mark(PLAIN, true, false, energy(-40.0));
        }
        assert!(rest.rose_at_onset(30));
        assert!(!rest.rose_at_onset(2), "too short to tell");
    }

    #[test]
    fn a_rise_over_the_music_is_found() {
        let mut music = opened();
        for _ in 0..40 {
            music.mark(PLAIN, true, false, energy(-30.0));
        }
        // A voice 10 dB over it, for the last 9 frames.
        for _ in 0..9 {
            music.mark(PLAIN, true, false, energy(-20.0));
        }
        assert_eq!(music.rise(), 8, "the voice began 8 frames before the latest");
    }
}
