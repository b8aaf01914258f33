//! Memory per connection as a slope between two warm points of one ramp:
//! half of the connections open, then all of them, with the ramp paused at
//! each while the server's allocator caches are flushed and everything is
//! read. A cold start ((at N − at 0) ÷ N) would charge the connections with
//! the allocator's and the event loops' start-up; the slope does not.
//!
//! User space: the server's RSS (its whole process tree) and, for fanout,
//! jemalloc's allocated bytes and its slab slots — the slab grows by chunks
//! of `chunked_slab::CHUNK_SLOTS`, so the slots at N are the connections
//! rounded up to a chunk per shard, and the report shows them. Kernel: the slab's growth per socket opened in
//! between (client and server ends share this kernel), by cache, with the
//! TCP cache's object count checked against two sockets per connection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kernel::{self, Slab};
use crate::load::memory::ClientMemory;
use crate::load::spread::Spread;

/// Tolerated distance of the TCP slab's growth from 2 objects per
/// connection (SLUB counts objects in per-CPU slabs as in use).
const TCP_OBJECTS_TOLERANCE: f64 = 0.05;

/// What the bench reads at one checkpoint of a ramp.
#[derive(Clone, Debug, Default)]
pub struct Point {
    /// Connections open (as the client counts them).
    pub open: u64,
    /// Resident memory of the server's process tree.
    pub rss: u64,
    /// jemalloc's allocated bytes, after every shard flushed its cache (fanout).
    pub heap: Option<u64>,
    /// Slots in the server's connection slabs (fanout).
    pub slots: Option<u64>,
    pub slab: Slab,
    /// Bytes the server had written to its sockets (fanout).
    pub bytes_sent: Option<u64>,
}

/// One phase's slopes between its two points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Slope {
    /// Connections opened between the points.
    pub conns: u64,
    /// Connections open at the second point (N).
    pub open: u64,
    /// Server RSS growth ÷ connections opened, bytes.
    pub rss_per_conn: f64,
    /// With `bench --deflate`: the allocator slope plus what the server
    /// kept per connection once the broadcasts were over and every
    /// connection idle again (what a per-connection compressor costs),
    /// bytes (fanout).
    #[serde(default)]
    pub heap_after_broadcast_per_conn: Option<f64>,
    /// Server RSS (its process tree) at N, bytes: with N, the points a
    /// sweep fits its fixed cost and per-connection growth to.
    #[serde(default)]
    pub rss_at_n: Option<u64>,
    /// jemalloc allocated bytes at N (fanout), for the same fit without
    /// the page granularity of RSS.
    #[serde(default)]
    pub heap_at_n: Option<u64>,
    /// jemalloc allocated-bytes growth ÷ connections opened (fanout).
    pub heap_per_conn: Option<f64>,
    /// Slab slots at the two points (fanout).
    pub slots: Option<(u64, u64)>,
    /// /proc/meminfo Slab growth ÷ sockets opened (2 per connection).
    pub kernel_per_socket: f64,
    /// Growth of each socket cache ÷ sockets opened.
    pub kernel_caches_per_socket: BTreeMap<String, f64>,
    /// Slab growth no socket cache explains, per socket.
    pub kernel_unattributed_per_socket: f64,
    /// TCP slab objects gained ÷ connections opened: 2 when both ends are
    /// here and nothing else moved.
    pub tcp_objects_per_conn: Option<f64>,
}

/// Whether the ramp opened enough connections between its points for a
/// slope (the load generator's rule for its own, see
/// `load::memory::enough_opened_between`).
pub fn enough_for_a_slope(half: &Point, full: &Point, asked: usize) -> bool {
    crate::load::memory::enough_opened_between(full.open.saturating_sub(half.open), asked)
}

pub fn slope(half: &Point, full: &Point) -> Slope {
    let conns = full.open.saturating_sub(half.open);
    let per = |divisor: u64| move |a: u64, b: u64| (b as f64 - a as f64) / divisor.max(1) as f64;
    let per_conn = per(conns);
    let per_socket = per(2 * conns);
    let caches: BTreeMap<String, f64> = kernel::growth(&half.slab, &full.slab)
        .into_iter()
        .map(|(name, bytes)| (name, bytes as f64 / (2 * conns).max(1) as f64))
        .collect();
    let kernel_per_socket = per_socket(half.slab.total_bytes, full.slab.total_bytes);
    let objects = |slab: &Slab| slab.objects.get("TCP").copied();
    Slope {
        conns,
        open: full.open,
        rss_per_conn: per_conn(half.rss, full.rss),
        rss_at_n: Some(full.rss),
        heap_at_n: full.heap,
        heap_per_conn: half.heap.zip(full.heap).map(|(a, b)| per_conn(a, b)),
        heap_after_broadcast_per_conn: None,
        slots: half.slots.zip(full.slots),
        kernel_per_socket,
        kernel_unattributed_per_socket: kernel_per_socket - caches.values().sum::<f64>(),
        kernel_caches_per_socket: caches,
        tcp_objects_per_conn: objects(&half.slab)
            .zip(objects(&full.slab))
            .map(|(a, b)| per_conn(a, b)),
    }
}

/// Memory over every measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Memory {
    /// Each phase's slopes, in order.
    pub slopes: Vec<Slope>,
    /// Server user space per connection (RSS of its process tree), bytes.
    pub rss_per_conn: Spread,
    /// jemalloc allocated bytes per connection (fanout).
    pub heap_per_conn: Option<Spread>,
    /// The same once a broadcast has gone through (`bench --deflate`).
    #[serde(default)]
    pub heap_after_broadcast_per_conn: Option<Spread>,
    /// The server's whole RSS at N ÷ N, bytes: the slope plus every fixed
    /// cost (event loops, buffers, rings) spread over the connections.
    #[serde(default)]
    pub rss_over_n: Option<Spread>,
    /// Bytes one slab slot takes (fanout).
    pub slot_bytes: Option<usize>,
    /// The slab's steps (fanout).
    pub slots: Option<Slots>,
    /// Kernel slab per socket, bytes.
    pub kernel_per_socket: Spread,
    /// Per cache, the median over phases, bytes per socket.
    pub kernel_caches_per_socket: BTreeMap<String, f64>,
    /// Slab growth no socket cache explains, per socket (median over phases).
    pub kernel_unattributed_per_socket: f64,
    /// TCP slab objects gained per connection: 2 when both ends are here.
    pub tcp_objects_per_conn: Option<Spread>,
    /// Whether the TCP slab grew by two objects per connection, in words.
    pub kernel_check: String,
    /// The load generator's own user space per connection (the other end
    /// of every connection, on this machine).
    #[serde(default)]
    pub client: Option<ClientSummary>,
}

/// The load generator's memory slopes over the phases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientSummary {
    /// jemalloc allocated-bytes growth per connection.
    pub heap_per_conn: Spread,
    /// RSS growth (the bench's process, which is the load generator) per
    /// connection.
    pub rss_per_conn: Spread,
    /// Bytes one idle client connection takes in its slab.
    pub slot_bytes: usize,
}

/// Summarise the load generator's slopes, when there are any.
pub fn client_summary(slopes: &[ClientMemory]) -> Option<ClientSummary> {
    let first = slopes.first()?;
    let of =
        |f: &dyn Fn(&ClientMemory) -> f64| Spread::of(&slopes.iter().map(f).collect::<Vec<_>>());
    Some(ClientSummary {
        heap_per_conn: of(&|m| m.heap_per_conn),
        rss_per_conn: of(&|m| m.rss_per_conn),
        slot_bytes: first.slot_bytes,
    })
}

/// What the connection state costs beyond its bytes: the slabs' capacity
/// (whole chunks) at the two points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Slots {
    /// Slots at N/2 in the first sample.
    pub first_half: u64,
    /// Slots at N in the first sample.
    pub first_full: u64,
    /// Slot bytes added between the points ÷ connections added.
    pub growth_per_conn: Spread,
    /// Slots ÷ connections at N.
    pub per_conn_at_n: Spread,
    /// Slot bytes ÷ connections at N.
    pub bytes_per_conn_at_n: Spread,
}

fn slots(slopes: &[Slope], slot_bytes: usize) -> Option<Slots> {
    let with_slots: Vec<(&Slope, u64, u64)> = slopes
        .iter()
        .filter_map(|s| s.slots.map(|(half, full)| (s, half, full)))
        .collect();
    let &(_, first_half, first_full) = with_slots.first()?;
    let bytes = slot_bytes as f64;
    let of = |f: &dyn Fn(&Slope, f64, f64) -> f64| {
        let values: Vec<f64> = with_slots
            .iter()
            .map(|&(s, half, full)| f(s, half as f64, full as f64))
            .collect();
        Spread::of(&values)
    };
    Some(Slots {
        first_half,
        first_full,
        growth_per_conn: of(&|s, half, full| (full - half) * bytes / s.conns.max(1) as f64),
        per_conn_at_n: of(&|s, _, full| full / s.open.max(1) as f64),
        bytes_per_conn_at_n: of(&|s, _, full| full * bytes / s.open.max(1) as f64),
    })
}

/// Summarise the phases' slopes.
pub fn summarise(slopes: Vec<Slope>, slot_bytes: Option<usize>) -> Memory {
    let spread = |f: &dyn Fn(&Slope) -> Option<f64>| {
        let values: Vec<f64> = slopes.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| Spread::of(&values))
    };
    let mut caches: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for slope in &slopes {
        for (name, bytes) in &slope.kernel_caches_per_socket {
            caches.entry(name.clone()).or_default().push(*bytes);
        }
    }
    let tcp_objects = spread(&|s| s.tcp_objects_per_conn);
    Memory {
        rss_per_conn: spread(&|s| Some(s.rss_per_conn)).unwrap_or_default(),
        heap_per_conn: spread(&|s| s.heap_per_conn),
        heap_after_broadcast_per_conn: spread(&|s| s.heap_after_broadcast_per_conn),
        rss_over_n: spread(&|s| Some(s.rss_at_n? as f64 / s.open.max(1) as f64)),
        slot_bytes,
        kernel_per_socket: spread(&|s| Some(s.kernel_per_socket)).unwrap_or_default(),
        kernel_caches_per_socket: caches
            .into_iter()
            .map(|(name, values)| (name, Spread::of(&values).median))
            .collect(),
        kernel_unattributed_per_socket: spread(&|s| Some(s.kernel_unattributed_per_socket))
            .unwrap_or_default()
            .median,
        kernel_check: kernel_check(tcp_objects.as_ref()),
        slots: slot_bytes.and_then(|bytes| slots(&slopes, bytes)),
        tcp_objects_per_conn: tcp_objects,
        client: None,
        slopes,
    }
}

fn kernel_check(tcp_objects: Option<&Spread>) -> String {
    match tcp_objects {
        None => "not checked: /proc/slabinfo is not readable (run as root to see the kernel's caches)".into(),
        Some(s) if (s.min - 2.0).abs() <= TCP_OBJECTS_TOLERANCE * 2.0
            && (s.max - 2.0).abs() <= TCP_OBJECTS_TOLERANCE * 2.0 =>
        {
            format!(
                "ok: the TCP slab grew by {:.3} objects per connection ({:.3}–{:.3}), two sockets per connection as expected with both ends on this machine",
                s.median, s.min, s.max
            )
        }
        Some(s) => format!(
            "MISMATCH: the TCP slab grew by {:.3} objects per connection ({:.3}–{:.3}), not 2: other sockets opened or closed during the ramp, so the kernel figures include them",
            s.median, s.min, s.max
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(open: u64, rss: u64, heap: u64, slab_total: u64, tcp_objects: u64) -> Point {
        Point {
            open,
            rss,
            heap: Some(heap),
            slots: Some(open.next_power_of_two()),
            slab: Slab {
                total_bytes: slab_total,
                caches: [("TCP".to_string(), tcp_objects * 2368)].into(),
                objects: [("TCP".to_string(), tcp_objects)].into(),
            },
            bytes_sent: None,
        }
    }

    #[test]
    fn slopes_are_per_connection_and_per_socket_between_the_points() {
        // 1000 more connections: 2000 more sockets.
        let half = point(1000, 10_000_000, 5_000_000, 100_000_000, 2_050);
        let full = point(2000, 10_040_000, 5_024_000, 108_400_000, 4_050);
        let s = slope(&half, &full);
        assert_eq!(s.conns, 1000);
        assert_eq!(s.rss_per_conn, 40.0);
        assert_eq!(s.heap_per_conn, Some(24.0));
        assert_eq!(s.kernel_per_socket, 4200.0);
        assert_eq!(s.kernel_caches_per_socket["TCP"], 2368.0);
        assert_eq!(s.kernel_unattributed_per_socket, 4200.0 - 2368.0);
        assert_eq!(s.tcp_objects_per_conn, Some(2.0));
        assert_eq!(s.slots, Some((1024, 2048)));
    }

    #[test]
    fn the_kernel_check_passes_at_two_objects_and_names_a_mismatch() {
        let ok = summarise(
            vec![
                slope(&point(0, 0, 0, 0, 100), &point(1000, 0, 0, 0, 2_100)),
                slope(&point(0, 0, 0, 0, 100), &point(1000, 0, 0, 0, 2_130)),
            ],
            Some(24),
        );
        assert!(ok.kernel_check.starts_with("ok"), "{}", ok.kernel_check);
        let off = summarise(
            vec![slope(&point(0, 0, 0, 0, 100), &point(1000, 0, 0, 0, 3_100))],
            None,
        );
        assert!(
            off.kernel_check.starts_with("MISMATCH"),
            "{}",
            off.kernel_check
        );
    }

    #[test]
    fn summaries_are_medians_over_phases() {
        let m = summarise(
            vec![
                slope(&point(0, 0, 0, 0, 0), &point(100, 3_000, 0, 0, 200)),
                slope(&point(0, 0, 0, 0, 0), &point(100, 5_000, 0, 0, 200)),
                slope(&point(0, 0, 0, 0, 0), &point(100, 4_000, 0, 0, 200)),
            ],
            Some(24),
        );
        assert_eq!(
            (
                m.rss_per_conn.median,
                m.rss_per_conn.min,
                m.rss_per_conn.max
            ),
            (40.0, 30.0, 50.0)
        );
        assert_eq!(m.slopes.len(), 3);
    }

    #[test]
    fn the_slab_step_explains_bytes_per_connection() {
        // 700 → 1400 connections; slots 1024 → 2048 of 24 bytes.
        let half = point(700, 0, 0, 0, 0);
        let full = point(1400, 0, 0, 0, 0);
        let m = summarise(vec![slope(&half, &full)], Some(24));
        let slots = m.slots.unwrap();
        assert_eq!((slots.first_half, slots.first_full), (1024, 2048));
        assert!((slots.growth_per_conn.median - 1024.0 * 24.0 / 700.0).abs() < 1e-9);
        assert!((slots.per_conn_at_n.median - 2048.0 / 1400.0).abs() < 1e-9);
        assert!((slots.bytes_per_conn_at_n.median - 2048.0 * 24.0 / 1400.0).abs() < 1e-9);
        assert!(summarise(vec![slope(&half, &full)], None).slots.is_none());
    }

    #[test]
    fn a_ramp_that_stalled_before_half_gives_no_slope() {
        let at = |open| Point {
            open,
            ..Point::default()
        };
        assert!(enough_for_a_slope(&at(50_000), &at(100_000), 100_000));
        assert!(enough_for_a_slope(&at(10_000), &at(35_000), 100_000));
        assert!(!enough_for_a_slope(&at(19_986), &at(19_986), 100_000));
        assert!(!enough_for_a_slope(&at(19_000), &at(20_000), 100_000));
    }
}
