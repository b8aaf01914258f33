//! Reconnect storms (`fanout load storm`): every held connection is lost at
//! once — reset by the client, or dropped by the server — and each comes
//! back on its own: at once, or after an exponential backoff with full
//! jitter (a delay drawn evenly from zero to `base × 2^attempt`, capped at
//! `max`: the policy AWS's architecture blog measured best at spreading
//! retries). Every failed attempt is retried the same way, up to
//! [`MAX_ATTEMPTS`] per connection.

use std::time::Duration;

/// Attempts one connection makes before it gives up (and is counted so).
pub const MAX_ATTEMPTS: u8 = 100;

/// How the connections are lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StormCause {
    /// The client resets every connection at once (RST), then reconnects.
    Reset,
    /// The server drops them (restart it, or stop it and start another on
    /// the same address); the client reconnects as it notices.
    Server,
}

impl StormCause {
    pub fn describe(self) -> &'static str {
        match self {
            StormCause::Reset => "reset by the client",
            StormCause::Server => "dropped by the server",
        }
    }
}

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt` (0: the first reconnect), given a
    /// uniformly random `random`.
    pub fn delay(self, attempt: u8, random: u64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max);
        ceiling.mul_f64(random as f64 / u64::MAX as f64)
    }

    pub fn describe(self) -> String {
        format!(
            "exponential backoff with full jitter, base {:?}, max {:?}",
            self.base, self.max
        )
    }
}

/// The wait before `attempt` under `backoff`, or none (at once).
pub fn wait_before(backoff: Option<Backoff>, attempt: u8, random: u64) -> Duration {
    backoff.map_or(Duration::ZERO, |backoff| backoff.delay(attempt, random))
}

/// Parse `--backoff BASE,MAX`, e.g. `100ms,10s`.
pub fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let (base, max) = text
        .split_once(',')
        .ok_or_else(|| format!("--backoff wants BASE,MAX (e.g. 100ms,10s), not {text:?}"))?;
    let base = crate::units::parse_duration(base.trim())?;
    let max = crate::units::parse_duration(max.trim())?;
    if base.is_zero() || max < base {
        return Err(format!(
            "--backoff {text}: the base must be more than 0 and the max at least the base"
        ));
    }
    Ok(Backoff { base, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_its_ceiling_up_to_the_max_and_jitters_below_it() {
        let backoff = parse_backoff("100ms,1s").unwrap();
        let ms = Duration::from_millis;
        assert_eq!(backoff.delay(0, u64::MAX), ms(100));
        assert_eq!(backoff.delay(1, u64::MAX), ms(200));
        assert_eq!(backoff.delay(3, u64::MAX), ms(800));
        assert_eq!(backoff.delay(4, u64::MAX), ms(1000), "capped");
        assert_eq!(backoff.delay(99, u64::MAX), ms(1000));
        assert_eq!(backoff.delay(2, 0), Duration::ZERO);
        let half = backoff.delay(2, u64::MAX / 2);
        assert!(half > ms(199) && half < ms(201), "{half:?}");
        assert_eq!(wait_before(None, 5, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn bad_backoffs_are_refused_with_the_form_expected() {
        assert!(parse_backoff("100ms").unwrap_err().contains("BASE,MAX"));
        assert!(parse_backoff("0s,1s").is_err());
        assert!(parse_backoff("2s,1s").is_err());
        assert!(parse_backoff("1s,xyz").is_err());
    }
}
