//! Helpers for end-to-end tests: a server on 127.0.0.1:0 and a WebSocket client.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod helper;
pub mod tones;

use std::net::SocketAddr;
use std::time::Duration;

use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use callpipe::server::Handle;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config_text: &str) -> TestServer {
        TestServer::start_with(config_text, ProcessorRegistry::with_builtins()).await
    }

    pub async fn start_with(config_text: &str, registry: ProcessorRegistry) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .try_init();
        let mut config = Config::parse(config_text, &registry).expect("valid test config");
        // Tests run side by side: the control API takes a free port, and call events stay off
        // standard output unless a test asks for them.
        if config.control.listen == Some("127.0.0.1:8081".parse().unwrap()) {
            config.control.listen = Some("127.0.0.1:0".parse().unwrap());
        }
        if config.events.log == callpipe::events::LogSink::Stdout {
            config.events.log = callpipe::events::LogSink::Off;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            callpipe::server::run(
                listener,
                config,
                registry,
                async {
                    let _ = stop_rx.await;
                },
                move |h| {
                    let _ = handle_tx.send(h);
                },
            )
            .await
            .unwrap();
        });
        let handle = handle_rx.await.unwrap();
        TestServer { addr, handle, stop: Some(stop_tx), task: Some(task) }
    }

    /// The control API's URL for `path`.
    pub fn control_url(&self, path: &str) -> String {
        format!("http://{}{}", self.handle.control.expect("the control API is on"), path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub async fn connect(&self, path: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(path)).await.expect("upgrade");
        ws
    }

    /// Connects and sends metadata at `rate`.
    pub async fn call(&self, path: &str, rate: u32) -> Client {
        let mut ws = self.connect(path).await;
        ws.send(Message::text(format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={rate}"}}"#))).await.unwrap();
        ws
    }

    /// Signals shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task).await.expect("server stops").unwrap();
        }
    }
}

pub const ECHO_CONFIG: &str = r#"
[server]
stats_interval_ms = 0
metadata_timeout_ms = 500
shutdown_grace_ms = 300
[media]
threads = 2
[[route]]
path = "/echo"
processors = [{ type = "echo" }]
"#;

/// Reads messages until a close frame (or the end); returns its code.
pub async fn close_code(ws: &mut Client) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("no close within 5 s"),
        }
    }
}

/// Sends `frames` frames at `rate` on a 20 ms clock over a call whose metadata is sent, while
/// collecting what comes back, then closes. Returns (sent, received), every binary message in
/// order.
pub async fn echo_over<S>(ws: WebSocketStream<S>, rate: u32, frames: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let bytes = rate as usize / 50 * 2;
    let (mut tx, mut rx) = ws.split();
    let sent: Vec<Vec<u8>> = (0..frames).map(|n| test_frame(n, bytes)).collect();
    let to_send = sent.clone();
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for (n, frame) in to_send.into_iter().enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(20 * n as u64)).await;
            tx.send(Message::binary(frame)).await.unwrap();
        }
        tx
    });
    let mut received = Vec::new();
    while received.len() < frames as usize {
        match tokio::time::timeout(Duration::from_secs(2), rx.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => received.push(b.to_vec()),
            Ok(Some(Ok(_))) => {}
            other => {
                eprintln!("echo stalled after {} frames at {rate} Hz: {other:?}", received.len());
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
        }
    }
    let mut tx = sender.await.unwrap();
    tx.send(Message::Close(None)).await.unwrap();
    (sent, received)
}

/// A deterministic, audio-like frame: every byte depends on the frame number and position.
pub fn test_frame(n: u32, bytes: usize) -> Vec<u8> {
    (0..bytes / 2).flat_map(|i| (((n as i32 * 7919 + i as i32 * 31) % 20000 - 10000) as i16).to_le_bytes()).collect()
}

/// The process's file-size limit (`RLIMIT_FSIZE`) lowered while it lives, so that writes past it
/// fail with `EFBIG` as a full disk fails them with `ENOSPC`. It is restored on drop (a
/// panic included) so that the test harness can go on writing its report, whose output may be a
/// file already longer than `LIMIT` (as when CI's output goes to a log file).
pub struct FileSizeLimit(libc::rlimit);

impl FileSizeLimit {
    #[allow(unsafe_code)]
    pub fn set(bytes: u64) -> FileSizeLimit {
        // SAFETY: ignoring SIGXFSZ (so that a write past the limit fails with EFBIG instead of
        // killing the process) and lowering this process's own soft limit touch no memory of ours.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
            let saved = limit;
            limit.rlim_cur = bytes as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
            FileSizeLimit(saved)
        }
    }
}

impl Drop for FileSizeLimit {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: as above; restores the limit read in `set`.
        unsafe {
            libc::setrlimit(libc::RLIMIT_FSIZE, &self.0);
        }
    }
}

/// Drives an 8 kHz `record` processor by hand (until its disk fills, in the disk-full tests): prepares it for a call with `services`, runs
/// one pass per caller frame from `frames` (echoed as the outbound side; 10 ms apart, a little
/// faster than real time so the writer keeps up), then finishes it. Returns the `recording`
/// events' states and data, in order.
pub fn record_until_full(
    record: &mut callpipe::processor::Record,
    services: &callpipe::services::Services,
    passes: u64,
    mut frames: impl FnMut(u64) -> Vec<i16>,
) -> Vec<(String, serde_json::Value)> {
    use callpipe::processor::{CallInfo, Context, Event, Processor, Requests, Setup};
    use callpipe::protocol::{Metadata, SampleRate};
    let rate = SampleRate::Hz8000;
    let call = CallInfo { id: "full".into(), path: "/rec".into(), metadata: Metadata::new(rate) };
    record.prepare(&Setup { rate, call: &call, services }).unwrap();
    let mut requests = Requests::new(160);
    let mut events = Vec::new();
    let started = std::time::Instant::now();
    for n in 0..passes {
        let mut input = frames(n);
        let mut output = input.clone();
        requests.reset(160);
        record.process(&mut Context::new(started, n, rate, &mut input, true, &mut output, &mut requests));
        events.extend(requests.events().iter().map(|(_, e)| e.clone()));
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut input, mut output) = (vec![0; 160], vec![0; 160]);
    requests.reset(160);
    record.finish(&mut Context::new(started, passes, rate, &mut input, false, &mut output, &mut requests));
    events.extend(requests.events().iter().map(|(_, e)| e.clone()));
    events
        .iter()
        .filter_map(|event| match event {
            Event::Recording(recording) => {
                let data = recording.to_json();
                Some((data["state"].as_str().unwrap_or_default().to_owned(), data))
            }
            _ => None,
        })
        .collect()
}

/// A bot of a test's own on 127.0.0.1:0: each connection is upgraded and handed to `script`.
/// Returns the URL to call (`ws://ADDR/bot`).
pub async fn scripted_bot<F, Fut>(script: F) -> String
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                    script(ws).await;
                }
            });
        }
    });
    format!("ws://{addr}/bot")
}
