//! One phase of a bench: one sample of one job against one server, floor or
//! measured. Every phase starts a fresh server process, waits for a settled
//! system first (the last phase's sockets gone), reads the kernel's TCP
//! counters before and after, and stops the server — by process group, so
//! nothing a wrapper started survives. A floor server that fails, or a floor
//! phase that did not complete, is an error: a broken floor must never turn
//! into a figure.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::bare::FloorRoute;
use super::settle::{self, Settled, Sockets};
use super::{BenchConfig, Measured};
use crate::load::config::{LoadConfig, ScenarioKind};
use crate::load::report::Report;
use crate::netstat;
use crate::process::ServerProcess;
use crate::ui::feed;

/// Longest wait for the system to settle before a phase.
const SETTLE_BOUND: Duration = Duration::from_secs(60);
/// Longest wait for a server's `ready` line.
const START_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// `fanout bare`: the floor.
    Floor,
    /// The server being measured.
    Server,
}

/// What a phase runs on: the floor, or one of the measured servers (by
/// its index in the bench's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Floor,
    Server(usize),
}

/// What the results keep of every phase.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PhaseRecord {
    /// Position in the run, from 1.
    pub index: usize,
    /// `room`, `echo 1000 closed-loop`, `echo 1000 open-loop`, `churn`.
    pub job: String,
    /// Whether it ran on the floor or on a measured server.
    pub side: Side,
    /// The measured server's name (`epoll`, `uring`, `other`); none for a floor.
    pub server: Option<String>,
    /// Which sample of its job and side this phase was (from 1).
    pub sample: usize,
    /// The wait for a settled system before the phase.
    pub settle: Settled,
    /// How long the phase took, seconds.
    pub seconds: f64,
    /// Kernel counters that changed during the phase.
    pub netstat: netstat::Counters,
    /// Counters that mean drops, overflows or retransmits, e.g.
    /// "ListenOverflows +12": the phase's figures are flagged by them.
    pub trouble: Vec<String>,
    /// What that trouble usually means.
    pub causes: Vec<String>,
    /// What the load generator warned of during the phase.
    pub warnings: Vec<String>,
}

impl PhaseRecord {
    /// `phase 4 (room, uring sample 2)`.
    pub fn label(&self) -> String {
        phase_label(self.index, &self.job, self.who(), self.sample)
    }

    /// `floor`, or the measured server's name.
    pub fn who(&self) -> &str {
        self.server.as_deref().unwrap_or("floor")
    }
}

fn phase_label(index: usize, job: &str, who: &str, sample: usize) -> String {
    format!("phase {index} ({job}, {who} sample {sample})")
}

/// A running phase: its server and what it ran on.
pub struct Running {
    pub server: ServerProcess,
    pub side: Side,
    pub target: Target,
    /// Does the server answer `stats` (fanout serve or fanout bare)?
    pub fanout: bool,
    /// The program and arguments it was started with (to start more).
    pub command: Vec<std::ffi::OsString>,
    /// The SHA-256 of its certificate, when it speaks TLS.
    pub tls_pin: Option<String>,
    /// `fanout bench --deflate`: loads offer permessage-deflate and send
    /// JSON-like payloads.
    pub deflate_loads: bool,
    /// `fanout bench --size`.
    pub message_size: usize,
    /// The live page (--ui): every load of the phase reports to it.
    pub live: Option<crate::ui::Live>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        let scheme = match (self.side, &self.tls_pin) {
            (Side::Floor, _) => "bare",
            (Side::Server, Some(_)) => "wss",
            (Side::Server, None) => "ws",
        };
        format!("{scheme}://{}{path}", self.server.addr)
    }

    /// A load of `kind` on `path` of this server, pinned to its
    /// certificate when it speaks TLS.
    pub fn load_config(&self, kind: ScenarioKind, path: &str) -> LoadConfig {
        let mut config = LoadConfig::defaults(kind, &self.url(path));
        config.tls.tls_pin = self.tls_pin.clone();
        if matches!(kind, ScenarioKind::Broadcast | ScenarioKind::Echo) {
            config.size = self.message_size;
        }
        if self.deflate_loads {
            config.payload = crate::load::payload::Fill::Json;
            // The floor speaks bare://, which has no extensions.
            config.deflate = self.side == Side::Server;
        }
        config.live = self.live.clone();
        config
    }
}

/// The certificate's SHA-256 from a server's `tls` line.
fn pin_from(tls_line: Option<&str>) -> Option<String> {
    let line = tls_line?;
    let at = line.find("sha256 ")? + "sha256 ".len();
    Some(
        line[at..]
            .split(|c: char| !c.is_ascii_hexdigit())
            .next()?
            .to_string(),
    )
}

/// What a phase's job hands back besides its own result.
pub struct Outcome<T> {
    pub value: T,
    /// The load report, whose warnings join the phase's.
    pub report: Report,
}

/// Runs phases in order and keeps their records.
pub struct Phases {
    max_conns: usize,
    /// --serve-arg: appended to every `fanout serve`.
    serve_args: Vec<String>,
    /// Appended to every `fanout serve` until cleared: a job's own options
    /// (the backplane's Redis and channel).
    pub extra_args: Vec<String>,
    baseline: Sockets,
    /// The servers measured, in the order of the results.
    pub servers: Vec<Measured>,
    pub records: Vec<PhaseRecord>,
    /// Plan lines of the measured servers, as they printed them (or their
    /// command), by server.
    pub server_plans: Vec<String>,
    /// Plan lines of the floors (one per floor route).
    pub floor_plans: Vec<String>,
    total: usize,
    /// --deflate: what every load offers and sends (`Running::deflate_loads`).
    deflate_loads: bool,
    message_size: usize,
    /// The live page (--ui).
    live: Option<crate::ui::Live>,
}

impl Phases {
    pub fn new(config: &BenchConfig, baseline: Sockets, total: usize) -> Phases {
        let servers = config.measured();
        Phases {
            serve_args: config.serve_arg.clone(),
            extra_args: Vec::new(),
            max_conns: super::server_max_conns(config.conns),
            baseline,
            server_plans: vec![String::new(); servers.len()],
            servers,
            records: Vec::new(),
            floor_plans: Vec::new(),
            total,
            deflate_loads: config.deflate_loads(),
            message_size: config.size,
            live: config.live.clone(),
        }
    }

    /// Seconds the rest of the plan should take at the mean pace of the
    /// phases so far (none before the first is over).
    fn time_left(&self, index: usize) -> Option<f64> {
        let done = self.records.len();
        let spent: f64 = self
            .records
            .iter()
            .map(|r| r.seconds + r.settle.seconds)
            .sum();
        (done > 0).then(|| spent / done as f64 * (self.total + 1).saturating_sub(index) as f64)
    }

    /// The measured servers' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.servers.iter().map(Measured::name).collect()
    }

    /// Tell the live page a phase begins.
    fn publish_start(&self, index: usize, job: &str, who: &str, sample: usize) {
        if let Some(live) = &self.live {
            let phase = feed::Phase {
                index,
                total: self.total,
                job,
                who,
                sample,
            };
            live.publish(&feed::phase_started(&phase, self.time_left(index)));
        }
    }

    /// Tell the live page what the phase just recorded measured.
    fn publish_done(&self, report: &Report) {
        let (Some(live), Some(r)) = (&self.live, self.records.last()) else {
            return;
        };
        let phase = feed::Phase {
            index: r.index,
            total: self.total,
            job: &r.job,
            who: r.who(),
            sample: r.sample,
        };
        live.publish(&feed::phase_done(
            &phase,
            r.seconds,
            &r.netstat,
            &r.warnings,
            report,
        ));
    }

    /// A job counted `planned` phases and ran `ran` (a search that stopped
    /// early, or went on): the progress lines count to the real end.
    pub fn expect(&mut self, planned: usize, ran: usize) {
        self.total = (self.total + ran).saturating_sub(planned);
    }

    /// The order servers run in for `sample`: rotated every sample, so no
    /// backend always follows the floor (or another backend).
    fn order(&self, sample: usize) -> impl Iterator<Item = usize> {
        let n = self.servers.len();
        (0..n).map(move |k| (k + sample - 1) % n)
    }

    /// Run one phase: settle, start the server `target` (a floor for
    /// `route`), run `job`, read the counters, stop the server.
    pub fn run<T>(
        &mut self,
        job: &str,
        target: Target,
        route: FloorRoute,
        sample: usize,
        body: impl FnOnce(&Running) -> anyhow::Result<Outcome<T>>,
    ) -> anyhow::Result<T> {
        let index = self.records.len() + 1;
        let server = match target {
            Target::Floor => None,
            Target::Server(i) => Some(self.servers[i].name()),
        };
        let who = server.as_deref().unwrap_or("floor");
        let label = phase_label(index, job, who, sample);
        eprintln!("fanout bench: [{index}/{}] {label}", self.total);
        self.publish_start(index, job, who, sample);
        let settle = settle::wait_back_to(&self.baseline, SETTLE_BOUND);
        let before = netstat::read();
        let started = Instant::now();
        let running = self.start(target, route)?;
        let side = running.side;
        let watch = self
            .live
            .clone()
            .map(|live| feed::ServerWatch::start(live, running.server.pid() as u32, index));
        let outcome = body(&running);
        drop(watch);
        let after = netstat::read();
        let stopped = stop(running);
        let outcome = outcome.with_context(|| label.clone())?;
        stopped.with_context(|| format!("{label}: stopping the server"))?;
        let netstat = netstat::delta(&before, &after);
        let mut warnings: Vec<String> = outcome.report.client.warnings.clone();
        if !settle.settled {
            warnings.push(format!(
                "the system had not settled after {:.0} s ({} TCP sockets in use, {} in TIME_WAIT; {} and {} before the run)",
                settle.seconds,
                settle.sockets.tcp_inuse,
                settle.sockets.tcp_time_wait,
                self.baseline.tcp_inuse,
                self.baseline.tcp_time_wait
            ));
        }
        self.records.push(PhaseRecord {
            index,
            job: job.to_string(),
            side,
            server,
            sample,
            settle,
            seconds: started.elapsed().as_secs_f64(),
            trouble: netstat::trouble(&netstat),
            causes: netstat::explain(&netstat),
            netstat,
            warnings,
        });
        self.publish_done(&outcome.report);
        Ok(outcome.value)
    }

    /// `samples` phases of `job` on the floor and on every server,
    /// interleaved: floor, then each server (in an order rotated every
    /// sample), floor, … Returns the floor's results and each server's.
    pub fn interleave<T>(
        &mut self,
        job: &str,
        route: FloorRoute,
        samples: usize,
        body: impl Fn(&Running) -> anyhow::Result<Outcome<T>>,
    ) -> anyhow::Result<(Vec<T>, Vec<Vec<T>>)> {
        self.samples(job, route, samples, true, body)
    }

    /// `samples` phases of `job` on every server, interleaved as in
    /// [`Phases::interleave`], with no floor.
    pub fn each_server<T>(
        &mut self,
        job: &str,
        route: FloorRoute,
        samples: usize,
        body: impl Fn(&Running) -> anyhow::Result<Outcome<T>>,
    ) -> anyhow::Result<Vec<Vec<T>>> {
        Ok(self.samples(job, route, samples, false, body)?.1)
    }

    /// The one loop behind both: per sample, the floor (if `with_floor`),
    /// then every server in that sample's order.
    fn samples<T>(
        &mut self,
        job: &str,
        route: FloorRoute,
        samples: usize,
        with_floor: bool,
        body: impl Fn(&Running) -> anyhow::Result<Outcome<T>>,
    ) -> anyhow::Result<(Vec<T>, Vec<Vec<T>>)> {
        let mut floor = Vec::new();
        let mut servers: Vec<Vec<T>> = self.servers.iter().map(|_| Vec::new()).collect();
        for sample in 1..=samples {
            if with_floor {
                floor.push(self.run(job, Target::Floor, route, sample, &body)?);
            }
            for i in self.order(sample).collect::<Vec<_>>() {
                servers[i].push(self.run(job, Target::Server(i), route, sample, &body)?);
            }
        }
        Ok((floor, servers))
    }

    /// "uring sample 2 (phase 4): ListenOverflows +130" for every phase of
    /// `job` on the floor or on server `server` whose kernel counters show
    /// trouble.
    pub fn trouble_in(&self, job: &str, server: usize) -> Vec<String> {
        let name = self.servers[server].name();
        self.records
            .iter()
            .filter(|r| r.job == job && !r.trouble.is_empty())
            .filter(|r| r.server.is_none() || r.server.as_deref() == Some(&name))
            .map(|r| {
                format!(
                    "{} sample {} (phase {}): {}",
                    r.who(),
                    r.sample,
                    r.index,
                    r.trouble.join(", ")
                )
            })
            .collect()
    }

    fn start(&mut self, target: Target, route: FloorRoute) -> anyhow::Result<Running> {
        let measured = match target {
            Target::Floor => None,
            Target::Server(i) => Some(self.servers[i].clone()),
        };
        let fanout = !matches!(measured, Some(Measured::Command(_)));
        let command = match &measured {
            None => {
                let mut command = Command::new(std::env::current_exe()?);
                command.args(["bare", "--listen", "127.0.0.1:0", "--route"]);
                command.arg(match route {
                    FloorRoute::Room => "room",
                    FloorRoute::Echo => "echo",
                });
                command.args(["--max-conns", &self.max_conns.to_string()]);
                command
            }
            Some(
                Measured::Fanout(backend)
                | Measured::FanoutTls(backend)
                | Measured::FanoutDeflate(backend, _),
            ) => {
                let mut command = Command::new(std::env::current_exe()?);
                command.args(["serve", "--listen", "127.0.0.1:0"]);
                command.args(["--backend", backend.name()]);
                if measured.as_ref().is_some_and(Measured::speaks_tls) {
                    command.arg("--tls-self-signed");
                }
                if let Some(Measured::FanoutDeflate(_, mode)) = &measured {
                    command.args(["--deflate", &super::deflate_name(*mode)]);
                }
                if self.deflate_loads && backend.is_task_per_connection() {
                    // Deflate is served by fanout's session on every task
                    // backend: off runs on it too, so the ratios compare
                    // deflate, not tungstenite with fanout's session.
                    command.args(["--ws-stack", "fanout"]);
                }
                // A one-fd-table server is asked for what it can hold; past
                // that it stops short, and the report says where and why.
                let mut max_conns = self.max_conns;
                if backend.single_fd_table() {
                    max_conns = max_conns.min(crate::serve::one_table_capacity(*backend)?);
                }
                command.args(["--max-conns", &max_conns.to_string()]);
                command.args(&self.serve_args);
                command.args(&self.extra_args);
                command
            }
            Some(Measured::Command(cmd)) => {
                let mut words = cmd.command.split_whitespace();
                let program = words.next().context("--server-cmd is empty")?;
                let mut command = Command::new(program);
                command.args(words).arg("127.0.0.1:0");
                command
            }
        };
        let command_line: Vec<std::ffi::OsString> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(ToOwned::to_owned)
            .collect();
        let server = ServerProcess::spawn(command, START_PATIENCE)?;
        match (target, &measured) {
            (Target::Floor, _) if !self.floor_plans.contains(&server.plan) => {
                self.floor_plans.push(server.plan.clone())
            }
            (Target::Floor, _) => {}
            (Target::Server(i), Some(Measured::Command(cmd))) => {
                self.server_plans[i] = cmd.command.clone()
            }
            (Target::Server(i), _) => {
                self.server_plans[i] = match &server.tls {
                    Some(tls) => format!("{}; {tls}", server.plan),
                    None => server.plan.clone(),
                }
            }
        }
        let tls_pin = pin_from(server.tls.as_deref());
        Ok(Running {
            tls_pin,
            server,
            side: match target {
                Target::Floor => Side::Floor,
                Target::Server(_) => Side::Server,
            },
            target,
            fanout,
            command: command_line,
            deflate_loads: self.deflate_loads,
            message_size: self.message_size,
            live: self.live.clone(),
        })
    }
}

/// Stop a phase's server. A fanout server (or floor) must exit cleanly.
fn stop(running: Running) -> anyhow::Result<()> {
    if !running.fanout {
        running.server.stop_group()?;
        return Ok(());
    }
    let side = running.side;
    let (_, status) = running.server.stop()?;
    if !status.success() {
        match side {
            Side::Floor => bail!("the floor server failed ({status}); see its error above"),
            Side::Server => bail!("the server exited with {status}"),
        }
    }
    Ok(())
}

/// A floor phase must have done all of its work: every connection open,
/// nothing lost, nothing left in flight. Otherwise its time is not a floor.
pub fn check_floor_complete(report: &Report, conns: usize) -> anyhow::Result<()> {
    let c = &report.connect;
    let mut problems = Vec::new();
    if c.opened != conns as u64 || c.failed > 0 {
        let causes: Vec<String> = c
            .failures
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        problems.push(format!(
            "{} of {conns} connections opened ({})",
            c.opened,
            causes.join(", ")
        ));
    }
    if c.closed_by_server > 0 {
        problems.push(format!(
            "{} connections closed by the floor server",
            c.closed_by_server
        ));
    }
    if let Some(b) = &report.broadcast {
        let t = &b.tally;
        if t.lost() + t.in_flight + t.duplicated + b.timed_out > 0 {
            problems.push(format!(
                "deliveries: {} missing, {} lost with closed members, {} in flight, {} duplicated, {} broadcasts timed out",
                t.missing, t.closed, t.in_flight, t.duplicated, b.timed_out
            ));
        }
    }
    if let Some(e) = &report.echo {
        if e.messages == 0 {
            problems.push("no echo came back".into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "the floor did not complete its work, so it is not a floor: {}",
            problems.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::{BroadcastReport, ClientReport, ConnectReport};

    fn report(opened: u64, missing: u64) -> Report {
        Report {
            scenario: "broadcast".into(),
            url: "bare://127.0.0.1:1/room".into(),
            conns: 100,
            payload: None,
            deflate_agreed: None,
            client_shards: 2,
            private_fd_tables: false,
            sources: vec![],
            source_notes: vec![],
            storm: None,
            burst: None,
            balance: None,
            servers: Vec::new(),
            agents: None,
            recorded: Default::default(),
            connect: ConnectReport {
                opened,
                failed: 100 - opened,
                ..ConnectReport::default()
            },
            broadcast: Some(BroadcastReport {
                tally: crate::load::accounting::Tally {
                    missing,
                    ..Default::default()
                },
                ..BroadcastReport::default()
            }),
            echo: None,
            churn: None,
            client: ClientReport::default(),
            kernel_counters: Default::default(),
            kernel_counters_work: Default::default(),
            kernel_trouble: Vec::new(),
            kernel_causes: Vec::new(),
        }
    }

    #[test]
    fn a_complete_floor_passes() {
        assert!(check_floor_complete(&report(100, 0), 100).is_ok());
    }

    #[test]
    fn failed_connections_or_lost_deliveries_make_a_floor_an_error() {
        let error = check_floor_complete(&report(97, 0), 100)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("97 of 100 connections") && error.contains("not a floor"),
            "{error}"
        );
        let error = check_floor_complete(&report(100, 3), 100)
            .unwrap_err()
            .to_string();
        assert!(error.contains("3 missing"), "{error}");
    }
}
