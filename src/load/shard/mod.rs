//! One client shard: a mio event loop that opens its share of connections
//! at the scenario's pace, drives the scenario's work on them, records what
//! it sees into its own histograms and counters, and closes everything with
//! RST at the end. The orchestrator merges the shards' results.

mod burst;
mod deflate;
mod input;
mod opening;
mod reconnect;
mod tls;
mod work;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::accounting::{Deliveries, Tally};
use super::client::{Client, Phase};
use super::config::{Pace, Scenario, Work};
use super::control::{Control, Progress};
use super::histogram::{Extremes, Latency};
use super::pacing::Schedule;
use super::payload::{self, now_ns};
use super::target::Target;
use crate::chunked_slab::ChunkedSlab;
use crate::sys;

/// Longest the loop sleeps, so it notices the orchestrator's flags.
const TICK: Duration = Duration::from_millis(5);
/// The timerfd that wakes the loop exactly when the next paced event is due.
const TIMER: Token = Token(usize::MAX);
const SCRATCH_LEN: usize = 64 * 1024;
/// Largest message a client accepts from the server.
const MAX_MESSAGE: usize = 64 << 20;
/// Broadcasts with more messages than this keep percentiles only overall.
pub const MAX_PER_MESSAGE: u64 = 100;
/// Messages whose count and exact first and last delivery are kept (24
/// bytes each per shard).
pub const MAX_EXTREMES: u64 = 100_000;

/// Everything one shard needs to run.
pub struct Job {
    pub id: usize,
    pub shards: usize,
    /// Connections this shard opens and holds.
    pub conns: usize,
    pub sources: Vec<Ipv4Addr>,
    /// The servers (one unless several --url), and how to spread over them.
    pub targets: Vec<Target>,
    pub balance: crate::load::balance::Balance,
    /// Whether this load publishes (not when it is a follower agent of a
    /// broadcast another agent publishes).
    pub publishes: bool,
    pub scenario: Scenario,
    pub connect_timeout: Duration,
    pub control: Arc<Control>,
    /// When the run started (ns), for the per-second timeline.
    pub run_start_ns: u64,
    /// How the connections speak TLS (wss://, tls://), if they do.
    pub tls: Option<Arc<crate::tls::ClientSetup>>,
}

/// What one shard saw; merged over shards into the report.
#[derive(Default)]
pub struct ShardResult {
    pub connect: Latency,
    /// Connections opened in each second since the run started.
    pub timeline: Vec<u64>,
    pub failures: BTreeMap<String, u64>,
    pub deliveries: Latency,
    pub per_message: Vec<Latency>,
    pub per_message_extremes: Vec<Extremes>,
    pub tally: Tally,
    /// Broadcast: members open when the work started.
    pub members: u64,
    /// Broadcast: members the server closed during the work.
    pub members_closed: u64,
    /// Broadcast: when the newest delivery arrived (ns).
    pub last_delivery_ns: u64,
    pub echo: Latency,
    pub echo_messages: u64,
    pub echo_bytes: u64,
    /// Open-loop: how late each send was against its schedule.
    pub send_lag: Latency,
    pub churn_setup: Latency,
    pub churn_total: Latency,
    /// Churn: arrivals due, and those dropped for --max-inflight.
    pub churn_arrivals: u64,
    pub churn_dropped: u64,
    pub alive_at_end: u64,
    /// Open connections the server closed.
    pub closed_by_server: u64,
    /// Of those, how: the close code, "no code" or "hung up".
    pub server_closes: BTreeMap<String, u64>,
    /// Attempts that found a source address out of ports (EADDRNOTAVAIL)
    /// and moved to the next one.
    pub source_moves: u64,
    /// Connections started on a source port the shard chose itself.
    pub explicit_ports: u64,
    /// Connections that agreed on permessage-deflate (--deflate).
    pub deflate_agreed: u64,
    /// TLS handshakes completed, and of those resumed.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    /// Storm: open connections lost, reconnect attempts started, those
    /// that opened (and how long each took), connections that gave up,
    /// and reconnects still waiting at the end.
    pub storm_lost: u64,
    pub storm_attempts: u64,
    pub storm_setup: Latency,
    pub storm_gave_up: u64,
    pub storm_waiting: u64,
    pub burst: crate::load::burst::BurstResult,
    /// Connections opened to each server, and open at the end.
    pub opened_per_server: Vec<u64>,
    pub open_at_end_per_server: Vec<u64>,
    pub cpu_ns: u64,
    /// CPU time of this shard's thread from the start of the work until
    /// the stop (not the closing of its connections after).
    pub work_cpu_ns: u64,
}

/// xorshift64*: masks and choices need to vary, not to be cryptographic.
pub(super) fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

struct Shard {
    job: Job,
    poll: Poll,
    clients: ChunkedSlab<Client>,
    result: ShardResult,
    scratch: Vec<u8>,
    rng: u64,
    /// Connection attempts started so far (ramp) and their schedule.
    started: usize,
    /// Source addresses found out of ports, skipped until all are.
    spent_sources: Vec<bool>,
    /// Set once the kernel found no source port: from then on the shard
    /// chooses them itself.
    explicit_ports: Option<crate::load::ports::ExplicitPorts>,
    open_schedule: Option<Schedule>,
    in_flight: usize,
    /// Broadcast: the publishing client (shard 0 only), whether it still
    /// publishes, and its schedule in sustained mode.
    publisher: Option<usize>,
    publishing: bool,
    publish_schedule: Option<Schedule>,
    /// Broadcast: the published count this shard's members are checked
    /// against, and how many open members have not reached it.
    tracked: u64,
    behind: usize,
    /// Broadcast: what the members the server closed had received.
    closed_members: Vec<Deliveries>,
    /// Echo open-loop: next send time per client.
    sends: BinaryHeap<Reverse<(u64, usize)>>,
    churn: Option<Schedule>,
    /// Storm: reconnects waiting for their time, (due ns, attempt).
    reconnects: BinaryHeap<Reverse<(u64, u8)>>,
    balancer: crate::load::balance::Balancer,
    working: bool,
    /// The thread's CPU time when the work started.
    cpu_at_work_ns: u64,
    timer: sys::TimerFd,
    /// The connections' TLS states, when they speak TLS.
    tls: Option<tls::TlsClients>,
    /// permessage-deflate codecs, with --deflate.
    deflate: Option<deflate::DeflateClients>,
}

pub fn run(job: Job) -> ShardResult {
    let setup = || -> io::Result<(Poll, sys::TimerFd)> {
        let poll = Poll::new()?;
        let timer = sys::TimerFd::new()?;
        poll.registry()
            .register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)?;
        Ok((poll, timer))
    };
    let (poll, timer) = match setup() {
        Ok(parts) => parts,
        Err(e) => {
            let mut result = ShardResult::default();
            result
                .failures
                .insert(format!("event loop: {e}"), job.conns as u64);
            return result;
        }
    };
    let open_schedule = match job.scenario.open {
        Pace::Rate(rate) => Some(Schedule::new(
            now_ns(),
            rate / job.shards as f64,
            job.id as f64 / job.shards as f64,
        )),
        Pace::AsFast { .. } => None,
    };
    let mut result = ShardResult {
        opened_per_server: vec![0; job.targets.len()],
        open_at_end_per_server: vec![0; job.targets.len()],
        ..ShardResult::default()
    };
    let balancer = crate::load::balance::Balancer::new(job.balance, job.targets.len(), job.id);
    // Made before any work starts: another shard may publish before this
    // one has noticed the work flag, and its deliveries must be recorded.
    if let Work::Broadcast { count, .. } = job.scenario.work {
        if count <= MAX_PER_MESSAGE {
            result.per_message = (0..count).map(|_| Latency::coarse()).collect();
        }
        result.per_message_extremes = vec![Extremes::default(); count.min(MAX_EXTREMES) as usize];
    }
    let spent_sources = vec![false; job.sources.len()];
    let tls = job.tls.clone().map(|setup| {
        let names = job
            .targets
            .iter()
            .map(|t| t.server_name().expect("checked when parsed"))
            .collect();
        tls::TlsClients::new(setup, names)
    });
    let mut shard = Shard {
        rng: 0x9E37_79B9_7F4A_7C15 ^ (job.id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        job,
        poll,
        clients: ChunkedSlab::new(),
        result,
        scratch: vec![0; SCRATCH_LEN],
        started: 0,
        spent_sources,
        explicit_ports: None,
        open_schedule,
        in_flight: 0,
        publisher: None,
        publishing: false,
        publish_schedule: None,
        tracked: 0,
        behind: 0,
        closed_members: Vec::new(),
        sends: BinaryHeap::new(),
        churn: None,
        reconnects: BinaryHeap::new(),
        balancer,
        working: false,
        cpu_at_work_ns: 0,
        timer,
        tls,
        deflate: None,
    };
    if shard.job.scenario.deflate {
        shard.deflate = Some(deflate::DeflateClients::default());
    }
    shard.run();
    shard.result.cpu_ns = payload::thread_cpu_ns();
    shard.result
}

impl Shard {
    /// Every connection goes to the same kind of server.
    pub(super) fn wire(&self) -> crate::load::target::Wire {
        self.job.targets[0].wire
    }

    /// Take a client out of the slab (it closed or failed): its server
    /// holds one connection fewer.
    pub(super) fn take_client(&mut self, key: usize) -> Option<Client> {
        let client = self.clients.try_remove(key)?;
        if let Some(tls) = &mut self.tls {
            tls.end(key);
        }
        if let Some(deflate) = &mut self.deflate {
            deflate.end(key);
        }
        self.balancer.left(client.server as usize);
        Some(client)
    }

    pub(super) fn progress(&self) -> &Progress {
        &self.job.control.shards[self.job.id]
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = now_ns();
        while !self.job.control.stop.load(Relaxed) {
            if let Some(due) = self.next_due() {
                let _ = self.timer.arm_at(due);
            }
            if let Err(e) = self.poll.poll(&mut events, Some(TICK)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            for event in events.iter() {
                if event.token() == TIMER {
                    self.timer.clear();
                    continue;
                }
                let key = event.token().0;
                if event.is_writable() {
                    self.on_writable(key);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(key);
                }
            }
            let now = now_ns();
            self.open_due(now);
            self.reconnects_due(now);
            if !self.working && self.job.control.work.load(Relaxed) {
                self.cpu_at_work_ns = payload::thread_cpu_ns();
                self.start_work(now);
            }
            if self.working {
                self.work_due(now);
                self.track_deliveries();
            }
            if now - last_sweep > 100_000_000 {
                self.sweep_timeouts(now);
                last_sweep = now;
            }
            self.job.control.cache_flush.serve(self.job.id);
        }
        if self.working {
            self.result.work_cpu_ns = payload::thread_cpu_ns() - self.cpu_at_work_ns;
        }
        self.finish();
    }

    /// When the next paced event (send, publish, connect) is due, if any.
    fn next_due(&self) -> Option<u64> {
        let sends = self.sends.peek().map(|Reverse((due, _))| *due);
        let publish = self
            .publish_schedule
            .filter(|_| self.publishing)
            .map(|schedule| schedule.due(self.job.control.published.load(Relaxed)));
        let churn = self.churn.map(|schedule| schedule.due(self.started as u64));
        let open = self
            .open_schedule
            .filter(|_| self.started < self.job.conns)
            .map(|schedule| schedule.due(self.started as u64));
        let reconnect = self.next_reconnect();
        [sends, publish, churn, open, reconnect]
            .into_iter()
            .flatten()
            .min()
    }

    fn finish(&mut self) {
        let published = self.job.control.published.load(Relaxed);
        let counts = self.working && matches!(self.job.scenario.work, Work::Broadcast { .. });
        for client in self.clients.drain() {
            if client.phase == Phase::Open {
                self.result.alive_at_end += 1;
                self.result.open_at_end_per_server[client.server as usize] += 1;
                if client.attempt == crate::load::burst::BURST_ATTEMPT {
                    self.result.burst.open_at_end += 1;
                }
                if counts {
                    client
                        .deliveries
                        .finish_open(published, &mut self.result.tally);
                }
            }
            client.abort();
        }
        self.result.storm_waiting = self.reconnects.len() as u64;
        if let Some(tls) = &self.tls {
            (self.result.tls_handshakes, self.result.tls_resumed) = (tls.handshakes, tls.resumed);
        }
        self.result.members_closed = self.closed_members.len() as u64;
        for member in self.closed_members.drain(..) {
            member.finish_closed(published, &mut self.result.tally);
        }
    }

    pub(super) fn next_random(&mut self) -> u64 {
        next_random(&mut self.rng)
    }

    pub(super) fn next_mask(&mut self) -> [u8; 4] {
        (self.next_random() as u32).to_ne_bytes()
    }
}
