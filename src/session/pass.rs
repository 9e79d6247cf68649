//! The session's passes: which run when time passes (the caller's frames as they become ready,
//! each sharing its wall tick's pass when one is due; wall-only passes for ticks whose frame did
//! not come), one pass through the pipeline, and what the processors asked for in it.

use std::time::Instant;

use super::{Next, Session};
use crate::processor::{Context, Pass};
use crate::protocol::FRAME_DURATION;

impl Session {
    /// Lets time pass to `now`: runs a pass for every frame of the caller's timeline that is
    /// ready (each sharing the pass of the wall tick it falls in, when one is due), then a
    /// wall-only pass for every tick that has waited half a frame for its frame in vain, and
    /// after each pass lets the pacer release frames. Call it whenever audio has arrived and
    /// at least once a millisecond or so; a call with nothing to do costs a few comparisons.
    pub fn handle_tick(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let mut wall = *self.next_wall.get_or_insert(now);
        self.inbound.start(now);
        let grace = self.tick_grace();
        let behind = now.saturating_duration_since(wall);
        if behind > self.max_catchup {
            // Too far behind to make every tick of generated audio up: skip to the present on
            // purpose (the caller's timeline loses nothing).
            let skipped = (behind.as_nanos() / FRAME_DURATION.as_nanos()) as u64;
            self.stats.skipped_ticks += skipped;
            wall += FRAME_DURATION * u32::try_from(skipped).unwrap_or(u32::MAX);
        }
        loop {
            let present = match self.inbound.poll(now, &mut self.input) {
                Next::Frame => true,
                Next::Pause => false,
                Next::Wait => break,
            };
            if !self.wall_placed {
                // The grid follows the caller's frames from the first one on, so that each
                // shares its tick's pass.
                self.wall_placed = true;
                wall = wall.min(now);
            }
            let tick = wall <= now + self.early;
            let fresh = self.run_pass(now, present, true, tick);
            if tick {
                wall += FRAME_DURATION;
                self.wall_input_ready = None;
            } else {
                // Made at the first caller frame that does not share its tick (jitter moved
                // it), once: on a clean network the grid follows the caller and none needs it.
                self.wall_input.resize(self.input.len(), 0);
                self.wall_input.copy_from_slice(&self.input);
                self.wall_input_ready = Some(present);
            }
            self.release(now, fresh, false);
        }
        while wall + grace <= now {
            let present = match self.wall_input_ready.take() {
                Some(present) => {
                    self.input.copy_from_slice(&self.wall_input);
                    present
                }
                None => {
                    self.input.fill(0);
                    false
                }
            };
            let fresh = self.run_pass(wall, present, false, true);
            self.stats.wall_only += 1;
            self.release(wall, fresh, false);
            wall += FRAME_DURATION;
        }
        self.next_wall = Some(wall);
    }

    /// One pipeline pass over `self.input`. `caller`: it carries a frame of the caller's
    /// timeline (`present`: audio, not pause silence); `wall`: it is a wall tick. Returns
    /// whether any audio was queued for the platform.
    pub(super) fn run_pass(&mut self, now: Instant, mut present: bool, caller: bool, wall: bool) -> bool {
        let burst = caller && self.inbound.in_burst();
        if self.earmuffed {
            self.input.fill(0);
            present = false;
        }
        self.output.fill(0);
        self.requests.reset(self.outbound.room());
        std::mem::swap(&mut self.events_now, &mut self.events_next);
        // The two lists trade buffers at every pass: the one that just emptied gets the room the
        // other has made (at the call's first event, at its first burst), so that both have it
        // a pass later, whichever passes the events fall on.
        if self.events_next.capacity() < self.events_now.capacity() {
            self.events_next.reserve_exact(self.events_now.capacity());
        }
        self.watch_events(now);
        if wall {
            self.tick_input(now);
        }
        let pass = Pass { caller, wall, caller_position: self.caller_position, wall_position: self.wall_position, burst };
        let mut cx = Context::new(now, self.caller_position, self.rate, &mut self.input, present, &mut self.output, &mut self.requests)
            .with_pass(pass);
        self.pipeline.run(&self.events_now, &mut cx);
        let written = cx.output_written();
        self.publish_seen_events();
        self.caller_position += u64::from(caller);
        self.wall_position += u64::from(wall);
        self.stats.passes += 1;
        let written = if wall { self.play_api_audio(written) } else { self.muted_output(written) };
        self.apply_requests(written);
        written || !self.requests.queued.is_empty()
    }

    /// Applies what the processors asked for in this pass: a hang-up, a clear, the audio they
    /// queued and wrote (`written`), notifies and events.
    pub(super) fn apply_requests(&mut self, written: bool) {
        self.hangup_requested |= self.requests.hangup;
        if self.requests.clear {
            self.clear_outbound();
        }
        self.outbound.append(&self.requests.queued);
        if written {
            self.outbound.append(&self.output);
        }
        for i in 0..self.requests.notifies.len() {
            let marker = self.requests.notifies[i];
            if !self.outbound.mark(marker) {
                self.send_notify(marker);
            }
        }
        self.take_requested_events();
    }
}
