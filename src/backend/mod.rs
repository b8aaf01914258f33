//! Event-loop backends: the I/O under the shard core, and nothing else.
//!
//! # The contract
//!
//! A shard's [`Core`](crate::server::core::Core) owns every decision: the
//! connections and their phases, the session, queues and backpressure, the
//! room and its backlog limit, deadlines, the goodbye, the counters. A
//! backend owns the sockets and the loop, and does two things:
//!
//! - **Reports events** to the core: a connection was accepted
//!   ([`Core::admit`](crate::server::core::Core::admit)), accepting failed
//!   (`accept_failed`), bytes arrived (`received`), the socket can take
//!   bytes again (`writable`, readiness backends) or a send finished (`sent`,
//!   completion backends), the peer hung up or the socket failed
//!   (`hung_up`), and the turn is over (`end_turn`), then at shutdown
//!   `say_goodbye`.
//! - **Carries out actions** the core asks through
//!   [`Io`](crate::server::core::Io): write now, send the queue, shut the
//!   write side, close (keeping buffers of an unfinished send alive), pause
//!   and resume reading, pause and resume accepting.
//!
//! A backend never parses, never decides to close, and never queues bytes
//! of its own. It asks the core, before accepting, whether to accept
//! (`accepting`) and, before reading, whether input is wanted
//! (`wants_input`). [`BackendKind`] picks one, once, at start.
//!
//! Each backend also tells the shard plan which fds a shard holds
//! ([`fd_use`]) and what one connection costs in the core's slab
//! ([`slot_bytes`]).
//!
//! The task backends (`tokio`, `tokio-tpc`, `tokio-uring`, in [`tasks`])
//! are the exception by design: they are the baselines, servers written
//! the usual way (a task per connection on a runtime), and use the core's
//! protocol session but not the core.

pub mod epoll;
pub mod tasks;
pub mod uring;

use std::io;

use crate::server::hub::Wake;
use crate::server::settings::Settings;
use crate::server::{FdUse, ShardSetup, ShardStart};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Readiness: edge-triggered epoll via mio, writes straight from the
    /// shard's thread.
    Epoll,
    /// Completions: one io_uring per shard (multishot accept; idle
    /// connections polled, talking ones read by a multishot recv, into one
    /// provided buffer ring; batched sends). Needs Linux 6.1 or later.
    Uring,
    /// Baseline: one multi-thread tokio runtime, a task per connection,
    /// tokio-tungstenite. One fd table, so at most what RLIMIT_NOFILE allows.
    Tokio,
    /// Baseline: the `tokio` connection code on a current-thread runtime
    /// per shard, each shard with its own listener and (past one table) its
    /// own fd table.
    TokioTpc,
    /// Baseline: a tokio-uring runtime per shard, a task per connection
    /// running fanout's protocol session.
    TokioUring,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Epoll => "epoll",
            BackendKind::Uring => "uring",
            BackendKind::Tokio => "tokio",
            BackendKind::TokioTpc => "tokio-tpc",
            BackendKind::TokioUring => "tokio-uring",
        }
    }

    /// Whether this is one of the baselines that run a task per connection.
    pub fn is_task_per_connection(self) -> bool {
        matches!(
            self,
            BackendKind::Tokio | BackendKind::TokioTpc | BackendKind::TokioUring
        )
    }

    /// Whether the whole server is one runtime in one fd table (so the shard
    /// plan cannot give it private tables).
    pub fn single_fd_table(self) -> bool {
        self == BackendKind::Tokio
    }
}

/// A shard's backend state made in the main thread, before any shard thread
/// unshares its fd table, so that its waker is valid in every table.
pub enum Prepared {
    Epoll(epoll::Prepared),
    Uring(uring::Prepared),
    Tasks(tasks::Prepared),
}

/// Whether this kernel can run the backend; the error names what is missing.
pub fn probe(kind: BackendKind) -> Result<(), Missing> {
    match kind {
        BackendKind::Epoll | BackendKind::Tokio | BackendKind::TokioTpc => Ok(()),
        BackendKind::Uring => probe_ring(kind, uring::probe),
        BackendKind::TokioUring => probe_ring(kind, tasks::probe_tokio_uring),
    }
}

/// Run an io_uring probe in a thread of its own, which ends with its test
/// ring: the ring's teardown queues task work on the thread that made it,
/// which would interrupt that thread's next blocking call (EINTR).
fn probe_ring(kind: BackendKind, probe: fn() -> Result<(), String>) -> Result<(), Missing> {
    std::thread::scope(|scope| scope.spawn(probe).join())
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
        .map_err(|missing| Missing {
            backend: kind.name(),
            missing,
        })
}

/// What a backend needs and the kernel lacks.
#[derive(Debug, thiserror::Error)]
#[error("the {backend} backend cannot run here: {missing}")]
pub struct Missing {
    pub backend: &'static str,
    pub missing: String,
}

/// The fds one shard of this backend holds besides its connections.
pub fn fd_use(kind: BackendKind) -> FdUse {
    match kind {
        BackendKind::Epoll => epoll::FD_USE,
        BackendKind::Uring => uring::FD_USE,
        BackendKind::Tokio | BackendKind::TokioTpc | BackendKind::TokioUring => {
            tasks::fd_use(tasks_flavor(kind))
        }
    }
}

/// What makes one shard's event loop and the handle other threads wake it
/// with; called once per shard, in the main thread. `workers` is the
/// multi-thread runtime's thread count (`tokio` only); the task backends'
/// shards share one room, made here.
pub fn preparer(
    kind: BackendKind,
    settings: &Settings,
    workers: usize,
) -> impl Fn() -> io::Result<(Prepared, Box<dyn Wake>)> {
    let rooms = tasks::Rooms::new(settings.max_backlog, settings.max_backlog_total);
    move || match kind {
        BackendKind::Epoll => {
            let (prepared, waker) = epoll::prepare()?;
            Ok((Prepared::Epoll(prepared), waker))
        }
        BackendKind::Uring => {
            let (prepared, waker) = uring::prepare()?;
            Ok((Prepared::Uring(prepared), waker))
        }
        BackendKind::Tokio | BackendKind::TokioTpc | BackendKind::TokioUring => {
            let (prepared, waker) = tasks::prepare(tasks_flavor(kind), workers, rooms.clone());
            Ok((Prepared::Tasks(prepared), waker))
        }
    }
}

fn tasks_flavor(kind: BackendKind) -> tasks::Flavor {
    match kind {
        BackendKind::Tokio => tasks::Flavor::Tokio,
        BackendKind::TokioTpc => tasks::Flavor::TokioPerShard,
        _ => tasks::Flavor::TokioUring,
    }
}

/// Bytes one connection's state takes in a shard's slab (a slot), for the
/// memory report; the task backends have no slab.
pub fn slot_bytes(kind: BackendKind) -> Option<usize> {
    match kind {
        BackendKind::Epoll => Some(epoll::SLOT_BYTES),
        BackendKind::Uring => Some(uring::SLOT_BYTES),
        BackendKind::Tokio | BackendKind::TokioTpc | BackendKind::TokioUring => None,
    }
}

/// Run one shard until the hub says shut down.
pub fn run(prepared: Prepared, start: ShardStart, setup: ShardSetup) -> io::Result<()> {
    match prepared {
        Prepared::Epoll(prepared) => epoll::run(prepared, start.claim()?, setup),
        Prepared::Uring(prepared) => uring::run(prepared, start.claim()?, setup),
        Prepared::Tasks(prepared) => tasks::run(prepared, start, setup),
    }
}
