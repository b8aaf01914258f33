//! The epoll backend: one mio `Poll` per shard, edge-triggered, connection
//! keys as mio `Token`s, and one 64 KiB read buffer shared by all of the
//! shard's connections. It reads, writes and registers; the shard core
//! decides everything else (see the contract in `backend/mod.rs`).

mod io;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::chunked_slab::ChunkedSlab;
use crate::server::core::{Conn, Core};
use crate::server::hub::Wake;
use crate::server::{FdUse, ShardSetup};
use io::EpollIo;

pub use io::write_vectored;

const LISTENER: Token = Token(usize::MAX);
/// The token the waker made by [`prepare`] wakes the poll with.
pub const WAKER: Token = Token(usize::MAX - 1);
/// The shard's one read buffer: every connection reads into it.
const SCRATCH_LEN: usize = 64 * 1024;
const EVENTS_PER_POLL: usize = 1024;

/// A poll and its waker, made in the main thread before shards unshare;
/// the listener, made by the shard.
pub const FD_USE: FdUse = FdUse {
    in_every_table: 2,
    own: 1,
};

/// Bytes one connection takes in the core's slab: a slot holds a `Conn`
/// or, when free, the next free slot's index.
pub const SLOT_BYTES: usize = ChunkedSlab::<Conn<TcpStream>>::slot_bytes();

/// Made in the main thread; see `backend::Prepared`.
pub struct Prepared {
    pub poll: Poll,
}

impl Wake for Waker {
    fn wake(&self) -> std::io::Result<()> {
        Waker::wake(self)
    }
}

/// A poll and the waker other threads wake it with (token [`WAKER`]).
pub fn prepare() -> std::io::Result<(Prepared, Box<dyn Wake>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    Ok((Prepared { poll }, Box::new(waker)))
}

pub fn run(prepared: Prepared, listener: TcpListener, setup: ShardSetup) -> std::io::Result<()> {
    let mut listener = mio::net::TcpListener::from_std(listener);
    prepared
        .poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut shard = Shard {
        core: Core::new(setup.id, setup.conn_limit, setup.settings, setup.hub),
        io: EpollIo::default(),
        poll: prepared.poll,
        listener,
        scratch: vec![0; SCRATCH_LEN],
    };
    shard.run()
}

struct Shard {
    core: Core<TcpStream>,
    io: EpollIo,
    poll: Poll,
    listener: mio::net::TcpListener,
    scratch: Vec<u8>,
}

impl Shard {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.core.finished() {
            let timeout = self
                .core
                .next_wake()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            crate::server::stats::bump(&self.core.counters().wakeups);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {} // the core reads the hub every turn
                    Token(key) => self.on_conn_event(key, event),
                }
            }
            self.catch_up();
            self.core.end_turn(&mut self.io);
            self.catch_up();
        }
        self.core.close_all(&mut self.io);
        Ok(())
    }

    /// Carry out what the core asked that needs the loop: read connections
    /// whose reading resumed, accept again when accepting resumed.
    fn catch_up(&mut self) {
        while let Some(key) = self.io.resumed_reading.pop() {
            self.read_all(key, true);
        }
        if std::mem::take(&mut self.io.accept_resumed) {
            self.accept_all();
        }
    }

    fn on_conn_event(&mut self, key: usize, event: &mio::event::Event) {
        if event.is_writable() {
            self.core.writable(&mut self.io, key);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_all(key, event.is_read_closed());
        }
    }

    /// Read until the socket is empty. A short read means empty unless the
    /// peer also hung up (`to_eof`), in which case we read on to EOF.
    fn read_all(&mut self, key: usize, to_eof: bool) {
        while self.core.wants_input(key) {
            let Some(socket) = self.core.socket(key) else {
                return;
            };
            let n = match std::io::Read::read(&mut &*socket, &mut self.scratch) {
                Ok(0) => return self.core.hung_up(&mut self.io, key),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return self.core.failed(&mut self.io, key),
            };
            if !self
                .core
                .received(&mut self.io, key, &mut self.scratch[..n])
            {
                return;
            }
            if n < self.scratch.len() && !to_eof {
                return;
            }
        }
    }

    /// Take every queued connection while the core wants more.
    fn accept_all(&mut self) {
        while self.core.accepting(&mut self.io) {
            match self.listener.accept() {
                Ok((socket, _)) => self.admit(socket),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => self.core.accept_failed(&mut self.io, &e),
            }
        }
    }

    fn admit(&mut self, socket: mio::net::TcpStream) {
        // SAFETY: the fd comes straight out of mio's stream, which gives up
        // ownership; it is an open, non-blocking TCP socket. A std stream is
        // 4 bytes; mio's debug builds add a registration check to theirs.
        let socket = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
        let token = Token(self.core.next_key());
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        match registry.register(&mut SourceFd(&socket.as_raw_fd()), token, interest) {
            Ok(()) => {
                self.core.admit(socket);
            }
            Err(_) => self.core.refused(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle footprint is the point: a socket, a deadline, a phase and a
    /// null pointer. Growing it is a deliberate decision.
    #[test]
    fn idle_connection_state_is_small() {
        assert_eq!(std::mem::size_of::<Conn<TcpStream>>(), 24);
        assert_eq!(SLOT_BYTES, 24);
    }
}
