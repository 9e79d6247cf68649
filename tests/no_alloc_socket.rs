//! The whole media path of a running server allocates nothing in the steady state: calls on a
//! real `/echo` route, over loopback sockets, for seconds, while a counting global allocator
//! watches every thread of the process (the media threads reading, passing and writing; the
//! runtime's threads, which have nothing to do meanwhile; the client, which allocates nothing
//! itself).
//!
//! The client speaks WebSocket by hand on blocking sockets with buffers made beforehand, so that
//! any allocation counted is the server's. Its own file, so that no other test runs in the
//! process meanwhile.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{ECHO_CONFIG, TestServer};

#[path = "support/counting.rs"]
mod counting;

use counting::{Counting, watch_all};

#[global_allocator]
static GLOBAL: Counting = Counting;

const CALLS: usize = 20;
const RATE: u32 = 16_000;
const FRAME: usize = 640;

/// A masked client frame (RFC 6455 section 5.2) with a fixed mask.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// Opens a call on `/echo`: the upgrade, then the metadata.
fn open_call(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let metadata = format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={RATE}"}}"#);
    stream.write_all(&client_frame(0x1, metadata.as_bytes())).unwrap();
    stream
}

/// The platform's side of the calls, on blocking sockets, with every buffer made beforehand:
/// nothing it does allocates.
struct Platform {
    calls: Vec<TcpStream>,
    /// One binary frame, masked.
    frame: Vec<u8>,
    /// Eight of them, sent in one write.
    burst: Vec<u8>,
    echo: [u8; 4 + FRAME],
    /// The 20 ms clock's start, and the ticks made on it.
    start: Instant,
    ticks: u32,
}

impl Platform {
    fn new(calls: Vec<TcpStream>) -> Platform {
        let payload: Vec<u8> = (0..FRAME).map(|i| (i * 7) as u8).collect();
        let frame = client_frame(0x2, &payload);
        let burst = frame.repeat(8);
        Platform { calls, frame, burst, echo: [0; 4 + FRAME], start: Instant::now(), ticks: 0 }
    }

    /// Ticks on the 20 ms clock up to tick `until`: each sends a frame to every call, then reads
    /// its echo from every call.
    fn run(&mut self, until: u32) {
        while self.ticks < until {
            self.ticks += 1;
            for call in &mut self.calls {
                call.write_all(&self.frame).unwrap();
            }
            for call in &mut self.calls {
                read_echo(call, &mut self.echo);
            }
            let due = self.start + Duration::from_millis(20) * self.ticks;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }

    /// A network stall's backlog: eight frames at once on every call, echoed as the session
    /// catches up (several frames leave in one visit). Around it the platform's playout of what
    /// was echoed runs out, so that the echo's queue has room for the whole burst (beyond its
    /// slack it drops a backlog's echo, by design) and the ticks after it are echoed at once;
    /// the clock then goes on from the present.
    fn burst(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        for call in &mut self.calls {
            call.write_all(&self.burst).unwrap();
        }
        for call in &mut self.calls {
            for _ in 0..8 {
                read_echo(call, &mut self.echo);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        self.start = Instant::now() - Duration::from_millis(20) * self.ticks;
    }
}

fn read_echo(call: &mut TcpStream, echo: &mut [u8; 4 + FRAME]) {
    call.read_exact(echo).unwrap();
    assert_eq!(&echo[..4], &[0x82, 126, (FRAME >> 8) as u8, FRAME as u8], "one unmasked binary frame of 640 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_servers_media_path_never_allocates() {
    // The counter sees allocations, on any thread.
    let (seen, ()) = watch_all(|| std::thread::spawn(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(64)))).join().unwrap());
    assert!(seen >= 2);
    // One after the other (the counter watches the whole process): the sockets written in each
    // visit, then the visits' writes sent together through io_uring.
    steady_state(ECHO_CONFIG).await;
    if io_uring::IoUring::new(2).is_ok() {
        steady_state(&ECHO_CONFIG.replace("[media]", "[media]\nio = \"io_uring\"")).await;
    } else {
        eprintln!("io_uring is not available on this kernel: its path not checked");
    }
}

/// 20 calls on a server with `config`: none of its threads allocates over 3 s of their steady
/// state, with a stall's backlog in the middle.
async fn steady_state(config: &str) {
    let server = TestServer::start(config).await;
    let calls: Vec<TcpStream> = (0..CALLS).map(|_| open_call(&server)).collect();
    let (allocations, ticks) = tokio::task::spawn_blocking(move || {
        let mut platform = Platform::new(calls);
        // Warm-up: every call's buffers reach their steady size, including the session's
        // inbound buffer, which grows once, at a call's first burst.
        platform.run(25);
        platform.burst();
        platform.run(50);
        let (allocations, ()) = watch_all(|| {
            platform.run(125);
            platform.burst();
            platform.run(200);
        });
        (allocations, platform.ticks - 50)
    })
    .await
    .unwrap();
    assert_eq!(allocations, 0, "{allocations} allocations over {ticks} ticks of {CALLS} calls and a burst");
    assert!(server.handle.stats.frames_out.load(Ordering::Relaxed) >= (CALLS * 200) as u64);
    if config.contains("io_uring") {
        assert!(server.handle.media.batched_sends.load(Ordering::Relaxed) >= (CALLS * 150) as u64, "the sends went through io_uring");
    }
    server.stop().await;
}
