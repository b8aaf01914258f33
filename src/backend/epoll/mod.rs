//! The epoll backend: one mio `Poll` per shard, edge-triggered, a slab of
//! [`Conn`]s whose keys are the mio `Token`s, and one 64 KiB read buffer
//! shared by all of the shard's connections. Handshake and close deadlines
//! live in the connections and are swept (see `server::deadline`).

mod accept;
pub mod conn;
mod deadlines;
mod events;
mod room;

use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

pub use conn::Conn;

use crate::protocol::message::close_code;
use crate::server::config::{Proto, ServeConfig};
use crate::server::deadline::Clock;
use crate::server::hub::{Hub, Wake};
use crate::server::session::{Limits, Phase};
use crate::server::stats::{bump, ShardCounters};
use crate::server::ShardSetup;

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
            self.hub.serve_flush_request(self.id);
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
                    let _ = conn.send_shared(std::slice::from_ref(&goodbye));
                }
            }
        }
        let open = self.conns.len() as u64;
        self.counters().closed.fetch_add(open, Relaxed);
        self.conns.clear();
    }
}
