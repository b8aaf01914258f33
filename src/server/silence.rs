//! What an open connection's silence leads to, under --ping-interval and
//! --idle-timeout: decided here once for the shard core's sweep and the
//! task backends' timers.

use std::time::Duration;

/// What an open connection's silence leads to when its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Ping it, and look again after `then`.
    Ping { then: Duration },
    /// It did not answer the ping: drop it.
    PingUnanswered,
    /// Close it for --idle-timeout.
    Idle,
}

/// How long an open connection may stay silent before its deadline, given
/// the pings (WebSocket only) and the idle timeout; None: forever.
pub fn silence_limit(ping: Option<Duration>, idle: Option<Duration>) -> Option<Duration> {
    match (ping, idle) {
        (Some(ping), Some(idle)) => Some(ping.min(idle)),
        (ping, idle) => ping.or(idle),
    }
}

/// A connection silent since its last deadline was set passed it; `pinged`
/// says whether that deadline followed a ping.
pub fn on_silence(ping: Option<Duration>, idle: Option<Duration>, pinged: bool) -> Silence {
    match (ping, idle) {
        (Some(ping), None) if !pinged => Silence::Ping { then: ping },
        (Some(_), None) => Silence::PingUnanswered,
        // Silent `ping` so far, `idle` allowed: ping, then wait for the
        // pong or the idle limit, whichever comes first.
        (Some(ping), Some(idle)) if !pinged && ping < idle => Silence::Ping {
            then: ping.min(idle - ping),
        },
        // Silent `ping` twice: the ping went unanswered, unless the idle
        // limit came first.
        (Some(ping), Some(idle)) if pinged && ping + ping <= idle => Silence::PingUnanswered,
        _ => Silence::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn silence_pings_then_drops_or_closes_for_idleness_whichever_limit_comes_first() {
        let d = Duration::from_secs;
        assert_eq!(silence_limit(None, None), None);
        assert_eq!(silence_limit(secs(10), None), secs(10));
        assert_eq!(silence_limit(None, secs(30)), secs(30));
        assert_eq!(silence_limit(secs(10), secs(30)), secs(10));
        // Pings alone: ping after 10 s, drop 10 s later.
        assert_eq!(
            on_silence(secs(10), None, false),
            Silence::Ping { then: d(10) }
        );
        assert_eq!(on_silence(secs(10), None, true), Silence::PingUnanswered);
        // The idle limit alone.
        assert_eq!(on_silence(None, secs(30), false), Silence::Idle);
        // Both, idle far off: the ping decides.
        assert_eq!(
            on_silence(secs(10), secs(30), false),
            Silence::Ping { then: d(10) }
        );
        assert_eq!(
            on_silence(secs(10), secs(30), true),
            Silence::PingUnanswered
        );
        // Both, idle at 15 s: ping at 10 s, idle close 5 s later.
        assert_eq!(
            on_silence(secs(10), secs(15), false),
            Silence::Ping { then: d(5) }
        );
        assert_eq!(on_silence(secs(10), secs(15), true), Silence::Idle);
        // Idle first: no ping at all.
        assert_eq!(on_silence(secs(10), secs(5), false), Silence::Idle);
    }
}
