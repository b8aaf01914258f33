//! Storms: losing open connections and bringing each back on its own
//! schedule (`load::storm`): at once, or after a jittered backoff that
//! grows with every failed attempt.

use std::cmp::Reverse;
use std::sync::atomic::Ordering::Relaxed;

use super::Shard;
use crate::load::config::Work;
use crate::load::storm::{self, StormCause, MAX_ATTEMPTS};

/// Reconnects a shard starts per turn of its loop, at most.
const PER_TURN: usize = 256;

impl Shard {
    fn storm(&self) -> Option<(StormCause, Option<storm::Backoff>)> {
        match self.job.scenario.work {
            Work::Storm { cause, backoff } => Some((cause, backoff)),
            _ => None,
        }
    }

    /// The storm's work begins: with `--storm-cause reset`, reset every
    /// open connection (RST) at once; either way, tell the orchestrator
    /// this shard is in the storm.
    pub(super) fn start_storm(&mut self, now: u64) {
        if let Some((StormCause::Reset, _)) = self.storm() {
            let open: Vec<usize> = self.open_keys();
            for key in open {
                if let Some(client) = self.take_client(key) {
                    client.abort();
                }
                self.progress().alive.fetch_sub(1, Relaxed);
                self.lost(now);
            }
        }
        self.job.control.storm_shards.fetch_add(1, Relaxed);
    }

    /// An open connection is gone: in a storm, it comes back.
    pub(super) fn lost(&mut self, now: u64) {
        if self.storm().is_none() {
            return;
        }
        let control = &self.job.control;
        let _ = control
            .storm_began_ns
            .compare_exchange(0, now, Relaxed, Relaxed);
        self.result.storm_lost += 1;
        self.queue_reconnect(1, now);
    }

    /// An attempt failed: a reconnect is tried again, later.
    pub(super) fn attempt_failed(&mut self, cause: &str, attempt: u8, now: u64) {
        if attempt == crate::load::burst::BURST_ATTEMPT {
            return self.burst_failed(cause, now);
        }
        self.fail(cause);
        if attempt > 0 {
            self.queue_reconnect(attempt.saturating_add(1), now);
        }
    }

    fn queue_reconnect(&mut self, attempt: u8, now: u64) {
        let Some((_, backoff)) = self.storm() else {
            return;
        };
        if attempt > MAX_ATTEMPTS {
            self.result.storm_gave_up += 1;
            return;
        }
        let random = self.next_random();
        let wait = storm::wait_before(backoff, attempt - 1, random);
        self.reconnects
            .push(Reverse((now + wait.as_nanos() as u64, attempt)));
    }

    /// Start the reconnects that are due, at most [`PER_TURN`] before the
    /// loop goes back to its events: a connect() can be slow (the kernel's
    /// port search), and an attempt the loop cannot attend to would time
    /// out on the client's side, not the server's.
    pub(super) fn reconnects_due(&mut self, now: u64) {
        for _ in 0..PER_TURN {
            let Some(&Reverse((due, attempt))) = self.reconnects.peek() else {
                return;
            };
            if due > now {
                return;
            }
            self.reconnects.pop();
            self.result.storm_attempts += 1;
            self.open_attempt(now, attempt);
        }
    }

    /// When the next reconnect is due.
    pub(super) fn next_reconnect(&self) -> Option<u64> {
        self.reconnects.peek().map(|Reverse((due, _))| *due)
    }
}
