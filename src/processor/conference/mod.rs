//! The `conference` processor: calls whose route names a conference join it, and each member
//! hears the sum of all the others (N-1 mixing).
//!
//! # Threads and rings
//!
//! ```text
//!   member call (its pass, its slot)                     the conference's Mixer (same thread)
//!   caller frame -> resample to the conference rate -> up ring ───┐
//!                                                                  ├─> once per 20 ms cycle:
//!   mix_output <- resample to the call's rate <- down ring <──────┘   sum all, minus each own
//! ```
//!
//! * Every member of one conference is placed on **one media thread** (the [`MediaPool`] pins
//!   the conference to the thread of its first member), and the conference's [`Mixer`] runs on
//!   that thread too. Members and mixer exchange frames through two fixed-capacity SPSC rings
//!   per member; nothing on the per-frame path locks, allocates or frees.
//! * The mixer runs once per 20 ms cycle, at the cycle boundary, before any member's pass of
//!   the cycle: every member's output in cycle `c` is the mix of the others' input of cycle
//!   `c - 1`. The delay is one frame (20 ms) for every pair of members, plus the resamplers'
//!   group delay for members whose rate is not the conference's ([`Conference::delay`]).
//! * Summing is in 32 bits; the result saturates to 16 bits. With `agc = true` each listener's
//!   mix (and the mixed recording) has an automatic gain that never amplifies: when a frame
//!   would exceed -1 dBFS its gain drops at once to fit (so nothing clips), and recovers by
//!   6 dB per second, ramped within frames so the changes make no clicks.
//! * A member is muted, or made listen-only, through the control API (atomics read at its next
//!   pass). Either way it sends silence to the conference and keeps hearing it. A member whose
//!   route says `role = "listener"` joins listen-only.
//!
//! Why one thread rather than rings between threads: with the mixer and all members on one
//! thread, the order "mix, then every member's pass" is fixed by the thread's slot wheel, so
//! the delay is exact and constant, which makes the mix testable sample for sample. Rings across
//! threads would need a jitter margin of a frame or more and still glitch on scheduling
//! outliers. The cost is that one conference cannot use more than one core; at the measured cost
//! per member (BENCHMARKS.md) one core mixes far larger conferences than telephony needs.
//!
//! # Recording
//!
//! The mixer writes the recordings, through the recorder's writer thread; all files are mono at
//! the conference rate, opened (off the media thread) when the conference or member is admitted.
//!
//! * `record = "mixed"`: the sum of every member (after the AGC, when on), one frame per cycle,
//!   in `{record_dir}/{conference}-{start}.wav`; the conference's `conference:ended` event says
//!   where, once the file is final.
//! * `record = "tracks"`: each member's contribution as the conference heard it (silence while
//!   muted), one frame per cycle from its joining, in
//!   `{record_dir}/{conference}-{call_id}-{start}.wav`; the member's call announces it with a
//!   `recording` event carrying `conference_offset_ms`, its start on the mixed file's timeline.
//! * `"both"`: both.
//!
//! [`MediaPool`]: crate::media::MediaPool

mod config;
mod hub;
mod member;
mod mixer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringbuf::{HeapCons, HeapProd, HeapRb, traits::*};

pub use config::{ConferenceConfig, ConferenceRecording, ConferenceSettings, NameError, Role, check_name};
pub use hub::{ConferenceState, ConferenceStats, ConferenceSummary, Conferences, JoinError, MemberView, Membership};
pub use member::{Admitted, Join, MemberState, MixerMember};
pub use mixer::Mixer;

use super::{Context, Event, Processor, ProcessorError, Setup};
use crate::protocol::FRAMES_PER_SECOND;
use crate::resample::{RATES, Resampler};

/// Frames each ring between a member and the mixer holds.
const RING_FRAMES: usize = 4;

/// A recording written by a conference's mixer: the mixed file, or one member's track.
pub use crate::services::recorder::Recording;

/// The member's side in its call's pipeline (see `src/processor/conference/mod.rs`).
pub struct Conference {
    config: ConferenceConfig,
    name_template: Vec<super::template::Piece>,
    state: Option<Arc<MemberState>>,
    join: Option<Join>,
    up: Option<HeapProd<i16>>,
    down: Option<HeapCons<i16>>,
    to_conference: Option<Resampler>,
    from_conference: Option<Resampler>,
    /// One frame at the conference rate: the contribution, then the mix.
    conf_frame: Vec<i16>,
    /// One frame at the call rate.
    call_frame: Vec<i16>,
    joined: Option<String>,
    announce: Vec<Event>,
    delay: Duration,
    finished: bool,
}

impl Conference {
    /// A member with `config`, checked here.
    pub fn new(config: ConferenceConfig) -> Result<Conference, ProcessorError> {
        let s = &config.settings;
        if !RATES.contains(&s.rate) {
            return Err(config_error(format!("`rate` must be 8000, 16000, 24000 or 48000, not {}", s.rate)));
        }
        if s.record != ConferenceRecording::Off && s.record_dir.as_ref().is_none_or(|d| d.as_os_str().is_empty()) {
            return Err(config_error("recording needs `record_dir`"));
        }
        if !s.format.is_available() {
            return Err(config_error(super::OPUS_FEATURE_MISSING));
        }
        if s.max_members < 2 {
            return Err(config_error("`max_members` must be at least 2"));
        }
        let name_template = super::template::parse(&config.name);
        if config.name.is_empty() {
            return Err(config_error("`name` is required, e.g. name = \"{header:room}\""));
        }
        // A name made of literals only must already be valid.
        if name_template.iter().all(|p| matches!(p, super::template::Piece::Literal(_))) {
            check_name(&config.name).map_err(config_error)?;
        }
        Ok(Conference {
            config,
            name_template,
            state: None,
            join: None,
            up: None,
            down: None,
            to_conference: None,
            from_conference: None,
            conf_frame: Vec::new(),
            call_frame: Vec::new(),
            joined: None,
            announce: Vec::new(),
            delay: Duration::ZERO,
            finished: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConferenceConfig {
        &self.config
    }

    /// How much later than they spoke this member hears the others, beyond their own
    /// resampling: one frame, plus this member's conversion to and from the conference rate.
    /// (The processor's [`delay`](Processor::delay) is zero: the caller's own audio never comes
    /// back.)
    pub fn mix_delay(&self) -> Duration {
        self.delay + crate::protocol::FRAME_DURATION
    }

    /// The member's shared state, once prepared.
    pub fn state(&self) -> Option<&Arc<MemberState>> {
        self.state.as_ref()
    }
}

fn config_error(message: impl ToString) -> ProcessorError {
    ProcessorError::Config { processor: "conference".into(), message: message.to_string() }
}

impl std::fmt::Debug for Conference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conference").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Processor for Conference {
    fn name(&self) -> &'static str {
        "conference"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let name = super::template::render(&self.name_template, setup.call, super::template::Escape::Header);
        check_name(&name).map_err(config_error)?;
        let settings = self.config.settings.clone();
        let call_rate = setup.rate.hz();
        let conf_samples = (settings.rate / FRAMES_PER_SECOND) as usize;
        let (up_p, up_c) = HeapRb::<i16>::new(conf_samples * RING_FRAMES).split();
        let (down_p, down_c) = HeapRb::<i16>::new(conf_samples * RING_FRAMES).split();
        if call_rate != settings.rate {
            let to = Resampler::new(call_rate, settings.rate).map_err(|e| ProcessorError::invalid("conference", "`rate`", e))?;
            let from = Resampler::new(settings.rate, call_rate).map_err(|e| ProcessorError::invalid("conference", "`rate`", e))?;
            self.delay = to.delay() + from.delay();
            self.to_conference = Some(to);
            self.from_conference = Some(from);
        }
        let state = Arc::new(MemberState::new(setup.call.id.clone(), call_rate, self.config.role));
        self.join = Some(Join { name, settings, member: MixerMember { state: state.clone(), up: up_c, down: down_p, track: None } });
        self.state = Some(state);
        self.up = Some(up_p);
        self.down = Some(down_c);
        self.conf_frame = vec![0; conf_samples];
        self.call_frame = vec![0; setup.frame_samples()];
        Ok(())
    }

    fn take_conference_join(&mut self) -> Option<Join> {
        let join = self.join.take()?;
        let (name, role) = (join.name.clone(), self.config.role);
        self.joined = Some(name.clone());
        self.announce.push(Event::custom(
            "conference:joined",
            serde_json::json!({ "conference": name, "role": role.as_str(), "rate": join.settings.rate }),
        ));
        Some(join)
    }

    fn timeline(&self) -> crate::processor::Timeline {
        // The mix is real time: a member's late frame misses its cycle rather than delay it.
        crate::processor::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        for event in self.announce.drain(..) {
            cx.emit(event);
        }
        let (Some(state), Some(up), Some(down)) = (self.state.as_ref(), self.up.as_mut(), self.down.as_mut()) else {
            return;
        };
        // The contribution, at the conference rate: silence while muted or listen-only, so that
        // resampler state and ring cadence stay the same either way.
        let speaking = state.speaking();
        match self.to_conference.as_mut() {
            Some(resampler) => {
                self.call_frame.copy_from_slice(cx.input());
                if !speaking {
                    self.call_frame.fill(0);
                }
                resampler.process(&self.call_frame, &mut self.conf_frame);
            }
            None => {
                self.conf_frame.copy_from_slice(cx.input());
                if !speaking {
                    self.conf_frame.fill(0);
                }
            }
        }
        if up.vacant_len() >= self.conf_frame.len() {
            up.push_slice(&self.conf_frame);
        } else {
            state.dropped_up.fetch_add(1, Ordering::Relaxed);
        }
        // The others, mixed for this member one cycle ago.
        let n = self.conf_frame.len();
        let waiting = down.occupied_len() / n;
        if waiting >= 1 {
            // Only the newest frame: an older one would add a frame of delay for good.
            down.skip((waiting - 1) * n);
            down.pop_slice(&mut self.conf_frame);
        } else {
            self.conf_frame.fill(0);
            state.missing_down.fetch_add(1, Ordering::Relaxed);
        }
        match self.from_conference.as_mut() {
            Some(resampler) => {
                resampler.process(&self.conf_frame, &mut self.call_frame);
                cx.mix_output(&self.call_frame);
            }
            None => cx.mix_output(&self.conf_frame),
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(state) = &self.state {
            state.left.store(true, Ordering::Release);
        }
        if let Some(name) = self.joined.take() {
            // Once per member, as the call ends: the rare kind of allocation.
            cx.emit(Event::custom("conference:left", serde_json::json!({ "conference": name })));
        }
    }
}

impl Drop for Conference {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.left.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
