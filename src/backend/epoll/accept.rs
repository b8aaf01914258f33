//! Accepting: take every queued connection, register it, start its handshake
//! deadline; pause (never spin) when the shard or the fd table is full.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{Conn, Shard, ACCEPT_RETRY};
use crate::server::deadline::Deadline;
use crate::server::stats::bump;
use crate::sys;

impl Shard {
    pub(super) fn accept_all(&mut self) {
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

    pub(super) fn resume_accepting(&mut self) {
        if self.accept_retry_at.take().is_some() {
            self.accept_all();
        }
    }

    pub(super) fn admit(&mut self, socket: mio::net::TcpStream) {
        bump(&self.counters().accepted);
        // SAFETY: the fd comes straight out of mio's stream, which gives up
        // ownership; it is an open, non-blocking TCP socket.
        let socket = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
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
        let slots = self.conns.capacity() as u64;
        self.counters().conn_slots.store(slots, Relaxed);
    }
}
