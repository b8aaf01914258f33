//! Event-loop backends behind one seam. A backend owns sockets and readiness
//! (or completions); it feeds received bytes to `server::session` and sends
//! what the session decides. Nothing outside this folder knows which backend
//! runs: `serve` picks one here, once, by [`BackendKind`].

pub mod epoll;

use std::io;
use std::net::TcpListener;

use crate::server::hub::Wake;
use crate::server::ShardSetup;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Readiness-based, via mio (epoll on Linux).
    Epoll,
}

/// A shard's backend state made in the main thread, before any shard thread
/// unshares its fd table, so that its waker is valid in every table.
pub enum Prepared {
    Epoll(epoll::Prepared),
}

/// Create one shard's event loop and the handle other threads wake it with.
pub fn prepare(kind: BackendKind) -> io::Result<(Prepared, Box<dyn Wake>)> {
    match kind {
        BackendKind::Epoll => {
            let (prepared, waker) = epoll::prepare()?;
            Ok((Prepared::Epoll(prepared), waker))
        }
    }
}

/// Bytes one connection's state takes in a shard's slab (a slot), for the
/// memory report.
pub fn slot_bytes(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Epoll => epoll::conn::SLOT_BYTES,
    }
}

/// Run one shard until the hub says shut down.
pub fn run(prepared: Prepared, listener: TcpListener, setup: ShardSetup) -> io::Result<()> {
    match prepared {
        Prepared::Epoll(prepared) => epoll::run(prepared, listener, setup),
    }
}
