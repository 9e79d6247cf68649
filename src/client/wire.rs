//! The client's half of WebSocket (RFC 6455) framing and the HTTP upgrade, without I/O.
//!
//! The load generator drives thousands of sockets from a few threads, so it frames messages
//! itself: [`encode`] writes one masked client frame into a reusable buffer, and [`Parser`]
//! takes bytes as they arrive and yields whole messages, borrowing from its buffer. Both are
//! bounded: a message over the configured limit is an error, never an allocation.

use std::fmt::Write as _;

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Frame opcodes (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A continuation of a fragmented message.
    Continuation,
    /// A UTF-8 text message.
    Text,
    /// A binary message.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }
}

/// Appends one complete, masked client frame to `out`.
pub fn encode(opcode: Opcode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode.bits());
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Appends a close frame with `code`.
pub fn encode_close(code: u16, mask: [u8; 4], out: &mut Vec<u8>) {
    encode(Opcode::Close, &code.to_be_bytes(), mask, out);
}

/// A message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping; answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame, with its code when it has one.
    Close(Option<u16>),
}

/// Why the server's bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A reserved bit or opcode, or a fragmented control frame.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
    /// A message larger than the limit.
    #[error("message of {0} bytes is over the limit")]
    TooBig(u64),
    /// A text message that is not UTF-8.
    #[error("text message is not UTF-8")]
    Utf8,
    /// The upgrade was refused or malformed.
    #[error("upgrade failed: {0}")]
    Handshake(String),
}

/// Parses server frames from a byte stream. Feed bytes with [`Parser::buffer_mut`] and
/// [`Parser::filled`], then take messages with [`Parser::next`].
#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_message: usize,
    fragments: Vec<u8>,
    fragment_opcode: Option<Opcode>,
}

impl Parser {
    /// A parser accepting messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Parser {
        Parser { buf: vec![0; 16 * 1024], start: 0, end: 0, max_message, fragments: Vec::new(), fragment_opcode: None }
    }

    /// Free space to read into. Compacts the buffer, and grows it up to what the largest
    /// allowed frame needs.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.max_message + 14 {
            let grown = (self.buf.len() * 2).min(self.max_message + 14);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`buffer_mut`](Parser::buffer_mut).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends bytes (for leftovers of the handshake and for tests).
    pub fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let space = self.buffer_mut();
            let n = space.len().min(rest.len());
            if n == 0 {
                return;
            }
            space[..n].copy_from_slice(&rest[..n]);
            self.filled(n);
            rest = &rest[n..];
        }
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Message<'_>>, WireError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (avail[0], avail[1]);
            if b0 & 0x70 != 0 {
                return Err(WireError::Invalid("reserved bits set"));
            }
            let fin = b0 & 0x80 != 0;
            let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WireError::Invalid("unknown opcode"))?;
            let masked = b1 & 0x80 != 0;
            let (len, mut header) = match b1 & 0x7F {
                126 if avail.len() >= 4 => (u64::from(u16::from_be_bytes([avail[2], avail[3]])), 4),
                127 if avail.len() >= 10 => {
                    (u64::from_be_bytes([avail[2], avail[3], avail[4], avail[5], avail[6], avail[7], avail[8], avail[9]]), 10)
                }
                126 | 127 => return Ok(None),
                n => (u64::from(n), 2),
            };
            if len > self.max_message as u64 {
                return Err(WireError::TooBig(len));
            }
            let is_control = matches!(opcode, Opcode::Close | Opcode::Ping | Opcode::Pong);
            if is_control && (!fin || len > 125) {
                return Err(WireError::Invalid("fragmented or oversized control frame"));
            }
            let mask = if masked {
                if avail.len() < header + 4 {
                    return Ok(None);
                }
                let m = [avail[header], avail[header + 1], avail[header + 2], avail[header + 3]];
                header += 4;
                Some(m)
            } else {
                None
            };
            let len = len as usize;
            if avail.len() < header + len {
                return Ok(None);
            }
            let payload_start = self.start + header;
            let payload_end = payload_start + len;
            self.start = payload_end;
            if let Some(mask) = mask {
                for (i, b) in self.buf[payload_start..payload_end].iter_mut().enumerate() {
                    *b ^= mask[i & 3];
                }
            }
            match opcode {
                Opcode::Continuation => {
                    let Some(first) = self.fragment_opcode else {
                        return Err(WireError::Invalid("continuation without a first fragment"));
                    };
                    if self.fragments.len() + len > self.max_message {
                        return Err(WireError::TooBig((self.fragments.len() + len) as u64));
                    }
                    self.fragments.extend_from_slice(&self.buf[payload_start..payload_end]);
                    if fin {
                        self.fragment_opcode = None;
                        return message(first, &self.fragments).map(Some);
                    }
                }
                Opcode::Text | Opcode::Binary if !fin => {
                    if self.fragment_opcode.is_some() {
                        return Err(WireError::Invalid("new message inside a fragmented one"));
                    }
                    self.fragments.clear();
                    self.fragments.extend_from_slice(&self.buf[payload_start..payload_end]);
                    self.fragment_opcode = Some(opcode);
                }
                _ => return message(opcode, &self.buf[payload_start..payload_end]).map(Some),
            }
        }
    }
}

fn message(opcode: Opcode, payload: &[u8]) -> Result<Message<'_>, WireError> {
    Ok(match opcode {
        Opcode::Text => Message::Text(std::str::from_utf8(payload).map_err(|_| WireError::Utf8)?),
        Opcode::Binary | Opcode::Continuation => Message::Binary(payload),
        Opcode::Ping => Message::Ping(payload),
        Opcode::Pong => Message::Pong,
        Opcode::Close => Message::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
    })
}

/// The HTTP upgrade request for `host` and `path_and_query`, with extra headers, and the key
/// whose accept value the response must carry.
pub fn upgrade_request(host: &str, path_and_query: &str, headers: &[(String, String)], key_bytes: [u8; 16]) -> (String, String) {
    let key = base64(&key_bytes);
    let mut request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    (request, key)
}

/// Checks the upgrade response in `buf`. `Ok(None)` until the headers are complete; then the
/// number of bytes they took (anything after them is the first WebSocket data).
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, WireError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err(WireError::Handshake("response headers over 16 KiB".into()));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| WireError::Handshake("response is not text".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "101" {
        return Err(WireError::Handshake(format!("HTTP {}", status.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))));
    }
    let expected = derive_accept_key(key.as_bytes());
    let accepted =
        lines.filter_map(|l| l.split_once(':')).any(|(n, v)| n.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expected);
    if !accepted {
        return Err(WireError::Handshake("missing or wrong Sec-WebSocket-Accept".into()));
    }
    Ok(Some(end + 4))
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasked server frame.
    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn encodes_masked_frames_per_rfc_6455() {
        // RFC 6455 section 5.7: a masked "Hello".
        let mut out = Vec::new();
        encode(Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d], &mut out);
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        out.clear();
        encode(Opcode::Binary, &[0u8; 640], [1, 2, 3, 4], &mut out);
        assert_eq!(&out[..4], [0x82, 0xFE, 0x02, 0x80]);
        assert_eq!(out.len(), 4 + 4 + 640);
    }

    #[test]
    fn parses_split_fragmented_and_control_frames() {
        let mut stream = server_frame(0x82, &[7u8; 640]);
        stream.extend(server_frame(0x01, b"{\"ac"));
        stream.extend(server_frame(0x89, b"hi"));
        stream.extend(server_frame(0x80, b"tion\":\"clear\"}"));
        stream.extend(server_frame(0x88, &1000u16.to_be_bytes()));
        let mut parser = Parser::new(65536);
        let mut got = Vec::new();
        for byte in stream {
            parser.push(&[byte]);
            while let Some(m) = parser.next().unwrap() {
                got.push(format!("{m:?}").chars().take(40).collect::<String>());
            }
        }
        assert_eq!(got.len(), 4);
        assert!(got[0].starts_with("Binary([7, 7"));
        assert_eq!(got[1], "Ping([104, 105])");
        assert_eq!(got[2], "Text(\"{\\\"action\\\":\\\"clear\\\"}\")");
        assert_eq!(got[3], "Close(Some(1000))");
    }

    #[test]
    fn refuses_bad_frames() {
        let mut p = Parser::new(1000);
        p.push(&server_frame(0x82, &[0; 1001]));
        assert_eq!(p.next(), Err(WireError::TooBig(1001)));
        let mut p = Parser::new(1000);
        p.push(&[0x83, 0x00]);
        assert!(p.next().is_err());
        let mut p = Parser::new(1000);
        p.push(&server_frame(0x09, b"x"));
        assert!(p.next().is_err(), "fragmented ping");
        let mut p = Parser::new(1000);
        p.push(&server_frame(0x81, &[0xff, 0xfe]));
        assert_eq!(p.next(), Err(WireError::Utf8));
    }

    #[test]
    fn upgrade_round_trip() {
        let (request, key) = upgrade_request("127.0.0.1:1", "/echo?call=1", &[("Authorization".into(), "Bearer x".into())], [0; 16]);
        assert!(request.starts_with("GET /echo?call=1 HTTP/1.1\r\n"));
        assert!(request.contains("Authorization: Bearer x\r\n"));
        assert_eq!(key, "AAAAAAAAAAAAAAAAAAAAAA==");
        let accept = derive_accept_key(key.as_bytes());
        let response = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\nXY");
        assert_eq!(parse_upgrade_response(response.as_bytes(), &key), Ok(Some(response.len() - 2)));
        assert_eq!(parse_upgrade_response(b"HTTP/1.1 101 Switching", &key), Ok(None));
        let refused = parse_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n", &key).unwrap_err();
        assert_eq!(refused.to_string(), "upgrade failed: HTTP 404 Not Found");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }
}
