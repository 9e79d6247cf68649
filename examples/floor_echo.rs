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
//! measurement: a peer that breaks the framing is dropped without a close frame.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Bytes a connection keeps of a frame that has not arrived whole (a 20 ms frame at 24 kHz is
/// 968 bytes with its header).
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
    input: Vec<u8>,
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
            while let Ok(stream) = incoming.try_recv() {
                let key = connections.len();
                // SAFETY: the socket stays in `connections` until it is deleted from the poller.
                #[allow(unsafe_code)]
                let added = unsafe { poller.add_with_mode(&stream, Event::readable(key), PollMode::Edge) };
                if added.is_ok() {
                    connections.push(Some(Connection { stream, input: Vec::with_capacity(READ_BUFFER), output: Vec::new() }));
                }
            }
            if collect.is_zero() {
                break;
            }
            // Collect what becomes ready meanwhile, then visit it; back to the wait when
            // nothing did.
            std::thread::sleep(collect);
            events.clear();
            if poller.wait(&mut events, Some(Duration::ZERO)).is_err() || events.is_empty() {
                break;
            }
        }
    }
}

/// Reads what the socket has (once, unless the read filled the buffer), echoes each whole
/// binary frame unmasked in one write. Returns false when the connection is over.
fn visit(c: &mut Connection) -> bool {
    loop {
        let start = c.input.len();
        c.input.resize(READ_BUFFER, 0);
        let n = match c.stream.read(&mut c.input[start..]) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                c.input.truncate(start);
                return true;
            }
            Err(_) => return false,
        };
        c.input.truncate(start + n);
        let Some(used) = echo_frames(&c.input, &mut c.output) else { return false };
        c.input.drain(..used);
        if !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(n) if n == c.output.len() => {}
                _ => return false, // not this measurement's case: a full socket ends the call
            }
            c.output.clear();
        }
        if start + n < READ_BUFFER {
            return true; // a short read: the socket is drained
        }
    }
}

/// Writes each whole binary frame of `input` to `output`, unmasked; returns the bytes used, or
/// `None` at a close frame or broken framing.
fn echo_frames(input: &[u8], output: &mut Vec<u8>) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        if rest.len() < 2 {
            return Some(at);
        }
        let (opcode, masked, short) = (rest[0] & 0x0f, rest[1] & 0x80 != 0, usize::from(rest[1] & 0x7f));
        if !masked || rest[0] & 0x80 == 0 {
            return None;
        }
        let (len, header) = match short {
            126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 => return None,
            126 => return Some(at),
            n => (n, 2),
        };
        if rest.len() < header + 4 + len {
            return Some(at);
        }
        let mask = [rest[header], rest[header + 1], rest[header + 2], rest[header + 3]];
        let payload = &rest[header + 4..header + 4 + len];
        match opcode {
            0x2 => {
                output.push(0x82);
                if len < 126 {
                    output.push(len as u8);
                } else {
                    output.push(126);
                    output.extend_from_slice(&(len as u16).to_be_bytes());
                }
                output.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
            }
            0x8 => return None,
            _ => {} // text (the metadata), ping, pong: not echoed
        }
        at += header + 4 + len;
    }
}
