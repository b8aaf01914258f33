//! A settled system between phases. A phase's sockets take a moment to go
//! after their connections are reset, and a phase that starts while the
//! last one's sockets are still being freed measures both. So the bench
//! records what was on the machine before it started (a busy machine is a
//! fact worth printing) and, before every phase, waits until the socket
//! counts are back at that baseline and the TCP slab has stopped moving.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::kernel;

/// How often the counts are read while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Sockets above the baseline still counted as settled (other programs on
/// the machine open and close a few).
const SLACK: u64 = 16;

/// TCP socket counts from /proc/net/sockstat, and the TCP slab's objects.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Sockets {
    /// TCP sockets in use (sockstat `inuse`).
    pub tcp_inuse: u64,
    /// Orphaned TCP sockets (closed by their process, not yet gone).
    pub tcp_orphan: u64,
    /// TCP sockets in TIME_WAIT.
    pub tcp_time_wait: u64,
    /// Objects in the TCP slab cache (approximate: see `kernel`), when
    /// /proc/slabinfo is readable.
    pub tcp_slab_objects: Option<u64>,
    /// Pages the kernel has charged to TCP buffers (sockstat `mem`).
    #[serde(default)]
    pub tcp_mem_pages: u64,
}

/// How a wait for a settled system ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Settled {
    /// The socket counts when the wait ended.
    pub sockets: Sockets,
    /// How long the wait took, seconds.
    pub seconds: f64,
    /// False when the bound passed first.
    pub settled: bool,
}

/// sockstat counts TCP memory in pages.
pub const PAGE: u64 = 4096;

pub fn sockets() -> Sockets {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let mut counts = parse_sockstat(&text);
    counts.tcp_slab_objects = kernel::tcp_objects();
    counts
}

fn parse_sockstat(text: &str) -> Sockets {
    let mut counts = Sockets::default();
    let Some(tcp) = text.lines().find_map(|l| l.strip_prefix("TCP:")) else {
        return counts;
    };
    let fields: Vec<&str> = tcp.split_whitespace().collect();
    for pair in fields.chunks(2) {
        let [name, value] = pair else { continue };
        let value = value.parse().unwrap_or(0);
        match *name {
            "inuse" => counts.tcp_inuse = value,
            "orphan" => counts.tcp_orphan = value,
            "tw" => counts.tcp_time_wait = value,
            "mem" => counts.tcp_mem_pages = value,
            _ => {}
        }
    }
    counts
}

/// Is `now` back at `baseline` (within a few sockets)?
fn back_to(now: &Sockets, baseline: &Sockets) -> bool {
    now.tcp_inuse <= baseline.tcp_inuse + SLACK
        && now.tcp_orphan <= baseline.tcp_orphan + SLACK
        && now.tcp_time_wait <= baseline.tcp_time_wait + SLACK
}

/// The baseline: wait (at most `bound`) until the counts have not changed
/// for `quiet`, e.g. TIME_WAIT sockets of an earlier run expiring.
pub fn wait_quiet(quiet: Duration, bound: Duration) -> Settled {
    wait(bound, quiet, |_| true)
}

/// Before a phase: wait (at most `bound`) until the counts are back at
/// `baseline` and the TCP slab has not moved for a few polls.
pub fn wait_back_to(baseline: &Sockets, bound: Duration) -> Settled {
    wait(bound, POLL * 4, |now| back_to(now, baseline))
}

fn wait(bound: Duration, quiet: Duration, ok: impl Fn(&Sockets) -> bool) -> Settled {
    let start = Instant::now();
    let mut last = sockets();
    let mut unchanged_since = start;
    loop {
        if ok(&last) && unchanged_since.elapsed() >= quiet {
            return Settled {
                sockets: last,
                seconds: start.elapsed().as_secs_f64(),
                settled: true,
            };
        }
        if start.elapsed() > bound {
            return Settled {
                sockets: last,
                seconds: start.elapsed().as_secs_f64(),
                settled: false,
            };
        }
        std::thread::sleep(POLL);
        let now = sockets();
        if now != last {
            unchanged_since = Instant::now();
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tcp_line() {
        let text =
            "sockets: used 8\nTCP: inuse 12 orphan 1 tw 300 alloc 14 mem 204\nUDP: inuse 0 mem 0\n";
        let counts = parse_sockstat(text);
        assert_eq!(
            (counts.tcp_inuse, counts.tcp_orphan, counts.tcp_time_wait),
            (12, 1, 300)
        );
    }

    #[test]
    fn settled_means_back_at_the_baseline_within_a_few_sockets() {
        let baseline = Sockets {
            tcp_inuse: 10,
            tcp_time_wait: 100,
            ..Sockets::default()
        };
        let mut now = baseline;
        assert!(back_to(&now, &baseline));
        now.tcp_inuse = 10 + SLACK + 1;
        assert!(!back_to(&now, &baseline));
        now.tcp_inuse = 3;
        now.tcp_time_wait = 20; // an earlier run's TIME_WAIT expired meanwhile
        assert!(back_to(&now, &baseline));
        now.tcp_time_wait = 5_000;
        assert!(!back_to(&now, &baseline));
    }

    #[test]
    fn this_machine_has_sockstat() {
        let settled = wait_quiet(Duration::ZERO, Duration::from_secs(1));
        assert!(settled.settled);
    }
}
