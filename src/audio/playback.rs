//! Decoded audio played into a call one frame at a time: the player behind the `play` processor
//! and the control API's streams and DTMF tones.
//!
//! A [`Playback`] holds audio already at the call's rate (a WAV file decoded with [`load_wav`]
//! or [`load_wav_bytes`], or rendered tones), shared read-only, and its position in it. Each
//! [`play_into`](Playback::play_into) writes the next samples into one frame, either mixed into
//! what the frame holds or replacing it ([`Blend`]), with a linear gain.
//!
//! [`load_wav`]: super::load_wav
//! [`load_wav_bytes`]: super::load_wav_bytes

use std::sync::Arc;

/// How a frame of the audio meets what the frame already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blend {
    /// Added to it, saturating.
    Mix,
    /// Written over it; after the end of the last play, the rest of the frame is silence.
    Replace,
}

/// What one frame of playback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Played {
    /// Samples of the audio written from the frame's start: the whole frame, or fewer when the
    /// last play ended inside it.
    pub samples: usize,
    /// Whether the last play ended in this frame (or there was nothing to play).
    pub ended: bool,
}

/// Audio played into a call frame by frame: a shared buffer of samples and its position in it.
///
/// # Guarantees
///
/// * The samples come out exactly and in order, one frame per call; with `loops` > 1 (or 0:
///   until stopped) the plays follow each other back to back, with no gap, across frame
///   boundaries.
/// * The frame the last play ends in is written as far as the audio goes and reports the end;
///   with [`Blend::Replace`] the rest of that frame is silence, with [`Blend::Mix`] it is left
///   as it was. Audio with no samples ends at once and writes nothing.
/// * The gain (1.0: none) is applied per sample with rounding, and it and the mixing saturate
///   instead of wrapping.
/// * Nothing here allocates or locks, and dropping a player frees its audio only when it held
///   the last reference: a player of audio whose owner keeps a clone of the `Arc` can be made,
///   played and dropped on a media thread.
#[derive(Debug, Clone)]
pub struct Playback {
    audio: Arc<[i16]>,
    loops: u32,
    gain: f32,
    /// The next sample to play.
    cursor: usize,
    /// Plays still to complete; `None` for until stopped.
    plays_left: Option<u32>,
    /// Samples played since the start (or the last restart), every loop counted.
    played: u64,
}

impl Playback {
    /// Plays `audio` `loops` times (0: until stopped) at linear `gain`, from its start.
    pub fn new(audio: Arc<[i16]>, loops: u32, gain: f32) -> Playback {
        Playback { audio, loops, gain, cursor: 0, plays_left: (loops > 0).then_some(loops), played: 0 }
    }

    /// The audio, as given.
    pub fn audio(&self) -> &[i16] {
        &self.audio
    }

    /// Starts over from the beginning, with all the plays again.
    pub fn restart(&mut self) {
        self.cursor = 0;
        self.plays_left = (self.loops > 0).then_some(self.loops);
        self.played = 0;
    }

    /// Samples played since the start (or the last [`restart`](Playback::restart)), every loop
    /// counted: what a barge-in reports as played.
    pub fn played(&self) -> u64 {
        self.played
    }

    /// Writes the next frame into `out`, blended with what it holds as `blend` says.
    pub fn play_into(&mut self, out: &mut [i16], blend: Blend) -> Played {
        if self.audio.is_empty() {
            return Played { samples: 0, ended: true };
        }
        let mut filled = 0;
        while filled < out.len() {
            let take = (out.len() - filled).min(self.audio.len() - self.cursor);
            let (dst, src) = (&mut out[filled..filled + take], &self.audio[self.cursor..self.cursor + take]);
            match (blend, self.gain == 1.0) {
                (Blend::Replace, true) => dst.copy_from_slice(src),
                (Blend::Replace, false) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = scale(*s, self.gain)),
                (Blend::Mix, true) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.saturating_add(*s)),
                (Blend::Mix, false) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.saturating_add(scale(*s, self.gain))),
            }
            filled += take;
            self.played += take as u64;
            self.cursor += take;
            if self.cursor == self.audio.len() {
                self.cursor = 0;
                if let Some(left) = self.plays_left.as_mut() {
                    *left -= 1;
                    if *left == 0 {
                        if blend == Blend::Replace {
                            out[filled..].fill(0);
                        }
                        return Played { samples: filled, ended: true };
                    }
                }
            }
        }
        Played { samples: filled, ended: false }
    }
}

/// `sample` times `gain`, rounded and saturated.
fn scale(sample: i16, gain: f32) -> i16 {
    (f32::from(sample) * gain).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_its_loops_then_ends_and_mixes_or_replaces() {
        let audio: Arc<[i16]> = (1..=5).collect::<Vec<i16>>().into();
        let mut a = Playback::new(audio.clone(), 2, 1.0);
        let mut out = [100i16; 4];
        assert_eq!(a.play_into(&mut out, Blend::Mix), Played { samples: 4, ended: false });
        assert_eq!(out, [101, 102, 103, 104]);
        let mut out = [0i16; 4];
        assert_eq!(a.play_into(&mut out, Blend::Replace), Played { samples: 4, ended: false });
        assert_eq!(out, [5, 1, 2, 3]);
        let mut out = [9i16; 4];
        assert_eq!(a.play_into(&mut out, Blend::Replace), Played { samples: 2, ended: true }, "the second play ends in this frame");
        assert_eq!(out, [4, 5, 0, 0]);
        let mut out = [9i16; 4];
        a.restart();
        assert_eq!(a.play_into(&mut out, Blend::Mix), Played { samples: 4, ended: false });
        assert_eq!(out, [10, 11, 12, 13], "from the beginning again");

        let mut forever = Playback::new(audio, 0, 0.5);
        for _ in 0..100 {
            let mut out = [0i16; 4];
            assert!(!forever.play_into(&mut out, Blend::Mix).ended);
            assert!(out.iter().all(|s| (0..=3).contains(s)), "{out:?}");
        }
    }

    #[test]
    fn the_last_frame_of_a_mix_is_left_as_it_was_after_the_end() {
        let mut a = Playback::new(vec![1i16; 6].into(), 1, 1.0);
        let mut out = [7i16; 4];
        a.play_into(&mut out, Blend::Mix);
        assert_eq!(a.play_into(&mut out, Blend::Mix), Played { samples: 2, ended: true });
        assert_eq!(out, [9, 9, 8, 8]);
        let mut empty = Playback::new(Vec::new().into(), 0, 1.0);
        let mut out = [7i16; 4];
        assert_eq!(empty.play_into(&mut out, Blend::Replace), Played { samples: 0, ended: true });
        assert_eq!(out, [7; 4], "nothing to play writes nothing");
    }

    #[test]
    fn gain_saturates_instead_of_wrapping() {
        let mut a = Playback::new(vec![30_000i16, -30_000].into(), 1, 2.0);
        let mut out = [0i16; 2];
        a.play_into(&mut out, Blend::Mix);
        assert_eq!(out, [32_767, -32_768]);
    }
}
