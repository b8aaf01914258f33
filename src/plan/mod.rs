//! `fanout plan`: how many machines like the measured one a fleet needs —
//! memory for the connections, accepting everyone back after a restart,
//! delivering their messages — with the binding constraint named, the
//! headroom stated, and the over-provisioning the routing policy forces,
//! from a seeded simulation of spreading the work ([`routing`]).

pub mod fleet;
pub mod routing;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bench::BenchResult;
use crate::units::parse_duration;
use crate::usage::UsageError;
use fleet::{Demand, Fleet, Measured};
use routing::{ConnectionSetup, Distribution, Imbalance, Policy, RequestSetup};

/// Connections simulated at most; more users are simulated at this count,
/// which overstates their imbalance (fewer per server spread less evenly).
const MAX_SIMULATED_CONNS: u64 = 1_000_000;
/// Requests per point of the request simulation: at least this many, and
/// at least [`REQUESTS_PER_SERVER`] per server, at most [`MAX_REQUESTS`].
const SIMULATED_REQUESTS: u64 = 200_000;
const REQUESTS_PER_SERVER: u64 = 5_000;
const MAX_REQUESTS: u64 = 2_000_000;
/// The request queue a plan keeps the p99 within, to state what each policy
/// lets servers run at.
const QUEUE_TARGET: f64 = 10.0;

#[derive(Clone, Debug, clap::Args)]
pub struct PlanConfig {
    /// Users connected at once across the fleet (one connection each).
    #[arg(long)]
    pub users: u64,

    /// Messages each user receives per second.
    #[arg(long, default_value_t = 0.1)]
    pub msgs_per_user: f64,

    /// After a restart of the fleet, every user must be back within this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub reconnect_window: Duration,

    /// A `fanout bench` result file (results/<dir>/<name>.json).
    #[arg(long)]
    pub from: PathBuf,

    /// Which measured server to plan for. Default: the first in the file.
    #[arg(long)]
    pub server: Option<String>,

    /// Share of each measured capacity kept free.
    #[arg(long, default_value_t = 0.2)]
    pub headroom: f64,

    /// How the load balancers place connections.
    #[arg(long, value_enum, default_value_t = Policy::Random)]
    pub policy: Policy,

    /// Load balancers placing connections, each knowing only its own.
    #[arg(long, default_value_t = 1)]
    pub routers: usize,

    /// The routing simulation's seed: the same seed, the same numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Also write the plan as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One row of the request simulation.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRow {
    pub utilization: f64,
    pub routers: usize,
    pub policy: Policy,
    /// Requests found at the chosen server on arrival.
    pub queue: Distribution,
}

/// One row of the connection simulation.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionRow {
    pub routers: usize,
    pub policy: Policy,
    pub imbalance: Imbalance,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    /// The command line that produced this file.
    pub command: String,
    pub measured: Measured,
    pub demand: Demand,
    pub policy: Policy,
    pub routers: usize,
    pub seed: u64,
    pub fleet: Fleet,
    /// Machines at Heroku's 160 connections/s per dyno for the same window.
    pub heroku_dynos_for_reconnect: u64,
    /// Connections per server simulated (capped; see `simulated_note`).
    pub simulated_conns: u64,
    pub connections: Vec<ConnectionRow>,
    pub requests: Vec<RequestRow>,
}

pub fn plan(config: &PlanConfig) -> anyhow::Result<()> {
    check(config)?;
    let measured = measured(config)?;
    let mut demand = Demand {
        users: config.users,
        msgs_per_user_per_s: config.msgs_per_user,
        reconnect_window_s: config.reconnect_window.as_secs_f64(),
        headroom: config.headroom,
        imbalance: 1.0,
    };
    // The imbalance depends on how many machines share the users, and the
    // machines on the imbalance: settle both (a few rounds suffice).
    let simulated_conns = config.users.min(MAX_SIMULATED_CONNS);
    let mut fleet = fleet::size(&measured, &demand);
    for _ in 0..4 {
        let imbalance = connections(config, config.policy, config.routers, fleet.machines);
        demand.imbalance = imbalance.over_time.p99.max(imbalance.after_placement);
        let next = fleet::size(&measured, &demand);
        let settled = next.machines == fleet.machines;
        fleet = next;
        if settled {
            break;
        }
    }
    let machines = fleet.machines.max(2) as usize;
    let router_counts = router_counts(config.routers);
    let mut connection_rows = Vec::new();
    for &routers in &router_counts {
        for policy in Policy::ALL {
            connection_rows.push(ConnectionRow {
                routers,
                policy,
                imbalance: connections(config, policy, routers, machines as u64),
            });
        }
    }
    let mut request_rows = Vec::new();
    for &routers in &router_counts {
        for step in 1..=11 {
            for policy in Policy::ALL {
                let utilization = step as f64 / 10.0;
                request_rows.push(RequestRow {
                    utilization,
                    routers,
                    policy,
                    queue: routing::simulate_requests(&RequestSetup {
                        policy,
                        servers: machines,
                        routers,
                        utilization,
                        requests: (machines as u64 * REQUESTS_PER_SERVER)
                            .clamp(SIMULATED_REQUESTS, MAX_REQUESTS),
                        seed: config.seed,
                    }),
                });
            }
        }
    }
    let reconnect_rate = config.users as f64 / demand.reconnect_window_s;
    let plan = Plan {
        command: crate::json::command_line(),
        heroku_dynos_for_reconnect: (reconnect_rate
            / (fleet::HEROKU_CONNECTIONS_PER_S * (1.0 - config.headroom)))
            .ceil() as u64,
        measured,
        demand,
        policy: config.policy,
        routers: config.routers,
        seed: config.seed,
        fleet,
        simulated_conns,
        connections: connection_rows,
        requests: request_rows,
    };
    print!("{}", render(&plan));
    if let Some(path) = &config.json {
        crate::json::write(path, &plan)?;
    }
    Ok(())
}

fn check(config: &PlanConfig) -> Result<(), UsageError> {
    if config.users == 0 {
        return Err(UsageError("--users must be at least 1".into()));
    }
    if !(0.0..0.95).contains(&config.headroom) {
        return Err(UsageError(
            "--headroom is a share of capacity kept free: 0 to 0.95 (0.2 plans to 80 %)".into(),
        ));
    }
    if config.msgs_per_user < 0.0 || config.reconnect_window.is_zero() || config.routers == 0 {
        return Err(UsageError(
            "--msgs-per-user must not be negative, --reconnect-window and --routers must be positive".into(),
        ));
    }
    Ok(())
}

/// 1 and the routers asked for (the comparison shows what sharing no state costs).
fn router_counts(routers: usize) -> Vec<usize> {
    if routers == 1 {
        vec![1, 10]
    } else {
        vec![1, routers]
    }
}

fn connections(config: &PlanConfig, policy: Policy, routers: usize, machines: u64) -> Imbalance {
    let conns = config.users.min(MAX_SIMULATED_CONNS);
    routing::simulate_connections(&ConnectionSetup {
        policy,
        servers: machines.max(1) as usize,
        routers,
        conns,
        replacements: conns,
        seed: config.seed,
    })
}

/// The measured figures for the chosen server, from a bench result file.
fn measured(config: &PlanConfig) -> anyhow::Result<Measured> {
    let path = &config.from;
    let result = BenchResult::read(path)?;
    let server = match &config.server {
        None => result.servers.first(),
        Some(name) => result.servers.iter().find(|s| &s.name == name),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = result.servers.iter().map(|s| s.name.as_str()).collect();
        UsageError(format!(
            "{} has no server {}; it has: {}",
            path.display(),
            config.server.as_deref().unwrap_or("at all"),
            names.join(", ")
        ))
    })?;
    let memory = server.memory.as_ref().ok_or_else(|| {
        UsageError(format!(
            "{}: server {} has no memory figures (run the room job: fanout bench --measure room)",
            path.display(),
            server.name
        ))
    })?;
    let m = &result.machine;
    Ok(Measured {
        server: server.name.clone(),
        from: path.display().to_string(),
        machine: format!(
            "{}, fanout {} ({}), {} connections, {}",
            m.describe(),
            m.fanout_version,
            m.git_revision,
            result.conns,
            result.time_utc
        ),
        memory_bytes: m.memory_bytes,
        user_bytes_per_conn: memory.rss_per_conn.median,
        kernel_bytes_per_socket: memory.kernel_per_socket.median,
        accept_per_s: server.ramp.as_ref().map(|r| r.measured.median),
        deliveries_per_s: server.broadcast.as_ref().map(|b| b.deliveries_per_s.median),
    })
}

fn render(p: &Plan) -> String {
    let mut out = String::new();
    let d = &p.demand;
    let _ = writeln!(
        out,
        "fanout plan: {} users, {} messages/s each, all back within {} s after a restart, {:.0} % headroom",
        d.users,
        d.msgs_per_user_per_s,
        d.reconnect_window_s,
        d.headroom * 100.0
    );
    let _ = writeln!(
        out,
        "measured: server {} on {}\n  from {}\n",
        p.measured.server, p.measured.machine, p.measured.from
    );
    let _ = writeln!(
        out,
        "{:<46} {:>16} {:>16} {:>9}",
        "constraint", "fleet demand", "one machine", "machines"
    );
    for c in &p.fleet.constraints {
        let _ = writeln!(
            out,
            "{:<46} {:>16.0} {:>16.0} {:>9}",
            c.name, c.demand, c.per_machine, c.machines
        );
        let _ = writeln!(out, "    {} ({})", c.basis, c.unit);
    }
    let _ = writeln!(
        out,
        "\nmachines: {} — bound by {}; at that count each constraint runs at:",
        p.fleet.machines, p.fleet.binding
    );
    for (name, used) in &p.fleet.utilization {
        let _ = writeln!(out, "  {:<46} {:>5.1} % of measured", name, used * 100.0);
    }
    let _ = writeln!(
        out,
        "to survive losing one machine (its users reconnect to the rest), plan {} (N+1)",
        p.fleet.machines + 1
    );
    let _ = writeln!(
        out,
        "for context: at Heroku's {} new connections/s per dyno the reconnect alone would need {} dynos",
        fleet::HEROKU_CONNECTIONS_PER_S, p.heroku_dynos_for_reconnect
    );
    let _ = writeln!(
        out,
        "\nconnections placed by {} from {} router(s): the busiest machine holds {:.3}× the mean (p99 over time, or after everyone reconnects at once if worse); that is in the memory line above",
        p.policy.name(),
        p.routers,
        d.imbalance
    );
    let _ = writeln!(
        out,
        "\nlong-lived connections, {} over {} machines (seed {}): busiest ÷ mean",
        p.simulated_conns,
        p.fleet.machines.max(2),
        p.seed
    );
    let _ = writeln!(
        out,
        "{:>8} {:<18} {:>16} {:>9} {:>9} {:>9}",
        "routers", "policy", "after placement", "median", "p99", "max"
    );
    for row in &p.connections {
        let i = &row.imbalance;
        let _ = writeln!(
            out,
            "{:>8} {:<18} {:>16.4} {:>9.4} {:>9.4} {:>9.4}",
            row.routers,
            row.policy.name(),
            i.after_placement,
            i.over_time.median,
            i.over_time.p99,
            i.over_time.max
        );
    }
    let _ = writeln!(
        out,
        "\nrequests over {} servers (exponential service, Poisson arrivals, seed {}): p99 / max requests found at the chosen server",
        p.fleet.machines.max(2),
        p.seed
    );
    let policies: Vec<String> = Policy::ALL.iter().map(|p| p.name().to_string()).collect();
    let _ = writeln!(
        out,
        "{:>8} {:>6}  {}",
        "routers",
        "util",
        policies
            .iter()
            .map(|n| format!("{n:>18}"))
            .collect::<String>()
    );
    for chunk in p.requests.chunks(Policy::ALL.len()) {
        let cells: String = chunk
            .iter()
            .map(|r| format!("{:>18}", format!("{:.0} / {:.0}", r.queue.p99, r.queue.max)))
            .collect();
        let _ = writeln!(
            out,
            "{:>8} {:>5.0}%  {cells}{}",
            chunk[0].routers,
            chunk[0].utilization * 100.0,
            if chunk[0].utilization >= 1.0 {
                "   (at or over capacity: queues grow without bound; the figure is the run's length)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        out,
        "\nhighest utilization above that keeps the p99 queue within {QUEUE_TARGET} requests, and the servers that costs against running them full:"
    );
    for row in over_provisioning(&p.requests) {
        let _ = writeln!(
            out,
            "  {:>4} router(s) {:<18} {}",
            row.0,
            row.1.name(),
            match row.2 {
                Some(u) => format!("{:>4.0} %  ({:.2}× the servers)", u * 100.0, 1.0 / u),
                None => "none in the table".to_string(),
            }
        );
    }
    out
}

/// Per router count and policy: the highest simulated utilization below
/// full (at full, queues have no steady state) whose p99 queue stays within
/// [`QUEUE_TARGET`].
pub fn over_provisioning(rows: &[RequestRow]) -> Vec<(usize, Policy, Option<f64>)> {
    let mut out: Vec<(usize, Policy, Option<f64>)> = Vec::new();
    for row in rows {
        let within = row.utilization < 1.0 && row.queue.p99 <= QUEUE_TARGET;
        match out
            .iter_mut()
            .find(|(r, p, _)| *r == row.routers && *p == row.policy)
        {
            Some(entry) => {
                if within && entry.2.is_none_or(|u| u < row.utilization) {
                    entry.2 = Some(row.utilization);
                }
            }
            None => out.push((row.routers, row.policy, within.then_some(row.utilization))),
        }
    }
    out
}
