//! The highest churn rate a server sustains. Churn (connect, upgrade, echo
//! once, close) is open loop: a rate the server cannot keep up with shows
//! as dropped arrivals, cycles still in flight and a rising setup p99, not
//! as a lower rate. So the bench steps the rate — doubling from
//! `--churn-rate` while every bound holds, halving while none does, then
//! bisecting between the highest rate sustained and the lowest missed until
//! they are within 10 % — each run on a fresh server for
//! `--churn-duration`. A rate whose run meets every bound runs again until
//! it has `--samples` runs, and counts as sustained only if every run met
//! every bound; a rate with a run that misses counts as missed.
//! The figure is printed beside Heroku's 160 connections/s per dyno.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::load::report::{ms, ChurnReport};
use crate::load::spread::Spread;
use crate::plan::fleet::HEROKU_CONNECTIONS_PER_S;
use crate::units::grouped;

/// Arrivals a sustained rate may drop (its shards at --max-inflight).
pub const MAX_DROPPED_SHARE: f64 = 0.01;
/// Share of the asked rate a sustained run completes.
pub const MIN_COMPLETED_SHARE: f64 = 0.95;
/// The search stops once the lowest rate missed is within this share
/// above the highest sustained.
pub const RESOLUTION: f64 = 0.10;
/// Below this rate the search stops halving: nothing was sustained.
pub const LOWEST_RATE: f64 = 50.0;

/// What a rate must meet to count as sustained.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnBounds {
    /// Setup (connect + upgrade) p99 at most this, ms.
    pub setup_p99_ms: f64,
    /// Dropped arrivals at most this share of the arrivals.
    pub dropped_share: f64,
    /// Cycles completed per second at least this share of the rate asked.
    pub completed_share: f64,
}

impl ChurnBounds {
    pub fn with_setup_p99_ms(setup_p99_ms: f64) -> ChurnBounds {
        ChurnBounds {
            setup_p99_ms,
            dropped_share: MAX_DROPPED_SHARE,
            completed_share: MIN_COMPLETED_SHARE,
        }
    }

    /// The bounds a run broke, in words (none: sustained).
    pub fn missed(&self, run: &ChurnReport) -> Vec<String> {
        let mut missed = Vec::new();
        if run.failed > 0 {
            missed.push(format!("{} cycles failed", run.failed));
        }
        let arrivals = run.arrivals.max(1) as f64;
        if run.dropped as f64 > self.dropped_share * arrivals {
            missed.push(format!(
                "{} of {} arrivals dropped (over {:.0} %)",
                run.dropped,
                run.arrivals,
                self.dropped_share * 100.0
            ));
        }
        if run.rate_per_s < self.completed_share * run.target_rate_per_s {
            missed.push(format!(
                "{}/s completed (under {:.0} % of the rate)",
                grouped(run.rate_per_s, 0),
                self.completed_share * 100.0
            ));
        }
        let p99_ms = run.setup.p99_us / 1000.0;
        if p99_ms > self.setup_p99_ms {
            missed.push(format!(
                "setup p99 {p99_ms:.1} ms (over {} ms)",
                self.setup_p99_ms
            ));
        }
        missed
    }
}

/// One run at one rate.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnRun {
    /// The churn section of the run's load report.
    pub churn: ChurnReport,
    /// The load generator's CPU over (wall time × cores): near 1, the
    /// client, not the server, ran out.
    pub client_cpu_share: f64,
    /// The bounds it broke, in words (none: it met them all).
    pub missed: Vec<String>,
}

/// One rate tried.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnStep {
    /// Connections asked for per second.
    pub asked_per_s: f64,
    /// Every run met every bound.
    pub sustained: bool,
    /// Every run at this rate, in the order run.
    pub runs: Vec<ChurnRun>,
}

impl ChurnStep {
    pub fn new(asked_per_s: f64) -> ChurnStep {
        ChurnStep {
            asked_per_s,
            sustained: true,
            runs: Vec::new(),
        }
    }

    /// Add a run, judged against `bounds`.
    pub fn add(&mut self, bounds: &ChurnBounds, churn: ChurnReport, client_cpu_share: f64) {
        let missed = bounds.missed(&churn);
        self.sustained &= missed.is_empty();
        self.runs.push(ChurnRun {
            churn,
            client_cpu_share,
            missed,
        });
    }

    /// A figure over the runs: median and range.
    pub fn spread(&self, figure: impl Fn(&ChurnReport) -> f64) -> Spread {
        spread(self.runs.iter().map(|r| &r.churn), figure)
    }
}

fn spread<'a>(
    runs: impl Iterator<Item = &'a ChurnReport>,
    figure: impl Fn(&ChurnReport) -> f64,
) -> Spread {
    let values: Vec<f64> = runs.map(figure).collect();
    Spread::of(&values)
}

/// The search on one server.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnSearch {
    /// What counted as sustained.
    pub bounds: ChurnBounds,
    /// Every rate tried, in the order tried.
    pub steps: Vec<ChurnStep>,
    /// The highest rate asked at which every bound held, connections/s.
    pub sustained_per_s: Option<f64>,
    /// The lowest rate asked at which a bound broke, connections/s.
    pub first_missed_per_s: Option<f64>,
    /// The sustained rate over Heroku's 160 new connections/s per dyno.
    pub heroku_dynos: Option<f64>,
    /// Why the search stopped, in words.
    pub stopped: String,
}

impl ChurnSearch {
    /// The step at the highest rate sustained.
    pub fn best(&self) -> Option<&ChurnStep> {
        best(&self.steps)
    }
}

fn best(steps: &[ChurnStep]) -> Option<&ChurnStep> {
    steps
        .iter()
        .filter(|s| s.sustained)
        .max_by(|a, b| a.asked_per_s.total_cmp(&b.asked_per_s))
}

/// A bench file's churn: the search, or the single run at --churn-rate of
/// files written before the search existed.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Churn {
    Search(ChurnSearch),
    Single(ChurnReport),
}

impl Churn {
    /// The runs the tables show: those at the highest rate sustained (else
    /// at the last rate tried), or the single run.
    pub fn shown(&self) -> Vec<&ChurnReport> {
        match self {
            Churn::Search(search) => search
                .best()
                .or(search.steps.last())
                .map(|step| step.runs.iter().map(|r| &r.churn).collect())
                .unwrap_or_default(),
            Churn::Single(run) => vec![run],
        }
    }

    /// A figure over the shown runs: median and range.
    pub fn spread(&self, figure: impl Fn(&ChurnReport) -> f64) -> Spread {
        spread(self.shown().into_iter(), figure)
    }

    /// The highest rate sustained (a search only).
    pub fn sustained_per_s(&self) -> Option<f64> {
        match self {
            Churn::Search(search) => search.sustained_per_s,
            Churn::Single(_) => None,
        }
    }
}

/// What to run next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// A new rate.
    Rate(f64),
    /// Another run at the rate of `steps[i]`, whose runs so far all met
    /// the bounds but are fewer than --samples.
    Again(usize),
    /// Done, and why.
    Stop(String),
}

/// After `steps`: a rate whose runs so far all met the bounds runs again
/// until it has `samples` runs (a rate counts as sustained only then);
/// then the next rate, or stop.
pub fn next(steps: &[ChurnStep], start: f64, max_steps: usize, samples: usize) -> Next {
    if let Some(index) = steps
        .iter()
        .position(|s| s.sustained && s.runs.len() < samples)
    {
        return Next::Again(index);
    }
    match next_rate(&tried(steps), start, max_steps) {
        Ok(rate) => Next::Rate(rate),
        Err(why) => Next::Stop(why),
    }
}

/// Every rate tried, and whether it was sustained.
fn tried(steps: &[ChurnStep]) -> Vec<(f64, bool)> {
    steps.iter().map(|s| (s.asked_per_s, s.sustained)).collect()
}

/// The highest rate sustained and the lowest missed among `tried`.
fn edges(tried: &[(f64, bool)]) -> (Option<f64>, Option<f64>) {
    let rates = |sustained: bool| tried.iter().filter(move |t| t.1 == sustained).map(|t| t.0);
    (
        rates(true).max_by(f64::total_cmp),
        rates(false).min_by(f64::total_cmp),
    )
}

/// The next rate to try after `tried` (rate, sustained), or why to stop.
pub fn next_rate(tried: &[(f64, bool)], start: f64, max_steps: usize) -> Result<f64, String> {
    if tried.is_empty() {
        return Ok(start);
    }
    if tried.len() >= max_steps {
        return Err(format!("after {max_steps} steps (--churn-steps)"));
    }
    match edges(tried) {
        (Some(good), None) => Ok(round_rate(good * 2.0)),
        (None, Some(bad)) if bad / 2.0 < LOWEST_RATE => {
            Err(format!("no rate sustained, down to {}/s", round_rate(bad)))
        }
        (None, Some(bad)) => Ok(round_rate(bad / 2.0)),
        (Some(good), Some(bad)) if bad <= good * (1.0 + RESOLUTION) => Err(format!(
            "the highest rate sustained and the lowest missed are within {:.0} %",
            RESOLUTION * 100.0
        )),
        (Some(good), Some(bad)) => Ok(round_rate((good + bad) / 2.0)),
        (None, None) => unreachable!("a rate tried is sustained or not"),
    }
}

/// `median (min – max)`, or the one value.
fn spread_of(s: &Spread, show: impl Fn(f64) -> String) -> String {
    if s.n <= 1 {
        show(s.median)
    } else {
        format!("{} ({} – {})", show(s.median), show(s.min), show(s.max))
    }
}

/// Two significant digits: 12,345 → 12,000; 937 → 940.
fn round_rate(rate: f64) -> f64 {
    let magnitude = 10f64.powi(rate.max(1.0).log10().floor() as i32 - 1);
    (rate / magnitude).round() * magnitude
}

/// Put the steps together.
pub fn search(bounds: ChurnBounds, steps: Vec<ChurnStep>, stopped: String) -> ChurnSearch {
    let (sustained_per_s, first_missed_per_s) = edges(&tried(&steps));
    ChurnSearch {
        bounds,
        heroku_dynos: sustained_per_s.map(|r| r / HEROKU_CONNECTIONS_PER_S),
        steps,
        sustained_per_s,
        first_missed_per_s,
        stopped,
    }
}

/// The search in lines, for the bench's text block.
pub fn text(search: &ChurnSearch) -> String {
    let mut out = String::new();
    let b = &search.bounds;
    let verdict = match (search.sustained_per_s, search.best()) {
        (Some(rate), Some(best)) => format!(
            "sustained {}/s in {} of {} runs (completed {}/s, setup p99 {}) = {:.0}× Heroku's {} connections/s per dyno",
            grouped(rate, 0),
            best.runs.len(),
            best.runs.len(),
            spread_of(&best.spread(|c| c.rate_per_s), |v| grouped(v, 0)),
            spread_of(&best.spread(|c| c.setup.p99_us), ms),
            search.heroku_dynos.unwrap_or(0.0),
            HEROKU_CONNECTIONS_PER_S
        ),
        _ => "no rate sustained".to_string(),
    };
    let missed = search
        .first_missed_per_s
        .map(|r| format!("; missed from {}/s", grouped(r, 0)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "churn     {verdict}{missed} (bounds: setup p99 ≤ {} ms, drops ≤ {:.0} %, completed ≥ {:.0} % of the rate; stopped: {})",
        b.setup_p99_ms,
        b.dropped_share * 100.0,
        b.completed_share * 100.0,
        search.stopped
    );
    for step in &search.steps {
        for (i, run) in step.runs.iter().enumerate() {
            let churn = &run.churn;
            let again = if i == 0 { "asked" } else { "again" };
            let _ = writeln!(
                out,
                "  {:>8}/s {again}: {:>8}/s completed, setup p50 {} p99 {}, {} dropped, {} failed, client CPU {:.0} % — {}",
                grouped(step.asked_per_s, 0),
                grouped(churn.rate_per_s.round(), 0),
                ms(churn.setup.p50_us),
                ms(churn.setup.p99_us),
                churn.dropped,
                churn.failed,
                run.client_cpu_share * 100.0,
                if run.missed.is_empty() {
                    "met every bound".to_string()
                } else {
                    run.missed.join(", ")
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::histogram::Summary;

    fn run(asked: f64, completed: f64, p99_ms: f64, dropped: u64, failed: u64) -> ChurnReport {
        ChurnReport {
            target_rate_per_s: asked,
            arrivals: (asked * 3.0) as u64,
            dropped,
            failed,
            rate_per_s: completed,
            seconds: 3.0,
            completed: (completed * 3.0) as u64,
            setup: Summary {
                p99_us: p99_ms * 1000.0,
                ..Summary::default()
            },
            ..ChurnReport::default()
        }
    }

    #[test]
    fn each_bound_broken_is_named() {
        let bounds = ChurnBounds::with_setup_p99_ms(100.0);
        assert!(bounds
            .missed(&run(10_000.0, 9_990.0, 20.0, 0, 0))
            .is_empty());
        // 1 % of 30,000 arrivals may drop; 301 may not.
        assert!(bounds
            .missed(&run(10_000.0, 9_990.0, 20.0, 300, 0))
            .is_empty());
        let missed = bounds.missed(&run(10_000.0, 9_000.0, 150.0, 301, 2));
        assert_eq!(
            missed,
            [
                "2 cycles failed",
                "301 of 30000 arrivals dropped (over 1 %)",
                "9,000/s completed (under 95 % of the rate)",
                "setup p99 150.0 ms (over 100 ms)"
            ]
        );
    }

    #[test]
    fn the_search_doubles_halves_then_bisects_to_ten_percent() {
        assert_eq!(next_rate(&[], 10_000.0, 6), Ok(10_000.0));
        assert_eq!(next_rate(&[(10_000.0, true)], 10_000.0, 6), Ok(20_000.0));
        assert_eq!(next_rate(&[(10_000.0, false)], 10_000.0, 6), Ok(5_000.0));
        let tried = [(10_000.0, true), (20_000.0, true), (40_000.0, false)];
        assert_eq!(next_rate(&tried, 10_000.0, 6), Ok(30_000.0));
        let tried = [(20_000.0, true), (30_000.0, false), (25_000.0, true)];
        assert_eq!(next_rate(&tried, 20_000.0, 6), Ok(28_000.0));
        let close = [(25_000.0, true), (27_000.0, false)];
        assert!(next_rate(&close, 25_000.0, 6).unwrap_err().contains("10 %"));
        let all = [(1.0, true); 6];
        assert!(next_rate(&all, 1.0, 6).unwrap_err().contains("6 steps"));
        let nothing = [(80.0, false)];
        assert!(next_rate(&nothing, 80.0, 6)
            .unwrap_err()
            .contains("no rate sustained, down to 80/s"));
    }

    #[test]
    fn rates_are_rounded_to_two_digits() {
        assert_eq!(round_rate(12_345.0), 12_000.0);
        assert_eq!(round_rate(937.0), 940.0);
        assert_eq!(round_rate(28_125.0), 28_000.0);
    }

    #[test]
    fn the_verdict_is_the_highest_rate_sustained_beside_heroku() {
        let bounds = ChurnBounds::with_setup_p99_ms(100.0);
        let step = |asked: f64, completed: f64, p99: f64| {
            let mut step = ChurnStep::new(asked);
            step.add(&bounds, run(asked, completed, p99, 0, 0), 0.4);
            step
        };
        let mut steps = vec![
            step(8_000.0, 7_990.0, 10.0),
            step(16_000.0, 15_990.0, 40.0),
            step(32_000.0, 24_000.0, 800.0),
        ];
        steps[1].add(&bounds, run(16_000.0, 15_900.0, 60.0, 0, 0), 0.5);
        let found = search(bounds, steps, "after 3 steps".into());
        assert_eq!(found.sustained_per_s, Some(16_000.0));
        assert_eq!(found.first_missed_per_s, Some(32_000.0));
        assert_eq!(found.heroku_dynos, Some(100.0));
        let text = text(&found);
        assert!(
            text.starts_with("churn     sustained 16,000/s in 2 of 2 runs (completed 15,945 (15,900 – 15,990)/s, setup p99 50.00 ms (40.00 ms – 60.00 ms)) = 100× Heroku's 160 connections/s per dyno; missed from 32,000/s"),
            "{text}"
        );
        assert!(
            text.contains(
                "p99 800.00 ms, 0 dropped, 0 failed, client CPU 40 % — 24,000/s completed"
            ),
            "{text}"
        );
        assert!(text.contains("setup p99 800.0 ms (over 100 ms)"), "{text}");
        assert!(
            text.contains("16,000/s again:   15,900/s completed"),
            "{text}"
        );
        assert_eq!(Churn::Search(found).shown().len(), 2);
    }

    #[test]
    fn a_rate_that_meets_the_bounds_runs_again_before_the_search_goes_on() {
        let bounds = ChurnBounds::with_setup_p99_ms(100.0);
        let mut steps = vec![ChurnStep::new(10_000.0)];
        steps[0].add(&bounds, run(10_000.0, 9_990.0, 20.0, 0, 0), 0.3);
        // Met once: again, until it has 3 runs.
        assert_eq!(next(&steps, 10_000.0, 6, 3), Next::Again(0));
        steps[0].add(&bounds, run(10_000.0, 9_990.0, 25.0, 0, 0), 0.3);
        assert_eq!(next(&steps, 10_000.0, 6, 3), Next::Again(0));
        steps[0].add(&bounds, run(10_000.0, 9_990.0, 22.0, 0, 0), 0.3);
        assert_eq!(next(&steps, 10_000.0, 6, 3), Next::Rate(20_000.0));
        // 20,000/s meets the bounds once, then misses: it counts as missed,
        // and the search bisects below it.
        steps.push(ChurnStep::new(20_000.0));
        steps[1].add(&bounds, run(20_000.0, 19_990.0, 90.0, 0, 0), 0.5);
        assert_eq!(next(&steps, 10_000.0, 6, 3), Next::Again(1));
        steps[1].add(&bounds, run(20_000.0, 19_990.0, 130.0, 0, 0), 0.5);
        assert!(!steps[1].sustained);
        assert_eq!(next(&steps, 10_000.0, 6, 3), Next::Rate(15_000.0));
        // At the step limit: stop, 10,000/s sustained in 3 of 3.
        assert!(matches!(next(&steps, 10_000.0, 2, 3), Next::Stop(why) if why.contains("2 steps")));
        let found = search(bounds, steps, "after 2 steps".into());
        assert_eq!(found.sustained_per_s, Some(10_000.0));
        assert_eq!(found.first_missed_per_s, Some(20_000.0));
    }
}
