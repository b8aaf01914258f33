//! Pacing schedules: when the k-th event of a paced load is due. Latency in
//! open-loop mode is measured from when a message was due, not when it was
//! sent, so a stalled sender cannot hide its stall (coordinated omission).

/// Events at a fixed rate from `start_ns`, the first after `phase_ns`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: f64,
}

impl Schedule {
    /// `rate` events per second from `start_ns`. A phase offset in
    /// `[0, interval)` spreads many schedules of the same rate apart.
    pub fn new(start_ns: u64, rate: f64, phase: f64) -> Schedule {
        assert!(rate > 0.0, "a schedule needs a positive rate");
        let interval_ns = 1e9 / rate;
        Schedule {
            start_ns: start_ns + (phase.clamp(0.0, 1.0) * interval_ns) as u64,
            interval_ns,
        }
    }

    /// When event `k` (from 0) is due.
    pub fn due(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.interval_ns) as u64
    }

    /// How many events are due by `now_ns`.
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        ((now_ns - self.start_ns) as f64 / self.interval_ns) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced() {
        let s = Schedule::new(1_000, 1000.0, 0.0); // every 1 ms
        assert_eq!(s.due(0), 1_000);
        assert_eq!(s.due(1), 1_001_000);
        assert_eq!(s.due(10), 10_001_000);
    }

    #[test]
    fn due_by_counts_events_whose_time_has_come() {
        let s = Schedule::new(0, 100.0, 0.0); // every 10 ms
        assert_eq!(s.due_by(0), 1);
        assert_eq!(s.due_by(9_999_999), 1);
        assert_eq!(s.due_by(10_000_000), 2);
        assert_eq!(s.due_by(1_000_000_000), 101);
    }

    #[test]
    fn phase_shifts_within_one_interval() {
        let s = Schedule::new(0, 10.0, 0.5);
        assert_eq!(s.due(0), 50_000_000);
        assert_eq!(s.due_by(49_999_999), 0);
        let late = Schedule::new(0, 10.0, 7.0); // clamped to one interval
        assert_eq!(late.due(0), 100_000_000);
    }
}
