//! The task backends' side of `server::silence`: one clock per open
//! connection that knows when its silence next matters and what it then
//! leads to, so the tungstenite connection and the session task keep the
//! same rule with the same counters.

use std::time::Duration;

use tokio::time::Instant;

use crate::server::settings::Settings;
use crate::server::silence::{on_silence, silence_limit, Silence};
use crate::server::stats::{bump, ShardCounters};

/// What a connection does when its silence deadline passes.
pub enum Due {
    /// Send a ping, then call [`SilenceClock::pinged`].
    Ping,
    /// It did not answer the ping: drop it (counted).
    Drop,
    /// Close it with 1001 `idle timeout` (counted).
    CloseIdle,
}

pub struct SilenceClock {
    ping: Option<Duration>,
    idle: Option<Duration>,
    limit: Option<Duration>,
    /// When silence next matters; none until the connection is open, or
    /// when neither limit is set.
    until: Option<Instant>,
    /// The deadline follows a ping.
    pinged: bool,
    /// After a ping: how long to wait for an answer.
    then: Duration,
}

impl SilenceClock {
    /// Not running until [`SilenceClock::heard`] after the upgrade.
    pub fn new(settings: &Settings) -> SilenceClock {
        let (ping, idle) = settings.silence_limits();
        SilenceClock {
            ping,
            idle,
            limit: silence_limit(ping, idle),
            until: None,
            pinged: false,
            then: Duration::ZERO,
        }
    }

    /// The open connection spoke (a pong counts): its silence starts again.
    pub fn heard(&mut self) {
        self.until = self.limit.map(|limit| Instant::now() + limit);
        self.pinged = false;
    }

    /// When the connection's silence next matters.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// The deadline passed: what to do, counting a drop or an idle close.
    pub fn due(&mut self, counters: &ShardCounters) -> Due {
        match on_silence(self.ping, self.idle, self.pinged) {
            Silence::Ping { then } => {
                self.then = then;
                Due::Ping
            }
            Silence::PingUnanswered => {
                bump(&counters.ping_timeouts);
                Due::Drop
            }
            Silence::Idle => {
                bump(&counters.idle_timeouts);
                Due::CloseIdle
            }
        }
    }

    /// The ping went out: count it and wait for the answer.
    pub fn pinged(&mut self, counters: &ShardCounters) {
        bump(&counters.pings_sent);
        self.pinged = true;
        self.until = Some(Instant::now() + self.then);
    }
}
