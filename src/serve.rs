//! `fanout serve`: everything it can be told, with the defaults a capacity
//! benchmark wants; the plan, the backend, and the process around the shards
//! (`server::run_shards`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{self, BackendKind};
use crate::protocol::Proto;
use crate::server::plan::{FdTables, Plan};
use crate::server::settings::Settings;
use crate::server::{plan_for, run_shards, ShardSetup};
use crate::units::{parse_duration, parse_size};
use crate::usage::UsageError;

#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on. Port 0 picks a free port; the `ready` line names it.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,

    /// Event-loop backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Epoll)]
    pub backend: BackendKind,

    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Proto::Ws)]
    pub proto: Proto,

    /// Event loops (threads), each with its own listener, poll and connection
    /// slab. Default: one per core. Raised when --max-conns needs more fd
    /// tables than that (the plan printed at start says so).
    #[arg(long)]
    pub shards: Option<usize>,

    /// Connections the server must be able to hold at once, and will: the
    /// plan makes room for them (above what one fd table holds, shards take
    /// private fd tables, unshare(CLONE_FILES), and their count rises to
    /// fit), and past them an upgrade is refused politely — HTTP 503 with
    /// Retry-After (TCP: the hello answer `error: try again later`), counted
    /// as rejected_over_capacity. Default: what one fd table holds, no limit.
    #[arg(long)]
    pub max_conns: Option<usize>,

    /// Upgrades per second the server completes, a token bucket per shard
    /// holding a tenth of a second's worth; past it, 503 with Retry-After
    /// (counted as rejected_accept_rate). Shields the connections already
    /// open from a reconnect storm. Default: no limit.
    #[arg(long)]
    pub accept_rate: Option<f64>,

    /// For tests: treat every fd table as holding only this many fds, which
    /// forces private fd tables and small shards.
    #[arg(long)]
    pub fds_per_shard: Option<usize>,

    /// Largest message accepted, whole or reassembled; larger closes with 1009.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_message: usize,

    /// Most bytes queued for one slow room member; past it the member is
    /// closed with 1008 so it cannot grow the server's memory.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub max_backlog: usize,

    /// Most bytes queued for all room members together: past it the members
    /// furthest behind are closed with 1013 (try again later) until the
    /// rest fit, so a broadcast that outruns its members cannot take the
    /// server's memory (--max-backlog bounds each member, not their sum).
    /// Each shard holds its share. Default: no limit.
    #[arg(long, value_parser = parse_size)]
    pub max_backlog_total: Option<usize>,

    /// Largest handshake request (or TCP hello); larger gets HTTP 431.
    #[arg(long, default_value = "8KiB", value_parser = parse_size)]
    pub max_handshake: usize,

    /// A connection that has not finished its handshake by then is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// How long a closing connection may take to read our close and hang up
    /// before it is dropped.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// At the first SIGINT or SIGTERM the server stops accepting and tells
    /// every client to go (WebSocket close 1001, TCP our FIN), spread
    /// evenly over this window so that they do not all come back at once;
    /// each then has --close-timeout to answer; a handshake that completes
    /// meanwhile gets 503. A second signal stops at once. The last line
    /// says how many closed cleanly. Default 0: every
    /// goodbye at once, answers awaited 100 ms.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub drain_time: Duration,

    /// Ping a WebSocket client that has sent nothing for this long, and
    /// close one that then sends nothing (not even the pong) for as long
    /// again. Found by the shard's sweep of its connections: no timer per
    /// connection, no bytes added to one. Off by default.
    #[arg(long, value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,

    /// Close a connection that sends nothing (pongs count) for this long:
    /// WebSocket with close 1001 "idle timeout", TCP with our FIN. Found by
    /// the same sweep as --ping-interval. Off by default.
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101;
    /// port 0 picks one, named on the `metrics` line before `ready`):
    /// every counter of the `stats` line, open connections and fd-table
    /// fds per shard, and memory. Its own thread sums the shards' counters
    /// per scrape: nothing on the connections' path. Off by default.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,

    /// One room across server instances: publish room messages to Redis
    /// (redis://HOST:PORT, loopback) and deliver what the other instances
    /// publish there to this one's members, each message once. Redis going
    /// away never holds up local delivery: the links reconnect with
    /// backoff and what could not cross is counted (backplane_* in stats).
    #[arg(long, value_parser = crate::backplane::parse_url)]
    pub backplane: Option<SocketAddr>,

    /// The Redis channel the instances of one room share.
    #[arg(long, default_value = "fanout", requires = "backplane")]
    pub channel: String,

    #[command(flatten)]
    pub tls: crate::tls::TlsOptions,

    #[command(flatten)]
    pub deflate: crate::server::deflate::DeflateOptions,

    /// What speaks WebSocket on `tokio` and `tokio-tpc`: tungstenite (the
    /// baseline a Rust user would write) or fanout's own session (what
    /// `tokio-uring` always runs). With --deflate on it is fanout's session
    /// whatever this says: tungstenite has no permessage-deflate.
    /// `fanout bench --deflate` runs their `off` this way too, so that the
    /// ratios compare deflate, not two WebSocket stacks.
    #[arg(long, value_enum, default_value_t = WsStack::Tungstenite)]
    pub ws_stack: WsStack,
}

/// What speaks WebSocket on the tokio backends (`--ws-stack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WsStack {
    Tungstenite,
    Fanout,
}

impl ServeConfig {
    /// The part of the options every shard core reads.
    pub fn settings(&self) -> Settings {
        Settings {
            proto: self.proto,
            max_message: self.max_message,
            max_backlog: self.max_backlog,
            max_backlog_total: self.max_backlog_total,
            max_handshake: self.max_handshake,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            max_conns: self.max_conns,
            accept_rate: self.accept_rate,
            drain_time: self.drain_time,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            tls: None,
            deflate: self.deflate.settings(),
            tungstenite: self.ws_stack == WsStack::Tungstenite
                && self.deflate.deflate == crate::protocol::deflate::DeflateMode::Off,
        }
    }
}

/// The shard plan, and the worker threads of a single-runtime backend
/// (`tokio`): one shard whose runtime has `--shards` workers (default one
/// per core), in the process's one fd table — asking for more connections
/// than that table holds is an error naming the way past it.
pub fn plan_for_backend(config: &ServeConfig) -> anyhow::Result<(Plan, usize)> {
    let kind = config.backend;
    let fd_use = backend::fd_use(kind);
    if !kind.single_fd_table() {
        let plan = plan_for(
            config.shards,
            config.max_conns,
            config.fds_per_shard,
            fd_use,
        )?;
        return Ok((plan, 0));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = config.shards.unwrap_or(cores);
    if workers == 0 {
        return Err(UsageError("--shards must be at least 1".into()).into());
    }
    let plan = plan_for(Some(1), config.max_conns, config.fds_per_shard, fd_use)?;
    if plan.fd_tables != FdTables::Shared {
        let one_table = one_table_capacity(kind)?;
        return Err(UsageError(format!(
            "the {} backend runs every connection in the process's one fd table, which holds {one_table} connections here; for more use --backend tokio-tpc (a runtime per shard, each with a private fd table)",
            kind.name()
        ))
        .into());
    }
    Ok((plan, workers))
}

/// Connections a single-runtime backend (`tokio`) can hold here: what the
/// process's one fd table has room for.
pub fn one_table_capacity(kind: BackendKind) -> anyhow::Result<usize> {
    Ok(plan_for(Some(1), None, None, backend::fd_use(kind))?.capacity)
}

pub fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let kind = config.backend;
    for (option, value) in [
        ("--ping-interval", config.ping_interval),
        ("--idle-timeout", config.idle_timeout),
    ] {
        if value.is_some_and(|value| value.is_zero()) {
            let error = format!("{option} must be more than 0 (leave it out for none)");
            return Err(UsageError(error).into());
        }
    }
    backend::probe(kind).map_err(|missing| UsageError(missing.to_string()))?;
    let backplane = config.backplane.map(|redis| {
        crate::backplane::link(crate::backplane::Config {
            redis,
            channel: config.channel.clone(),
            proto: config.proto,
        })
    });
    let (plan, workers) = plan_for_backend(&config)?;
    let runtime = match kind.single_fd_table() {
        true => format!(" (one runtime, {workers} worker threads)"),
        false => String::new(),
    };
    let mut banner = format!(
        "fanout serve: {} backend, {} protocol; {plan}{runtime}",
        kind.name(),
        format!("{:?}", config.proto).to_lowercase()
    );
    let conn_limit = plan.conns_per_shard.unwrap_or(usize::MAX);
    let mut settings = config.settings();
    if let Some(line) = config.deflate.banner_line() {
        banner = format!("{banner}\n{line}");
    }
    if matches!(kind, BackendKind::Tokio | BackendKind::TokioTpc) && config.proto == Proto::Ws {
        let stack = match settings.tungstenite {
            true => "WebSocket by tokio-tungstenite",
            false => "WebSocket by fanout's session (protocol::, server::session), not tungstenite",
        };
        banner = format!("{banner}\n{stack}");
    }
    if let Some((setup, line)) = config.tls.setup(!kind.is_task_per_connection())? {
        settings.tls = Some(setup);
        banner = format!("{banner}\n{line}");
    }
    let settings = Arc::new(settings);
    let services = crate::server::Services {
        metrics: config.metrics,
        others: backplane,
        tls_kernel: settings.tls.as_ref().map(|tls| tls.kernel),
    };
    run_shards(
        &plan,
        config.listen,
        services,
        banner,
        backend::preparer(kind, &settings, workers),
        move |prepared, start, id, hub| {
            let setup = ShardSetup {
                id,
                conn_limit,
                settings: settings.clone(),
                hub,
            };
            backend::run(prepared, start, setup)
        },
    )
}
