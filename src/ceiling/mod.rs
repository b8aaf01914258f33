//! `fanout ceiling`: ramp connections until something gives, then name it
//! with evidence — the first errno the clients saw, the kernel's counters,
//! the server's fd tables, memory and CPU at that moment, and which side
//! (client, server or the machine) hit it — with the fix `fanout doctor`
//! gives for that limit. [`diagnose`] judges; this module ramps and looks.

pub mod diagnose;
pub mod server;

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::backend::BackendKind;
use crate::doctor::checks::{self, Goal, Snapshot};
use crate::load::config::{LoadConfig, ScenarioKind};
use crate::load::target::Target;
use crate::load::Checkpoint;
use crate::process::ServerProcess;
use crate::ui::feed;
use crate::units::parse_duration;
use crate::usage::UsageError;
use diagnose::{Diagnosis, Evidence, Limit, ServerCounters};

/// How long a server the ceiling starts may take to say `ready`.
const START_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, clap::Args)]
pub struct CeilingConfig {
    /// A server already running on this machine to ramp against
    /// (ws://HOST:PORT/PATH or tcp://…; default path /echo). Default: start
    /// `fanout serve --backend B` for the ramp and stop it after.
    #[arg(long)]
    pub url: Option<String>,

    /// The backend of the server the ceiling starts (without --url).
    #[arg(long, value_enum, default_value_t = BackendKind::Epoll)]
    pub backend: BackendKind,

    /// Stop here if nothing gives first. Default: the connections that fit
    /// in 80 % of the memory available now (client and server both here),
    /// so that a ramp never drives the machine into the OOM killer.
    #[arg(long)]
    pub up_to: Option<u64>,

    /// Connections opened per second. Default: as fast as --inflight allows.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Connection attempts in flight at once, per client shard.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,

    /// Source addresses, e.g. 127.0.0.1 or 127.0.0.2-127.0.0.60. Default:
    /// as many from 127.0.0.2 as the port range needs for --up-to.
    #[arg(long)]
    pub source: Option<String>,

    /// A connection not open (TCP + upgrade) by then has failed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    #[command(flatten)]
    pub ui: crate::ui::UiArgs,
}

/// What `fanout ceiling` found, as printed and written.
#[derive(Debug, Serialize)]
pub struct CeilingReport {
    /// The command line that produced this file.
    pub command: String,
    /// The machine it ran on, and fanout's revision.
    pub machine: crate::bench::machine::Machine,
    pub url: String,
    /// The server's plan line, when the ceiling started it.
    pub server_plan: Option<String>,
    pub ramp_seconds: f64,
    pub rate_per_s: f64,
    /// Connections opened in each second of the ramp.
    pub timeline: Vec<u64>,
    pub diagnosis: Diagnosis,
    /// What to change to go past it.
    pub fix: String,
    pub evidence: Evidence,
}

pub fn ceiling(config: &CeilingConfig) -> anyhow::Result<()> {
    crate::process::stop_servers_on_signal()?;
    let live = config.ui.open("ceiling")?;
    let outcome = ramp_and_diagnose(config, live.as_ref());
    config
        .ui
        .finish(live.as_ref(), &outcome, String::clone, "ceiling");
    outcome.map(|_| ())
}

/// The ramp, the look at the server and the diagnosis; returns the text
/// printed.
fn ramp_and_diagnose(
    config: &CeilingConfig,
    live: Option<&crate::ui::Live>,
) -> anyhow::Result<String> {
    let snapshot = Snapshot::read();
    let up_to = match config.up_to {
        Some(0) => return Err(UsageError("--up-to must be at least 1".into()).into()),
        Some(n) => n,
        None => checks::conns_that_fit(&snapshot, &goal(1, 1)).max(1),
    };
    let mut started = match &config.url {
        Some(_) => None,
        None => Some(start_server(config.backend, up_to)?),
    };
    let url = match (&config.url, &started) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => format!("ws://{}/echo", server.addr),
        (None, None) => unreachable!("a server was started"),
    };
    let target = Target::parse(&url, ScenarioKind::Hold.default_path()).map_err(UsageError)?;
    let pid = match &started {
        Some(server) => Some(server.pid() as u32),
        None => server::listener_pid(target.addr.port()),
    };
    println!(
        "fanout ceiling: ramping {url} up to {up_to} connections; {}",
        match (&started, pid) {
            (Some(_), _) => format!("server: fanout serve --backend {}", config.backend.name()),
            (None, Some(pid)) => format!("server: pid {pid}, found listening on the port"),
            (None, None) => "server: no process found listening on the port here".into(),
        }
    );
    let server_plan = started.as_ref().map(|s| s.plan.trim().to_string());
    if let Some(plan) = &server_plan {
        println!("{plan}");
    }

    let cpu_before = pid.map(crate::process::tree_cpu_seconds);
    let mut evidence = Evidence {
        asked: up_to,
        ..Evidence::default()
    };
    let mut load = load_config(config, &url, up_to);
    load.live = live.cloned();
    let server_name = match &config.url {
        Some(url) => url.clone(),
        None => config.backend.name().to_string(),
    };
    let phase = feed::Phase {
        index: 1,
        total: 1,
        job: "ramp until something gives",
        who: &server_name,
        sample: 1,
    };
    if let Some(live) = live {
        let command = crate::json::command_line();
        live.publish(&feed::plan(
            "ceiling",
            &command,
            up_to,
            1,
            std::slice::from_ref(&server_name),
        ));
        live.publish(&feed::phase_started(&phase, None));
    }
    let watch = live
        .zip(pid)
        .map(|(live, pid)| feed::ServerWatch::start(live.clone(), pid, 1));
    let report = crate::load::run_with(&load, false, &mut |checkpoint| {
        if let Checkpoint::Full { .. } = checkpoint {
            evidence.server = pid.and_then(server::look);
            evidence.server_counters = started.as_ref().and_then(|s| {
                let totals = s.stats().ok()?.totals;
                Some(ServerCounters {
                    accept_pauses_fd_limit: totals.accept_pauses_fd_limit,
                    accept_pauses_full: totals.accept_pauses_full,
                })
            });
            evidence.mem_available_bytes =
                crate::bench::machine::meminfo_kib("MemAvailable") * 1024;
        }
    })?;
    drop(watch);
    evidence.held = report.connect.alive_at_end;
    evidence.failures = report.connect.failures.clone();
    evidence.kernel = report.kernel_counters.clone();
    evidence.source_addresses = report.sources.len();
    let ramp = report.connect.ramp_seconds;
    if let (Some(before), Some(view)) = (cpu_before, &evidence.server) {
        evidence.server_cpu_cores = (ramp > 0.0).then(|| (view.cpu_seconds - before) / ramp);
    }
    if let Some(mut server) = started.take() {
        evidence.server_exit = server.exit_status().map(describe_exit);
        if evidence.server_exit.is_none() {
            server.stop().context("stopping the server")?;
        }
    }

    let diagnosis = diagnose::diagnose(&evidence);
    let result = CeilingReport {
        command: crate::json::command_line(),
        machine: crate::bench::machine::fingerprint(),
        url,
        server_plan,
        ramp_seconds: ramp,
        rate_per_s: report.connect.rate_per_s,
        timeline: report.connect.timeline.clone(),
        fix: fix(&diagnosis, &snapshot, &evidence),
        diagnosis,
        evidence,
    };
    let text = render(&result);
    print!("{text}");
    if let Some(path) = &config.json {
        crate::json::write(path, &result)?;
    }
    if let Some(live) = live {
        let kernel = &result.evidence.kernel;
        let warnings = &report.client.warnings;
        live.publish(&feed::phase_done(&phase, ramp, kernel, warnings, &report));
    }
    Ok(text)
}

/// Both ends here, from `sources` addresses.
fn goal(conns: u64, sources: usize) -> Goal {
    Goal {
        conns,
        local_client: true,
        source_addresses: sources.max(1) as u64,
        user_bytes_per_conn: checks::fanout_user_bytes_per_conn(true),
        memory_share: checks::MEMORY_SHARE,
    }
}

fn start_server(backend: BackendKind, up_to: u64) -> anyhow::Result<ServerProcess> {
    let mut max_conns = up_to as usize;
    // A one-fd-table server is started for what its table holds (it
    // refuses more); its ceiling is that table.
    if backend.single_fd_table() {
        max_conns = max_conns.min(crate::serve::one_table_capacity(backend)?);
    }
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        backend.name(),
    ]);
    command.args(["--max-conns", &max_conns.to_string()]);
    ServerProcess::spawn(command, START_PATIENCE)
}

fn load_config(config: &CeilingConfig, url: &str, up_to: u64) -> LoadConfig {
    let mut load = LoadConfig::defaults(ScenarioKind::Hold, url);
    load.conns = up_to as usize;
    load.rate = config.rate;
    load.inflight = config.inflight;
    load.source = config.source.clone();
    load.connect_timeout = config.connect_timeout;
    load.duration = Duration::ZERO;
    load.until_failure = true;
    load
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(libc::SIGKILL)) => "killed by SIGKILL".into(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("{status}"),
    }
}

/// The way past the limit; `fanout doctor`'s fix where it has one.
fn fix(diagnosis: &Diagnosis, snapshot: &Snapshot, e: &Evidence) -> String {
    let goal = goal(e.asked, e.source_addresses);
    let doctor = |check: checks::Check| Some(check.fix).filter(|fix| !fix.is_empty());
    let from_doctor = match diagnosis.limit {
        Limit::SourcePorts => doctor(checks::source_ports(snapshot, &goal)),
        Limit::ClientFdTable => doctor(checks::fd_table(snapshot, &goal)),
        Limit::FileMax => doctor(checks::file_max(snapshot, &goal)),
        Limit::Memory => doctor(checks::memory(snapshot, &goal)),
        Limit::AcceptQueue => doctor(checks::accept_queue(snapshot)),
        _ => None,
    };
    from_doctor.unwrap_or_else(|| match diagnosis.limit {
        Limit::NoneBelowAsked => format!(
            "none needed; ask for more with --up-to (about {} fit in memory here)",
            checks::conns_that_fit(snapshot, &goal)
        ),
        Limit::SourcePorts => "more source addresses (--source) or a wider net.ipv4.ip_local_port_range".into(),
        Limit::ClientFdTable => "raise RLIMIT_NOFILE or give the client more fd tables (fanout load takes them itself)".into(),
        Limit::FileMax => format!("sysctl -w fs.file-max={}", 2 * e.asked + 10_000),
        Limit::Memory => "fewer connections per machine, or more memory".into(),
        Limit::ServerFdTable => format!(
            "raise the server's RLIMIT_NOFILE past {} (ulimit -n, systemd LimitNOFILE=), or spread it over more fd tables (fanout serve --max-conns N does)",
            e.asked
        ),
        Limit::ServerPlannedMaximum => "start the server with a larger --max-conns".into(),
        Limit::AcceptQueue => "accept faster (more accepting shards) or ramp slower (--rate); a bigger queue: net.core.somaxconn and the listen backlog".into(),
        Limit::Refused => "check that the server runs and listens on that address".into(),
        Limit::ClosedByServer => "the server's own output says why it turned connections away (its limits, admission control)".into(),
        Limit::ServerTooSlow => "more CPU for the server (more shards), a slower ramp (--rate) or a longer --connect-timeout".into(),
        Limit::ServerExited => "the server's own output says why it ended".into(),
        Limit::Unknown => "read the failures and kernel counters above".into(),
    })
}

fn render(r: &CeilingReport) -> String {
    let mut out = String::new();
    let d = &r.diagnosis;
    let _ = writeln!(
        out,
        "\nceiling: {} connections held — {}",
        r.evidence.held, d.summary
    );
    let side = serde_json::to_value(d.side).unwrap_or_default();
    let _ = writeln!(out, "side: {}", side.as_str().unwrap_or("?"));
    let _ = writeln!(out, "evidence:");
    for fact in &d.evidence {
        let _ = writeln!(out, "  {fact}");
    }
    let _ = writeln!(
        out,
        "ramp: {:.1} s until every attempt in flight had ended, {:.0} connections/s",
        r.ramp_seconds, r.rate_per_s
    );
    let shown: Vec<String> = r.timeline.iter().take(30).map(|n| n.to_string()).collect();
    let more = if r.timeline.len() > 30 { ", …" } else { "" };
    let _ = writeln!(out, "opened in each second: {}{more}", shown.join(", "));
    let _ = writeln!(out, "fix: {}", r.fix);
    out
}
