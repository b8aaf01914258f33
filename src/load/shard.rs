//! One client shard: a mio event loop that opens its share of connections
//! at the scenario's pace, drives the scenario's work on them, records what
//! it sees into its own histograms and counters, and closes everything with
//! RST at the end. The orchestrator merges the shards' results.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::accounting::Tally;
use super::client::{self, Client, Phase};
use super::config::{Pace, Scenario, Work};
use super::control::{Control, Progress};
use super::histogram::Latency;
use super::pacing::Schedule;
use super::payload::{self, now_ns};
use super::target::Target;
use crate::protocol::frame::{client_frame, OpCode, Role};
use crate::protocol::handshake;
use crate::protocol::message::{self, Event};
use crate::protocol::tcp;
use crate::server::config::Proto;
use crate::sys;

/// Longest the loop sleeps, so it notices the orchestrator's flags.
const TICK: Duration = Duration::from_millis(5);
/// The timerfd that wakes the loop exactly when the next paced event is due.
const TIMER: Token = Token(usize::MAX);
const SCRATCH_LEN: usize = 64 * 1024;
/// Largest message a client accepts from the server.
const MAX_MESSAGE: usize = 64 << 20;
/// Broadcasts with more messages than this keep only the overall histogram.
pub const MAX_PER_MESSAGE: u64 = 100;

/// Everything one shard needs to run.
pub struct Job {
    pub id: usize,
    pub shards: usize,
    /// Connections this shard opens and holds.
    pub conns: usize,
    pub sources: Vec<Ipv4Addr>,
    pub target: Target,
    pub scenario: Scenario,
    pub connect_timeout: Duration,
    pub control: Arc<Control>,
    /// When the run started (ns), for the per-second timeline.
    pub run_start_ns: u64,
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
    pub tally: Tally,
    pub echo: Latency,
    pub echo_messages: u64,
    pub echo_bytes: u64,
    /// Open-loop: how late each send was against its schedule.
    pub send_lag: Latency,
    pub churn_setup: Latency,
    pub churn_total: Latency,
    pub alive_at_end: u64,
    /// Open connections the server closed.
    pub closed_by_server: u64,
    pub cpu_ns: u64,
}

struct Shard {
    job: Job,
    poll: Poll,
    clients: Slab<Client>,
    result: ShardResult,
    scratch: Vec<u8>,
    rng: u64,
    /// Connection attempts started so far (ramp) and their schedule.
    started: usize,
    open_schedule: Option<Schedule>,
    in_flight: usize,
    /// Broadcast: the publishing client (shard 0 only) and its schedule.
    publisher: Option<usize>,
    publish: Option<(Schedule, u64)>,
    /// Echo open-loop: next send time per client.
    sends: BinaryHeap<Reverse<(u64, usize)>>,
    churn: Option<Schedule>,
    working: bool,
    timer: sys::TimerFd,
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
    let mut result = ShardResult::default();
    // Made before any work starts: another shard may publish before this
    // one has noticed the work flag, and its deliveries must be recorded.
    if let Work::Broadcast { count, .. } = job.scenario.work {
        if count <= MAX_PER_MESSAGE {
            result.per_message = (0..count).map(|_| Latency::coarse()).collect();
        }
    }
    let mut shard = Shard {
        rng: 0x9E37_79B9_7F4A_7C15 ^ (job.id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        job,
        poll,
        clients: Slab::new(),
        result,
        scratch: vec![0; SCRATCH_LEN],
        started: 0,
        open_schedule,
        in_flight: 0,
        publisher: None,
        publish: None,
        sends: BinaryHeap::new(),
        churn: None,
        working: false,
        timer,
    };
    shard.run();
    shard.result.cpu_ns = payload::thread_cpu_ns();
    shard.result
}

impl Shard {
    fn progress(&self) -> &Progress {
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
            if !self.working && self.job.control.work.load(Relaxed) {
                self.start_work(now);
            }
            if self.working {
                self.work_due(now);
            }
            if now - last_sweep > 100_000_000 {
                self.sweep_timeouts(now);
                last_sweep = now;
            }
        }
        self.finish();
    }

    /// When the next paced event (send, publish, connect) is due, if any.
    fn next_due(&self) -> Option<u64> {
        let sends = self.sends.peek().map(|Reverse((due, _))| *due);
        let publish = self
            .publish
            .map(|(schedule, _)| schedule.due(self.job.control.published.load(Relaxed)));
        let churn = self.churn.map(|schedule| schedule.due(self.started as u64));
        let open = self
            .open_schedule
            .filter(|_| self.started < self.job.conns)
            .map(|schedule| schedule.due(self.started as u64));
        [sends, publish, churn, open].into_iter().flatten().min()
    }

    // ---- opening ----

    fn open_due(&mut self, now: u64) {
        let wanted = match self.open_schedule {
            Some(schedule) => (schedule.due_by(now) as usize).min(self.job.conns),
            None => self.job.conns,
        };
        let cap = match self.job.scenario.open {
            Pace::AsFast { inflight } => inflight,
            Pace::Rate(_) => usize::MAX,
        };
        while self.started < wanted && self.in_flight < cap {
            self.started += 1;
            self.open_one(now);
        }
    }

    fn open_one(&mut self, now: u64) {
        let source = self.job.sources[self.started % self.job.sources.len()];
        let socket = match client::connect(source, self.job.target.addr) {
            Ok(socket) => socket,
            Err(e) => return self.fail(&client::failure_cause(&e)),
        };
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&socket.as_raw_fd()), Token(key), interest)
        {
            return self.fail(&client::failure_cause(&e));
        }
        entry.insert(Client::new(socket, now));
        self.in_flight += 1;
    }

    fn fail(&mut self, cause: &str) {
        *self.result.failures.entry(cause.to_string()).or_default() += 1;
        self.progress().failed.fetch_add(1, Relaxed);
    }

    /// A connection attempt failed: count it, drop it.
    fn fail_client(&mut self, key: usize, cause: &str) {
        if let Some(client) = self.clients.try_remove(key) {
            if client.phase != Phase::Open {
                self.in_flight -= 1;
                self.fail(cause);
            } else {
                self.result.closed_by_server += 1;
                self.progress().alive.fetch_sub(1, Relaxed);
            }
            client.abort();
        }
    }

    fn on_opened(&mut self, key: usize, now: u64) {
        self.in_flight -= 1;
        let client = &mut self.clients[key];
        client.phase = Phase::Open;
        client.key = None;
        let elapsed = now - client.started_ns;
        let second = ((now - self.job.run_start_ns) / 1_000_000_000) as usize;
        if self.result.timeline.len() <= second {
            self.result.timeline.resize(second + 1, 0);
        }
        self.result.timeline[second] += 1;
        self.progress().alive.fetch_add(1, Relaxed);
        if matches!(self.job.scenario.work, Work::Churn { .. }) {
            self.result.churn_setup.record_ns(elapsed);
            self.send_payload(key, now);
            return;
        }
        self.result.connect.record_ns(elapsed);
        self.progress().opened.fetch_add(1, Relaxed);
        if self.publisher.is_none() && self.job.id == 0 {
            self.publisher = Some(key);
        }
        if self.working {
            self.start_client_work(key, now);
        }
    }

    fn sweep_timeouts(&mut self, now: u64) {
        let limit = self.job.connect_timeout.as_nanos() as u64;
        let late: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.phase != Phase::Open && now - c.started_ns > limit)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            self.fail_client(key, "timeout");
        }
    }

    // ---- reading ----

    fn on_writable(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.phase != Phase::Connecting {
            if let Err(e) = client.flush() {
                self.fail_client(key, &client::failure_cause(&e));
            }
            return;
        }
        // Writable with no pending error: the connect completed (epoll
        // reports a connecting socket writable only once it has).
        match client.socket.take_error() {
            Ok(Some(e)) | Err(e) => return self.fail_client(key, &client::failure_cause(&e)),
            Ok(None) => {}
        }
        client.phase = Phase::Handshaking;
        let request = match self.job.target.proto {
            Proto::Ws => {
                let key_text = handshake::client_key();
                let request = handshake::client_request(
                    &self.job.target.host,
                    &self.job.target.path,
                    &key_text,
                );
                client.key = Some(key_text.into_boxed_str());
                request
            }
            Proto::Tcp => tcp::encode(self.job.target.path.as_bytes()),
        };
        if let Err(e) = client.send(&request) {
            self.fail_client(key, &client::failure_cause(&e));
        }
    }

    fn on_readable(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(client) = self.clients.get_mut(key) {
            if client.phase == Phase::Connecting {
                break;
            }
            match client.socket.read(&mut scratch) {
                Ok(0) => {
                    self.fail_client(key, "closed by server");
                    break;
                }
                Ok(n) => {
                    let client = &mut self.clients[key];
                    client.inbuf.extend_from_slice(&scratch[..n]);
                    if !self.on_input(key) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail_client(key, &client::failure_cause(&e));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Consume what the client has buffered. Returns whether it is still open.
    fn on_input(&mut self, key: usize) -> bool {
        let now = now_ns();
        let mut inbuf = std::mem::take(&mut self.clients[key].inbuf);
        let mut used = 0;
        let alive = loop {
            let Some(client) = self.clients.get_mut(key) else {
                break false;
            };
            let rest = &mut inbuf[used..];
            if rest.is_empty() {
                break true;
            }
            match (client.phase, self.job.target.proto) {
                (Phase::Handshaking, Proto::Ws) => {
                    let expected = client.key.as_deref().unwrap_or("");
                    match handshake::parse_response(rest, expected) {
                        Ok(None) => break true,
                        Ok(Some(len)) => {
                            used += len;
                            self.on_opened(key, now);
                        }
                        Err(handshake::ResponseError::Status(status)) => {
                            self.fail_client(key, &format!("http {status}"));
                            break false;
                        }
                        Err(e) => {
                            self.fail_client(key, &e.to_string());
                            break false;
                        }
                    }
                }
                (_, Proto::Tcp) => match tcp::decode(rest, MAX_MESSAGE) {
                    Ok(None) => break true,
                    Ok(Some((message, len))) => {
                        used += len;
                        if client.phase == Phase::Handshaking {
                            if message == tcp::HELLO_OK {
                                self.on_opened(key, now);
                            } else {
                                self.fail_client(key, "hello refused");
                                break false;
                            }
                        } else {
                            let message = message.to_vec();
                            self.on_message(key, &message, now);
                        }
                    }
                    Err(_) => {
                        self.fail_client(key, "oversized message from server");
                        break false;
                    }
                },
                (_, Proto::Ws) => {
                    let mut fragments = client.fragments.take();
                    let step = message::read_frame(rest, Role::Client, MAX_MESSAGE, &mut fragments);
                    client.fragments = fragments;
                    match step {
                        Ok(None) => break true,
                        Ok(Some(step)) => {
                            used += step.consumed;
                            match step.event {
                                Some(Event::Message { payload, .. }) => {
                                    let payload = payload.to_vec();
                                    self.on_message(key, &payload, now);
                                }
                                Some(Event::Ping(data)) => {
                                    let pong = client_frame(OpCode::Pong, data, self.next_mask());
                                    let _ = self.clients[key].send(&pong);
                                }
                                Some(Event::Close { .. }) => {
                                    self.fail_client(key, "closed by server");
                                    break false;
                                }
                                Some(Event::Pong(_)) | None => {}
                            }
                        }
                        Err(e) => {
                            self.fail_client(key, &format!("bad frame from server: {e}"));
                            break false;
                        }
                    }
                }
            }
        };
        if alive {
            if let Some(client) = self.clients.get_mut(key) {
                inbuf.drain(..used);
                client.inbuf = inbuf;
            }
        }
        alive
    }

    // ---- the scenario's work ----

    fn start_work(&mut self, now: u64) {
        self.working = true;
        match self.job.scenario.work {
            Work::Broadcast { count, rate } => {
                if self.job.id == 0 {
                    self.publish = Some((Schedule::new(now, rate, 0.0), count));
                }
            }
            Work::Churn { rate } => {
                let per_shard = rate / self.job.shards as f64;
                let phase = self.job.id as f64 / self.job.shards as f64;
                self.churn = Some(Schedule::new(now, per_shard, phase));
            }
            Work::Hold | Work::Echo { .. } => {}
        }
        let keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.start_client_work(key, now);
        }
    }

    fn start_client_work(&mut self, key: usize, now: u64) {
        match self.job.scenario.work {
            Work::Echo {
                open_loop_rate: Some(rate),
                ..
            } => {
                let interval = (1e9 / rate) as u64;
                let phase = self.next_random() % interval.max(1);
                self.sends.push(Reverse((now + phase, key)));
            }
            Work::Echo {
                open_loop_rate: None,
                window,
            } => {
                for _ in 0..window {
                    self.send_payload(key, now);
                }
            }
            _ => {}
        }
    }

    fn work_due(&mut self, now: u64) {
        if let Some((schedule, count)) = self.publish {
            self.publish_due(schedule, count, now);
        }
        if let Work::Echo {
            open_loop_rate: Some(rate),
            ..
        } = self.job.scenario.work
        {
            self.echo_sends_due(rate, now);
        }
        if let Some(schedule) = self.churn {
            while (self.started as u64) < schedule.due_by(now) {
                self.started += 1;
                self.open_one(now);
            }
        }
    }

    fn publish_due(&mut self, schedule: Schedule, count: u64, now: u64) {
        let control = &self.job.control;
        let sent = control.published.load(Relaxed);
        let Some(publisher) = self.publisher.filter(|&key| self.clients.contains(key)) else {
            control.publisher_done.store(true, Relaxed);
            self.publish = None;
            return;
        };
        let due = schedule.due_by(now).min(count);
        for seq in sent..due {
            let message = payload::encode(seq, now_ns(), self.job.scenario.size);
            let mask = self.next_mask();
            let proto = self.job.target.proto;
            if self.clients[publisher]
                .send_message(proto, &message, mask)
                .is_err()
            {
                break;
            }
            self.job.control.published.store(seq + 1, Relaxed);
        }
        if self.job.control.published.load(Relaxed) >= count {
            self.job.control.publisher_done.store(true, Relaxed);
            self.publish = None;
        }
    }

    fn echo_sends_due(&mut self, rate: f64, now: u64) {
        let interval = (1e9 / rate) as u64;
        while let Some(&Reverse((due, key))) = self.sends.peek() {
            if due > now {
                break;
            }
            self.sends.pop();
            if !self.clients.contains(key) {
                continue;
            }
            self.result.send_lag.record_ns(now.saturating_sub(due));
            // The payload carries the due time: latency counts from it.
            self.send_payload_stamped(key, due);
            self.sends.push(Reverse((due + interval, key)));
        }
    }

    fn send_payload(&mut self, key: usize, now: u64) {
        self.send_payload_stamped(key, now);
    }

    fn send_payload_stamped(&mut self, key: usize, stamp_ns: u64) {
        let mask = self.next_mask();
        let proto = self.job.target.proto;
        let size = self.job.scenario.size;
        let client = &mut self.clients[key];
        let message = payload::encode(client.sent, stamp_ns, size);
        client.sent += 1;
        if let Err(e) = client.send_message(proto, &message, mask) {
            self.fail_client(key, &client::failure_cause(&e));
        }
    }

    fn on_message(&mut self, key: usize, message: &[u8], now: u64) {
        let Some((seq, sent_ns)) = payload::decode(message) else {
            return;
        };
        let latency = now.saturating_sub(sent_ns);
        match self.job.scenario.work {
            Work::Broadcast { .. } => {
                let client = &mut self.clients[key];
                if client.deliveries.receive(seq, &mut self.result.tally) {
                    self.result.deliveries.record_ns(latency);
                    if let Some(h) = self.result.per_message.get_mut(seq as usize) {
                        h.record_ns(latency);
                    }
                    self.job.control.shards[self.job.id]
                        .delivered
                        .fetch_add(1, Relaxed);
                }
            }
            Work::Echo { open_loop_rate, .. } => {
                self.result.echo.record_ns(latency);
                self.result.echo_messages += 1;
                self.result.echo_bytes += message.len() as u64;
                self.clients[key].received += 1;
                self.progress().echoed.fetch_add(1, Relaxed);
                if open_loop_rate.is_none() && !self.job.control.stop.load(Relaxed) {
                    self.send_payload(key, now);
                }
            }
            Work::Churn { .. } => {
                let client = self.clients.remove(key);
                self.result.churn_total.record_ns(now - client.started_ns);
                self.progress().churned.fetch_add(1, Relaxed);
                self.progress().alive.fetch_sub(1, Relaxed);
                client.abort();
            }
            Work::Hold => {}
        }
    }

    // ---- the end ----

    fn finish(&mut self) {
        let published = self.job.control.published.load(Relaxed);
        for client in self.clients.drain() {
            if client.phase == Phase::Open {
                self.result.alive_at_end += 1;
                if matches!(self.job.scenario.work, Work::Broadcast { .. }) {
                    client.deliveries.finish(published, &mut self.result.tally);
                }
            }
            client.abort();
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: masks need to vary, not to be cryptographic.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn next_mask(&mut self) -> [u8; 4] {
        (self.next_random() as u32).to_ne_bytes()
    }
}
