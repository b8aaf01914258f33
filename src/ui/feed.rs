//! The events a run hands its live page that more than one command sends:
//! a load's figures once it is over, a server's memory while a phase runs,
//! and the end. Each is one JSON object whose `kind` says what it is; the
//! whole list is in docs/live-page.md.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Live;
use crate::load::report::Report;

/// How often a [`ServerWatch`] reads the server's memory.
pub const SERVER_EVERY: Duration = Duration::from_millis(500);

/// A load's figures, once it is over: its connects, each broadcast's
/// first/median/p99/last delivery and the echo's rate and percentiles.
pub fn load_summary(report: &Report) -> Value {
    let ms = |us: f64| us / 1e3;
    let c = &report.connect;
    let broadcasts: Vec<Value> = report
        .broadcast
        .iter()
        .flat_map(|b| &b.per_message)
        .map(|m| {
            json!({
                "seq": m.seq,
                "deliveries": m.deliveries,
                "first_ms": ms(m.first_us),
                "p50_ms": ms(m.p50_us),
                "p99_ms": ms(m.p99_us),
                "last_ms": ms(m.last_us),
            })
        })
        .collect();
    let echo = report.echo.as_ref().map(|e| {
        json!({
            "conns": e.conns,
            "mode": e.mode,
            "msgs_per_s": e.msgs_per_s,
            "p50_ms": ms(e.latency.p50_us),
            "p99_ms": ms(e.latency.p99_us),
            "p999_ms": ms(e.latency.p999_us),
        })
    });
    json!({
        "scenario": report.scenario,
        "conns": report.conns,
        "opened": c.opened,
        "failed": c.failed,
        "connect_per_s": c.rate_per_s,
        "connect_p50_ms": ms(c.latency.p50_us),
        "connect_p99_ms": ms(c.latency.p99_us),
        "broadcasts": broadcasts,
        "echo": echo,
        "kernel_trouble": report.kernel_trouble,
    })
}

/// What the run will do: `tool` (`bench`, `ceiling`), its command line,
/// N, how many phases and which servers.
pub fn plan(tool: &str, command: &str, conns: u64, phases: usize, servers: &[String]) -> Value {
    json!({
        "kind": "plan",
        "tool": tool,
        "command": command,
        "conns": conns,
        "phases": phases,
        "servers": servers,
    })
}

/// Which phase of the plan runs now.
#[derive(serde::Serialize)]
pub struct Phase<'a> {
    /// From 1, of `total`.
    pub index: usize,
    pub total: usize,
    pub job: &'a str,
    /// `floor` or the server's name.
    pub who: &'a str,
    pub sample: usize,
}

/// A phase begins; `left_s`: the rest of the plan at the pace so far.
pub fn phase_started(phase: &Phase, left_s: Option<f64>) -> Value {
    let mut value = json!(phase);
    value["kind"] = "phase".into();
    value["left_s"] = json!(left_s);
    value
}

/// A phase is over: how long it took, the kernel counters that flag it
/// (and what they usually mean), what the load warned of, and the load's
/// figures.
pub fn phase_done(
    phase: &Phase,
    seconds: f64,
    kernel: &crate::netstat::Counters,
    warnings: &[String],
    report: &Report,
) -> Value {
    let mut value = json!(phase);
    value["kind"] = "phase_done".into();
    value["seconds"] = json!(seconds);
    value["trouble"] = json!(crate::netstat::trouble(kernel));
    value["causes"] = json!(crate::netstat::explain(kernel));
    value["warnings"] = json!(warnings);
    value["load"] = load_summary(report);
    value
}

/// The run is over: the text it printed (the final table), which the page
/// keeps showing until fanout exits.
pub fn done(text: &str) -> Value {
    json!({ "kind": "done", "report": text })
}

/// Publishes the server's memory every [`SERVER_EVERY`] from a thread of
/// its own until dropped: its process tree's resident set, the kernel's
/// slab (/proc/meminfo Slab) and the TCP stack's buffer memory. Only
/// /proc is read; the server is never asked anything (its allocator's
/// figures come from the bench's own checkpoints).
pub struct ServerWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerWatch {
    /// `phase`: the bench's phase index (0 outside a bench).
    pub fn start(live: Live, pid: u32, phase: usize) -> ServerWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ui-server-watch".into())
                .spawn(move || {
                    crate::allocator::disable_this_threads_cache();
                    while !stop.load(Relaxed) {
                        live.publish(&json!({
                            "kind": "server",
                            "phase": phase,
                            "rss": crate::process::tree_rss_bytes(pid),
                            "slab": crate::bench::machine::meminfo_kib("Slab") * 1024,
                            "tcp_mem": crate::bench::settle::sockets().tcp_mem_pages
                                * crate::bench::settle::PAGE,
                        }));
                        sleep_unless(&stop, SERVER_EVERY);
                    }
                })
                .ok()
        };
        ServerWatch { stop, thread }
    }
}

impl Drop for ServerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sleep `total` in short steps, returning early once `stop` is set.
fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(20);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}
