//! The floor under any WebSocket echo on this machine: what a server costs that does nothing per
//! frame but read it, unmask it and write it back. No sessions, no pipeline, no pacing, no
//! checks beyond the framing; a media thread per core owns its sockets (edge-triggered, one
//! read per readiness, one write per read), as callpipe's do. `benches/peer_compare.sh` runs it
//! with `FLOOR=1` beside callpipe and the minimal echo, to show how much of a server's CPU per
//! frame is the kernel's (the read, the write and the loopback delivery to the client, and the
//! thread's wake-ups), which no server can save.
//!
//! ```sh
//! cargo run --release --example floor_echo -- 127.0.0.1:8090 [COLLECT_US]
//! ```
//!
//! `COLLECT_US` (default 250): after visiting the sockets that were ready, a thread sleeps that
//! long and visits what became ready meanwhile, as a busy callpipe media thread does (it then
//! wakes a few times a millisecond instead of once per frame); 0 visits each socket as soon as
//! it is ready, as a one-task-per-connection server does. Not a server for anything but this
//! measurement: a peer that breaks the framing, closes or stops reading is dropped without a
//! close frame.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The read buffer a connection starts with (a 20 ms frame at 24 kHz is 968 bytes with its
/// header); it doubles while a frame does not fit.
const READ_BUFFER: usize = 4096;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let collect = Duration::from_micros(args.next().map(|s| s.parse()).transpose()?.unwrap_or(250));
    let listener = TcpListener::bind(&addr)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut feeds = Vec::new();
    for _ in 0..threads {
        let poller = Arc::new(Poller::new()?);
        let (tx, rx) = channel();
        let thread_poller = Arc::clone(&poller);
        std::thread::spawn(move || run(&thread_poller, &rx, collect));
        feeds.push((poller, tx));
    }
    for (n, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        if let Some(stream) = upgrade(stream) {
            let (poller, tx): &(Arc<Poller>, Sender<TcpStream>) = &feeds[n % threads];
            if tx.send(stream).is_ok() {
                poller.notify()?;
            }
        }
    }
    Ok(())
}

/// Answers the upgrade request (blocking), and returns the socket ready for frames.
fn upgrade(mut stream: TcpStream) -> Option<TcpStream> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if request.len() > 8192 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        request.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&request);
    let key = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
    })?;
    let accept = derive_accept_key(key.as_bytes());
    let response =
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    stream.write_all(response.as_bytes()).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

struct Connection {
    stream: TcpStream,
    /// Bytes read, `filled` of them not yet parsed (from the start).
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
}

/// One media thread: visits each connection whose socket is ready.
fn run(poller: &Poller, incoming: &Receiver<TcpStream>, collect: Duration) {
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut events = Events::new();
    loop {
        events.clear();
        if poller.wait(&mut events, None).is_err() {
            return;
        }
        loop {
            for event in events.iter() {
                let done = connections.get_mut(event.key).and_then(Option::as_mut).is_some_and(|c| !visit(c));
                if done && let Some(connection) = connections[event.key].take() {
                    let _ = poller.delete(&connection.stream);
                }
            }
            take_incoming(poller, incoming, &mut connections);
            if collect.is_zero() {
                break;
            }
            // Collect what becomes ready meanwhile, then visit it; back to the wait when
            // nothing did.
            std::thread::sleep(collect);
            events.clear();
            if poller.wait(&mut events, Some(Duration::ZERO)).is_err() {
                return;
            }
            if events.is_empty() {
                // The wait may have taken a notification of a new connection.
                take_incoming(poller, incoming, &mut connections);
                break;
            }
        }
    }
}

/// Watches the connections the listener handed this thread.
fn take_incoming(poller: &Poller, incoming: &Receiver<TcpStream>, connections: &mut Vec<Option<Connection>>) {
    while let Ok(stream) = incoming.try_recv() {
        let key = connections.len();
        // SAFETY: the socket stays in `connections` until it is deleted from the poller.
        #[allow(unsafe_code)]
        let added = unsafe { poller.add_with_mode(&stream, Event::readable(key), PollMode::Edge) };
        if added.is_ok() {
            connections.push(Some(Connection { stream, input: vec![0; READ_BUFFER], filled: 0, output: Vec::new() }));
        }
    }
}

/// Reads what the socket has (once, unless the read filled the buffer) and echoes each whole
/// binary frame unmasked, in one write. Returns false when the connection is over.
fn visit(c: &mut Connection) -> bool {
    loop {
        if c.filled == c.input.len() {
            let len = c.input.len() * 2;
            c.input.resize(len, 0);
        }
        let asked = c.input.len() - c.filled;
        let n = match c.stream.read(&mut c.input[c.filled..]) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        c.filled += n;
        let (used, open) = echo_frames(&c.input[..c.filled], &mut c.output);
        c.input.copy_within(used..c.filled, 0);
        c.filled -= used;
        if !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(n) if n == c.output.len() => {}
                _ => return false, // not this measurement's case: a full socket ends the call
            }
            c.output.clear();
        }
        if !open {
            return false;
        }
        if n < asked {
            return true; // a short read: the socket is drained
        }
    }
}

/// Writes each whole binary frame of `input` to `output`, unmasked. Returns the bytes used and
/// whether the connection stays open (false at a close frame or broken framing; the frames
/// before it are in `output`).
fn echo_frames(input: &[u8], output: &mut Vec<u8>) -> (usize, bool) {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        if rest.len() < 2 {
            return (at, true);
        }
        let (opcode, masked, short) = (rest[0] & 0x0f, rest[1] & 0x80 != 0, usize::from(rest[1] & 0x7f));
        if !masked || rest[0] & 0x80 == 0 {
            return (at, false);
        }
        let (len, header) = match short {
            126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&rest[2..10]);
                match usize::try_from(u64::from_be_bytes(bytes)) {
                    Ok(len) if len <= 1 << 24 => (len, 10),
                    _ => return (at, false),
                }
            }
            126 | 127 => return (at, true),
            n => (n, 2),
        };
        if rest.len() < header + 4 + len {
            return (at, true);
        }
        let mask = [rest[header], rest[header + 1], rest[header + 2], rest[header + 3]];
        let payload = &rest[header + 4..header + 4 + len];
        match opcode {
            0x2 => {
                output.push(0x82);
                if len < 126 {
                    output.push(len as u8);
                } else if len <= usize::from(u16::MAX) {
                    output.push(126);
                    output.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    output.push(127);
                    output.extend_from_slice(&(len as u64).to_be_bytes());
                }
                output.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
            }
            0x8 => return (at, false),
            _ => {} // text (the metadata), ping, pong: not echoed
        }
        at += header + 4 + len;
    }
}
