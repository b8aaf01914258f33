//! Latency histograms: HDR at microsecond resolution (nanoseconds recorded,
//! 3 significant digits), one per shard, merged at the end, summarised in
//! the report.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded without clamping: 5 minutes.
const MAX_NS: u64 = 300_000_000_000;

#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency {
            histogram: Histogram::new_with_bounds(1_000, MAX_NS, 3).expect("valid bounds"),
        }
    }
}

/// What a report shows of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn record_ns(&mut self, ns: u64) {
        self.histogram.saturating_record(ns.clamp(1_000, MAX_NS));
    }

    pub fn merge(&mut self, other: &Latency) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        if h.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Summary {
            count: h.len(),
            min_us: us(h.min()),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
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
        assert!(h.summary().min_us >= 1.0);
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::default().summary(), Summary::default());
    }
}
