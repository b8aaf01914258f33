//! The room job: N idle members opened (ramp), memory read at N/2 and N,
//! then broadcasts one at a time, each once every member has the one
//! before. Sampled on the floor and on the server, interleaved; gives the
//! ramp and broadcast comparisons, the memory slopes and the delivery
//! accounting.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::compare::{compare, Better, Compared};
use super::kernel;
use super::memory::{self, Memory, Point, Slope};
use super::phase::{check_floor_complete, Outcome, Phases, Running, Side};
use crate::load::accounting::Tally;
use crate::load::config::ScenarioKind;
use crate::load::memory::ClientMemory;
use crate::load::report::Report;
use crate::load::spread::Spread;
use crate::load::{self, Checkpoint};

/// How long the connections stay idle before the memory is read: what a
/// server keeps only while bytes flow is given back by then (jemalloc's
/// decay and io_uring's receive buffers, each after 1 s), so the reading
/// is what idle connections cost, not the ramp's traffic just before.
const IDLE_BEFORE_READING: Duration = Duration::from_millis(1500);

/// The pause between one broadcast reaching everyone and the next.
const BROADCAST_GAP: Duration = Duration::from_millis(100);

/// One room phase's figures.
#[derive(Clone, Debug, Default)]
pub struct RoomSample {
    pub ramp_per_s: f64,
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
    /// Per broadcast, ms.
    pub first_ms: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub last_ms: Vec<f64>,
    /// Per broadcast: deliveries ÷ its last delivery's latency.
    pub deliveries_per_s: Vec<f64>,
    pub members: u64,
    pub size: usize,
    pub tally: Tally,
    pub members_closed: u64,
    pub timed_out: u64,
    pub slope: Option<Slope>,
    /// fanout's own count of room frames handed to members.
    pub server_delivered: Option<u64>,
    /// The server's CPU seconds (its process tree, /proc/PID/stat) from
    /// the first broadcast to the last delivery.
    pub broadcast_cpu_seconds: Option<f64>,
    /// Connections that failed to open, by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// The load generator's own memory slope, and its CPU seconds per
    /// million deliveries received.
    pub client_memory: Option<ClientMemory>,
    pub client_cpu_per_million: Option<f64>,
    /// Bytes the server wrote during the broadcasts ÷ deliveries (fanout).
    pub wire_bytes_per_delivery: Option<f64>,
}

/// How far a server got towards N: a server that cannot hold N here is
/// shown with where and why it stopped, not dropped.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reach {
    /// N, the connections asked for.
    pub asked: usize,
    /// Room members open when the broadcasts began, per sample.
    pub held: Spread,
    /// Connections that failed to open, by cause, summed over the samples.
    pub connect_failures: BTreeMap<String, u64>,
}

impl Reach {
    /// Whether every sample held every connection asked for.
    pub fn complete(&self) -> bool {
        self.held.min >= self.asked as f64
    }
}

/// The broadcast figures over every measured room phase.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BroadcastBench {
    /// Room members open when the broadcasts began (first sample).
    pub members: u64,
    /// Message size, bytes.
    pub size: usize,
    /// Broadcasts per room phase.
    pub per_sample: u64,
    /// Publish to the last member's delivery, ms, per broadcast, against the floor.
    pub last_delivery_ms: Compared,
    /// Publish to the first member's delivery, ms, per broadcast.
    pub first_delivery_ms: Spread,
    /// Publish to the median member's delivery, ms, per broadcast.
    pub median_delivery_ms: Spread,
    /// Publish to the p99 member's delivery, ms, per broadcast.
    pub p99_delivery_ms: Spread,
    /// Per broadcast: members ÷ last delivery.
    pub deliveries_per_s: Spread,
    /// Summed over the measured phases.
    pub tally: Tally,
    /// Members the server closed during the broadcasts, summed.
    pub members_closed: u64,
    /// Broadcasts whose wait for every member gave up.
    pub timed_out: u64,
    /// fanout's own count of frames handed to members, summed (fanout only).
    pub server_delivered: Option<u64>,
    /// Does the server's count agree with what the clients received?
    pub cross_check: Option<String>,
    /// Server CPU seconds (process tree, user + system) per million
    /// deliveries, per sample: what one delivery costs the server.
    pub cpu_seconds_per_million: Option<Spread>,
    /// The load generator's CPU seconds (its shard threads, from the first
    /// broadcast to the end of the work) per million deliveries received.
    #[serde(default)]
    pub client_cpu_seconds_per_million: Option<Spread>,
    /// Bytes the server wrote from the first broadcast to the last
    /// delivery ÷ deliveries, per sample: a delivery's size on the wire
    /// (fanout; `bench --deflate` only).
    #[serde(default)]
    pub wire_bytes_per_delivery: Option<Spread>,
}

/// Ramp, memory and broadcast, from the interleaved room phases.
pub struct RoomResults {
    pub reach: Reach,
    pub ramp: Compared,
    pub connect_p50_ms: Spread,
    pub connect_p99_ms: Spread,
    /// None when no sample opened enough connections between N/2 and N.
    pub memory: Option<Memory>,
    pub broadcast: BroadcastBench,
}

/// Floor, then every server, … `samples` of each; one result per server.
pub fn run(
    phases: &mut Phases,
    conns: usize,
    broadcasts: u64,
    samples: usize,
) -> anyhow::Result<Vec<RoomResults>> {
    let (floor, servers) = phases.interleave("room", FloorRoute::Room, samples, |running| {
        room_phase(running, conns, broadcasts)
    })?;
    Ok(servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let slot_bytes = phases.servers[i].slot_bytes();
            let flagged = phases.trouble_in("room", i);
            summarise(conns, &floor, server, broadcasts, slot_bytes, flagged)
        })
        .collect())
}

fn room_phase(
    running: &Running,
    conns: usize,
    broadcasts: u64,
) -> anyhow::Result<Outcome<RoomSample>> {
    let mut config = running.load_config(ScenarioKind::Broadcast, "/room");
    config.conns = conns;
    config.count = broadcasts;
    config.interval = BROADCAST_GAP;
    let measured = running.side == Side::Server;
    let mut points: Vec<anyhow::Result<Point>> = Vec::new();
    let mut cpu: Vec<f64> = Vec::new();
    let report = load::run_with(&config, true, &mut |checkpoint| {
        if !measured {
            return;
        }
        match checkpoint {
            Checkpoint::Half { open } => points.push(read_point(running, open)),
            Checkpoint::Full { open } => {
                points.push(read_point(running, open));
                cpu.push(running.server.tree_cpu_seconds());
            }
            Checkpoint::WorkDone => {
                cpu.push(running.server.tree_cpu_seconds());
                if running.deflate_loads {
                    points.push(read_point(running, 0));
                }
            }
        }
    })?;
    let broadcast_cpu_seconds = match cpu.as_slice() {
        [start, end] => Some(end - start),
        _ => None,
    };
    if running.side == Side::Floor {
        check_floor_complete(&report, conns)?;
    }
    let points = points.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    // A server that stopped short before N/2 opened (almost) nothing
    // between the points: there is no slope to take.
    let slope = match points.as_slice() {
        [half, full, ..] if memory::enough_for_a_slope(half, full, conns) => {
            let mut slope = memory::slope(half, full);
            if let Some(after) = points.get(2) {
                slope.heap_after_broadcast_per_conn = after_broadcast(&slope, full, after);
            }
            Some(slope)
        }
        _ => None,
    };
    let server_delivered = if running.fanout && measured {
        Some(running.server.stats()?.totals.delivered)
    } else {
        None
    };
    let mut value = sample_of(&report, slope, server_delivered)?;
    value.broadcast_cpu_seconds = broadcast_cpu_seconds;
    if let [_, full, after] = points.as_slice() {
        let sent = after
            .bytes_sent
            .zip(full.bytes_sent)
            .map(|(a, b)| a.saturating_sub(b));
        value.wire_bytes_per_delivery = sent
            .filter(|_| value.tally.delivered > 0)
            .map(|bytes| bytes as f64 / value.tally.delivered as f64);
    }
    Ok(Outcome { value, report })
}

/// The allocator slope plus what each connection open at N kept once the
/// broadcasts were over (`after`, read idle again).
fn after_broadcast(slope: &Slope, full: &Point, after: &Point) -> Option<f64> {
    let kept = after.heap? as f64 - full.heap? as f64;
    Some(slope.heap_per_conn? + kept / full.open.max(1) as f64)
}

/// The server's memory and the kernel's slab, with every connection idle,
/// read once they have been idle for [`IDLE_BEFORE_READING`].
fn read_point(running: &Running, open: u64) -> anyhow::Result<Point> {
    std::thread::sleep(IDLE_BEFORE_READING);
    let stats = if running.fanout {
        Some(running.server.stats()?)
    } else {
        None
    };
    let point = Point {
        open,
        rss: running.server.tree_rss_bytes(),
        heap: stats.as_ref().map(|s| s.heap_allocated_bytes),
        slots: stats.as_ref().map(|s| s.totals.conn_slots),
        slab: kernel::sample(),
        bytes_sent: stats.as_ref().map(|s| s.totals.bytes_sent),
    };
    // (The reading after a deflate bench's broadcasts has no N of its own.)
    if let Some(live) = running.live.as_ref().filter(|_| open > 0) {
        live.publish(&serde_json::json!({
            "kind": "memory",
            "open": point.open,
            "rss": point.rss,
            "heap": point.heap,
            "slab": point.slab.total_bytes,
        }));
    }
    Ok(point)
}

fn sample_of(
    report: &Report,
    slope: Option<Slope>,
    server_delivered: Option<u64>,
) -> anyhow::Result<RoomSample> {
    let b = report
        .broadcast
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the load report has no broadcast section"))?;
    let ms = |us: f64| us / 1e3;
    Ok(RoomSample {
        ramp_per_s: report.connect.rate_per_s,
        connect_p50_us: report.connect.latency.p50_us,
        connect_p99_us: report.connect.latency.p99_us,
        first_ms: b.per_message.iter().map(|m| ms(m.first_us)).collect(),
        p50_ms: b.per_message.iter().map(|m| ms(m.p50_us)).collect(),
        p99_ms: b.per_message.iter().map(|m| ms(m.p99_us)).collect(),
        last_ms: b.per_message.iter().map(|m| ms(m.last_us)).collect(),
        deliveries_per_s: b.per_message.iter().map(|m| m.deliveries_per_s).collect(),
        members: b.members,
        size: b.size,
        tally: b.tally,
        members_closed: b.members_closed,
        timed_out: b.timed_out,
        slope,
        server_delivered,
        broadcast_cpu_seconds: None,
        connect_failures: report.connect.failures.clone(),
        client_memory: report.client.memory.clone(),
        client_cpu_per_million: report.client.cpu_seconds_per_million_received,
        wire_bytes_per_delivery: None,
    })
}

fn summarise(
    conns: usize,
    floor: &[RoomSample],
    server: &[RoomSample],
    broadcasts: u64,
    slot_bytes: Option<usize>,
    flagged: Vec<String>,
) -> RoomResults {
    let each = |samples: &[RoomSample], f: &dyn Fn(&RoomSample) -> Vec<f64>| -> Vec<f64> {
        samples.iter().flat_map(f).collect()
    };
    let mut ramp = compare(
        "ramp, connections/s",
        Better::Higher,
        &each(server, &|s| vec![s.ramp_per_s]),
        &each(floor, &|s| vec![s.ramp_per_s]),
    );
    ramp.flagged_samples = flagged;
    let mut last = compare(
        "broadcast last delivery, ms",
        Better::Lower,
        &each(server, &|s| s.last_ms.clone()),
        &each(floor, &|s| s.last_ms.clone()),
    );
    last.flagged_samples = ramp.flagged_samples.clone();
    let mut tally = Tally::default();
    server.iter().for_each(|s| tally.add(&s.tally));
    let server_delivered = server
        .iter()
        .map(|s| s.server_delivered)
        .sum::<Option<u64>>();
    let cpu_per_million: Vec<f64> = server
        .iter()
        .filter(|s| s.tally.delivered > 0)
        .filter_map(|s| {
            s.broadcast_cpu_seconds
                .map(|cpu| cpu / s.tally.delivered as f64 * 1e6)
        })
        .collect();
    let client_cpu: Vec<f64> = server
        .iter()
        .filter_map(|s| s.client_cpu_per_million)
        .collect();
    let wire: Vec<f64> = server
        .iter()
        .filter_map(|s| s.wire_bytes_per_delivery)
        .collect();
    let broadcast = BroadcastBench {
        wire_bytes_per_delivery: (!wire.is_empty()).then(|| Spread::of(&wire)),
        cpu_seconds_per_million: (!cpu_per_million.is_empty())
            .then(|| Spread::of(&cpu_per_million)),
        client_cpu_seconds_per_million: (!client_cpu.is_empty()).then(|| Spread::of(&client_cpu)),
        members: server.first().map_or(0, |s| s.members),
        size: server.first().map_or(0, |s| s.size),
        per_sample: broadcasts,
        first_delivery_ms: Spread::of(&each(server, &|s| s.first_ms.clone())),
        median_delivery_ms: Spread::of(&each(server, &|s| s.p50_ms.clone())),
        p99_delivery_ms: Spread::of(&each(server, &|s| s.p99_ms.clone())),
        deliveries_per_s: Spread::of(&each(server, &|s| s.deliveries_per_s.clone())),
        last_delivery_ms: last,
        tally,
        members_closed: server.iter().map(|s| s.members_closed).sum(),
        timed_out: server.iter().map(|s| s.timed_out).sum(),
        cross_check: server_delivered.map(|count| cross_check(count, &tally)),
        server_delivered,
    };
    let mut connect_failures: BTreeMap<String, u64> = BTreeMap::new();
    for sample in server {
        for (cause, count) in &sample.connect_failures {
            *connect_failures.entry(cause.clone()).or_default() += count;
        }
    }
    RoomResults {
        reach: Reach {
            asked: conns,
            held: Spread::of(&each(server, &|s| vec![s.members as f64])),
            connect_failures,
        },
        ramp,
        connect_p50_ms: Spread::of(&each(server, &|s| vec![s.connect_p50_us / 1e3])),
        connect_p99_ms: Spread::of(&each(server, &|s| vec![s.connect_p99_us / 1e3])),
        memory: {
            let slopes: Vec<Slope> = server.iter().filter_map(|s| s.slope.clone()).collect();
            let clients: Vec<ClientMemory> = server
                .iter()
                .filter_map(|s| s.client_memory.clone())
                .collect();
            (!slopes.is_empty()).then(|| {
                let mut memory = memory::summarise(slopes, slot_bytes);
                memory.client = memory::client_summary(&clients);
                memory
            })
        },
        broadcast,
    }
}

/// The server's own delivery count against the clients': frames it handed
/// to members either arrived, are still in flight, or went with a member
/// the server closed.
pub fn cross_check(server_delivered: u64, tally: &Tally) -> String {
    let received = tally.delivered;
    if server_delivered == received {
        format!("ok: the server handed {server_delivered} frames to members and the clients received {received}")
    } else if server_delivered > received {
        format!(
            "the server handed {server_delivered} frames to members, the clients received {received}: {} not received ({} in flight at the end, {} with members the server closed)",
            server_delivered - received,
            tally.in_flight,
            tally.closed
        )
    } else {
        format!("MISMATCH: the clients received {received} deliveries but the server handed only {server_delivered} frames to members")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cross_check_explains_every_difference() {
        let tally = Tally {
            delivered: 90,
            in_flight: 6,
            closed: 4,
            ..Tally::default()
        };
        assert!(cross_check(90, &tally).starts_with("ok"));
        let short = cross_check(100, &tally);
        assert!(
            short.contains("10 not received") && short.contains("6 in flight"),
            "{short}"
        );
        assert!(cross_check(80, &tally).starts_with("MISMATCH"));
    }
}
