//! The server's counters rendered and parsed back as Prometheus text.

use super::*;
use crate::metrics::tests::parse;
use crate::session::CloseCode;

#[test]
fn the_server_counters_render_and_parse() {
    let stats = ServerStats::default();
    let media = MediaStats::default();
    stats.frames_in.store(1234, Ordering::Relaxed);
    stats.frames_out.store(1200, Ordering::Relaxed);
    stats.wrong_size.store(3, Ordering::Relaxed);
    stats.late_frames.store(2, Ordering::Relaxed);
    stats.rejected_not_found.store(4, Ordering::Relaxed);
    stats.rejected_unavailable.store(5, Ordering::Relaxed);
    stats.failed_handshakes.store(6, Ordering::Relaxed);
    stats.bad_text.store(7, Ordering::Relaxed);
    stats.count_close(CloseCode::Invalid);
    stats.count_close(CloseCode::Invalid);
    stats.count_close(CloseCode::TooBig);
    for us in [100, 400, 900, 15_000] {
        stats.send_lateness.record_us(us);
    }
    media.tick_lateness.record_us(30);
    media.skipped_ticks.store(8, Ordering::Relaxed);
    media.calls.store(9, Ordering::Relaxed);

    let text = render(&stats, &media, &crate::services::Services::new());
    for line in [
        "callpipe_frames_in_total 1234",
        "callpipe_frames_out_total 1200",
        "callpipe_frames_wrong_size_total 3",
        "callpipe_frames_late_total 2",
        "callpipe_closes_total{code=\"1003\"} 0",
        "callpipe_closes_total{code=\"1007\"} 2",
        "callpipe_closes_total{code=\"1009\"} 1",
        "callpipe_upgrades_rejected_total{reason=\"not_found\"} 4",
        "callpipe_upgrades_rejected_total{reason=\"unavailable\"} 5",
        "callpipe_handshakes_failed_total 6",
        "callpipe_bad_text_messages_total 7",
        "callpipe_send_lateness_seconds_bucket{le=\"0.0001\"} 0",
        "callpipe_send_lateness_seconds_bucket{le=\"0.0005\"} 2",
        "callpipe_send_lateness_seconds_bucket{le=\"0.001\"} 3",
        "callpipe_send_lateness_seconds_bucket{le=\"0.02\"} 4",
        "callpipe_send_lateness_seconds_bucket{le=\"+Inf\"} 4",
        "callpipe_send_lateness_seconds_sum 0.0164",
        "callpipe_send_lateness_seconds_count 4",
        "callpipe_media_tick_lateness_seconds_bucket{le=\"0.0001\"} 1",
        "callpipe_media_tick_lateness_seconds_count 1",
        "callpipe_media_ticks_skipped_total 8",
        "callpipe_media_calls 9",
        "# TYPE callpipe_processor_seconds histogram",
        "# TYPE callpipe_recording_bytes_total counter",
        "# TYPE callpipe_fork_connects_total counter",
        "# TYPE callpipe_fork_disconnects_total counter",
        "# TYPE callpipe_fork_reply_audio_dropped_seconds_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(samples.len() >= 30, "{}", samples.len());
    let bytes = samples.iter().find(|s| s.name == "callpipe_recording_bytes_total").unwrap();
    assert!(bytes.value >= 0.0 && bytes.value.fract() == 0.0);
}

#[test]
fn processor_times_render_one_series_per_type() {
    let services = crate::services::Services::new();
    let histogram = services.timings.histogram("render-test-stage");
    histogram.record_value(2_000); // 2 µs
    histogram.record_value(20_000_000); // 20 ms, past every bound
    let text = render(&ServerStats::default(), &MediaStats::default(), &services);
    let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mine: Vec<_> = samples.iter().filter(|s| s.label("processor") == Some("render-test-stage")).collect();
    let value = |name: &str, le: Option<&str>| mine.iter().find(|s| s.name == name && s.label("le") == le).map(|s| s.value).unwrap_or(-1.0);
    assert_eq!(value("callpipe_processor_seconds_bucket", Some("0.000001")), 0.0);
    assert_eq!(value("callpipe_processor_seconds_bucket", Some("0.0000025")), 1.0);
    assert_eq!(value("callpipe_processor_seconds_bucket", Some("0.01")), 1.0);
    assert_eq!(value("callpipe_processor_seconds_bucket", Some("+Inf")), 2.0);
    assert_eq!(value("callpipe_processor_seconds_count", None), 2.0);
    assert_eq!(value("callpipe_processor_seconds_sum", None), 0.020002);
    assert_eq!(text.matches("# TYPE callpipe_processor_seconds ").count(), 1);
}

#[test]
fn fork_counters_render_one_series_per_fork_name() {
    use crate::processor::{CallInfo, Processor, Setup};
    let mut fork = crate::processor::Fork::new(crate::processor::ForkConfig {
        name: Some("render \"test\" fork".into()),
        ..crate::processor::ForkConfig::new("ws://127.0.0.1:9/x")
    })
    .unwrap();
    assert_eq!(fork.label(), "render \"test\" fork");
    // A fork's counters are registered with the services it is prepared with.
    let services = crate::services::Services::new();
    let rate = crate::protocol::SampleRate::Hz8000;
    let call = CallInfo { id: "c".into(), path: "/x".into(), metadata: crate::protocol::Metadata::new(rate) };
    fork.prepare(&Setup { rate, call: &call, services: &services }).unwrap();
    let text = render(&ServerStats::default(), &MediaStats::default(), &services);
    let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mine: Vec<_> = samples.iter().filter(|s| s.label("fork") == Some("render \"test\" fork")).collect();
    let names: Vec<_> = mine.iter().map(|s| (s.name.as_str(), s.label("reason").or(s.label("kind")))).collect();
    assert_eq!(
        names,
        [
            ("callpipe_fork_connects_total", None),
            ("callpipe_fork_connect_failures_total", None),
            ("callpipe_fork_disconnects_total", Some("target_closed")),
            ("callpipe_fork_disconnects_total", Some("error")),
            ("callpipe_fork_disconnects_total", Some("call_ended")),
            ("callpipe_fork_frames_sent_total", None),
            ("callpipe_fork_sent_bytes_total", None),
            ("callpipe_fork_frames_dropped_total", None),
            ("callpipe_fork_replies_total", Some("text")),
            ("callpipe_fork_replies_total", Some("binary")),
            ("callpipe_fork_reply_audio_dropped_seconds_total", None),
        ]
    );
    // Its task may have tried (and failed) to reach the discard port by now; nothing else.
    let mut others = mine.iter().filter(|s| s.name != "callpipe_fork_connect_failures_total");
    assert!(others.all(|s| s.value == 0.0), "a fork that never connected counts nothing else");
    assert!(text.contains(r#"callpipe_fork_connects_total{fork="render \"test\" fork"} 0"#), "escaped label:\n{text}");
    for family in ["connects", "disconnects", "replies", "reply_audio_dropped_seconds"] {
        assert_eq!(text.matches(&format!("# TYPE callpipe_fork_{family}_total ")).count(), 1, "{family}");
    }
}
