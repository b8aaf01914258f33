//! The task-per-connection backends: the way most Rust servers are written,
//! measured against the hand-rolled loops. Not built on the shard core: each
//! connection is an async task on a runtime everybody uses.
//!
//! - `tokio`: one multi-thread tokio runtime (one worker per core), one
//!   listener, tokio-tungstenite for WebSocket. One process, one fd table:
//!   it holds what RLIMIT_NOFILE allows (about 19,980 connections here) and
//!   no more.
//! - `tokio-tpc`: the same connection code on a current-thread runtime per
//!   shard (thread per core), each shard with its own SO_REUSEPORT listener
//!   and, past one table, a private fd table: the way to take tokio past the
//!   fd limit.
//! - `tokio-uring`: a tokio-uring runtime per shard. tokio-tungstenite needs
//!   `AsyncRead`/`AsyncWrite`, which tokio-uring's owned-buffer sockets do
//!   not offer, so its connections run fanout's own protocol session
//!   (`server::session`) — the runtime, not the WebSocket stack, is what
//!   differs from `--backend uring`.
//!
//! With `--deflate` on, `tokio` and `tokio-tpc` serve WebSocket with that
//! same session too: tungstenite has no permessage-deflate (neither 0.26,
//! used here, nor 0.30, the newest), so fanout's codec (`protocol::deflate`)
//! stands where tungstenite stood.
//!
//! Every one speaks the same protocol with the same limits and bad-input
//! outcomes as the hand-rolled backends, counts the same `stats`, pauses
//! accepting on EMFILE, and says goodbye (1001) at shutdown. The room is
//! [`room::Room`]: per-member queues with a byte limit.

mod accept;
mod deflate;
mod handshake;
mod metered;
mod on_tokio;
mod on_tokio_uring;
pub mod room;
mod session;
mod silence_clock;
mod tls;
mod transport;
mod ws;

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tungstenite::Message;

use crate::server::admission::{Gate, Refusal};
use crate::server::core::goodbye_at;
use crate::server::histogram::ShardHistograms;
use crate::server::hub::{Hub, Wake};
use crate::server::settings::Settings;
use crate::server::stats::ShardCounters;
use crate::server::{FdUse, ShardSetup, ShardStart};
use room::Room;

/// Which runtime runs the tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// One multi-thread runtime for the whole server.
    Tokio,
    /// A current-thread runtime per shard.
    TokioPerShard,
    /// A tokio-uring runtime per shard.
    TokioUring,
}

/// The fds a shard holds besides its connections. A shard builds its
/// runtime before it takes a private fd table (`ShardStart::claim`), so the
/// runtime's fds — which other shards' threads write to when they wake its
/// tasks — are in every table: tokio's epoll and waker eventfd, and for
/// tokio-uring also the ring. The listener is the shard's own.
pub fn fd_use(flavor: Flavor) -> FdUse {
    let runtime = match flavor {
        Flavor::Tokio | Flavor::TokioPerShard => 2,
        Flavor::TokioUring => 3,
    };
    FdUse {
        in_every_table: runtime,
        own: 1,
    }
}

/// The rooms every shard shares (one per payload type; a server uses one).
#[derive(Clone)]
pub struct Rooms {
    /// tokio-tungstenite connections queue whole messages.
    pub messages: Arc<Room<Message>>,
    /// Session-driven connections queue encoded frames.
    pub frames: Arc<Room<Bytes>>,
}

impl Rooms {
    pub fn new(max_backlog: usize, max_backlog_total: Option<usize>) -> Rooms {
        Rooms {
            messages: Arc::new(Room::new(max_backlog, max_backlog_total)),
            frames: Arc::new(Room::new(max_backlog, max_backlog_total)),
        }
    }
}

/// One shard's runtime-to-be, made in the main thread.
pub struct Prepared {
    pub flavor: Flavor,
    /// Worker threads of the multi-thread runtime (`Flavor::Tokio`).
    pub workers: usize,
    pub rooms: Rooms,
    /// Woken by the hub: shutdown, or a cache-flush request.
    pub signal: Arc<Notify>,
}

struct Signal(Arc<Notify>);

impl Wake for Signal {
    fn wake(&self) -> io::Result<()> {
        self.0.notify_one();
        Ok(())
    }
}

pub fn prepare(flavor: Flavor, workers: usize, rooms: Rooms) -> (Prepared, Box<dyn Wake>) {
    let signal = Arc::new(Notify::new());
    let waker = Box::new(Signal(signal.clone()));
    let prepared = Prepared {
        flavor,
        workers,
        rooms,
        signal,
    };
    (prepared, waker)
}

/// Whether tokio-uring can start here.
pub fn probe_tokio_uring() -> Result<(), String> {
    io_uring::IoUring::new(8)
        .map(drop)
        .map_err(|error| format!("io_uring_setup failed ({error}): io_uring is missing or disabled (sysctl kernel.io_uring_disabled)"))
}

/// Run one shard until the hub says shut down.
pub fn run(prepared: Prepared, start: ShardStart, setup: ShardSetup) -> io::Result<()> {
    match prepared.flavor {
        Flavor::Tokio | Flavor::TokioPerShard => on_tokio::run(prepared, start, setup),
        Flavor::TokioUring => on_tokio_uring::run(prepared, start, setup),
    }
}

/// Claim the shard's listener (see [`fd_use`] for why only now).
fn claim_listener(start: ShardStart) -> io::Result<TcpListener> {
    let listener = start.claim()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What every connection task of a shard shares.
pub struct Shard {
    pub id: usize,
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub rooms: Rooms,
    /// Turns `true` once, when the drain begins.
    pub shutdown: watch::Receiver<bool>,
    /// Which upgrades to refuse (--max-conns, --accept-rate); locked once
    /// per upgrade (the workers of `tokio` share a shard).
    gate: std::sync::Mutex<Gate>,
    /// The drain's turns: connections open when it began, turns taken.
    to_tell: OnceLock<usize>,
    turns_taken: AtomicUsize,
}

impl Shard {
    /// The shard's shared state, and the sender that flips its shutdown flag.
    fn new(prepared: &Prepared, setup: &ShardSetup) -> (watch::Sender<bool>, Arc<Shard>) {
        let (stop, shutdown) = watch::channel(false);
        // Frames from other instances (--backplane) go to this process's
        // rooms; whichever has the members takes them.
        let (rooms, hub) = (prepared.rooms.clone(), Arc::downgrade(&setup.hub));
        setup.hub.route_from_elsewhere(Box::new(move |frame| {
            if let Some(hub) = hub.upgrade() {
                rooms.messages.deliver_from_elsewhere(&frame, &hub);
                rooms.frames.deliver_from_elsewhere(&frame, &hub);
            }
        }));
        let shard = Arc::new(Shard {
            id: setup.id,
            settings: setup.settings.clone(),
            hub: setup.hub.clone(),
            rooms: prepared.rooms.clone(),
            shutdown,
            gate: std::sync::Mutex::new(Gate::new(
                setup.settings.max_conns,
                setup.settings.accept_rate,
                setup.hub.shards(),
            )),
            to_tell: OnceLock::new(),
            turns_taken: AtomicUsize::new(0),
        });
        (stop, shard)
    }

    pub fn counters(&self) -> &ShardCounters {
        self.hub.counters(self.id)
    }

    pub fn histograms(&self) -> &ShardHistograms {
        self.hub.histograms(self.id)
    }

    /// May one more connection upgrade? A yes holds a place in the
    /// server's admitted count until the connection's [`accept::Live`]
    /// ends (the caller marks it); a refusal is counted by its reason.
    pub fn admit(&self) -> Result<(), Refusal> {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.admit(&self.hub.admitted, self.counters(), self.hub.leaving())
    }

    /// Resolves when the drain reaches this connection: its goodbye spread
    /// over --drain-time as the shard core spreads them (`goodbye_at`).
    pub async fn turn_to_go(&self) {
        let mut shutdown = self.shutdown.clone();
        let _ = shutdown.wait_for(|&leaving| leaving).await;
        let Some(began) = self.hub.drain_began() else {
            return;
        };
        let to_tell = *self.to_tell.get_or_init(|| {
            let counters = self.counters();
            let closed = counters.closed.load(Relaxed);
            counters.accepted.load(Relaxed).saturating_sub(closed) as usize
        });
        let turn = self.turns_taken.fetch_add(1, Relaxed);
        let at = began + goodbye_at(turn, to_tell, self.settings.drain_time);
        tokio::time::sleep_until(at.into()).await;
    }
}

/// The shard's life once it accepts: serve the hub's signals until it says
/// shut down, then stop accepting, tell every connection (the goodbye) and
/// wait, bounded, for them to close.
async fn serve_until_shutdown(
    prepared: &Prepared,
    shard: &Shard,
    stop: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
) {
    housekeeping(&prepared.signal, &shard.hub, shard.id).await;
    accepting.abort();
    let _ = stop.send(true);
    wait_for_connections_to_end(shard).await;
}

/// Wait for the hub's signals: serve cache-flush requests until the drain.
async fn housekeeping(signal: &Notify, hub: &Hub, id: usize) {
    loop {
        signal.notified().await;
        hub.serve_flush_request(id);
        if hub.leaving() {
            return;
        }
    }
}

/// During the drain: wait until this shard's connections are closed, the
/// drain is over (`Settings::drain_ends`) or the hub says stop now.
/// Connections still open then are dropped with the runtime.
async fn wait_for_connections_to_end(shard: &Shard) {
    let began = shard
        .hub
        .drain_began()
        .unwrap_or_else(std::time::Instant::now);
    let deadline = shard.settings.drain_ends(began);
    let counters = shard.counters();
    while std::time::Instant::now() < deadline && !shard.hub.shutting_down() {
        let accepted = counters.accepted.load(Relaxed);
        let closed = counters.closed.load(Relaxed);
        if closed >= accepted {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
