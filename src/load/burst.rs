//! Connection bursts (`fanout load burst`): with --conns connections held,
//! --burst more are opened in one instant — every client shard issues its
//! share of connect() calls in one go, nothing limiting those in flight —
//! and the report says what the server did with each: opened, refused with
//! 503 by its admission control, failed (by cause), or opened only after
//! the client sent its SYN or request again because the server's kernel
//! dropped the first (a full accept queue). A burst's attempts are never
//! retried: each has one fate.

use std::collections::BTreeMap;

use crate::load::histogram::Latency;

/// The attempt number a burst's connections carry (the ramp's are 0, a
/// storm's reconnects 1 to `storm::MAX_ATTEMPTS`).
pub const BURST_ATTEMPT: u8 = u8::MAX;

/// What one client shard saw of the burst.
#[derive(Default)]
pub struct BurstResult {
    /// Attempts started.
    pub issued: u64,
    /// When this shard issued its first and its last connect() (ns).
    pub first_issue_ns: u64,
    pub last_issue_ns: u64,
    /// When its last attempt opened or failed (ns).
    pub last_settled_ns: u64,
    pub opened: u64,
    /// Of those, sockets the kernel sent a segment on again (TCP_INFO).
    pub retransmitted: u64,
    /// Failed attempts by cause ("http 503" among them).
    pub failures: BTreeMap<String, u64>,
    /// Each opened one: TCP connect plus upgrade.
    pub setup: Latency,
    /// Burst connections still open when the run ended.
    pub open_at_end: u64,
}

impl BurstResult {
    pub fn merge(&mut self, other: &BurstResult) {
        self.issued += other.issued;
        self.first_issue_ns = earliest(self.first_issue_ns, other.first_issue_ns);
        self.last_issue_ns = self.last_issue_ns.max(other.last_issue_ns);
        self.last_settled_ns = self.last_settled_ns.max(other.last_settled_ns);
        self.opened += other.opened;
        self.retransmitted += other.retransmitted;
        for (cause, n) in &other.failures {
            *self.failures.entry(cause.clone()).or_default() += n;
        }
        self.setup.merge(&other.setup);
        self.open_at_end += other.open_at_end;
    }

    pub fn settled(&self) -> u64 {
        self.opened + self.failures.values().sum::<u64>()
    }

    /// An attempt opened or failed at `now`.
    pub fn settle(&mut self, now: u64) {
        self.last_settled_ns = self.last_settled_ns.max(now);
    }
}

/// The earlier of two times where 0 means "none yet".
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, t) | (t, 0) => t,
        (a, b) => a.min(b),
    }
}

/// This shard's share of a burst of `size` over `shards`.
pub fn share(size: usize, shards: usize, id: usize) -> usize {
    size / shards + usize::from(id < size % shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_burst() {
        for (size, shards) in [(10, 3), (1, 4), (0, 2), (1000, 7)] {
            let total: usize = (0..shards).map(|id| share(size, shards, id)).sum();
            assert_eq!(total, size);
        }
    }

    #[test]
    fn merging_keeps_the_first_issue_and_the_last_settle() {
        let mut all = BurstResult::default();
        let mut a = BurstResult {
            issued: 2,
            first_issue_ns: 50,
            last_issue_ns: 60,
            last_settled_ns: 90,
            opened: 1,
            ..Default::default()
        };
        a.failures.insert("http 503".into(), 1);
        let b = BurstResult {
            issued: 1,
            first_issue_ns: 40,
            last_issue_ns: 45,
            last_settled_ns: 100,
            opened: 1,
            retransmitted: 1,
            ..Default::default()
        };
        all.merge(&a);
        all.merge(&b);
        assert_eq!(
            (all.issued, all.first_issue_ns, all.last_issue_ns),
            (3, 40, 60)
        );
        assert_eq!(
            (all.last_settled_ns, all.settled(), all.retransmitted),
            (100, 3, 1)
        );
    }
}
