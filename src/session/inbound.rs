//! The caller's audio on its way in: a byte FIFO that re-frames whatever arrives into exact
//! 20 ms frames, with a small jitter policy so that inbound backlog never becomes permanent
//! latency.
//!
//! Bytes are kept as bytes, so a frame of odd length (a sample split across two WebSocket
//! messages) loses nothing. One frame is taken per pass. A backlog above `max_backlog` frames
//! (a burst after a long network stall, or a sender far faster than real time) is cut back to
//! the newest frame at once and counted as dropped: on purpose, never silent. A *standing*
//! backlog of two or more frames held for a whole second (a call that joined its media thread
//! mid-stream, or a sender slightly faster than real time) is made up instead: the session runs
//! one extra pass, so no caller audio is lost and the latency does not stay.

use std::collections::VecDeque;

use crate::protocol::{MAX_FRAME_BYTES, SampleRate, decode_l16};

/// Passes over which a standing backlog is measured (one second).
const STANDING_WINDOW: u32 = 50;

/// The inbound re-framer and jitter policy of one call.
#[derive(Debug)]
pub struct InboundBuffer {
    frame_bytes: usize,
    bytes: VecDeque<u8>,
    max_backlog: usize,
    window_passes: u32,
    window_min: usize,
    dropped_frames: u64,
    overflow_bytes: u64,
    catchups: u64,
}

impl InboundBuffer {
    /// A buffer for `rate` holding at most `capacity_frames` frames, cutting backlog above
    /// `max_backlog` frames (at least 1).
    pub fn new(rate: SampleRate, capacity_frames: usize, max_backlog: usize) -> InboundBuffer {
        let frame_bytes = rate.frame_bytes();
        let max_backlog = max_backlog.max(1);
        let capacity = frame_bytes * capacity_frames.max(max_backlog + 2);
        InboundBuffer {
            frame_bytes,
            bytes: VecDeque::with_capacity(capacity),
            max_backlog,
            window_passes: 0,
            window_min: usize::MAX,
            dropped_frames: 0,
            overflow_bytes: 0,
            catchups: 0,
        }
    }

    /// Appends received bytes (any length). What does not fit is dropped and counted; the
    /// buffer never grows.
    pub fn push(&mut self, data: &[u8]) {
        let room = self.bytes.capacity() - self.bytes.len();
        let n = data.len().min(room);
        self.bytes.extend(&data[..n]);
        self.overflow_bytes += (data.len() - n) as u64;
    }

    /// Whole frames waiting.
    pub fn backlog(&self) -> usize {
        self.bytes.len() / self.frame_bytes
    }

    /// Bytes waiting, including a partial frame.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Frames dropped by the jitter policy.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Bytes dropped because the buffer was full.
    pub fn overflow_bytes(&self) -> u64 {
        self.overflow_bytes
    }

    /// Extra passes run to make up a standing backlog.
    pub fn catchups(&self) -> u64 {
        self.catchups
    }

    /// Applies the jitter policy at the start of a tick and returns how many passes to run:
    /// 1, or 2 when a standing backlog is to be made up.
    pub fn plan_tick(&mut self) -> usize {
        let backlog = self.backlog();
        if backlog > self.max_backlog {
            self.drop_frames(backlog - 1);
            self.reset_window();
            return 1;
        }
        self.window_min = self.window_min.min(backlog);
        self.window_passes += 1;
        if self.window_passes < STANDING_WINDOW {
            return 1;
        }
        let standing = self.window_min >= 2;
        self.reset_window();
        if standing {
            self.catchups += 1;
            2
        } else {
            1
        }
    }

    /// Decodes the next frame into `out` (one frame long). Returns false, leaving `out`
    /// untouched, when no whole frame is waiting.
    pub fn pop_frame(&mut self, out: &mut [i16]) -> bool {
        if self.backlog() == 0 {
            return false;
        }
        let mut frame = [0u8; MAX_FRAME_BYTES];
        let frame = &mut frame[..self.frame_bytes];
        super::pop_front_into(&mut self.bytes, frame);
        decode_l16(frame, out);
        true
    }

    fn reset_window(&mut self) {
        self.window_passes = 0;
        self.window_min = usize::MAX;
    }

    fn drop_frames(&mut self, frames: usize) {
        self.bytes.drain(..frames * self.frame_bytes);
        self.dropped_frames += frames as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: i16) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), 160).flatten().collect()
    }

    #[test]
    fn reframes_odd_sizes_without_losing_a_sample() {
        let mut inbound = InboundBuffer::new(SampleRate::Hz8000, 16, 5);
        let stream: Vec<u8> = (0..480i16).flat_map(|s| s.to_le_bytes()).collect();
        // 960 bytes in pieces of 1, 7, 333 and the rest: samples straddle messages.
        inbound.push(&stream[..1]);
        inbound.push(&stream[1..8]);
        inbound.push(&stream[8..341]);
        let mut out = [0i16; 160];
        assert!(inbound.pop_frame(&mut out));
        assert_eq!(out[0], 0);
        assert_eq!(out[159], 159);
        assert!(!inbound.pop_frame(&mut out), "only 21 bytes of the second frame so far");
        inbound.push(&stream[341..]);
        assert!(inbound.pop_frame(&mut out));
        assert_eq!((out[0], out[159]), (160, 319));
        assert!(inbound.pop_frame(&mut out));
        assert_eq!((out[0], out[159]), (320, 479));
        assert_eq!(inbound.len_bytes(), 0);
        assert_eq!(inbound.dropped_frames(), 0);
    }

    #[test]
    fn a_burst_above_the_limit_is_cut_to_the_newest_frame() {
        let mut inbound = InboundBuffer::new(SampleRate::Hz8000, 16, 3);
        for i in 0..7 {
            inbound.push(&frame(i));
        }
        let mut out = [0i16; 160];
        assert_eq!(inbound.plan_tick(), 1);
        assert!(inbound.pop_frame(&mut out));
        assert_eq!(out[0], 6, "frames 0..6 were stale and dropped");
        assert_eq!(inbound.dropped_frames(), 6);
    }

    #[test]
    fn a_standing_backlog_is_made_up_with_an_extra_pass() {
        let mut inbound = InboundBuffer::new(SampleRate::Hz8000, 16, 5);
        inbound.push(&frame(0));
        let mut out = [0i16; 160];
        // One frame in, one frame out per tick: a backlog of 2 stands for a second.
        let mut passes = Vec::new();
        for _ in 0..STANDING_WINDOW {
            inbound.push(&frame(1));
            let n = inbound.plan_tick();
            passes.push(n);
            for _ in 0..n {
                assert!(inbound.pop_frame(&mut out));
            }
        }
        assert_eq!(passes.iter().filter(|n| **n == 2).count(), 1, "one extra pass at the end of the window");
        assert_eq!(*passes.last().unwrap(), 2);
        assert_eq!(inbound.dropped_frames(), 0, "nothing is lost");
        assert_eq!(inbound.catchups(), 1);
        assert_eq!(inbound.backlog(), 0);
    }

    #[test]
    fn overflow_is_counted_not_grown() {
        let mut inbound = InboundBuffer::new(SampleRate::Hz8000, 4, 1);
        let capacity = inbound.bytes.capacity();
        inbound.push(&vec![0u8; capacity + 100]);
        assert_eq!(inbound.len_bytes(), capacity);
        assert_eq!(inbound.overflow_bytes(), 100);
        assert_eq!(inbound.bytes.capacity(), capacity);
    }
}
