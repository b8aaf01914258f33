//! A connection's readiness events: read into the shard's buffer, run the
//! session, write or queue what it decided, and follow the connection through
//! its phases to the close.

use std::io::{self, Read};
use std::net::Shutdown;
use std::time::Instant;

use bytes::Bytes;

use super::{Conn, Shard};
use crate::protocol::Route;
use crate::server::deadline::Deadline;
use crate::server::session::{self, AfterFlush, Ending, Outbox, Phase};
use crate::server::stats::{bump, ShardCounters};

impl Shard {
    pub(super) fn on_conn_event(&mut self, key: usize, event: &mio::event::Event) {
        if event.is_writable() {
            self.on_writable(key);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.on_readable(key, event.is_read_closed());
        }
    }

    pub(super) fn on_writable(&mut self, key: usize) {
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
    pub(super) fn after_drain(&mut self, key: usize) {
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
    pub(super) fn on_readable(&mut self, key: usize, read_closed: bool) {
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
    pub(super) fn on_bytes(&mut self, key: usize, data: &mut [u8]) -> bool {
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
    pub(super) fn on_phase_change(&mut self, key: usize, before: Phase, ending: Option<Ending>) {
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
    pub(super) fn start_closing(&mut self, key: usize) {
        let deadline = self.clock.after(self.config.close_timeout);
        self.set_deadline(key, deadline);
        if self.conns[key].queued_bytes() == 0 {
            self.after_drain(key);
        }
    }

    pub(super) fn close(&mut self, key: usize) {
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
}

/// The session's [`Outbox`] for one connection of this shard.
pub(super) struct ConnOutbox<'a> {
    pub(super) conn: &'a mut Conn,
    pub(super) published: &'a mut Vec<Bytes>,
    pub(super) counters: &'a ShardCounters,
    /// A write failed: the connection is dead and must be closed.
    pub(super) failed: bool,
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
