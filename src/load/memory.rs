//! What the load generator itself costs per connection. On one machine it
//! holds the other half of every connection, so its memory decides how many
//! fit as much as the server's does. Measured as the server's is: a slope
//! between two warm points of the ramp (N/2 and N, the ramp paused at
//! each, every client shard's allocator cache flushed first), as jemalloc's
//! allocated bytes and as the process's RSS, read once jemalloc has given
//! back its free pages (the process ran other phases before: without the
//! purge their freed memory decays out between the points and the RSS
//! slope comes out anywhere from -10 to +20 B).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::control::Control;

/// How long the orchestrator waits for the shards to flush their caches
/// (they look every turn, at least every 5 ms).
const FLUSH_PATIENCE: Duration = Duration::from_secs(2);

/// The client's memory at one checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub open: u64,
    pub rss: u64,
    pub heap: u64,
}

/// Read the client's memory now, with `open` connections open.
pub fn read_point(control: &Control, open: u64) -> Point {
    control.cache_flush.flush_all(FLUSH_PATIENCE, || {});
    // This thread's too (with --ui it publishes the samples).
    crate::allocator::flush_this_threads_cache();
    crate::allocator::purge_all_arenas();
    let (heap, _) = crate::allocator::heap_bytes();
    Point {
        open,
        rss: crate::sys::resident_bytes().unwrap_or(0),
        heap,
    }
}

/// The load generator's user space per connection, slope from N/2 to N.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientMemory {
    /// Connections opened between the points.
    pub conns: u64,
    /// Connections open at the second point (N).
    pub open: u64,
    /// RSS growth (the whole load process) ÷ connections opened, bytes.
    pub rss_per_conn: f64,
    /// jemalloc allocated-bytes growth ÷ connections opened, bytes.
    pub heap_per_conn: f64,
    /// The process's RSS and jemalloc's allocated bytes at N.
    pub rss_at_n: u64,
    pub heap_at_n: u64,
    /// Bytes one idle connection's state takes in the client's slab.
    pub slot_bytes: usize,
}

/// Whether a ramp opened enough connections between its two points for a
/// slope: at least a quarter of the `asked` (half is what a full ramp
/// opens). One that stopped short before N/2 opened almost none, and a
/// slope over them would be noise divided by nearly nothing. The same rule
/// for the client's slope and the server's (`bench::memory`).
pub fn enough_opened_between(opened_between: u64, asked: usize) -> bool {
    opened_between * 4 >= asked as u64
}

/// The slope between `half` and `full`, when enough connections opened
/// between them.
pub fn slope(half: &Point, full: &Point, asked: usize) -> Option<ClientMemory> {
    let conns = full.open.saturating_sub(half.open);
    if conns == 0 || !enough_opened_between(conns, asked) {
        return None;
    }
    let per_conn = |a: u64, b: u64| (b as f64 - a as f64) / conns as f64;
    Some(ClientMemory {
        conns,
        open: full.open,
        rss_per_conn: per_conn(half.rss, full.rss),
        heap_per_conn: per_conn(half.heap, full.heap),
        rss_at_n: full.rss,
        heap_at_n: full.heap,
        slot_bytes: super::client::SLOT_BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_growth_over_connections_opened_between_the_points() {
        let half = Point {
            open: 500,
            rss: 10_000_000,
            heap: 2_000_000,
        };
        let full = Point {
            open: 1000,
            rss: 10_040_000,
            heap: 2_020_000,
        };
        let m = slope(&half, &full, 1000).unwrap();
        assert_eq!((m.conns, m.open), (500, 1000));
        assert_eq!(m.rss_per_conn, 80.0);
        assert_eq!(m.heap_per_conn, 40.0);
        assert_eq!((m.rss_at_n, m.heap_at_n), (10_040_000, 2_020_000));
        let stalled = Point { open: 510, ..full };
        assert!(slope(&half, &stalled, 1000).is_none(), "too few between");
    }
}
