//! The conference's mixer: once per 20 ms cycle, on the members' media thread, it takes one
//! frame from every member's ring, sums them, and gives each member the sum minus its own.
//!
//! Allocation-free after [`Mixer::add`]: every buffer is sized when the mixer or a member is
//! added. A member whose call has ended is dropped at the next cycle (its rings are freed then,
//! as its call's are).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringbuf::traits::*;

use super::{ConferenceState, MixerMember, Recording};
use crate::resample::RATES;

/// The AGC keeps each mix's peaks at or below this (-1 dBFS).
const AGC_CEILING: f32 = 0.891 * 32767.0;

/// How fast the AGC's gain recovers after a loud frame: 6 dB per second, per 20 ms frame.
const AGC_RELEASE_PER_FRAME: f32 = 1.013_911_4; // 10^(6 / 20 / 50)

/// A gain that never amplifies: drops at once to keep a frame under [`AGC_CEILING`], recovers
/// by [`AGC_RELEASE_PER_FRAME`] per frame, ramped within the frame.
#[derive(Debug, Clone, Copy)]
struct Gain {
    gain: f32,
}

impl Default for Gain {
    fn default() -> Gain {
        Gain { gain: 1.0 }
    }
}

impl Gain {
    /// Writes `mix`, scaled by the gain, saturated, into `out`.
    fn apply(&mut self, mix: &[i32], out: &mut [i16]) {
        let peak = mix.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0) as f32;
        let fits = if peak > AGC_CEILING { AGC_CEILING / peak } else { 1.0 };
        let (start, end) = if fits < self.gain {
            // Attack: the whole frame at the gain that fits it.
            (fits, fits)
        } else {
            (self.gain, (self.gain * AGC_RELEASE_PER_FRAME).min(fits).min(1.0))
        };
        self.gain = end;
        if start >= 1.0 && end >= 1.0 {
            saturate(mix, out);
            return;
        }
        // A ramp from `start` to `end` in 16.16 fixed point (exact, and cheap per sample): every
        // gain on it is at most `end`, itself at most `fits`, so nothing clips.
        let (start, end) = ((start * 65536.0) as i64, (end * 65536.0) as i64);
        let step = (end - start) / mix.len() as i64;
        for (i, (o, m)) in out.iter_mut().zip(mix).enumerate() {
            let g = start + step * (i as i64 + 1);
            *o = ((i64::from(*m) * g + 32768) >> 16).clamp(-32768, 32767) as i16;
        }
    }
}

fn saturate(mix: &[i32], out: &mut [i16]) {
    for (o, m) in out.iter_mut().zip(mix) {
        *o = (*m).clamp(-32768, 32767) as i16;
    }
}

struct Slot {
    member: MixerMember,
    /// The member's frame of this cycle.
    frame: Vec<i16>,
    gain: Gain,
}

/// One conference's mixer (see `src/processor/conference/mixer.rs`).
pub struct Mixer {
    conference: Arc<ConferenceState>,
    frame: usize,
    agc: bool,
    slots: Vec<Slot>,
    sum: Vec<i32>,
    mix: Vec<i32>,
    out: Vec<i16>,
    mixed: Option<Recording>,
    mixed_gain: Gain,
    cycles: u64,
}

impl Mixer {
    /// A mixer for `conference`, writing its mixed recording to `mixed` when given.
    pub fn new(conference: Arc<ConferenceState>, mixed: Option<Recording>) -> Mixer {
        let rate = conference.settings().rate;
        debug_assert!(RATES.contains(&rate));
        let frame = (rate / crate::protocol::FRAMES_PER_SECOND) as usize;
        let agc = conference.settings().agc;
        let capacity = conference.settings().max_members;
        Mixer {
            conference,
            frame,
            agc,
            slots: Vec::with_capacity(capacity),
            sum: vec![0; frame],
            mix: vec![0; frame],
            out: vec![0; frame],
            mixed,
            mixed_gain: Gain::default(),
            cycles: 0,
        }
    }

    /// The conference it mixes.
    pub fn conference(&self) -> &Arc<ConferenceState> {
        &self.conference
    }

    /// Adds a member (allocates its frame buffer: call it off the per-frame path, when the
    /// member's call joins the media thread).
    pub fn add(&mut self, member: MixerMember) {
        self.slots.push(Slot { member, frame: vec![0; self.frame], gain: Gain::default() });
    }

    /// Takes the conference's mixed recording, when the member that started the conference
    /// reaches this thread after another member already made the mixer.
    pub fn set_recording(&mut self, mixed: Recording) {
        self.mixed.get_or_insert(mixed);
    }

    /// Members being mixed.
    pub fn members(&self) -> usize {
        self.slots.len()
    }

    /// Cycles mixed so far.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// Whether the mixer is done: the conference has closed (its last member's call ended and
    /// no new member can join this instance) and no member is left.
    pub fn is_done(&self) -> bool {
        self.slots.is_empty() && self.conference.is_closed()
    }

    /// One cycle: drops the members whose calls have ended, takes one frame from each of the
    /// others (the newest; silence when there is none), and gives each the sum of the others.
    pub fn mix(&mut self) {
        self.cycles += 1;
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].member.state.has_left() {
                // Frees the member's rings and finalizes its track: once, as its call ends.
                self.slots.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.sum.fill(0);
        let n = self.frame;
        for slot in &mut self.slots {
            let up = &mut slot.member.up;
            let waiting = up.occupied_len() / n;
            if waiting >= 1 {
                if waiting > 1 {
                    // The member ran two passes in one cycle (making up a backlog): keep its
                    // delay at one frame.
                    up.skip((waiting - 1) * n);
                    slot.member.state.skipped.fetch_add((waiting - 1) as u64, Ordering::Relaxed);
                }
                up.pop_slice(&mut slot.frame);
            } else {
                slot.frame.fill(0);
            }
            for (acc, s) in self.sum.iter_mut().zip(&slot.frame) {
                *acc += i32::from(*s);
            }
            if let Some(track) = slot.member.track.as_mut() {
                track.push(&slot.frame, false);
            }
        }
        for slot in &mut self.slots {
            for ((m, acc), s) in self.mix.iter_mut().zip(&self.sum).zip(&slot.frame) {
                *m = acc - i32::from(*s);
            }
            if self.agc {
                slot.gain.apply(&self.mix, &mut self.out);
            } else {
                saturate(&self.mix, &mut self.out);
            }
            let down = &mut slot.member.down;
            if down.vacant_len() >= n {
                down.push_slice(&self.out);
            }
        }
        // The mixed file covers the conference's life: cycles with members.
        if let Some(mixed) = self.mixed.as_mut().filter(|_| !self.slots.is_empty()) {
            if self.agc {
                self.mixed_gain.apply(&self.sum, &mut self.out);
            } else {
                saturate(&self.sum, &mut self.out);
            }
            mixed.push(&self.out, false);
        }
    }
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer").field("conference", &self.conference.name()).field("members", &self.slots.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_agc_the_sum_saturates() {
        let mut out = [0i16; 4];
        saturate(&[40_000, -40_000, 12, -32768], &mut out);
        assert_eq!(out, [32767, -32768, 12, -32768]);
    }

    #[test]
    fn the_agc_never_clips_never_amplifies_and_recovers_slowly() {
        let mut gain = Gain::default();
        let quiet: Vec<i32> = (0..320).map(|i| if i % 2 == 0 { 1000 } else { -1000 }).collect();
        let mut out = vec![0i16; 320];
        gain.apply(&quiet, &mut out);
        assert_eq!(out[0], 1000, "a quiet frame passes untouched");
        let loud: Vec<i32> = (0..320).map(|i| if i % 2 == 0 { 90_000 } else { -90_000 }).collect();
        gain.apply(&loud, &mut out);
        let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(f32::from(peak) <= AGC_CEILING + 1.0 && peak > 28_000, "fits under the ceiling at once: {peak}");
        // Back to quiet: the gain climbs 6 dB a second, so after 25 frames (half a second) it
        // is about 3 dB higher than it was, not back to 1.
        let attacked = gain.gain;
        for _ in 0..25 {
            gain.apply(&quiet, &mut out);
        }
        let ratio_db = 20.0 * (gain.gain / attacked).log10();
        assert!((2.9..3.1).contains(&ratio_db), "{ratio_db} dB");
        for _ in 0..500 {
            gain.apply(&quiet, &mut out);
        }
        assert_eq!(gain.gain, 1.0, "recovers fully, and never above 1");
        assert_eq!(out[1], -1000);
    }

    #[test]
    fn the_agc_ramps_without_steps_inside_a_frame() {
        let mut gain = Gain { gain: 0.5 };
        let flat = vec![20_000i32; 160];
        let mut out = vec![0i16; 160];
        gain.apply(&flat, &mut out);
        let steps: Vec<i32> = out.windows(2).map(|w| i32::from(w[1]) - i32::from(w[0])).collect();
        assert!(steps.iter().all(|d| (0..=2).contains(d)), "a smooth rise: {steps:?}");
        assert!(out[159] > out[0]);
    }
}
