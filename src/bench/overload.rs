//! `fanout bench --measure overload`: a broadcast the server cannot keep
//! up with. --conns members in /room, the publisher sends
//! --overload-rate messages of --overload-size a second for
//! --overload-duration; the server's RSS is sampled every 50 ms. The
//! figure: its peak above the server holding its idle members, per member
//! — the memory a member costs while frames queue for it — then what the
//! server closed to protect itself (1008 past --max-backlog, 1013 past
//! --max-backlog-total, e.g. `--serve-arg=--max-backlog-total=64MiB`) and
//! its RSS two seconds after the members left (memory comes back).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::phase::{self, Phases, Target};
use super::sampler::MemorySampler;
use crate::load::config::ScenarioKind;
use crate::load::spread::Spread;
use crate::load::Checkpoint;

/// How often the server's memory is sampled during the overload.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long after the members leave the server's memory is read again.
const COME_BACK: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OverloadBench {
    /// Room members held (--conns).
    pub members: usize,
    /// Messages the publisher sent per second (--overload-rate).
    pub rate_per_s: f64,
    /// Bytes per message (--overload-size).
    pub size: usize,
    /// How long the publisher sent (--overload-duration).
    pub seconds: f64,
    /// Peak RSS above the server holding its idle members, ÷ members, bytes.
    pub peak_bytes_per_member: Spread,
    /// The server's RSS, MB, idle before the members joined.
    pub idle_rss_mb: Spread,
    /// The server's RSS, MB, holding its members idle.
    pub with_members_rss_mb: Spread,
    /// The server's highest RSS sampled while the publisher sent and the
    /// members caught up, MB.
    pub peak_rss_mb: Spread,
    /// The server's RSS two seconds after the members left, MB.
    pub after_rss_mb: Spread,
    /// The most TCP buffer memory the kernel held (machine-wide, the
    /// members' sockets too) while the publisher sent and they caught up,
    /// MB: where a backlog goes that a server writes instead of queuing.
    #[serde(default)]
    pub peak_kernel_tcp_mb: Spread,
    /// Members closed with 1008 (past --max-backlog).
    pub backlog_closes: Spread,
    /// Members closed with 1013 (shed for --max-backlog-total).
    pub overload_closes: Spread,
    /// Deliveries per second the members received.
    pub deliveries_per_s: Spread,
    /// Every run, each on a fresh server.
    pub runs: Vec<OverloadRun>,
}

/// One overload run's readings.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OverloadRun {
    /// The server's RSS before the members joined.
    pub idle_rss_bytes: u64,
    /// The server's RSS holding its members idle.
    pub with_members_rss_bytes: u64,
    /// The highest RSS sampled (every 50 ms) during the overload.
    pub peak_rss_bytes: u64,
    /// The server's RSS two seconds after the members left.
    pub after_rss_bytes: u64,
    /// The most TCP buffer memory the kernel held, machine-wide (sockstat
    /// `mem`), sampled with the RSS.
    #[serde(default)]
    pub peak_kernel_tcp_bytes: u64,
    /// Members open when the publisher began.
    pub members: u64,
    /// Members closed with 1008 (past --max-backlog).
    pub backlog_closes: u64,
    /// Members closed with 1013 (shed for --max-backlog-total).
    pub overload_closes: u64,
    /// Deliveries per second the members received.
    pub deliveries_per_s: f64,
}

pub struct OverloadSetup {
    pub members: usize,
    pub rate: f64,
    pub size: usize,
    pub duration: Duration,
    pub samples: usize,
}

/// --samples runs on `server`, each on a fresh server.
pub fn run(
    phases: &mut Phases,
    server: usize,
    setup: &OverloadSetup,
) -> anyhow::Result<OverloadBench> {
    let mut runs = Vec::new();
    for sample in 1..=setup.samples {
        let run = phases.run(
            "overload",
            Target::Server(server),
            FloorRoute::Room,
            sample,
            |running| one_run(running, setup),
        )?;
        runs.push(run);
    }
    let spread =
        |get: &dyn Fn(&OverloadRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
    let mb = |bytes: u64| bytes as f64 / 1e6;
    Ok(OverloadBench {
        members: setup.members,
        rate_per_s: setup.rate,
        size: setup.size,
        seconds: setup.duration.as_secs_f64(),
        peak_bytes_per_member: spread(&|r| {
            r.peak_rss_bytes.saturating_sub(r.with_members_rss_bytes) as f64
                / r.members.max(1) as f64
        }),
        idle_rss_mb: spread(&|r| mb(r.idle_rss_bytes)),
        with_members_rss_mb: spread(&|r| mb(r.with_members_rss_bytes)),
        peak_rss_mb: spread(&|r| mb(r.peak_rss_bytes)),
        after_rss_mb: spread(&|r| mb(r.after_rss_bytes)),
        peak_kernel_tcp_mb: spread(&|r| mb(r.peak_kernel_tcp_bytes)),
        backlog_closes: spread(&|r| r.backlog_closes as f64),
        overload_closes: spread(&|r| r.overload_closes as f64),
        deliveries_per_s: spread(&|r| r.deliveries_per_s),
        runs,
    })
}

fn one_run(
    running: &phase::Running,
    setup: &OverloadSetup,
) -> anyhow::Result<phase::Outcome<OverloadRun>> {
    let pid = running.server.pid() as u32;
    let idle_rss_bytes = running.server.tree_rss_bytes();
    let mut load = running.load_config(ScenarioKind::Broadcast, "/room");
    load.conns = setup.members;
    load.send_rate = Some(setup.rate);
    load.size = setup.size;
    load.duration = setup.duration;
    load.drain = Duration::from_secs(30);
    let mut with_members = None;
    let mut sampler = None;
    let started = Instant::now();
    let report = crate::load::run_with(&load, false, &mut |point| {
        if let Checkpoint::Full { .. } = point {
            with_members = Some(running.server.tree_rss_bytes());
            sampler = Some(MemorySampler::start(pid, started, SAMPLE_EVERY));
        }
    })?;
    let with_members_rss_bytes = with_members.context("the ramp never finished")?;
    let sampler = sampler.context("the ramp never finished")?;
    let peak_rss_bytes = sampler.peak_since(Duration::ZERO);
    let peak_kernel_tcp_bytes = sampler.peak_kernel_tcp();
    drop(sampler.stop());
    std::thread::sleep(COME_BACK);
    let after_rss_bytes = running.server.tree_rss_bytes();
    let stats = running.server.stats()?;
    let broadcast = report.broadcast.clone().context("no broadcast section")?;
    let value = OverloadRun {
        idle_rss_bytes,
        with_members_rss_bytes,
        peak_rss_bytes: peak_rss_bytes.max(with_members_rss_bytes),
        after_rss_bytes,
        peak_kernel_tcp_bytes,
        members: broadcast.members,
        backlog_closes: stats.totals.backlog_closes,
        overload_closes: stats.totals.overload_closes,
        deliveries_per_s: broadcast.deliveries_per_s,
    };
    Ok(phase::Outcome { value, report })
}

/// The overload's lines in the bench's text.
pub fn text(o: &OverloadBench) -> String {
    format!(
        "overload  {} members, {}/s × {} B for {:.0} s: peak {} B per member above the server holding them idle; RSS idle {} MB, with members {} MB, peak {} MB, 2 s after they left {} MB; the kernel's TCP buffers at most {} MB (machine-wide); closed 1008: {}, 1013: {}; {} deliveries/s\n",
        o.members,
        o.rate_per_s,
        o.size,
        o.seconds,
        o.peak_bytes_per_member.text(0),
        o.idle_rss_mb.text(1),
        o.with_members_rss_mb.text(1),
        o.peak_rss_mb.text(1),
        o.after_rss_mb.text(1),
        o.peak_kernel_tcp_mb.text(1),
        o.backlog_closes.text(0),
        o.overload_closes.text(0),
        o.deliveries_per_s.text(0)
    )
}
