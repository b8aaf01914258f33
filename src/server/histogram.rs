//! Duration histograms for `--metrics`, in Prometheus's histogram form:
//! fixed bucket bounds, each shard filling its own buckets with relaxed
//! atomics on its own cache lines, summed at scrape. An observation costs
//! a few compares and two uncontended atomic adds; nothing is allocated.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Most bounds a histogram may have.
const MAX_BOUNDS: usize = 18;

/// Bounds for how long a handshake took, from accept to the upgrade. The
/// shard core knows when a connection was accepted only from its handshake
/// deadline (10 ms ticks, no per-connection timestamp), so nothing finer
/// than 10 ms would be honest.
pub const HANDSHAKE_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bounds for how long a broadcast took to reach a shard's members, from
/// 50 µs (a few members) to 10 s (a million on a slow box).
pub const BROADCAST_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// One shard's histogram.
#[derive(Debug)]
#[repr(align(64))]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is past every bound.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BOUNDS && bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// Histograms summed over shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Summed {
    pub bounds: &'static [f64],
    /// Observations at or below each bound (cumulative, as Prometheus
    /// wants), then the count of all of them (`+Inf`).
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
}

impl Summed {
    pub fn of<'a>(bounds: &'static [f64], shards: impl Iterator<Item = &'a Histogram>) -> Summed {
        let mut counts = vec![0u64; bounds.len() + 1];
        let mut sum_nanos = 0u64;
        for shard in shards {
            debug_assert_eq!(shard.bounds, bounds);
            for (count, bucket) in counts.iter_mut().zip(&shard.buckets) {
                *count += bucket.load(Relaxed);
            }
            sum_nanos = sum_nanos.saturating_add(shard.sum_nanos.load(Relaxed));
        }
        let mut running = 0;
        let cumulative = counts
            .into_iter()
            .map(|count| {
                running += count;
                running
            })
            .collect();
        Summed {
            bounds,
            cumulative,
            sum_seconds: sum_nanos as f64 / 1e9,
        }
    }

    pub fn count(&self) -> u64 {
        *self.cumulative.last().expect("at least +Inf")
    }
}

/// A shard's histograms.
#[derive(Debug)]
pub struct ShardHistograms {
    /// From accept to the upgrade admitted (successful handshakes only).
    pub handshake: Histogram,
    /// From a room frame handed to the room to this shard having handed it
    /// to every one of its members (written or queued).
    pub broadcast: Histogram,
}

impl Default for ShardHistograms {
    fn default() -> ShardHistograms {
        ShardHistograms {
            handshake: Histogram::new(HANDSHAKE_BOUNDS),
            broadcast: Histogram::new(BROADCAST_BOUNDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_sum_over_shards() {
        let a = Histogram::new(HANDSHAKE_BOUNDS);
        let b = Histogram::new(HANDSHAKE_BOUNDS);
        a.observe(Duration::from_millis(3)); // ≤ 0.01
        a.observe(Duration::from_millis(10)); // ≤ 0.01, on the bound
        b.observe(Duration::from_millis(30)); // ≤ 0.05
        b.observe(Duration::from_secs(60)); // past every bound
        let summed = Summed::of(HANDSHAKE_BOUNDS, [&a, &b].into_iter());
        assert_eq!(summed.cumulative[0], 2);
        assert_eq!(summed.cumulative[1], 2);
        assert_eq!(summed.cumulative[2], 3);
        assert_eq!(summed.cumulative[HANDSHAKE_BOUNDS.len() - 1], 3);
        assert_eq!(summed.count(), 4);
        assert!((summed.sum_seconds - 60.043).abs() < 1e-9);
    }
}
