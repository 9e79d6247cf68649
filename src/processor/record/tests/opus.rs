//! The Ogg/Opus recorder (the `opus` feature), driven pass by pass as the session drives it:
//! files decode back (with libopus) to the tones recorded, at the right rate, channel count and
//! duration, with a pre-skip that puts the audio where it was; cut-off files read up to their
//! last whole page; standard tools (opusinfo, ffprobe) accept the files when installed.

use std::io::BufReader;
use std::process::Command;

use super::*;

const CALLER_HZ: u32 = 440;
const OUTBOUND_HZ: u32 = 1000;
const AMPLITUDE: f64 = 8000.0;
/// The caller is silent before this pass, so that the tone's onset shows where audio lands.
const ONSET_PASS: usize = 10;

/// Samples of a sine at `hz` for pass `n`, silent before pass `from`.
fn tone(rate: SampleRate, hz: u32, n: usize, from: usize) -> Vec<i16> {
    let len = rate.frame_samples();
    (0..len)
        .map(|i| {
            if n < from {
                return 0;
            }
            let t = ((n - from) * len + i) as f64 / f64::from(rate.hz());
            (AMPLITUDE * (2.0 * std::f64::consts::PI * f64::from(hz) * t).sin()).round() as i16
        })
        .collect()
}

/// Runs `passes` passes of the two tones through `record` (paced so the ring never fills).
fn drive_tones(record: &mut Record, rate: SampleRate, passes: usize) -> Vec<Event> {
    let mut requests = Requests::new(rate.frame_samples());
    let mut events = Vec::new();
    for n in 0..passes {
        let (mut input, mut output) = (tone(rate, CALLER_HZ, n, ONSET_PASS), tone(rate, OUTBOUND_HZ, n, 0));
        requests.reset(rate.frame_samples());
        record.process(&mut Context::new(Instant::now(), n as u64, rate, &mut input, true, &mut output, &mut requests));
        events.extend(requests.events.drain(..).map(|(_, e)| e));
        if n % 25 == 24 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    events
}

fn opus_recorder(dir: &Path, channels: RecordChannels) -> Record {
    Record::new(RecordConfig {
        channels,
        format: RecordFormat::Opus,
        template: crate::services::recorder::DEFAULT_OPUS_TEMPLATE.into(),
        ..RecordConfig::new(dir)
    })
    .unwrap()
}

/// An Ogg/Opus file as read back with the `ogg` crate.
#[derive(Debug)]
struct OpusFile {
    channels: u8,
    pre_skip: u16,
    rate: u32,
    /// Audio packets, each with the granule position of the page it ends on and whether it is
    /// the last on that page.
    packets: Vec<(Vec<u8>, u64, bool)>,
    /// Whether the last packet read carried the end-of-stream flag.
    eos: bool,
    /// Whether reading stopped at a clean end (not on a damaged or partial page).
    clean_end: bool,
}

impl OpusFile {
    fn read(path: &Path) -> OpusFile {
        let mut reader = ogg::PacketReader::new(BufReader::new(std::fs::File::open(path).unwrap()));
        let head = reader.read_packet_expected().unwrap();
        assert!(head.data.starts_with(b"OpusHead") && head.data.len() == 19, "{:?}", head.data);
        assert_eq!((head.data[8], head.data[18]), (1, 0), "version 1, mapping family 0");
        assert!(head.last_in_page() && head.first_in_page(), "OpusHead alone on its page");
        let tags = reader.read_packet_expected().unwrap();
        assert!(tags.data.starts_with(b"OpusTags") && tags.last_in_page(), "OpusTags ends its page");
        let (mut packets, mut eos, mut clean_end) = (Vec::new(), false, true);
        loop {
            match reader.read_packet() {
                Ok(Some(packet)) => {
                    assert!(!eos, "nothing after the end of the stream");
                    eos = packet.last_in_stream();
                    packets.push((packet.data.clone(), packet.absgp_page(), packet.last_in_page()));
                }
                Ok(None) => break,
                Err(_) => {
                    clean_end = false;
                    break;
                }
            }
        }
        OpusFile {
            channels: head.data[9],
            pre_skip: u16::from_le_bytes([head.data[10], head.data[11]]),
            rate: u32::from_le_bytes([head.data[12], head.data[13], head.data[14], head.data[15]]),
            packets,
            eos,
            clean_end,
        }
    }

    /// The granule position of the last whole page read.
    fn last_granule(&self) -> u64 {
        self.packets.last().map_or(0, |p| p.1)
    }

    /// Decodes every packet at the input rate and applies pre-skip and the end trim the last
    /// granule position gives (RFC 7845 §4): the audio as it was recorded, interleaved.
    fn decode(&self) -> Vec<i16> {
        let channels = usize::from(self.channels);
        let layout = if channels == 2 { ::opus::Channels::Stereo } else { ::opus::Channels::Mono };
        let mut decoder = ::opus::Decoder::new(self.rate, layout).unwrap();
        let mut pcm = Vec::new();
        let mut buffer = vec![0i16; 5760 * channels];
        for (packet, _, _) in &self.packets {
            let n = decoder.decode(packet, &mut buffer, false).unwrap();
            pcm.extend_from_slice(&buffer[..n * channels]);
        }
        let per_48k = |granules: u64| (granules * u64::from(self.rate) / 48_000) as usize * channels;
        let skip = per_48k(u64::from(self.pre_skip));
        let end = per_48k(self.last_granule()).min(pcm.len());
        pcm[skip..end].to_vec()
    }
}

/// Channel `c` of interleaved `pcm`.
fn channel(pcm: &[i16], channels: usize, c: usize) -> Vec<f64> {
    pcm.iter().skip(c).step_by(channels).map(|s| f64::from(*s)).collect()
}

/// The share of `x`'s energy at `hz` (a single DFT bin; `x` must hold a whole number of
/// cycles): 1.0 for a pure tone at `hz`, 0 for one at another bin.
fn energy_share(x: &[f64], rate: u32, hz: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(rate);
    let (re, im) = x.iter().enumerate().fold((0.0, 0.0), |(re, im), (i, s)| (re + s * (w * i as f64).cos(), im - s * (w * i as f64).sin()));
    let energy: f64 = x.iter().map(|s| s * s).sum();
    2.0 * (re * re + im * im) / (x.len() as f64 * energy)
}

/// Checks that `x` (one second or more) holds `hz` and not `other`, at about the tone's level.
fn assert_tone(x: &[f64], rate: u32, hz: u32, other: u32, what: &str) {
    let second = &x[x.len() / 4..x.len() / 4 + rate as usize]; // whole cycles of both tones
    let (share, rest) = (energy_share(second, rate, hz), energy_share(second, rate, other));
    assert!(share > 0.9 && rest < 0.01, "{what}: {share:.3} of the energy at {hz} Hz, {rest:.4} at {other} Hz");
    let rms = (second.iter().map(|s| s * s).sum::<f64>() / second.len() as f64).sqrt();
    let db = 20.0 * (rms / (AMPLITUDE / 2f64.sqrt())).log10();
    assert!(db.abs() < 3.0, "{what}: level {db:+.1} dB off");
}

/// What a pre-skip is: the encoder's lookahead at 48 kHz.
fn expected_pre_skip(rate: SampleRate) -> u16 {
    let mut encoder = ::opus::Encoder::new(rate.hz(), ::opus::Channels::Mono, ::opus::Application::Voip).unwrap();
    (encoder.get_lookahead().unwrap() as u32 * 48_000 / rate.hz()) as u16
}

/// Records `passes` passes at `rate` in `channels` mode to Opus; returns the outcome and file.
fn record_opus(name: &str, rate: SampleRate, channels: RecordChannels, passes: usize) -> (RecordingOutcome, OpusFile) {
    let dir = temp_dir(name);
    let mut record = opus_recorder(&dir, channels);
    let outcomes = record.outcomes().unwrap();
    record.prepare(&Setup { rate, call: &call(rate), services: &crate::services::Services::new() }).unwrap();
    let events = drive_tones(&mut record, rate, passes);
    let Event::Recording(recording) = &events[0] else { panic!("{events:?}") };
    let data = &recording.to_json();
    assert_eq!((data["state"].as_str(), data["format"].as_str()), (Some("started"), Some("opus")), "{data}");
    finish(&mut record, rate);
    let outcome = outcomes.recv_timeout(Duration::from_secs(2)).expect("finalized within 2 s");
    assert_eq!(data["path"], outcome.path.display().to_string());
    assert!(outcome.path.extension().is_some_and(|e| e == "opus"), "{outcome:?}");
    let file = OpusFile::read(&outcome.path);
    (outcome, file)
}

#[test]
fn opus_recordings_decode_to_the_tones_recorded() {
    let passes = 100;
    for rate in SampleRate::ALL {
        let pre_skip = expected_pre_skip(rate);
        assert!(pre_skip > 0);
        for channels in [RecordChannels::Stereo, RecordChannels::Caller, RecordChannels::Outbound] {
            let what = format!("{rate} {channels:?}");
            let (outcome, file) = record_opus(&format!("opus-{}-{}", rate.hz(), channels.as_str()), rate, channels, passes);
            let _ = std::fs::remove_dir_all(outcome.path.parent().unwrap());
            assert_eq!((outcome.dropped, &outcome.error), (0, &None), "{what}");
            assert_eq!((outcome.samples, outcome.duration_ms), ((passes * rate.frame_samples()) as u64, 2000), "{what}");
            assert_eq!((file.rate, u16::from(file.channels), file.pre_skip), (rate.hz(), channels.count(), pre_skip), "{what}");

            // Granule positions: 960 per 20 ms packet on every page, and on the last page (flagged
            // end of stream) the pre-skip plus exactly the audio recorded.
            assert!(file.eos && file.clean_end, "{what}");
            assert_eq!(file.last_granule(), u64::from(pre_skip) + passes as u64 * 960, "{what}");
            let ends: Vec<usize> = file.packets.iter().enumerate().filter(|(_, p)| p.2).map(|(i, _)| i).collect();
            for (i, end) in ends.iter().enumerate().take(ends.len() - 1) {
                assert_eq!(file.packets[*end].1, (*end as u64 + 1) * 960, "{what}: page {i}");
            }
            let mut start = 0;
            for end in &ends {
                assert!(end + 1 - start <= 75, "{what}: a page of {} packets, about one per second expected", end + 1 - start);
                start = end + 1;
            }

            let pcm = file.decode();
            let count = usize::from(channels.count());
            let frames = pcm.len() / count;
            assert!(frames.abs_diff(passes * rate.frame_samples()) <= rate.frame_samples(), "{what}: {frames} samples decoded");
            let hz = rate.hz();
            let caller = match channels {
                RecordChannels::Stereo => {
                    assert_tone(&channel(&pcm, 2, 1), hz, OUTBOUND_HZ, CALLER_HZ, &format!("{what} right"));
                    Some(channel(&pcm, 2, 0))
                }
                RecordChannels::Caller => Some(channel(&pcm, 1, 0)),
                _ => {
                    assert_tone(&channel(&pcm, 1, 0), hz, OUTBOUND_HZ, CALLER_HZ, &what);
                    None
                }
            };
            if let Some(caller) = caller {
                assert_tone(&caller, hz, CALLER_HZ, OUTBOUND_HZ, &what);
                // The pre-skip puts the audio where it was: the caller's tone reaches half its
                // amplitude within 1 ms of its start (without the pre-skip, 6.5 ms late). Half,
                // because Opus smears some pre-echo before an onset.
                let onset = caller.iter().position(|s| s.abs() > AMPLITUDE / 2.0).unwrap();
                let expected = ONSET_PASS * rate.frame_samples();
                assert!(onset.abs_diff(expected) * 1000 <= hz as usize, "{what}: onset at {onset}, expected {expected}");
            }
        }
    }
}

#[test]
fn an_opus_file_never_finalized_reads_up_to_its_last_page() {
    let rate = SampleRate::Hz16000;
    let dir = temp_dir("opus-crash");
    let mut record = opus_recorder(&dir, RecordChannels::Stereo);
    record.prepare(&Setup { rate, call: &call(rate), services: &crate::services::Services::new() }).unwrap();
    let events = drive_tones(&mut record, rate, 125);
    let Event::Recording(recording) = &events[0] else { panic!("{events:?}") };
    let data = &recording.to_json();
    let path = PathBuf::from(data["path"].as_str().unwrap());
    // As if the process died: no finish, no drop. The writer thread goes on polling.
    std::mem::forget(record);
    std::thread::sleep(Duration::from_millis(1_500));
    let file = OpusFile::read(&path);
    assert!(!file.eos && file.clean_end, "whole pages, no end of stream: {} packets", file.packets.len());
    let packets = file.packets.len();
    assert!(packets >= 50, "at least 1 s readable, got {packets} packets");
    assert!(file.packets.last().unwrap().2, "the file ends on a page boundary");
    assert_eq!(file.last_granule(), packets as u64 * 960, "the last page's granule position counts its packets");
    let pcm = file.decode();
    assert_eq!(pcm.len() / 2, (packets * 960 - usize::from(file.pre_skip)) / 3);
    assert_tone(&channel(&pcm, 2, 1), rate.hz(), OUTBOUND_HZ, CALLER_HZ, "right");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_opus_file_cut_mid_page_reads_up_to_the_page_before() {
    let rate = SampleRate::Hz8000;
    let (outcome, whole) = record_opus("opus-cut", rate, RecordChannels::Caller, 150);
    let bytes = std::fs::read(&outcome.path).unwrap();
    // The page starts (the capture pattern "OggS" at the start of each page).
    let starts: Vec<usize> = bytes.windows(4).enumerate().filter(|(_, w)| *w == b"OggS").map(|(i, _)| i).collect();
    assert!(starts.len() >= 5, "two header pages and at least three audio pages: {starts:?}");
    let last = *starts.last().unwrap();
    // The packets on the pages before the last.
    let page_ends: Vec<usize> = whole.packets.iter().enumerate().filter(|(_, p)| p.2).map(|(i, _)| i + 1).collect();
    let kept = page_ends[page_ends.len() - 2];
    for cut in [last, last + 10, last + (bytes.len() - last) / 2] {
        std::fs::write(&outcome.path, &bytes[..cut]).unwrap();
        let file = OpusFile::read(&outcome.path);
        assert!(!file.eos, "the end-of-stream page is gone");
        // A cut inside the page header reads as a clean end, a cut further in as a short page.
        assert!(file.clean_end || cut != last, "cut at {cut}");
        assert_eq!(file.packets.len(), kept, "cut at {cut}: every packet of the whole pages");
        assert_eq!(file.last_granule(), kept as u64 * 960);
        let pcm = file.decode();
        assert_eq!(pcm.len(), (kept * 960 - usize::from(file.pre_skip)) / 6);
        assert_tone(&channel(&pcm, 1, 0), rate.hz(), CALLER_HZ, OUTBOUND_HZ, &format!("cut at {cut}"));
    }
    let _ = std::fs::remove_dir_all(outcome.path.parent().unwrap());
}

/// Runs `tool` with `args`; `None` (with a note) when the tool is not installed.
fn run_tool(tool: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(tool).args(args).output() {
        Ok(output) => Some(output),
        Err(err) => {
            println!("note: skipping the {tool} check: {err} (Debian: apt-get install opus-tools ffmpeg)");
            None
        }
    }
}

#[test]
fn standard_tools_accept_opus_recordings() {
    let rate = SampleRate::Hz16000;
    let (outcome, _) = record_opus("opus-tools", rate, RecordChannels::Stereo, 100);
    let path = outcome.path.to_str().unwrap();
    if let Some(output) = run_tool("opusinfo", &[path]) {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "opusinfo: {text}");
        for expected in ["Channels: 2", "Original sample rate: 16000 Hz", "Playback length: 0m:02.000s", "Pre-skip: 312"] {
            assert!(text.contains(expected), "opusinfo says no {expected:?}:\n{text}");
        }
        assert!(!text.to_lowercase().contains("warning"), "opusinfo warns:\n{text}");
    }
    let query = ["-v", "error", "-show_entries", "stream=codec_name,channels:format=duration", "-of", "default=noprint_wrappers=1", path];
    if let Some(output) = run_tool("ffprobe", &query) {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && output.stderr.is_empty(), "ffprobe: {text} {}", String::from_utf8_lossy(&output.stderr));
        for expected in ["codec_name=opus", "channels=2"] {
            assert!(text.lines().any(|l| l == expected), "ffprobe says no {expected:?}:\n{text}");
        }
        // ffmpeg's container duration counts the pre-skip (2.0065 s for opusenc's files too).
        let duration: f64 = text.lines().find_map(|l| l.strip_prefix("duration=")).and_then(|d| d.parse().ok()).unwrap();
        assert!((duration - 2.0).abs() <= 0.02, "ffprobe: {duration} s");
    }
    // ffmpeg decodes every packet without a complaint.
    if let Some(output) = run_tool("ffmpeg", &["-v", "error", "-i", path, "-f", "null", "-"]) {
        assert!(output.status.success() && output.stderr.is_empty(), "ffmpeg: {}", String::from_utf8_lossy(&output.stderr));
    }
    let _ = std::fs::remove_dir_all(outcome.path.parent().unwrap());
}
