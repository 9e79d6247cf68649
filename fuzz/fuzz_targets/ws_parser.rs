//! The WebSocket parser (`protocol::ws::Parser`, server role) on arbitrary bytes, fed in pieces
//! whose sizes the input's first byte chooses.
//!
//! Asserts: parsing never panics; a binary message is never over the limit; the parser's
//! buffered bytes never exceed what was fed; and a stream of valid frames encoded from the same
//! input (masked, as a client sends them) parses back to exactly their payloads.
#![no_main]

use callpipe::protocol::ws::{Message, Opcode, Parser, Role, encode};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else { return };
    let piece = usize::from(piece % 64) + 1;

    // Arbitrary bytes: errors are fine, panics are not.
    let mut parser = Parser::new(Role::Server, 64, LIMIT);
    let mut fed = 0usize;
    'stream: for chunk in bytes.chunks(piece) {
        parser.push(chunk);
        fed += chunk.len();
        assert!(parser.buffered() <= fed);
        loop {
            match parser.next() {
                Ok(Some(Message::Binary(payload))) => assert!(payload.len() <= LIMIT),
                Ok(Some(Message::Text(text))) => assert!(text.len() <= LIMIT),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
    }

    // The same bytes as payloads of valid masked binary frames: they come back whole.
    let payloads: Vec<&[u8]> = bytes.chunks(piece * 7).collect();
    let mut stream = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        encode(Opcode::Binary, p, Some([i as u8, 0x5a, 0xa5, piece as u8]), &mut stream);
    }
    let mut parser = Parser::new(Role::Server, 64, LIMIT);
    let mut got: Vec<Vec<u8>> = Vec::new();
    for chunk in stream.chunks(piece) {
        parser.push(chunk);
        while let Some(message) = parser.next().expect("valid frames parse") {
            match message {
                Message::Binary(payload) => got.push(payload.to_vec()),
                other => panic!("a binary frame came back as {other:?}"),
            }
        }
    }
    assert_eq!(got.len(), payloads.len());
    for (g, p) in got.iter().zip(&payloads) {
        assert_eq!(g.as_slice(), *p);
    }
});
