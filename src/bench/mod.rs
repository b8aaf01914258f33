//! `fanout bench`, the main job: preflight, start the server as a child,
//! sample its memory and the kernel's slab at 0 and at N idle connections,
//! broadcast to all N, echo, churn, measure the floors in the same run, and
//! print and write every figure with its ratio to its floor.

pub mod floor;
pub mod kernel;
pub mod machine;
pub mod preflight;
pub mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, Command as Subcommand};
use crate::load::histogram::Summary;
use crate::load::report::{BroadcastReport, ChurnReport, EchoReport, Report};
use crate::units::parse_duration;
use floor::Floors;
use machine::Machine;
use server::ServerProcess;

#[derive(Clone, Debug, clap::Args)]
pub struct BenchConfig {
    /// Idle WebSocket connections to hold in /room (and broadcast to).
    #[arg(long, default_value_t = 100_000)]
    pub conns: usize,

    /// Broadcasts of 32 bytes to all of them, one after another.
    #[arg(long, default_value_t = 5)]
    pub broadcasts: u64,

    /// Active echo connections, one run per value (comma-separated).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    pub echo_conns: Vec<usize>,

    /// How long each echo run lasts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub echo_duration: Duration,

    /// Churn: new connections per second (open, echo once, close).
    #[arg(long, default_value_t = 10_000.0)]
    pub churn_rate: f64,

    /// How long the churn run lasts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub churn_duration: Duration,

    /// Measure another server instead of `fanout serve`: a command that
    /// listens on the address given as its last argument and prints
    /// `ready ADDR` (e.g. the tokio-tungstenite reference server,
    /// target/release/examples/reference_server).
    #[arg(long)]
    pub server_cmd: Option<String>,

    /// Where results go: DIR/<date>-<host>/<name>.json.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,

    /// Result file name (default: bench-<server>-<conns>).
    #[arg(long)]
    pub name: Option<String>,

    /// Print the results without writing a file.
    #[arg(long)]
    pub no_write: bool,
}

/// Everything one bench run measured, as written to results/.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResult {
    pub command: String,
    pub time_utc: String,
    pub machine: Machine,
    pub server: String,
    pub conns: usize,
    pub idle: Idle,
    pub broadcast: BroadcastBench,
    pub echo: Vec<EchoReport>,
    pub churn: Option<ChurnReport>,
    pub floors: Floors,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Idle {
    pub opened: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub ramp_seconds: f64,
    pub connect_per_s: f64,
    /// connect_per_s ÷ the bare connect floor.
    pub connect_vs_floor: f64,
    pub connect_latency: Summary,
    /// Server RSS growth ÷ connections.
    pub rss_bytes_per_conn: f64,
    /// Server allocator (jemalloc) growth ÷ connections; fanout only.
    pub heap_bytes_per_conn: Option<f64>,
    /// Kernel slab growth ÷ sockets (client and server ends: 2 per connection).
    pub kernel_bytes_per_socket: f64,
    /// Growth of each socket-related slab cache, bytes.
    pub kernel_caches: BTreeMap<String, i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BroadcastBench {
    pub report: BroadcastReport,
    /// Median over the broadcasts of the last delivery's latency.
    pub last_delivery_us: f64,
    /// The bare write loop over N sockets (from the floor), in µs.
    pub floor_us: f64,
    /// last_delivery_us ÷ floor_us.
    pub vs_floor: f64,
}

pub fn bench(config: BenchConfig) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = machine::fingerprint();
    let preflight = preflight::check(config.conns, &machine);
    step("preflight");
    for line in &preflight.lines {
        eprintln!("  {line}");
    }
    for warning in &preflight.warnings {
        eprintln!("  warning: {warning}");
    }
    if !preflight.errors.is_empty() {
        bail!(
            "{} connections cannot be reached here:\n  {}",
            config.conns,
            preflight.errors.join("\n  ")
        );
    }
    let result = run(&config, command, machine, preflight.warnings)?;
    print!("{}", text(&result));
    if !config.no_write {
        let path = write(&config, &result)?;
        println!("written: {}", path.display());
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("fanout bench: {what}");
}

fn run(
    config: &BenchConfig,
    command: String,
    machine: Machine,
    mut warnings: Vec<String>,
) -> anyhow::Result<BenchResult> {
    let n = config.conns;
    step("measuring the floors (bare connect + accept, bare write loop)");
    let sources = crate::load::sources::plan(n, crate::load::sources::ports_per_source(), None)
        .map_err(anyhow::Error::msg)?;
    let floors = floor::measure(n, &sources)?;
    step("starting the server");
    let server = start_server(config, n)?;
    let server_name = match &config.server_cmd {
        Some(cmd) => cmd.clone(),
        None => server.plan.clone(),
    };
    let url = format!("ws://{}", server.addr);
    std::thread::sleep(Duration::from_millis(300));
    let before = sample(&server, config.server_cmd.is_none())?;

    step(&format!(
        "opening {n} idle /room connections, then {} broadcasts",
        config.broadcasts
    ));
    let interval = Duration::from_secs_f64((n as f64 * 20e-6).max(0.2));
    let mut at_n = None;
    let broadcast = load(
        &[
            "broadcast",
            "--url",
            &format!("{url}/room"),
            "--conns",
            &n.to_string(),
            "--count",
            &config.broadcasts.to_string(),
            "--interval",
            &format!("{}ms", interval.as_millis()),
        ],
        &mut || at_n = Some(sample(&server, config.server_cmd.is_none())),
    )?;
    let after = at_n.context("the ramp ended without a sample")??;
    let idle = idle_figures(&broadcast, &before, &after, &floors, n);
    let broadcast = broadcast_figures(&broadcast, &floors, n)?;

    let mut echo = Vec::new();
    for &conns in &config.echo_conns {
        step(&format!("echo with {conns} active connections"));
        let report = load(
            &[
                "echo",
                "--url",
                &format!("{url}/echo"),
                "--conns",
                &conns.to_string(),
                "--duration",
                &format!("{}ms", config.echo_duration.as_millis()),
            ],
            &mut || {},
        )?;
        collect_warnings(&report, &mut warnings);
        echo.extend(report.echo);
    }
    step("churn");
    let churn = load(
        &[
            "churn",
            "--url",
            &format!("{url}/echo"),
            "--rate",
            &config.churn_rate.to_string(),
            "--duration",
            &format!("{}ms", config.churn_duration.as_millis()),
        ],
        &mut || {},
    )?;
    collect_warnings(&churn, &mut warnings);
    step("stopping the server");
    stop_server(server, config.server_cmd.is_none())?;
    Ok(BenchResult {
        command,
        time_utc: utc_now(),
        machine,
        server: server_name,
        conns: n,
        idle,
        broadcast,
        echo,
        churn: churn.churn,
        floors,
        warnings,
    })
}

fn start_server(config: &BenchConfig, n: usize) -> anyhow::Result<ServerProcess> {
    let command = match &config.server_cmd {
        Some(line) => {
            let mut words = line.split_whitespace();
            let program = words.next().context("--server-cmd is empty")?;
            let mut command = Command::new(program);
            command.args(words).arg("127.0.0.1:0");
            command
        }
        None => {
            let mut command = Command::new(std::env::current_exe()?);
            let max_conns = n + n / 100 + 100;
            command.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-conns",
                &max_conns.to_string(),
            ]);
            command
        }
    };
    ServerProcess::spawn(command, Duration::from_secs(30))
}

fn stop_server(server: ServerProcess, is_fanout: bool) -> anyhow::Result<()> {
    if is_fanout {
        let (_, status) = server.stop()?;
        anyhow::ensure!(status.success(), "the server exited with {status}");
    }
    Ok(())
}

/// Server memory and kernel slab at one moment.
struct Sample {
    rss: u64,
    heap: Option<u64>,
    slab: kernel::Slab,
}

fn sample(server: &ServerProcess, is_fanout: bool) -> anyhow::Result<Sample> {
    let heap = if is_fanout {
        Some(server.stats()?.heap_allocated_bytes)
    } else {
        None
    };
    let rss = crate::sys::resident_bytes_of(&server.pid().to_string())
        .context("reading the server's resident set size")?;
    Ok(Sample {
        rss,
        heap,
        slab: kernel::sample(),
    })
}

/// Run `fanout load ARGS` in this process.
fn load(args: &[&str], after_ramp: &mut dyn FnMut()) -> anyhow::Result<Report> {
    let cli = Cli::try_parse_from(["fanout", "load"].iter().chain(args))?;
    let Subcommand::Load(config) = cli.command else {
        unreachable!("parsed as load")
    };
    crate::load::run_with(&config, after_ramp)
}

fn idle_figures(
    report: &Report,
    before: &Sample,
    after: &Sample,
    floors: &Floors,
    n: usize,
) -> Idle {
    let opened = report.connect.opened.max(1) as f64;
    let per_conn = |a: u64, b: u64| (b as f64 - a as f64) / opened;
    Idle {
        opened: report.connect.opened,
        failed: report.connect.failed,
        failures: report.connect.failures.clone(),
        ramp_seconds: report.connect.ramp_seconds,
        connect_per_s: report.connect.rate_per_s,
        connect_vs_floor: report.connect.rate_per_s / floors.connect_per_s.max(1e-9),
        connect_latency: report.connect.latency,
        rss_bytes_per_conn: per_conn(before.rss, after.rss),
        heap_bytes_per_conn: before.heap.zip(after.heap).map(|(a, b)| per_conn(a, b)),
        kernel_bytes_per_socket: (after.slab.total_bytes as f64 - before.slab.total_bytes as f64)
            / (2.0 * n.max(1) as f64),
        kernel_caches: kernel::growth(&before.slab, &after.slab),
    }
}

fn broadcast_figures(report: &Report, floors: &Floors, n: usize) -> anyhow::Result<BroadcastBench> {
    let b = report.broadcast.clone().context("no broadcast section")?;
    let mut lasts: Vec<f64> = b.per_message.iter().map(|m| m.last_us).collect();
    lasts.sort_by(f64::total_cmp);
    let last_delivery_us = lasts.get(lasts.len() / 2).copied().unwrap_or(0.0);
    let floor_us = floors.write_loop_for(n) * 1e6;
    Ok(BroadcastBench {
        report: b,
        last_delivery_us,
        floor_us,
        vs_floor: last_delivery_us / floor_us.max(1e-9),
    })
}

fn collect_warnings(report: &Report, warnings: &mut Vec<String>) {
    for warning in &report.client.warnings {
        warnings.push(format!("{}: {warning}", report.scenario));
    }
}

fn write(config: &BenchConfig, result: &BenchResult) -> anyhow::Result<PathBuf> {
    let dir = config.out.join(format!(
        "{}-{}",
        &result.time_utc[..10],
        result.machine.hostname
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let server = if config.server_cmd.is_some() {
        "other"
    } else {
        "fanout"
    };
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("bench-{server}-{}", config.conns));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(result)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The result as the fixed text block.
pub fn text(r: &BenchResult) -> String {
    let i = &r.idle;
    let b = &r.broadcast;
    let mut out = format!(
        "fanout bench — {} connections, {} ({} cores, {}), {}\n",
        r.conns, r.machine.cpu_model, r.machine.cores, r.machine.kernel, r.time_utc
    );
    out += &format!("server: {}\n", r.server);
    out += &format!(
        "idle      {} open, {} failed, ramp {:.1} s at {:.0}/s = {:.2}× the bare connect floor ({:.0}/s)\n",
        i.opened, i.failed, i.ramp_seconds, i.connect_per_s, i.connect_vs_floor, r.floors.connect_per_s
    );
    out += &format!(
        "memory    user space {:.1} B/conn RSS{}; kernel {:.0} B/socket (slab, both ends)\n",
        i.rss_bytes_per_conn,
        i.heap_bytes_per_conn
            .map(|h| format!(", {h:.1} B/conn allocator"))
            .unwrap_or_default(),
        i.kernel_bytes_per_socket
    );
    out += &format!(
        "broadcast {} × {} B to {}: last delivery {:.1} ms (median of {}) = {:.2}× the bare write loop ({:.1} ms); missing {}, duplicated {}\n",
        b.report.messages_sent, b.report.size, b.report.members, b.last_delivery_us / 1e3, b.report.per_message.len(),
        b.vs_floor, b.floor_us / 1e3, b.report.tally.missing, b.report.tally.duplicated
    );
    for m in &b.report.per_message {
        out += &format!(
            "          #{}: first {:.2} ms, median {:.2} ms, p99 {:.2} ms, last {:.2} ms, {:.0} deliveries/s\n",
            m.seq, m.first_us / 1e3, m.p50_us / 1e3, m.p99_us / 1e3, m.last_us / 1e3, m.deliveries_per_s
        );
    }
    for e in &r.echo {
        out += &format!(
            "echo      {} ({} B): {:.0} msgs/s, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs\n",
            e.mode, e.size, e.msgs_per_s, e.latency.p50_us, e.latency.p99_us, e.latency.p999_us
        );
    }
    if let Some(c) = &r.churn {
        out += &format!(
            "churn     {:.0}/s of {:.0}/s asked; setup p50 {:.0} µs, p99 {:.0} µs\n",
            c.rate_per_s, c.target_rate_per_s, c.setup.p50_us, c.setup.p99_us
        );
    }
    for warning in &r.warnings {
        out += &format!("warning: {warning}\n");
    }
    out
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_now_is_well_formed() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
        let year: u32 = now[..4].parse().unwrap();
        assert!(year >= 2024);
    }
}
