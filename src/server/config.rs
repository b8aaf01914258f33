//! Everything `fanout serve` can be told, with the defaults a capacity
//! benchmark wants. Parsed by clap; read by every shard.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::BackendKind;
use crate::units::{parse_duration, parse_size};

/// Which wire protocol the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// WebSocket (RFC 6455): `GET /echo` and `GET /room`.
    Ws,
    /// Length-prefixed raw TCP (docs/tcp-framing.md): a hello names the route.
    Tcp,
}

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
