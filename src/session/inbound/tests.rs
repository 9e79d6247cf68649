//! The caller-timeline rules on a fake clock: late frames, stalls, pauses, the hard bound.

use super::*;

const MS: Duration = Duration::from_millis(1);
const F: Duration = FRAME_DURATION;
const NONE: [i16; 0] = [];

fn frame(value: i16) -> Vec<u8> {
    std::iter::repeat_n(value.to_le_bytes(), 160).flatten().collect()
}

fn buffer() -> InboundBuffer {
    InboundBuffer::new(SampleRate::Hz8000, 64, TimelineConfig::default())
}

/// Polls at `now` until the timeline waits: each frame's first sample, 0 for pause silence
/// (the test frames are never 0).
fn drain(b: &mut InboundBuffer, now: Instant) -> Vec<i16> {
    let mut out = [0i16; 160];
    let mut got = Vec::new();
    loop {
        match b.poll(now, &mut out) {
            Next::Frame => {
                assert!(out[0] != 0);
                got.push(out[0]);
            }
            Next::Pause => {
                assert!(out.iter().all(|s| *s == 0));
                got.push(0);
            }
            Next::Wait => return got,
        }
    }
}

/// Frames 1..=`count`, each due and arriving a frame apart from `t0`, each taken at once.
fn on_time(b: &mut InboundBuffer, t0: Instant, count: i16) {
    for i in 0..count {
        let at = t0 + F * i as u32;
        b.push(&frame(i + 1), at);
        assert_eq!(drain(b, at), [i + 1]);
    }
}

#[test]
fn reframes_odd_sizes_without_losing_a_sample() {
    let mut b = buffer();
    let t0 = Instant::now();
    let stream: Vec<u8> = (1..=480i16).flat_map(|s| s.to_le_bytes()).collect();
    b.push(&stream[..1], t0);
    b.push(&stream[1..8], t0);
    b.push(&stream[8..341], t0);
    let mut out = [0i16; 160];
    assert_eq!(b.poll(t0, &mut out), Next::Frame);
    assert_eq!((out[0], out[159]), (1, 160));
    assert_eq!(b.poll(t0, &mut out), Next::Wait, "only 21 bytes of the second frame so far");
    b.push(&stream[341..], t0 + F);
    assert_eq!(b.poll(t0 + F, &mut out), Next::Frame);
    assert_eq!((out[0], out[159]), (161, 320));
    assert_eq!(b.poll(t0 + F, &mut out), Next::Frame);
    assert_eq!((out[0], out[159]), (321, 480));
    assert_eq!(b.len_bytes(), 0);
}

#[test]
fn a_frame_goes_through_when_it_arrives_and_a_late_one_is_waited_for() {
    let mut b = buffer();
    let t0 = Instant::now();
    b.push(&frame(1), t0);
    assert_eq!(drain(&mut b, t0), [1]);
    // Frame 2 is 60 ms late: nothing runs in its place meanwhile.
    for ms in [20, 40, 60, 79] {
        assert_eq!(drain(&mut b, t0 + ms * MS), NONE, "no silence at {ms} ms");
    }
    b.push(&frame(2), t0 + 80 * MS);
    assert_eq!(drain(&mut b, t0 + 80 * MS), [2], "jitter within 100 ms goes through at once");
    b.push(&frame(3), t0 + 80 * MS);
    assert_eq!(drain(&mut b, t0 + 80 * MS), [3], "and so does the frame that came with it");
    assert_eq!((b.frames(), b.pause_frames(), b.dropped_frames()), (3, 0, 0));
}

#[test]
fn the_backlog_of_a_stall_goes_through_at_once_with_no_silence() {
    let mut b = buffer();
    let t0 = Instant::now();
    on_time(&mut b, t0, 5);
    // A 300 ms stall: frames 6..=20 were due at 100..=380 ms and all arrive at 400 ms.
    let at = t0 + 400 * MS;
    assert_eq!(drain(&mut b, at - MS), NONE);
    for i in 5..20 {
        b.push(&frame(i + 1), at);
    }
    assert_eq!(drain(&mut b, at), (6..=20).collect::<Vec<i16>>(), "caught up at once");
    assert_eq!(b.stalls(), 1);
    // Then on time again.
    b.push(&frame(21), t0 + F * 20);
    assert_eq!(drain(&mut b, t0 + F * 20), [21]);
    assert_eq!(b.pause_frames(), 0);
}

#[test]
fn frames_that_come_together_are_a_burst_and_paced_ones_are_not() {
    let mut b = InboundBuffer::new(SampleRate::Hz8000, 400, TimelineConfig::default());
    let t0 = Instant::now();
    let mut out = [0i16; 160];
    let mut bursts = |b: &mut InboundBuffer, now: Instant| {
        let mut seen = Vec::new();
        while b.poll(now, &mut out) != Next::Wait {
            seen.push(b.in_burst());
        }
        seen
    };
    for i in 0..3 {
        b.push(&frame(i + 1), t0 + F * i as u32 + MS * (3 * i as u32));
        assert_eq!(bursts(&mut b, t0 + F * i as u32 + 9 * MS), [false], "paced, with jitter");
    }
    // A 300 ms stall's backlog: the first frame of it ends a gap, the rest came with it.
    let at = t0 + 360 * MS;
    for i in 3..18 {
        b.push(&frame(i + 1), at);
    }
    let seen = bursts(&mut b, at);
    assert_eq!(seen.len(), 15);
    let run = BURST_RUN as usize;
    assert!(seen[..run].iter().all(|&burst| !burst), "the first frames of a run are not yet a burst: {seen:?}");
    assert!(seen[run..].iter().all(|&burst| burst), "{seen:?}");
    // A 3 s one, longer than `max_wait`: pause silence (never a burst) while it lasts, then
    // its backlog, a burst from its ninth frame.
    let silent = bursts(&mut b, at + 3 * F + Duration::from_secs(2));
    assert!(!silent.is_empty() && silent.iter().all(|&burst| !burst), "{silent:?}");
    let at = at + Duration::from_secs(3);
    for i in 18..168 {
        b.push(&frame(i + 1), at);
    }
    let seen = bursts(&mut b, at);
    assert_eq!(seen.iter().filter(|&&burst| burst).count(), 150 - BURST_RUN as usize, "all of the backlog from its ninth frame");
    // A sender of 40 ms messages pairs its frames: never a burst.
    let mut b = buffer();
    for k in 0..10u32 {
        let sent = t0 + 2 * F * k;
        b.push(&[frame(1), frame(2)].concat(), sent);
        assert_eq!(bursts(&mut b, sent), [false, false]);
    }
}

#[test]
fn a_stall_whose_backlog_arrives_in_pieces_loses_nothing() {
    let mut b = buffer();
    let t0 = Instant::now();
    b.push(&frame(1), t0);
    drain(&mut b, t0);
    // 200 ms of nothing, then the backlog in two pieces 3 ms apart.
    let at = t0 + 220 * MS;
    b.push(&frame(2), at);
    assert_eq!(drain(&mut b, at), NONE, "a lone late frame waits for its backlog");
    for i in 3..=5 {
        b.push(&frame(i), at + 3 * MS);
    }
    assert_eq!(drain(&mut b, at + 3 * MS), NONE, "still later than the jitter allowance");
    for i in 6..=12 {
        b.push(&frame(i), at + 4 * MS);
    }
    assert_eq!(drain(&mut b, at + 4 * MS), (2..=12).collect::<Vec<i16>>());
    assert_eq!(b.pause_frames(), 0);
}

#[test]
fn a_pause_becomes_silence_of_its_length_before_the_frame_that_ends_it() {
    let mut b = buffer();
    let t0 = Instant::now();
    on_time(&mut b, t0, 3);
    // The platform stops for 500 ms (frames due at 60..=540 ms never come), then sends
    // frame 4 at 560 ms and the next one a frame later: no burst.
    let resumed = t0 + 560 * MS;
    b.push(&frame(4), resumed);
    assert_eq!(drain(&mut b, resumed), NONE, "held while a backlog may follow");
    assert_eq!(drain(&mut b, resumed + 19 * MS), NONE, "held until the sender's next frame shows its pace");
    b.push(&frame(5), resumed + F);
    let got = drain(&mut b, resumed + F);
    assert_eq!(got.len(), 27);
    assert!(got[..25].iter().all(|s| *s == 0), "500 ms of silence");
    assert_eq!(got[25..], [4, 5]);
    b.push(&frame(6), resumed + 2 * F);
    assert_eq!(drain(&mut b, resumed + 2 * F), [6], "back on the timeline: no more holding");
    assert_eq!((b.pause_frames(), b.stalls(), b.frames()), (25, 0, 6));
}

#[test]
fn a_stall_that_holds_the_end_of_the_stream_adds_no_silence() {
    let mut b = buffer();
    let t0 = Instant::now();
    on_time(&mut b, t0, 5);
    // The last 15 frames (due at 100..=380 ms) are stalled and arrive together at 700 ms:
    // nothing newer follows to show the stall up.
    let at = t0 + 700 * MS;
    for i in 5..20 {
        b.push(&frame(i + 1), at);
    }
    assert_eq!(drain(&mut b, at + BURST_WINDOW), NONE, "what follows them would tell");
    let decided = at + F + TimelineConfig::default().jitter;
    assert_eq!(b.next_deadline(), Some(decided));
    assert_eq!(drain(&mut b, decided - MS), NONE);
    assert_eq!(drain(&mut b, decided), (6..=20).collect::<Vec<i16>>(), "a stall: no silence");
    assert_eq!((b.pause_frames(), b.stalls(), b.frames()), (0, 1, 20));
    // A pause after it is a pause again.
    let resumed = decided + 300 * MS;
    b.push(&frame(21), resumed);
    b.push(&frame(22), resumed + F);
    let got = drain(&mut b, resumed + F);
    assert_eq!(got[got.len() - 2..], [21, 22]);
    assert!(got.len() > 2 && got[..got.len() - 2].iter().all(|s| *s == 0), "{got:?}");
}

#[test]
fn a_stall_that_holds_only_the_last_frame_adds_no_silence() {
    let mut b = buffer();
    let t0 = Instant::now();
    on_time(&mut b, t0, 5);
    // The last frame, due at 100 ms, comes alone 300 ms late, and nothing after it.
    let at = t0 + 400 * MS;
    b.push(&frame(6), at);
    let decided = at + F + TimelineConfig::default().jitter;
    assert_eq!(drain(&mut b, decided - MS), NONE);
    assert_eq!(drain(&mut b, decided), [6]);
    assert_eq!((b.pause_frames(), b.frames()), (0, 6));
}

#[test]
fn a_pause_whose_first_frames_come_bunched_is_still_a_pause() {
    let mut b = buffer();
    let t0 = Instant::now();
    on_time(&mut b, t0, 3);
    // 500 ms of pause (frames due at 60..=540 ms never come); the sender resumes at 560 ms,
    // its first frame held up by the network so the second comes with it, then one a frame.
    let resumed = t0 + 580 * MS;
    b.push(&frame(4), resumed);
    b.push(&frame(5), resumed + 2 * MS);
    assert_eq!(drain(&mut b, resumed + BURST_WINDOW), NONE, "bunched: what follows tells");
    b.push(&frame(6), resumed + F);
    let got = drain(&mut b, resumed + F);
    assert_eq!(got.len(), 28, "{got:?}");
    assert!(got[..25].iter().all(|s| *s == 0), "500 ms of silence");
    assert_eq!(got[25..], [4, 5, 6]);
    assert_eq!((b.pause_frames(), b.stalls()), (25, 0));
}

#[test]
fn a_pause_ended_by_messages_of_two_frames_is_still_a_pause() {
    // Frames completed by one message share its arrival: the pause shows when the next
    // message comes 40 ms later, as late.
    let mut b = buffer();
    let t0 = Instant::now();
    let pair = |a: i16| [frame(a), frame(a + 1)].concat();
    for k in 0..2u32 {
        b.push(&pair(1 + 2 * k as i16), t0 + 2 * F * k);
        assert_eq!(drain(&mut b, t0 + 2 * F * k).len(), 2);
    }
    // 500 ms of pause (frames due at 80..=560 ms never come), then a pair every 40 ms.
    let resumed = t0 + 580 * MS;
    b.push(&pair(5), resumed);
    assert_eq!(drain(&mut b, resumed + BURST_WINDOW), NONE, "what follows tells");
    b.push(&pair(7), resumed + 2 * F);
    let got = drain(&mut b, resumed + 2 * F);
    assert!(got.len() > 4, "{got:?}");
    let silence = got.len() - 4;
    assert!((24..=25).contains(&silence) && got[..silence].iter().all(|s| *s == 0), "the pause, within a frame: {got:?}");
    assert_eq!(got[silence..], [5, 6, 7, 8]);
    assert_eq!(b.stalls(), 0);
}

#[test]
fn a_sender_that_waits_for_each_answer_is_held_once_after_a_gap() {
    let mut b = buffer();
    let t0 = Instant::now();
    on_time(&mut b, t0, 3);
    // 200 ms of nothing, then one frame, and the sender waits for its answer before the
    // next: nothing follows it for a frame and the jitter allowance.
    let at = t0 + 260 * MS;
    b.push(&frame(4), at);
    let decided = at + F + TimelineConfig::default().jitter;
    assert_eq!(drain(&mut b, decided - MS), NONE);
    assert_eq!(drain(&mut b, decided), [4], "no silence");
    // The answers come back at once from here on.
    for (i, value) in (5..10).enumerate() {
        let sent = decided + MS * (1 + 3 * i as u32);
        b.push(&frame(value), sent);
        assert_eq!(drain(&mut b, sent), [value]);
    }
    assert_eq!(b.pause_frames(), 0);
}

#[test]
fn a_long_pause_is_filled_while_it_lasts_and_call_time_stays_right() {
    let mut b = buffer();
    let t0 = Instant::now();
    b.push(&frame(1), t0);
    drain(&mut b, t0);
    // Due at 20 ms; nothing until 1020 ms, then silence up to the present, then one a
    // frame.
    assert_eq!(drain(&mut b, t0 + 1019 * MS), NONE);
    let filled = drain(&mut b, t0 + 1020 * MS);
    assert_eq!(filled.len(), 50, "due 20..=1000 ms: ({filled:?})");
    assert!(filled.iter().all(|s| *s == 0));
    assert_eq!(drain(&mut b, t0 + 1039 * MS), [0]);
    assert_eq!(drain(&mut b, t0 + 1040 * MS), NONE);
    // The platform resumes at 2000 ms: 99 frames of call time were missing in all.
    let mut ms = 1041;
    while ms < 2000 {
        drain(&mut b, t0 + ms * MS);
        ms += 1;
    }
    let resumed = t0 + 2000 * MS;
    b.push(&frame(2), resumed);
    let mut got = drain(&mut b, resumed);
    got.extend(drain(&mut b, resumed + BURST_WINDOW));
    assert_eq!(got.last(), Some(&2));
    assert_eq!(b.pause_frames(), 99, "silence fills the pause exactly");
    assert_eq!(b.next_due(), Some(t0 + F * 101));
}

#[test]
fn a_call_whose_caller_is_silent_from_the_start_keeps_call_time() {
    let mut b = buffer();
    let t0 = Instant::now();
    b.start(t0);
    assert_eq!(drain(&mut b, t0 + 999 * MS), NONE, "the first frame may take up to a second");
    let filled = drain(&mut b, t0 + 1000 * MS);
    assert_eq!(filled.len(), 50, "then the call's first second is silence");
    b.push(&frame(1), t0 + 1005 * MS);
    assert_eq!(drain(&mut b, t0 + 1005 * MS), [1]);
    // A first frame within the wait starts the timeline itself: no silence before it.
    let mut b = buffer();
    b.start(t0);
    b.push(&frame(1), t0 + 400 * MS);
    assert_eq!(drain(&mut b, t0 + 400 * MS), [1]);
    b.push(&frame(2), t0 + 420 * MS);
    assert_eq!(drain(&mut b, t0 + 420 * MS), [2]);
    assert_eq!(b.pause_frames(), 0);
}

#[test]
fn a_frame_later_than_the_hard_bound_is_dropped_and_counted() {
    let config = TimelineConfig { max_wait: Duration::from_secs(3600), max_backlog: Duration::from_secs(2), ..TimelineConfig::default() };
    let mut b = InboundBuffer::new(SampleRate::Hz8000, 300, config);
    let t0 = Instant::now();
    b.push(&frame(1), t0);
    drain(&mut b, t0);
    // A 3 s stall, then its whole backlog (150 frames) at once.
    let at = t0 + 3020 * MS;
    for i in 0..150 {
        b.push(&frame(i + 2), at);
    }
    let got = drain(&mut b, at);
    assert_eq!(b.dropped_frames(), 50, "the frames more than 2 s late");
    assert_eq!(got, (52..=151).collect::<Vec<i16>>(), "the rest in order");
    assert_eq!(b.pause_frames(), 0);
}

#[test]
fn a_sender_faster_than_real_time_is_followed_not_cut() {
    let mut b = buffer();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for i in 0..500u32 {
        let at = t0 + 19 * MS * i;
        b.push(&frame(i as i16 + 1), at);
        got.extend(drain(&mut b, at));
    }
    assert_eq!(got, (1..=500).collect::<Vec<i16>>());
    assert_eq!((b.dropped_frames(), b.pause_frames()), (0, 0));
}

#[test]
fn it_starts_with_three_frames_grows_to_its_capacity_and_counts_overflow() {
    let mut b = InboundBuffer::new(SampleRate::Hz8000, 8, TimelineConfig::default());
    assert!(b.bytes.capacity() < 4 * 320, "room for three frames to start with");
    let capacity = 8 * 320;
    assert_eq!(b.room(), capacity);
    b.push(&vec![1u8; capacity + 100], Instant::now());
    assert_eq!(b.len_bytes(), capacity);
    assert_eq!(b.overflow_bytes(), 100);
    assert_eq!(b.room(), 0);
    assert_eq!(b.backlog(), 8);
}

/// A backlog building frame by frame (a media thread held up while frames keep coming)
/// grows the buffer by doubling, its bytes and its arrival times together, a few times,
/// up to its capacity and never past it.
#[test]
fn a_growing_backlog_doubles_the_buffer_up_to_its_capacity() {
    let t0 = Instant::now();
    let mut b = InboundBuffer::new(SampleRate::Hz16000, 50, TimelineConfig::default());
    let mut sizes = vec![(b.bytes.capacity(), b.arrivals.capacity())];
    for i in 0..60u32 {
        b.push(&vec![0u8; 640], t0 + F * i);
        let now = (b.bytes.capacity(), b.arrivals.capacity());
        if sizes.last() != Some(&now) {
            sizes.push(now);
        }
    }
    assert_eq!(b.backlog(), 50);
    // 3, 6, 12, 24, 48, 50 frames.
    assert_eq!(sizes.len(), 6, "the capacities went {sizes:?}");
    for pair in sizes.windows(2).take(4) {
        assert!(pair[1].0 >= 2 * pair[0].0 && pair[1].1 >= pair[1].0 / 640, "the capacities went {sizes:?}");
    }
    let last = sizes[sizes.len() - 1];
    assert!(last.0 >= 50 * 640 && last.0 < 51 * 640 && last.1 >= 50);
}
