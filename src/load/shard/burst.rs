//! A burst on one client shard: its share of the connections issued in one
//! go when the work starts, and each attempt's one fate (`load::burst`).

use std::sync::atomic::Ordering::Relaxed;

use super::Shard;
use crate::load::burst::{self, BURST_ATTEMPT};
use crate::load::payload::now_ns;

impl Shard {
    /// Issue this shard's share of a burst of `size`, every connect() in
    /// this one turn of the loop.
    pub(super) fn start_burst(&mut self, size: usize, now: u64) {
        let share = burst::share(size, self.job.shards, self.job.id);
        self.result.burst.first_issue_ns = now_ns();
        for _ in 0..share {
            self.result.burst.issued += 1;
            self.open_attempt(now, BURST_ATTEMPT);
        }
        self.result.burst.last_issue_ns = now_ns();
    }

    /// A burst connection opened `elapsed` ns after its connect(): note
    /// whether the kernel had to send its SYN or request again.
    pub(super) fn burst_opened(&mut self, key: usize, now: u64, elapsed: u64) {
        let socket = &self.clients[key].socket;
        let resent = crate::sys::total_retransmits(socket).is_ok_and(|n| n > 0);
        let result = &mut self.result.burst;
        result.opened += 1;
        result.retransmitted += u64::from(resent);
        result.setup.record_ns(elapsed);
        result.settle(now);
        self.progress().burst_settled.fetch_add(1, Relaxed);
    }

    /// A burst attempt failed: counted by cause, never retried.
    pub(super) fn burst_failed(&mut self, cause: &str, now: u64) {
        let result = &mut self.result.burst;
        *result.failures.entry(cause.to_string()).or_default() += 1;
        result.settle(now);
        self.progress().burst_settled.fetch_add(1, Relaxed);
    }
}
