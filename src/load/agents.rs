//! Several load agents as one load (`fanout load … --coordinator
//! redis://HOST:PORT --agents K`): every agent runs the same command; each
//! takes a seat in Redis (INCR), waits until all K have, and all start at
//! the moment the first one set (wall clock, so one host or NTP-synced
//! hosts). Each opens its share of --conns and, at the end, publishes its
//! counts and raw latency histograms; the first agent, the coordinator,
//! merges the K results into one report — histograms merged bucket by
//! bucket, never averaged — beside its own. Connect and echo latencies are
//! measured within each agent, so they need no clock shared between hosts.
//! A broadcast is published by the first agent only: it releases each
//! message once its own members have the one before and tells the others
//! in Redis how many it has published; every agent tallies its members'
//! deliveries by sequence number. A delivery's latency compares the
//! publisher's stamp with the receiver's clock, so it is merged only from
//! agents on the publisher's host (same boot id: one CLOCK_MONOTONIC); the
//! report's `clock` says so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::accounting::Tally;
use super::histogram::{Latency, Recorded};
use super::report::{AgentLine, AgentsReport, Report};
use crate::backplane::redis_server::query;
use crate::backplane::resp::Value;

/// How long agents wait for one another to join.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);
/// How far ahead the first agent sets the common start.
const START_AHEAD: Duration = Duration::from_millis(500);
/// How long the coordinator waits for the others' results past its own.
const RESULTS_PATIENCE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

/// Where the agents meet and how many there are.
#[derive(Clone, Debug)]
pub struct Coordination {
    pub redis: SocketAddr,
    /// Keys are named after it, so runs do not meet each other.
    pub run: String,
    pub agents: usize,
}

/// This agent's place: 1 is the coordinator.
#[derive(Clone, Copy, Debug)]
pub struct Seat {
    pub index: usize,
    pub agents: usize,
}

impl Coordination {
    fn key(&self, what: &str) -> String {
        format!("fanout:load:{}:{what}", self.run)
    }

    fn ask(&self, args: &[&[u8]]) -> anyhow::Result<Value> {
        query(self.redis, args).with_context(|| format!("coordinator redis at {}", self.redis))
    }

    /// Join, wait for everyone, and return at the common start.
    pub fn take_seat(&self) -> anyhow::Result<Seat> {
        let joined = self.key("joined");
        let index = match self.ask(&[b"INCR", joined.as_bytes()])? {
            Value::Integer(n) => n as usize,
            other => bail!("INCR answered {other:?}"),
        };
        if index > self.agents {
            bail!(
                "agent {index} of --agents {}: run `{}` has its agents already (a stale run? use another --run)",
                self.agents,
                self.run
            );
        }
        let deadline = std::time::Instant::now() + JOIN_PATIENCE;
        while integer(&self.ask(&[b"GET", joined.as_bytes()])?) < self.agents as i64 {
            if std::time::Instant::now() > deadline {
                bail!(
                    "only some of the {} agents joined within {JOIN_PATIENCE:?}",
                    self.agents
                );
            }
            std::thread::sleep(POLL);
        }
        let start = self.key("start");
        if index == 1 {
            let at = (now_ms() + START_AHEAD.as_millis() as u64).to_string();
            self.ask(&[b"SET", start.as_bytes(), at.as_bytes()])?;
        }
        let at = loop {
            let value = integer(&self.ask(&[b"GET", start.as_bytes()])?);
            if value > 0 {
                break value as u64;
            }
            if std::time::Instant::now() > deadline {
                bail!("the first agent never set the start");
            }
            std::thread::sleep(POLL);
        };
        std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
        Ok(Seat {
            index,
            agents: self.agents,
        })
    }

    /// This agent's connections are open; wait until every agent's are
    /// (a broadcast starts only when every member can hear it).
    pub fn ramped(&self, seat: Seat) -> anyhow::Result<()> {
        let ramped = self.key("ramped");
        self.ask(&[b"INCR", ramped.as_bytes()])?;
        let deadline = std::time::Instant::now() + JOIN_PATIENCE;
        while integer(&self.ask(&[b"GET", ramped.as_bytes()])?) < seat.agents as i64 {
            if std::time::Instant::now() > deadline {
                bail!("not every agent finished its ramp within {JOIN_PATIENCE:?}");
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// The publishing agent: messages published so far, and whether that
    /// is the last word.
    pub fn set_published(&self, published: u64, done: bool) -> anyhow::Result<()> {
        let value = format!("{published}{}", if done { ":done" } else { "" });
        self.ask(&[b"SET", self.key("published").as_bytes(), value.as_bytes()])?;
        Ok(())
    }

    /// What the publishing agent said it published, and whether it is done.
    pub fn published(&self) -> anyhow::Result<(u64, bool)> {
        let Value::Bulk(Some(bytes)) = self.ask(&[b"GET", self.key("published").as_bytes()])?
        else {
            return Ok((0, false));
        };
        let text = String::from_utf8_lossy(&bytes);
        let (count, done) = match text.strip_suffix(":done") {
            Some(count) => (count, true),
            None => (&text[..], false),
        };
        Ok((count.parse().unwrap_or(0), done))
    }

    /// Hand this agent's result to the coordinator.
    pub fn publish(&self, result: &AgentResult) -> anyhow::Result<()> {
        let json = serde_json::to_vec(result)?;
        self.ask(&[b"RPUSH", self.key("results").as_bytes(), &json])?;
        Ok(())
    }

    /// The coordinator: every agent's result (its own among them), then
    /// the run's keys are removed.
    pub fn gather(&self) -> anyhow::Result<Vec<AgentResult>> {
        let results = self.key("results");
        let deadline = std::time::Instant::now() + RESULTS_PATIENCE;
        while integer(&self.ask(&[b"LLEN", results.as_bytes()])?) < self.agents as i64 {
            if std::time::Instant::now() > deadline {
                bail!("not every agent reported within {RESULTS_PATIENCE:?}");
            }
            std::thread::sleep(POLL);
        }
        let Value::Array(items) = self.ask(&[b"LRANGE", results.as_bytes(), b"0", b"-1"])? else {
            bail!("LRANGE did not answer a list");
        };
        let mut gathered = Vec::new();
        for item in items {
            let Value::Bulk(Some(json)) = item else {
                bail!("a result that is not a string");
            };
            gathered.push(serde_json::from_slice(&json).context("an agent's result")?);
        }
        for what in ["joined", "start", "results", "ramped", "published"] {
            self.ask(&[b"DEL", self.key(what).as_bytes()])?;
        }
        Ok(gathered)
    }
}

/// What one agent hands the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentResult {
    pub index: usize,
    /// /proc/sys/kernel/random/boot_id: agents on one host share it.
    pub host: String,
    pub opened: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub alive_at_end: u64,
    pub closed_by_server: u64,
    pub connect: Recorded,
    pub echo_messages: u64,
    pub echo_seconds: f64,
    pub echo: Recorded,
    /// Broadcast: this agent's members, what it published, its tally and
    /// its deliveries' latencies.
    pub members: u64,
    pub published: u64,
    pub tally: Option<Tally>,
    pub deliveries: Recorded,
}

impl AgentResult {
    pub fn of(index: usize, report: &Report) -> AgentResult {
        let c = &report.connect;
        AgentResult {
            index,
            host: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|id| id.trim().to_string())
                .unwrap_or_default(),
            opened: c.opened,
            failed: c.failed,
            failures: c.failures.clone(),
            alive_at_end: c.alive_at_end,
            closed_by_server: c.closed_by_server,
            connect: report.recorded.connect.clone(),
            echo_messages: report.echo.as_ref().map_or(0, |e| e.messages),
            echo_seconds: report.echo.as_ref().map_or(0.0, |e| e.seconds),
            echo: report.recorded.echo.clone(),
            members: report.broadcast.as_ref().map_or(0, |b| b.members),
            published: report.broadcast.as_ref().map_or(0, |b| b.messages_sent),
            tally: report.broadcast.as_ref().map(|b| b.tally),
            deliveries: report.recorded.deliveries.clone(),
        }
    }
}

/// One report of K agents: sums, and histograms merged bucket by bucket.
pub fn merge(results: &[AgentResult]) -> AgentsReport {
    let mut connect = Latency::default();
    let mut echo = Latency::default();
    let mut deliveries = Latency::default();
    let mut failures = BTreeMap::new();
    let publisher_host = results
        .iter()
        .find(|r| r.index == 1)
        .map(|r| r.host.clone());
    let mut tally: Option<Tally> = None;
    for result in results {
        connect.merge_recorded(&result.connect);
        echo.merge_recorded(&result.echo);
        if Some(&result.host) == publisher_host.as_ref() {
            deliveries.merge_recorded(&result.deliveries);
        }
        if let Some(t) = &result.tally {
            tally.get_or_insert_with(Tally::default).add(t);
        }
        for (cause, n) in &result.failures {
            *failures.entry(cause.clone()).or_default() += n;
        }
    }
    let sum = |get: fn(&AgentResult) -> u64| results.iter().map(get).sum::<u64>();
    let hosts: std::collections::BTreeSet<&str> = results.iter().map(|r| r.host.as_str()).collect();
    let echo_messages = sum(|r| r.echo_messages);
    let echo_seconds = results.iter().map(|r| r.echo_seconds).fold(0.0, f64::max);
    AgentsReport {
        agents: results.len(),
        hosts: hosts.len(),
        clock: match hosts.len() {
            1 => "one host: every latency on one clock (CLOCK_MONOTONIC; broadcast stamps comparable across agents)".into(),
            n => format!("{n} hosts: connect and echo latencies each within one agent; broadcast delivery latency only from the agents on the publisher's host (another host's clock is not comparable; no offset measured)"),
        },
        opened: sum(|r| r.opened),
        failed: sum(|r| r.failed),
        failures,
        alive_at_end: sum(|r| r.alive_at_end),
        closed_by_server: sum(|r| r.closed_by_server),
        connect_latency: connect.summary(),
        echo_messages,
        echo_msgs_per_s: echo_messages as f64 / echo_seconds.max(1e-9),
        echo_latency: (echo_messages > 0).then(|| echo.summary()),
        members: sum(|r| r.members),
        messages_published: results.iter().map(|r| r.published).max().unwrap_or(0),
        delivery_latency: tally.is_some().then(|| deliveries.summary()),
        tally,
        per_agent: {
            let mut lines: Vec<AgentLine> = results
                .iter()
                .map(|r| AgentLine {
                    index: r.index,
                    opened: r.opened,
                    failed: r.failed,
                    echo_messages: r.echo_messages,
                })
                .collect();
            lines.sort_by_key(|l| l.index);
            lines
        },
    }
}

/// This agent's share of `total` (seat `index` of `agents`, from 1).
pub fn share(total: usize, seat: Seat) -> usize {
    total / seat.agents + usize::from(seat.index <= total % seat.agents)
}

fn integer(value: &Value) -> i64 {
    match value {
        Value::Integer(n) => *n,
        Value::Bulk(Some(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, agents) in [(100, 3), (2, 4), (7, 7)] {
            let sum: usize = (1..=agents)
                .map(|index| share(total, Seat { index, agents }))
                .sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn merged_histograms_hold_every_agents_values() {
        let (mut a, mut b) = (Latency::default(), Latency::default());
        (1..=100).for_each(|ms| a.record_ns(ms * 1_000_000));
        (101..=300).for_each(|ms| b.record_ns(ms * 1_000_000));
        let result = |index, latency: &Latency| AgentResult {
            index,
            host: "h".into(),
            opened: 10,
            failed: 1,
            failures: BTreeMap::from([("refused".to_string(), 1)]),
            alive_at_end: 10,
            closed_by_server: 0,
            connect: latency.recorded(),
            echo_messages: 0,
            echo_seconds: 0.0,
            echo: Recorded::default(),
            members: 0,
            published: 0,
            tally: None,
            deliveries: Recorded::default(),
        };
        let merged = merge(&[result(2, &b), result(1, &a)]);
        assert_eq!(
            (merged.opened, merged.failed, merged.agents, merged.hosts),
            (20, 2, 2, 1)
        );
        assert_eq!(merged.failures["refused"], 2);
        let s = merged.connect_latency;
        assert_eq!(s.count, 300);
        // The median of 1..=300 ms is 150 ms, which neither agent alone has
        // near its own median (50, 200): merged, not averaged.
        assert!((s.p50_us / 1000.0 - 150.0).abs() < 1.0, "{s:?}");
        assert_eq!((s.min_us, s.max_us), (1_000.0, 300_000.0));
        assert_eq!(merged.per_agent[0].index, 1);
        assert!(merged.echo_latency.is_none());
    }
}
