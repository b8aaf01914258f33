//! `fanout bench --storm`: a reconnect storm on each server. --storm-conns
//! connections are held, reset by the client all at once and brought back —
//! first every one at once, then with --storm-backoff (exponential, full
//! jitter) — --samples runs of each, each on a fresh server. Reported per
//! policy: the time until all are back, the attempts and why they failed,
//! what the server refused (503) and the accept-queue overflows, the
//! server's CPU during the storm, and the curve of connections open. Over
//! TLS each policy runs twice: clients resuming from the server's session
//! tickets, and every reconnect doing a full handshake.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::phase::{self, Phases, Target};
use crate::load::config::ScenarioKind;
use crate::load::report::StormReport;
use crate::load::spread::Spread;
use crate::load::storm::{Backoff, StormCause};
use crate::load::Checkpoint;
use crate::tls::OnOff;

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StormBench {
    /// Connections held, then lost at once.
    pub conns: usize,
    /// One entry per reconnect policy: at once, then the backoff.
    pub policies: Vec<StormPolicy>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StormPolicy {
    /// How each connection came back: "at once" or the backoff.
    pub reconnect: String,
    /// Over TLS: whether the clients resumed from session tickets (none
    /// for a plain server).
    #[serde(default)]
    pub resumption: Option<bool>,
    /// Seconds from the first loss until all were back, over the runs that
    /// got there.
    pub all_back_s: Option<Spread>,
    /// Runs in which not every connection was back within --storm-duration.
    pub runs_not_back: usize,
    /// Reconnect attempts per run.
    pub attempts: Spread,
    /// Reconnect attempts that failed (and were retried), per run.
    pub failed_attempts: Spread,
    /// Upgrades the server refused with 503 during the storm, per run.
    pub server_refused: Spread,
    /// TcpExt.ListenOverflows during the storm, per run.
    pub listen_overflows: Spread,
    /// The server's CPU seconds from the loss to the end, per run.
    pub server_cpu_s: Spread,
    /// Reconnect (connect + upgrade) p99, ms, per run.
    pub reconnect_p99_ms: Spread,
    /// Every run, each on a fresh server.
    pub runs: Vec<StormRun>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StormRun {
    /// The load generator's storm section.
    pub storm: StormReport,
    /// Why attempts failed (the load report's `connect.failures`).
    pub failures: std::collections::BTreeMap<String, u64>,
    /// The server's CPU seconds from the end of the ramp to the end of the storm.
    pub server_cpu_seconds: f64,
    /// Upgrades the server refused with 503 during the storm.
    pub server_refused: u64,
}

/// What one storm run needs to know.
pub struct StormSetup {
    pub conns: usize,
    pub backoff: Backoff,
    pub bound: Duration,
    pub samples: usize,
}

/// Every policy's runs on `server`, one phase (a fresh server) each.
pub fn run(phases: &mut Phases, server: usize, setup: &StormSetup) -> anyhow::Result<StormBench> {
    let mut policies = Vec::new();
    let resumes: &[Option<OnOff>] = match phases.servers[server].speaks_tls() {
        true => &[Some(OnOff::On), Some(OnOff::Off)],
        false => &[None],
    };
    for backoff in [None, Some(setup.backoff)] {
        for &resume in resumes {
            let mut runs = Vec::new();
            for sample in 1..=setup.samples {
                let mut name = match backoff {
                    None => "storm at once".to_string(),
                    Some(_) => "storm with backoff".to_string(),
                };
                if resume == Some(OnOff::Off) {
                    name.push_str(", no resumption");
                }
                let run = phases.run(
                    &name,
                    Target::Server(server),
                    FloorRoute::Echo,
                    sample,
                    |running| one_run(running, setup, backoff, resume),
                )?;
                runs.push(run);
            }
            policies.push(policy(backoff, resume, runs));
        }
    }
    Ok(StormBench {
        conns: setup.conns,
        policies,
    })
}

fn one_run(
    running: &phase::Running,
    setup: &StormSetup,
    backoff: Option<Backoff>,
    resume: Option<OnOff>,
) -> anyhow::Result<phase::Outcome<StormRun>> {
    let mut load = running.load_config(ScenarioKind::Storm, "/echo");
    if let Some(resume) = resume {
        load.tls.tls_resume = resume;
    }
    load.conns = setup.conns;
    load.duration = setup.bound;
    load.storm_cause = StormCause::Reset;
    load.backoff = backoff;
    let refused = |stats: &crate::server::stats::Snapshot| {
        stats.totals.rejected_over_capacity + stats.totals.rejected_accept_rate
    };
    let mut before = None;
    let report = crate::load::run_with(&load, false, &mut |point| {
        if let Checkpoint::Full { .. } = point {
            let stats = running.server.stats().ok();
            before = Some((
                running.server.tree_cpu_seconds(),
                stats.map(|s| refused(&s)),
            ));
        }
    })?;
    let (cpu_before, refused_before) = before.context("the ramp never finished")?;
    let refused_after = running.server.stats().ok().map(|s| refused(&s));
    let storm = report.storm.clone().context("no storm section")?;
    let value = StormRun {
        storm,
        failures: report.connect.failures.clone(),
        server_cpu_seconds: running.server.tree_cpu_seconds() - cpu_before,
        server_refused: refused_after
            .zip(refused_before)
            .map_or(0, |(after, before)| after - before),
    };
    Ok(phase::Outcome { value, report })
}

fn policy(backoff: Option<Backoff>, resume: Option<OnOff>, runs: Vec<StormRun>) -> StormPolicy {
    let spread =
        |get: &dyn Fn(&StormRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
    let back: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.storm.all_back_seconds)
        .collect();
    StormPolicy {
        reconnect: backoff.map_or("at once".into(), |b| b.describe()),
        resumption: resume.map(|r| r == OnOff::On),
        all_back_s: (!back.is_empty()).then(|| Spread::of(&back)),
        runs_not_back: runs.len() - back.len(),
        attempts: spread(&|r| r.storm.attempts as f64),
        failed_attempts: spread(&|r| r.storm.failed_attempts as f64),
        server_refused: spread(&|r| r.server_refused as f64),
        listen_overflows: spread(&|r| r.storm.listen_overflows as f64),
        server_cpu_s: spread(&|r| r.server_cpu_seconds),
        reconnect_p99_ms: spread(&|r| r.storm.setup.p99_us / 1000.0),
        runs,
    }
}

/// The storm's lines in the bench's text.
pub fn text(storm: &StormBench) -> String {
    let mut out = String::new();
    for policy in &storm.policies {
        let back = match &policy.all_back_s {
            Some(back) => format!("all back in {} s", back.text(2)),
            None => "never all back".into(),
        };
        let missed = match policy.runs_not_back {
            0 => String::new(),
            n => format!(" ({n} run(s) not back within the bound)"),
        };
        let tls = match policy.resumption {
            Some(true) => ", resuming TLS sessions",
            Some(false) => ", every TLS handshake full",
            None => "",
        };
        let _ = writeln!(
            out,
            "storm     {} connections reset, reconnecting {}{tls}: {back}{missed}",
            storm.conns, policy.reconnect
        );
        let _ = writeln!(
            out,
            "          attempts {}, failed {}, refused by the server {}, ListenOverflows {}; reconnect p99 {} ms; server CPU {} s",
            policy.attempts.text(0),
            policy.failed_attempts.text(0),
            policy.server_refused.text(0),
            policy.listen_overflows.text(0),
            policy.reconnect_p99_ms.text(1),
            policy.server_cpu_s.text(2)
        );
    }
    out
}
