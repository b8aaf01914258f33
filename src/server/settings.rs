//! What a shard core needs to know of the server's options: the protocol and
//! its limits. Backends get this, not the whole command line.

use std::time::Duration;

use crate::protocol::Proto;

#[derive(Clone, Debug)]
pub struct Settings {
    pub proto: Proto,
    /// Largest message accepted, whole or reassembled; larger closes with 1009.
    pub max_message: usize,
    /// Most bytes queued for one room member before it is closed with 1008.
    pub max_backlog: usize,
    /// Largest handshake request (or TCP hello); larger gets HTTP 431.
    pub max_handshake: usize,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    /// Connections admitted at once across shards; past it, upgrades are
    /// refused with 503 (see `server::admission`). None: no limit.
    pub max_conns: Option<usize>,
    /// Upgrades per second across shards (a bucket per shard). None: no limit.
    pub accept_rate: Option<f64>,
}
