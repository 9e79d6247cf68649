//! TLS for the WebSocket listener (`wss://`, as the platform connects in production).
//!
//! Every connection is a [`ServerStream`]: the accepted TCP stream itself, or that stream inside
//! a rustls session when `[server.tls]` is configured. The TLS handshake runs in the
//! connection's own task, under the same deadline as the WebSocket upgrade, never in the accept
//! loop: a slow or hostile client holds up nothing but its own task. A plain connection passes
//! through untouched (no allocation, no extra copy; reads and writes delegate straight to the
//! socket).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use super::Shared;

/// One connection's byte stream, plain or TLS.
pub(super) enum ServerStream {
    /// `ws://`: the socket itself.
    Plain(TcpStream),
    /// `wss://`: the socket inside a rustls session (boxed: the session is large).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Wraps an accepted connection for the server's scheme: runs the TLS handshake when the server
/// has TLS, by `deadline`. `None` when the handshake failed or timed out; that is counted as a
/// failed handshake and logged once.
pub(super) async fn accept(stream: TcpStream, peer: SocketAddr, shared: &Shared, deadline: Instant) -> Option<ServerStream> {
    let Some(tls) = &shared.config.server.tls else {
        return Some(ServerStream::Plain(stream));
    };
    let handshake = TlsAcceptor::from(tls.rustls.clone()).accept(stream);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => Some(ServerStream::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            shared.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            shared.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
