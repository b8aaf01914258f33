//! `fanout bench`, the main job: every figure measured several times,
//! floor and server interleaved, each phase on a fresh server and a settled
//! system, with the kernel counters that explain an outlier; printed as a
//! fixed text block and written as JSON to results/.
//!
//! A floor (`fanout bare`) does a strict subset of the measured work on the
//! same machinery: the same load generator with its shards, in-flight rule
//! and source addresses, the same server shard plan, the same N and the
//! same "done" (the client has read what it waits for). So every ratio to a
//! floor means what it says, and one on the wrong side of 1 is flagged.

pub mod backplane;
pub mod bare;
pub mod churn;
pub mod compare;
pub mod echo;
pub mod handshakes;
pub mod kernel;
pub mod machine;
pub mod memory;
pub mod overload;
pub mod phase;
pub mod preflight;
pub mod room;
pub mod sampler;
pub mod schema;
pub mod settle;
pub mod slo;
pub mod soak;
pub mod storm;
pub mod sweep;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::load::config::ScenarioKind;
use crate::load::spread::Spread;
use crate::protocol::deflate::DeflateMode;
use crate::tls::OnOff;
use crate::units::parse_duration;
use bare::FloorRoute;
use compare::Compared;
use echo::EchoBench;
use machine::Machine;
use memory::Memory;
use phase::{PhaseRecord, Phases, Target};
use room::BroadcastBench;
use settle::Settled;

/// Jobs a bench can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Job {
    /// Idle members: ramp, memory, broadcasts (against the room floor).
    Room,
    /// Echo at each --echo-conns: closed loop against the echo floor, then open loop.
    Echo,
    /// Connections that open, echo once and close: the highest rate
    /// sustained, searched from --churn-rate; over TLS, resuming from the
    /// server's tickets and again with every handshake full.
    Churn,
    /// A reconnect storm: --storm-conns connections reset at once and
    /// brought back, at once and with --storm-backoff (see --storm); over
    /// TLS, each policy with and without session resumption.
    Storm,
    /// What opening a connection costs the server: churn at
    /// --handshake-rate, cycles per server CPU-second and setup p50/p99.
    /// Plain once; with --tls, every handshake full and resumed for each of
    /// --tls-variants.
    Handshakes,
    /// A broadcast the members cannot keep up with: the server's peak
    /// memory per member, what it closed, and its memory after.
    Overload,
    /// A room across --backplane-instances instances through a
    /// redis-server the bench starts, against one instance alone: the
    /// latency and deliveries/s the backplane costs.
    Backplane,
}

#[derive(Clone, Debug, clap::Args)]
pub struct BenchConfig {
    /// Idle WebSocket connections to hold in /room (and broadcast to).
    #[arg(long, default_value_t = 100_000)]
    pub conns: usize,

    /// Samples of every figure on each side: phases run floor, server,
    /// floor, server, … Medians and ranges are reported (at least 3 for a
    /// spread worth publishing).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,

    /// Share of the available memory the run may plan to use: the
    /// preflight refuses an N whose sockets (~4.2 KB of kernel each, two a
    /// connection here) and user space need more. At most 0.95; the rest
    /// is the margin for queued broadcast messages and the page cache.
    #[arg(long, default_value_t = crate::doctor::checks::MEMORY_SHARE, value_parser = crate::doctor::checks::parse_memory_share)]
    pub memory_share: f64,

    /// Broadcasts of 32 bytes to all members per room sample, one at a time
    /// (each once every member has the one before).
    #[arg(long, default_value_t = 5)]
    pub broadcasts: u64,

    /// Active echo connections, one set of echo runs per value (comma-separated).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    pub echo_conns: Vec<usize>,

    /// How long each echo sample lasts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub echo_duration: Duration,

    /// Open-loop echo: total messages per second, spread over the
    /// connections. Default: a quarter of the closed loop's median at that
    /// connection count.
    #[arg(long)]
    pub echo_rate: Option<f64>,

    /// Churn (open, upgrade, echo once, close): the first rate the search
    /// for the highest sustained rate tries, connections/s. It doubles
    /// while every bound holds, halves while none does, then bisects to
    /// within 10 %.
    #[arg(long, default_value_t = 10_000.0)]
    pub churn_rate: f64,

    /// How long each churn step lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub churn_duration: Duration,

    /// A churn rate is sustained when setup (connect + upgrade) p99 stays
    /// at most this, at most 1 % of arrivals are dropped, none fail, and
    /// 95 % of the rate completes.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub churn_max_p99: Duration,

    /// Most churn rates tried per server. A rate whose run meets every
    /// bound runs again until it has --samples runs, and is sustained only
    /// if all of them do (1 with --samples 1: one run at --churn-rate, judged).
    #[arg(long, default_value_t = 6)]
    pub churn_steps: usize,

    /// Handshakes: the churn rate every run asks for, connections/s. Low
    /// enough that every kind keeps up, so each does the same work but the
    /// handshake; each run lasts --churn-duration.
    #[arg(long, default_value_t = 1_000.0)]
    pub handshake_rate: f64,

    /// Handshakes over TLS: certificate key and key-exchange group pairs,
    /// KEY/GROUP (keys: ecdsa-p256, ed25519, rsa2048; groups: x25519, p256,
    /// p384), each measured with full and with resumed handshakes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ecdsa-p256/x25519,rsa2048/x25519,ecdsa-p256/p256"
    )]
    pub tls_variants: Vec<handshakes::TlsVariant>,

    /// Add a reconnect storm to the jobs (`--measure storm`): hold
    /// --storm-conns connections, reset them all at once, and bring each
    /// back at once, then with --storm-backoff; --samples runs of each.
    #[arg(long)]
    pub storm: bool,

    /// Storm: connections held, then lost at once. Default: --conns.
    #[arg(long, value_parser = crate::units::parse_count)]
    pub storm_conns: Option<usize>,

    /// Storm: the backoff of the second policy, BASE,MAX.
    #[arg(long, default_value = "100ms,5s", value_parser = crate::load::storm::parse_backoff)]
    pub storm_backoff: crate::load::storm::Backoff,

    /// Storm: longest a run waits for every connection to come back.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub storm_duration: Duration,

    /// Overload: messages per second the publisher sends to --conns members.
    #[arg(long, default_value_t = 100.0)]
    pub overload_rate: f64,

    /// Overload: the size of each message.
    #[arg(long, default_value = "1KiB", value_parser = crate::units::parse_size)]
    pub overload_size: usize,

    /// Overload: how long the publisher sends.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub overload_duration: Duration,

    /// Backplane: instances that share the room through Redis.
    #[arg(long, default_value_t = 3)]
    pub backplane_instances: usize,

    /// An extra argument for every `fanout serve` the bench starts, e.g.
    /// `--serve-arg=--max-backlog-total=64MiB` (repeatable; the results
    /// record the command line and each server's plan).
    #[arg(long, allow_hyphen_values = true)]
    pub serve_arg: Vec<String>,

    /// Instead of the jobs, soak each server for this long (e.g. 10m):
    /// cycles of a room with a sustained broadcast, echo and churn
    /// together, then a storm, each cycle checked for leaks (connections,
    /// fd tables, the machine's sockets, memory) and lost deliveries.
    /// Scaled from --conns: half of it room members, a twentieth echo, a
    /// quarter the storm.
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<Duration>,

    /// Soak: how long each cycle's room, echo and churn run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub soak_cycle: Duration,

    /// Which jobs to measure (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "room,echo,churn"
    )]
    pub measure: Vec<Job>,

    /// fanout backends to measure, each a whole bench, interleaved in one run
    /// (comma-separated): `--backends epoll,uring` prints one table of both.
    /// Default: epoll, unless --server-cmd names the servers.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Option<Vec<BackendKind>>,

    /// Another server to measure, in the same run and table: `NAME=CMD` (or
    /// just `CMD`, named `other`), a command that listens on the address
    /// given as its last argument and prints `ready ADDR` (e.g. the
    /// tokio-tungstenite reference server,
    /// `ref=target/release/examples/reference_server`). Its whole process
    /// tree is measured and stopped. Repeatable; with --backends, both join.
    #[arg(long, value_parser = parse_server_cmd)]
    pub server_cmd: Vec<ServerCmd>,

    /// Measure every backend twice, side by side: plain (ws://) and over
    /// TLS (wss://: `fanout serve --tls-self-signed`, the load pinned to its
    /// certificate), named `B+tls`, with the ratios TLS ÷ plain. Add
    /// --serve-arg=--tls-state=rustls for rustls's own state.
    #[arg(long)]
    pub tls: bool,

    /// Measure every backend with each permessage-deflate mode, side by
    /// side (`fanout serve --deflate MODE`, named `B+deflate-MODE`; `off`
    /// is the backend as it is), with the ratios to `off`. Every load then
    /// offers deflate as browsers do and sends JSON-like payloads
    /// (`fanout load --deflate --payload json`), the off server declining;
    /// the room job also reads memory once the broadcasts are over (what
    /// a connection keeps after one has gone through) and the bytes on the
    /// wire per delivery. E.g. --deflate off,shared,per-connection.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub deflate: Vec<DeflateMode>,

    /// Message size of the room's broadcasts and the echo loads, bytes (at
    /// least 16: sequence number and timestamp). Compression needs room to
    /// work: --deflate runs here use 1KiB.
    #[arg(long, default_value = "32", value_parser = crate::units::parse_size)]
    pub size: usize,

    /// Where results go: DIR/<date>-<host>/<name>.json.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,

    /// Result file name (default: bench-<server>-<conns>).
    #[arg(long)]
    pub name: Option<String>,

    /// Print the results without writing a file.
    #[arg(long)]
    pub no_write: bool,

    #[command(flatten)]
    pub ui: crate::ui::UiArgs,

    /// The live page (--ui), once started.
    #[arg(skip)]
    pub live: Option<crate::ui::Live>,

    /// Run the bench at each of these N instead of --conns (e.g.
    /// 10k,50k,100k,250k,500k) and fit how cost grows: the server's memory
    /// as fixed bytes + bytes per connection, the broadcast's last delivery
    /// as fixed ms + time per member. Each N writes its own file
    /// (<name>-<N>.json), the fit goes to <name>-sweep.json. Echo runs at
    /// each N with min(N, the largest --echo-conns) connections; churn,
    /// which does not depend on N, is left out.
    #[arg(long, value_delimiter = ',', value_parser = crate::units::parse_count)]
    pub sweep: Vec<usize>,

    /// Fit a sweep from result files already written (e.g. the <name>-<N>.json
    /// of an earlier --sweep), without running anything; the fit is written
    /// beside the first as <name>-sweep.json.
    #[arg(long, value_delimiter = ',')]
    pub sweep_from: Vec<PathBuf>,

    /// Capacity at a service level: step N up from --slo-start (×--slo-step,
    /// up to --conns) with every server in each step, drop a server once it
    /// misses, and report the largest N each met, with the curve. A target
    /// is METRIC pNN<=TIME: "broadcast p95<=500ms" (each broadcast's last
    /// delivery; at least 20 broadcasts per step), "echo p99<=20ms" (echo
    /// at N connections), "connect p99<=1s" (connect + upgrade in the ramp).
    #[arg(long, value_parser = slo::parse)]
    pub slo: Option<slo::Slo>,

    /// The first N an --slo run tries.
    #[arg(long, default_value = "1000", value_parser = crate::units::parse_count)]
    pub slo_start: usize,

    /// Each --slo step multiplies N by this.
    #[arg(long, default_value_t = 2.0)]
    pub slo_step: f64,
}

/// One server a bench measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measured {
    /// `fanout serve --backend B`.
    Fanout(BackendKind),
    /// `fanout serve --backend B --tls-self-signed` (--tls), loaded over wss://.
    FanoutTls(BackendKind),
    /// `fanout serve --backend B --deflate MODE` (--deflate, not off).
    FanoutDeflate(BackendKind, DeflateMode),
    /// `--server-cmd`.
    Command(ServerCmd),
}

/// `--server-cmd NAME=CMD`: a server to start, and its name in the results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCmd {
    pub name: String,
    pub command: String,
}

/// `NAME=CMD`, or a bare `CMD` named `other`. A name is letters, digits,
/// `-`, `_` and `.`, so a command with `=` in its arguments needs a name.
fn parse_server_cmd(text: &str) -> Result<ServerCmd, String> {
    let named = text.split_once('=').filter(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    let (name, command) = named.unwrap_or(("other", text));
    if command.trim().is_empty() {
        return Err("the command is empty".into());
    }
    Ok(ServerCmd {
        name: name.to_string(),
        command: command.trim().to_string(),
    })
}

impl Measured {
    /// `epoll`, `uring`, or the --server-cmd's name.
    pub fn name(&self) -> String {
        match self {
            Measured::Fanout(backend) => backend.name().to_string(),
            Measured::FanoutTls(backend) => format!("{}+tls", backend.name()),
            Measured::FanoutDeflate(backend, mode) => {
                format!("{}+deflate-{}", backend.name(), deflate_name(*mode))
            }
            Measured::Command(cmd) => cmd.name.clone(),
        }
    }

    /// Whether it is a fanout server started speaking TLS (`--tls`).
    pub fn speaks_tls(&self) -> bool {
        matches!(self, Measured::FanoutTls(_))
    }

    /// Bytes of one connection's slab slot (fanout only).
    pub fn slot_bytes(&self) -> Option<usize> {
        match self {
            Measured::Fanout(backend)
            | Measured::FanoutTls(backend)
            | Measured::FanoutDeflate(backend, _) => crate::backend::slot_bytes(*backend),
            Measured::Command(_) => None,
        }
    }
}

/// The capacity a bench asks of a server (and of its floor) for `conns`
/// connections: 1 % and 100 more, for the publisher and stragglers.
pub fn server_max_conns(conns: usize) -> usize {
    conns + conns / 100 + 100
}

impl BenchConfig {
    /// Everything that can be checked before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.conns < 2 || self.sweep.iter().any(|&n| n < 2) {
            return Err(
                "--conns and --sweep sizes must be at least 2 (memory is a slope from N/2 to N)"
                    .into(),
            );
        }
        if self.samples == 0 {
            return Err("--samples must be at least 1".into());
        }
        if self.tls && self.measure.contains(&Job::Backplane) {
            return Err("--tls does not measure the backplane yet (its instances would each make their own certificate); leave backplane out of --measure".into());
        }
        if !self.deflate.is_empty() && self.tls {
            return Err("--deflate and --tls are measured one at a time: leave one out".into());
        }
        if !self.deflate.is_empty() && self.backends().is_empty() {
            return Err("--deflate measures fanout backends: give --backends".into());
        }
        if self
            .deflate
            .iter()
            .any(|mode| self.deflate.iter().filter(|m| *m == mode).count() > 1)
        {
            return Err("--deflate names a mode twice".into());
        }
        if self.tls && self.backends().is_empty() {
            return Err(
                "--tls measures fanout backends plain and over TLS: give --backends".into(),
            );
        }
        if !(1..=crate::load::shard::MAX_PER_MESSAGE).contains(&self.broadcasts) {
            return Err(format!(
                "--broadcasts must be 1 to {}",
                crate::load::shard::MAX_PER_MESSAGE
            ));
        }
        if self.echo_conns.contains(&0) {
            return Err("--echo-conns values must be at least 1".into());
        }
        if self.echo_duration.is_zero() || self.churn_duration.is_zero() {
            return Err("durations must be positive".into());
        }
        if self.churn_rate <= 0.0 || self.echo_rate.is_some_and(|r| r <= 0.0) {
            return Err("rates must be positive".into());
        }
        if self.storm_conns.is_some_and(|n| n == 0 || n > self.conns) {
            return Err(
                "--storm-conns must be between 1 and --conns (the servers are planned for --conns)"
                    .into(),
            );
        }
        if self.overload_rate <= 0.0
            || self.overload_duration.is_zero()
            || self.overload_size < crate::load::payload::HEADER_LEN
        {
            return Err(format!(
                "--overload-rate and --overload-duration must be more than 0 and --overload-size at least {} bytes",
                crate::load::payload::HEADER_LEN
            ));
        }
        if self.soak_cycle.is_zero() || self.soak.is_some_and(|soak| soak < self.soak_cycle) {
            return Err("--soak-cycle must be more than 0 and --soak at least one cycle".into());
        }
        if self.size < crate::load::payload::HEADER_LEN {
            return Err(format!(
                "--size must be at least {} bytes (sequence number and timestamp)",
                crate::load::payload::HEADER_LEN
            ));
        }
        if self.churn_steps == 0 {
            return Err("--churn-steps must be at least 1".into());
        }
        if self.measure.is_empty() {
            return Err("--measure names no job".into());
        }
        if self.backends.as_ref().is_some_and(Vec::is_empty) {
            return Err("--backends names no backend".into());
        }
        let mut seen = Vec::new();
        for name in self.measured().iter().map(Measured::name) {
            if seen.contains(&name) {
                return Err(format!("two servers are named {name}: name each --server-cmd (NAME=CMD) apart from the others and from the backends"));
            }
            seen.push(name);
        }
        Ok(())
    }

    /// The fanout backends to measure: --backends, or epoll when no
    /// --server-cmd names the servers.
    pub fn backends(&self) -> Vec<BackendKind> {
        match &self.backends {
            Some(backends) => backends.clone(),
            None if self.server_cmd.is_empty() => vec![BackendKind::Epoll],
            None => Vec::new(),
        }
    }

    /// The servers to measure, in order: the backends (each plain, then
    /// over TLS with --tls), then the commands.
    pub fn measured(&self) -> Vec<Measured> {
        let tls = self.tls;
        let deflate = self.deflate.clone();
        let backends = self.backends().into_iter().flat_map(move |backend| {
            if !deflate.is_empty() {
                let each = deflate.iter().map(move |&mode| match mode {
                    DeflateMode::Off => Measured::Fanout(backend),
                    mode => Measured::FanoutDeflate(backend, mode),
                });
                return each.collect::<Vec<_>>();
            }
            let secure = tls.then_some(Measured::FanoutTls(backend));
            std::iter::once(Measured::Fanout(backend))
                .chain(secure)
                .collect()
        });
        let commands = self.server_cmd.iter().cloned().map(Measured::Command);
        backends.chain(commands).collect()
    }

    /// Whether the loads offer permessage-deflate (and send JSON-like text).
    pub fn deflate_loads(&self) -> bool {
        !self.deflate.is_empty()
    }

    fn measures(&self, job: Job) -> bool {
        self.measure.contains(&job) || (job == Job::Storm && self.storm)
    }
}

/// Everything one bench run measured, as written to results/.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BenchResult {
    /// The command line that produced this file.
    pub command: String,
    /// When the run started.
    pub time_utc: String,
    /// How long the whole run took, seconds.
    pub seconds: f64,
    /// The machine, the fanout revision and the sysctls that matter.
    pub machine: Machine,
    /// The floor servers' plan lines (one per floor: room, echo).
    pub floor_servers: Vec<String>,
    /// N: the connections every room phase asked for.
    pub conns: usize,
    /// Samples per figure and side.
    pub samples: usize,
    /// TCP sockets on the machine before the run started.
    pub baseline: Settled,
    /// Every measured server (fanout backend, or --server-cmd), in order.
    pub servers: Vec<ServerResult>,
    /// Every phase in the order run (floor and servers interleaved).
    pub phases: Vec<PhaseRecord>,
    /// Ratios on the wrong side of 1 beyond the samples' spread.
    pub suspects: Vec<String>,
    /// Anything that makes a figure less than it seems, in words.
    pub warnings: Vec<String>,
}

impl BenchResult {
    /// A result file, or an error saying it is not one this version reads.
    pub fn read(path: &Path) -> anyhow::Result<BenchResult> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a fanout bench result this version reads (written by an older fanout? run fanout bench again)",
                path.display()
            )
        })
    }
}

/// Everything one measured server got, each figure against the same floors.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerResult {
    /// `epoll`, `uring`, or `other` (--server-cmd).
    pub name: String,
    /// Its plan line (fanout) or its command.
    pub server: String,
    /// How many of the N connections it held, and why not all.
    pub reach: Option<room::Reach>,
    /// Connections opened per second during the ramp, against the floor.
    pub ramp: Option<Compared>,
    /// Connect + upgrade latency, median, per measured sample, ms.
    pub connect_p50_ms: Option<Spread>,
    /// Connect + upgrade latency, p99, per measured sample, ms.
    pub connect_p99_ms: Option<Spread>,
    /// Memory per connection: user space and kernel, as slopes from N/2 to N.
    pub memory: Option<Memory>,
    /// The room: one broadcast at a time to every member.
    pub broadcast: Option<BroadcastBench>,
    /// Echo at each connection count: closed loop against the floor, then open loop.
    pub echo: Vec<EchoBench>,
    /// Connections that open, echo once and close: the highest rate
    /// sustained, with every rate tried (over TLS: resuming sessions).
    pub churn: Option<churn::Churn>,
    /// Over TLS, the same with every handshake full (`--tls-resume off`).
    #[serde(default)]
    pub churn_full_tls: Option<churn::Churn>,
    /// A reconnect storm, at once and with a backoff.
    #[serde(default)]
    pub storm: Option<storm::StormBench>,
    /// What opening a connection costs the server, per CPU-second.
    #[serde(default)]
    pub handshakes: Option<handshakes::HandshakeBench>,
    /// A soak: cycles of everything at once, checked for leaks.
    #[serde(default)]
    pub soak: Option<soak::Soak>,
    /// A broadcast the members cannot keep up with.
    #[serde(default)]
    pub overload: Option<overload::OverloadBench>,
    /// A room across instances through Redis, against one instance.
    #[serde(default)]
    pub backplane: Option<backplane::BackplaneBench>,
}

pub fn bench(mut config: BenchConfig) -> anyhow::Result<()> {
    config.validate().map_err(crate::usage::UsageError)?;
    crate::process::stop_servers_on_signal()?;
    config.live = config.ui.open("bench")?;
    let outcome = bench_all(&config);
    // The tables went to the page as the bench printed them.
    config
        .ui
        .finish(config.live.as_ref(), &outcome, |_| String::new(), "bench");
    outcome
}

/// The bench, a sweep, an SLO search or a soak, as the options say.
fn bench_all(config: &BenchConfig) -> anyhow::Result<()> {
    let command = crate::json::command_line();
    if !config.sweep.is_empty() && config.slo.is_some() {
        return Err(crate::usage::UsageError(
            "--sweep and --slo each choose the sizes: give one".into(),
        )
        .into());
    }
    if let Some(slo) = &config.slo {
        return slo_bench(config, command, slo);
    }
    if config.soak.is_some() {
        // The soak is a run of its own: no other job beside it.
        let mut soak = config.clone();
        soak.measure.clear();
        soak.storm = false;
        return bench_one(&soak, command).map(|_| ());
    }
    if !config.sweep_from.is_empty() {
        return refit_sweep(config, command);
    }
    if !config.sweep.is_empty() {
        return sweep_bench(config, command);
    }
    bench_one(config, command).map(|_| ())
}

/// The bench at each N of --sweep, then the fitted growth across them.
fn sweep_bench(config: &BenchConfig, command: String) -> anyhow::Result<()> {
    let mut sizes = config.sweep.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let base = config
        .name
        .clone()
        .unwrap_or_else(|| format!("sweep-{}", server_names(config)));
    let largest_echo = config.echo_conns.iter().copied().max().unwrap_or(1000);
    let mut runs = Vec::new();
    let mut dir = None;
    for (i, &n) in sizes.iter().enumerate() {
        step(&format!(
            "sweep point {} of {}: N = {n}",
            i + 1,
            sizes.len()
        ));
        let mut one = config.clone();
        one.conns = n;
        one.sweep.clear();
        one.name = Some(format!("{base}-{n}"));
        one.echo_conns = vec![n.min(largest_echo)];
        one.measure.retain(|job| {
            !matches!(
                job,
                Job::Churn | Job::Storm | Job::Overload | Job::Backplane
            )
        });
        one.storm = false;
        if one.measure.is_empty() {
            one.measure.push(Job::Room);
        }
        let (result, path) = bench_one(&one, format!("{command} (sweep point N = {n})"))?;
        if let Some(path) = path {
            dir = path.parent().map(Path::to_path_buf);
        }
        runs.push((format!("{base}-{n}"), result));
    }
    let swept = sweep::sweep(command, &runs);
    print!("{}", sweep::text(&swept));
    if let Some(dir) = dir {
        write_beside(&dir, &format!("{base}-sweep"), &swept)?;
    }
    Ok(())
}

/// `--sweep-from`: the fit over result files already written.
fn refit_sweep(config: &BenchConfig, command: String) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &config.sweep_from {
        let result = BenchResult::read(path)?;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        runs.push((name, result));
    }
    runs.sort_by_key(|(_, r)| r.conns);
    let base = config.name.clone().unwrap_or_else(|| {
        let first = &runs[0].0;
        first
            .rsplit_once('-')
            .map_or(first.clone(), |(base, _)| base.to_string())
    });
    let swept = sweep::sweep(command, &runs);
    print!("{}", sweep::text(&swept));
    let dir = config.sweep_from[0].parent().unwrap_or(Path::new("."));
    write_beside(dir, &format!("{base}-sweep"), &swept)
}

/// Step N up until every server misses the target (or N reaches --conns).
fn slo_bench(config: &BenchConfig, command: String, target: &slo::Slo) -> anyhow::Result<()> {
    if config.slo_step <= 1.0 || config.slo_step.is_nan() {
        return Err(crate::usage::UsageError("--slo-step must be more than 1".into()).into());
    }
    let sizes = slo::ladder(config.slo_start.max(2), config.slo_step, config.conns);
    let base = config
        .name
        .clone()
        .unwrap_or_else(|| format!("slo-{}", server_names(config)));
    let mut current = config.clone();
    current.slo = None;
    current.measure = match target.metric {
        slo::Metric::Echo => vec![Job::Echo],
        slo::Metric::Broadcast | slo::Metric::Connect => vec![Job::Room],
    };
    if target.metric == slo::Metric::Broadcast {
        current.broadcasts = current
            .broadcasts
            .max(slo::MIN_BROADCASTS.div_ceil(current.samples as u64));
    }
    let mut steps = Vec::new();
    let mut dir = None;
    let mut machine = None;
    for (i, &n) in sizes.iter().enumerate() {
        step(&format!(
            "slo step {} of at most {}: N = {n}, servers {}",
            i + 1,
            sizes.len(),
            server_names(&current)
        ));
        let mut one = current.clone();
        one.conns = n;
        one.name = Some(format!("{base}-{n}"));
        one.echo_conns = vec![n];
        let (result, path) = bench_one(&one, format!("{command} (slo step N = {n})"))?;
        if let Some(path) = path {
            dir = path.parent().map(Path::to_path_buf);
        }
        machine.get_or_insert_with(|| result.machine.clone());
        let judged = slo::judge(target, n, format!("{base}-{n}"), &result);
        let missed: Vec<String> = judged
            .servers
            .iter()
            .filter(|m| !m.met)
            .map(|m| m.server.clone())
            .collect();
        steps.push(judged);
        current.backends = Some(
            current
                .backends()
                .into_iter()
                .filter(|b| !missed.iter().any(|m| m == b.name()))
                .collect(),
        );
        current.server_cmd.retain(|c| !missed.contains(&c.name));
        if current.measured().is_empty() {
            break;
        }
    }
    let result = slo::SloResult {
        slo: target.clone(),
        broadcasts_per_step: current.broadcasts * current.samples as u64,
        command,
        machine,
        verdicts: slo::verdicts(&steps),
        steps,
    };
    print!("{}", slo::text(&result));
    if let Some(dir) = dir {
        write_beside(&dir, &format!("{base}-slo"), &result)?;
    }
    Ok(())
}

/// One bench at --conns: run, print, write. Returns the result and the
/// file it went to.
fn bench_one(
    config: &BenchConfig,
    command: String,
) -> anyhow::Result<(BenchResult, Option<PathBuf>)> {
    let machine = machine::fingerprint();
    let preflight = preflight::check(
        config.conns,
        &machine,
        &config.backends(),
        config.memory_share,
        config.tls,
        &config.deflate,
    );
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
    for backend in config.backends() {
        crate::backend::probe(backend)
            .map_err(|missing| crate::usage::UsageError(missing.to_string()))?;
    }
    let result = run(config, command, machine, preflight.warnings)?;
    let table = text::text(&result);
    print!("{table}");
    if let Some(live) = &config.live {
        live.publish(&serde_json::json!({ "kind": "table", "text": table }));
    }
    let mut path = None;
    if !config.no_write {
        let written = write(config, &result)?;
        println!("written: {}", written.display());
        path = Some(written);
    }
    Ok((result, path))
}

fn step(what: &str) {
    eprintln!("fanout bench: {what}");
}

/// How many phases the run will have, for the progress lines.
fn phase_count(config: &BenchConfig) -> usize {
    let room = if config.measures(Job::Room) { 2 } else { 0 };
    let echo = if config.measures(Job::Echo) {
        3 * config.echo_conns.len()
    } else {
        0
    };
    let servers = config.measured().len();
    let per_sample = room / 2 * (1 + servers) + echo / 3 * (1 + 2 * servers);
    let churn = match config.measures(Job::Churn) {
        true => churn_phases(config),
        false => 0,
    };
    // Jobs that run more over TLS: churn and the storm with and without
    // resumption, the handshakes full and resumed per variant.
    let handshake_setup = handshake_setup(config);
    let per_server: usize = config
        .measured()
        .iter()
        .map(|measured| {
            let tls = measured.speaks_tls();
            let churn = match config.measures(Job::Churn) && tls {
                true => churn_phases(config),
                false => 0,
            };
            let storm = match config.measures(Job::Storm) {
                true => 2 * config.samples * if tls { 2 } else { 1 },
                false => 0,
            };
            let handshakes = match config.measures(Job::Handshakes) {
                true => handshake_setup.phases(measured),
                false => 0,
            };
            churn + storm + handshakes
        })
        .sum();
    let soak = usize::from(config.soak.is_some());
    let overload = match config.measures(Job::Overload) {
        true => config.samples,
        false => 0,
    };
    let backplane = match config.measures(Job::Backplane) {
        true => 2 * config.samples,
        false => 0,
    };
    per_sample * config.samples + servers * (churn + soak + overload + backplane) + per_server
}

fn run(
    config: &BenchConfig,
    command: String,
    machine: Machine,
    mut warnings: Vec<String>,
) -> anyhow::Result<BenchResult> {
    let time_utc = utc_now();
    let started = Instant::now();
    step("waiting for the machine's TCP sockets to be quiet (the baseline)");
    let baseline = settle::wait_quiet(Duration::from_secs(1), Duration::from_secs(60));
    if !baseline.settled {
        warnings.push(format!(
            "the machine's TCP sockets were still changing after {:.0} s: {} in use, {} in TIME_WAIT when the run started",
            baseline.seconds, baseline.sockets.tcp_inuse, baseline.sockets.tcp_time_wait
        ));
    }
    if config.samples < 3 {
        warnings.push(format!(
            "{} sample(s) per figure: too few for a spread worth publishing (use at least 3)",
            config.samples
        ));
    }
    let mut phases = Phases::new(config, baseline.sockets, phase_count(config));
    if let Some(live) = &config.live {
        let (conns, total) = (config.conns as u64, phase_count(config));
        live.publish(&crate::ui::feed::plan(
            "bench",
            &command,
            conns,
            total,
            &phases.names(),
        ));
    }
    let mut rooms: Vec<Option<room::RoomResults>> = match config.measures(Job::Room) {
        true => room::run(&mut phases, config.conns, config.broadcasts, config.samples)?
            .into_iter()
            .map(Some)
            .collect(),
        false => phases.servers.iter().map(|_| None).collect(),
    };
    let mut echoes: Vec<Vec<EchoBench>> = vec![Vec::new(); phases.servers.len()];
    if config.measures(Job::Echo) {
        for &conns in &config.echo_conns {
            let per_server = echo::run(
                &mut phases,
                conns,
                config.echo_duration,
                config.samples,
                config.echo_rate,
            )?;
            for (all, these) in echoes.iter_mut().zip(per_server) {
                all.extend(these);
            }
        }
    }
    let mut churns = each_server(
        &mut phases,
        config.measures(Job::Churn),
        |phases, server| churn_search(phases, config, server, None),
    )?;
    let mut full_tls_churns = each_server(
        &mut phases,
        config.measures(Job::Churn),
        |phases, server| match phases.servers[server].speaks_tls() {
            true => churn_search(phases, config, server, Some(OnOff::Off)).map(Some),
            false => Ok(None),
        },
    )?;
    let storm_setup = storm::StormSetup {
        conns: config.storm_conns.unwrap_or(config.conns),
        backoff: config.storm_backoff,
        bound: config.storm_duration,
        samples: config.samples,
    };
    let mut storms = each_server(
        &mut phases,
        config.measures(Job::Storm),
        |phases, server| storm::run(phases, server, &storm_setup),
    )?;
    let handshake_setup = handshake_setup(config);
    let mut handshakes = each_server(
        &mut phases,
        config.measures(Job::Handshakes),
        |phases, server| handshakes::run(phases, server, &handshake_setup),
    )?;
    let overload_setup = overload::OverloadSetup {
        members: config.conns,
        rate: config.overload_rate,
        size: config.overload_size,
        duration: config.overload_duration,
        samples: config.samples,
    };
    let mut overloads = each_server(
        &mut phases,
        config.measures(Job::Overload),
        |phases, server| overload::run(phases, server, &overload_setup),
    )?;
    let backplane_job = backplane::BackplaneJob {
        members: config.conns,
        messages: config.broadcasts,
        instances: config.backplane_instances,
        samples: config.samples,
    };
    let mut backplanes = each_server(
        &mut phases,
        config.measures(Job::Backplane),
        |phases, server| backplane::run(phases, server, &backplane_job),
    )?;
    let soak_setup = soak::SoakSetup {
        duration: config.soak.unwrap_or_default(),
        cycle: config.soak_cycle,
        conns: config.conns,
    };
    let mut soaks = each_server(&mut phases, config.soak.is_some(), |phases, server| {
        soak::run(phases, server, &soak_setup)
    })?;
    for record in &phases.records {
        let label = record.label();
        warnings.extend(record.warnings.iter().map(|w| format!("{label}: {w}")));
    }
    let names = phases.names();
    let servers: Vec<ServerResult> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let room = rooms[i].take();
            ServerResult {
                name,
                server: phases.server_plans[i].clone(),
                reach: room.as_ref().map(|r| r.reach.clone()),
                connect_p50_ms: room.as_ref().map(|r| r.connect_p50_ms),
                connect_p99_ms: room.as_ref().map(|r| r.connect_p99_ms),
                ramp: room.as_ref().map(|r| r.ramp.clone()),
                memory: room.as_ref().and_then(|r| r.memory.clone()),
                broadcast: room.map(|r| r.broadcast),
                echo: std::mem::take(&mut echoes[i]),
                churn: churns[i].take(),
                churn_full_tls: full_tls_churns[i].take().flatten(),
                storm: storms[i].take(),
                handshakes: handshakes[i].take(),
                soak: soaks[i].take(),
                overload: overloads[i].take(),
                backplane: backplanes[i].take(),
            }
        })
        .collect();
    let suspects = servers
        .iter()
        .flat_map(|server| {
            let mut compared: Vec<&Compared> = Vec::new();
            compared.extend(&server.ramp);
            compared.extend(server.broadcast.iter().map(|b| &b.last_delivery_ms));
            compared.extend(server.echo.iter().filter_map(|e| e.vs_floor.as_ref()));
            compared
                .into_iter()
                .filter_map(|c| c.ratio.suspect.clone())
                .map(|suspect| format!("{}: {suspect}", server.name))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(BenchResult {
        command,
        time_utc,
        seconds: started.elapsed().as_secs_f64(),
        machine,
        floor_servers: phases.floor_plans.clone(),
        conns: config.conns,
        samples: config.samples,
        baseline,
        servers,
        phases: phases.records,
        suspects,
        warnings,
    })
}

/// The highest churn rate one server sustains: one phase (a fresh server)
/// per run, as [`churn::next`] decides. Churn has no floor: its figure is
/// whether a rate is met, and at what setup latency. `resume`: over TLS,
/// whether the clients resume sessions (default: they do).
fn churn_search(
    phases: &mut Phases,
    config: &BenchConfig,
    server: usize,
    resume: Option<OnOff>,
) -> anyhow::Result<churn::Churn> {
    let job = match resume {
        Some(OnOff::Off) => "churn, full TLS,",
        _ => "churn",
    };
    let bounds = churn::ChurnBounds::with_setup_p99_ms(config.churn_max_p99.as_secs_f64() * 1e3);
    let mut steps: Vec<churn::ChurnStep> = Vec::new();
    let mut runs = 0;
    let stopped = loop {
        let index = match churn::next(
            &steps,
            config.churn_rate,
            config.churn_steps,
            config.samples,
        ) {
            churn::Next::Rate(rate) => {
                steps.push(churn::ChurnStep::new(rate));
                steps.len() - 1
            }
            churn::Next::Again(index) => index,
            churn::Next::Stop(why) => break why,
        };
        let rate = steps[index].asked_per_s;
        let sample = steps[index].runs.len() + 1;
        let (report, cpu) = phases.run(
            &format!("{job} {rate}/s"),
            Target::Server(server),
            FloorRoute::Echo,
            sample,
            |running| {
                let mut load = running.load_config(ScenarioKind::Churn, "/echo");
                load.rate = Some(rate);
                load.duration = config.churn_duration;
                if let Some(resume) = resume {
                    load.tls.tls_resume = resume;
                }
                let report = crate::load::run(&load)?;
                let churn = report.churn.clone().context("no churn section")?;
                let value = (churn, report.client.cpu_share);
                Ok(phase::Outcome { value, report })
            },
        )?;
        steps[index].add(&bounds, report, cpu);
        runs += 1;
    };
    phases.expect(churn_phases(config), runs);
    Ok(churn::Churn::Search(churn::search(bounds, steps, stopped)))
}

fn handshake_setup(config: &BenchConfig) -> handshakes::HandshakeSetup {
    handshakes::HandshakeSetup {
        rate: config.handshake_rate,
        duration: config.churn_duration,
        variants: config.tls_variants.clone(),
        samples: config.samples,
    }
}

/// Churn phases a server usually takes: every step once, and the two
/// rates sustained on the way up again until each has --samples runs.
fn churn_phases(config: &BenchConfig) -> usize {
    config.churn_steps + 2 * config.samples.saturating_sub(1)
}

fn write(config: &BenchConfig, result: &BenchResult) -> anyhow::Result<PathBuf> {
    let dir = config.out.join(format!(
        "{}-{}",
        &result.time_utc[..10],
        result.machine.hostname
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let server = server_names(config);
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("bench-{server}-{}", config.conns));
    let path = dir.join(format!("{name}.json"));
    crate::json::write(&path, result)?;
    Ok(path)
}

/// A sweep's or ladder's own file, beside its runs' files: `DIR/NAME.json`.
fn write_beside(dir: &Path, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.json"));
    crate::json::write(&path, value)?;
    println!("written: {}", path.display());
    Ok(())
}

/// `fanout-epoll`, `fanout-epoll-uring`, `fanout-epoll-ref`, `ref`: the
/// measured servers, for a file name.
fn server_names(config: &BenchConfig) -> String {
    let names: Vec<String> = config.measured().iter().map(Measured::name).collect();
    match config.backends().is_empty() {
        true => names.join("-"),
        false => format!("fanout-{}", names.join("-")),
    }
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

/// Run `job` on each server in turn when the bench `wanted` it; otherwise
/// nothing for each.
fn each_server<T>(
    phases: &mut Phases,
    wanted: bool,
    mut job: impl FnMut(&mut Phases, usize) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<Option<T>>> {
    let servers = phases.servers.len();
    if !wanted {
        return Ok((0..servers).map(|_| None).collect());
    }
    (0..servers)
        .map(|server| job(phases, server).map(Some))
        .collect()
}

/// A deflate mode as the command line spells it (`per-connection`).
pub fn deflate_name(mode: DeflateMode) -> String {
    use clap::ValueEnum;
    mode.to_possible_value()
        .map_or_else(|| format!("{mode:?}"), |v| v.get_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_commands_are_named_or_called_other() {
        let named = parse_server_cmd("ref=target/x --flag=1").unwrap();
        assert_eq!(
            (named.name.as_str(), named.command.as_str()),
            ("ref", "target/x --flag=1")
        );
        // `=` inside the arguments of an unnamed command is not a name.
        let bare = parse_server_cmd("target/x --flag=1").unwrap();
        assert_eq!(
            (bare.name.as_str(), bare.command.as_str()),
            ("other", "target/x --flag=1")
        );
        assert!(parse_server_cmd("ref=  ").is_err());
    }
    use clap::Parser;

    fn config(args: &[&str]) -> BenchConfig {
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            bench: BenchConfig,
        }
        Args::parse_from(std::iter::once("bench").chain(args.iter().copied())).bench
    }

    #[test]
    fn utc_now_is_well_formed() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
        let year: u32 = now[..4].parse().unwrap();
        assert!(year >= 2024);
    }

    #[test]
    fn bad_options_are_refused_before_anything_runs() {
        assert!(config(&[]).validate().is_ok());
        for (args, says) in [
            (&["--conns", "0"][..], "--conns"),
            (&["--conns", "1"], "--conns"),
            (&["--samples", "0"], "--samples"),
            (&["--broadcasts", "0"], "--broadcasts"),
            (&["--broadcasts", "101"], "--broadcasts"),
            (&["--echo-conns", "0"], "--echo-conns"),
            (&["--churn-rate", "0"], "rates"),
            (&["--churn-steps", "0"], "--churn-steps"),
        ] {
            let error = config(args).validate().unwrap_err();
            assert!(error.contains(says), "{args:?}: {error}");
        }
    }

    #[test]
    fn the_phase_count_follows_the_jobs() {
        assert_eq!(phase_count(&config(&[])), (2 + 3 * 2) * 3 + 6 + 4);
        assert_eq!(
            phase_count(&config(&["--measure", "room", "--samples", "5"])),
            10
        );
    }
}
