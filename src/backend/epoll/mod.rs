//! The epoll backend: one mio `Poll` per shard, edge-triggered, a slab of
//! [`Conn`]s whose keys are the mio `Token`s, and one 64 KiB read buffer
//! shared by all of the shard's connections. Handshake and close deadlines
//! live in the connections and are swept (see `server::deadline`).

mod conn;

use std::io::{self, Read};
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

pub use conn::Conn;

use crate::protocol::handshake::Rejection;
use crate::protocol::message::close_code;
use crate::protocol::Route;
use crate::server::config::{Proto, ServeConfig};
use crate::server::deadline::{Clock, Deadline, SWEEP_EVERY};
use crate::server::hub::{Hub, Wake};
use crate::server::session::{self, AfterFlush, Ending, Limits, Outbox, Phase};
use crate::server::stats::{bump, ShardCounters};
use crate::server::ShardSetup;
use crate::sys;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// The shard's one read buffer: every connection reads into it.
const SCRATCH_LEN: usize = 64 * 1024;
const EVENTS_PER_POLL: usize = 1024;
/// How soon a paused accept (fd table full) tries again if no fd frees first.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Made in the main thread; see `backend::Prepared`.
pub struct Prepared {
    poll: Poll,
}

impl Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        Waker::wake(self)
    }
}

pub fn prepare() -> io::Result<(Prepared, Box<dyn Wake>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    Ok((Prepared { poll }, Box::new(waker)))
}

pub fn run(prepared: Prepared, listener: TcpListener, setup: ShardSetup) -> io::Result<()> {
    let mut listener = mio::net::TcpListener::from_std(listener);
    prepared
        .poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut shard = Shard::new(prepared.poll, listener, setup);
    shard.run()
}

struct Shard {
    id: usize,
    poll: Poll,
    listener: mio::net::TcpListener,
    conns: Slab<Conn>,
    conn_limit: usize,
    config: Arc<ServeConfig>,
    limits: Limits,
    hub: Arc<Hub>,
    scratch: Vec<u8>,
    clock: Clock,
    /// Connections with a deadline set; the shard sweeps while there are any.
    timed: usize,
    next_sweep: Option<Instant>,
    /// When accepting paused (fd table or shard full), the time to retry.
    accept_retry_at: Option<Instant>,
    /// Frames this shard's connections published during the current turn.
    published: Vec<Bytes>,
    /// Frames other shards sent us.
    inbox: Vec<Bytes>,
}

impl Shard {
    fn new(poll: Poll, listener: mio::net::TcpListener, setup: ShardSetup) -> Shard {
        let config = setup.config;
        let limits = Limits {
            proto: config.proto,
            max_message: config.max_message,
            max_handshake: config.max_handshake,
        };
        Shard {
            id: setup.id,
            poll,
            listener,
            conns: Slab::new(),
            conn_limit: setup.conn_limit,
            config,
            limits,
            hub: setup.hub,
            scratch: vec![0; SCRATCH_LEN],
            clock: Clock::new(),
            timed: 0,
            next_sweep: None,
            accept_retry_at: None,
            published: Vec::new(),
            inbox: Vec::new(),
        }
    }

    fn counters(&self) -> &ShardCounters {
        self.hub.counters(self.id)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.hub.shutting_down() {
            match self.poll.poll(&mut events, self.poll_timeout()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            bump(&self.counters().wakeups);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {} // the inbox is read every turn below
                    Token(key) => self.on_conn_event(key, event),
                }
            }
            self.deliver_room_frames();
            self.sweep_deadlines();
            if self.accept_retry_at.is_some_and(|at| at <= Instant::now()) {
                self.resume_accepting();
            }
        }
        self.say_goodbye();
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let wake_at = match (self.next_sweep, self.accept_retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wake_at.map(|at| at.saturating_duration_since(Instant::now()))
    }

    // ---- accepting ----

    fn accept_all(&mut self) {
        while self.accept_retry_at.is_none() {
            if self.conns.len() >= self.conn_limit {
                bump(&self.counters().accept_pauses_full);
                self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                return;
            }
            match self.listener.accept() {
                Ok((socket, _)) => self.admit(socket),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    // Not retrying at once: the queued connection would fail
                    // again and the loop would spin. Wait for a close or the timer.
                    bump(&self.counters().accept_pauses_fd_limit);
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                }
                // The peer gave up before we accepted (ECONNABORTED) and the like.
                Err(_) => {}
            }
        }
    }

    fn resume_accepting(&mut self) {
        if self.accept_retry_at.take().is_some() {
            self.accept_all();
        }
    }

    fn admit(&mut self, socket: mio::net::TcpStream) {
        bump(&self.counters().accepted);
        // SAFETY: the fd comes straight out of mio's stream, which gives up
        // ownership; it is an open, non-blocking TCP socket.
        let socket = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
        let _ = socket.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&socket.as_raw_fd()), Token(key), interest)
            .is_err()
        {
            bump(&self.counters().closed);
            return;
        }
        let deadline = self.clock.after(self.config.handshake_timeout);
        entry.insert(Conn::new(socket, Deadline::NONE));
        self.set_deadline(key, deadline);
    }

    // ---- connection events ----

    fn on_conn_event(&mut self, key: usize, event: &mio::event::Event) {
        if event.is_writable() {
            self.on_writable(key);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.on_readable(key, event.is_read_closed());
        }
    }

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush() {
            Ok(true) => self.after_drain(key),
            Ok(false) => {}
            Err(_) => self.close(key),
        }
    }

    /// The outbound queue just emptied: finish a close, or resume reading.
    fn after_drain(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.phase {
            Phase::Closing(AfterFlush::HangUp) => return self.close(key),
            Phase::Closing(AfterFlush::Drain) => {
                let _ = conn.socket.shutdown(Shutdown::Write);
                conn.phase = Phase::Draining;
            }
            _ => {}
        }
        let resume = conn.busy_ref().is_some_and(|busy| busy.read_paused);
        if resume {
            conn.busy().read_paused = false;
        }
        conn.release_if_idle();
        if resume {
            self.on_readable(key, true);
        }
    }

    /// Read until the socket is empty. A short read means empty unless the
    /// peer also hung up (`read_closed`), in which case we read on to EOF.
    fn on_readable(&mut self, key: usize, read_closed: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(conn) = self.conns.get_mut(key) {
            if conn.busy_ref().is_some_and(|busy| busy.read_paused) {
                break;
            }
            let n = match conn.socket.read(&mut scratch) {
                Ok(0) => {
                    self.close(key);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(key);
                    break;
                }
            };
            if !self.on_bytes(key, &mut scratch[..n]) {
                break;
            }
            if n < scratch.len() && !read_closed {
                break;
            }
        }
        self.scratch = scratch;
    }

    /// Run the session over newly read bytes (joined to any partial frame
    /// left from before). Returns whether the connection is still open.
    fn on_bytes(&mut self, key: usize, data: &mut [u8]) -> bool {
        let conn = &mut self.conns[key];
        let before = conn.phase;
        let mut phase = before;
        let (mut pending, mut fragments) = conn.take_input();
        let mut out = ConnOutbox {
            conn,
            published: &mut self.published,
            counters: self.hub.counters(self.id),
            failed: false,
        };
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
            self.close(key);
            return false;
        }
        self.on_phase_change(key, before, ending);
        let Some(conn) = self.conns.get_mut(key) else {
            return false; // closed while finishing its close
        };
        if conn.phase == Phase::Open(Route::Echo) && conn.queued_bytes() > 0 {
            // Echo backpressure: read no more from a client that is not
            // reading its replies; resume when the queue drains.
            conn.busy().read_paused = true;
            bump(&self.hub.counters(self.id).read_pauses);
        }
        conn.release_if_idle();
        true
    }

    /// Keep room membership and counters in step with what the session did.
    fn on_phase_change(&mut self, key: usize, before: Phase, ending: Option<Ending>) {
        let after = self.conns[key].phase;
        // A request and a close can arrive in one read: the session then goes
        // from Handshake straight to Closing, having upgraded in between.
        let upgraded = before == Phase::Handshake
            && (matches!(after, Phase::Open(_))
                || matches!(ending, Some(Ending::PeerClosed | Ending::Violation(_))));
        if upgraded {
            bump(&self.counters().upgraded);
            self.set_deadline(key, Deadline::NONE);
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
            Ending::Violation(_) => bump(&self.counters().protocol_errors),
            Ending::PeerClosed => {}
            Ending::CloseAnswered => return self.close(key),
        }
        self.start_closing(key);
    }

    /// Our last bytes are queued: arm the close deadline and, if they are
    /// already written, shut the write side now.
    fn start_closing(&mut self, key: usize) {
        let deadline = self.clock.after(self.config.close_timeout);
        self.set_deadline(key, deadline);
        if self.conns[key].queued_bytes() == 0 {
            self.after_drain(key);
        }
    }

    fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if conn.phase == Phase::Open(Route::Room) {
            self.hub.leave_room(self.id);
        }
        if conn.deadline.is_set() {
            self.timed -= 1;
        }
        bump(&self.counters().closed);
        // Dropping the socket closes it, which also removes it from the epoll set.
        drop(conn);
        if self.accept_retry_at.is_some() {
            // An fd is free: retry accepting at the end of this turn.
            self.accept_retry_at = Some(Instant::now());
        }
    }

    // ---- the room ----

    /// Send this turn's published frames to the other shards and to our own
    /// members, then the frames other shards sent us.
    fn deliver_room_frames(&mut self) {
        if !self.published.is_empty() {
            let published = std::mem::take(&mut self.published);
            self.hub.publish(self.id, &published);
            for frame in &published {
                self.deliver_to_members(frame);
            }
            self.published = published;
            self.published.clear();
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        self.hub.take_inbox(self.id, &mut inbox);
        for frame in &inbox {
            self.deliver_to_members(frame);
        }
        inbox.clear();
        self.inbox = inbox;
    }

    fn deliver_to_members(&mut self, frame: &Bytes) {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let mut delivered = 0;
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase != Phase::Open(Route::Room) {
                continue;
            }
            delivered += 1;
            match conn.send_shared(frame) {
                Ok(()) if conn.queued_bytes() > self.config.max_backlog => slow.push(key),
                Ok(()) => {}
                Err(_) => gone.push(key),
            }
        }
        self.counters().delivered.fetch_add(delivered, Relaxed);
        slow.into_iter().for_each(|key| self.close_slow_member(key));
        gone.into_iter().for_each(|key| self.close(key));
    }

    /// A member fell more than --max-backlog behind: keep only the frame being
    /// written, queue a 1008 close after it, and close once that is out (or
    /// at the close deadline if the member never reads again).
    fn close_slow_member(&mut self, key: usize) {
        bump(&self.counters().backlog_closes);
        self.hub.leave_room(self.id);
        let conn = &mut self.conns[key];
        conn.drop_queue_tail();
        conn.phase = Phase::Closing(AfterFlush::Drain);
        if self.config.proto == Proto::Ws {
            let mut out = ConnOutbox {
                conn,
                published: &mut self.published,
                counters: self.hub.counters(self.id),
                failed: false,
            };
            session::send_close(
                &mut out,
                close_code::POLICY_VIOLATION,
                "too slow: backlog limit exceeded",
            );
            if out.failed {
                self.close(key);
                return;
            }
        }
        self.start_closing(key);
    }

    // ---- deadlines ----

    fn set_deadline(&mut self, key: usize, deadline: Deadline) {
        let conn = &mut self.conns[key];
        match (conn.deadline.is_set(), deadline.is_set()) {
            (false, true) => self.timed += 1,
            (true, false) => self.timed -= 1,
            _ => {}
        }
        conn.deadline = deadline;
        if self.timed > 0 && self.next_sweep.is_none() {
            self.next_sweep = Some(Instant::now() + SWEEP_EVERY);
        }
    }

    /// Close connections whose handshake or close outlived its deadline.
    fn sweep_deadlines(&mut self) {
        let now = Instant::now();
        if self.next_sweep.is_none_or(|at| at > now) {
            return;
        }
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| self.clock.has_passed(conn.deadline, now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            let conn = &mut self.conns[key];
            if conn.phase == Phase::Handshake {
                if self.config.proto == Proto::Ws && conn.queued_bytes() == 0 {
                    let _ = conn.send_parts(&[&Rejection::Timeout.response()]);
                }
                bump(&self.counters().handshake_timeouts);
            }
            self.close(key);
        }
        self.next_sweep = (self.timed > 0).then(|| now + SWEEP_EVERY);
    }

    /// At shutdown, tell open WebSocket clients we are going away (best
    /// effort, no waiting), then drop every connection.
    fn say_goodbye(&mut self) {
        if self.config.proto == Proto::Ws {
            let goodbye = crate::protocol::frame::server_frame(
                crate::protocol::frame::OpCode::Close,
                &close_code::GOING_AWAY.to_be_bytes(),
            );
            for (_, conn) in self.conns.iter_mut() {
                if matches!(conn.phase, Phase::Open(_)) && conn.queued_bytes() == 0 {
                    let _ = conn.send_shared(&goodbye);
                }
            }
        }
        let open = self.conns.len() as u64;
        self.counters().closed.fetch_add(open, Relaxed);
        self.conns.clear();
    }
}

/// The session's [`Outbox`] for one connection of this shard.
struct ConnOutbox<'a> {
    conn: &'a mut Conn,
    published: &'a mut Vec<Bytes>,
    counters: &'a ShardCounters,
    /// A write failed: the connection is dead and must be closed.
    failed: bool,
}

impl Outbox for ConnOutbox<'_> {
    fn reply(&mut self, parts: &[&[u8]]) {
        if !self.failed && self.conn.send_parts(parts).is_err() {
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
}
