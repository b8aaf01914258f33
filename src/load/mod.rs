//! `fanout load`: the client side. Plans client shards (private fd tables
//! when one table cannot hold the connections) and source addresses, runs
//! the scenario in phases — ramp, work, stop — and merges the shards'
//! results into one [`Report`].

pub mod accounting;
pub mod agents;
pub mod balance;
pub mod burst;
pub mod client;
pub mod config;
pub mod control;
pub mod histogram;
pub mod memory;
pub mod pacing;
pub mod payload;
pub mod ports;
pub mod report;
pub mod shard;
pub mod sources;
pub mod spread;
pub mod storm;
pub mod target;

use std::io::IsTerminal;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys;
use crate::usage::UsageError;
use config::{LoadConfig, Pace, Publish, Scenario, Work};
use control::Control;
use histogram::{Extremes, Latency};
use report::*;
use shard::{Job, ShardResult};
use spread::Spread;
use target::Target;

/// Fds a client fd table keeps for everything but connections.
const TABLE_RESERVE: usize = 64;
/// Servers one load can spread over (a client remembers its server in a byte).
const MAX_SERVERS: usize = 255;
/// How often the orchestrator looks at progress.
const WATCH_EVERY: Duration = Duration::from_millis(5);
/// How often it looks while waiting for a broadcast to arrive.
const WATCH_DELIVERY: Duration = Duration::from_millis(1);
/// A broadcast wait also ends when no delivery has arrived for this long
/// (longer than TCP's retransmission backoff usually reaches on loopback).
const DELIVERY_STALL: Duration = Duration::from_secs(10);
/// A burst's attempts all have their fate by --connect-timeout plus this
/// (the shards sweep for timeouts every 100 ms).
const BURST_SETTLE_MARGIN: Duration = Duration::from_secs(1);
/// Longest a follower agent waits for the publishing agent to finish.
const FOLLOW_BOUND: Duration = Duration::from_secs(3600);

/// A point of the ramp where the caller may look at the server, with the
/// number of connections open then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Half of every shard's connections are open (or failed); the ramp
    /// waits until the callback returns.
    Half { open: u64 },
    /// Every connection is open (or failed); the work has not started.
    Full { open: u64 },
    /// The work is over; the connections are still open.
    WorkDone,
}

/// `fanout load`: run, print the report, write the JSON if asked.
pub fn load(mut config: LoadConfig) -> anyhow::Result<()> {
    let coordination = config.coordination().map_err(UsageError)?;
    config.live = config.ui.open("load")?;
    let report = match &coordination {
        Some(coordination) => run_as_agent(&config, coordination),
        None => run(&config),
    };
    if let Ok(report) = &report {
        print!("{}", report.text());
        if let Some(path) = &config.json {
            crate::json::write(path, report)?;
        }
    }
    config
        .ui
        .finish(config.live.as_ref(), &report, Report::text, "load");
    report.map(|_| ())
}

/// One of K agents: take a seat, run this agent's share of --conns from
/// the common start, hand the result over; the first agent merges them.
fn run_as_agent(
    config: &LoadConfig,
    coordination: &agents::Coordination,
) -> anyhow::Result<Report> {
    let seat = coordination.take_seat()?;
    eprintln!(
        "fanout load: agent {} of {} ({})",
        seat.index,
        seat.agents,
        match seat.index {
            1 => "the coordinator: it merges every agent's result",
            _ => "it hands its result to agent 1",
        }
    );
    let mut mine = config.clone();
    mine.conns = agents::share(config.conns, seat);
    mine.seat = Some((coordination.clone(), seat));
    let mut report = run(&mine)?;
    coordination.publish(&agents::AgentResult::of(seat.index, &report))?;
    if seat.index == 1 {
        report.agents = Some(agents::merge(&coordination.gather()?));
    }
    Ok(report)
}

/// How many client shards, and whether they need private fd tables.
pub fn client_shards(
    requested: Option<usize>,
    cores: usize,
    conns: usize,
    nofile: usize,
) -> (usize, bool) {
    let per_table = nofile.saturating_sub(TABLE_RESERVE).max(1);
    let needed = conns.div_ceil(per_table).max(1);
    let shards = requested.unwrap_or(cores).max(needed).max(1);
    (shards, needed > 1)
}

pub fn run(config: &LoadConfig) -> anyhow::Result<Report> {
    run_with(config, true, &mut |_| {})
}

/// Like [`run`], calling `at` once every connection is open (or has
/// failed), before the work starts, and, when `pause_at_half`, first once
/// half of them are, with the ramp paused: `fanout bench` samples the
/// server's memory at both points, with every connection idle, and the
/// load reads its own at both (its memory slope). The ramp's time excludes
/// the pause.
pub fn run_with(
    config: &LoadConfig,
    pause_at_half: bool,
    at: &mut dyn FnMut(Checkpoint),
) -> anyhow::Result<Report> {
    let mut scenario = config.scenario().map_err(UsageError)?;
    let targets = parse_targets(config)?;
    let target = targets[0].clone();
    let tls = match target.tls {
        true => Some(Arc::new(
            config
                .tls
                .setup()
                .map_err(|e| UsageError(format!("{e:#}")))?,
        )),
        false => None,
    };
    let held = if matches!(scenario.work, Work::Churn { .. }) {
        0
    } else {
        scenario.conns
    };
    let given = config
        .source
        .as_deref()
        .map(sources::parse_range)
        .transpose()
        .map_err(UsageError)?;

    let nofile = sys::nofile_limit()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // A burst's connections open beside the held ones.
    let peak = match scenario.work {
        Work::Burst { size } => scenario.conns + size,
        _ => scenario.conns,
    };
    let (shards, mut private) = client_shards(config.shards, cores, peak, nofile);
    if let Work::Churn { max_inflight, .. } = &mut scenario.work {
        // Each churn shard fills its own fd table at most.
        let room = nofile.saturating_sub(TABLE_RESERVE).max(1);
        if *max_inflight == 0 || *max_inflight > room {
            *max_inflight = room;
        }
        private |= shards > 1;
    }
    // Churn holds at most its bound at once; everything else, its connections.
    let at_once = match scenario.work {
        Work::Churn { max_inflight, .. } => max_inflight * shards,
        _ => peak,
    };
    let source_plan = match given {
        // A ramp until failure is there to find where they run out.
        Some(list) if config.until_failure => sources::SourcePlan {
            sources: list,
            notes: Vec::new(),
        },
        given => {
            let space = match target.addr {
                std::net::SocketAddr::V4(destination) => {
                    sources::PortSpace::read(Some(destination))
                }
                std::net::SocketAddr::V6(_) => sources::PortSpace {
                    range: sources::ports_per_source(),
                    ..Default::default()
                },
            };
            sources::plan_around(at_once, &space, given).map_err(UsageError)?
        }
    };
    let source_list = source_plan.sources.clone();
    let control = Arc::new(Control::new(shards));
    control.hold_at_half.store(pause_at_half, Relaxed);
    control.until_failure.store(config.until_failure, Relaxed);
    let share = |id: usize| held / shards + usize::from(id < held % shards);
    let counters_before = crate::netstat::read();
    let run_start = Instant::now();
    let run_start_ns = payload::now_ns();
    let threads = (0..shards)
        .map(|id| {
            let mut sources = source_list.clone();
            let len = sources.len();
            sources.rotate_left(id % len);
            let job = Job {
                id,
                shards,
                conns: share(id),
                sources,
                targets: targets.clone(),
                balance: config.balance,
                publishes: config.seat.as_ref().is_none_or(|(_, seat)| seat.index == 1),
                scenario,
                connect_timeout: config.connect_timeout,
                control: control.clone(),
                run_start_ns,
                tls: tls.clone(),
            };
            std::thread::Builder::new()
                .name(format!("load-{id}"))
                .spawn(move || {
                    if private {
                        if let Err(e) = sys::unshare_fd_table() {
                            let mut result = ShardResult::default();
                            result
                                .failures
                                .insert(format!("unshare: {e}"), job.conns as u64);
                            return result;
                        }
                    }
                    shard::run(job)
                })
        })
        .collect::<std::io::Result<Vec<_>>>()?;

    let mut progress = Progress::new(config.progress || std::io::stderr().is_terminal(), held);
    progress.live = config.live.clone();
    let mut ramp_seconds = 0.0;
    let mut half_point = None;
    if pause_at_half {
        let half = (0..shards).map(|id| share(id) / 2).sum::<usize>();
        ramp_seconds += ramp(&control, &scenario, half, config.connect_timeout, &progress);
        let open = control.sum(|p| &p.opened);
        half_point = Some(memory::read_point(&control, open));
        at(Checkpoint::Half { open });
        control.hold_at_half.store(false, Relaxed);
    }
    ramp_seconds += ramp(&control, &scenario, held, config.connect_timeout, &progress);
    let open = control.sum(|p| &p.opened);
    let client_memory =
        half_point.and_then(|half| memory::slope(&half, &memory::read_point(&control, open), held));
    at(Checkpoint::Full { open });
    let broadcast_agent = match (&config.seat, scenario.work) {
        (Some((coordination, seat)), Work::Broadcast { drain, .. }) => {
            coordination.ramped(*seat)?;
            Some((coordination, *seat, drain))
        }
        _ => None,
    };
    let counters_at_work = crate::netstat::read();
    let failed_in_ramp = control.sum(|p| &p.failed);
    let open_at_work = control.sum(|p| &p.alive);
    control.work.store(true, Relaxed);
    let work_start = Instant::now();
    let (gave_up, storm_watch) = match scenario.work {
        _ if broadcast_agent.is_some_and(|(_, seat, _)| seat.index > 1) => {
            let (coordination, _, drain) = broadcast_agent.expect("checked");
            (follow(&control, coordination, drain, &progress)?, None)
        }
        _ if broadcast_agent.is_some() => {
            let (coordination, _, _) = broadcast_agent.expect("checked");
            let gave_up = lead(
                &control,
                &scenario,
                config.connect_timeout,
                coordination,
                &progress,
            )?;
            (gave_up, None)
        }
        Work::Storm { .. } => {
            let watch = storm_watch(&control, shards, open_at_work, scenario.duration, &progress);
            (Vec::new(), Some(watch))
        }
        _ => (
            work(&control, &scenario, config.connect_timeout, &progress),
            None,
        ),
    };
    let work_seconds = work_start.elapsed().as_secs_f64();
    at(Checkpoint::WorkDone);
    control.stop.store(true, Relaxed);
    progress.finish();
    let results: Vec<ShardResult> = threads
        .into_iter()
        .map(|t| t.join().expect("load shard panicked"))
        .collect();
    let wall = run_start.elapsed();
    let counters_after = crate::netstat::read();
    let kernel = crate::netstat::delta(&counters_before, &counters_after);
    let kernel_work = crate::netstat::delta(&counters_at_work, &counters_after);
    let report = merge(
        config,
        &scenario,
        &target,
        MergeInput {
            shards,
            private,
            sources: source_list.iter().map(|a| a.to_string()).collect(),
            source_notes: source_plan.notes.clone(),
            ramp_seconds,
            work_seconds,
            wall,
            cores,
            published: control.published.load(Relaxed),
            first_publish_ns: control.first_publish_ns.load(Relaxed),
            gave_up,
            kernel,
            kernel_work,
            storm: storm_watch.map(|watch| (watch, open_at_work, failed_in_ramp)),
            held_at_work: open_at_work,
            client_memory,
            alive_at_end: results.iter().map(|r| r.alive_at_end).sum(),
        },
        results,
    );
    Ok(report)
}

/// Every --url, one scheme for all, at most [`MAX_SERVERS`].
fn parse_targets(config: &LoadConfig) -> anyhow::Result<Vec<Target>> {
    let path = config.scenario.default_path();
    let targets = config
        .url
        .iter()
        .map(|url| Target::parse(url, path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError)?;
    for target in targets.iter().filter(|t| t.tls) {
        target.server_name().map_err(UsageError)?;
    }
    if targets.len() > MAX_SERVERS {
        let error = format!("at most {MAX_SERVERS} --url, not {}", targets.len());
        return Err(UsageError(error).into());
    }
    if targets
        .iter()
        .any(|t| (t.wire, t.tls) != (targets[0].wire, targets[0].tls))
    {
        let error = "every --url needs the same scheme (ws://, wss://, tcp://, tls:// or bare://)";
        return Err(UsageError(error.into()).into());
    }
    if config.deflate && targets[0].wire != target::Wire::Ws {
        let error = "--deflate is a WebSocket extension: it needs ws:// or wss:// URLs";
        return Err(UsageError(error.into()).into());
    }
    Ok(targets)
}

/// What the orchestrator saw of a storm: when every connection was back
/// (seconds after the first was lost), and the open count every 100 ms.
struct StormWatch {
    all_back_seconds: Option<f64>,
    curve: Vec<[f64; 2]>,
}

/// How often the storm's curve is sampled.
const STORM_SAMPLE: Duration = Duration::from_millis(100);

/// Watch a storm until the `open` connections held when it began are all
/// open again (every shard in the storm) or `bound` has passed.
fn storm_watch(
    control: &Control,
    shards: usize,
    open: u64,
    bound: Duration,
    progress: &Progress,
) -> StormWatch {
    let start = Instant::now();
    let mut curve = Vec::new();
    let mut next_sample = 0.0;
    while start.elapsed() < bound {
        progress.work(control, start);
        let began = control.storm_began_ns.load(Relaxed);
        let everyone_in = control.storm_shards.load(Relaxed) >= shards as u64;
        if began != 0 && everyone_in {
            let since = payload::now_ns().saturating_sub(began) as f64 / 1e9;
            let alive = control.sum(|p| &p.alive);
            if alive >= open {
                curve.push([since, alive as f64]);
                return StormWatch {
                    all_back_seconds: Some(since),
                    curve,
                };
            }
            if since >= next_sample {
                curve.push([since, alive as f64]);
                next_sample = (since / STORM_SAMPLE.as_secs_f64()).floor()
                    * STORM_SAMPLE.as_secs_f64()
                    + STORM_SAMPLE.as_secs_f64();
            }
        }
        std::thread::sleep(WATCH_EVERY);
    }
    StormWatch {
        all_back_seconds: None,
        curve,
    }
}

/// Wait until `held` connection attempts have succeeded or failed; once the
/// shards stop opening (`--until-failure`), only for the attempts started.
fn ramp(
    control: &Control,
    scenario: &Scenario,
    held: usize,
    connect_timeout: Duration,
    progress: &Progress,
) -> f64 {
    let start = Instant::now();
    let expected = match scenario.open {
        Pace::Rate(rate) => Duration::from_secs_f64(held as f64 / rate),
        Pace::AsFast { .. } => Duration::ZERO,
    };
    // Generous: a ramp this late has stalled; its report says what failed.
    let deadline =
        start + expected + connect_timeout * 3 + Duration::from_secs(held as u64 / 5_000 + 5);
    while Instant::now() < deadline {
        let failed = control.sum(|p| &p.failed);
        let done = control.sum(|p| &p.opened) + failed;
        progress.ramp(control, start);
        let wanted = if control.stop_opening.load(Relaxed) {
            control.sum(|p| &p.started)
        } else {
            held as u64
        };
        if done >= wanted {
            break;
        }
        std::thread::sleep(WATCH_EVERY);
    }
    progress.ramp_over(control, start);
    start.elapsed().as_secs_f64()
}

/// Run the scenario's work until it is done. Returns the broadcast waits
/// that gave up before every member had the message, and why.
fn work(
    control: &Control,
    scenario: &Scenario,
    connect_timeout: Duration,
    progress: &Progress,
) -> Vec<String> {
    let start = Instant::now();
    if let Work::Burst { size } = scenario.work {
        // Every attempt has its fate by --connect-timeout (then a sweep).
        let bound = scenario.duration.max(connect_timeout + BURST_SETTLE_MARGIN);
        let settled = || control.sum(|p| &p.burst_settled) >= size as u64;
        wait_until(bound, settled, || progress.work(control, start));
    }
    match scenario.work {
        Work::Broadcast {
            count,
            publish,
            drain,
        } => broadcast(control, count, publish, drain, scenario.duration, progress),
        Work::Hold
        | Work::Echo { .. }
        | Work::Churn { .. }
        | Work::Storm { .. }
        | Work::Burst { .. } => {
            while start.elapsed() < scenario.duration {
                progress.work(control, start);
                std::thread::sleep(WATCH_EVERY.min(scenario.duration));
            }
            Vec::new()
        }
    }
}

/// Drive the publisher: one message at a time, each released once every
/// member has the one before; or, sustained, on its schedule followed by a
/// drain. Returns the waits for delivery that gave up, and why.
fn broadcast(
    control: &Control,
    count: u64,
    publish: Publish,
    drain: Duration,
    duration: Duration,
    progress: &Progress,
) -> Vec<String> {
    let start = Instant::now();
    let published = || control.published.load(Acquire);
    let publisher_done = || control.publisher_done.load(Acquire);
    let mut gave_up = Vec::new();
    match publish {
        Publish::OneAtATime { gap, burst } => {
            for k in (burst..=count).step_by(burst as usize) {
                control.release.store(k, Release);
                let sent = wait_until(
                    drain,
                    || published() >= k || publisher_done(),
                    || progress.work(control, start),
                );
                if !sent || published() < k {
                    break; // the publisher is gone
                }
                if let Err(why) =
                    wait_delivered(control, k, drain, &|| progress.work(control, start))
                {
                    gave_up.push(match burst {
                        1 => format!("message {}: {why}", k - 1),
                        _ => format!("burst {}: {why}", k / burst - 1),
                    });
                }
                if k < count {
                    std::thread::sleep(gap);
                }
            }
        }
        Publish::Rate(_) => {
            control.release.store(count, Release);
            wait_until(duration + drain, publisher_done, || {
                progress.work(control, start)
            });
            if let Err(why) = wait_delivered(control, published(), drain, &|| {
                progress.work(control, start)
            }) {
                gave_up.push(format!("after the last publish: {why}"));
            }
        }
    }
    gave_up
}

/// The publishing agent of a broadcast over several: the broadcast as
/// alone (each message released once this agent's members have the one
/// before), telling the other agents how many it has published as it goes,
/// and when it is done.
fn lead(
    control: &Control,
    scenario: &Scenario,
    connect_timeout: Duration,
    coordination: &agents::Coordination,
    progress: &Progress,
) -> anyhow::Result<Vec<String>> {
    let working = std::sync::atomic::AtomicBool::new(true);
    let gave_up = std::thread::scope(|scope| {
        let mirror = scope.spawn(|| -> anyhow::Result<()> {
            let mut told = 0;
            while working.load(Acquire) {
                let published = control.published.load(Acquire);
                if published != told {
                    coordination.set_published(published, false)?;
                    told = published;
                }
                std::thread::sleep(WATCH_DELIVERY);
            }
            Ok(())
        });
        let gave_up = work(control, scenario, connect_timeout, progress);
        working.store(false, Release);
        mirror
            .join()
            .expect("the mirror thread does not panic")
            .map(|()| gave_up)
    })?;
    coordination.set_published(control.published.load(Acquire), true)?;
    Ok(gave_up)
}

/// An agent whose members hear another agent's broadcast: follow its
/// published count, and once it is done wait (at most `drain`, or a
/// delivery stall) until every member here has everything.
fn follow(
    control: &Control,
    coordination: &agents::Coordination,
    drain: Duration,
    progress: &Progress,
) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    let published = loop {
        let (published, done) = coordination.published()?;
        control.published.fetch_max(published, Release);
        if done {
            break published;
        }
        if start.elapsed() > FOLLOW_BOUND {
            anyhow::bail!("the publishing agent never said it was done ({FOLLOW_BOUND:?})");
        }
        progress.work(control, start);
        std::thread::sleep(WATCH_DELIVERY);
    };
    let mut gave_up = Vec::new();
    if let Err(why) = wait_delivered(control, published, drain, &|| progress.work(control, start)) {
        gave_up.push(format!("after the publisher was done: {why}"));
    }
    Ok(gave_up)
}

/// Wait (at most `bound`) until `done`; returns whether it happened.
fn wait_until(bound: Duration, done: impl Fn() -> bool, tick: impl Fn()) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > bound {
            return false;
        }
        tick();
        std::thread::sleep(WATCH_DELIVERY);
    }
    true
}

/// Wait until every open member has `published` messages. Gives up, saying
/// why, after `bound`, or after [`DELIVERY_STALL`] without a new delivery.
fn wait_delivered(
    control: &Control,
    published: u64,
    bound: Duration,
    tick: &dyn Fn(),
) -> Result<(), String> {
    let start = Instant::now();
    let mut last_count = control.sum(|p| &p.delivered);
    let mut last_change = start;
    while !control.all_caught_up(published) {
        let count = control.sum(|p| &p.delivered);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        if start.elapsed() > bound {
            return Err(format!(
                "not every member had it after the drain bound of {bound:?}"
            ));
        }
        if last_change.elapsed() > DELIVERY_STALL {
            return Err(format!(
                "no delivery at all for {DELIVERY_STALL:?} ({:.1} s after it was published)",
                start.elapsed().as_secs_f64()
            ));
        }
        tick();
        std::thread::sleep(WATCH_DELIVERY);
    }
    Ok(())
}

struct MergeInput {
    shards: usize,
    private: bool,
    sources: Vec<String>,
    source_notes: Vec<String>,
    ramp_seconds: f64,
    work_seconds: f64,
    wall: Duration,
    cores: usize,
    published: u64,
    first_publish_ns: u64,
    /// Broadcast waits that gave up, and why.
    gave_up: Vec<String>,
    /// The kernel's TCP counters that changed during the run, and during
    /// the work alone (after the ramp).
    kernel: crate::netstat::Counters,
    kernel_work: crate::netstat::Counters,
    /// Storm: what the orchestrator watched, the connections open when it
    /// began, and the attempts that failed in the ramp before it.
    storm: Option<(StormWatch, u64, u64)>,
    /// Connections open when the work began, and at the end.
    held_at_work: u64,
    alive_at_end: u64,
    client_memory: Option<memory::ClientMemory>,
}

impl MergeInput {
    /// A kernel counter's change during the work (0 if it did not move).
    fn work_counter(&self, name: &str) -> u64 {
        self.kernel_work.get(name).copied().unwrap_or(0).max(0) as u64
    }
}

/// Everything the shards saw, added up.
fn sum_shards(results: &[ShardResult]) -> ShardResult {
    let mut all = ShardResult::default();
    for result in results {
        all.connect.merge(&result.connect);
        if all.timeline.len() < result.timeline.len() {
            all.timeline.resize(result.timeline.len(), 0);
        }
        for (second, n) in result.timeline.iter().enumerate() {
            all.timeline[second] += n;
        }
        for (cause, n) in &result.failures {
            *all.failures.entry(cause.clone()).or_default() += n;
        }
        all.deliveries.merge(&result.deliveries);
        if all.per_message.len() < result.per_message.len() {
            all.per_message
                .resize(result.per_message.len(), Latency::coarse());
        }
        for (seq, h) in result.per_message.iter().enumerate() {
            all.per_message[seq].merge(h);
        }
        if all.per_message_extremes.len() < result.per_message_extremes.len() {
            all.per_message_extremes
                .resize(result.per_message_extremes.len(), Extremes::default());
        }
        for (seq, e) in result.per_message_extremes.iter().enumerate() {
            all.per_message_extremes[seq].merge(e);
        }
        all.tally.add(&result.tally);
        all.members += result.members;
        all.members_closed += result.members_closed;
        all.last_delivery_ns = all.last_delivery_ns.max(result.last_delivery_ns);
        all.echo.merge(&result.echo);
        all.echo_messages += result.echo_messages;
        all.echo_bytes += result.echo_bytes;
        all.send_lag.merge(&result.send_lag);
        all.churn_setup.merge(&result.churn_setup);
        all.churn_total.merge(&result.churn_total);
        all.churn_arrivals += result.churn_arrivals;
        all.churn_dropped += result.churn_dropped;
        all.alive_at_end += result.alive_at_end;
        all.closed_by_server += result.closed_by_server;
        for (how, count) in &result.server_closes {
            *all.server_closes.entry(how.clone()).or_default() += count;
        }
        all.source_moves += result.source_moves;
        all.explicit_ports += result.explicit_ports;
        all.deflate_agreed += result.deflate_agreed;
        all.tls_handshakes += result.tls_handshakes;
        all.tls_resumed += result.tls_resumed;
        all.storm_lost += result.storm_lost;
        all.storm_attempts += result.storm_attempts;
        all.storm_setup.merge(&result.storm_setup);
        all.storm_gave_up += result.storm_gave_up;
        all.storm_waiting += result.storm_waiting;
        all.burst.merge(&result.burst);
        add_per_server(&mut all.opened_per_server, &result.opened_per_server);
        add_per_server(
            &mut all.open_at_end_per_server,
            &result.open_at_end_per_server,
        );
        all.cpu_ns += result.cpu_ns;
        all.work_cpu_ns += result.work_cpu_ns;
    }
    all
}

/// CPU seconds per million of `count` (None when there were none).
fn per_million(cpu_ns: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| cpu_ns as f64 / 1e9 / count as f64 * 1e6)
}

fn add_per_server(all: &mut Vec<u64>, shard: &[u64]) {
    if all.len() < shard.len() {
        all.resize(shard.len(), 0);
    }
    all.iter_mut().zip(shard).for_each(|(all, n)| *all += n);
}

fn merge(
    config: &LoadConfig,
    scenario: &Scenario,
    target: &Target,
    input: MergeInput,
    results: Vec<ShardResult>,
) -> Report {
    let all = sum_shards(&results);
    let opened = all.connect.count();
    let failed: u64 = all.failures.values().sum();
    let connect = ConnectReport {
        opened,
        failed,
        failures: all.failures.clone(),
        ramp_seconds: input.ramp_seconds,
        rate_per_s: opened as f64 / input.ramp_seconds.max(1e-9),
        timeline: all.timeline.clone(),
        latency: all.connect.summary(),
        alive_at_end: all.alive_at_end,
        closed_by_server: all.closed_by_server,
        server_closes: all.server_closes.clone(),
        source_moves: all.source_moves,
        explicit_ports: all.explicit_ports,
        tls_handshakes: all.tls_handshakes,
        tls_resumed: all.tls_resumed,
    };
    let mut warnings = Vec::new();
    let cpu_share = all.cpu_ns as f64 / (input.wall.as_nanos() as f64 * input.cores as f64);
    if cpu_share > 0.9 {
        warnings.push(format!("the load generator used {:.0}% of all cores: these figures may measure the client, not the server", cpu_share * 100.0));
    }
    // A storm's failed reconnects are retried and counted in its section.
    let ramp_failed = input.storm.as_ref().map_or(failed, |(_, _, ramp)| *ramp);
    if ramp_failed > 0 {
        warnings.push(format!(
            "{ramp_failed} connections failed (see causes above)"
        ));
    }
    if let Some(n) = all.failures.get("no free source port") {
        warnings.push(format!(
            "{n} connections found every one of the {} source addresses out of ports (EADDRNOTAVAIL): give more (--source 127.0.0.2-127.0.0.N), widen net.ipv4.ip_local_port_range, or wait for ports in TIME_WAIT to come back (60 s on Linux){}",
            input.sources.len(),
            if input.source_notes.is_empty() { String::new() } else { format!(" — {}", input.source_notes.join("; ")) }
        ));
    }

    let broadcast = match scenario.work {
        Work::Broadcast { publish, .. } => Some(broadcast_report(
            &all,
            scenario,
            &input,
            publish,
            &mut warnings,
        )),
        _ => None,
    };
    let echo = match scenario.work {
        Work::Echo {
            open_loop_rate,
            window,
        } => Some(echo_report(
            &all,
            scenario,
            input.work_seconds,
            open_loop_rate,
            window,
            &mut warnings,
        )),
        _ => None,
    };
    if all.churn_dropped > 0 {
        let who = if cpu_share > 0.9 {
            format!(
                "the client (it used {:.0}% of all cores)",
                cpu_share * 100.0
            )
        } else {
            "the server (the client had cores to spare; connections stayed in flight)".to_string()
        };
        warnings.push(format!(
            "{} of {} churn arrivals were dropped: a shard already had --max-inflight cycles in flight; {who} could not keep up with the rate asked",
            all.churn_dropped, all.churn_arrivals
        ));
    }
    let churn = match scenario.work {
        Work::Churn { rate, max_inflight } => Some(ChurnReport {
            target_rate_per_s: rate,
            arrivals: all.churn_arrivals,
            dropped: all.churn_dropped,
            failed: all.failures.values().sum(),
            // Started, neither completed nor failed: connecting, upgrading
            // or echoing when churn stopped.
            in_flight_at_end: all
                .churn_arrivals
                .saturating_sub(all.churn_dropped + all.churn_total.count())
                .saturating_sub(all.failures.values().sum()),
            max_inflight_per_shard: max_inflight,
            completed: all.churn_total.count(),
            seconds: input.work_seconds,
            rate_per_s: all.churn_total.count() as f64 / input.work_seconds.max(1e-9),
            setup: all.churn_setup.summary(),
            total: all.churn_total.summary(),
        }),
        _ => None,
    };
    let storm = match (scenario.work, &input.storm) {
        (Work::Storm { cause, backoff }, Some((watch, open, failed_in_ramp))) => {
            let failed: u64 = all.failures.values().sum();
            let report = StormReport {
                cause: cause.describe().to_string(),
                reconnect: backoff.map_or("at once".to_string(), |b| b.describe()),
                open_before: *open,
                lost: all.storm_lost,
                attempts: all.storm_attempts,
                back: all.storm_setup.count(),
                failed_attempts: failed.saturating_sub(*failed_in_ramp),
                gave_up: all.storm_gave_up,
                waiting_at_end: all.storm_waiting,
                all_back_seconds: watch.all_back_seconds,
                setup: all.storm_setup.summary(),
                listen_overflows: input.work_counter("TcpExt.ListenOverflows"),
                curve: watch.curve.clone(),
            };
            if report.all_back_seconds.is_none() {
                warnings.push(format!(
                    "the storm did not settle within --duration: {} of {} connections back, {} reconnects still waiting, {} gave up after {} attempts",
                    report.back, report.lost, report.waiting_at_end, report.gave_up, storm::MAX_ATTEMPTS
                ));
            }
            Some(report)
        }
        _ => None,
    };
    let burst = match scenario.work {
        Work::Burst { size } => Some(burst_report(&all.burst, size, &input)),
        _ => None,
    };
    if let Some(burst) = &burst {
        if burst.settled_seconds.is_none() {
            warnings.push(format!(
                "{} of the {} burst attempts had neither opened nor failed by the end",
                burst.size - burst.opened - burst.failures.values().sum::<u64>(),
                burst.size
            ));
        }
    }
    let servers: Vec<ServerShare> = match config.url.len() {
        1 => Vec::new(),
        _ => config
            .url
            .iter()
            .enumerate()
            .map(|(i, url)| ServerShare {
                url: url.clone(),
                opened: all.opened_per_server.get(i).copied().unwrap_or(0),
                open_at_end: all.open_at_end_per_server.get(i).copied().unwrap_or(0),
            })
            .collect(),
    };
    // Raw histograms only for an agent, whose coordinator merges them.
    let recorded = match config.seat {
        Some(_) => RecordedHistograms {
            connect: all.connect.recorded(),
            echo: all.echo.recorded(),
            deliveries: all.deliveries.recorded(),
        },
        None => RecordedHistograms::default(),
    };
    Report {
        agents: None,
        recorded,
        storm,
        burst,
        balance: (!servers.is_empty()).then(|| config.balance.name().to_string()),
        servers,
        scenario: format!("{:?}", config.scenario).to_lowercase(),
        url: format!("{}://{}{}", target.scheme(), target.host, target.path),
        conns: scenario.conns,
        client_shards: input.shards,
        private_fd_tables: input.private,
        sources: input.sources,
        source_notes: input.source_notes,
        connect,
        broadcast,
        echo,
        churn,
        payload: PayloadReport::of(scenario.fill, scenario.size),
        deflate_agreed: config.deflate.then_some(all.deflate_agreed),
        client: ClientReport {
            cpu_share,
            work_cpu_seconds: all.work_cpu_ns as f64 / 1e9,
            cpu_seconds_per_million_received: per_million(
                all.work_cpu_ns,
                all.tally.delivered + all.echo_messages,
            ),
            memory: input.client_memory,
            warnings,
        },
        kernel_trouble: crate::netstat::trouble(&input.kernel),
        kernel_causes: crate::netstat::explain(&input.kernel),
        kernel_counters: input.kernel,
        kernel_counters_work: input.kernel_work,
    }
}

/// The burst's section: what became of each attempt, and the kernel's
/// counters over the work that say where SYNs went.
fn burst_report(result: &burst::BurstResult, size: usize, input: &MergeInput) -> BurstReport {
    let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9;
    let refused = ["http 503", "hello refused"]
        .iter()
        .filter_map(|cause| result.failures.get(*cause))
        .sum();
    BurstReport {
        size: size as u64,
        held: input.held_at_work,
        held_open_at_end: input.alive_at_end.saturating_sub(result.open_at_end),
        issue_seconds: seconds(result.first_issue_ns, result.last_issue_ns),
        settled_seconds: (result.settled() >= size as u64)
            .then(|| seconds(result.first_issue_ns, result.last_settled_ns)),
        opened: result.opened,
        retransmitted: result.retransmitted,
        refused,
        failures: result.failures.clone(),
        open_at_end: result.open_at_end,
        setup: result.setup.summary(),
        listen_overflows: input.work_counter("TcpExt.ListenOverflows"),
        listen_drops: input.work_counter("TcpExt.ListenDrops"),
        syn_retransmits: input.work_counter("TcpExt.TCPSynRetrans"),
        syncookies_sent: input.work_counter("TcpExt.SyncookiesSent"),
    }
}

fn broadcast_report(
    all: &ShardResult,
    scenario: &Scenario,
    input: &MergeInput,
    publish: Publish,
    warnings: &mut Vec<String>,
) -> BroadcastReport {
    let published = input.published;
    let per_message: Vec<MessageReport> = all
        .per_message
        .iter()
        .zip(&all.per_message_extremes)
        .take(published as usize)
        .enumerate()
        .map(|(seq, (h, e))| {
            let s = h.summary();
            MessageReport {
                seq: seq as u64,
                deliveries: e.count,
                first_us: s.min_us,
                p50_us: s.p50_us,
                p99_us: s.p99_us,
                last_us: s.max_us,
                deliveries_per_s: e.count as f64 / (s.max_us / 1e6).max(1e-9),
            }
        })
        .collect();
    let arrived: Vec<&Extremes> = all
        .per_message_extremes
        .iter()
        .take(published as usize)
        .filter(|e| e.count > 0)
        .collect();
    let first: Vec<f64> = arrived.iter().map(|e| e.min_ns as f64 / 1e3).collect();
    let last: Vec<f64> = arrived.iter().map(|e| e.max_ns as f64 / 1e3).collect();
    // A burst's messages leave back to back: its last delivery, from the
    // burst's publish, is the latest of its messages' (each from its own).
    let burst_last: Vec<f64> = match publish {
        Publish::OneAtATime { burst, .. } => all
            .per_message_extremes
            .iter()
            .take(published as usize)
            .collect::<Vec<_>>()
            .chunks(burst as usize)
            .filter(|chunk| chunk.iter().any(|e| e.count > 0))
            .map(|chunk| chunk.iter().map(|e| e.max_ns).max().unwrap_or(0) as f64 / 1e3)
            .collect(),
        Publish::Rate(_) => Vec::new(),
    };
    let delivery_seconds = match publish {
        // Broadcasts never overlap: the time spent delivering is the sum of
        // each one's publish-to-last-delivery, without the pauses between.
        Publish::OneAtATime { .. } => burst_last.iter().sum::<f64>() / 1e6,
        Publish::Rate(_) => {
            all.last_delivery_ns.saturating_sub(input.first_publish_ns) as f64 / 1e9
        }
    };
    let tally = all.tally;
    broadcast_warnings(&tally, all.members_closed, &input.gave_up, warnings);
    BroadcastReport {
        members: all.members,
        messages_sent: published,
        size: scenario.size,
        mode: match publish {
            Publish::OneAtATime { gap, burst: 1 } => format!(
                "one at a time, each after every member had the one before, {} ms apart",
                gap.as_millis()
            ),
            Publish::OneAtATime { gap, burst } => format!(
                "in bursts of {burst} back to back, each after every member had the burst before, {} ms apart",
                gap.as_millis()
            ),
            Publish::Rate(rate) => format!("sustained, {rate}/s"),
        },
        latency: all.deliveries.summary(),
        first_delivery_us: Spread::of(&first),
        last_delivery_us: Spread::of(&last),
        burst_last_delivery_us: matches!(publish, Publish::OneAtATime { burst, .. } if burst > 1)
            .then(|| Spread::of(&burst_last)),
        per_message,
        tally,
        members_closed: all.members_closed,
        timed_out: input.gave_up.len() as u64,
        seconds: input.work_seconds,
        delivery_seconds,
        deliveries_per_s: tally.delivered as f64 / delivery_seconds.max(1e-9),
    }
}

fn broadcast_warnings(
    tally: &accounting::Tally,
    members_closed: u64,
    gave_up: &[String],
    warnings: &mut Vec<String>,
) {
    if tally.lost() > 0 || tally.duplicated > 0 {
        warnings.push(format!(
            "{} deliveries missing, {} lost with {members_closed} members the server closed, {} duplicated",
            tally.missing, tally.closed, tally.duplicated
        ));
    }
    if tally.in_flight > 0 {
        warnings.push(format!(
            "{} deliveries were still in flight when the client stopped waiting (late, not lost: no later message had reached those members)",
            tally.in_flight
        ));
    }
    if let Some(first) = gave_up.first() {
        warnings.push(format!(
            "{} waits for a broadcast to reach every member gave up; the first, {first}",
            gave_up.len()
        ));
    }
}

fn echo_report(
    all: &ShardResult,
    scenario: &Scenario,
    work_seconds: f64,
    open_loop_rate: Option<f64>,
    window: usize,
    warnings: &mut Vec<String>,
) -> EchoReport {
    let lag = open_loop_rate.map(|_| all.send_lag.summary());
    if let Some(lag) = &lag {
        if lag.p99_us > 1000.0 {
            warnings.push(format!("the send schedule slipped: 1% of sends were more than {:.1} ms late (the client's thread waiting for a core); latency counts from the due time, so that lateness is inside the latency figures, not hidden", lag.p99_us / 1e3));
        }
    }
    EchoReport {
        conns: scenario.conns,
        mode: match open_loop_rate {
            Some(rate) => format!("open-loop {}/s per connection", (rate * 1e3).round() / 1e3),
            None => format!("closed-loop, window {window}"),
        },
        open_loop_rate,
        size: scenario.size,
        messages: all.echo_messages,
        bytes: all.echo_bytes,
        seconds: work_seconds,
        msgs_per_s: all.echo_messages as f64 / work_seconds.max(1e-9),
        bytes_per_s: all.echo_bytes as f64 / work_seconds.max(1e-9),
        latency: all.echo.summary(),
        send_lag: lag,
    }
}

/// The live progress line on a terminal (indicatif), silent otherwise;
/// and the live page's samples (--ui).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    live: Option<crate::ui::Live>,
    /// When the page got its last sample (it gets one every [`UI_EVERY`]).
    last_sample: std::cell::Cell<Option<Instant>>,
}

/// How often the live page gets a sample.
const UI_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    fn new(enabled: bool, held: usize) -> Progress {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::new(held as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("template"),
            );
            bar
        });
        Progress {
            bar,
            live: None,
            last_sample: std::cell::Cell::new(None),
        }
    }

    /// One sample for the live page: the stage and every count.
    fn sample(&self, stage: &str, control: &Control, start: Instant) {
        let Some(live) = &self.live else {
            return;
        };
        let now = Instant::now();
        if self
            .last_sample
            .get()
            .is_some_and(|last| now - last < UI_EVERY)
        {
            return;
        }
        self.last_sample.set(Some(now));
        live.publish(&serde_json::json!({
            "kind": "load",
            "stage": stage,
            "t": start.elapsed().as_secs_f64(),
            "open": control.sum(|p| &p.alive),
            "opened": control.sum(|p| &p.opened),
            "failed": control.sum(|p| &p.failed),
            "delivered": control.sum(|p| &p.delivered),
            "echoed": control.sum(|p| &p.echoed),
            "churned": control.sum(|p| &p.churned),
        }));
    }

    /// The ramp's last counts for the live page, however soon after the
    /// sample before.
    fn ramp_over(&self, control: &Control, start: Instant) {
        self.last_sample.set(None);
        self.sample("ramp", control, start);
    }

    fn ramp(&self, control: &Control, start: Instant) {
        self.sample("ramp", control, start);
        if let Some(bar) = &self.bar {
            let opened = control.sum(|p| &p.opened);
            let failed = control.sum(|p| &p.failed);
            let rate = opened as f64 / start.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "opening: {opened} open, {failed} failed, {rate:.0}/s"
            ));
            bar.tick();
        }
    }

    fn work(&self, control: &Control, start: Instant) {
        self.sample("work", control, start);
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{:.1} s: {} alive, {} delivered, {} echoed, {} churned, {} failed",
                start.elapsed().as_secs_f64(),
                control.sum(|p| &p.alive),
                control.sum(|p| &p.delivered),
                control.sum(|p| &p.echoed),
                control.sum(|p| &p.churned),
                control.sum(|p| &p.failed)
            ));
            bar.tick();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
