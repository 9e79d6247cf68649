//! The baseline callpipe's CPU is compared with: a minimal one-task-per-connection
//! tokio-tungstenite echo server (no rings, no pacing, no re-framing), with the same 8 KiB read
//! buffer callpipe uses so that the comparison is about the architecture, not that setting.
//!
//! ```sh
//! cargo run --release --example minimal_echo -- 127.0.0.1:8090
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let config = WebSocketConfig::default().read_buffer_size(8192).write_buffer_size(0);
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
            while let Some(Ok(message)) = ws.next().await {
                let sent = match message {
                    Message::Binary(b) => ws.send(Message::Binary(b)).await,
                    Message::Close(_) => return,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return;
                }
            }
        });
    }
}
