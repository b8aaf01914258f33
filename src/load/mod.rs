//! `fanout load`: the client side. Plans client shards (private fd tables
//! when one table cannot hold the connections) and source addresses, runs
//! the scenario in phases — ramp, work, stop — and merges the shards'
//! results into one [`Report`].

pub mod accounting;
pub mod client;
pub mod config;
pub mod control;
pub mod histogram;
pub mod pacing;
pub mod payload;
pub mod report;
pub mod shard;
pub mod sources;
pub mod target;

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::sys;
use config::{LoadConfig, Pace, Scenario, Work};
use control::Control;
use histogram::Latency;
use report::*;
use shard::{Job, ShardResult};
use target::Target;

/// Fds a client fd table keeps for everything but connections.
const TABLE_RESERVE: usize = 64;
/// How often the orchestrator looks at progress.
const WATCH_EVERY: Duration = Duration::from_millis(5);
/// How long a broadcast may take to arrive after the last message was sent.
const BROADCAST_DRAIN: Duration = Duration::from_secs(30);

/// `fanout load`: run, print the report, write the JSON if asked.
pub fn load(config: LoadConfig) -> anyhow::Result<()> {
    let report = run(&config)?;
    print!("{}", report.text());
    if let Some(path) = &config.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
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
    run_with(config, &mut || {})
}

/// Like [`run`], calling `after_ramp` once every connection is open (or has
/// failed) and before the work starts: `fanout bench` samples the server's
/// memory there, with every connection idle.
pub fn run_with(config: &LoadConfig, after_ramp: &mut dyn FnMut()) -> anyhow::Result<Report> {
    let scenario = config.scenario().map_err(anyhow::Error::msg)?;
    let target =
        Target::parse(&config.url, config.scenario.default_path()).map_err(anyhow::Error::msg)?;
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
        .map_err(anyhow::Error::msg)?;
    let source_list = sources::plan(scenario.conns, sources::ports_per_source(), given)
        .map_err(anyhow::Error::msg)?;
    let nofile = sys::nofile_limit()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (shards, private) = client_shards(config.shards, cores, scenario.conns, nofile);
    let control = Arc::new(Control::new(shards));
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
                conns: held / shards + usize::from(id < held % shards),
                sources,
                target: target.clone(),
                scenario,
                connect_timeout: config.connect_timeout,
                control: control.clone(),
                run_start_ns,
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

    let progress = Progress::new(config.progress || std::io::stderr().is_terminal(), held);
    let ramp_seconds = ramp(&control, &scenario, held, config.connect_timeout, &progress);
    after_ramp();
    control.work.store(true, Relaxed);
    let work_seconds = work(&control, &scenario, &progress);
    control.stop.store(true, Relaxed);
    progress.finish();
    let results: Vec<ShardResult> = threads
        .into_iter()
        .map(|t| t.join().expect("load shard panicked"))
        .collect();
    let wall = run_start.elapsed();
    Ok(merge(
        config,
        &scenario,
        &target,
        MergeInput {
            shards,
            private,
            sources: source_list.iter().map(|a| a.to_string()).collect(),
            ramp_seconds,
            work_seconds,
            wall,
            cores,
            published: control.published.load(Relaxed),
        },
        results,
    ))
}

/// Wait until every connection attempt has succeeded or failed.
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
        let done = control.sum(|p| &p.opened) + control.sum(|p| &p.failed);
        progress.ramp(control, start);
        if done >= held as u64 {
            break;
        }
        std::thread::sleep(WATCH_EVERY);
    }
    start.elapsed().as_secs_f64()
}

/// Run the scenario's work until it is done; returns its duration.
fn work(control: &Control, scenario: &Scenario, progress: &Progress) -> f64 {
    let start = Instant::now();
    match scenario.work {
        Work::Broadcast { count, .. } => {
            let members = control.sum(|p| &p.alive);
            let mut drain_deadline = None;
            loop {
                progress.work(control, start);
                let published = control.published.load(Relaxed);
                if control.sum(|p| &p.delivered) >= published * members
                    && control.publisher_done.load(Relaxed)
                {
                    break;
                }
                if control.publisher_done.load(Relaxed) || published >= count {
                    let deadline = *drain_deadline.get_or_insert(Instant::now() + BROADCAST_DRAIN);
                    if Instant::now() > deadline {
                        break;
                    }
                }
                std::thread::sleep(WATCH_EVERY / 5);
            }
        }
        Work::Hold | Work::Echo { .. } | Work::Churn { .. } => {
            while start.elapsed() < scenario.duration {
                progress.work(control, start);
                std::thread::sleep(WATCH_EVERY.min(scenario.duration));
            }
        }
    }
    start.elapsed().as_secs_f64()
}

struct MergeInput {
    shards: usize,
    private: bool,
    sources: Vec<String>,
    ramp_seconds: f64,
    work_seconds: f64,
    wall: Duration,
    cores: usize,
    published: u64,
}

fn merge(
    config: &LoadConfig,
    scenario: &Scenario,
    target: &Target,
    input: MergeInput,
    results: Vec<ShardResult>,
) -> Report {
    let mut all = ShardResult::default();
    for result in &results {
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
        all.tally.add(&result.tally);
        all.echo.merge(&result.echo);
        all.echo_messages += result.echo_messages;
        all.echo_bytes += result.echo_bytes;
        all.send_lag.merge(&result.send_lag);
        all.churn_setup.merge(&result.churn_setup);
        all.churn_total.merge(&result.churn_total);
        all.alive_at_end += result.alive_at_end;
        all.closed_by_server += result.closed_by_server;
        all.cpu_ns += result.cpu_ns;
    }
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
    };
    let mut warnings = Vec::new();
    let cpu_share = all.cpu_ns as f64 / (input.wall.as_nanos() as f64 * input.cores as f64);
    if cpu_share > 0.9 {
        warnings.push(format!("the load generator used {:.0}% of all cores: these figures may measure the client, not the server", cpu_share * 100.0));
    }
    if failed > 0 {
        warnings.push(format!("{failed} connections failed (see causes above)"));
    }
    let broadcast = matches!(scenario.work, Work::Broadcast { .. }).then(|| {
        let members = opened;
        let per_message = all
            .per_message
            .iter()
            .enumerate()
            .filter(|(seq, _)| (*seq as u64) < input.published)
            .map(|(seq, h)| {
                let s = h.summary();
                MessageReport {
                    seq: seq as u64,
                    deliveries: s.count,
                    first_us: s.min_us,
                    p50_us: s.p50_us,
                    p99_us: s.p99_us,
                    last_us: s.max_us,
                    deliveries_per_s: s.count as f64 / (s.max_us / 1e6).max(1e-9),
                }
            })
            .collect();
        if all.tally.missing > 0 || all.tally.duplicated > 0 {
            warnings.push(format!(
                "{} deliveries missing, {} duplicated",
                all.tally.missing, all.tally.duplicated
            ));
        }
        BroadcastReport {
            members,
            messages_sent: input.published,
            size: scenario.size,
            latency: all.deliveries.summary(),
            per_message,
            tally: all.tally,
            seconds: input.work_seconds,
            deliveries_per_s: all.tally.delivered as f64 / input.work_seconds.max(1e-9),
        }
    });
    let echo = match scenario.work {
        Work::Echo {
            open_loop_rate,
            window,
        } => {
            let lag = open_loop_rate.map(|_| all.send_lag.summary());
            if let Some(lag) = &lag {
                if lag.p99_us > 1000.0 {
                    warnings.push(format!("the send schedule slipped (p99 {:.0} µs late): the client could not keep the asked rate", lag.p99_us));
                }
            }
            Some(EchoReport {
                mode: match open_loop_rate {
                    Some(rate) => format!("open-loop {rate}/s per connection"),
                    None => format!("closed-loop, window {window}"),
                },
                size: scenario.size,
                messages: all.echo_messages,
                bytes: all.echo_bytes,
                seconds: input.work_seconds,
                msgs_per_s: all.echo_messages as f64 / input.work_seconds.max(1e-9),
                bytes_per_s: all.echo_bytes as f64 / input.work_seconds.max(1e-9),
                latency: all.echo.summary(),
                send_lag: lag,
            })
        }
        _ => None,
    };
    let churn = match scenario.work {
        Work::Churn { rate } => Some(ChurnReport {
            target_rate_per_s: rate,
            completed: all.churn_total.count(),
            seconds: input.work_seconds,
            rate_per_s: all.churn_total.count() as f64 / input.work_seconds.max(1e-9),
            setup: all.churn_setup.summary(),
            total: all.churn_total.summary(),
        }),
        _ => None,
    };
    Report {
        scenario: format!("{:?}", config.scenario).to_lowercase(),
        url: format!(
            "{}://{}{}",
            match target.proto {
                crate::server::config::Proto::Ws => "ws",
                crate::server::config::Proto::Tcp => "tcp",
            },
            target.host,
            target.path
        ),
        conns: scenario.conns,
        client_shards: input.shards,
        private_fd_tables: input.private,
        sources: input.sources,
        connect,
        broadcast,
        echo,
        churn,
        client: ClientReport {
            cpu_share,
            warnings,
        },
    }
}

/// The live progress line on a terminal (indicatif); silent otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(enabled: bool, held: usize) -> Progress {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::new(held as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("template"),
            );
            bar
        });
        Progress { bar }
    }

    fn ramp(&self, control: &Control, start: Instant) {
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
