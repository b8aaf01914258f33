//! The load report: one struct, printed as a fixed text block and written as
//! JSON (schema: docs/load-report.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::accounting::Tally;
use super::histogram::Summary;
use super::spread::Spread;

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub conns: usize,
    pub client_shards: usize,
    pub private_fd_tables: bool,
    pub sources: Vec<String>,
    /// What the source plan went around: ports already held toward the
    /// server (TIME_WAIT included) per source address, and the addresses
    /// used or skipped for it.
    #[serde(default)]
    pub source_notes: Vec<String>,
    pub connect: ConnectReport,
    /// What filled the messages, and how it compresses.
    #[serde(default)]
    pub payload: Option<PayloadReport>,
    /// With --deflate: the connections that agreed on permessage-deflate.
    #[serde(default)]
    pub deflate_agreed: Option<u64>,
    pub broadcast: Option<BroadcastReport>,
    pub echo: Option<EchoReport>,
    pub churn: Option<ChurnReport>,
    #[serde(default)]
    pub storm: Option<StormReport>,
    /// A connection burst (`fanout load burst`).
    #[serde(default)]
    pub burst: Option<BurstReport>,
    /// With several --url: how connections picked their server, and what
    /// each server got (empty with one).
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub servers: Vec<ServerShare>,
    /// With --coordinator, on the first agent: all K agents as one load.
    #[serde(default)]
    pub agents: Option<AgentsReport>,
    /// The merged connect and echo histograms, for a coordinator to merge
    /// with other agents' (never written).
    #[serde(skip)]
    #[schemars(skip)]
    pub recorded: RecordedHistograms,
    pub client: ClientReport,
    /// The kernel's TCP counters that changed during the run (system-wide:
    /// other programs' traffic counts too).
    pub kernel_counters: crate::netstat::Counters,
    /// The same from the end of the ramp to the end of the run: the work's own.
    pub kernel_counters_work: crate::netstat::Counters,
    /// Those of them that mean drops, overflows or retransmits.
    pub kernel_trouble: Vec<String>,
    /// What those usually mean.
    pub kernel_causes: Vec<String>,
}

/// The messages' payload: its fill after the 16-byte header, and what a
/// message of its size is like to a compressor.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PayloadReport {
    pub fill: crate::load::payload::Fill,
    pub size: usize,
    /// Order-0 entropy of one message, bits per byte (8: random).
    pub entropy_bits_per_byte: f64,
    /// Its bytes left after DEFLATE alone (zlib's default level, no
    /// context from earlier messages).
    pub deflated_share: f64,
}

impl PayloadReport {
    pub fn of(fill: crate::load::payload::Fill, size: usize) -> Option<PayloadReport> {
        let (entropy_bits_per_byte, deflated_share) = crate::load::payload::describe(fill, size);
        Some(PayloadReport {
            fill,
            size,
            entropy_bits_per_byte,
            deflated_share,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConnectReport {
    pub opened: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// From the first attempt until every attempt had succeeded or failed.
    pub ramp_seconds: f64,
    pub rate_per_s: f64,
    /// Connections opened in each second of the run.
    pub timeline: Vec<u64>,
    /// TCP connect plus upgrade (or hello).
    pub latency: Summary,
    pub alive_at_end: u64,
    pub closed_by_server: u64,
    /// Of those, how: the close code the server sent, "no code", or "hung
    /// up" (no close frame: TCP, or a dropped WebSocket).
    #[serde(default)]
    pub server_closes: BTreeMap<String, u64>,
    /// Attempts that found their source address out of ports and moved to
    /// the next (each address out of ports is then skipped until all are).
    #[serde(default)]
    pub source_moves: u64,
    /// Connections started on a source port fanout chose itself (bound
    /// address and port) because the kernel's search found none free.
    #[serde(default)]
    pub explicit_ports: u64,
    /// wss:// and tls://: TLS handshakes completed, and of those resumed
    /// from a session ticket.
    #[serde(default)]
    pub tls_handshakes: u64,
    #[serde(default)]
    pub tls_resumed: u64,
}

/// A reconnect storm (`fanout load storm`): every connection lost at once
/// and brought back.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StormReport {
    /// How the connections were lost: reset by the client, or dropped by
    /// the server.
    pub cause: String,
    /// How each came back: at once, or the backoff.
    pub reconnect: String,
    /// Connections open when the storm began.
    pub open_before: u64,
    /// Open connections lost.
    pub lost: u64,
    /// Reconnect attempts started.
    pub attempts: u64,
    /// Reconnects that opened.
    pub back: u64,
    /// Reconnect attempts that failed (by cause in `connect.failures`).
    pub failed_attempts: u64,
    /// Connections that gave up after 100 attempts.
    pub gave_up: u64,
    /// Reconnects still waiting for their time when the run ended.
    pub waiting_at_end: u64,
    /// From the first connection lost until all were open again; none if
    /// that did not happen within --duration.
    pub all_back_seconds: Option<f64>,
    /// Each successful reconnect: TCP connect plus upgrade.
    pub setup: Summary,
    /// Accept-queue overflows during the storm (TcpExt.ListenOverflows,
    /// system-wide): SYNs or handshakes the kernel dropped.
    pub listen_overflows: u64,
    /// [seconds since the first loss, connections open], every 100 ms.
    pub curve: Vec<[f64; 2]>,
}

/// Raw histograms a report keeps for a coordinator.
#[derive(Clone, Debug, Default)]
pub struct RecordedHistograms {
    pub connect: super::histogram::Recorded,
    pub echo: super::histogram::Recorded,
    pub deliveries: super::histogram::Recorded,
}

/// K load agents as one load (`--coordinator`, `--agents`), merged on the
/// first: counts summed, latency histograms merged bucket by bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentsReport {
    /// Agents that reported.
    pub agents: usize,
    /// Distinct hosts among them (by the kernel's boot id).
    pub hosts: usize,
    /// Whose clock each latency was read on.
    pub clock: String,
    /// Connections opened and failed, over all agents.
    pub opened: u64,
    pub failed: u64,
    /// Failures by cause, over all agents.
    pub failures: BTreeMap<String, u64>,
    /// Connections open at the end, and closed by a server, over all agents.
    pub alive_at_end: u64,
    pub closed_by_server: u64,
    /// Every agent's connect + upgrade times, one histogram.
    pub connect_latency: Summary,
    /// Echo: messages over all agents, per second of the longest agent's
    /// echo time, and their latency histogram merged.
    pub echo_messages: u64,
    pub echo_msgs_per_s: f64,
    pub echo_latency: Option<Summary>,
    /// Broadcast: members over all agents, messages published (by the
    /// first agent), deliveries tallied by every agent's members.
    #[serde(default)]
    pub members: u64,
    #[serde(default)]
    pub messages_published: u64,
    #[serde(default)]
    pub tally: Option<super::accounting::Tally>,
    /// Broadcast: every delivery's latency from its publish, merged over
    /// the agents on the publisher's host (payload stamps are only
    /// comparable on the host that stamped them; `clock` says which).
    #[serde(default)]
    pub delivery_latency: Option<Summary>,
    /// Each agent's own counts.
    pub per_agent: Vec<AgentLine>,
}

/// One agent's counts in the merged report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentLine {
    /// Its seat (1: the coordinator).
    pub index: usize,
    pub opened: u64,
    pub failed: u64,
    pub echo_messages: u64,
}

/// One server's share of a load spread over several (--url, --balance).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerShare {
    /// The --url as given.
    pub url: String,
    /// Connections that opened to it (every attempt that succeeded).
    pub opened: u64,
    /// Of those, open when the run ended.
    pub open_at_end: u64,
}

/// A connection burst (`fanout load burst`): what the server did with each
/// of --burst connections opened in one instant beside --conns held ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BurstReport {
    /// Connections opened in the burst (--burst).
    pub size: u64,
    /// Connections held open when the burst began, and of those still
    /// open at the end (the server kept serving them, or not).
    pub held: u64,
    pub held_open_at_end: u64,
    /// Seconds the client took to issue every connect() of the burst: how
    /// close to one instant it came.
    pub issue_seconds: f64,
    /// From the first connect() until every attempt had opened or failed;
    /// none if some had neither by the end.
    pub settled_seconds: Option<f64>,
    /// Attempts that opened (TCP connect plus upgrade).
    pub opened: u64,
    /// Of those, opened only after the kernel sent the SYN or the request
    /// again (TCP_INFO's retransmits on the socket): the server's kernel
    /// dropped the first, usually at a full accept queue.
    pub retransmitted: u64,
    /// Refused by the server's admission control: HTTP 503 (TCP: the
    /// hello answered `error: try again later`).
    pub refused: u64,
    /// Every attempt that did not open, by cause (the refusals among them).
    pub failures: BTreeMap<String, u64>,
    /// Burst connections still open when the run ended.
    pub open_at_end: u64,
    /// Each opened one: TCP connect plus upgrade.
    pub setup: Summary,
    /// The kernel's counters over the work (system-wide): accept-queue
    /// overflows (TcpExt.ListenOverflows), SYNs dropped at a listener
    /// (TcpExt.ListenDrops), SYN retransmits (TcpExt.TCPSynRetrans) and
    /// SYN cookies sent (TcpExt.SyncookiesSent).
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub syn_retransmits: u64,
    pub syncookies_sent: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BroadcastReport {
    /// Members open when the work started.
    pub members: u64,
    pub messages_sent: u64,
    pub size: usize,
    /// How messages were published: one at a time, or sustained at a rate.
    pub mode: String,
    /// Every delivery's latency, all messages together.
    pub latency: Summary,
    /// Over messages: each one's first delivery (exact), µs.
    pub first_delivery_us: Spread,
    /// Over messages: each one's last delivery (exact), µs.
    pub last_delivery_us: Spread,
    /// Publish bursts (--publish-burst): over bursts, each one's last
    /// delivery of any of its messages, µs from the burst's publish: when
    /// every member had the whole burst.
    #[serde(default)]
    pub burst_last_delivery_us: Option<Spread>,
    /// Per message, with percentiles (when at most 100 were sent).
    pub per_message: Vec<MessageReport>,
    pub tally: Tally,
    /// Members the server closed during the work.
    pub members_closed: u64,
    /// Waits for a message to reach every member that gave up.
    pub timed_out: u64,
    /// The work phase, pauses included.
    pub seconds: f64,
    /// Time spent delivering: one at a time, the sum of each message's
    /// publish-to-last-delivery; sustained, first publish to last delivery.
    pub delivery_seconds: f64,
    /// Deliveries ÷ delivery_seconds.
    pub deliveries_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MessageReport {
    pub seq: u64,
    pub deliveries: u64,
    pub first_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub last_us: f64,
    /// Deliveries of this message divided by its last delivery's latency.
    pub deliveries_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EchoReport {
    /// Echo connections.
    pub conns: usize,
    pub mode: String,
    /// Open-loop: messages per second per connection; closed-loop: null.
    pub open_loop_rate: Option<f64>,
    pub size: usize,
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub bytes_per_s: f64,
    pub latency: Summary,
    /// Open-loop only: how late sends were against their schedule.
    pub send_lag: Option<Summary>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnReport {
    /// Connections asked for per second.
    pub target_rate_per_s: f64,
    /// Cycles due by the schedule.
    #[serde(default)]
    pub arrivals: u64,
    /// Arrivals not started: their shard already had the most cycles in
    /// flight it may (--max-inflight).
    #[serde(default)]
    pub dropped: u64,
    /// Cycles whose connection failed (see the connect failures).
    #[serde(default)]
    pub failed: u64,
    /// Cycles started and neither completed nor failed when churn stopped
    /// (connecting, upgrading or echoing): arrivals = completed + dropped +
    /// failed + in flight.
    #[serde(default)]
    pub in_flight_at_end: u64,
    /// The bound on cycles in flight, per client shard.
    #[serde(default)]
    pub max_inflight_per_shard: usize,
    /// Cycles (open, echo once, close) completed.
    pub completed: u64,
    /// How long churn ran, seconds.
    pub seconds: f64,
    /// Cycles completed per second.
    pub rate_per_s: f64,
    /// Connect plus upgrade.
    pub setup: Summary,
    /// Connect, upgrade, one echo.
    pub total: Summary,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientReport {
    /// Client CPU time over (wall time × cores): near 1 means the load
    /// generator, not the server, was the limit.
    pub cpu_share: f64,
    /// CPU seconds of the client shards from the start of the work until
    /// the stop.
    #[serde(default)]
    pub work_cpu_seconds: f64,
    /// That ÷ messages received (broadcast deliveries or echoes) × 10^6.
    #[serde(default)]
    pub cpu_seconds_per_million_received: Option<f64>,
    /// The load generator's own user space per connection (slope from N/2
    /// to N), when it held connections.
    #[serde(default)]
    pub memory: Option<crate::load::memory::ClientMemory>,
    pub warnings: Vec<String>,
}

/// Microseconds as `83 µs` or `21.82 ms`.
pub fn ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn latency_line(label: &str, s: &Summary) -> String {
    format!(
        "  {label:<12} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})\n",
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us),
        s.count
    )
}

fn broadcast_text(out: &mut String, b: &BroadcastReport) {
    let _ = writeln!(
        out,
        "broadcast {} messages of {} B to {} members, {}: {} deliveries, {:.0}/s over {:.2} s of delivery",
        b.messages_sent,
        b.size,
        b.members,
        b.mode,
        b.tally.delivered,
        b.deliveries_per_s,
        b.delivery_seconds
    );
    let (first, last) = (&b.first_delivery_us, &b.last_delivery_us);
    let _ = writeln!(
        out,
        "  over {} messages: first delivery median {} ({} – {}), last delivery median {} ({} – {})",
        last.n,
        ms(first.median),
        ms(first.min),
        ms(first.max),
        ms(last.median),
        ms(last.min),
        ms(last.max)
    );
    if let Some(bursts) = &b.burst_last_delivery_us {
        let _ = writeln!(
            out,
            "  over {} bursts: every member had the whole burst after median {} ({} – {})",
            bursts.n,
            ms(bursts.median),
            ms(bursts.min),
            ms(bursts.max)
        );
    }
    let t = &b.tally;
    let _ = writeln!(
        out,
        "  missing {}, duplicated {}, in flight at the end {}; closed by server {} members (with {} undelivered)",
        t.missing, t.duplicated, t.in_flight, b.members_closed, t.closed
    );
    out.push_str(&latency_line("delivery", &b.latency));
    if !b.per_message.is_empty() {
        let _ = writeln!(
            out,
            "  {:>5} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "msg", "first", "median", "p99", "last", "deliveries/s"
        );
        for m in &b.per_message {
            let _ = writeln!(
                out,
                "  {:>5} {:>10} {:>10} {:>10} {:>10} {:>12.0}",
                m.seq,
                ms(m.first_us),
                ms(m.p50_us),
                ms(m.p99_us),
                ms(m.last_us),
                m.deliveries_per_s
            );
        }
    }
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let c = &self.connect;
        let what = match &self.churn {
            Some(ch) => format!("churn at {:.0} connections/s", ch.target_rate_per_s),
            None => format!("{} connections", self.conns),
        };
        let _ = writeln!(
            out,
            "fanout load {} {} — {what}, {} client shards{}, {} source addresses",
            self.scenario,
            self.url,
            self.client_shards,
            if self.private_fd_tables {
                " (private fd tables)"
            } else {
                ""
            },
            self.sources.len()
        );
        for note in &self.source_notes {
            let _ = writeln!(out, "sources   {note}");
        }
        if let Some(p) = self
            .payload
            .as_ref()
            .filter(|p| p.fill != crate::load::payload::Fill::Zeros)
        {
            let _ = writeln!(
                out,
                "payload   {:?} after the 16-byte header, {} B: {:.2} bits/byte (order-0 entropy), deflates alone to {:.0} % of its size",
                p.fill, p.size, p.entropy_bits_per_byte, p.deflated_share * 100.0
            );
        }
        if let Some(agreed) = self.deflate_agreed {
            let _ = writeln!(
                out,
                "deflate   offered on every connection; {agreed} agreed (permessage-deflate)"
            );
        }
        if self.churn.is_none() {
            let _ = writeln!(
                out,
                "connect   {} opened, {} failed in {:.2} s: {:.0}/s",
                c.opened, c.failed, c.ramp_seconds, c.rate_per_s
            );
        }
        for (cause, n) in &c.failures {
            let _ = writeln!(out, "  failed: {cause}: {n}");
        }
        if c.source_moves > 0 {
            let _ = writeln!(
                out,
                "  moved to another source address {} times (EADDRNOTAVAIL: that address was out of ports)",
                c.source_moves
            );
        }
        if c.tls_handshakes > 0 {
            let _ = writeln!(
                out,
                "  tls: {} handshakes, {} of them resumed from a session ticket",
                c.tls_handshakes, c.tls_resumed
            );
        }
        if c.explicit_ports > 0 {
            let _ = writeln!(
                out,
                "  ports: {} connections: fanout chose their source ports itself (bound address and port, the 4-tuple free): the kernel's own search found no port, as when explicitly bound sockets (another tool's, e.g. in TIME_WAIT) hold the range on any address",
                c.explicit_ports
            );
        }
        if self.churn.is_none() {
            out.push_str(&latency_line("setup", &c.latency));
            let _ = writeln!(
                out,
                "  alive at end {}, closed by server {}{}",
                c.alive_at_end,
                c.closed_by_server,
                close_kinds(&c.server_closes)
            );
        }
        if let Some(agents) = &self.agents {
            agents_text(&mut out, agents);
        }
        if let Some(balance) = &self.balance {
            let shares: Vec<String> = self
                .servers
                .iter()
                .map(|s| format!("{} {} ({} open at the end)", s.url, s.opened, s.open_at_end))
                .collect();
            let _ = writeln!(out, "servers   {balance}: {}", shares.join(", "));
        }
        if let Some(b) = &self.broadcast {
            broadcast_text(&mut out, b);
        }
        if let Some(storm) = &self.storm {
            storm_text(&mut out, storm, &self.connect.failures);
        }
        if let Some(burst) = &self.burst {
            burst_text(&mut out, burst);
        }
        if let Some(e) = &self.echo {
            let _ = writeln!(
                out,
                "echo      {} connections, {} ({} B): {} messages in {:.2} s: {:.0} msgs/s, {:.1} MB/s",
                e.conns,
                e.mode,
                e.size,
                e.messages,
                e.seconds,
                e.msgs_per_s,
                e.bytes_per_s / 1e6
            );
            out.push_str(&latency_line("latency", &e.latency));
            if let Some(lag) = &e.send_lag {
                out.push_str(&latency_line("send lag", lag));
            }
        }
        if let Some(ch) = &self.churn {
            let _ = writeln!(
                out,
                "churn     {} connect-echo-close cycles in {:.2} s: {:.0}/s (target {:.0}/s)",
                ch.completed, ch.seconds, ch.rate_per_s, ch.target_rate_per_s
            );
            let _ = writeln!(
                out,
                "  asked {}, completed {}, dropped {} (at most {} in flight per shard), failed {}, in flight at the end {}",
                ch.arrivals,
                ch.completed,
                ch.dropped,
                ch.max_inflight_per_shard,
                ch.failed,
                ch.in_flight_at_end
            );
            out.push_str(&latency_line("setup", &ch.setup));
            out.push_str(&latency_line("cycle", &ch.total));
        }
        let _ = writeln!(
            out,
            "client    CPU {:.0}% of the machine{}",
            self.client.cpu_share * 100.0,
            self.client
                .cpu_seconds_per_million_received
                .map(|s| format!("; {s:.2} CPU-s per million messages received during the work"))
                .unwrap_or_default()
        );
        if let Some(m) = &self.client.memory {
            let _ = writeln!(
                out,
                "client    user space per connection, slope from N/2 to N ({} opened between): allocator {:.1} B, RSS {:.1} B (slots of {} B); at N: {:.1} MB allocated, {:.1} MB RSS",
                m.conns,
                m.heap_per_conn,
                m.rss_per_conn,
                m.slot_bytes,
                m.heap_at_n as f64 / 1e6,
                m.rss_at_n as f64 / 1e6
            );
        }
        for warning in &self.client.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        if !self.kernel_trouble.is_empty() {
            let _ = writeln!(out, "kernel    {}", self.kernel_trouble.join(", "));
        }
        for cause in &self.kernel_causes {
            let _ = writeln!(out, "  {cause}");
        }
        out
    }
}

/// " (1001: 2000, hung up: 3)", or nothing when there were no closes.
fn close_kinds(closes: &BTreeMap<String, u64>) -> String {
    if closes.is_empty() {
        return String::new();
    }
    let kinds: Vec<String> = closes
        .iter()
        .map(|(how, n)| format!("{how}: {n}"))
        .collect();
    format!(" ({})", kinds.join(", "))
}

fn agents_text(out: &mut String, a: &AgentsReport) {
    let _ = writeln!(
        out,
        "agents    {} agents on {} host(s), merged: {} opened, {} failed{}; {} open at the end, closed by server {}",
        a.agents,
        a.hosts,
        a.opened,
        a.failed,
        close_kinds(&a.failures),
        a.alive_at_end,
        a.closed_by_server
    );
    out.push_str(&latency_line("setup", &a.connect_latency));
    if let Some(echo) = &a.echo_latency {
        let _ = writeln!(
            out,
            "  echo {} messages, {:.0} msgs/s over all agents",
            a.echo_messages, a.echo_msgs_per_s
        );
        out.push_str(&latency_line("echo", echo));
    }
    if let Some(t) = &a.tally {
        let _ = writeln!(
            out,
            "  broadcast {} messages to {} members: {} delivered, {} missing, {} duplicated, {} in flight, {} lost with closed members",
            a.messages_published, a.members, t.delivered, t.missing, t.duplicated, t.in_flight, t.closed
        );
    }
    if let Some(delivery) = &a.delivery_latency {
        out.push_str(&latency_line("delivery", delivery));
    }
    let each: Vec<String> = a
        .per_agent
        .iter()
        .map(|l| format!("#{} {} opened", l.index, l.opened))
        .collect();
    let _ = writeln!(out, "  each: {}; clock: {}", each.join(", "), a.clock);
}

fn burst_text(out: &mut String, burst: &BurstReport) {
    let settled = match burst.settled_seconds {
        Some(seconds) => format!("every attempt settled in {seconds:.2} s"),
        None => "NOT every attempt settled by the end".to_string(),
    };
    let _ = writeln!(
        out,
        "burst     {} connections issued in {:.3} s beside {} held: {settled}",
        burst.size, burst.issue_seconds, burst.held
    );
    let _ = writeln!(
        out,
        "  opened {} ({} after a resent SYN or request), refused (503) {}, failed {}{}; still open at the end {}",
        burst.opened,
        burst.retransmitted,
        burst.refused,
        burst.failures.values().sum::<u64>(),
        close_kinds(&burst.failures),
        burst.open_at_end
    );
    let _ = writeln!(
        out,
        "  held open at the end {} of {}; kernel: ListenOverflows {}, ListenDrops {}, TCPSynRetrans {}, SyncookiesSent {}",
        burst.held_open_at_end,
        burst.held,
        burst.listen_overflows,
        burst.listen_drops,
        burst.syn_retransmits,
        burst.syncookies_sent
    );
    out.push_str(&latency_line("setup", &burst.setup));
    if burst.failures.contains_key("handshake timeout") && burst.listen_overflows > 0 {
        let _ = writeln!(
            out,
            "  note: a handshake timeout here is a connection open on the client's side only: the server's kernel dropped its last handshake ACK at a full accept queue (ListenOverflows), so the request waits on retransmits"
        );
    }
}

fn storm_text(out: &mut String, storm: &StormReport, failures: &BTreeMap<String, u64>) {
    let back = match storm.all_back_seconds {
        Some(seconds) => format!("all back in {seconds:.2} s"),
        None => format!("NOT all back: {} of {}", storm.back, storm.lost),
    };
    let _ = writeln!(
        out,
        "storm     {} of {} open {}, reconnecting {}: {back}",
        storm.lost, storm.open_before, storm.cause, storm.reconnect
    );
    let kinds: Vec<String> = failures
        .iter()
        .map(|(why, n)| format!("{why}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "  attempts {}, opened {}, failed {}{}; gave up {}, waiting at the end {}; ListenOverflows {}",
        storm.attempts,
        storm.back,
        storm.failed_attempts,
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) },
        storm.gave_up,
        storm.waiting_at_end,
        storm.listen_overflows
    );
    out.push_str(&latency_line("reconnect", &storm.setup));
}
