//! The drain: at the first SIGINT or SIGTERM a shard stops accepting and
//! tells its open connections to go — WebSocket close 1001, TCP our FIN —
//! spread evenly over `--drain-time`, so that a fleet's clients do not all
//! reconnect in the same instant. Each told connection has its close
//! deadline to answer; its close is counted clean (it answered or hung up)
//! or cut. The shard stops when its last connection is gone or when the
//! window and the patience for answers are over (`Settings::drain_ends`).

use std::time::{Duration, Instant};

use super::{Core, Flags, Io};
use crate::protocol::close_code;
use crate::server::session::Phase;
use crate::server::stats::bump;

/// How often a draining shard wakes to tell the next connections.
const TELL_EVERY: Duration = Duration::from_millis(10);

pub(super) struct Drain {
    /// Open connections when the drain reached this shard: the goodbyes
    /// to spread.
    to_tell: usize,
    told: usize,
    /// The next slab key to look at, and the end of the keys in use then.
    cursor: usize,
    end_key: usize,
    /// The window is over and every open connection has been told.
    told_all: bool,
    began: Instant,
}

/// How many of `to_tell` goodbyes are due `elapsed` into a `window`: turn
/// `i` (from 0) is due at `i / to_tell` of the window, so the first at once.
fn goodbyes_due(to_tell: usize, elapsed: Duration, window: Duration) -> usize {
    if elapsed >= window {
        return to_tell;
    }
    let passed = to_tell as u128 * elapsed.as_nanos() / window.as_nanos();
    (passed as usize + 1).min(to_tell)
}

/// When turn `turn` (from 0) of `to_tell` goodbyes is due, from the start
/// of the drain (rounded up, so it is due by [`goodbyes_due`] then): for
/// the task backends, whose connections each wait for their own turn.
pub fn goodbye_at(turn: usize, to_tell: usize, window: Duration) -> Duration {
    if turn >= to_tell {
        return window; // upgraded after the drain began
    }
    let nanos = (window.as_nanos() * turn as u128).div_ceil(to_tell as u128);
    Duration::from_nanos(nanos as u64)
}

impl<S> Core<S> {
    /// Carry the drain on by one turn, starting it if the hub says so.
    pub(super) fn drain_turn<I: Io<Socket = S>>(&mut self, io: &mut I) {
        let Some(began) = self.hub.drain_began() else {
            return;
        };
        if self.drain.is_none() {
            self.begin_drain(io, began);
        }
        let window = self.settings.drain_time;
        let now = Instant::now();
        let drain = self.drain.as_ref().expect("begun");
        let due = goodbyes_due(drain.to_tell, now - drain.began, window);
        loop {
            let drain = self.drain.as_mut().expect("begun");
            if drain.told >= due || drain.cursor >= drain.end_key {
                break;
            }
            let key = drain.cursor;
            drain.cursor += 1;
            if self
                .conns
                .get(key)
                .is_some_and(|c| matches!(c.phase, Phase::Open(_)))
            {
                self.tell_to_go(io, key);
            }
        }
        let drain = self.drain.as_mut().expect("begun");
        if now >= drain.began + window && !drain.told_all {
            drain.told_all = true;
            // Whatever upgraded meanwhile, or sat below the cursor.
            let open: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.phase, Phase::Open(_)))
                .map(|(key, _)| key)
                .collect();
            for key in open {
                self.tell_to_go(io, key);
            }
        }
    }

    fn begin_drain<I: Io<Socket = S>>(&mut self, io: &mut I, began: Instant) {
        if self.accept_retry_at.take().is_none() {
            io.pause_accepting();
        }
        let to_tell = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Open(_)))
            .count();
        self.drain = Some(Drain {
            to_tell,
            told: 0,
            cursor: 0,
            end_key: self.conns.key_bound(),
            told_all: false,
            began,
        });
    }

    /// Say goodbye to an open connection (1001; TCP: our FIN) and count it.
    pub(super) fn tell_to_go<I: Io<Socket = S>>(&mut self, io: &mut I, key: usize) {
        self.conns[key].flags.set(Flags::TOLD_TO_GO, true);
        if let Some(drain) = &mut self.drain {
            drain.told += 1;
        }
        bump(&self.counters().drain_goodbyes);
        self.close_politely(io, key, close_code::GOING_AWAY, "server shutting down");
    }

    /// Whether the shard's event loop should stop: at once when the hub
    /// says so, else once a drain has no connection left or is over.
    pub fn finished(&self) -> bool {
        if self.hub.shutting_down() {
            return true;
        }
        let Some(drain) = &self.drain else {
            return false;
        };
        self.conns.is_empty() || Instant::now() >= self.settings.drain_ends(drain.began)
    }

    /// While draining, when the loop must wake next.
    pub(super) fn drain_wake(&self) -> Option<Instant> {
        let drain = self.drain.as_ref()?;
        match drain.told_all {
            false => Some(Instant::now() + TELL_EVERY),
            true => Some(self.settings.drain_ends(drain.began)),
        }
    }

    /// The loop has stopped: close whatever is still open, a best-effort
    /// 1001 first to open WebSocket connections. Connections still open, or
    /// told and not yet answered, are counted cut.
    pub fn close_all<I: Io<Socket = S>>(&mut self, io: &mut I) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if matches!(conn.phase, Phase::Open(_)) {
                conn.flags.set(Flags::TOLD_TO_GO, true);
                self.say_going_away(io, key);
            }
            self.cut(io, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbyes_are_spread_evenly_over_the_window_and_all_due_at_its_end() {
        let window = Duration::from_secs(10);
        assert_eq!(goodbyes_due(1000, Duration::ZERO, window), 1);
        assert_eq!(goodbyes_due(1000, Duration::from_secs(1), window), 101);
        assert_eq!(goodbyes_due(0, Duration::ZERO, window), 0);
        assert_eq!(
            goodbyes_due(1000, Duration::from_millis(5_001), window),
            501
        );
        assert_eq!(goodbyes_due(1000, window, window), 1000);
        assert_eq!(goodbyes_due(3, Duration::from_millis(1), window), 1);
        assert_eq!(goodbyes_due(7, Duration::ZERO, Duration::ZERO), 7);
    }

    #[test]
    fn each_turn_is_due_when_the_spread_reaches_it() {
        let window = Duration::from_secs(10);
        for turn in 0..1000 {
            let at = goodbye_at(turn, 1000, window);
            assert!(
                goodbyes_due(1000, at, window) > turn,
                "turn {turn} due at {at:?}"
            );
        }
        assert_eq!(goodbye_at(0, 1000, window), Duration::ZERO);
        assert_eq!(goodbye_at(1000, 1000, window), window);
        assert_eq!(goodbye_at(5, 0, window), window);
    }
}
