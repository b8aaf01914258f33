//! The WebSocket upgrade for the tokio-tungstenite connections, read with
//! fanout's own parser (`protocol::handshake`): tungstenite's server
//! handshake answers a bad request with an error, not with the HTTP status
//! the protocol asks for (404, 405, 408, 426, 431, 505), and has no
//! deadline. The frames after the upgrade are all tungstenite's.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

use super::Shard;
use crate::protocol::handshake::{self, Parsed, Rejection, Upgrade};
use crate::server::stats::bump;

/// What a WebSocket connection runs over: the TCP stream (metered).
pub trait Socket: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Socket for S {}

/// Read the upgrade request. A valid one is returned with the bytes that
/// followed it (pipelined frames); anything else is answered with its
/// status here, and `None` says the connection is over.
pub async fn read_upgrade(stream: &mut impl Socket, shard: &Shard) -> Option<(Upgrade, Vec<u8>)> {
    let settings = &shard.settings;
    let counters = shard.counters();
    let deadline = Instant::now() + settings.handshake_timeout;
    let mut request = Vec::new();
    loop {
        match handshake::parse_request(&request, settings.max_handshake) {
            Ok(Parsed::Upgrade { upgrade, len }) => return Some((upgrade, request.split_off(len))),
            Ok(Parsed::Partial) => {}
            Err(rejection) => {
                bump(&counters.rejected);
                refuse(stream, &rejection.response(), settings.close_timeout).await;
                return None;
            }
        }
        request.reserve(1024);
        match timeout_at(deadline, stream.read_buf(&mut request)).await {
            Ok(Ok(0)) => return None,
            Ok(Err(error)) => {
                // Over TLS: a record that failed to decrypt, an alert.
                if let Some(failure) = super::tls::tls_failure_in(&error) {
                    crate::server::stats::count_tls_failure(counters, failure);
                }
                return None;
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                bump(&counters.handshake_timeouts);
                let response = Rejection::Timeout.response();
                let _ = timeout(settings.close_timeout, stream.write_all(&response)).await;
                return None;
            }
        }
    }
}

/// Answer a refused request and close the way the hand-rolled backends do:
/// shut our side, then read until the client hangs up (bounded), so unread
/// input cannot turn the close into a reset that destroys the response.
pub async fn refuse(stream: &mut impl Socket, response: &[u8], patience: Duration) {
    let _ = timeout(patience, async {
        stream.write_all(response).await?;
        shut_and_drain(stream).await
    })
    .await;
}

/// After our last bytes: shut our side and read (discarding) until the
/// peer hangs up. Callers bound it with their patience.
pub async fn shut_and_drain(stream: &mut impl Socket) -> std::io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
