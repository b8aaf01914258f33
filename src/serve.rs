//! `fanout serve`: everything it can be told, with the defaults a capacity
//! benchmark wants; the plan, the backend, and the process around the shards
//! (`server::run_shards`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{self, BackendKind};
use crate::protocol::Proto;
use crate::server::settings::Settings;
use crate::server::{plan_for, run_shards, ShardSetup};
use crate::units::{parse_duration, parse_size};

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

    /// Connections the server must be able to hold at once. Default: what one
    /// fd table holds. Above that, shards take private fd tables
    /// (unshare(CLONE_FILES)) and their count rises to fit.
    #[arg(long)]
    pub max_conns: Option<usize>,

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
}

impl ServeConfig {
    /// The part of the options every shard core reads.
    pub fn settings(&self) -> Settings {
        Settings {
            proto: self.proto,
            max_message: self.max_message,
            max_backlog: self.max_backlog,
            max_handshake: self.max_handshake,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
        }
    }
}

pub fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let kind = config.backend;
    backend::probe(kind).map_err(|missing| crate::cli::UsageError(missing.to_string()))?;
    let fd_use = backend::fd_use(kind);
    let plan = plan_for(
        config.shards,
        config.max_conns,
        config.fds_per_shard,
        fd_use,
    )?;
    let banner = format!(
        "fanout serve: {} backend, {} protocol; {plan}",
        kind.name(),
        format!("{:?}", config.proto).to_lowercase()
    );
    let conn_limit = plan.conns_per_shard.unwrap_or(usize::MAX);
    let settings = Arc::new(config.settings());
    run_shards(
        &plan,
        config.listen,
        banner,
        || backend::prepare(kind),
        move |prepared, listener, id, hub| {
            let setup = ShardSetup {
                id,
                conn_limit,
                settings: settings.clone(),
                hub,
            };
            backend::run(prepared, listener, setup)
        },
    )
}
