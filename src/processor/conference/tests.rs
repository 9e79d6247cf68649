//! The conference's mix, sample for sample, against a model built from the same resamplers.

use std::time::Instant;

use super::*;
use crate::processor::{CallInfo, Context, Requests};
use crate::protocol::{Metadata, SampleRate};

/// A deterministic noise source: every member says something different, at `level`.
pub(crate) fn noise(seed: u64, samples: usize, level: i16) -> Vec<i16> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..samples)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 33) as i64 % (i64::from(level) + 1)) as i16
        })
        .collect()
}

/// What each member should hear, pass by pass, when every member passes once per cycle from
/// cycle 0 and the mixer runs before each cycle's passes: pass `p` plays the others' input of
/// pass `p - 1` (silence at pass 0), summed at the conference rate and saturated, each
/// converted by the same stateful resamplers the members use.
pub(crate) fn expected_outputs(rates: &[u32], conference_rate: u32, inputs: &[Vec<Vec<i16>>], speaking: &[bool]) -> Vec<Vec<Vec<i16>>> {
    let passes = inputs[0].len();
    let frame = (conference_rate / crate::protocol::FRAMES_PER_SECOND) as usize;
    // Each member's contribution per pass, at the conference rate.
    let contributions: Vec<Vec<Vec<i16>>> = rates
        .iter()
        .zip(inputs)
        .zip(speaking)
        .map(|((rate, frames), speaking)| {
            let mut up = Resampler::new(*rate, conference_rate).unwrap();
            frames
                .iter()
                .map(|f| {
                    let input = if *speaking { f.clone() } else { vec![0; f.len()] };
                    let mut out = vec![0; frame];
                    up.process(&input, &mut out);
                    out
                })
                .collect()
        })
        .collect();
    rates
        .iter()
        .enumerate()
        .map(|(i, rate)| {
            let mut down = Resampler::new(conference_rate, *rate).unwrap();
            (0..passes)
                .map(|p| {
                    let mix: Vec<i16> = if p == 0 {
                        vec![0; frame]
                    } else {
                        (0..frame)
                            .map(|n| {
                                let others: i32 = (0..rates.len()).filter(|j| *j != i).map(|j| i32::from(contributions[j][p - 1][n])).sum();
                                others.clamp(-32768, 32767) as i16
                            })
                            .collect()
                    };
                    let mut out = vec![0; (*rate / crate::protocol::FRAMES_PER_SECOND) as usize];
                    down.process(&mix, &mut out);
                    out
                })
                .collect()
        })
        .collect()
}

pub(crate) fn rate_of(hz: u32) -> SampleRate {
    match hz {
        8000 => SampleRate::Hz8000,
        16000 => SampleRate::Hz16000,
        _ => SampleRate::Hz24000,
    }
}

/// A prepared member of `name` at `rate`, and its join.
pub(crate) fn member(name: &str, id: &str, rate: u32, settings: &ConferenceSettings) -> (Conference, Join) {
    let mut config = ConferenceConfig::new(name);
    config.settings = settings.clone();
    let mut member = Conference::new(config).unwrap();
    let call = CallInfo { id: id.into(), path: "/conf".into(), metadata: Metadata::new(rate_of(rate)) };
    member.prepare(&Setup { rate: rate_of(rate), call: &call, services: &crate::services::Services::new() }).unwrap();
    let join = member.take_conference_join().unwrap();
    (member, join)
}

/// Members at `rates` in one conference, driven by hand: the mixer, then each member's pass.
struct Bench {
    hub: Conferences,
    mixer: Mixer,
    members: Vec<(Conference, Membership)>,
    rates: Vec<u32>,
}

impl Bench {
    fn new(name: &str, rates: &[u32], settings: ConferenceSettings) -> Bench {
        let hub = Conferences::new();
        let mut mixer = None;
        let mut members = Vec::new();
        for (i, rate) in rates.iter().enumerate() {
            let (m, join) = member(name, &format!("m{i}"), *rate, &settings);
            let (admitted, membership) = hub.admit(join, None, std::time::SystemTime::now()).unwrap();
            let mixer = mixer.get_or_insert_with(|| Mixer::new(admitted.conference.clone(), admitted.mixed));
            mixer.add(admitted.member);
            members.push((m, membership));
        }
        Bench { hub, mixer: mixer.unwrap(), members, rates: rates.to_vec() }
    }

    /// One cycle: mix, then every member's pass with `inputs[i]`; returns what each hears.
    fn cycle(&mut self, inputs: &[Vec<i16>]) -> Vec<Vec<i16>> {
        self.mixer.mix();
        self.members.iter_mut().zip(&self.rates).zip(inputs).map(|(((member, _), rate), input)| pass(member, *rate, input)).collect()
    }
}

/// One pass of `member` with `input`; returns its output frame.
fn pass(member: &mut Conference, rate: u32, input: &[i16]) -> Vec<i16> {
    let rate = rate_of(rate);
    let mut input = input.to_vec();
    let mut output = vec![0; rate.frame_samples()];
    let mut requests = Requests::new(rate.frame_samples() * 10);
    let mut cx = Context::new(Instant::now(), 0, rate, &mut input, true, &mut output, &mut requests);
    member.process(&mut cx);
    output
}

fn inputs_for(rates: &[u32], passes: usize, level: i16) -> Vec<Vec<Vec<i16>>> {
    rates
        .iter()
        .enumerate()
        .map(|(i, rate)| {
            let frame = (*rate / 50) as usize;
            let all = noise(i as u64 + 1, frame * passes, level);
            all.chunks(frame).map(<[i16]>::to_vec).collect()
        })
        .collect()
}

fn run_and_compare(rates: &[u32], conference_rate: u32, passes: usize, level: i16) -> u64 {
    let settings = ConferenceSettings { rate: conference_rate, ..ConferenceSettings::default() };
    let mut bench = Bench::new("exact", rates, settings);
    let inputs = inputs_for(rates, passes, level);
    let expected = expected_outputs(rates, conference_rate, &inputs, &vec![true; rates.len()]);
    let mut saturated = 0;
    for p in 0..passes {
        let frame_inputs: Vec<Vec<i16>> = inputs.iter().map(|m| m[p].clone()).collect();
        let heard = bench.cycle(&frame_inputs);
        for (i, out) in heard.iter().enumerate() {
            assert_eq!(out, &expected[i][p], "member {i} at {} Hz, pass {p}", rates[i]);
            saturated += out.iter().filter(|s| s.unsigned_abs() >= 32767).count() as u64;
        }
    }
    for (_, membership) in &bench.members {
        let m = &membership.member;
        assert_eq!(
            (m.dropped_up.load(Ordering::Relaxed), m.missing_down.load(Ordering::Relaxed), m.skipped.load(Ordering::Relaxed)),
            (0, 0, 0)
        );
    }
    saturated
}

#[test]
fn three_members_at_mixed_rates_hear_exactly_the_others() {
    run_and_compare(&[8000, 16000, 24000], 16000, 60, 8000);
}

#[test]
fn fifty_members_at_mixed_rates_hear_exactly_the_others_saturated() {
    let rates: Vec<u32> = (0..50).map(|i| [8000, 16000, 24000][i % 3]).collect();
    // Loud enough that 49 voices overflow 16 bits now and then: saturation is part of the model.
    let saturated = run_and_compare(&rates, 24000, 30, 3000);
    assert!(saturated > 0, "the test reaches saturation");
}

#[test]
fn members_at_the_conference_rate_add_no_delay_but_the_frame() {
    // At the conference rate there is no resampler: the others' frame comes back as it was,
    // one pass later.
    let mut bench = Bench::new("plain", &[16000, 16000], ConferenceSettings::default());
    let a = vec![1000i16; 320];
    let b = vec![-7i16; 320];
    let first = bench.cycle(&[a.clone(), b.clone()]);
    assert!(first.iter().all(|f| f.iter().all(|s| *s == 0)), "nothing yet");
    let second = bench.cycle(&[vec![0; 320], vec![0; 320]]);
    assert_eq!(second, [b, a]);
    assert_eq!(bench.members[0].0.mix_delay(), crate::protocol::FRAME_DURATION);
    assert_eq!(bench.members[0].0.delay(), std::time::Duration::ZERO);
}

#[test]
fn muted_and_listen_only_members_are_not_heard_but_hear() {
    let mut bench = Bench::new("mute", &[16000, 16000, 16000], ConferenceSettings::default());
    bench.members[1].1.member.set_muted(true);
    bench.members[2].1.member.set_role(Role::Listener);
    let inputs = vec![vec![100i16; 320], vec![20i16; 320], vec![3i16; 320]];
    bench.cycle(&inputs);
    let heard = bench.cycle(&inputs);
    assert_eq!(heard[0], vec![0; 320], "the speaker hears neither the muted member nor the listener");
    assert_eq!(heard[1], vec![100; 320], "the muted member hears the speaker");
    assert_eq!(heard[2], vec![100; 320], "so does the listener");
    bench.members[1].1.member.set_muted(false);
    bench.members[2].1.member.set_role(Role::Speaker);
    bench.cycle(&inputs);
    let heard = bench.cycle(&inputs);
    assert_eq!(heard[0], vec![23; 320], "unmuted and speaking again");
}

#[test]
fn a_member_that_passes_twice_keeps_one_frame_of_delay() {
    let mut bench = Bench::new("backlog", &[16000, 16000], ConferenceSettings::default());
    bench.cycle(&[vec![1; 320], vec![0; 320]]);
    // Member 0 makes up a backlog: two passes in one cycle. The mixer keeps its newest frame.
    bench.mixer.mix();
    pass(&mut bench.members[0].0, 16000, &[2; 320]);
    pass(&mut bench.members[0].0, 16000, &[3; 320]);
    pass(&mut bench.members[1].0, 16000, &[0; 320]);
    let heard = bench.cycle(&[vec![4; 320], vec![0; 320]]);
    assert_eq!(heard[1], vec![3; 320], "the newest frame, one cycle later");
    assert_eq!(bench.members[0].1.member.skipped.load(Ordering::Relaxed), 1);
    let heard = bench.cycle(&[vec![5; 320], vec![0; 320]]);
    assert_eq!(heard[1], vec![4; 320], "and one frame of delay from then on");
    assert_eq!(bench.members[0].1.member.missing_down.load(Ordering::Relaxed), 1, "its second pass had no mix");
}

#[test]
fn the_agc_keeps_a_loud_conference_from_clipping() {
    let rates = [16000; 10];
    let settings = ConferenceSettings { agc: true, ..ConferenceSettings::default() };
    let mut bench = Bench::new("agc", &rates, settings);
    let inputs: Vec<Vec<i16>> = (0..10).map(|_| vec![9000i16; 320]).collect();
    for _ in 0..20 {
        for out in bench.cycle(&inputs) {
            // Nine voices at 9000 sum to 81000: without the AGC every sample would clip.
            assert!(out.iter().all(|s| f32::from(s.unsigned_abs()) <= 0.891 * 32767.0 + 1.0), "{:?}", &out[..4]);
        }
    }
    let out = bench.cycle(&inputs);
    assert!(out[0][0] > 25_000, "loud, not crushed: {}", out[0][0]);
}

#[test]
fn leaving_members_are_dropped_and_the_mixer_ends_with_the_conference() {
    let mut bench = Bench::new("leave", &[16000, 8000, 24000], ConferenceSettings::default());
    bench.cycle(&[vec![0; 320], vec![0; 160], vec![0; 480]]);
    assert_eq!(bench.mixer.members(), 3);
    let (mut gone, membership) = bench.members.remove(1);
    let mut requests = Requests::new(1600);
    let (mut input, mut output) = (vec![0; 160], vec![0; 160]);
    let mut cx = Context::new(Instant::now(), 0, SampleRate::Hz8000, &mut input, false, &mut output, &mut requests);
    gone.finish(&mut cx);
    assert!(matches!(requests.events()[0].1, Event::Custom { name: "conference:left", .. }));
    assert!(bench.hub.leave(&membership).is_none(), "two members are left");
    bench.mixer.mix();
    assert_eq!(bench.mixer.members(), 2);
    assert!(!bench.mixer.is_done());
    for (member, membership) in bench.members.drain(..) {
        drop(member);
        bench.hub.leave(&membership);
    }
    bench.mixer.mix();
    assert!(bench.mixer.is_done(), "closed and empty");
    assert!(bench.hub.get("leave").is_none());
}

#[test]
fn admission_checks_capacity_settings_and_names() {
    let hub = Conferences::new();
    let small = ConferenceSettings { max_members: 2, ..ConferenceSettings::default() };
    for i in 0..2 {
        hub.admit(member("room", &format!("c{i}"), 8000, &small).1, None, std::time::SystemTime::now()).unwrap();
    }
    let full = hub.admit(member("room", "c2", 8000, &small).1, None, std::time::SystemTime::now()).unwrap_err();
    assert!(matches!(full, JoinError::Full { max: 2, .. }), "{full}");
    let other = ConferenceSettings { rate: 8000, ..small };
    let mismatch = hub.admit(member("room", "c3", 8000, &other).1, None, std::time::SystemTime::now()).unwrap_err();
    assert!(mismatch.to_string().contains("rate 16000"), "{mismatch}");
    assert_eq!(hub.stats.refused.load(Ordering::Relaxed), 2);
    assert_eq!(hub.counts(), (1, 2));

    // Names come from the call; a bad one refuses the call at preparation.
    let mut config = ConferenceConfig::new("{header:room}");
    config.settings = ConferenceSettings::default();
    let mut bad = Conference::new(config).unwrap();
    let mut metadata = Metadata::new(SampleRate::Hz8000);
    metadata.headers.insert("room".into(), serde_json::json!("a/b"));
    let call = CallInfo { id: "x".into(), path: "/c".into(), metadata };
    let err = bad.prepare(&Setup { rate: SampleRate::Hz8000, call: &call, services: &crate::services::Services::new() }).unwrap_err();
    assert!(err.to_string().contains("may only hold"), "{err}");
    assert!(Conference::new(ConferenceConfig::new("")).is_err());
    assert!(Conference::new(ConferenceConfig::new("white space")).is_err());
    let recording_without_dir = ConferenceConfig {
        settings: ConferenceSettings { record: ConferenceRecording::Mixed, ..ConferenceSettings::default() },
        ..ConferenceConfig::new("r")
    };
    assert!(Conference::new(recording_without_dir).is_err());
}

#[test]
fn the_recorder_writes_the_mix_and_one_track_per_member() {
    let dir = std::env::temp_dir().join(format!("callpipe-conference-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let settings = ConferenceSettings { record: ConferenceRecording::Both, record_dir: Some(dir.clone()), ..ConferenceSettings::default() };
    let mut bench = Bench::new("rec", &[16000, 8000], settings);
    let mixed_path = bench.members[0].1.conference.mixed_path().unwrap();
    let mut track_outcomes = Vec::new();
    for (_, membership) in &mut bench.members {
        track_outcomes.push(membership.track.take().unwrap());
    }
    for _ in 0..50 {
        bench.cycle(&[vec![1000; 320], vec![-300; 160]]);
    }
    for (member, membership) in bench.members.drain(..) {
        drop(member);
        bench.hub.leave(&membership);
    }
    let conference = bench.mixer.conference().clone();
    bench.mixer.mix();
    assert!(bench.mixer.is_done());
    drop(bench.mixer);
    let mixed = conference.wait_for_mixed(std::time::Duration::from_secs(5)).expect("the mixed file is finalized");
    assert_eq!((mixed.path.clone(), mixed.samples, mixed.error), (mixed_path.clone(), 50 * 320, None));
    let mut reader = hound::WavReader::open(&mixed_path).unwrap();
    assert_eq!((reader.spec().sample_rate, reader.spec().channels), (16000, 1));
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    // The 16 kHz member's 1000 plus the 8 kHz member's -300 (through its resampler, settled).
    assert_eq!(samples[30 * 320 + 100], 700);
    for (path, _offset, outcomes) in track_outcomes {
        let outcome = outcomes.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.samples, 50 * 320);
        let mut reader = hound::WavReader::open(&path).unwrap();
        let mid: i16 = reader.samples::<i16>().nth(30 * 320 + 100).unwrap().unwrap();
        assert!(mid == 1000 || mid == -300, "{} holds one member: {mid}", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
