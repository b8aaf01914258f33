//! A WebSocket connection on tokio with tokio-tungstenite, written the way a
//! competent user writes a room server: one task per connection, a `select!`
//! over the socket, the member's room queue, the room's kick and shutdown.
//! tungstenite parses the frames, reassembles fragments, checks UTF-8 and
//! the size limit, and answers pings and closes itself; this code maps its
//! errors to close codes (1002, 1007, 1009) and keeps the counters.
//!
//! tungstenite is configured as its docs advise for many mostly idle
//! connections (a 4 KiB read buffer instead of 128 KiB) and with the
//! server's message limit; nothing else is tuned.

use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error, Message};

use super::accept::Live;
use super::handshake::{read_upgrade, refuse, shut_and_drain, Socket};
use super::metered::Metered;
use super::room::{kick_reason, kicked, next_delivery, Membership};
use super::silence_clock::{Due, SilenceClock};
use super::tls::{accept_with_tokio_rustls, tls_failure_in};
use super::Shard;
use crate::protocol::{close_code, handshake, Route};
use crate::server::settings::Settings;
use crate::server::stats::{bump, count_tls_failure, count_violation, ShardCounters};

/// The read buffer tungstenite's docs suggest when there are many
/// connections and little read load.
const READ_BUFFER: usize = 4 * 1024;

/// How a conversation ended.
enum Ending {
    /// The peer closed (tungstenite answered) or the socket failed.
    Gone,
    /// We close with this code.
    Close(u16, &'static str),
    /// The drain told it to go (1001).
    Goodbye,
}

pub async fn serve(stream: TcpStream, shard: Arc<Shard>, live: Live) {
    let accepted = Instant::now();
    let stream = Metered::new(stream, shard.counters());
    let Some(setup) = shard.settings.tls.clone() else {
        return serve_ws(stream, accepted, &shard, live).await;
    };
    let mut first = [0u8; 16];
    let deadline = accepted + shard.settings.handshake_timeout;
    let peeked = match timeout_at(deadline, stream.get_ref().peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        Ok(_) => return bump(&shard.counters().tls_handshakes_vanished),
        Err(_) => {
            bump(&shard.counters().handshake_timeouts);
            return bump(&shard.counters().tls_handshake_stalls);
        }
    };
    if let Some(tls) = accept_with_tokio_rustls(stream, &first[..peeked], &setup, &shard).await {
        serve_ws(tls, accepted, &shard, live).await;
    }
}

async fn serve_ws<S: Socket>(mut stream: S, accepted: Instant, shard: &Shard, mut live: Live) {
    let Some((upgrade, pipelined)) = read_upgrade(&mut stream, shard).await else {
        return;
    };
    if let Err(refusal) = shard.admit() {
        bump(&shard.counters().rejected);
        refuse(
            &mut stream,
            &refusal.http_response(),
            shard.settings.close_timeout,
        )
        .await;
        return;
    }
    live.admitted = true;
    live.open = true;
    shard.histograms().handshake.observe(accepted.elapsed());
    // A member from the moment its 101 is sent (docs/protocol.md).
    let member = (upgrade.route == Route::Room).then(|| shard.rooms.messages.join(shard.id));
    if stream
        .write_all(&handshake::accept_response(&upgrade, None))
        .await
        .is_err()
    {
        return;
    }
    bump(&shard.counters().upgraded);
    let config = Some(config(&shard.settings));
    let mut ws =
        WebSocketStream::from_partially_read(stream, pipelined, Role::Server, config).await;
    let ending = converse(&mut ws, upgrade.route, member, shard).await;
    finish(ws, ending, shard, &mut live).await;
    live.open = false;
}

fn config(settings: &Settings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(settings.max_message))
        .max_frame_size(Some(settings.max_message))
}

/// Echo or publish what arrives and write what the room queues, until one
/// side ends it. The membership is dropped (leaving the room) on return.
async fn converse<S: Socket>(
    ws: &mut WebSocketStream<S>,
    route: Route,
    mut member: Option<Membership<Message>>,
    shard: &Shard,
) -> Ending {
    let counters = shard.counters();
    let mut leaving = pin!(shard.turn_to_go());
    let kick = member.as_ref().map(Membership::kick_signal);
    let mut silence = SilenceClock::new(&shard.settings);
    silence.heard(); // open from the start
    loop {
        tokio::select! {
            biased;
            _ = &mut leaving => return Ending::Goodbye,
            _ = sleep_until(silence.deadline().unwrap_or_else(Instant::now)), if silence.deadline().is_some() => {
                match silence.due(counters) {
                    Due::Ping => {
                        if ws.send(Message::Ping(Default::default())).await.is_err() {
                            return Ending::Gone;
                        }
                        silence.pinged(counters);
                    }
                    Due::Drop => return Ending::Gone,
                    Due::CloseIdle => return Ending::Close(close_code::GOING_AWAY, "idle timeout"),
                }
            }
            code = kicked(kick.as_deref()) => return Ending::Close(code, kick_reason(code)),
            Some(message) = next_delivery(member.as_mut()) => {
                let len = message.len();
                if ws.send(message).await.is_err() {
                    return Ending::Gone;
                }
                if let Some(member) = &member {
                    member.written(len);
                }
            }
            incoming = ws.next() => {
                if let Some(Ok(_)) = &incoming {
                    silence.heard(); // a pong counts
                }
                match incoming {
                    None => return Ending::Gone,
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => match route {
                        Route::Echo => {
                            if echo(ws, message, counters).await.is_err() {
                                return Ending::Gone;
                            }
                            bump(&counters.echoed);
                        }
                        Route::Room => {
                            bump(&counters.published);
                            let delivered = shard.rooms.messages.publish(&message, &shard.hub, shard.id);
                            counters.delivered.fetch_add(delivered, Relaxed);
                        }
                    },
                    // The client starts the close; tungstenite answers it.
                    Some(Ok(Message::Close(_))) => bump(&counters.peer_closes),
                    // Pings and pongs: tungstenite answers them itself.
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return violation(error, counters),
                }
            }
        }
    }
}

/// Send an echo; if the socket cannot take it now, reading from this client
/// waits until it can (counted as a read pause).
async fn echo<S: Socket>(
    ws: &mut WebSocketStream<S>,
    message: Message,
    counters: &ShardCounters,
) -> Result<(), Error> {
    let mut send = pin!(ws.send(message));
    if let Some(done) = send.as_mut().now_or_never() {
        return done;
    }
    bump(&counters.read_pauses);
    send.await
}

/// The close code for what tungstenite refused; other errors end the
/// connection without one.
fn violation(error: Error, counters: &ShardCounters) -> Ending {
    if let Error::Io(io) = &error {
        if let Some(failure) = tls_failure_in(io) {
            count_tls_failure(counters, failure);
        }
    }
    let ending = match error {
        Error::Protocol(_) => Ending::Close(close_code::PROTOCOL_ERROR, "protocol error"),
        Error::Utf8 => Ending::Close(close_code::INVALID_PAYLOAD, "invalid UTF-8"),
        Error::Capacity(_) => Ending::Close(close_code::MESSAGE_TOO_BIG, "message too big"),
        _ => return Ending::Gone,
    };
    if let Ending::Close(code, _) = ending {
        count_violation(counters, code);
    }
    ending
}

/// Close as the ending says: a close we start is sent, our side shut and
/// the peer read until it hangs up (bounded by --close-timeout).
/// A goodbye from the drain is counted, and whether it closed cleanly.
async fn finish<S: Socket>(
    mut ws: WebSocketStream<S>,
    ending: Ending,
    shard: &Shard,
    live: &mut Live,
) {
    let (code, reason, patience) = match ending {
        Ending::Gone => return,
        Ending::Goodbye => {
            bump(&shard.counters().drain_goodbyes);
            let patience = shard.settings.goodbye_patience();
            (close_code::GOING_AWAY, "server shutting down", patience)
        }
        Ending::Close(code, reason) => (code, reason, shard.settings.close_timeout),
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let closed = timeout(patience, async {
        ws.close(Some(frame)).await.map_err(std::io::Error::other)?;
        // tungstenite's stream ends at an error, so the rest is read raw.
        shut_and_drain(ws.get_mut()).await
    })
    .await;
    if matches!(ending, Ending::Goodbye) {
        live.told_to_go(matches!(closed, Ok(Ok(()))));
    }
}
