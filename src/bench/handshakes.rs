//! `fanout bench --measure handshakes`: what opening a connection costs the
//! server, per second of its CPU. Churn at a fixed rate (--handshake-rate
//! for --churn-duration; each cycle connects, upgrades, echoes once and
//! closes), --samples runs of each kind, each on a fresh server. A plain
//! server has one kind; a TLS server (`--tls`) two per --tls-variants
//! (certificate key × key exchange): every handshake full
//! (`--tls-resume off`) and resumed from the server's tickets. The figure is
//! cycles completed per CPU-second of the server (its process tree, user +
//! system, over the churn), beside the handshakes it counted, the share of
//! them resumed, and the setup (connect + handshake + upgrade) p50 and p99.
//! A fixed rate, not the highest sustained (that is `churn`): at the same
//! rate every kind does the same work but the handshake.

use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::phase::{self, Phases, Running, Target};
use super::Measured;
use crate::load::config::ScenarioKind;
use crate::load::report::ChurnReport;
use crate::load::spread::Spread;
use crate::tls::{value_name, Group, KeyKind, OnOff};
use crate::units::grouped;

/// A certificate key and a key-exchange group: `ecdsa-p256/x25519`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsVariant {
    pub key: KeyKind,
    pub group: Group,
}

impl TlsVariant {
    pub fn name(&self) -> String {
        format!("{}/{}", value_name(&self.key), value_name(&self.group))
    }

    /// What `fanout serve` is told to make and accept.
    fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls-key-kind".into(),
            value_name(&self.key),
            "--tls-groups".into(),
            value_name(&self.group),
        ]
    }
}

impl FromStr for TlsVariant {
    type Err = String;

    fn from_str(text: &str) -> Result<TlsVariant, String> {
        let (key, group) = text.split_once('/').ok_or_else(|| {
            format!("`{text}` is not KEY/GROUP (e.g. ecdsa-p256/x25519, rsa2048/x25519)")
        })?;
        Ok(TlsVariant {
            key: clap::ValueEnum::from_str(key, true)
                .map_err(|_| format!("`{key}`: the key is one of ecdsa-p256, ed25519, rsa2048"))?,
            group: clap::ValueEnum::from_str(group, true)
                .map_err(|_| format!("`{group}`: the group is one of x25519, p256, p384"))?,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HandshakeBench {
    /// Connections asked for per second (--handshake-rate).
    pub rate_per_s: f64,
    /// How long each run churned, seconds (--churn-duration).
    pub seconds: f64,
    /// One entry per kind: `plain`, or a variant's `full` and `resumed`.
    pub kinds: Vec<HandshakeKind>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HandshakeKind {
    /// `plain`, `ecdsa-p256/x25519 full`, `ecdsa-p256/x25519 resumed`, …
    pub kind: String,
    /// Cycles completed per CPU-second of the server, over the runs whose
    /// server used at least one clock tick of CPU (/proc counts in ticks,
    /// 10 ms here); none when no run did (too little to divide by).
    pub cycles_per_server_cpu_s: Option<Spread>,
    /// Cycles completed per second (the rate asked, when the server kept up).
    pub cycles_per_s: Spread,
    /// Of the TLS handshakes the server counted, the share resumed.
    pub resumed_share: Option<Spread>,
    /// Setup (connect, TLS handshake, upgrade) p50, ms.
    pub setup_p50_ms: Spread,
    /// Setup p99, ms.
    pub setup_p99_ms: Spread,
    /// Every run, each on a fresh server.
    pub runs: Vec<HandshakeRun>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HandshakeRun {
    /// The load generator's churn section.
    pub churn: ChurnReport,
    /// The server's CPU seconds over the churn.
    pub server_cpu_seconds: f64,
    /// TLS handshakes the server counted over the churn (none for plain,
    /// or for a server that does not answer `stats`).
    pub server_handshakes: Option<u64>,
    /// Of those, resumed.
    pub server_resumed: Option<u64>,
    /// The load generator's CPU over (wall time × cores).
    pub client_cpu_share: f64,
    /// The server's `tls` line: its certificate and key exchange.
    pub server_tls: Option<String>,
}

/// What the handshake runs need to know.
pub struct HandshakeSetup {
    pub rate: f64,
    pub duration: std::time::Duration,
    pub variants: Vec<TlsVariant>,
    pub samples: usize,
}

impl HandshakeSetup {
    /// Phases one server takes.
    pub fn phases(&self, measured: &Measured) -> usize {
        match measured.speaks_tls() {
            true => 2 * self.variants.len() * self.samples,
            false => self.samples,
        }
    }
}

/// Every kind's runs on `server`: plain, or each variant full then
/// resumed, alternating within each sample.
pub fn run(
    phases: &mut Phases,
    server: usize,
    setup: &HandshakeSetup,
) -> anyhow::Result<HandshakeBench> {
    let tls = phases.servers[server].speaks_tls();
    let mut kinds = Vec::new();
    if !tls {
        let runs = (1..=setup.samples)
            .map(|sample| one_phase(phases, server, setup, "plain", None, sample))
            .collect::<anyhow::Result<Vec<_>>>()?;
        kinds.push(kind("plain".into(), runs));
    }
    let variants = if tls { setup.variants.as_slice() } else { &[] };
    for variant in variants {
        phases.extra_args = variant.serve_args();
        // Full, then resumed, alternating within each sample.
        let modes = [("full", OnOff::Off), ("resumed", OnOff::On)];
        let mut runs: [Vec<HandshakeRun>; 2] = Default::default();
        for sample in 1..=setup.samples {
            for ((mode, resume), runs) in modes.iter().zip(&mut runs) {
                let label = format!("{} {mode}", variant.name());
                let tls = Some((variant, *resume));
                runs.push(one_phase(phases, server, setup, &label, tls, sample)?);
            }
        }
        phases.extra_args.clear();
        for ((mode, _), runs) in modes.iter().zip(runs) {
            kinds.push(kind(format!("{} {mode}", variant.name()), runs));
        }
    }
    Ok(HandshakeBench {
        rate_per_s: setup.rate,
        seconds: setup.duration.as_secs_f64(),
        kinds,
    })
}

fn one_phase(
    phases: &mut Phases,
    server: usize,
    setup: &HandshakeSetup,
    label: &str,
    tls: Option<(&TlsVariant, OnOff)>,
    sample: usize,
) -> anyhow::Result<HandshakeRun> {
    phases.run(
        &format!("handshakes {label}"),
        Target::Server(server),
        FloorRoute::Echo,
        sample,
        |running| one_run(running, setup, tls),
    )
}

fn one_run(
    running: &Running,
    setup: &HandshakeSetup,
    tls: Option<(&TlsVariant, OnOff)>,
) -> anyhow::Result<phase::Outcome<HandshakeRun>> {
    let mut load = running.load_config(ScenarioKind::Churn, "/echo");
    load.rate = Some(setup.rate);
    load.duration = setup.duration;
    if let Some((variant, resume)) = tls {
        load.tls.tls_groups = vec![variant.group];
        load.tls.tls_resume = resume;
    }
    let counted = |running: &Running| {
        let stats = running.server.stats().ok()?;
        Some((stats.totals.tls_handshakes, stats.totals.tls_resumed))
    };
    let before = (running.fanout).then(|| counted(running)).flatten();
    let cpu_before = running.server.tree_cpu_seconds();
    let report = crate::load::run(&load)?;
    let server_cpu_seconds = running.server.tree_cpu_seconds() - cpu_before;
    let after = (running.fanout).then(|| counted(running)).flatten();
    let delta = before.zip(after).filter(|_| tls.is_some());
    let value = HandshakeRun {
        churn: report.churn.clone().context("no churn section")?,
        server_cpu_seconds,
        server_handshakes: delta.map(|((h0, _), (h1, _))| h1 - h0),
        server_resumed: delta.map(|((_, r0), (_, r1))| r1 - r0),
        client_cpu_share: report.client.cpu_share,
        server_tls: running.server.tls.clone(),
    };
    Ok(phase::Outcome { value, report })
}

fn kind(name: String, runs: Vec<HandshakeRun>) -> HandshakeKind {
    let spread =
        |get: &dyn Fn(&HandshakeRun) -> f64| Spread::of(&runs.iter().map(get).collect::<Vec<_>>());
    let shares: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(r.server_resumed? as f64 / r.server_handshakes?.max(1) as f64))
        .collect();
    let per_cpu: Vec<f64> = runs
        .iter()
        .filter(|r| r.server_cpu_seconds > 0.0)
        .map(|r| r.churn.completed as f64 / r.server_cpu_seconds)
        .collect();
    HandshakeKind {
        kind: name,
        cycles_per_server_cpu_s: (!per_cpu.is_empty()).then(|| Spread::of(&per_cpu)),
        cycles_per_s: spread(&|r| r.churn.rate_per_s),
        resumed_share: (!shares.is_empty()).then(|| Spread::of(&shares)),
        setup_p50_ms: spread(&|r| r.churn.setup.p50_us / 1000.0),
        setup_p99_ms: spread(&|r| r.churn.setup.p99_us / 1000.0),
        runs,
    }
}

impl HandshakeKind {
    /// Whether every run completed the rate asked (within 5 %).
    pub fn kept_up(&self, rate_per_s: f64) -> bool {
        self.cycles_per_s.min >= super::churn::MIN_COMPLETED_SHARE * rate_per_s
    }
}

impl HandshakeBench {
    /// A kind's entry by name.
    pub fn kind(&self, name: &str) -> Option<&HandshakeKind> {
        self.kinds.iter().find(|k| k.kind == name)
    }

    /// Each variant's resumed ÷ full, cycles per server CPU-second (medians).
    pub fn resumed_over_full(&self) -> Vec<(String, f64)> {
        self.kinds
            .iter()
            .filter_map(|full| {
                let variant = full.kind.strip_suffix(" full")?;
                let resumed = self.kind(&format!("{variant} resumed"))?;
                let ratio =
                    resumed.cycles_per_server_cpu_s?.median / full.cycles_per_server_cpu_s?.median;
                Some((variant.to_string(), ratio))
            })
            .collect()
    }
}

/// The handshake lines in the bench's text.
pub fn text(bench: &HandshakeBench) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "handshake churn at {}/s for {:.0} s (connect, handshake, upgrade, one echo, close), per run on a fresh server:",
        grouped(bench.rate_per_s, 0),
        bench.seconds
    );
    let width = bench.kinds.iter().map(|k| k.kind.len()).max().unwrap_or(0);
    for kind in &bench.kinds {
        let resumed = kind
            .resumed_share
            .map(|s| format!("; resumed {} %", s.scaled(100.0).text(1)))
            .unwrap_or_default();
        let kept_up = match kind.kept_up(bench.rate_per_s) {
            true => "",
            false => "; DID NOT KEEP UP at this rate: its CPU-seconds were spent saturated, beside the load generator",
        };
        let _ = writeln!(
            out,
            "          {:<width$}  {} ({} cycles/s); setup p50 {} ms, p99 {} ms{resumed}{kept_up}",
            kind.kind,
            match &kind.cycles_per_server_cpu_s {
                Some(per_cpu) => format!("{} cycles per server CPU-second", per_cpu.text(0)),
                None => "server CPU under one clock tick in every run: cycles per CPU-second not measured".into(),
            },
            kind.cycles_per_s.text(0),
            kind.setup_p50_ms.text(2),
            kind.setup_p99_ms.text(2),
        );
    }
    for (variant, ratio) in bench.resumed_over_full() {
        let _ = writeln!(
            out,
            "          {variant}: resumed ÷ full, per server CPU-second: {ratio:.2}×"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_bad_ones_say_what_is_expected() {
        let variant: TlsVariant = "rsa2048/p256".parse().unwrap();
        assert_eq!(variant.key, KeyKind::Rsa2048);
        assert_eq!(variant.group, Group::P256);
        assert_eq!(variant.name(), "rsa2048/p256");
        assert_eq!(
            variant.serve_args(),
            ["--tls-key-kind", "rsa2048", "--tls-groups", "p256"]
        );
        let error = "ecdsa-p256".parse::<TlsVariant>().unwrap_err();
        assert!(error.contains("KEY/GROUP"), "{error}");
        let error = "dsa/x25519".parse::<TlsVariant>().unwrap_err();
        assert!(error.contains("rsa2048"), "{error}");
        let error = "rsa2048/x448".parse::<TlsVariant>().unwrap_err();
        assert!(error.contains("x25519"), "{error}");
    }
}
