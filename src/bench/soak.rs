//! `fanout bench --soak 10m`: each server under everything at once, cycle
//! after cycle, checked for leaks. A cycle runs a room with a sustained
//! broadcast (every delivery accounted for), closed-loop echo and
//! connection churn together for --soak-cycle, then a reconnect storm;
//! then every client is gone and the server must be back where it started:
//! no connection left open, every fd table at its size before the first
//! cycle, the machine's TCP sockets back to the baseline, and its memory
//! (resident and allocated) no higher after the last cycle than after the
//! first. The server's RSS is sampled every second throughout: the curve.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::phase::{self, Phases, Running, Target};
use super::sampler::MemorySampler;
use super::settle;
use crate::load::config::ScenarioKind;
use crate::load::report::Report;

/// How much the memory after the last cycle may exceed that after the
/// first before it counts as growth: allocator noise, not a leak.
const MEMORY_SLACK: f64 = 0.10;
const MEMORY_SLACK_BYTES: u64 = 8 << 20;
/// Longest wait for the server to see every client of a cycle gone.
const EMPTY_BOUND: Duration = Duration::from_secs(30);

/// The soak's load, scaled from --conns.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SoakLoad {
    /// Room members per cycle (they join at its start and leave at its end).
    pub members: usize,
    /// Broadcasts per second to them during a cycle.
    pub broadcasts_per_s: f64,
    /// Closed-loop echo connections per cycle.
    pub echo_conns: usize,
    /// Connections opened, echoed once and closed per second.
    pub churn_per_s: f64,
    /// Connections in each cycle's storm (reset at once, back at once).
    pub storm_conns: usize,
    /// How long each cycle's room, echo and churn run (--soak-cycle), s.
    pub cycle_s: f64,
}

impl SoakLoad {
    pub fn for_conns(conns: usize, cycle: Duration) -> SoakLoad {
        SoakLoad {
            members: (conns / 2).max(2),
            broadcasts_per_s: 2.0,
            echo_conns: (conns / 20).max(1),
            churn_per_s: (conns as f64 / 100.0).clamp(10.0, 1000.0),
            storm_conns: (conns / 4).max(1),
            cycle_s: cycle.as_secs_f64(),
        }
    }
}

/// The server between cycles, every client gone.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SoakSample {
    /// Seconds since the soak began.
    pub at_s: f64,
    /// Connections the server still had open.
    pub open: u64,
    /// The server's process tree's resident memory.
    pub rss_bytes: u64,
    /// Bytes the server's allocator has handed out (jemalloc).
    pub heap_allocated_bytes: u64,
    /// Fds in the fd table of the main thread and of each shard thread, in
    /// thread order (a shared table appears once per thread).
    pub fd_tables: Vec<u64>,
    /// The machine's TCP sockets in use.
    pub tcp_inuse: u64,
    /// Objects in the kernel's TCP slab cache, when /proc/slabinfo is readable.
    pub tcp_slab_objects: Option<u64>,
    /// Bytes of TCP buffers the kernel has charged (sockstat `mem`).
    #[serde(default)]
    pub tcp_mem_bytes: u64,
    /// Whether the machine's sockets were back to the baseline in time.
    pub sockets_settled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SoakCycle {
    /// 1 for the first cycle.
    pub index: usize,
    /// How long the cycle took, storm and reading included, s.
    pub seconds: f64,
    /// Broadcast: messages published.
    pub published: u64,
    /// Broadcast: deliveries received by the members.
    pub delivered: u64,
    /// Broadcast: deliveries lost (gaps, and members the server closed).
    pub lost: u64,
    /// Broadcast: deliveries received twice.
    pub duplicated: u64,
    /// Echo: messages echoed.
    pub echoed: u64,
    /// Churn: cycles completed (open, echo once, close).
    pub churn_completed: u64,
    /// Churn: cycles whose connection failed.
    pub churn_failed: u64,
    /// The storm: seconds until all were back (none: not within its bound).
    pub storm_all_back_s: Option<f64>,
    /// The storm: reconnect attempts that failed (and were retried).
    pub storm_failed_attempts: u64,
    /// The server's highest RSS sampled during the cycle.
    pub peak_rss_bytes: u64,
    /// The server once every client of the cycle was gone.
    pub after: SoakSample,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Soak {
    /// What each cycle ran.
    pub load: SoakLoad,
    /// Before the first cycle: the server started, no client yet.
    pub before: SoakSample,
    /// Every cycle, in order.
    pub cycles: Vec<SoakCycle>,
    /// [seconds since the soak began, server RSS in bytes], every second.
    pub rss_curve: Vec<[f64; 2]>,
    /// [seconds since the soak began, bytes of TCP buffers the kernel has
    /// charged, machine-wide (server and clients)], every second.
    #[serde(default)]
    pub kernel_tcp_curve: Vec<[f64; 2]>,
    /// Deliveries lost over every cycle.
    pub lost: u64,
    /// Deliveries duplicated over every cycle.
    pub duplicated: u64,
    /// What did not come back (empty: nothing leaked).
    pub leaks: Vec<String>,
}

pub struct SoakSetup {
    pub duration: Duration,
    pub cycle: Duration,
    pub conns: usize,
}

/// The soak on `server`: one phase, one server, as many cycles as fit.
pub fn run(phases: &mut Phases, server: usize, setup: &SoakSetup) -> anyhow::Result<Soak> {
    phases.run(
        "soak",
        Target::Server(server),
        FloorRoute::Echo,
        1,
        |running| soak(running, setup),
    )
}

fn soak(running: &Running, setup: &SoakSetup) -> anyhow::Result<phase::Outcome<Soak>> {
    let load = SoakLoad::for_conns(setup.conns, setup.cycle);
    let started = Instant::now();
    // The machine's sockets with the server listening and no client yet.
    let baseline = settle::sockets();
    let baseline = &baseline;
    let before = sample(running, started, baseline)?;
    let sampler =
        MemorySampler::start(running.server.pid() as u32, started, Duration::from_secs(1));
    let mut cycles: Vec<SoakCycle> = Vec::new();
    let mut last_report = None;
    // Another cycle only if one as long as the last still fits.
    let fits = |cycles: &[SoakCycle]| {
        let last = cycles
            .last()
            .map_or(setup.cycle, |c| Duration::from_secs_f64(c.seconds));
        started.elapsed() + last <= setup.duration
    };
    while cycles.is_empty() || fits(&cycles) {
        let index = cycles.len() + 1;
        eprintln!("fanout bench:   soak cycle {index}");
        let cycle_start = Instant::now();
        let (cycle, report) = one_cycle(running, &load, setup.cycle, index)?;
        let after = sample(running, started, baseline)?;
        cycles.push(SoakCycle {
            seconds: cycle_start.elapsed().as_secs_f64(),
            peak_rss_bytes: sampler.peak_since(cycle_start.duration_since(started)),
            after,
            ..cycle
        });
        last_report = Some(report);
    }
    let (rss_curve, kernel_tcp_curve) = sampler.stop();
    let leaks = leaks(&before, &cycles);
    let soak = Soak {
        load,
        lost: cycles.iter().map(|c| c.lost).sum(),
        duplicated: cycles.iter().map(|c| c.duplicated).sum(),
        before,
        cycles,
        rss_curve,
        kernel_tcp_curve,
        leaks,
    };
    let report = last_report.context("no cycle ran")?;
    Ok(phase::Outcome {
        value: soak,
        report,
    })
}

/// Broadcast, echo and churn together for `cycle`, then a storm.
fn one_cycle(
    running: &Running,
    load: &SoakLoad,
    cycle: Duration,
    index: usize,
) -> anyhow::Result<(SoakCycle, Report)> {
    let mut room = running.load_config(ScenarioKind::Broadcast, "/room");
    room.conns = load.members;
    room.send_rate = Some(load.broadcasts_per_s);
    room.duration = cycle;
    let mut echo = running.load_config(ScenarioKind::Echo, "/echo");
    echo.conns = load.echo_conns;
    echo.duration = cycle;
    let mut churn = running.load_config(ScenarioKind::Churn, "/echo");
    churn.rate = Some(load.churn_per_s);
    churn.duration = cycle;
    let (room, echo, churn) = std::thread::scope(|scope| {
        let room = scope.spawn(|| crate::load::run(&room));
        let echo = scope.spawn(|| crate::load::run(&echo));
        let churn = scope.spawn(|| crate::load::run(&churn));
        (room.join(), echo.join(), churn.join())
    });
    let joined = |r: std::thread::Result<anyhow::Result<Report>>, what: &str| {
        r.map_err(|_| anyhow::anyhow!("the {what} load panicked"))?
            .with_context(|| format!("cycle {index}: the {what} load"))
    };
    let (room, echo, churn) = (
        joined(room, "room")?,
        joined(echo, "echo")?,
        joined(churn, "churn")?,
    );
    let mut storm = running.load_config(ScenarioKind::Storm, "/echo");
    storm.conns = load.storm_conns;
    storm.duration = Duration::from_secs(60);
    let storm = crate::load::run(&storm).with_context(|| format!("cycle {index}: the storm"))?;
    let broadcast = room.broadcast.clone().context("no broadcast section")?;
    let churned = churn.churn.clone().context("no churn section")?;
    let stormed = storm.storm.clone().context("no storm section")?;
    let cycle = SoakCycle {
        index,
        seconds: 0.0,
        published: broadcast.messages_sent,
        delivered: broadcast.tally.delivered,
        lost: broadcast.tally.lost(),
        duplicated: broadcast.tally.duplicated,
        echoed: echo.echo.as_ref().map_or(0, |e| e.messages),
        churn_completed: churned.completed,
        churn_failed: churned.failed,
        storm_all_back_s: stormed.all_back_seconds,
        storm_failed_attempts: stormed.failed_attempts,
        peak_rss_bytes: 0,
        after: SoakSample::default(),
    };
    Ok((cycle, room))
}

/// The server with every client gone: wait until it has closed them all
/// and the machine's sockets are back, then read it.
fn sample(
    running: &Running,
    started: Instant,
    baseline: &settle::Sockets,
) -> anyhow::Result<SoakSample> {
    let deadline = Instant::now() + EMPTY_BOUND;
    let mut stats = running.server.stats()?;
    while stats.open > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stats = running.server.stats()?;
    }
    let settled = settle::wait_back_to(baseline, EMPTY_BOUND);
    // The allocator returns freed pages within its decay time (1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let stats = running.server.stats()?;
    Ok(SoakSample {
        at_s: started.elapsed().as_secs_f64(),
        open: stats.open,
        rss_bytes: running.server.tree_rss_bytes(),
        heap_allocated_bytes: stats.heap_allocated_bytes,
        fd_tables: shard_fd_tables(running.server.pid() as u32),
        tcp_inuse: settled.sockets.tcp_inuse,
        tcp_slab_objects: settled.sockets.tcp_slab_objects,
        tcp_mem_bytes: settled.sockets.tcp_mem_pages * settle::PAGE,
        sockets_settled: settled.settled,
    })
}

/// Fds in the table of the main thread and of each `shard-N` thread (the
/// threads a fanout server keeps for its whole life), in thread order.
fn shard_fd_tables(pid: u32) -> Vec<u64> {
    let mut tasks: Vec<u32> = crate::process::tasks(pid)
        .filter(|&task| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{task}/comm"))
                .unwrap_or_default();
            task == pid || comm.starts_with("shard-")
        })
        .collect();
    tasks.sort_unstable();
    tasks
        .into_iter()
        .map(|task| crate::process::task_fds(pid, task))
        .collect()
}

/// What did not come back, comparing the server after each cycle with the
/// server before the first, and its memory after the last cycle with that
/// after the first.
fn leaks(before: &SoakSample, cycles: &[SoakCycle]) -> Vec<String> {
    let mut leaks = Vec::new();
    for cycle in cycles {
        let after = &cycle.after;
        let i = cycle.index;
        if after.open > 0 {
            leaks.push(format!("cycle {i}: {} connections still open", after.open));
        }
        if after.fd_tables != before.fd_tables {
            leaks.push(format!(
                "cycle {i}: fd tables {:?}, {:?} before the first cycle",
                after.fd_tables, before.fd_tables
            ));
        }
        if !after.sockets_settled {
            leaks.push(format!(
                "cycle {i}: the machine's TCP sockets did not come back to the baseline ({} in use)",
                after.tcp_inuse
            ));
        }
    }
    if let (Some(first), Some(last)) = (cycles.first(), cycles.last()) {
        for (what, first, last) in [
            ("RSS", first.after.rss_bytes, last.after.rss_bytes),
            (
                "allocated heap",
                first.after.heap_allocated_bytes,
                last.after.heap_allocated_bytes,
            ),
        ] {
            let allowed = (first as f64 * (1.0 + MEMORY_SLACK)) as u64 + MEMORY_SLACK_BYTES;
            if last > allowed {
                leaks.push(format!(
                    "{what} grew from {first} B after cycle 1 to {last} B after cycle {}",
                    cycles.len()
                ));
            }
        }
    }
    leaks
}

/// The soak's lines in the bench's text.
pub fn text(soak: &Soak) -> String {
    use crate::units::grouped;
    let mb = |bytes: u64| grouped(bytes as f64 / 1e6, 1);
    let load = &soak.load;
    let mut out = format!(
        "soak      {} cycles of {:.0} s: {} members at {}/s broadcasts, {} echo, churn {}/s, then a storm of {}\n",
        soak.cycles.len(),
        load.cycle_s,
        grouped(load.members as f64, 0),
        load.broadcasts_per_s,
        grouped(load.echo_conns as f64, 0),
        load.churn_per_s,
        grouped(load.storm_conns as f64, 0)
    );
    let peak_tcp = soak
        .kernel_tcp_curve
        .iter()
        .map(|&[_, b]| b as u64)
        .max()
        .unwrap_or(0);
    out += &format!(
        "          before: RSS {} MB, heap {} MB, fds {:?}; the kernel's TCP buffers peaked at {} MB (machine-wide)\n",
        mb(soak.before.rss_bytes),
        mb(soak.before.heap_allocated_bytes),
        soak.before.fd_tables,
        mb(peak_tcp)
    );
    for c in &soak.cycles {
        out += &format!(
            "          cycle {}: {} deliveries, {} lost, {} duplicated; {} echoes; {} churned; storm back in {}; peak RSS {} MB → after: open {}, RSS {} MB, heap {} MB, fds {:?}, TCP sockets {} ({} MB of buffers)\n",
            c.index,
            grouped(c.delivered as f64, 0),
            c.lost,
            c.duplicated,
            grouped(c.echoed as f64, 0),
            grouped(c.churn_completed as f64, 0),
            c.storm_all_back_s.map_or("never".into(), |s| format!("{s:.2} s")),
            mb(c.peak_rss_bytes),
            c.after.open,
            mb(c.after.rss_bytes),
            mb(c.after.heap_allocated_bytes),
            c.after.fd_tables,
            c.after.tcp_inuse,
            mb(c.after.tcp_mem_bytes)
        );
    }
    match soak.leaks.is_empty() {
        true => {
            out += &format!(
                "          nothing leaked; {} deliveries lost, {} duplicated\n",
                soak.lost, soak.duplicated
            )
        }
        false => {
            for leak in &soak.leaks {
                out += &format!("          LEAK: {leak}\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(index: usize, rss: u64, fds: Vec<u64>) -> SoakCycle {
        SoakCycle {
            index,
            seconds: 1.0,
            published: 0,
            delivered: 0,
            lost: 0,
            duplicated: 0,
            echoed: 0,
            churn_completed: 0,
            churn_failed: 0,
            storm_all_back_s: Some(0.1),
            storm_failed_attempts: 0,
            peak_rss_bytes: rss,
            after: SoakSample {
                rss_bytes: rss,
                heap_allocated_bytes: 1 << 20,
                fd_tables: fds,
                sockets_settled: true,
                ..SoakSample::default()
            },
        }
    }

    #[test]
    fn fds_that_stay_open_and_memory_that_keeps_growing_are_leaks_noise_is_not() {
        let before = SoakSample {
            fd_tables: vec![10, 12, 12],
            ..SoakSample::default()
        };
        let mb = 1 << 20;
        let steady = [
            cycle(1, 100 * mb, vec![10, 12, 12]),
            cycle(2, 105 * mb, vec![10, 12, 12]),
        ];
        assert!(
            leaks(&before, &steady).is_empty(),
            "{:?}",
            leaks(&before, &steady)
        );
        let growing = [
            cycle(1, 100 * mb, vec![10, 12, 12]),
            cycle(2, 130 * mb, vec![10, 12, 12]),
        ];
        let found = leaks(&before, &growing);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("RSS grew"), "{found:?}");
        let fds = [cycle(1, 100 * mb, vec![10, 13, 12])];
        assert!(leaks(&before, &fds)[0].contains("fd tables [10, 13, 12]"));
    }
}
