//! A measured figure beside its floor: both as repeated, interleaved
//! samples, their medians and ranges, the ratio of the medians with its
//! range, and a verdict. The floor does a strict subset of the measured work
//! on the same machinery, so the server should never beat it; a ratio on
//! the wrong side of 1 is never printed as a plain win: within the samples'
//! spread it is noise and says so, beyond it the result is flagged suspect.

use serde::{Deserialize, Serialize};

use crate::load::spread::Spread;

/// Which way is faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// A rate: connections/s, messages/s.
    Higher,
    /// A time: milliseconds to reach everyone.
    Lower,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The floor is at least as fast (the ratio is on the expected side of 1).
    AtOrBelowFloor,
    /// The server's median beat the floor's, but the samples overlap: noise.
    WithinSpread,
    /// Every server sample beat every floor sample: the floor is not a floor
    /// here, and the figure must not be published as a ratio without finding out why.
    Suspect,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ratio {
    /// measured median ÷ floor median.
    pub median: f64,
    /// The ratio's range, low end: the worst pairing of the two ranges.
    pub min: f64,
    /// The best pairing.
    pub max: f64,
    /// Whether the ratio is on the expected side of 1, within noise, or suspect.
    pub verdict: Verdict,
    /// Why the result is suspect, when it is.
    pub suspect: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Compared {
    /// What is compared, with its unit, e.g. "ramp, connections/s".
    pub what: String,
    /// Which way is better: a higher rate or a lower time.
    pub better: Better,
    /// The measured server's samples: median and range.
    pub measured: Spread,
    /// The floor's samples (`fanout bare`): median and range.
    pub floor: Spread,
    /// Every sample, in the order taken (phases interleave floor and server).
    pub measured_samples: Vec<f64>,
    /// The floor's samples, in the order taken.
    pub floor_samples: Vec<f64>,
    /// measured ÷ floor, with its range and verdict.
    pub ratio: Ratio,
    /// Samples whose phase showed kernel trouble (drops, overflows,
    /// retransmits), e.g. "server sample 2: ListenOverflows +130".
    pub flagged_samples: Vec<String>,
}

pub fn compare(what: &str, better: Better, measured: &[f64], floor: &[f64]) -> Compared {
    let (m, f) = (Spread::of(measured), Spread::of(floor));
    let ratio = ratio(what, better, &m, &f);
    Compared {
        what: what.to_string(),
        better,
        measured: m,
        floor: f,
        measured_samples: measured.to_vec(),
        floor_samples: floor.to_vec(),
        ratio,
        flagged_samples: Vec::new(),
    }
}

fn ratio(what: &str, better: Better, m: &Spread, f: &Spread) -> Ratio {
    let divide = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let median = divide(m.median, f.median);
    let wrong_side = match better {
        Better::Higher => median > 1.0,
        Better::Lower => median < 1.0,
    };
    let verdict = if !wrong_side {
        Verdict::AtOrBelowFloor
    } else if m.overlaps(f) {
        Verdict::WithinSpread
    } else {
        Verdict::Suspect
    };
    let suspect = (verdict == Verdict::Suspect).then(|| {
        format!(
            "{what}: every server sample ({:.4}–{:.4}) beat every floor sample ({:.4}–{:.4}); a floor the server beats is not a floor here — look at these phases' kernel counters before publishing the ratio. If the two were equally fast, chance alone would order {} and {} samples like this 1 time in {}: more --samples tell chance from cause",
            m.min,
            m.max,
            f.min,
            f.max,
            m.n,
            f.n,
            orderings(m.n, f.n)
        )
    });
    Ratio {
        median,
        min: divide(m.min, f.max),
        max: divide(m.max, f.min),
        verdict,
        suspect,
    }
}

/// In how many ways `a` and `b` samples can interleave, C(a + b, a): if
/// both come from one distribution, every ordering is equally likely, so
/// all of `a` beating all of `b` has probability 1 / this.
fn orderings(a: usize, b: usize) -> u128 {
    (1..=b as u128).fold(1, |acc, k| acc * (a as u128 + k) / k)
}

impl Compared {
    /// The ratio as the text block prints it, with its verdict.
    pub fn ratio_text(&self) -> String {
        let r = &self.ratio;
        let base = format!("{:.2}× ({:.2}–{:.2})", r.median, r.min, r.max);
        match r.verdict {
            Verdict::AtOrBelowFloor => base,
            Verdict::WithinSpread => {
                format!("{base} — beats the floor's median within the samples' spread: noise, not a win")
            }
            Verdict::Suspect => {
                format!("{base} — SUSPECT: every server sample beat every floor sample")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slower_server_is_at_or_below_its_floor() {
        let c = compare(
            "ramp",
            Better::Higher,
            &[80.0, 90.0, 85.0],
            &[100.0, 110.0, 105.0],
        );
        assert_eq!(c.ratio.verdict, Verdict::AtOrBelowFloor);
        assert!((c.ratio.median - 85.0 / 105.0).abs() < 1e-12);
        assert!((c.ratio.min - 80.0 / 110.0).abs() < 1e-12);
        assert!((c.ratio.max - 90.0 / 100.0).abs() < 1e-12);
        assert!(c.ratio.suspect.is_none());
        let t = compare("broadcast", Better::Lower, &[120.0, 130.0], &[100.0, 101.0]);
        assert_eq!(t.ratio.verdict, Verdict::AtOrBelowFloor);
        assert!(t.ratio.median > 1.0);
    }

    #[test]
    fn a_wrong_side_ratio_within_the_spread_is_noise_not_a_win() {
        // Server median 102 beats the floor median 100 (a rate), but the
        // ranges overlap.
        let c = compare(
            "ramp",
            Better::Higher,
            &[95.0, 102.0, 104.0],
            &[98.0, 100.0, 103.0],
        );
        assert_eq!(c.ratio.verdict, Verdict::WithinSpread);
        assert!(c.ratio.suspect.is_none());
        assert!(c.ratio_text().contains("noise, not a win"));
    }

    #[test]
    fn a_wrong_side_ratio_beyond_the_spread_is_flagged_suspect() {
        // A broadcast (a time) faster than its floor in every sample.
        let c = compare(
            "broadcast last delivery, ms",
            Better::Lower,
            &[573.0, 580.0, 590.0],
            &[660.0, 670.0, 700.0],
        );
        assert_eq!(c.ratio.verdict, Verdict::Suspect);
        let why = c.ratio.suspect.as_deref().unwrap();
        assert!(
            why.contains("broadcast last delivery") && why.contains("not a floor"),
            "{why}"
        );
        assert!(c.ratio_text().contains("SUSPECT"));
        // The same for a rate.
        let r = compare("ramp", Better::Higher, &[140.0, 150.0], &[100.0, 110.0]);
        assert_eq!(r.ratio.verdict, Verdict::Suspect);
    }

    #[test]
    fn the_suspect_text_says_how_often_chance_alone_would_do_it() {
        assert_eq!(orderings(3, 3), 20);
        assert_eq!(orderings(5, 5), 252);
        assert_eq!(orderings(15, 15), 155_117_520);
        let c = compare(
            "ramp",
            Better::Higher,
            &[140.0, 150.0, 145.0],
            &[100.0, 110.0, 105.0],
        );
        let why = c.ratio.suspect.unwrap();
        assert!(why.contains("1 time in 20"), "{why}");
    }

    #[test]
    fn an_empty_floor_gives_no_ratio_rather_than_infinity() {
        let c = compare("echo", Better::Higher, &[1.0], &[]);
        assert!(c.ratio.median.is_nan());
    }
}
