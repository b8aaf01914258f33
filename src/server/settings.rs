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
    /// Most bytes queued for all room members (each shard core holds its
    /// share); past it the furthest behind are closed with 1013. None: no limit.
    pub max_backlog_total: Option<usize>,
    /// Largest handshake request (or TCP hello); larger gets HTTP 431.
    pub max_handshake: usize,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    /// Connections admitted at once across shards; past it, upgrades are
    /// refused with 503 (see `server::admission`). None: no limit.
    pub max_conns: Option<usize>,
    /// Upgrades per second across shards (a bucket per shard). None: no limit.
    pub accept_rate: Option<f64>,
    /// The window the drain spreads its goodbyes over (0: all at once).
    pub drain_time: Duration,
    /// Ping a WebSocket client silent this long; close it if it stays
    /// silent as long again. None: no pings.
    pub ping_interval: Option<Duration>,
    /// Close a connection that sends nothing this long. None: never.
    pub idle_timeout: Option<Duration>,
    /// Speak TLS on every connection (--tls-cert/--tls-self-signed).
    pub tls: Option<std::sync::Arc<crate::tls::TlsSetup>>,
    /// permessage-deflate (--deflate and its limits).
    pub deflate: crate::server::deflate::DeflateSettings,
    /// `tokio`, `tokio-tpc`: WebSocket by tungstenite, or by fanout's
    /// session (--ws-stack, and always with --deflate on).
    pub tungstenite: bool,
}

/// How long the goodbye waits for answers when there is no drain window:
/// a quick restart, best effort.
pub const GOODBYE_PATIENCE: Duration = Duration::from_millis(100);

impl Settings {
    /// The pings (WebSocket only: the TCP protocol has none) and the idle
    /// timeout, for `server::silence`.
    pub fn silence_limits(&self) -> (Option<Duration>, Option<Duration>) {
        let ping = match self.proto {
            Proto::Ws => self.ping_interval,
            Proto::Tcp => None,
        };
        (ping, self.idle_timeout)
    }

    /// How long after its goodbye a connection may take to answer it.
    pub fn goodbye_patience(&self) -> Duration {
        match self.drain_time.is_zero() {
            true => GOODBYE_PATIENCE.min(self.close_timeout),
            false => self.close_timeout,
        }
    }

    /// When a drain that began at `began` has told everyone and waited
    /// out the answers: the server stops then, whatever is still open.
    pub fn drain_ends(&self, began: std::time::Instant) -> std::time::Instant {
        began + self.drain_time + self.goodbye_patience()
    }
}
