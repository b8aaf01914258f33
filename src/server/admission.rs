//! Admission control: which upgrades a server refuses, politely, so that a
//! storm of new clients cannot take down the connections it already has.
//! Two limits, both checked when a handshake completes (before the 101 or
//! the TCP hello's answer):
//! - `--max-conns`: connections admitted at once, across every shard (one
//!   shared counter, touched once per upgrade and once per close of an
//!   admitted connection — never per message);
//! - `--accept-rate`: upgrades per second, a token bucket per shard (no
//!   state shared between shards).
//!
//! Over either, a WebSocket gets HTTP 503 with `Retry-After`, a TCP client
//! the hello answer `error: try again later`, and the refusal is counted by
//! reason.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::server::stats::{bump, ShardCounters};

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 1;

/// Why an upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// --max-conns connections are admitted already.
    OverCapacity,
    /// The shard's --accept-rate bucket is empty.
    AcceptRate,
    /// The server has begun to drain: it takes no one new.
    Draining,
}

impl Refusal {
    /// The HTTP response a WebSocket client gets.
    pub fn http_response(self) -> Vec<u8> {
        let why = match self {
            Refusal::OverCapacity => "the server holds its --max-conns connections",
            Refusal::AcceptRate => "the server is taking new connections at its --accept-rate",
            Refusal::Draining => "the server is shutting down",
        };
        let body = format!("{why}; try again later\n");
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {RETRY_AFTER_S}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// The admitted connections of the whole server, against --max-conns.
#[derive(Debug, Default)]
pub struct Admitted {
    count: AtomicUsize,
}

impl Admitted {
    /// Take a place if one is left (no limit: always).
    pub fn enter(&self, max: Option<usize>) -> bool {
        let Some(max) = max else {
            self.count.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// An admitted connection closed.
    pub fn leave(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// Upgrades per second for one shard: `rate` tokens a second, holding at
/// most a tenth of a second's worth (and at least one), so a burst is
/// admitted up to that and the rest refused.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64) -> TokenBucket {
        let capacity = (rate / 10.0).max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Take a token now, if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A shard's gate: its bucket (if --accept-rate) and the server's limit.
#[derive(Debug)]
pub struct Gate {
    bucket: Option<TokenBucket>,
    max_conns: Option<usize>,
}

impl Gate {
    /// `accept_rate` is the server's; each of `shards` takes its share.
    pub fn new(max_conns: Option<usize>, accept_rate: Option<f64>, shards: usize) -> Gate {
        Gate {
            bucket: accept_rate.map(|rate| TokenBucket::new(rate / shards.max(1) as f64)),
            max_conns,
        }
    }

    /// May one more connection upgrade? On yes it holds a place in
    /// `admitted`, to give back with [`Admitted::leave`] when it closes; a
    /// refusal is counted in `counters` by its reason. Once the server
    /// `draining`, every upgrade is refused: one that completes before the
    /// drain reaches its shard would otherwise be admitted only to be told
    /// to go.
    pub fn admit(
        &mut self,
        admitted: &Admitted,
        counters: &ShardCounters,
        draining: bool,
    ) -> Result<(), Refusal> {
        let verdict = match draining {
            true => Err(Refusal::Draining),
            false => self.verdict(admitted),
        };
        if let Err(refusal) = verdict {
            bump(match refusal {
                Refusal::OverCapacity => &counters.rejected_over_capacity,
                Refusal::AcceptRate => &counters.rejected_accept_rate,
                Refusal::Draining => &counters.rejected_draining,
            });
        }
        verdict
    }

    fn verdict(&mut self, admitted: &Admitted) -> Result<(), Refusal> {
        if let Some(bucket) = &mut self.bucket {
            if !bucket.take() {
                return Err(Refusal::AcceptRate);
            }
        }
        match admitted.enter(self.max_conns) {
            true => Ok(()),
            false => Err(Refusal::OverCapacity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_server_admits_up_to_its_limit_and_again_after_a_close() {
        let admitted = Admitted::default();
        let counters = ShardCounters::default();
        let mut gate = Gate::new(Some(2), None, 1);
        assert_eq!(gate.admit(&admitted, &counters, false), Ok(()));
        assert_eq!(gate.admit(&admitted, &counters, false), Ok(()));
        assert_eq!(
            gate.admit(&admitted, &counters, false),
            Err(Refusal::OverCapacity)
        );
        admitted.leave();
        assert_eq!(gate.admit(&admitted, &counters, false), Ok(()));
        assert_eq!(admitted.count(), 2);
        assert_eq!(counters.rejected_over_capacity.load(Ordering::Relaxed), 1);
        let mut unlimited = Gate::new(None, None, 1);
        assert!((0..1000).all(|_| unlimited.admit(&admitted, &counters, false).is_ok()));
    }

    #[test]
    fn a_draining_server_refuses_everyone_and_counts_it() {
        let admitted = Admitted::default();
        let counters = ShardCounters::default();
        let mut gate = Gate::new(None, None, 1);
        assert_eq!(
            gate.admit(&admitted, &counters, true),
            Err(Refusal::Draining)
        );
        assert_eq!(admitted.count(), 0);
        assert_eq!(counters.rejected_draining.load(Ordering::Relaxed), 1);
        let response = String::from_utf8(Refusal::Draining.http_response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(response.contains("shutting down"));
    }

    #[test]
    fn the_bucket_refills_at_its_rate_and_holds_a_tenth_of_a_second() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000.0);
        bucket.last = start;
        // 100 tokens to begin with, then none.
        assert_eq!((0..150).filter(|_| bucket.take_at(start)).count(), 100);
        // 10 ms later: 10 more.
        let later = start + Duration::from_millis(10);
        assert_eq!((0..50).filter(|_| bucket.take_at(later)).count(), 10);
        // A long pause refills only to the capacity.
        let much_later = later + Duration::from_secs(5);
        assert_eq!((0..500).filter(|_| bucket.take_at(much_later)).count(), 100);
    }

    #[test]
    fn a_refusal_is_a_503_with_retry_after() {
        let response = String::from_utf8(Refusal::OverCapacity.http_response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(response.contains("\r\nRetry-After: 1\r\n"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
