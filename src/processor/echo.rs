//! The echo processor: returns the caller's audio, optionally delayed.
//!
//! With no delay every caller frame comes back in the same pass, sample for sample. With a delay
//! the audio runs through a delay line sized in [`Processor::prepare`]; passes in which the
//! caller sent nothing feed silence into it, so the delay stays exact in call time, and a frame
//! is only sent back when it holds some of the caller's audio.

use std::time::Duration;

use super::{Context, Processor, ProcessorError, Setup};

/// The longest delay accepted, in ms.
pub const MAX_ECHO_DELAY_MS: u32 = 60_000;

/// Returns the caller's audio after `delay`.
#[derive(Debug, Clone)]
pub struct Echo {
    delay_ms: u32,
    line: Vec<i16>,
    pos: usize,
    /// Samples written into the line so far (call time).
    written: u64,
    /// One past the last line position (in `written` units) that holds caller audio.
    live_until: u64,
}

impl Echo {
    /// An echo delayed by `delay_ms` (0 for none).
    pub fn new(delay_ms: u32) -> Result<Echo, ProcessorError> {
        if delay_ms > MAX_ECHO_DELAY_MS {
            return Err(ProcessorError::Config {
                processor: "echo".into(),
                message: format!("delay_ms {delay_ms} is over the maximum of {MAX_ECHO_DELAY_MS}"),
            });
        }
        Ok(Echo { delay_ms, line: Vec::new(), pos: 0, written: 0, live_until: 0 })
    }
}

impl Echo {
    /// Pushes one sample into the delay line and returns the one it displaces.
    fn push(&mut self, incoming: i16) -> i16 {
        let outgoing = std::mem::replace(&mut self.line[self.pos], incoming);
        self.pos += 1;
        if self.pos == self.line.len() {
            self.pos = 0;
        }
        outgoing
    }
}

impl Processor for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let samples = u64::from(self.delay_ms) * u64::from(setup.rate.hz()) / 1000;
        self.line = vec![0; samples as usize];
        self.pos = 0;
        self.written = 0;
        self.live_until = 0;
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if self.line.is_empty() {
            if cx.input_present() {
                let (input, output) = cx.input_and_output_mut();
                for (out, s) in output.iter_mut().zip(input) {
                    *out = out.saturating_add(*s);
                }
            }
            return;
        }
        let frame_len = cx.input().len() as u64;
        let delay = self.line.len() as u64;
        // The outgoing samples were written `delay` samples ago: live if that was caller audio.
        let read_from = self.written.saturating_sub(delay);
        let emit = self.written >= delay && read_from < self.live_until;
        if cx.input_present() {
            self.live_until = self.written + frame_len;
        }
        let present = cx.input_present();
        if emit {
            let (input, output) = cx.input_and_output_mut();
            for (out, incoming) in output.iter_mut().zip(input) {
                let outgoing = self.push(if present { *incoming } else { 0 });
                *out = out.saturating_add(outgoing);
            }
        } else {
            for i in 0..frame_len as usize {
                let incoming = if present { cx.input()[i] } else { 0 };
                self.push(incoming);
            }
        }
        self.written += frame_len;
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(u64::from(self.delay_ms))
    }
}
