//! The shard core: everything a shard does with its connections that is not
//! I/O, written once for every backend. It owns the connections (a slab of
//! [`Conn`]s), runs the session over what they receive, queues what they
//! send, and keeps the close protocol, echo backpressure, room delivery with
//! the backlog limit, deadlines, the goodbye and the counters.
//!
//! A backend owns the sockets and the event loop. It tells the core what
//! happened ([`Core::admit`], [`Core::received`], [`Core::writable`] or
//! [`Core::sent`], [`Core::hung_up`], [`Core::end_turn`]) and carries out
//! what the core asks through [`Io`]. The contract is spelled out in
//! `backend/mod.rs`.

mod conn;
mod deadlines;
mod deflate;
mod drain;
mod room;
mod tls;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::chunked_slab::ChunkedSlab;
use bytes::Bytes;

pub use conn::{Busy, Conn, Flags, Position};
pub use drain::goodbye_at;

use super::admission::{Gate, Refusal};
use super::deadline::{Clock, Deadline};
use super::hub::Hub;
use super::session::{self, AfterFlush, Ending, Limits, Outbox, Phase};
use super::settings::Settings;
use super::stats::{bump, count_violation, ShardCounters};
use crate::protocol::deflate::Agreed;
use crate::protocol::message::Violation;
use crate::protocol::{close_code, frame, Proto, Route};
use crate::server::deflate::DeflateEvent;

/// What a backend does for the core. Two write models meet here: a
/// readiness backend (epoll) writes in [`Io::write_now`] and reports
/// [`Core::writable`]; a completion backend (io_uring) writes nothing now,
/// submits the queue in [`Io::send_queue`] and reports [`Core::sent`].
pub trait Io {
    /// The backend's per-connection handle, stored in the core's slab.
    type Socket;

    /// Write as much of `parts` as the socket takes without blocking and
    /// return how many bytes that was. A backend that cannot write borrowed
    /// bytes (its sends complete later) returns 0: the core queues them.
    fn write_now<T: AsRef<[u8]>>(
        &mut self,
        socket: &Self::Socket,
        parts: &[T],
    ) -> io::Result<usize>;

    /// The connection's queue has bytes and none of them is being sent.
    fn send_queue(
        &mut self,
        key: usize,
        socket: &mut Self::Socket,
        queue: &[Bytes],
    ) -> io::Result<QueuedSend>;

    /// Shut the write side (our FIN); reading goes on.
    fn shutdown_write(&mut self, socket: &Self::Socket);

    /// The connection is gone from the core: close its socket. `unsent` is
    /// what was still queued; buffers a send is using must outlive it.
    fn close(&mut self, key: usize, socket: Self::Socket, unsent: VecDeque<Bytes>);

    /// Stop taking input from this connection until [`Io::resume_reading`].
    fn pause_reading(&mut self, key: usize, socket: &mut Self::Socket);

    /// Input is wanted again; a readiness backend must read now, since the
    /// edge that announced waiting bytes has passed.
    fn resume_reading(&mut self, key: usize, socket: &mut Self::Socket);

    /// Stop accepting until [`Io::resume_accepting`].
    fn pause_accepting(&mut self);

    fn resume_accepting(&mut self);
}

/// What a backend did with a connection's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuedSend {
    /// Nothing yet: the backend reports [`Core::writable`] when it can write.
    AwaitWritable,
    /// The first `buffers` of the queue are being sent; [`Core::sent`] follows.
    Submitted { buffers: usize },
}

/// How soon a paused accept (fd table or shard full) tries again if no
/// connection closes first.
pub const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Core<S> {
    id: usize,
    conns: ChunkedSlab<Conn<S>>,
    /// Connections this shard holds before it pauses accepting.
    conn_limit: usize,
    settings: Arc<Settings>,
    limits: Limits,
    hub: Arc<Hub>,
    clock: Clock,
    /// Connections with a deadline set; the core sweeps while there are any.
    timed: usize,
    next_sweep: Option<Instant>,
    /// When accepting paused (fd table or shard full), the time to retry.
    accept_retry_at: Option<Instant>,
    /// Frames this shard's connections published during the current turn.
    published: Vec<Bytes>,
    /// Frames other shards sent us.
    inbox: Vec<Bytes>,
    /// Which upgrades to refuse (--max-conns, --accept-rate).
    gate: Gate,
    /// Set once the drain reaches this shard.
    drain: Option<drain::Drain>,
    /// The TLS state of every connection, when the server speaks TLS.
    tls: Option<tls::TlsConns>,
    /// permessage-deflate codecs and scratch.
    deflate: deflate::DeflateConns,
}

/// How a connection's close went, for the drain's count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// The close handshake completed or the peer hung up.
    Cleanly,
    /// We dropped it: a deadline passed, a write failed, the server stopped.
    Cut,
}

impl<S> Core<S> {
    pub fn new(id: usize, conn_limit: usize, settings: Arc<Settings>, hub: Arc<Hub>) -> Core<S> {
        let limits = Limits::of(&settings);
        let tls = settings.tls.clone().map(tls::TlsConns::new);
        let deflate = deflate::DeflateConns::new(settings.deflate, hub.shards());
        Core {
            gate: Gate::new(settings.max_conns, settings.accept_rate, hub.shards()),
            id,
            conns: ChunkedSlab::new(),
            conn_limit,
            settings,
            limits,
            hub,
            clock: Clock::new(),
            timed: 0,
            next_sweep: None,
            accept_retry_at: None,
            published: Vec::new(),
            inbox: Vec::new(),
            drain: None,
            tls,
            deflate,
        }
    }

    pub fn counters(&self) -> &ShardCounters {
        self.hub.counters(self.id)
    }

    /// Draining or stopping: take no new connections.
    pub fn leaving(&self) -> bool {
        self.hub.leaving()
    }

    pub fn socket(&self, key: usize) -> Option<&S> {
        self.conns.get(key).map(|conn| &conn.socket)
    }

    pub fn socket_mut(&mut self, key: usize) -> Option<&mut S> {
        self.conns.get_mut(key).map(|conn| &mut conn.socket)
    }

    /// Whether the connection is open and wants its input read.
    pub fn wants_input(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|conn| !conn.read_paused())
    }

    /// The key the next admitted connection will get (a readiness backend
    /// registers the socket under it first).
    pub fn next_key(&self) -> usize {
        self.conns.vacant_key()
    }

    /// Whether to accept now. Pauses accepting (and says so to `io`) when the
    /// shard holds its planned maximum.
    pub fn accepting(&mut self, io: &mut impl Io) -> bool {
        if self.accept_retry_at.is_some() || self.drain.is_some() {
            return false;
        }
        if self.conns.len() >= self.conn_limit {
            bump(&self.counters().accept_pauses_full);
            self.pause_accepting(io);
            return false;
        }
        true
    }

    /// Accepting failed. Running out of fds pauses it (retrying at once would
    /// fail again and spin) until a connection closes or the retry timer.
    pub fn accept_failed(&mut self, io: &mut impl Io, error: &io::Error) {
        if crate::sys::is_fd_exhaustion(error) {
            bump(&self.counters().accept_pauses_fd_limit);
            self.pause_accepting(io);
        }
        // Otherwise the peer gave up before we accepted (ECONNABORTED) and the like.
    }

    fn pause_accepting(&mut self, io: &mut impl Io) {
        if self.drain.is_some() {
            return; // paused for good
        }
        if self.accept_retry_at.is_none() {
            io.pause_accepting();
        }
        self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
    }

    /// A backend could not take an accepted connection (e.g. registering it
    /// failed); it closed it.
    pub fn refused(&mut self) {
        bump(&self.counters().accepted);
        bump(&self.counters().closed);
    }

    /// A new connection: it starts its handshake, with a deadline.
    pub fn admit(&mut self, socket: S) -> usize {
        bump(&self.counters().accepted);
        let key = self.conns.insert(Conn::new(socket));
        self.start_tls(key);
        let deadline = self.clock.after(self.settings.handshake_timeout);
        self.set_deadline(key, deadline);
        self.count_slots();
        key
    }

    /// The slab's slots, for the gauge: chunks come and go with connections.
    fn count_slots(&self) {
        let slots = self.conns.capacity() as u64;
        self.counters().conn_slots.store(slots, Relaxed);
    }

    /// The peer hung up: the connection is over.
    pub fn hung_up<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        self.count_vanished_in_tls_handshake(key);
        self.close(io, key, How::Cleanly);
    }

    /// The socket failed (a reset, an error): the connection is over.
    pub fn failed<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        self.count_vanished_in_tls_handshake(key);
        self.close(io, key, How::Cut);
    }

    fn count_vanished_in_tls_handshake(&self, key: usize) {
        if self.tls_handshaking(key) && self.conns.contains(key) {
            bump(&self.counters().tls_handshakes_vanished);
        }
    }

    /// Newly received bytes: through the connection's TLS layer when the
    /// server speaks TLS, then to the session. Returns whether the
    /// connection is still open.
    pub fn received<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize, data: &mut [u8]) -> bool {
        if !self.conns.contains(key) {
            return false;
        }
        let counters = self.hub.counters(self.id);
        counters
            .bytes_received
            .fetch_add(data.len() as u64, Relaxed);
        match self.tls.is_some() {
            true => self.received_tls(io, key, data),
            false => self.run_session(io, key, data),
        }
    }

    /// Run the session over received plaintext (joined to any partial
    /// frame left from before). Returns whether the connection is still open.
    fn run_session<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize, data: &mut [u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let before = conn.phase;
        let mut phase = before;
        let (mut pending, mut fragments) = conn.take_input();
        let counters = self.hub.counters(self.id);
        let sealer = tls::sealer_for(&mut self.tls, key);
        let mut out = ConnOutbox::new(
            conn,
            sealer,
            io,
            key,
            counters,
            ShardParts {
                published: &mut self.published,
                gate: &mut self.gate,
                hub: &self.hub,
                deflate: &mut self.deflate,
            },
        );
        let ending = if pending.is_empty() {
            let (used, ending) =
                session::on_input(&self.limits, &mut phase, data, &mut fragments, &mut out);
            pending.extend_from_slice(&data[used..]);
            ending
        } else {
            pending.extend_from_slice(data);
            let (used, ending) = session::on_input(
                &self.limits,
                &mut phase,
                &mut pending,
                &mut fragments,
                &mut out,
            );
            pending.drain(..used);
            ending
        };
        let failed = out.failed;
        let conn = &mut self.conns[key];
        conn.phase = phase;
        conn.put_input(pending, fragments);
        if failed {
            self.close(io, key, How::Cut);
            return false;
        }
        self.heard_from(key);
        self.on_phase_change(io, key, before, ending);
        let Some(conn) = self.conns.get_mut(key) else {
            return false; // closed while finishing its close
        };
        if conn.phase == Phase::Open(Route::Echo) && conn.backlog() > 0 && !conn.read_paused() {
            // Echo backpressure: read no more from a client that is not
            // reading its replies (its socket refused bytes); resume when
            // the queue drains.
            conn.set_read_paused(true);
            io.pause_reading(key, &mut conn.socket);
            bump(&self.hub.counters(self.id).read_pauses);
        }
        conn.release_if_idle();
        true
    }

    /// A readiness backend can write again: write the queue.
    pub fn writable<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.write_queue_now(io, self.hub.counters(self.id)) {
            Ok(true) => self.after_drain(io, key),
            Ok(false) => {}
            Err(_) => self.close(io, key, How::Cut),
        }
    }

    /// A completion backend's send of the queue's front finished.
    pub fn sent<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize, result: io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.send_finished();
        let written = match result {
            Ok(0) | Err(_) => return self.close(io, key, How::Cut),
            Ok(written) => written,
        };
        let counters = self.hub.counters(self.id);
        counters.bytes_sent.fetch_add(written as u64, Relaxed);
        if conn.consume(written) {
            return self.after_drain(io, key);
        }
        if conn.start_queue(io, key).is_err() {
            self.close(io, key, How::Cut);
        }
    }

    /// The outbound queue just emptied: finish a close, or resume reading.
    fn after_drain<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        let conn = &mut self.conns[key];
        match conn.phase {
            Phase::Closing(AfterFlush::HangUp) => return self.close(io, key, How::Cleanly),
            Phase::Closing(AfterFlush::Drain) => {
                io.shutdown_write(&conn.socket);
                conn.phase = Phase::Draining;
            }
            _ => {}
        }
        if conn.read_paused() {
            conn.set_read_paused(false);
            io.resume_reading(key, &mut conn.socket);
        }
        conn.release_if_idle();
    }

    /// Keep room membership and counters in step with what the session did.
    fn on_phase_change<I: Io<Socket = S>>(
        &mut self,
        io: &mut I,
        key: usize,
        before: Phase,
        ending: Option<Ending>,
    ) {
        let after = self.conns[key].phase;
        if session::upgraded(before, after, ending) {
            bump(&self.counters().upgraded);
            let timeout = self.settings.handshake_timeout;
            let took = self
                .clock
                .since_set(self.conns[key].deadline, timeout, Instant::now());
            self.hub.histograms(self.id).handshake.observe(took);
            self.set_deadline(key, Deadline::NONE);
            self.heard_from(key);
        }
        let member_before = before == Phase::Open(Route::Room);
        let member_after = after == Phase::Open(Route::Room);
        if member_after && !member_before {
            self.hub.join_room(self.id);
        }
        if member_before && !member_after {
            self.hub.leave_room(self.id);
        }
        let Some(ending) = ending else {
            return;
        };
        match ending {
            Ending::Rejected(_) => bump(&self.counters().rejected),
            Ending::Violation(code) => count_violation(self.counters(), code),
            Ending::PeerClosed => bump(&self.counters().peer_closes),
            Ending::CloseAnswered => return self.close(io, key, How::Cleanly),
        }
        self.start_closing(io, key);
    }

    /// Close an open connection from our side: WebSocket with `code` and
    /// `reason`, TCP with our FIN once its queue is written; it then has
    /// --close-timeout to answer.
    fn close_politely<I: Io<Socket = S>>(
        &mut self,
        io: &mut I,
        key: usize,
        code: u16,
        reason: &str,
    ) {
        let conn = &mut self.conns[key];
        let Phase::Open(route) = conn.phase else {
            return;
        };
        if self.settings.proto == Proto::Ws {
            let close = close_frame(code, reason);
            let counters = self.hub.counters(self.id);
            let sealer = tls::sealer_for(&mut self.tls, key);
            if send(conn, sealer, io, key, &[&close[..]], counters).is_err() {
                return self.close(io, key, How::Cut);
            }
        }
        conn.phase = Phase::Closing(AfterFlush::Drain);
        if route == Route::Room {
            self.hub.leave_room(self.id);
        }
        self.start_closing(io, key);
    }

    /// A best-effort 1001 to an open WebSocket connection, when there is no
    /// time to wait for its answer.
    fn say_going_away<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        let conn = &mut self.conns[key];
        if self.settings.proto == Proto::Ws && conn.can_write_directly() {
            let close = close_frame(close_code::GOING_AWAY, "server shutting down");
            let sealer = tls::sealer_for(&mut self.tls, key);
            let _ = send(
                conn,
                sealer,
                io,
                key,
                &[&close[..]],
                self.hub.counters(self.id),
            );
        }
    }

    /// Our last bytes are queued: arm the close deadline and, if they are
    /// already written, shut the write side now.
    fn start_closing<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        self.say_close_notify(io, key);
        let deadline = self.clock.after(self.settings.close_timeout);
        self.set_deadline(key, deadline);
        if self.conns[key].queued_bytes() == 0 {
            self.after_drain(io, key);
        }
    }

    /// Drop a connection whatever its state (counted cut if the drain told it to go).
    fn cut<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        self.close(io, key, How::Cut);
    }

    fn close<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize, how: How) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if conn.flags.has(Flags::TOLD_TO_GO) {
            match how {
                How::Cleanly => bump(&self.counters().drain_clean),
                How::Cut => bump(&self.counters().drain_cut),
            }
        }
        if conn.phase == Phase::Open(Route::Room) {
            self.hub.leave_room(self.id);
        }
        if conn.flags.has(Flags::ADMITTED) {
            self.hub.admitted.leave();
        }
        if conn.deadline.is_set() {
            self.timed -= 1;
        }
        bump(&self.counters().closed);
        self.end_tls(key);
        self.deflate.end(key, self.hub.counters(self.id));
        self.count_slots();
        let unsent = conn.take_queue();
        io.close(key, conn.socket, unsent);
        if self.accept_retry_at.is_some() && self.drain.is_none() {
            // A slot is free: retry accepting at the end of this turn.
            self.accept_retry_at = Some(Instant::now());
        }
    }

    /// The end of one turn of the event loop: carry out a cache-flush
    /// request, deliver the room's frames, sweep deadlines, carry the drain
    /// on, resume accepting when it is time.
    pub fn end_turn<I: Io<Socket = S>>(&mut self, io: &mut I) {
        self.hub.serve_flush_request(self.id);
        self.deliver_room_frames(io);
        self.sweep_deadlines(io);
        self.drain_turn(io);
        if self.accept_retry_at.is_some_and(|at| at <= Instant::now()) {
            self.accept_retry_at = None;
            io.resume_accepting();
        }
    }

    /// When the event loop must wake even if nothing happens.
    pub fn next_wake(&self) -> Option<Instant> {
        [self.next_sweep, self.accept_retry_at, self.drain_wake()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// A server close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame::server_frame(frame::OpCode::Close, &payload)
}

/// Send `parts` on `conn`: sealed first by its TLS layer if it has one
/// (`sealer`), then as [`send_plain`] does.
fn send<S, I: Io<Socket = S>, T: Part>(
    conn: &mut Conn<S>,
    sealer: Option<tls::Sealer>,
    io: &mut I,
    key: usize,
    parts: &[T],
    counters: &ShardCounters,
) -> io::Result<()> {
    let Some(sealer) = sealer else {
        return send_plain(conn, io, key, parts, counters);
    };
    sealer.out.clear();
    sealer.tls.seal(parts, sealer.out);
    send_plain(conn, io, key, &[&sealer.out[..]], counters)
}

/// Send `parts` on `conn` in order: straight to the socket when nothing is
/// queued and the backend writes now, the rest queued (shared frames by
/// reference, borrowed bytes copied), then the queue handed to the backend.
/// Bytes written now are counted in `bytes_sent`; queued ones when written.
fn send_plain<S, I: Io<Socket = S>, T: Part>(
    conn: &mut Conn<S>,
    io: &mut I,
    key: usize,
    parts: &[T],
    counters: &ShardCounters,
) -> io::Result<()> {
    let written = if conn.can_write_directly() {
        io.write_now(&conn.socket, parts)?
    } else {
        0
    };
    counters.bytes_sent.fetch_add(written as u64, Relaxed);
    let at = Position::START.advance(parts, written);
    if at.index < parts.len() {
        T::enqueue_rest(conn, &parts[at.index..], at.offset);
    }
    conn.start_queue(io, key)
}

/// Bytes the core can send: borrowed parts (copied when queued) or shared
/// frames (queued by reference).
trait Part: AsRef<[u8]> + Sized {
    fn enqueue_rest<S>(conn: &mut Conn<S>, rest: &[Self], offset: usize);
}

impl Part for &[u8] {
    fn enqueue_rest<S>(conn: &mut Conn<S>, rest: &[Self], offset: usize) {
        let mut copy = Vec::with_capacity(rest.iter().map(|p| p.len()).sum::<usize>() - offset);
        for (i, part) in rest.iter().enumerate() {
            copy.extend_from_slice(&part[if i == 0 { offset } else { 0 }..]);
        }
        conn.enqueue(Bytes::from(copy));
    }
}

impl Part for Bytes {
    fn enqueue_rest<S>(conn: &mut Conn<S>, rest: &[Self], offset: usize) {
        conn.enqueue(rest[0].slice(offset..));
        for frame in &rest[1..] {
            conn.enqueue(frame.clone());
        }
    }
}

/// The parts of the shard a connection's outbox borrows.
struct ShardParts<'a> {
    published: &'a mut Vec<Bytes>,
    gate: &'a mut Gate,
    hub: &'a Hub,
    deflate: &'a mut deflate::DeflateConns,
}

/// The session's [`Outbox`] for one connection of this shard.
struct ConnOutbox<'a, S, I> {
    conn: &'a mut Conn<S>,
    /// Seals what is sent, if the connection speaks TLS.
    sealer: Option<tls::Sealer<'a>>,
    io: &'a mut I,
    key: usize,
    published: &'a mut Vec<Bytes>,
    counters: &'a ShardCounters,
    gate: &'a mut Gate,
    hub: &'a Hub,
    deflate: &'a mut deflate::DeflateConns,
    /// A write failed: the connection is dead and must be closed.
    failed: bool,
}

impl<'a, S, I> ConnOutbox<'a, S, I> {
    fn new(
        conn: &'a mut Conn<S>,
        sealer: Option<tls::Sealer<'a>>,
        io: &'a mut I,
        key: usize,
        counters: &'a ShardCounters,
        ShardParts {
            published,
            gate,
            hub,
            deflate,
        }: ShardParts<'a>,
    ) -> Self {
        ConnOutbox {
            conn,
            sealer,
            io,
            key,
            published,
            counters,
            gate,
            hub,
            deflate,
            failed: false,
        }
    }
}

impl<S, I: Io<Socket = S>> Outbox for ConnOutbox<'_, S, I> {
    fn reply(&mut self, parts: &[&[u8]]) {
        let sealer = self.sealer.as_mut().map(|sealer| tls::Sealer {
            tls: &mut *sealer.tls,
            out: &mut *sealer.out,
        });
        if !self.failed && send(self.conn, sealer, self.io, self.key, parts, self.counters).is_err()
        {
            self.failed = true;
        }
    }

    fn echo(&mut self, parts: &[&[u8]]) {
        bump(&self.counters.echoed);
        self.reply(parts);
    }

    fn publish(&mut self, frame: Bytes) {
        bump(&self.counters.published);
        self.published.push(frame);
    }

    fn admit(&mut self) -> Result<(), Refusal> {
        let leaving = self.hub.leaving();
        let admitted = self.gate.admit(&self.hub.admitted, self.counters, leaving);
        self.conn.flags.set(Flags::ADMITTED, admitted.is_ok());
        admitted
    }

    fn agree_deflate(&mut self, agreed: &Agreed) -> bool {
        let agreed_here = self.deflate.agree(self.key, agreed, self.counters);
        if agreed_here {
            self.conn
                .flags
                .set_deflate_window(agreed.server_window_bits);
        }
        agreed_here
    }

    fn deflating(&self) -> bool {
        self.conn.flags.deflate_window().is_some()
    }

    fn compressed_frame(&mut self, opcode: frame::OpCode, payload: &[u8]) -> Bytes {
        let window = self.conn.flags.deflate_window().unwrap_or(15);
        self.deflate
            .compressed_frame(self.key, window, opcode, payload)
    }

    fn inflate(
        &mut self,
        opcode: frame::OpCode,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, Violation> {
        let window = self.conn.flags.deflate_window().unwrap_or(15);
        self.deflate
            .inflate(self.key, window, (opcode, payload, max))
    }

    fn count_deflate(&mut self, event: DeflateEvent) {
        crate::server::deflate::count(self.counters, &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tcp;
    use crate::server::hub::Wake;
    use std::time::Duration;

    struct NoWake;

    impl Wake for NoWake {
        fn wake(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A readiness backend whose socket takes `budget` bytes per writable
    /// event, recording what reached the wire and what the core asked.
    #[derive(Default)]
    struct TrickleIo {
        budget: usize,
        wire: Vec<u8>,
        paused: usize,
        resumed: usize,
        closed: usize,
    }

    impl Io for TrickleIo {
        type Socket = ();

        fn write_now<T: AsRef<[u8]>>(&mut self, _: &(), parts: &[T]) -> io::Result<usize> {
            let mut written = 0;
            for part in parts {
                let take = part.as_ref().len().min(self.budget - written);
                self.wire.extend_from_slice(&part.as_ref()[..take]);
                written += take;
            }
            self.budget -= written;
            Ok(written)
        }

        fn send_queue(&mut self, _: usize, _: &mut (), _: &[Bytes]) -> io::Result<QueuedSend> {
            Ok(QueuedSend::AwaitWritable)
        }

        fn shutdown_write(&mut self, _: &()) {}

        fn close(&mut self, _: usize, _: (), _: VecDeque<Bytes>) {
            self.closed += 1;
        }

        fn pause_reading(&mut self, _: usize, _: &mut ()) {
            self.paused += 1;
        }

        fn resume_reading(&mut self, _: usize, _: &mut ()) {
            self.resumed += 1;
        }

        fn pause_accepting(&mut self) {}

        fn resume_accepting(&mut self) {}
    }

    fn core(proto: Proto) -> Core<()> {
        let settings = Settings {
            proto,
            max_message: 1 << 20,
            max_backlog: 1 << 20,
            max_backlog_total: None,
            max_handshake: 1024,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_conns: None,
            accept_rate: None,
            drain_time: Duration::ZERO,
            ping_interval: None,
            idle_timeout: None,
            tls: None,
            deflate: crate::server::deflate::DeflateSettings::OFF,
            tungstenite: false,
        };
        let hub = Arc::new(Hub::new(vec![Box::new(NoWake)]));
        Core::new(0, usize::MAX, Arc::new(settings), hub)
    }

    /// Echo through a socket that takes 7 bytes per writable event: every
    /// byte arrives once and in order, reading pauses while replies wait and
    /// resumes when they are out, and the queue is freed.
    #[test]
    fn a_slow_socket_gets_every_byte_in_order_with_reading_paused_meanwhile() {
        let mut core = core(Proto::Tcp);
        let mut io = TrickleIo::default();
        let key = core.admit(());
        let mut input = tcp::encode(b"/echo");
        let mut expected = tcp::encode(tcp::HELLO_OK);
        for i in 0..20u8 {
            let message = tcp::encode(&[i; 10]);
            input.extend_from_slice(&message);
            expected.extend_from_slice(&message);
        }
        assert!(core.received(&mut io, key, &mut input));
        assert_eq!(io.paused, 1);
        assert!(!core.wants_input(key));
        while io.wire.len() < expected.len() {
            io.budget = 7;
            core.writable(&mut io, key);
        }
        assert_eq!(io.wire, expected);
        assert_eq!(io.resumed, 1);
        assert!(core.wants_input(key));
        assert!(
            core.conns[key].busy.is_none(),
            "an idle connection holds no buffers"
        );
    }
}
