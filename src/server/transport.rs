//! A call's byte stream on its media thread: the socket itself, or the socket inside a rustls
//! session driven without I/O of its own.
//!
//! The TLS handshake and the upgrade run on the runtime (`tls`, `admission`); what the media
//! thread gets is the non-blocking socket and, for `wss://`, the established
//! [`ServerConnection`]. Its records are read and written here with `read_tls`/`write_tls` on
//! the socket, so that a TLS call costs the media thread the decryption and nothing else: no
//! task, no extra copy between threads.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use tokio_rustls::rustls::ServerConnection;

/// A call's byte stream. See the [module docs](self).
pub(super) enum Transport {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://` (boxed: the session is large).
    Tls(TcpStream, Box<ServerConnection>),
}

impl Transport {
    /// The socket the media thread watches.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) | Transport::Tls(socket, _) => socket,
        }
    }

    /// Reads into `buf`: `Ok(0)` at the end of the stream, `WouldBlock` when nothing waits.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            Transport::Tls(socket, tls) => loop {
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if tls.read_tls(socket)? == 0 {
                    return Ok(0);
                }
                if let Err(e) = tls.process_new_packets() {
                    // The alert rustls queued for the peer goes out before the error is reported.
                    let _ = tls.write_tls(socket);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                if tls.wants_write() {
                    Self::write_records(socket, tls)?;
                }
            },
        }
    }

    /// Whether a read that returned `n` bytes into a buffer of `asked` may have left more in
    /// the stream. A short read from a socket took everything that was there (more arriving
    /// raises a new edge); decrypted records come in pieces, so TLS reads until it would block.
    pub fn may_have_more(&self, n: usize, asked: usize) -> bool {
        match self {
            Transport::Plain(_) => n == asked,
            Transport::Tls(..) => n > 0,
        }
    }

    /// Writes from `buf`, returning how much was taken (TLS takes it all into records, up to
    /// rustls's buffer limit, and sends what the socket accepts).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(buf),
            Transport::Tls(socket, tls) => {
                let n = tls.writer().write(buf)?;
                Self::write_records(socket, tls)?;
                if n == 0 && !buf.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    /// Whether encrypted bytes wait for the socket.
    pub fn has_pending(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(_, tls) => tls.wants_write(),
        }
    }

    /// Sends what waits in the TLS session, as far as the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(socket, tls) => Self::write_records(socket, tls),
        }
    }

    /// Before the socket closes: a TLS session says so (`close_notify`).
    pub fn close(&mut self) {
        if let Transport::Tls(socket, tls) = self {
            tls.send_close_notify();
            let _ = Self::write_records(socket, tls);
        }
    }

    fn write_records(socket: &mut TcpStream, tls: &mut ServerConnection) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
