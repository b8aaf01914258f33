//! Opening connections at the scenario's pace, finishing their connect and
//! upgrade, and counting the ones that fail, by cause.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{next_random, Shard};
use crate::load::burst::BURST_ATTEMPT;
use crate::load::client::{self, Client, Phase};
use crate::load::config::{Pace, Work};
use crate::load::ports::ExplicitPorts;
use crate::load::target::Wire;
use crate::protocol::deflate::negotiate;
use crate::protocol::handshake;
use crate::protocol::tcp;

impl Shard {
    pub(super) fn open_due(&mut self, now: u64) {
        let share = if self.job.control.hold_at_half.load(Relaxed) {
            self.job.conns / 2
        } else {
            self.job.conns
        };
        let wanted = match self.open_schedule {
            Some(schedule) => (schedule.due_by(now) as usize).min(share),
            None => share,
        };
        let cap = match self.job.scenario.open {
            Pace::AsFast { inflight } => inflight,
            Pace::Rate(_) => usize::MAX,
        };
        while self.started < wanted
            && self.in_flight < cap
            && !self.job.control.stop_opening.load(Relaxed)
        {
            self.started += 1;
            self.open_attempt(now, 0);
        }
    }

    /// Start a connection: `attempt` 0 for the ramp's (and churn's), from
    /// 1 for a storm's reconnects.
    pub(super) fn open_attempt(&mut self, now: u64, attempt: u8) {
        if attempt == 0 {
            self.progress().started.fetch_add(1, Relaxed);
        }
        let mut rng = self.rng;
        let server = self.balancer.pick(|| next_random(&mut rng));
        self.rng = rng;
        let socket = match self.connect_from_a_source(self.job.targets[server].addr) {
            Ok(socket) => socket,
            Err(e) => {
                self.balancer.left(server);
                return self.attempt_failed(&client::failure_cause(&e), attempt, now);
            }
        };
        let key = self.clients.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&socket.as_raw_fd()), Token(key), interest)
        {
            self.balancer.left(server);
            return self.attempt_failed(&client::failure_cause(&e), attempt, now);
        }
        let mut client = Client::new(socket, now);
        client.attempt = attempt;
        client.server = server as u8;
        self.clients.insert(client);
        self.in_flight += 1;
    }

    /// Connect from this attempt's source address; one out of ports
    /// (EADDRNOTAVAIL) is skipped from then on and the next one tried. When
    /// every one is out, the attempt fails and they are all tried again
    /// next time (ports come back as connections close). The first time
    /// the kernel finds no port, the shard starts choosing ports itself
    /// (see `load::ports`) and asks that address again that way.
    fn connect_from_a_source(
        &mut self,
        server: std::net::SocketAddr,
    ) -> std::io::Result<std::net::TcpStream> {
        let count = self.job.sources.len();
        let first = (self.started + self.result.burst.issued as usize) % count;
        let mut step = 0;
        while step < count {
            let i = (first + step) % count;
            if self.spent_sources[i] {
                step += 1;
                continue;
            }
            let source = self.job.sources[i];
            let attempt = match &mut self.explicit_ports {
                Some(ports) => ports.connect(i, source, server),
                None => client::connect(source, server),
            };
            match attempt {
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    if self.explicit_ports.is_none() {
                        let (id, shards) = (self.job.id, self.job.shards);
                        self.explicit_ports = Some(ExplicitPorts::read(id, shards, count));
                        continue; // the same address, ports chosen by us
                    }
                    self.spent_sources[i] = true;
                    self.result.source_moves += 1;
                    step += 1;
                }
                Ok(socket) => {
                    if self.explicit_ports.is_some() {
                        self.result.explicit_ports += 1;
                    }
                    return Ok(socket);
                }
                Err(e) => return Err(e),
            }
        }
        self.spent_sources
            .iter_mut()
            .for_each(|spent| *spent = false);
        if let Some(ports) = &mut self.explicit_ports {
            ports.forget_misses();
        }
        Err(std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))
    }

    pub(super) fn fail(&mut self, cause: &str) {
        *self.result.failures.entry(cause.to_string()).or_default() += 1;
        self.progress().failed.fetch_add(1, Relaxed);
        let control = &self.job.control;
        if control.until_failure.load(Relaxed) {
            control.stop_opening.store(true, Relaxed);
        }
    }

    /// A connection attempt failed: count it, drop it.
    pub(super) fn fail_client(&mut self, key: usize, cause: &str) {
        if let Some(client) = self.take_client(key) {
            let now = crate::load::payload::now_ns();
            if client.phase != Phase::Open {
                self.in_flight -= 1;
                self.attempt_failed(cause, client.attempt, now);
            } else {
                self.result.closed_by_server += 1;
                self.progress().alive.fetch_sub(1, Relaxed);
                self.member_closed(&client);
                self.lost(now);
            }
            client.abort();
        }
    }

    /// The server closed an open connection: with a close frame (`how` is
    /// its code; `answer` our close frame) or by hanging up. Counted by how,
    /// and closed with a FIN: the server closed first, so the TIME_WAIT is
    /// its. A connection not yet open failed ("closed by server").
    pub(super) fn server_closed(&mut self, key: usize, how: &str, answer: &[u8]) {
        let open = self
            .clients
            .get(key)
            .is_some_and(|c| c.phase == Phase::Open);
        if !open {
            return self.fail_client(key, "closed by server");
        }
        let _ = self.send_to(key, answer);
        let Some(client) = self.take_client(key) else {
            return;
        };
        self.result.closed_by_server += 1;
        *self
            .result
            .server_closes
            .entry(how.to_string())
            .or_default() += 1;
        self.progress().alive.fetch_sub(1, Relaxed);
        self.member_closed(&client);
        self.lost(crate::load::payload::now_ns());
    }

    pub(super) fn on_opened(&mut self, key: usize, now: u64) {
        self.in_flight -= 1;
        self.tls_opened(key);
        let client = &mut self.clients[key];
        client.phase = Phase::Open;
        client.set_key(None);
        let attempt = client.attempt;
        self.result.opened_per_server[client.server as usize] += 1;
        let elapsed = now - client.started_ns;
        let second = ((now - self.job.run_start_ns) / 1_000_000_000) as usize;
        if self.result.timeline.len() <= second {
            self.result.timeline.resize(second + 1, 0);
        }
        self.result.timeline[second] += 1;
        self.progress().alive.fetch_add(1, Relaxed);
        if attempt == BURST_ATTEMPT {
            return self.burst_opened(key, now, elapsed);
        }
        if attempt > 0 {
            self.result.storm_setup.record_ns(elapsed);
            return;
        }
        if matches!(self.job.scenario.work, Work::Churn { .. }) {
            self.result.churn_setup.record_ns(elapsed);
            self.send_payload(key, now);
            return;
        }
        self.result.connect.record_ns(elapsed);
        self.progress().opened.fetch_add(1, Relaxed);
        if self.publisher.is_none() && self.job.id == 0 && self.job.publishes {
            self.publisher = Some(key);
        }
        if self.working {
            self.start_client_work(key, now);
        }
    }

    pub(super) fn sweep_timeouts(&mut self, now: u64) {
        let limit = self.job.connect_timeout.as_nanos() as u64;
        let late: Vec<(usize, Phase)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.phase != Phase::Open && now - c.started_ns > limit)
            .map(|(key, c)| (key, c.phase))
            .collect();
        for (key, phase) in late {
            // No SYN-ACK in time (a full accept queue drops SYNs) is not the
            // same trouble as a server that accepted and never answered.
            let cause = match phase {
                Phase::Connecting => "connect timeout",
                _ => "handshake timeout",
            };
            self.fail_client(key, cause);
        }
    }

    pub(super) fn on_writable(&mut self, key: usize) {
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
        if self.tls.is_some() {
            // The request follows the TLS handshake.
            if let Err(cause) = self.tls_start(key) {
                self.fail_client(key, &cause);
            }
            return;
        }
        let _ = self.send_request(key);
    }

    /// Send the upgrade request (or TCP hello); a client that fails is
    /// counted and gone.
    pub(super) fn send_request(&mut self, key: usize) -> Result<(), ()> {
        let client = &mut self.clients[key];
        let target = &self.job.targets[client.server as usize];
        let request = match target.wire {
            // A floor server speaks first: its greeting.
            Wire::Bare => return Ok(()),
            Wire::Ws => {
                let key_text = handshake::client_key();
                let offer = self.job.scenario.deflate.then_some(negotiate::CLIENT_OFFER);
                let request =
                    handshake::client_request(&target.host, &target.path, &key_text, offer);
                client.set_key(Some(key_text.into_boxed_str()));
                request
            }
            Wire::Tcp => tcp::encode(target.path.as_bytes()),
        };
        if let Err(e) = self.send_to(key, &request) {
            self.fail_client(key, &client::failure_cause(&e));
            return Err(());
        }
        Ok(())
    }
}
