//! WebSocket (RFC 6455) framing, both roles, without I/O.
//!
//! callpipe's media threads and the emulator's drivers each serve thousands of sockets from a few
//! threads, so they frame messages themselves: [`encode`] appends one frame (masked by a client,
//! plain from a server) to a reusable buffer, and [`Parser`] takes bytes as they arrive and
//! yields whole messages, borrowing from its buffer. Both are bounded: a message over the limit
//! is an error, never an allocation. A parser's buffer starts at the size its caller expects
//! (two audio frames on the server) and grows only for a larger message, up to the limit.

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

/// Which end of the connection parses: a server's peer must mask every frame, a client's peer
/// must not (RFC 6455 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Parses what a client sent.
    Server,
    /// Parses what a server sent.
    Client,
}

/// The largest frame header: 2 bytes, 8 of length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// Appends one complete frame to `out`: masked with `mask` (a client's frame) or plain (a
/// server's).
pub fn encode(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode.bits());
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// Appends a close frame with `code` and `reason` (cut to fit a control frame's 125 bytes, on a
/// character boundary).
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode(Opcode::Close, &payload[..2 + cut], mask, out);
}

/// A message from the peer.
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

/// Why the peer's bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A reserved bit or opcode, a fragmented control frame, a frame masked (or not) against
    /// the role's rule.
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

/// Parses frames from a byte stream. Feed bytes with [`Parser::buffer_mut`] and
/// [`Parser::filled`], then take messages with [`Parser::next`].
#[derive(Debug)]
pub struct Parser {
    role: Role,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_message: usize,
    fragments: Vec<u8>,
    fragment_opcode: Option<Opcode>,
}

impl Parser {
    /// A parser for `role`, with a buffer of `initial` bytes, accepting messages of at most
    /// `max_message` bytes.
    pub fn new(role: Role, initial: usize, max_message: usize) -> Parser {
        Parser {
            role,
            buf: vec![0; initial.clamp(MAX_HEADER, max_message + MAX_HEADER)],
            start: 0,
            end: 0,
            max_message,
            fragments: Vec::new(),
            fragment_opcode: None,
        }
    }

    /// Free space to read into. Compacts the buffer, and grows it up to what the largest
    /// allowed frame needs; empty when the buffer holds a whole largest frame already.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.max_message + MAX_HEADER {
            let grown = (self.buf.len() * 2).min(self.max_message + MAX_HEADER);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`buffer_mut`](Parser::buffer_mut).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes received and not yet parsed into a message.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Shrinks the buffer to `size` bytes (or what it holds, if more): after a large first
    /// message, a call's parser goes back to the size its frames need.
    pub fn shrink_to(&mut self, size: usize) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let size = size.clamp(MAX_HEADER, self.max_message + MAX_HEADER).max(self.end);
        self.buf.truncate(size);
        self.buf.resize(size, 0);
        self.buf.shrink_to_fit();
    }

    /// Appends bytes (for what arrived with the upgrade, and for tests).
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
            match (self.role, masked) {
                (Role::Server, false) => return Err(WireError::Invalid("a client frame without a mask")),
                (Role::Client, true) => return Err(WireError::Invalid("a masked server frame")),
                _ => {}
            }
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
                unmask(&mut self.buf[payload_start..payload_end], mask);
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
                Opcode::Text | Opcode::Binary if self.fragment_opcode.is_some() => {
                    return Err(WireError::Invalid("new message inside a fragmented one"));
                }
                _ => return message(opcode, &self.buf[payload_start..payload_end]).map(Some),
            }
        }
    }
}

/// XORs `payload` with the 4-byte `mask`, word by word where it can.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

fn message(opcode: Opcode, payload: &[u8]) -> Result<Message<'_>, WireError> {
    Ok(match opcode {
        Opcode::Text => Message::Text(std::str::from_utf8(payload).map_err(|_| WireError::Utf8)?),
        Opcode::Binary | Opcode::Continuation => Message::Binary(payload),
        Opcode::Ping => Message::Ping(payload),
        Opcode::Pong => Message::Pong,
        Opcode::Close => match payload.len() {
            0 => Message::Close(None),
            1 => return Err(WireError::Invalid("a close frame of one byte")),
            _ => {
                std::str::from_utf8(&payload[2..]).map_err(|_| WireError::Utf8)?;
                Message::Close(Some(u16::from_be_bytes([payload[0], payload[1]])))
            }
        },
    })
}

#[cfg(test)]
mod tests;
