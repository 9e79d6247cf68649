//! Opening one call's connection: TCP with a small send buffer, then the WebSocket upgrade,
//! blocking with a timeout on a connector thread; the socket is handed on non-blocking.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use super::{Target, random_u64};
use crate::client::ClientError;
use crate::client::platform::CallPlan;
use crate::client::wire;

/// The kernel send buffer of each call. A real-time stream needs a few frames in flight, not
/// the megabytes TCP autotuning would allow: with this, a server that stops reading shows up
/// as unsent frames within seconds instead of as latency hidden in the kernel.
const SEND_BUFFER: usize = 32 * 1024;

/// Opens the TCP connection and performs the upgrade, blocking with a timeout.
pub(super) fn connect(target: &Target, plan: &CallPlan, timeout: Duration) -> Result<(TcpStream, Vec<u8>), ClientError> {
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&target.addr, timeout).map_err(|source| ClientError::Connect { addr: target.addr, source })?;
    stream.set_nodelay(true).map_err(ClientError::Io)?;
    socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER).map_err(ClientError::Io)?;
    let key_bytes: [u8; 16] = std::array::from_fn(|i| (random_u64() >> (i % 8 * 8)) as u8);
    let mut headers = Cow::Borrowed(&plan.upgrade_headers[..]);
    if let Some(jwt) = &plan.jwt {
        headers.to_mut().push(("Authorization".into(), jwt.authorization(SystemTime::now())));
    }
    let (request, key) = wire::upgrade_request(&target.host, &target.path_and_query, &headers, key_bytes);
    stream.set_write_timeout(Some(timeout)).map_err(ClientError::Io)?;
    stream.write_all(request.as_bytes()).map_err(ClientError::Io)?;
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| ClientError::Wire(wire::WireError::Handshake("timed out".into())))?;
        stream.set_read_timeout(Some(left)).map_err(ClientError::Io)?;
        let n = stream.read(&mut buf).map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Wire(wire::WireError::Handshake("connection closed during the upgrade".into())));
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = wire::parse_upgrade_response(&response, &key).map_err(ClientError::Wire)? {
            stream.set_nonblocking(true).map_err(ClientError::Io)?;
            return Ok((stream, response.split_off(end)));
        }
    }
}
