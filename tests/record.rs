//! The `record` processor end to end: a real call over WebSockets on 127.0.0.1 through
//! `[echo, record]`, ended by a close frame or by a TCP reset, leaves a finalized WAV file (and,
//! with the `opus` feature, a finalized Ogg/Opus file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

const RATE: u32 = 16_000;
const FRAME_BYTES: usize = RATE as usize / 50 * 2;

/// A fresh directory and a server routing `/rec` to `[echo, record]` into it.
async fn server(name: &str) -> (TestServer, PathBuf) {
    server_with(name, "").await
}

/// As [`server`], with more parameters for the recorder (`, format = "opus"`).
async fn server_with(name: &str, record_params: &str) -> (TestServer, PathBuf) {
    let dir = std::env::temp_dir().join(format!("callpipe-e2e-record-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!(
        "[server]\nstats_interval_ms = 0\n[media]\nthreads = 2\n[[route]]\npath = \"/rec\"\nprocessors = [{{ type = \"echo\" }}, {{ type = \"record\", dir = \"{}\"{record_params} }}]\n",
        dir.display()
    );
    (TestServer::start(&config).await, dir)
}

/// Sends `frames` frames on a 20 ms clock and waits for each echo; returns the samples sent.
async fn talk(ws: &mut Client, frames: u32) -> Vec<i16> {
    let start = tokio::time::Instant::now();
    let mut sent = Vec::new();
    let mut echoed = 0;
    for n in 0..frames {
        tokio::time::sleep_until(start + Duration::from_millis(20 * u64::from(n))).await;
        let frame = test_frame(n, FRAME_BYTES);
        sent.extend(frame.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
        ws.send(Message::binary(frame)).await.unwrap();
    }
    while echoed < frames {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Binary(_)))) => echoed += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("echo stalled after {echoed} frames: {other:?}"),
        }
    }
    sent
}

/// Waits for the call to end and then up to 2 s for the one WAV file in `dir` to be finalized
/// (complete and unchanged over 100 ms); returns its spec and samples.
async fn finalized_wav(server: &TestServer, dir: &Path) -> (hound::WavSpec, Vec<i16>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while server.handle.stats.calls_active.load(Ordering::Relaxed) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut last = None;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let path = &files[0];
        assert!(path.extension().is_some_and(|e| e == "wav"), "{path:?}");
        if let Ok(reader) = hound::WavReader::open(path) {
            let data_bytes = u64::from(reader.duration()) * u64::from(reader.spec().channels) * 2;
            let len = std::fs::metadata(path).unwrap().len();
            if len == 44 + data_bytes && last == Some(len) {
                let spec = reader.spec();
                return (spec, reader.into_samples::<i16>().map(Result::unwrap).collect());
            }
            last = Some(len);
        }
        assert!(tokio::time::Instant::now() < deadline, "no finalized recording within 2 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a stereo recording against what the caller sent: left is the caller, right the
/// echo in the same pass. The file covers the call's passes: the frames sent, after the passes
/// that ran before the first frame arrived (at most 60 ms), and at most one pass after them.
fn check_stereo(spec: hound::WavSpec, samples: &[i16], sent: &[i16]) {
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, RATE, 16));
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left, right, "the echo is written in the same pass as the caller's frame");
    let offset = left.iter().position(|s| *s != 0).expect("the caller's audio is there");
    let ms = |samples: usize| samples * 1000 / RATE as usize;
    assert!(ms(offset) <= 60, "{} ms of silence before the first frame", ms(offset));
    assert!(left[offset..].starts_with(sent), "left holds exactly what the client sent");
    let after = left.len() - offset - sent.len();
    assert!(ms(after) <= 20, "{} ms recorded after the last frame", ms(after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stereo_echo_call_is_recorded_sample_exact() {
    let (server, dir) = server("stereo").await;
    let mut ws = server.call("/rec", RATE).await;
    let sent = talk(&mut ws, 100).await;
    ws.send(Message::Close(None)).await.unwrap();
    let (spec, samples) = finalized_wav(&server, &dir).await;
    check_stereo(spec, &samples, &sent);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_reset_mid_call_still_finalizes_the_file() {
    let (server, dir) = server("reset").await;
    let mut ws = server.call("/rec", RATE).await;
    let sent = talk(&mut ws, 50).await;
    // No close frame: an RST, as when the platform's side dies.
    let MaybeTlsStream::Plain(tcp) = ws.get_mut() else { panic!("plain TCP") };
    socket2::SockRef::from(&*tcp).set_linger(Some(Duration::ZERO)).unwrap();
    drop(ws);
    let (spec, samples) = finalized_wav(&server, &dir).await;
    check_stereo(spec, &samples, &sent);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the `opus` feature: the same calls recorded to Ogg/Opus.
#[cfg(feature = "opus")]
mod opus {
    use super::*;

    /// Sends `frames` frames of a 440 Hz tone on a 20 ms clock and waits for each echo.
    async fn talk_tone(ws: &mut Client, frames: u32) {
        let samples = FRAME_BYTES / 2;
        let start = tokio::time::Instant::now();
        for n in 0..frames {
            tokio::time::sleep_until(start + Duration::from_millis(20 * u64::from(n))).await;
            let frame: Vec<u8> = (0..samples)
                .flat_map(|i| {
                    let t = (n as usize * samples + i) as f64 / f64::from(RATE);
                    ((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).to_le_bytes()
                })
                .collect();
            ws.send(Message::binary(frame)).await.unwrap();
        }
        let mut echoed = 0;
        while echoed < frames {
            match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                Ok(Some(Ok(Message::Binary(_)))) => echoed += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("echo stalled after {echoed} frames: {other:?}"),
            }
        }
    }

    /// An Ogg/Opus file as read back.
    struct OpusFile {
        channels: u8,
        rate: u32,
        pre_skip: u16,
        packets: Vec<Vec<u8>>,
        /// The granule position of the end-of-stream page.
        granule: u64,
    }

    /// Reads an Ogg/Opus file, or `None` while its end-of-stream page is missing.
    fn read_opus(path: &Path) -> Option<OpusFile> {
        let mut reader = ogg::PacketReader::new(std::io::BufReader::new(std::fs::File::open(path).ok()?));
        let head = reader.read_packet().ok()??.data;
        let _tags = reader.read_packet().ok()??;
        let mut packets = Vec::new();
        while let Some(packet) = reader.read_packet().ok()? {
            let (granule, last) = (packet.absgp_page(), packet.last_in_stream());
            packets.push(packet.data);
            if last {
                let rate = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
                return Some(OpusFile { channels: head[9], rate, pre_skip: u16::from_le_bytes([head[10], head[11]]), packets, granule });
            }
        }
        None
    }

    /// Waits for the call to end and then up to 2 s for the one `.opus` file in `dir` to be
    /// finalized; returns it decoded (pre-skip and end trim applied), left and right.
    async fn finalized_opus(server: &TestServer, dir: &Path) -> (Vec<f64>, Vec<f64>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while server.handle.stats.calls_active.load(Ordering::Relaxed) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the call did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            assert_eq!(files.len(), 1, "{files:?}");
            assert!(files[0].extension().is_some_and(|e| e == "opus"), "{files:?}");
            if let Some(OpusFile { channels, rate, pre_skip, packets, granule }) = read_opus(&files[0]) {
                assert_eq!((channels, rate), (2, RATE));
                let mut decoder = ::opus::Decoder::new(RATE, ::opus::Channels::Stereo).unwrap();
                let (mut pcm, mut buffer) = (Vec::new(), vec![0i16; 5760 * 2]);
                for packet in &packets {
                    let n = decoder.decode(packet, &mut buffer, false).unwrap();
                    pcm.extend_from_slice(&buffer[..n * 2]);
                }
                let at_rate = |granules: u64| (granules * u64::from(RATE) / 48_000) as usize * 2;
                let pcm = &pcm[at_rate(u64::from(pre_skip))..at_rate(granule)];
                let left = pcm.iter().step_by(2).map(|s| f64::from(*s)).collect();
                let right = pcm.iter().skip(1).step_by(2).map(|s| f64::from(*s)).collect();
                return (left, right);
            }
            assert!(tokio::time::Instant::now() < deadline, "no finalized recording within 2 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The share of `x`'s energy at 440 Hz over its middle second.
    fn share_at_440(x: &[f64]) -> f64 {
        let x = &x[x.len() / 2 - RATE as usize / 2..][..RATE as usize];
        let w = 2.0 * std::f64::consts::PI * 440.0 / f64::from(RATE);
        let (re, im) =
            x.iter().enumerate().fold((0.0, 0.0), |(re, im), (i, s)| (re + s * (w * i as f64).cos(), im - s * (w * i as f64).sin()));
        2.0 * (re * re + im * im) / (x.len() as f64 * x.iter().map(|s| s * s).sum::<f64>())
    }

    /// Checks a stereo recording of `frames` frames of the tone, echoed: both channels hold
    /// it, and the file lasts the call's passes (at most 60 ms before the first frame and 20 ms
    /// after the last).
    fn check(left: &[f64], right: &[f64], frames: usize) {
        let sent_ms = frames * 20;
        let ms = left.len() * 1000 / RATE as usize;
        assert!((sent_ms..=sent_ms + 80).contains(&ms), "{ms} ms recorded for {sent_ms} ms sent");
        for (name, x) in [("left", left), ("right", right)] {
            let share = share_at_440(x);
            assert!(share > 0.9, "{name}: {share:.3} of the energy at 440 Hz");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_recorded_to_opus_decodes_back() {
        let (server, dir) = server_with("opus", ", format = \"opus\", bitrate = 40000").await;
        let mut ws = server.call("/rec", RATE).await;
        talk_tone(&mut ws, 100).await;
        ws.send(Message::Close(None)).await.unwrap();
        let (left, right) = finalized_opus(&server, &dir).await;
        check(&left, &right, 100);
        server.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tcp_reset_mid_call_still_finalizes_the_opus_file() {
        let (server, dir) = server_with("opus-reset", ", template = \"{call_id}.opus\"").await;
        let mut ws = server.call("/rec", RATE).await;
        talk_tone(&mut ws, 75).await;
        let MaybeTlsStream::Plain(tcp) = ws.get_mut() else { panic!("plain TCP") };
        socket2::SockRef::from(&*tcp).set_linger(Some(Duration::ZERO)).unwrap();
        drop(ws);
        let (left, right) = finalized_opus(&server, &dir).await;
        check(&left, &right, 75);
        server.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
