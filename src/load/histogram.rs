//! Latency histograms: HDR from 1 µs to 5 minutes, one per shard, merged at
//! the end, summarised in the report. Minimum and maximum are kept exactly
//! beside the histogram (first and last delivery are headline figures).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded without clamping: 5 minutes.
const MAX_NS: u64 = 300_000_000_000;

/// Smallest latency told apart: 1 µs (values below are recorded as 1 µs).
const MIN_NS: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
    min_ns: u64,
    max_ns: u64,
}

impl Default for Latency {
    /// 3 significant digits (0.1 %): ~170 KB.
    fn default() -> Latency {
        Latency::with_digits(3)
    }
}

/// A histogram's recorded values, to merge in another process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// [value ns, count] for every non-empty bucket.
    pub buckets: Vec<[u64; 2]>,
    pub min_ns: u64,
    pub max_ns: u64,
}

/// What a report shows of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest, microseconds.
    pub min_us: f64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// p90, microseconds.
    pub p90_us: f64,
    /// p99, microseconds.
    pub p99_us: f64,
    /// p99.9, microseconds.
    pub p999_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
    /// Mean, microseconds.
    pub mean_us: f64,
}

impl Latency {
    /// 2 significant digits (1 %): ~20 KB, for the many per-message
    /// histograms of a broadcast (100 messages × every shard).
    pub fn coarse() -> Latency {
        Latency::with_digits(2)
    }

    fn with_digits(digits: u8) -> Latency {
        Latency {
            histogram: Histogram::new_with_bounds(MIN_NS, MAX_NS, digits).expect("valid bounds"),
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    pub fn record_ns(&mut self, ns: u64) {
        let ns = ns.clamp(MIN_NS, MAX_NS);
        self.histogram.saturating_record(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Add `other`'s values. Both must have the same precision.
    pub fn merge(&mut self, other: &Latency) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share bounds and precision");
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Every value recorded, as (value, count) per bucket, with the exact
    /// extremes: what another process needs to merge this histogram.
    pub fn recorded(&self) -> Recorded {
        let buckets = self
            .histogram
            .iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect();
        Recorded {
            buckets,
            min_ns: self.min_ns,
            max_ns: self.max_ns,
        }
    }

    /// Add what another process recorded (same bucket resolution).
    pub fn merge_recorded(&mut self, other: &Recorded) {
        for &[value, count] in &other.buckets {
            self.histogram
                .saturating_record_n(value.clamp(MIN_NS, MAX_NS), count);
        }
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        if h.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        // A bucket's reported value can overshoot the exact extremes.
        let at = |q: f64| us(h.value_at_quantile(q).clamp(self.min_ns, self.max_ns));
        Summary {
            count: h.len(),
            min_us: us(self.min_ns),
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: us(self.max_ns),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// Count and exact extremes of one broadcast message's deliveries: 24 bytes,
/// cheap enough to keep for every message (percentiles are kept only for the
/// first few: a histogram per message would not be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extremes {
    pub count: u64,
    pub min_ns: u64,
    pub max_ns: u64,
}

impl Default for Extremes {
    fn default() -> Extremes {
        Extremes {
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

impl Extremes {
    pub fn record_ns(&mut self, ns: u64) {
        self.count += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Extremes) {
        self.count += other.count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        let mut all = Latency::default();
        for i in 1..=1000u64 {
            let ns = i * 1_000;
            if i % 3 == 0 {
                a.record_ns(ns)
            } else {
                b.record_ns(ns)
            }
            all.record_ns(ns);
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
        let s = a.summary();
        assert_eq!(s.count, 1000);
        // 3 significant digits: within 0.1 % of the exact value.
        assert!((s.p50_us - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
    }

    #[test]
    fn sub_microsecond_and_huge_values_are_clamped_not_lost() {
        let mut h = Latency::default();
        h.record_ns(5);
        h.record_ns(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.summary().min_us, 1.0);
        assert_eq!(h.summary().max_us, MAX_NS as f64 / 1000.0);
    }

    #[test]
    fn min_and_max_are_exact_and_coarse_histograms_merge() {
        let mut a = Latency::coarse();
        let mut b = Latency::coarse();
        a.record_ns(123_456);
        b.record_ns(7_654_321);
        a.merge(&b);
        let s = a.summary();
        assert_eq!((s.min_us, s.max_us, s.count), (123.456, 7654.321, 2));
    }

    #[test]
    fn extremes_merge_exactly() {
        let mut a = Extremes::default();
        let mut b = Extremes::default();
        a.record_ns(500);
        a.record_ns(90);
        b.record_ns(7_000);
        a.merge(&b);
        assert_eq!(
            a,
            Extremes {
                count: 3,
                min_ns: 90,
                max_ns: 7_000
            }
        );
        b.merge(&Extremes::default());
        assert_eq!((b.count, b.min_ns, b.max_ns), (1, 7_000, 7_000));
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::default().summary(), Summary::default());
    }
}
