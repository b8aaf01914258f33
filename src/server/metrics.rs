//! `--metrics ADDR`: the server's counters in Prometheus's text exposition
//! format over HTTP, on a thread of its own. A scrape sums the shards' own
//! counters (relaxed atomics, each shard's on its own cache line), so no
//! counter costs the hot path a lock or a shared cache line; what a scrape
//! costs (summing, reading the fd tables in /proc) it pays on this thread.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::histogram::{Summed, BROADCAST_BOUNDS, HANDSHAKE_BOUNDS};
use super::hub::Hub;
use super::stats::Snapshot;

/// Longest request head read; a scraper sends a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Counters that are gauges (they go down as well as up).
const GAUGES: [&str; 4] = [
    "conn_slots",
    "room_backlog_bytes",
    "recv_buffer_bytes",
    "deflate_codec_bytes",
];

/// Listen on `addr` and answer scrapes until the process exits. Returns
/// the address bound (port 0 picks one).
pub fn start(addr: SocketAddr, hub: Arc<Hub>) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, &hub);
            }
        })
        .context("spawning the metrics thread")?;
    Ok(bound)
}

/// One request, one response, then close.
fn answer(mut stream: TcpStream, hub: &Hub) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let head = read_head(&mut stream);
    let response = match head.as_deref().map(request_line) {
        Some(Ok(("GET", "/metrics"))) => {
            let snapshot = hub.snapshot();
            let body = render(&snapshot, &fd_tables(), &histograms(hub));
            http(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                &body,
            )
        }
        Some(Ok(("GET", _))) => http("404 Not Found", "text/plain", "", "try /metrics\n"),
        Some(Ok(_)) => http(
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET\r\n",
            "only GET\n",
        ),
        Some(Err(())) | None => http("400 Bad Request", "text/plain", "", "bad request\n"),
    };
    let _ = stream.write_all(response.as_bytes());
}

/// The request head (up to the blank line), or None if it never came.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

/// `GET /metrics HTTP/1.1` → ("GET", "/metrics"); a query string is ignored.
fn request_line(head: &str) -> Result<(&str, &str), ()> {
    let line = head.lines().next().ok_or(())?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            Ok((method, target.split('?').next().unwrap_or(target)))
        }
        _ => Err(()),
    }
}

fn http(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One fd table: its thread's name (`shard-3`, or `process` for the
/// process's own table) and the fds in it.
pub struct FdTable {
    pub name: String,
    pub fds: u64,
}

/// Every shard's fd table (a shard with a private table has its own
/// /proc/self/task/TID/fd; shards sharing the process's table all show it),
/// or the process's table when no thread is a shard (`fanout serve
/// --backend tokio` runs its connections on tokio's workers).
fn fd_tables() -> Vec<FdTable> {
    let pid = std::process::id();
    let mut tables: Vec<FdTable> = crate::process::tasks(pid)
        .filter_map(|task| {
            let name = std::fs::read_to_string(format!("/proc/self/task/{task}/comm")).ok()?;
            let name = name.trim();
            name.starts_with("shard-").then(|| FdTable {
                name: name.to_string(),
                fds: crate::process::task_fds(pid, task),
            })
        })
        .collect();
    if tables.is_empty() {
        // The main thread's table is the process's.
        tables.push(FdTable {
            name: "process".into(),
            fds: crate::process::task_fds(pid, pid),
        });
    }
    tables.sort_by_key(|t| shard_number(&t.name));
    tables
}

fn shard_number(name: &str) -> usize {
    name.trim_start_matches("shard-").parse().unwrap_or(0)
}

/// A duration histogram as exposed: its name, HELP and buckets.
pub struct Exposed {
    pub name: &'static str,
    pub help: &'static str,
    pub summed: Summed,
}

/// The duration histograms, summed over shards.
fn histograms(hub: &Hub) -> [Exposed; 2] {
    [
        Exposed {
            name: "fanout_handshake_duration_seconds",
            help: "Successful handshakes, from accept to the upgrade admitted. On epoll and uring to within 5 ms (the shard knows a connection's accept time only from its 10 ms-tick handshake deadline), so the first bucket is 10 ms.",
            summed: Summed::of(HANDSHAKE_BOUNDS, hub.all_histograms().map(|h| &h.handshake)),
        },
        Exposed {
            name: "fanout_broadcast_duration_seconds",
            help: "Room broadcasts, from the frames handed to the room until every member has them written or queued: one observation per shard per delivery pass on epoll and uring (a pass carries every frame that arrived since the last), one per message on the task backends (whose room spans every shard).",
            summed: Summed::of(BROADCAST_BOUNDS, hub.all_histograms().map(|h| &h.broadcast)),
        },
    ]
}

/// The exposition: every counter, the open connections and fd tables per
/// shard, the process's memory and the duration histograms.
pub fn render(snapshot: &Snapshot, tables: &[FdTable], histograms: &[Exposed]) -> String {
    let mut out = String::new();
    for (name, doc, value) in snapshot.totals.fields() {
        let help = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        if GAUGES.contains(&name) {
            metric(&mut out, &format!("fanout_{name}"), "gauge", &help);
            let _ = writeln!(out, "fanout_{name} {value}");
        } else {
            metric(&mut out, &format!("fanout_{name}_total"), "counter", &help);
            let _ = writeln!(out, "fanout_{name}_total {value}");
        }
    }
    let totals = &snapshot.totals;
    metric(
        &mut out,
        "fanout_closes_total",
        "counter",
        "Connections the server closed, by the WebSocket close code it sent (1001 going away: drain or idle timeout; 1002, 1007, 1009 protocol errors; 1008 past --max-backlog; 1013 shed for --max-backlog-total). TCP: the same reasons, closed with a FIN.",
    );
    for (code, count) in totals.closes_by_code() {
        let _ = writeln!(out, "fanout_closes_total{{code=\"{code}\"}} {count}");
    }
    for (name, help, value) in [
        (
            "fanout_messages_received_total",
            "Data messages received from clients (echoed + published).",
            totals.echoed + totals.published,
        ),
        (
            "fanout_messages_sent_total",
            "Data messages sent to clients (echoed + room deliveries).",
            totals.echoed + totals.delivered,
        ),
    ] {
        metric(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    metric(
        &mut out,
        "fanout_open_connections",
        "gauge",
        "Connections open now (accepted - closed), per shard.",
    );
    for (shard, open) in snapshot.open_per_shard.iter().enumerate() {
        let _ = writeln!(out, "fanout_open_connections{{shard=\"{shard}\"}} {open}");
    }
    metric(
        &mut out,
        "fanout_fd_table_fds",
        "gauge",
        "Fds in each shard's fd table (shards sharing the process's table all show it; `process` when no thread is a shard).",
    );
    for table in tables {
        let _ = writeln!(
            out,
            "fanout_fd_table_fds{{table=\"{}\"}} {}",
            table.name, table.fds
        );
    }
    let nofile = crate::sys::nofile_limit().unwrap_or(0);
    metric(
        &mut out,
        "fanout_fd_table_limit",
        "gauge",
        "Fds one table may hold (the soft RLIMIT_NOFILE).",
    );
    let _ = writeln!(out, "fanout_fd_table_limit {nofile}");
    for (name, help, value) in [
        (
            "fanout_resident_memory_bytes",
            "Resident set size of the process (VmRSS).",
            snapshot.rss_bytes,
        ),
        (
            "fanout_heap_allocated_bytes",
            "Bytes the allocator has handed out and not taken back (jemalloc).",
            snapshot.heap_allocated_bytes,
        ),
        (
            "fanout_heap_resident_bytes",
            "Bytes of physical memory the allocator holds (jemalloc).",
            snapshot.heap_resident_bytes,
        ),
    ] {
        metric(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    for histogram in histograms {
        render_histogram(&mut out, histogram);
    }
    out
}

/// `name_bucket{le="…"}` (cumulative), `+Inf`, `name_sum`, `name_count`.
fn render_histogram(out: &mut String, histogram: &Exposed) {
    let Exposed { name, help, summed } = histogram;
    metric(out, name, "histogram", help);
    for (bound, count) in summed.bounds.iter().zip(&summed.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let count = summed.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", summed.sum_seconds);
    let _ = writeln!(out, "{name}_count {count}");
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// HELP text escapes backslashes and newlines.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_bad_ones_do_not() {
        assert_eq!(
            request_line("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            request_line("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(request_line("POST / HTTP/1.1\r\n\r\n"), Ok(("POST", "/")));
        assert!(request_line("GET /metrics\r\n\r\n").is_err());
        assert!(request_line("hello\r\n\r\n").is_err());
    }

    #[test]
    fn every_counter_has_help_and_type_and_gauges_are_not_totals() {
        let snapshot = Snapshot::take(std::iter::empty());
        let hub = Hub::new(Vec::new());
        let text = render(
            &snapshot,
            &[FdTable {
                name: "shard-0".into(),
                fds: 7,
            }],
            &histograms(&hub),
        );
        for (name, _, _) in snapshot.totals.fields() {
            let exposed = match GAUGES.contains(&name) {
                true => format!("fanout_{name}"),
                false => format!("fanout_{name}_total"),
            };
            assert!(text.contains(&format!("# HELP {exposed} ")), "{name}");
            assert!(text.contains(&format!("\n{exposed} 0\n")), "{name}");
        }
        assert!(text.contains("# TYPE fanout_conn_slots gauge"));
        assert!(text.contains("# TYPE fanout_recv_buffer_bytes gauge"));
        assert!(text.contains("# TYPE fanout_accepted_total counter"));
        assert!(text.contains("fanout_fd_table_fds{table=\"shard-0\"} 7"));
        assert!(text.contains("# TYPE fanout_broadcast_duration_seconds histogram\n"));
        assert!(text.contains("fanout_broadcast_duration_seconds_bucket{le=\"0.00005\"} 0\n"));
        assert!(text.contains("fanout_handshake_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("fanout_handshake_duration_seconds_count 0\n"));
        assert!(!text.contains("///"));
    }
}
