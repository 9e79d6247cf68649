//! The client's half of the WebSocket HTTP upgrade, without I/O; the framing both roles share
//! is [`crate::protocol::ws`].

use std::fmt::Write as _;

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

pub use crate::protocol::ws::{Message, Opcode, Parser, Role, WireError, encode, encode_close};

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
