//! Deadlines, set in the connection and found by a sweep of the slab every
//! `SWEEP_EVERY` while any is set (see `server::deadline`): the handshake's
//! and the close's, and for an open connection its silence limit
//! (--ping-interval, --idle-timeout), pushed back whenever it sends.

use std::time::Instant;

use crate::server::silence::{on_silence, silence_limit, Silence};

use super::{send, tls, Core, Flags, Io};
use crate::protocol::close_code;
use crate::protocol::frame::{self, OpCode};
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

    /// An open connection sent something: its silence starts again.
    pub(super) fn heard_from(&mut self, key: usize) {
        let (ping, idle) = self.settings.silence_limits();
        let Some(limit) = silence_limit(ping, idle) else {
            return;
        };
        let conn = &mut self.conns[key];
        if !matches!(conn.phase, Phase::Open(_)) {
            return;
        }
        conn.flags.set(Flags::PINGED, false);
        let deadline = self.clock.after(limit);
        self.set_deadline(key, deadline);
    }

    /// Close connections whose handshake or close outlived its deadline (a
    /// WebSocket handshake that timed out gets a 408 first, best effort);
    /// ping or close open connections silent past theirs.
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
            let in_tls_handshake = self.tls_handshaking(key);
            let conn = &mut self.conns[key];
            match conn.phase {
                Phase::Open(_) => {
                    self.silent(io, key);
                    continue;
                }
                Phase::Handshake if in_tls_handshake => {
                    // No HTTP answer inside a TLS handshake: just close.
                    bump(&self.counters().handshake_timeouts);
                    bump(&self.counters().tls_handshake_stalls);
                }
                Phase::Handshake => {
                    if self.settings.proto == Proto::Ws && conn.can_write_directly() {
                        let response = Rejection::Timeout.response();
                        let counters = self.hub.counters(self.id);
                        let sealer = tls::sealer_for(&mut self.tls, key);
                        let _ = send(conn, sealer, io, key, &[&response[..]], counters);
                    }
                    bump(&self.counters().handshake_timeouts);
                }
                Phase::Closing(_) | Phase::Draining => {}
            }
            self.cut(io, key);
        }
        self.next_sweep = (self.timed > 0).then(|| now + SWEEP_EVERY);
    }

    /// An open connection stayed silent past its deadline.
    fn silent<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        let (ping, idle) = self.settings.silence_limits();
        match on_silence(ping, idle, self.conns[key].flags.has(Flags::PINGED)) {
            Silence::Ping { then } => {
                let conn = &mut self.conns[key];
                let ping = frame::server_frame(OpCode::Ping, b"");
                let counters = self.hub.counters(self.id);
                let sealer = tls::sealer_for(&mut self.tls, key);
                if send(conn, sealer, io, key, std::slice::from_ref(&ping), counters).is_err() {
                    return self.cut(io, key);
                }
                conn.flags.set(Flags::PINGED, true);
                bump(&self.counters().pings_sent);
                let deadline = self.clock.after(then);
                self.set_deadline(key, deadline);
            }
            Silence::PingUnanswered => {
                bump(&self.counters().ping_timeouts);
                self.cut(io, key);
            }
            Silence::Idle => {
                bump(&self.counters().idle_timeouts);
                self.close_politely(io, key, close_code::GOING_AWAY, "idle timeout");
            }
        }
    }
}
