//! `fanout bench --measure backplane`: what a room across instances costs.
//! The same broadcast — --conns members, one publisher, --broadcasts
//! messages one at a time — first to one instance alone, then spread
//! round-robin over --backplane-instances instances that share the room
//! through a redis-server the bench starts on a free loopback port (no
//! persistence). One load generator holds every member, so every latency
//! is read on one clock. --samples runs of each, each on fresh servers.
//! Reported: the last delivery of a message (when every member has it),
//! every delivery's p50 and p99, deliveries/s, and what the backplane
//! counted (published, received, dropped, missed).

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::phase::{self, Phases, Target};
use crate::backplane::redis_server::RedisServer;
use crate::load::config::ScenarioKind;
use crate::load::spread::Spread;
use crate::process::ServerProcess;

/// How long the instances' subscriptions may take to appear.
const SUBSCRIBE_PATIENCE: Duration = Duration::from_secs(15);
/// How long an extra instance may take to say `ready`.
const START_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackplaneBench {
    /// Room members, in total.
    pub members: usize,
    /// Messages published per run, one at a time.
    pub messages: u64,
    /// One instance alone, then the instances through Redis.
    pub setups: Vec<BackplaneSetup>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackplaneSetup {
    /// Server instances the members were spread over.
    pub instances: usize,
    /// Whether they shared the room through Redis.
    pub through_redis: bool,
    /// Per run: the median over messages of each one's last delivery (the
    /// moment every member had it), ms.
    pub last_delivery_ms: Spread,
    /// Per run: every delivery's p50, ms.
    pub delivery_p50_ms: Spread,
    /// Per run: every delivery's p99, ms.
    pub delivery_p99_ms: Spread,
    /// Per run: deliveries per second of delivery time.
    pub deliveries_per_s: Spread,
    /// Every run.
    pub runs: Vec<BackplaneRun>,
}

/// One run's figures.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackplaneRun {
    /// The median over messages of each one's last delivery, ms.
    pub last_delivery_ms: f64,
    /// Every delivery's p50, ms.
    pub delivery_p50_ms: f64,
    /// Every delivery's p99, ms.
    pub delivery_p99_ms: f64,
    /// Deliveries per second of delivery time.
    pub deliveries_per_s: f64,
    /// Deliveries missing (must be 0).
    pub missing: u64,
    /// Deliveries duplicated (must be 0).
    pub duplicated: u64,
    /// Members on each instance.
    pub members_per_instance: Vec<u64>,
    /// Summed over instances: frames handed to Redis.
    pub backplane_published: u64,
    /// Summed over instances: frames received from Redis.
    pub backplane_received: u64,
    /// Summed over instances: frames not published (Redis away, outbox full).
    pub backplane_dropped: u64,
    /// Summed over instances: frames other instances published and these missed.
    pub backplane_missed: u64,
}

pub struct BackplaneJob {
    pub members: usize,
    pub messages: u64,
    pub instances: usize,
    pub samples: usize,
}

/// Both setups on `server`.
pub fn run(
    phases: &mut Phases,
    server: usize,
    job: &BackplaneJob,
) -> anyhow::Result<BackplaneBench> {
    let redis = RedisServer::start().context(
        "--measure backplane starts a redis-server: install it (Debian: apt-get install redis-server)",
    )?;
    let mut setups = Vec::new();
    for (instances, through_redis) in [(1, false), (job.instances, true)] {
        let mut runs = Vec::new();
        for sample in 1..=job.samples {
            let channel = format!("bench-{server}-{instances}-{sample}");
            phases.extra_args = match through_redis {
                true => vec![
                    "--backplane".into(),
                    redis.url(),
                    "--channel".into(),
                    channel.clone(),
                ],
                false => Vec::new(),
            };
            let name = match through_redis {
                false => "backplane: one instance".to_string(),
                true => format!("backplane: {instances} instances through redis"),
            };
            let run = phases.run(
                &name,
                Target::Server(server),
                FloorRoute::Room,
                sample,
                |running| one_run(running, job, instances, &redis, &channel),
            );
            phases.extra_args.clear();
            runs.push(run?);
        }
        setups.push(setup(instances, through_redis, runs));
    }
    Ok(BackplaneBench {
        members: job.members,
        messages: job.messages,
        setups,
    })
}

fn one_run(
    running: &phase::Running,
    job: &BackplaneJob,
    instances: usize,
    redis: &RedisServer,
    channel: &str,
) -> anyhow::Result<phase::Outcome<BackplaneRun>> {
    // The phase started the first instance; the others are the same command.
    let others = (1..instances)
        .map(|_| {
            let mut command = Command::new(&running.command[0]);
            command.args(&running.command[1..]);
            ServerProcess::spawn(command, START_PATIENCE)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if instances > 1 && !redis.wait_for_subscribers(channel, instances as i64, SUBSCRIBE_PATIENCE) {
        anyhow::bail!("the {instances} instances never all subscribed to {channel}");
    }
    let mut load = running.load_config(ScenarioKind::Broadcast, "/room");
    load.url
        .extend(others.iter().map(|o| format!("ws://{}/room", o.addr)));
    load.conns = job.members;
    load.count = job.messages;
    let report = crate::load::run(&load);
    // The extra instances' last stats line comes with their stop.
    let mut stats = vec![running.server.stats()];
    for other in others {
        stats.push(Ok(other.stop()?.0));
    }
    let report = report?;
    let b = report.broadcast.clone().context("no broadcast section")?;
    let totals: Vec<_> = stats
        .into_iter()
        .map(|s| s.map(|s| s.totals).unwrap_or_default())
        .collect();
    let sum = |get: fn(&crate::server::stats::Totals) -> u64| totals.iter().map(get).sum();
    let members_per_instance = match report.servers.is_empty() {
        true => vec![report.connect.opened],
        false => report.servers.iter().map(|s| s.opened).collect(),
    };
    let value = BackplaneRun {
        last_delivery_ms: b.last_delivery_us.median / 1000.0,
        delivery_p50_ms: b.latency.p50_us / 1000.0,
        delivery_p99_ms: b.latency.p99_us / 1000.0,
        deliveries_per_s: b.deliveries_per_s,
        missing: b.tally.missing,
        duplicated: b.tally.duplicated,
        members_per_instance,
        backplane_published: sum(|t| t.backplane_published),
        backplane_received: sum(|t| t.backplane_received),
        backplane_dropped: sum(|t| t.backplane_dropped),
        backplane_missed: sum(|t| t.backplane_missed),
    };
    Ok(phase::Outcome { value, report })
}

fn setup(instances: usize, through_redis: bool, runs: Vec<BackplaneRun>) -> BackplaneSetup {
    let spread =
        |get: &dyn Fn(&BackplaneRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
    BackplaneSetup {
        instances,
        through_redis,
        last_delivery_ms: spread(&|r| r.last_delivery_ms),
        delivery_p50_ms: spread(&|r| r.delivery_p50_ms),
        delivery_p99_ms: spread(&|r| r.delivery_p99_ms),
        deliveries_per_s: spread(&|r| r.deliveries_per_s),
        runs,
    }
}

/// The backplane's lines in the bench's text.
pub fn text(bench: &BackplaneBench) -> String {
    let mut out = String::new();
    for s in &bench.setups {
        let how = match s.through_redis {
            false => "1 instance".to_string(),
            true => format!("{} instances through redis", s.instances),
        };
        let lost: u64 = s.runs.iter().map(|r| r.missing + r.duplicated).sum();
        let _ = writeln!(
            out,
            "backplane {} members, {how}: every member had a message after {} ms (median over messages); delivery p50 {} ms, p99 {} ms; {} deliveries/s; missing or duplicated {lost}",
            bench.members,
            s.last_delivery_ms.text(2),
            s.delivery_p50_ms.text(2),
            s.delivery_p99_ms.text(2),
            s.deliveries_per_s.text(0),
        );
        if s.through_redis {
            let sum = |get: fn(&BackplaneRun) -> u64| s.runs.iter().map(get).sum::<u64>();
            let _ = writeln!(
                out,
                "          over {} runs: published to redis {}, received from it {}, not published {}, missed {}",
                s.runs.len(),
                sum(|r| r.backplane_published),
                sum(|r| r.backplane_received),
                sum(|r| r.backplane_dropped),
                sum(|r| r.backplane_missed)
            );
        }
    }
    out
}
