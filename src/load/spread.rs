//! Repeated samples of one figure, summarised honestly: the true median
//! (the mean of the two middle values for an even count), the extremes, and
//! how many samples there were. Used for per-broadcast figures in a load
//! report and for every interleaved sample of a bench.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Spread {
    /// Samples summarised.
    pub n: usize,
    /// The median sample.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

impl Spread {
    /// `median (min – max)`, digits grouped.
    pub fn text(&self, decimals: usize) -> String {
        use crate::units::grouped;
        format!(
            "{} ({} – {})",
            grouped(self.median, decimals),
            grouped(self.min, decimals),
            grouped(self.max, decimals)
        )
    }

    /// Summarise `values`; NaNs are ignored. Empty input gives n = 0 and zeros.
    pub fn of(values: &[f64]) -> Spread {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Spread::default();
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Spread {
            n,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    /// Do two spreads share any value?
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// This spread scaled by `factor` (e.g. µs to ms).
    pub fn scaled(&self, factor: f64) -> Spread {
        Spread {
            n: self.n,
            median: self.median * factor,
            min: self.min * factor,
            max: self.max * factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Spread::of(&[4.0, 1.0]);
        assert_eq!((s.n, s.median, s.min, s.max), (2, 2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0, 10.0]).median, 2.5);
    }

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value() {
        let s = Spread::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.n, s.median, s.min, s.max), (3, 3.0, 1.0, 5.0));
    }

    #[test]
    fn empty_and_nan_inputs() {
        assert_eq!(Spread::of(&[]), Spread::default());
        assert_eq!(Spread::of(&[f64::NAN, 2.0]).n, 1);
    }

    #[test]
    fn overlap_is_symmetric_and_touching_counts() {
        let a = Spread::of(&[1.0, 2.0]);
        let b = Spread::of(&[2.0, 3.0]);
        let c = Spread::of(&[2.5, 3.0]);
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
    }
}
