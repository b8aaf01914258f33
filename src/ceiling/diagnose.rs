//! Naming the limit a ramp hit, from evidence: the clients' failure causes
//! (each an errno), the kernel's TCP counters over the ramp, and what the
//! server's process showed. Pure, so every rule is tested with injected
//! evidence; the order of the rules is the order in which one limit masks
//! another (a server out of fds also overflows its accept queue, so its fd
//! table is looked at first).

use std::collections::BTreeMap;

use serde::Serialize;

use super::server::ServerView;
use crate::netstat::Counters;

/// Everything the ramp left behind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Evidence {
    /// Connections the ramp was allowed to open.
    pub asked: u64,
    /// Connections open when it stopped.
    pub held: u64,
    /// Client failure causes → count (`no free source port`, `fd limit`, …).
    pub failures: BTreeMap<String, u64>,
    /// The kernel's TCP counters that changed during the ramp.
    pub kernel: Counters,
    /// The server's process at the ceiling, if it could be found.
    pub server: Option<ServerView>,
    /// The server's own counters, when it is a fanout server we started.
    pub server_counters: Option<ServerCounters>,
    /// How the server ended, when it ended during the ramp.
    pub server_exit: Option<String>,
    /// CPU cores the server kept busy over the ramp, on average.
    pub server_cpu_cores: Option<f64>,
    /// MemAvailable at the ceiling.
    pub mem_available_bytes: u64,
    /// Source addresses the client connected from.
    pub source_addresses: usize,
}

/// A fanout server's own account of why it stopped accepting.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ServerCounters {
    pub accept_pauses_fd_limit: u64,
    pub accept_pauses_full: u64,
}

/// The limits a ramp can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Nothing gave: every connection asked for is open.
    NoneBelowAsked,
    SourcePorts,
    ClientFdTable,
    FileMax,
    Memory,
    ServerExited,
    ServerFdTable,
    ServerPlannedMaximum,
    AcceptQueue,
    Refused,
    ClosedByServer,
    ServerTooSlow,
    Unknown,
}

/// Which end hit the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Neither,
    Client,
    Server,
    /// The machine: a kernel-wide limit both ends share.
    Machine,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub limit: Limit,
    pub side: Side,
    /// One sentence: what gave.
    pub summary: String,
    /// The facts that say so.
    pub evidence: Vec<String>,
}

/// Counters that rise when the accept queue or SYN queue overflows.
const ACCEPT_QUEUE_COUNTERS: [&str; 3] = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDrop",
];

/// An fd table this close to its limit is full (a server keeps a few fds
/// for itself; an accept needs one more).
const FULL_TABLE_SLACK: u64 = 8;

pub fn diagnose(e: &Evidence) -> Diagnosis {
    let failed = |cause: &str| e.failures.get(cause).copied().unwrap_or(0);
    let rose = |name: &str| e.kernel.get(name).copied().unwrap_or(0) > 0;
    let facts = facts(e);
    let (limit, side, summary) = if e.failures.is_empty() && e.server_exit.is_none() {
        if e.held >= e.asked {
            (
                Limit::NoneBelowAsked,
                Side::Neither,
                format!("nothing gave: all {} connections are open", e.asked),
            )
        } else {
            (
                Limit::Unknown,
                Side::Neither,
                format!(
                    "{} of {} open and no attempt failed: the ramp ran out of time",
                    e.held, e.asked
                ),
            )
        }
    } else if failed("no free source port") > 0 {
        (
            Limit::SourcePorts,
            Side::Client,
            format!(
                "the client ran out of source ports (EADDRNOTAVAIL) at {} connections from {} source address(es)",
                e.held, e.source_addresses
            ),
        )
    } else if failed("file-max") > 0 {
        (
            Limit::FileMax,
            Side::Machine,
            "the machine's open-file limit fs.file-max (ENFILE)".into(),
        )
    } else if failed("fd limit") > 0 {
        (
            Limit::ClientFdTable,
            Side::Client,
            "the client's fd table is full (EMFILE)".into(),
        )
    } else if failed("out of memory") > 0 || rose("TcpExt.TCPAbortOnMemory") {
        (
            Limit::Memory,
            Side::Machine,
            "the kernel refused socket memory (ENOMEM/ENOBUFS or TCPAbortOnMemory)".into(),
        )
    } else if let Some(exit) = &e.server_exit {
        if exit.contains("SIGKILL") {
            (
                Limit::Memory,
                Side::Server,
                format!("the server was killed ({exit}): the kernel's OOM killer sends SIGKILL"),
            )
        } else {
            (
                Limit::ServerExited,
                Side::Server,
                format!("the server ended during the ramp ({exit})"),
            )
        }
    } else if server_table_full(e) {
        (
            Limit::ServerFdTable,
            Side::Server,
            "the server's fd table is full (its accept gets EMFILE); connections wait in its accept queue until they time out".into(),
        )
    } else if e.server_counters.is_some_and(|c| c.accept_pauses_full > 0) {
        (
            Limit::ServerPlannedMaximum,
            Side::Server,
            "the server holds the maximum it planned for (--max-conns) and stopped accepting"
                .into(),
        )
    } else if ACCEPT_QUEUE_COUNTERS.iter().any(|c| rose(c)) {
        (
            Limit::AcceptQueue,
            Side::Server,
            "the server's accept queue overflowed: it did not accept as fast as connections arrived, and the kernel dropped their SYNs".into(),
        )
    } else if failed("refused") > 0 {
        (
            Limit::Refused,
            Side::Server,
            "connections were refused (ECONNREFUSED): nothing listens on the port, or the server closed its listener".into(),
        )
    } else if failed("closed by server") + failed("reset") > 0
        || e.failures.keys().any(|c| c.starts_with("http "))
    {
        (
            Limit::ClosedByServer,
            Side::Server,
            "the server turned connections away (closed, reset or answered with an HTTP error)"
                .into(),
        )
    } else if failed("connect timeout") + failed("handshake timeout") > 0 {
        (
            Limit::ServerTooSlow,
            Side::Server,
            "connections timed out with no queue overflow, fd limit or refusal: the server answered too slowly".into(),
        )
    } else {
        (
            Limit::Unknown,
            Side::Neither,
            "no known limit explains the failures".into(),
        )
    };
    Diagnosis {
        limit,
        side,
        summary,
        evidence: facts,
    }
}

fn server_table_full(e: &Evidence) -> bool {
    let paused = e
        .server_counters
        .is_some_and(|c| c.accept_pauses_fd_limit > 0);
    let full = e.server.as_ref().is_some_and(|s| {
        s.nofile_soft
            .is_some_and(|limit| s.fullest_fd_table + FULL_TABLE_SLACK >= limit)
    });
    paused || full
}

/// The facts, each one line, whatever the diagnosis.
fn facts(e: &Evidence) -> Vec<String> {
    let mut facts = vec![format!("held {} of {} asked", e.held, e.asked)];
    if !e.failures.is_empty() {
        let causes: Vec<String> = e
            .failures
            .iter()
            .map(|(cause, n)| format!("{cause} ×{n}"))
            .collect();
        facts.push(format!("failures: {}", causes.join(", ")));
    }
    let trouble = crate::netstat::trouble(&e.kernel);
    if !trouble.is_empty() {
        facts.push(format!("kernel: {}", trouble.join(", ")));
    }
    if let Some(s) = &e.server {
        let limit = s
            .nofile_soft
            .map_or("unknown".to_string(), |n| n.to_string());
        facts.push(format!(
            "server pid {}: fullest fd table {} of {limit} (RLIMIT_NOFILE), RSS {:.1} MiB",
            s.pid,
            s.fullest_fd_table,
            s.rss_bytes as f64 / (1 << 20) as f64
        ));
    }
    if let Some(cores) = e.server_cpu_cores {
        facts.push(format!("server CPU over the ramp: {cores:.2} cores busy"));
    }
    if let Some(c) = e.server_counters {
        facts.push(format!(
            "server counters: accept paused {} times on EMFILE, {} times at its planned maximum",
            c.accept_pauses_fd_limit, c.accept_pauses_full
        ));
    }
    if let Some(exit) = &e.server_exit {
        facts.push(format!("server ended: {exit}"));
    }
    facts.push(format!(
        "memory available at the ceiling: {:.2} GiB",
        e.mem_available_bytes as f64 / (1u64 << 30) as f64
    ));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(failures: &[(&str, u64)], counters: &[(&str, i64)]) -> Evidence {
        Evidence {
            asked: 100_000,
            held: 28_231,
            failures: failures.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            kernel: counters.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            mem_available_bytes: 20 << 30,
            source_addresses: 1,
            ..Evidence::default()
        }
    }

    fn server(fds: u64, limit: u64) -> ServerView {
        ServerView {
            pid: 42,
            fullest_fd_table: fds,
            nofile_soft: Some(limit),
            rss_bytes: 50 << 20,
            cpu_seconds: 1.0,
        }
    }

    #[test]
    fn eaddrnotavail_is_the_clients_source_ports() {
        let d = diagnose(&evidence(&[("no free source port", 12)], &[]));
        assert_eq!((d.limit, d.side), (Limit::SourcePorts, Side::Client));
        assert!(d.summary.contains("28231 connections from 1 source"));
        assert!(d
            .evidence
            .iter()
            .any(|f| f == "failures: no free source port ×12"));
    }

    #[test]
    fn emfile_and_enfile_and_enomem_are_told_apart() {
        let d = diagnose(&evidence(&[("fd limit", 3)], &[]));
        assert_eq!((d.limit, d.side), (Limit::ClientFdTable, Side::Client));
        let d = diagnose(&evidence(&[("file-max", 3), ("fd limit", 1)], &[]));
        assert_eq!((d.limit, d.side), (Limit::FileMax, Side::Machine));
        let d = diagnose(&evidence(&[("out of memory", 1)], &[]));
        assert_eq!(d.limit, Limit::Memory);
        let d = diagnose(&evidence(
            &[("reset", 5)],
            &[("TcpExt.TCPAbortOnMemory", 5)],
        ));
        assert_eq!(d.limit, Limit::Memory);
    }

    #[test]
    fn a_full_server_table_is_named_before_the_queue_it_overflows() {
        let mut e = evidence(
            &[("handshake timeout", 200), ("connect timeout", 50)],
            &[("TcpExt.ListenOverflows", 80)],
        );
        e.server = Some(server(250, 256));
        let d = diagnose(&e);
        assert_eq!((d.limit, d.side), (Limit::ServerFdTable, Side::Server));
        assert!(d
            .evidence
            .iter()
            .any(|f| f.contains("fullest fd table 250 of 256")));
        assert!(d.evidence.iter().any(|f| f.contains("ListenOverflows +80")));

        // The same failures with room in the table: the queue.
        e.server = Some(server(100, 256));
        let d = diagnose(&e);
        assert_eq!((d.limit, d.side), (Limit::AcceptQueue, Side::Server));

        // A fanout server's own counter says EMFILE even when /proc cannot.
        e.server = None;
        e.server_counters = Some(ServerCounters {
            accept_pauses_fd_limit: 3,
            accept_pauses_full: 0,
        });
        assert_eq!(diagnose(&e).limit, Limit::ServerFdTable);
    }

    #[test]
    fn a_killed_server_is_probably_the_oom_killer() {
        let mut e = evidence(&[("reset", 900)], &[]);
        e.server_exit = Some("killed by SIGKILL".into());
        let d = diagnose(&e);
        assert_eq!((d.limit, d.side), (Limit::Memory, Side::Server));
        e.server_exit = Some("exit status 101".into());
        assert_eq!(diagnose(&e).limit, Limit::ServerExited);
    }

    #[test]
    fn refusals_closes_and_slow_answers_are_the_servers() {
        assert_eq!(
            diagnose(&evidence(&[("refused", 1)], &[])).limit,
            Limit::Refused
        );
        assert_eq!(
            diagnose(&evidence(&[("http 503", 1)], &[])).limit,
            Limit::ClosedByServer
        );
        let mut e = evidence(&[("handshake timeout", 9)], &[]);
        e.server_cpu_cores = Some(1.98);
        let d = diagnose(&e);
        assert_eq!((d.limit, d.side), (Limit::ServerTooSlow, Side::Server));
        assert!(d.evidence.iter().any(|f| f.contains("1.98 cores")));
    }

    #[test]
    fn a_planned_maximum_is_not_mistaken_for_a_queue() {
        let mut e = evidence(
            &[("handshake timeout", 9)],
            &[("TcpExt.ListenOverflows", 3)],
        );
        e.server_counters = Some(ServerCounters {
            accept_pauses_fd_limit: 0,
            accept_pauses_full: 4,
        });
        assert_eq!(diagnose(&e).limit, Limit::ServerPlannedMaximum);
    }

    #[test]
    fn nothing_failing_is_no_ceiling_below_the_ask_or_a_short_ramp() {
        let mut e = evidence(&[], &[]);
        e.held = e.asked;
        let d = diagnose(&e);
        assert_eq!((d.limit, d.side), (Limit::NoneBelowAsked, Side::Neither));
        e.held = 10;
        assert_eq!(diagnose(&e).limit, Limit::Unknown);
        assert_eq!(
            diagnose(&evidence(&[("weird", 1)], &[])).limit,
            Limit::Unknown
        );
    }
}
