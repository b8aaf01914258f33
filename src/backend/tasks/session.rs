//! A connection task that runs fanout's own protocol session
//! (`server::session::on_input`) over an async socket: every connection of
//! `--backend tokio-uring`, and the raw-TCP protocol (`--proto tcp`) on the
//! tokio backends, where there is no tungstenite to use. The protocol
//! decisions are the ones the hand-rolled backends make; only the runtime
//! and the task around them differ.

use std::io;
use std::net::Shutdown;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::time::{sleep_until, timeout, Instant};

use super::accept::Live;
use super::deflate;
use super::metered::Metered;
use super::room::{kick_reason, kicked, next_delivery, Kick, Membership};
use super::silence_clock::{Due, SilenceClock};
use super::tls::TlsTransport;
use super::transport::Transport;
use super::Shard;
use crate::protocol::deflate::conn::estimated_codec_bytes;
use crate::protocol::deflate::{Agreed, ConnDeflate, DeflateMode};
use crate::protocol::frame::{self, OpCode};
use crate::protocol::handshake::Rejection;
use crate::protocol::message::Violation;
use crate::protocol::{close_code, Proto, Route};
use crate::server;
use crate::server::admission::Refusal;
use crate::server::deflate::DeflateEvent;
use crate::server::session::{self, Ending, Limits, Outbox, Phase};
use crate::server::stats::{bump, count_violation, ShardCounters};

/// What one batch of input produced.
#[derive(Default)]
struct Produced<'a> {
    replies: Vec<u8>,
    echoes: u64,
    published: Vec<Bytes>,
    /// The shard that admits upgrades (none: nothing to admit).
    shard: Option<&'a Shard>,
    /// An upgrade was admitted.
    admitted: bool,
    /// The connection's permessage-deflate state, lent for this batch.
    deflate: Option<ConnDeflate>,
    /// The bytes its codec was estimated at (held in the shard's budget).
    deflate_bytes: u64,
}

impl Outbox for Produced<'_> {
    fn admit(&mut self) -> Result<(), Refusal> {
        let Some(shard) = self.shard else {
            return Ok(());
        };
        let admitted = shard.admit();
        self.admitted = admitted.is_ok();
        admitted
    }
    fn reply(&mut self, parts: &[&[u8]]) {
        parts
            .iter()
            .for_each(|part| self.replies.extend_from_slice(part));
    }
    fn echo(&mut self, parts: &[&[u8]]) {
        self.echoes += 1;
        self.reply(parts);
    }
    fn publish(&mut self, frame: Bytes) {
        self.published.push(frame);
    }
    fn agree_deflate(&mut self, agreed: &Agreed) -> bool {
        let Some(shard) = self.shard else {
            return false;
        };
        let settings = shard.settings.deflate;
        if settings.mode == DeflateMode::PerConnection {
            let bytes = estimated_codec_bytes(agreed);
            let share = settings.memory.map(|all| all / shard.hub.shards() as u64);
            let gauge = &shard.counters().deflate_codec_bytes;
            if !server::deflate::reserve(gauge, share, bytes) {
                return false;
            }
            self.deflate_bytes = bytes;
        }
        if settings.mode == DeflateMode::Shared {
            deflate::warm(agreed.server_window_bits);
        }
        self.deflate = Some(ConnDeflate::new(settings.mode, agreed));
        true
    }
    fn deflating(&self) -> bool {
        self.deflate.is_some()
    }
    fn compressed_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes {
        let conn = self.deflate.as_mut().expect("agreed on deflate");
        deflate::compressed_frame(conn, opcode, payload)
    }
    fn inflate(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, Violation> {
        let conn = self.deflate.as_mut().expect("agreed on deflate");
        deflate::inflate(conn, opcode, payload, max)
    }
    fn count_deflate(&mut self, event: DeflateEvent) {
        if let Some(shard) = self.shard {
            server::deflate::count(shard.counters(), &event);
        }
    }
}

/// How the conversation ended, and so how to close.
enum Close {
    /// Nothing more to send or wait for: drop the socket.
    Now,
    /// Our last bytes are written; shut our side and read until the peer
    /// hangs up (bounded by --close-timeout).
    Drain,
    /// We end it: close with this code (TCP: our FIN), bounded by
    /// --close-timeout.
    Say(u16, &'static str),
    /// The drain told it to go: 1001 (TCP: our FIN), counted.
    Goodbye,
}

pub async fn serve<T: Transport>(transport: T, shard: Arc<Shard>, mut live: Live) {
    let transport = Metered::new(transport, shard.counters());
    match shard.settings.tls.clone() {
        None => run(&transport, &shard, &mut live).await,
        Some(setup) => {
            if let Some(tls) = TlsTransport::accept(transport, &setup, &shard).await {
                run(&tls, &shard, &mut live).await;
            }
        }
    }
}

async fn run<T: Transport>(transport: &T, shard: &Shard, live: &mut Live) {
    let mut deflate = ConnState::default();
    let close = converse(transport, shard, live, &mut deflate).await;
    if deflate.bytes > 0 {
        server::deflate::release(&shard.counters().deflate_codec_bytes, deflate.bytes);
    }
    finish(transport, close, shard, live).await;
    live.open = false;
    // A read may still be pending (its future dropped); on tokio-uring it
    // holds the socket open until it completes, and this completes it.
    transport.shutdown(Shutdown::Both);
}

/// A connection's permessage-deflate state between reads.
#[derive(Default)]
struct ConnState {
    conn: Option<ConnDeflate>,
    /// Bytes its codec holds in the shard's budget.
    bytes: u64,
}

async fn converse<T: Transport>(
    transport: &T,
    shard: &Shard,
    live: &mut Live,
    deflate: &mut ConnState,
) -> Close {
    let settings = &shard.settings;
    let limits = Limits::of(settings);
    let counters = shard.counters();
    let mut leaving = pin!(shard.turn_to_go());
    let handshake_deadline = Instant::now() + settings.handshake_timeout;
    let mut silence = SilenceClock::new(settings); // runs from the upgrade
    let mut phase = Phase::Handshake;
    let mut fragments = None;
    let mut member: Option<Membership<Bytes>> = None;
    let mut kick: Option<Arc<Kick>> = None;
    let mut reading = pin!(transport.read(Vec::new()).fuse());
    loop {
        tokio::select! {
            biased;
            _ = &mut leaving, if matches!(phase, Phase::Open(_)) => return Close::Goodbye,
            code = kicked(kick.as_deref()) => return Close::Say(code, kick_reason(code)),
            _ = sleep_until(silence.deadline().unwrap_or_else(Instant::now)), if silence.deadline().is_some() => {
                match silence.due(counters) {
                    Due::Ping => {
                        let ping = frame::server_frame(OpCode::Ping, b"");
                        if transport.write_all(ping).await.is_err() {
                            return Close::Now;
                        }
                        silence.pinged(counters);
                    }
                    Due::Drop => return Close::Now,
                    Due::CloseIdle => return Close::Say(close_code::GOING_AWAY, "idle timeout"),
                }
            }
            _ = sleep_until(handshake_deadline), if phase == Phase::Handshake => {
                bump(&counters.handshake_timeouts);
                if limits.proto == Proto::Ws {
                    let response = Bytes::from(Rejection::Timeout.response());
                    let _ = timeout(settings.close_timeout, transport.write_all(response)).await;
                }
                return Close::Now;
            }
            Some(frame) = next_delivery(member.as_mut()) => {
                let len = frame.len();
                let frame = match deflate.conn.as_mut() {
                    Some(conn) => deflate::room_frame(conn, frame, counters),
                    None => frame,
                };
                if transport.write_all(frame).await.is_err() {
                    return Close::Now;
                }
                if let Some(member) = &member {
                    member.written(len);
                }
            }
            (result, mut input) = &mut reading => {
                if !matches!(result, Ok(n) if n > 0) {
                    return Close::Now;
                }
                let mut produced = Produced {
                    shard: Some(shard),
                    deflate: deflate.conn.take(),
                    ..Produced::default()
                };
                let before = phase;
                let (used, ending) =
                    session::on_input(&limits, &mut phase, &mut input, &mut fragments, &mut produced);
                if session::upgraded(before, phase, ending) {
                    bump(&counters.upgraded);
                    let accepted = handshake_deadline - settings.handshake_timeout;
                    shard.histograms().handshake.observe(accepted.elapsed());
                    live.open = true;
                }
                if let Phase::Open(_) = phase {
                    silence.heard();
                }
                live.admitted |= produced.admitted;
                deflate.conn = produced.deflate.take();
                deflate.bytes += std::mem::take(&mut produced.deflate_bytes);
                input.drain(..used);
                if phase == Phase::Open(Route::Room) && member.is_none() {
                    // Joined before the 101 (or hello answer) is written.
                    let joined = shard.rooms.frames.join(shard.id);
                    kick = Some(joined.kick_signal());
                    member = Some(joined);
                }
                if send_produced(transport, produced, shard).await.is_err() {
                    return Close::Now;
                }
                if let Some(ending) = ending {
                    return count_ending(ending, counters);
                }
                if input.is_empty() {
                    input = Vec::new(); // an idle connection keeps no buffer
                }
                reading.set(transport.read(input).fuse());
            }
        }
    }
}

/// Count how the protocol ended the connection and say how to close.
fn count_ending(ending: Ending, counters: &ShardCounters) -> Close {
    match ending {
        Ending::Rejected(_) => {
            bump(&counters.rejected);
            Close::Drain
        }
        Ending::Violation(code) => {
            count_violation(counters, code);
            Close::Drain
        }
        Ending::PeerClosed => {
            bump(&counters.peer_closes);
            Close::Now
        }
        Ending::CloseAnswered => Close::Now,
    }
}

/// Publish what the input published and write its replies; if the socket
/// cannot take an echo now, reading waits until it can (a read pause).
async fn send_produced<T: Transport>(
    transport: &T,
    produced: Produced<'_>,
    shard: &Shard,
) -> io::Result<()> {
    let counters = shard.counters();
    for frame in &produced.published {
        bump(&counters.published);
        let delivered = shard.rooms.frames.publish(frame, &shard.hub, shard.id);
        counters.delivered.fetch_add(delivered, Relaxed);
    }
    if produced.replies.is_empty() {
        return Ok(());
    }
    let mut write = pin!(transport.write_all(Bytes::from(produced.replies)));
    let written = match write.as_mut().now_or_never() {
        Some(done) => done,
        None => {
            if produced.echoes > 0 {
                bump(&counters.read_pauses);
            }
            write.await
        }
    };
    counters.echoed.fetch_add(produced.echoes, Relaxed);
    written
}

/// Close as `close` says; the room membership is already gone. A goodbye
/// from the drain is counted, and whether it closed cleanly.
async fn finish<T: Transport>(transport: &T, close: Close, shard: &Shard, live: &mut Live) {
    let settings = &shard.settings;
    let (last_words, patience) = match close {
        Close::Now => return,
        Close::Drain => (None, settings.close_timeout),
        Close::Say(code, reason) => (Some((code, reason)), settings.close_timeout),
        Close::Goodbye => {
            bump(&shard.counters().drain_goodbyes);
            let goodbye = (close_code::GOING_AWAY, "server shutting down");
            (Some(goodbye), settings.goodbye_patience())
        }
    };
    let closed = timeout(patience, async {
        if let (Some((code, reason)), Proto::Ws) = (last_words, settings.proto) {
            let mut frame = Produced::default();
            session::send_close(&mut frame, code, reason);
            transport.write_all(Bytes::from(frame.replies)).await?;
        }
        transport.shutdown(Shutdown::Write);
        let mut input = Vec::new();
        loop {
            let (result, buf) = transport.read(input).await;
            if result? == 0 {
                return io::Result::Ok(()); // the peer hung up
            }
            input = buf;
            input.clear();
        }
    })
    .await;
    if matches!(close, Close::Goodbye) {
        live.told_to_go(matches!(closed, Ok(Ok(()))));
    }
}
