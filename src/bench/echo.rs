//! The echo job at each connection count: closed loop (window 1) against
//! the raw-byte echo floor and the server, interleaved, as a ratio; then
//! open loop against the server at a stated rate, with latency from each
//! message's due time (no coordinated omission).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::compare::{compare, Better, Compared};
use super::phase::{check_floor_complete, Outcome, Phases, Running, Side};
use crate::load;
use crate::load::config::ScenarioKind;
use crate::load::spread::Spread;

/// Open loop runs at this share of the closed loop's median throughput
/// unless `--echo-rate` says otherwise: busy, but well below saturation
/// (client and server share the cores here), so its latency is the
/// server's and not a queue's.
const OPEN_LOOP_SHARE: f64 = 0.25;

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EchoBench {
    /// Connections echoing at once.
    pub conns: usize,
    /// `closed-loop, window 1` or `open-loop R/s per connection`.
    pub mode: String,
    /// Open loop: the stated total rate, messages/s.
    pub open_loop_rate: Option<f64>,
    /// Messages echoed per second, per sample.
    pub msgs_per_s: Spread,
    /// Round-trip latency, median, per sample, microseconds.
    pub p50_us: Spread,
    /// Round-trip latency, p99, per sample, microseconds.
    pub p99_us: Spread,
    /// Round-trip latency, p99.9, per sample, microseconds.
    pub p999_us: Spread,
    /// Open loop: how late sends were against their schedule (p99).
    pub send_lag_p99_us: Option<Spread>,
    /// Closed loop: msgs/s against the raw-byte echo floor.
    pub vs_floor: Option<Compared>,
}

/// One echo phase's figures.
struct EchoSample {
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    send_lag_p99_us: Option<f64>,
}

/// Closed loop (the floor and every server interleaved), then open loop on
/// every server at one rate, for `conns`. Returns, per server, its closed-
/// and open-loop results.
pub fn run(
    phases: &mut Phases,
    conns: usize,
    duration: Duration,
    samples: usize,
    open_loop_rate: Option<f64>,
) -> anyhow::Result<Vec<Vec<EchoBench>>> {
    let job = format!("echo {conns} closed-loop");
    let (floor, servers) = phases.interleave(&job, FloorRoute::Echo, samples, |running| {
        echo_phase(running, running.side, conns, duration, None)
    })?;
    let closed: Vec<EchoBench> = servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let mode = "closed-loop, window 1".to_string();
            let mut closed = summarise(conns, mode, None, server, Some(&floor));
            if let Some(compared) = &mut closed.vs_floor {
                compared.flagged_samples = phases.trouble_in(&job, i);
            }
            closed
        })
        .collect();
    // One rate for every server, from the slowest: the same offered load.
    let slowest = closed
        .iter()
        .map(|c| c.msgs_per_s.median)
        .fold(f64::INFINITY, f64::min);
    let rate = open_loop_rate.unwrap_or(slowest * OPEN_LOOP_SHARE);
    let per_conn = (rate / conns as f64).max(0.1);
    let job = format!("echo {conns} open-loop");
    let open = phases.each_server(&job, FloorRoute::Echo, samples, |running| {
        echo_phase(running, Side::Server, conns, duration, Some(per_conn))
    })?;
    let mode = format!("open-loop {per_conn:.1}/s per connection");
    Ok(closed
        .into_iter()
        .zip(&open)
        .map(|(closed, open)| {
            let open = summarise(
                conns,
                mode.clone(),
                Some(per_conn * conns as f64),
                open,
                None,
            );
            vec![closed, open]
        })
        .collect())
}

fn echo_phase(
    running: &Running,
    side: Side,
    conns: usize,
    duration: Duration,
    per_conn_rate: Option<f64>,
) -> anyhow::Result<Outcome<EchoSample>> {
    let mut config = running.load_config(ScenarioKind::Echo, "/echo");
    config.conns = conns;
    config.duration = duration;
    config.send_rate = per_conn_rate;
    let report = load::run(&config)?;
    if side == Side::Floor {
        check_floor_complete(&report, conns)?;
    }
    let e = report
        .echo
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the load report has no echo section"))?;
    let value = EchoSample {
        msgs_per_s: e.msgs_per_s,
        p50_us: e.latency.p50_us,
        p99_us: e.latency.p99_us,
        p999_us: e.latency.p999_us,
        send_lag_p99_us: e.send_lag.map(|lag| lag.p99_us),
    };
    Ok(Outcome { value, report })
}

fn summarise(
    conns: usize,
    mode: String,
    open_loop_rate: Option<f64>,
    server: &[EchoSample],
    floor: Option<&[EchoSample]>,
) -> EchoBench {
    let of = |samples: &[EchoSample], f: fn(&EchoSample) -> f64| -> Vec<f64> {
        samples.iter().map(f).collect()
    };
    let lags: Vec<f64> = server.iter().filter_map(|s| s.send_lag_p99_us).collect();
    EchoBench {
        conns,
        mode,
        open_loop_rate,
        msgs_per_s: Spread::of(&of(server, |s| s.msgs_per_s)),
        p50_us: Spread::of(&of(server, |s| s.p50_us)),
        p99_us: Spread::of(&of(server, |s| s.p99_us)),
        p999_us: Spread::of(&of(server, |s| s.p999_us)),
        send_lag_p99_us: (!lags.is_empty()).then(|| Spread::of(&lags)),
        vs_floor: floor.map(|floor| {
            compare(
                &format!("echo {conns} connections closed-loop, msgs/s"),
                Better::Higher,
                &of(server, |s| s.msgs_per_s),
                &of(floor, |s| s.msgs_per_s),
            )
        }),
    }
}
