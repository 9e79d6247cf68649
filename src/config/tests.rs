//! The configuration's tests: the documented examples and the embedded default load, defaults,
//! route matching, and mistakes refused with a message.

use std::path::Path;

use super::*;
use crate::events::LogSink;
use crate::processor::ProcessorRegistry;
use crate::protocol::SampleRate;

/// Every TOML example in the README and the pages under `docs/` is a valid configuration,
/// so the documentation stays true. Examples that record to Ogg/Opus load in builds with the
/// `opus` feature; without it, they must fail with the error that names the feature.
#[test]
fn the_documented_examples_are_valid_configurations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    pages.sort();
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        readme.push_str(&std::fs::read_to_string(page).unwrap());
    }
    let registry = ProcessorRegistry::with_builtins();
    // The prompts the examples play, as the configuration's check wants them: real WAVs.
    let prompts = std::env::temp_dir().join(format!("callpipe-readme-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&prompts).unwrap();
    let spec = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    for name in ["welcome.wav", "menu.wav"] {
        let mut writer = hound::WavWriter::create(prompts.join(name), spec).unwrap();
        (0..800).for_each(|_| writer.write_sample(0i16).unwrap());
        writer.finalize().unwrap();
    }
    let mut checked = 0;
    for block in readme.split("```toml").skip(1) {
        let text = block.split("```").next().unwrap_or_default();
        let text = text.replace("/var/lib/callpipe/prompts/", &format!("{}/", prompts.display()));
        match Config::parse(&text, &registry) {
            Ok(_) => {}
            Err(e) if !cfg!(feature = "opus") && e.to_string().contains(crate::processor::OPUS_FEATURE_MISSING) => {}
            Err(e) if !cfg!(feature = "tts") && e.to_string().contains(crate::services::tts::TTS_FEATURE_MISSING) => {}
            Err(e) => panic!("documented example does not load: {e}\n{text}"),
        }
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&prompts);
    assert!(checked >= 8, "found {checked} examples");
}

#[test]
fn the_embedded_default_is_valid_and_serves_echo() {
    let config = Config::embedded(&ProcessorRegistry::with_builtins()).unwrap();
    assert!(config.serves_path("/echo"));
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.session, SessionConfig::default());
    assert_eq!(config.server.frame_policy, FramePolicy::Lenient);
}

#[test]
fn an_empty_file_means_defaults_and_no_routes() {
    let config = Config::parse("", &ProcessorRegistry::with_builtins()).unwrap();
    assert!(config.routes.is_empty());
    assert_eq!(config.server.metadata_timeout, Duration::from_secs(5));
}

#[test]
fn the_control_plane_settings_load() {
    let registry = ProcessorRegistry::with_builtins();
    let text = r#"
        [control]
        listen = "0.0.0.0:9000"
        token = "t0ken"
        stream_root = "prompts"
        [events]
        log = "/var/log/callpipe/events.jsonl"
        retries = 5
        signature_secret = "s"
        [[route]]
        path = "/bot"
        event_url = "https://example.com/events"
        auth = { type = "token", token = "x" }
        processors = []
    "#;
    let config = Config::parse(text, &registry).unwrap();
    assert_eq!(config.control.listen, Some("0.0.0.0:9000".parse().unwrap()), "a token allows any address");
    assert_eq!(config.control.stream_root.as_deref(), Some(Path::new("prompts")));
    assert_eq!(config.events.log, LogSink::File("/var/log/callpipe/events.jsonl".into()));
    assert_eq!(config.events.retries, 5);
    assert_eq!(config.routes[0].event_url.as_deref(), Some("https://example.com/events"));
    assert!(matches!(config.admission("/bot"), Admission::Token(_)));
    assert_eq!(config.admission("/elsewhere"), &Admission::Open);
    let off = Config::parse("[control]\nlisten = 'off'", &registry).unwrap();
    assert_eq!(off.control.listen, None);
    let defaults = Config::parse("", &registry).unwrap();
    assert_eq!(defaults.control.listen, Some("127.0.0.1:8081".parse().unwrap()));
    assert_eq!((defaults.server.max_text_per_second, defaults.server.idle_timeout), (50, Some(Duration::from_secs(120))));
    assert_eq!(defaults.events.log, LogSink::Stdout);
}

#[test]
fn routes_pick_by_header_in_order() {
    let text = r#"
        [[route]]
        path = "/bot"
        header = "lang"
        equals = "en-GB"
        processors = [{ type = "echo", delay_ms = 100 }]
        [[route]]
        path = "/bot"
        processors = [{ type = "echo" }]
    "#;
    let config = Config::parse(text, &ProcessorRegistry::with_builtins()).unwrap();
    let mut m = Metadata::new(SampleRate::Hz8000);
    assert!(config.route("/bot", &m).unwrap().header.is_none());
    m.headers.insert("lang".into(), "en-GB".into());
    assert!(config.route("/bot", &m).unwrap().header.is_some());
    assert!(config.route("/other", &m).is_none());
}

#[test]
fn mistakes_are_refused_with_a_message() {
    let registry = ProcessorRegistry::with_builtins();
    for bad in [
        "[server]\nlisten = 'nowhere'",
        "[server]\nlisen = '127.0.0.1:1'",
        "[server]\nframe_policy = 'loose'",
        "[media]\nlookahead_frames = 0",
        "[[route]]\npath = 'echo'\nprocessors = []",
        "[[route]]\npath = '/x'\nheader = 'lang'\nprocessors = []",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'nope' }]",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'echo', delay_ms = -5 }]",
        "[control]\nlisten = '0.0.0.0:8081'",
        "[control]\nlisten = 'localhost'",
        "[server]\nmax_text_per_second = 0",
        "[events]\nqueue = 0",
        "[events]\nlog_file = 'x'",
        "[[route]]\npath = '/x'\nevent_url = 'ftp://example.com/e'\nprocessors = []",
        "[[route]]\npath = '/x'\nauth = { type = 'jwt' }\nprocessors = []",
        "[[route]]\npath = '/x'\nauth = { type = 'token', token = 'a' }\nprocessors = []\n[[route]]\npath = '/x'\nprocessors = []",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a' }, { type = 'conference', name = 'b' }]",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a' }, { type = 'resample', rate = 8000, processors = [{ type = 'conference', name = 'b' }] }]",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a b' }]",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = '{header:room}', rate = 11025 }]",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a', record = 'mixed' }]",
        "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a', role = 'boss' }]",
    ] {
        assert!(Config::parse(bad, &registry).is_err(), "{bad}");
    }
}

/// A control token, which `[cluster]` needs.
const TOKEN: &str = "[control]\ntoken = \"t\"\n";

#[test]
fn the_cluster_event_stream_and_storage_tables_are_optional_defaulted_and_checked() {
    let registry = ProcessorRegistry::with_builtins();
    assert!(Config::parse("", &registry).unwrap().cluster.is_none(), "without [cluster], a single node");
    let config = Config::parse(&format!("{TOKEN}[cluster]\nnode_id = \"edge-1\"\n"), &registry).unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.node_id, "edge-1");
    assert_eq!((cluster.heartbeat.as_millis(), cluster.ttl.as_millis()), (2000, 6000));
    assert_eq!(cluster.prefix, "callpipe");
    assert_eq!(cluster.advertise_control, None);
    assert!(!format!("{cluster:?}").contains("6379"), "the Redis URL may hold a password: never printed");
    let stream = Config::parse("[events.redis]\n", &registry).unwrap().events.redis.unwrap();
    assert_eq!((stream.stream.as_str(), stream.max_len), ("callpipe:events", 100_000));
    let default_id = Config::parse(&format!("{TOKEN}[cluster]\n"), &registry).unwrap().cluster.unwrap().node_id;
    assert!(default_id.ends_with(&format!("-{}", std::process::id())), "{default_id}");
    let advertised = Config::parse(
        "[control]\nlisten = \"0.0.0.0:8081\"\ntoken = \"t\"\n[cluster]\nadvertise_control = \"http://10.0.0.5:8081/\"\n",
        &registry,
    )
    .unwrap();
    assert_eq!(advertised.cluster.unwrap().advertise_control.as_deref(), Some("http://10.0.0.5:8081"));
    for (text, needle) in [
        ("[cluster]\n", "[cluster] needs control.token"),
        ("[cluster]\nredis = \"http://x\"\n", "cluster.redis is not a usable Redis URL"),
        ("[cluster]\nredis = \"env:CALLPIPE_TEST_UNSET_REDIS\"\n", "cluster.redis"),
        ("[cluster]\nnode_id = \"a b\"\n", "cluster.node_id \"a b\""),
        ("[cluster]\nheartbeat_ms = 50\n", "cluster.heartbeat_ms"),
        ("[cluster]\nheartbeat_ms = 2000\nttl_ms = 3000\n", "at least twice cluster.heartbeat_ms (4000)"),
        ("[cluster]\nkey_prefix = \"\"\n", "cluster.key_prefix"),
        ("[control]\nlisten = \"off\"\n[cluster]\n", "needs the control API"),
        ("[control]\nlisten = \"0.0.0.0:8081\"\ntoken = \"t\"\n[cluster]\n", "set cluster.advertise_control"),
        ("[cluster]\nadvertise_control = \"10.0.0.5:8081\"\n", "cluster.advertise_control"),
        ("[cluster]\nadvertise_control = \"http://10.0.0.5:8081/api\"\n", "without a path"),
        ("[cluster]\nadvertise_media = \"http://10.0.0.5:8080\"\n", "cluster.advertise_media"),
        ("[cluster]\nnodes = 3\n", "unknown field `nodes`"),
        ("[events.redis]\nurl = \"redis://\"\nmax_len = 0\n", "events.redis.max_len must be positive"),
        ("[events.redis]\nurl = \"mysql://x\"\n", "events.redis.url is not a usable Redis URL"),
        (
            "[[route]]\npath = \"/r\"\nprocessors = [{ type = \"record\", dir = \"/tmp\", keep_local = false }]\n",
            "`keep_local = false` needs `upload`",
        ),
        ("[[route]]\npath = \"/r\"\nprocessors = [{ type = \"record\", dir = \"/tmp\", upload = \"s3://Bad/\" }]\n", "the bucket \"Bad\""),
        ("[storage]\nendpoint = \"ftp://x\"\n", "storage.endpoint \"ftp://x\" must be an http:// or https:// URL"),
        ("[storage]\naccess_key_id = \"env:CALLPIPE_TEST_UNSET_KEY\"\n", "storage.access_key_id"),
    ] {
        let text =
            if text.starts_with("[cluster]") && !needle.contains("control.token") { format!("{TOKEN}{text}") } else { text.to_owned() };
        let error = Config::parse(&text, &registry).unwrap_err().to_string();
        assert!(error.contains(needle), "{text:?}: {error}");
    }
}
