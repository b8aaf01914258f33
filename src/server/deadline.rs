//! Coarse deadlines for handshakes and closes, stored in 4 bytes per
//! connection instead of a timer entry: a shard sweeps its connections a few
//! times a second while any of them has a deadline (the uWebSockets way).
//! A timer heap would cost 32 bytes per connection and keep its peak
//! capacity after a ramp; this costs nothing extra.

use std::time::{Duration, Instant};

/// Deadline resolution.
const TICK: Duration = Duration::from_millis(10);
/// How often a shard looks for expired deadlines while any are set.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// A point in time in ticks since the shard started; 0 means "none".
/// u32 ticks of 10 ms last 497 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(u32);

impl Deadline {
    pub const NONE: Deadline = Deadline(0);

    pub fn is_set(self) -> bool {
        self != Deadline::NONE
    }
}

/// Turns durations into [`Deadline`]s for one shard.
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    fn ticks(&self, at: Instant) -> u32 {
        let ticks = at.saturating_duration_since(self.start).as_millis() / TICK.as_millis();
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// The deadline `after` from now (never [`Deadline::NONE`]).
    pub fn after(&self, after: Duration) -> Deadline {
        // Rounded up, so a deadline never fires early.
        let ticks = self.ticks(Instant::now() + after + TICK);
        Deadline(ticks.max(1))
    }

    /// How long before `now` a deadline was set that was `after` ahead,
    /// to within half a tick: [`Clock::after`] rounds up by at most a
    /// tick, so the middle of that tick is taken.
    pub fn since_set(&self, deadline: Deadline, after: Duration, now: Instant) -> Duration {
        let tick = TICK.as_millis();
        let set_at = (u128::from(deadline.0) * tick).saturating_sub(after.as_millis() + tick / 2);
        let now = now.saturating_duration_since(self.start).as_millis();
        Duration::from_millis(now.saturating_sub(set_at) as u64)
    }

    pub fn has_passed(&self, deadline: Deadline, now: Instant) -> bool {
        deadline.is_set() && deadline.0 <= self.ticks(now)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_pass_after_their_duration_and_never_before() {
        let clock = Clock::new();
        let deadline = clock.after(Duration::from_millis(50));
        assert!(deadline.is_set());
        assert!(!clock.has_passed(deadline, Instant::now()));
        let later = Instant::now() + Duration::from_millis(200);
        assert!(clock.has_passed(deadline, later));
        assert!(!clock.has_passed(Deadline::NONE, later));
    }

    #[test]
    fn the_time_since_a_deadline_was_set_is_known_to_half_a_tick() {
        let clock = Clock::new();
        let timeout = Duration::from_secs(10);
        let set_at = Instant::now();
        let deadline = clock.after(timeout);
        for waited in [0, 7, 30, 250] {
            let now = set_at + Duration::from_millis(waited);
            let since = clock.since_set(deadline, timeout, now).as_millis() as i64;
            let error = since - waited as i64;
            assert!(error.abs() <= 5, "waited {waited} ms, measured {since} ms");
        }
    }

    #[test]
    fn zero_duration_is_still_a_deadline() {
        let clock = Clock::new();
        assert!(clock.after(Duration::ZERO).is_set());
    }
}
