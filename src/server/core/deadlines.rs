//! Handshake and close deadlines: set in the connection, found by a sweep of
//! the slab every `SWEEP_EVERY` while any is set (see `server::deadline`).

use std::time::Instant;

use super::{send, Core, Io};
use crate::protocol::handshake::Rejection;
use crate::protocol::Proto;
use crate::server::deadline::{Deadline, SWEEP_EVERY};
use crate::server::session::Phase;
use crate::server::stats::bump;

impl<S> Core<S> {
    pub(super) fn set_deadline(&mut self, key: usize, deadline: Deadline) {
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

    /// Close connections whose handshake or close outlived its deadline; a
    /// WebSocket handshake that timed out gets a 408 first (best effort).
    pub(super) fn sweep_deadlines<I: Io<Socket = S>>(&mut self, io: &mut I) {
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
                if self.settings.proto == Proto::Ws && conn.can_write_directly() {
                    let _ = send(conn, io, key, &[&Rejection::Timeout.response()[..]]);
                }
                bump(&self.counters().handshake_timeouts);
            }
            self.close(io, key);
        }
        self.next_sweep = (self.timed > 0).then(|| now + SWEEP_EVERY);
    }
}
