//! `fanout doctor`: every limit between this machine and N connections,
//! with its current value, the value needed, a verdict and the exact fix.
//! This module reads the machine ([`Snapshot::read`]) and prints; the
//! judging is in [`checks`], pure and tested with injected values.

pub mod checks;

use std::collections::BTreeMap;
use std::net::IpAddr;

use checks::{Check, Conntrack, Goal, Snapshot, Verdict};

#[derive(Clone, Debug, clap::Args)]
pub struct DoctorConfig {
    /// Connections to check for.
    #[arg(long, default_value_t = 100_000)]
    pub conns: u64,

    /// The server the connections would go to. Default: a fanout bench on
    /// this machine (client and server here, as many loopback source
    /// addresses as fanout load uses). A URL to another host means a client
    /// here and a server there (one socket per connection on this kernel).
    #[arg(long)]
    pub url: Option<String>,

    /// Source addresses the client connects from. Default: what fanout load
    /// would use for a loopback server, 1 for any other.
    #[arg(long)]
    pub sources: Option<u64>,

    /// Share of the available memory the run may plan to use (at most
    /// 0.95: the rest is kept for queued messages and the page cache, so a
    /// run that fits does not meet the OOM killer).
    #[arg(long, default_value_t = checks::MEMORY_SHARE, value_parser = checks::parse_memory_share)]
    pub memory_share: f64,
}

/// Run the checks, print them; `Ok(false)` when N is out of reach.
pub fn doctor(config: &DoctorConfig) -> anyhow::Result<bool> {
    let goal = goal(config)?;
    let destination = match &config.url {
        Some(url) => ipv4_destination(url),
        None => None,
    };
    let snapshot = Snapshot::read().with_ports_held(destination);
    let checks = checks::all(&snapshot, &goal);
    print!("{}", render(&checks, &goal));
    Ok(checks.iter().all(|c| c.verdict != Verdict::Fail))
}

fn goal(config: &DoctorConfig) -> anyhow::Result<Goal> {
    let local = match &config.url {
        None => true,
        Some(url) => host_is_loopback(url)?,
    };
    let source_addresses = config.sources.unwrap_or_else(|| {
        if local {
            let ports = crate::load::sources::ports_per_source();
            crate::load::sources::plan(config.conns as usize, ports, None)
                .map_or(1, |list| list.len() as u64)
        } else {
            1
        }
    });
    Ok(Goal {
        conns: config.conns,
        local_client: local,
        source_addresses,
        user_bytes_per_conn: checks::fanout_user_bytes_per_conn(local),
        memory_share: config.memory_share,
    })
}

/// The URL's host and port as an IPv4 address, if it is one.
fn ipv4_destination(url: &str) -> Option<std::net::SocketAddrV4> {
    authority(url).parse().ok()
}

/// `HOST:PORT` of `ws://HOST:PORT/PATH` (or of a URL without a scheme).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Whether the URL's host is this machine's loopback.
fn host_is_loopback(url: &str) -> anyhow::Result<bool> {
    let authority = authority(url);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" {
        return Ok(true);
    }
    let ip: IpAddr = host.parse().map_err(|_| {
        crate::usage::UsageError(format!(
            "--url {url}: give the host as an IP address (or localhost)"
        ))
    })?;
    Ok(ip.is_loopback())
}

fn render(checks: &[Check], goal: &Goal) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fanout doctor: {} connections, {}, from {} source address(es)\n",
        goal.conns,
        if goal.local_client {
            "client and server on this machine (two sockets each)"
        } else {
            "client here, server elsewhere"
        },
        goal.source_addresses
    );
    for check in checks {
        let _ = writeln!(out, "{:<5} {}", check.verdict.to_string(), check.limit);
        let _ = writeln!(out, "      now {}; needed {}", check.current, check.needed);
        if !check.fix.is_empty() {
            let _ = writeln!(out, "      fix: {}", check.fix);
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let _ = writeln!(
        out,
        "\n{}",
        if failed == 0 {
            format!("{} connections are within reach here.", goal.conns)
        } else {
            format!(
                "{} connections are out of reach: {failed} limit(s) above say FAIL.",
                goal.conns
            )
        }
    );
    out
}

impl Snapshot {
    /// This machine's values (a value that cannot be read counts as 0, so
    /// that its check fails loudly rather than passing). The ports held per
    /// source address are left empty: reading them walks every TCP socket
    /// (/proc/net/tcp), which only `fanout doctor` asks for
    /// ([`Snapshot::with_ports_held`]).
    pub fn read() -> Snapshot {
        let text = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let (nofile_soft, nofile_hard) = nofile();
        let tcp_mem = numbers("/proc/sys/net/ipv4/tcp_mem");
        let ports = numbers("/proc/sys/net/ipv4/ip_local_port_range");
        let port_range = (
            ports.first().copied().unwrap_or(0),
            ports.get(1).copied().unwrap_or(0),
        );
        let conntrack = number("/proc/sys/net/netfilter/nf_conntrack_max").map(|max| Conntrack {
            max,
            count: number("/proc/sys/net/netfilter/nf_conntrack_count").unwrap_or(0),
        });
        let io_uring_missing = crate::backend::probe(crate::backend::BackendKind::Uring)
            .err()
            .map(|missing| missing.missing);
        Snapshot {
            nofile_soft,
            nofile_hard,
            file_max: number("/proc/sys/fs/file-max").unwrap_or(0),
            port_range,
            somaxconn: number("/proc/sys/net/core/somaxconn").unwrap_or(0),
            syn_backlog: number("/proc/sys/net/ipv4/tcp_max_syn_backlog").unwrap_or(0),
            conntrack,
            tcp_mem_pages: (
                tcp_mem.first().copied().unwrap_or(0),
                tcp_mem.get(1).copied().unwrap_or(0),
                tcp_mem.get(2).copied().unwrap_or(0),
            ),
            // SAFETY: sysconf has no preconditions.
            page_size: unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64,
            mem_available: crate::bench::machine::meminfo_kib("MemAvailable") * 1024,
            io_uring_missing,
            threads_max: number("/proc/sys/kernel/threads-max").unwrap_or(0),
            max_map_count: number("/proc/sys/vm/max_map_count").unwrap_or(0),
            reserved_ports: crate::load::sources::reserved_in(
                (port_range.0 as u32, port_range.1 as u32),
                &text("/proc/sys/net/ipv4/ip_local_reserved_ports"),
            ) as u64,
            listening_ports: 0,
            ports_held: BTreeMap::new(),
            ports_held_toward: None,
        }
    }

    /// The same with the ports already held per source address (toward
    /// `destination` when given, else toward anywhere) and by listeners.
    pub fn with_ports_held(mut self, destination: Option<std::net::SocketAddrV4>) -> Snapshot {
        let space = crate::load::sources::PortSpace::read(destination);
        self.listening_ports = space.listening as u64;
        self.ports_held = space.held;
        self.ports_held_toward = destination;
        self
    }
}

fn nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (0, 0);
    }
    (limit.rlim_cur, limit.rlim_max)
}

fn numbers(path: &str) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn number(path: &str) -> Option<u64> {
    numbers(path).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_loopback_host_or_not() {
        assert!(host_is_loopback("ws://127.0.0.1:9001/room").unwrap());
        assert!(host_is_loopback("ws://localhost:9001").unwrap());
        assert!(host_is_loopback("ws://[::1]:9001/echo").unwrap());
        assert!(!host_is_loopback("ws://10.0.0.5:80/room").unwrap());
        assert!(host_is_loopback("ws://example.com/room").is_err());
    }
}
