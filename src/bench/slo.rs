//! Capacity at a service level: the number this field publishes is not "N
//! held" but the most clients a server can serve within a latency target.
//! `fanout bench --slo "broadcast p95<=500ms"` steps N up (×--slo-step from
//! --slo-start, up to --conns), every backend in each step, drops a server
//! once it misses, and reports the largest N each met, with the curve.
//!
//! As in hashrocket's websocket shootout, a broadcast meets the target when
//! it reached every member within the bound; unlike it, broadcasts go one
//! at a time, not four in flight.

use std::fmt::Write as _;

use serde::Serialize;

use super::{BenchResult, ServerResult};

/// Broadcasts per step at least, so that a p95 is not just the maximum.
pub const MIN_BROADCASTS: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Each broadcast's last delivery (publish → every member), ms.
    Broadcast,
    /// Echo round trip at N connections.
    Echo,
    /// Connect + upgrade during the ramp to N.
    Connect,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slo {
    pub metric: Metric,
    /// 95 for p95.
    pub percentile: f64,
    pub bound_ms: f64,
    /// As written.
    pub text: String,
}

/// `broadcast p95<=500ms`, `echo p99<=20ms`, `connect p99<=1s`.
pub fn parse(text: &str) -> Result<Slo, String> {
    let usage = || {
        format!("--slo `{text}`: write METRIC pNN<=TIME, e.g. \"broadcast p95<=500ms\", \"echo p99<=20ms\", \"connect p99<=1s\"")
    };
    let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let (metric, rest) = compact.split_once(' ').ok_or_else(usage)?;
    let metric = match metric {
        "broadcast" => Metric::Broadcast,
        "echo" => Metric::Echo,
        "connect" => Metric::Connect,
        _ => return Err(usage()),
    };
    let rest = rest.replace(' ', "");
    let (percentile, bound) = rest.split_once("<=").ok_or_else(usage)?;
    let percentile: f64 = percentile
        .strip_prefix('p')
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0.0 && *p <= 100.0)
        .ok_or_else(usage)?;
    let bound = crate::units::parse_duration(bound).map_err(|e| format!("{}: {e}", usage()))?;
    let available: &[f64] = match metric {
        Metric::Broadcast => &[],
        Metric::Echo => &[50.0, 99.0, 99.9],
        Metric::Connect => &[50.0, 99.0],
    };
    if !available.is_empty() && !available.contains(&percentile) {
        return Err(format!(
            "--slo `{text}`: {metric:?} latency is kept at p{}",
            available
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", p")
        ));
    }
    Ok(Slo {
        metric,
        percentile,
        bound_ms: bound.as_secs_f64() * 1000.0,
        text: text.to_string(),
    })
}

/// The `percentile` of `values`, nearest rank.
fn nearest_rank(values: &[f64], percentile: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// A server's figure for the SLO at one step, ms; None when it has none
/// (it stopped short, or the job did not run).
pub fn value(slo: &Slo, s: &ServerResult) -> Option<f64> {
    match slo.metric {
        Metric::Broadcast => nearest_rank(
            &s.broadcast.as_ref()?.last_delivery_ms.measured_samples,
            slo.percentile,
        ),
        Metric::Echo => {
            let e = s.echo.first()?;
            let spread = if slo.percentile == 50.0 {
                e.p50_us
            } else if slo.percentile == 99.0 {
                e.p99_us
            } else {
                e.p999_us
            };
            Some(spread.median / 1000.0)
        }
        Metric::Connect => {
            let spread = if slo.percentile == 50.0 {
                s.connect_p50_ms
            } else {
                s.connect_p99_ms
            };
            Some(spread?.median)
        }
    }
}

/// One server at one step.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub server: String,
    /// The figure, ms.
    pub value_ms: Option<f64>,
    /// Whether it held all N.
    pub held_all: bool,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub conns: usize,
    pub file: String,
    pub servers: Vec<Measured>,
}

/// Where each server ended.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub server: String,
    /// The largest N that met the target.
    pub largest_met: Option<usize>,
    /// The first N that missed it, and its figure.
    pub first_missed: Option<(usize, Option<f64>)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SloResult {
    pub slo: Slo,
    /// Broadcasts each server made per step (samples × broadcasts).
    pub broadcasts_per_step: u64,
    pub command: String,
    pub machine: Option<super::machine::Machine>,
    pub steps: Vec<Step>,
    pub verdicts: Vec<Verdict>,
}

/// Judge one step's run.
pub fn judge(slo: &Slo, conns: usize, file: String, run: &BenchResult) -> Step {
    let servers = run
        .servers
        .iter()
        .map(|s| {
            let held_all = s.reach.as_ref().is_none_or(|r| r.complete());
            let value_ms = value(slo, s);
            Measured {
                server: s.name.clone(),
                value_ms,
                held_all,
                met: held_all && value_ms.is_some_and(|v| v <= slo.bound_ms),
            }
        })
        .collect();
    Step {
        conns,
        file,
        servers,
    }
}

/// Each server's largest N met and first N missed, over the steps.
pub fn verdicts(steps: &[Step]) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = Vec::new();
    for step in steps {
        for m in &step.servers {
            let i = match verdicts.iter().position(|v| v.server == m.server) {
                Some(i) => i,
                None => {
                    verdicts.push(Verdict {
                        server: m.server.clone(),
                        largest_met: None,
                        first_missed: None,
                    });
                    verdicts.len() - 1
                }
            };
            let verdict = &mut verdicts[i];
            if m.met && verdict.first_missed.is_none() {
                verdict.largest_met = Some(step.conns);
            } else if !m.met && verdict.first_missed.is_none() {
                verdict.first_missed = Some((step.conns, m.value_ms));
            }
        }
    }
    verdicts
}

/// The sizes to try: from `start`, ×`factor`, the last one `max`.
pub fn ladder(start: usize, factor: f64, max: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut n = start.min(max) as f64;
    while (n as usize) < max {
        sizes.push(n as usize);
        n = (n * factor).ceil();
    }
    sizes.push(max);
    sizes
}

pub fn text(r: &SloResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncapacity at \"{}\": per step, {}; broadcasts go one at a time, not four in flight",
        r.slo.text,
        match r.slo.metric {
            Metric::Broadcast => "the nearest-rank percentile of every broadcast's last delivery",
            Metric::Echo | Metric::Connect => "the median over samples of each sample's percentile",
        }
    );
    let names: Vec<&str> = r.verdicts.iter().map(|v| v.server.as_str()).collect();
    let _ = writeln!(
        out,
        "{:>9} {}",
        "N",
        names.iter().map(|n| format!("{n:>18}")).collect::<String>()
    );
    for step in &r.steps {
        let cells: String = names
            .iter()
            .map(|name| {
                let cell = match step.servers.iter().find(|m| m.server == *name) {
                    None => "".to_string(),
                    Some(m) if !m.held_all => "stopped short".to_string(),
                    Some(m) => format!(
                        "{} {}",
                        m.value_ms.map_or("—".into(), |v| format!("{v:.1} ms")),
                        if m.met { "ok" } else { "MISS" }
                    ),
                };
                format!("{cell:>18}")
            })
            .collect();
        let _ = writeln!(out, "{:>9} {cells}", step.conns);
    }
    for v in &r.verdicts {
        let _ = writeln!(
            out,
            "{}: {}{}",
            v.server,
            match v.largest_met {
                Some(n) => format!("largest N meeting it: {n}"),
                None => "met it at no N tried".to_string(),
            },
            match v.first_missed {
                Some((n, Some(ms))) => format!(" (missed at {n}: {ms:.1} ms)"),
                Some((n, None)) => format!(" (missed at {n}: stopped short or no figure)"),
                None => " (never missed: raise --conns to look further)".to_string(),
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_their_percentile_and_bound() {
        let slo = parse("broadcast p95<=500ms").unwrap();
        assert_eq!(
            (slo.metric, slo.percentile, slo.bound_ms),
            (Metric::Broadcast, 95.0, 500.0)
        );
        let slo = parse("echo  p99 <= 20ms").unwrap();
        assert_eq!(
            (slo.metric, slo.percentile, slo.bound_ms),
            (Metric::Echo, 99.0, 20.0)
        );
        assert_eq!(parse("connect p99<=1s").unwrap().bound_ms, 1000.0);
        for bad in [
            "broadcast",
            "memory p95<=1s",
            "broadcast p0<=1s",
            "echo p95<=1s",
            "broadcast p95<500ms",
            "broadcast p95<=fast",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_nearest_rank_percentile_is_a_sample() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 95.0), Some(19.0));
        assert_eq!(nearest_rank(&values, 100.0), Some(20.0));
        assert_eq!(nearest_rank(&values, 50.0), Some(10.0));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn the_ladder_ends_at_the_maximum() {
        assert_eq!(
            ladder(1000, 2.0, 10_000),
            vec![1000, 2000, 4000, 8000, 10_000]
        );
        assert_eq!(ladder(5000, 2.0, 5000), vec![5000]);
        assert_eq!(ladder(8000, 2.0, 5000), vec![5000]);
    }

    #[test]
    fn a_server_is_judged_by_the_first_size_it_misses() {
        let step = |conns, met: &[(&str, bool)]| Step {
            conns,
            file: String::new(),
            servers: met
                .iter()
                .map(|(name, met)| Measured {
                    server: name.to_string(),
                    value_ms: Some(if *met { 100.0 } else { 900.0 }),
                    held_all: true,
                    met: *met,
                })
                .collect(),
        };
        let steps = [
            step(1000, &[("a", true), ("b", true)]),
            step(2000, &[("a", true), ("b", false)]),
            step(4000, &[("a", false)]),
        ];
        let v = verdicts(&steps);
        assert_eq!(
            (v[0].largest_met, v[0].first_missed),
            (Some(2000), Some((4000, Some(900.0))))
        );
        assert_eq!(
            (v[1].largest_met, v[1].first_missed),
            (Some(1000), Some((2000, Some(900.0))))
        );
    }
}
