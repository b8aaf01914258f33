//! The bench result as a fixed text block: the comparisons with their
//! floors first, then memory, broadcast detail, echo, churn, the kernel
//! evidence of flagged phases, suspects and warnings. Every figure is a
//! median with its range over the samples.

use std::fmt::Write as _;

use super::churn::Churn;
use super::compare::{Better, Compared};
use super::echo::EchoBench;
use super::{BenchResult, ServerResult};
use crate::load::spread::Spread;
use crate::units::grouped as num;

/// `median (min – max)`.
fn spread(s: &Spread, decimals: usize) -> String {
    s.text(decimals)
}

/// Decimals that suit a value's size.
fn decimals_for(value: f64) -> usize {
    match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    }
}

fn compared_line(out: &mut String, label: &str, c: &Compared) {
    let d = decimals_for(c.measured.median);
    let _ = writeln!(
        out,
        "{label:<34} {:<30} {:<30} {}",
        spread(&c.measured, d),
        spread(&c.floor, d),
        c.ratio_text()
    );
}

pub fn text(r: &BenchResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fanout bench — {} connections, {} ({} cores, {}), started {}, {:.0} s",
        num(r.conns as f64, 0),
        r.machine.cpu_model,
        r.machine.cores,
        r.machine.kernel,
        r.time_utc,
        r.seconds
    );
    for floor in &r.floor_servers {
        let _ = writeln!(out, "floor:  {floor}");
    }
    let b = &r.baseline.sockets;
    let _ = writeln!(
        out,
        "method: {} samples per figure and server, the floor and every server interleaved (servers in an order rotated every sample), each on a fresh server once the machine's sockets were back to the {} in use and {} in TIME_WAIT found before the run",
        r.samples, b.tcp_inuse, b.tcp_time_wait
    );
    for server in &r.servers {
        let _ = writeln!(out, "\n== {}: {}", server.name, server.server);
        reach(&mut out, server);
        comparisons(&mut out, server);
        memory(&mut out, server);
        details(&mut out, server);
    }
    if r.servers.len() > 1 {
        backends_table(&mut out, &r.servers);
    }
    ratio_table(&mut out, &r.servers, "+tls", TLS_HEADING);
    for mode in ["shared", "per-connection"] {
        let suffix = format!("+deflate-{mode}");
        let heading = format!("deflate {mode} ÷ off: each figure's median with `--deflate {mode}` ÷ its median with deflate off, same backend, same run, the same JSON-like messages offered deflate both times");
        ratio_table(&mut out, &r.servers, &suffix, &heading);
    }
    if r.servers.iter().any(|s| s.name.contains("+deflate-"))
        && r.servers.iter().any(|s| s.name.starts_with("tokio"))
    {
        out.push_str("(tokio and tokio-tpc ran every server of this run, off included, with fanout's session for WebSocket (--ws-stack fanout): tungstenite has no permessage-deflate)\n");
    }
    evidence(&mut out, r);
    out
}

/// One row of the table of servers: a figure's samples for each, with
/// which way is better.
struct Row {
    label: String,
    better: Better,
    values: Vec<Option<Spread>>,
    /// Measured at the N a server held: a server that stopped short is
    /// shown but not ranked (its figure is for fewer connections).
    at_n: bool,
}

/// The servers side by side: each figure's median with its range over the
/// samples, and the ratio of its median to the best of them (1.00× is the
/// best).
fn backends_table(out: &mut String, servers: &[ServerResult]) {
    let rows = table_rows(servers);
    if rows.is_empty() {
        return; // e.g. a soak alone: its lines say it all
    }
    let short: Vec<bool> = servers
        .iter()
        .map(|s| s.reach.as_ref().is_some_and(|r| !r.complete()))
        .collect();
    let cells: Vec<Vec<String>> = rows.iter().map(|row| row_cells(row, &short)).collect();
    let widths: Vec<usize> = (0..servers.len())
        .map(|i| {
            let widest = cells.iter().map(|c| c[i].chars().count()).max();
            widest.unwrap_or(0).max(servers[i].name.len())
        })
        .collect();
    let _ = writeln!(
        out,
        "\nservers side by side: each figure's median (min – max), and its median ÷ the best (1.00×){}",
        if short.contains(&true) {
            "; \"short\": a figure of a server that stopped short, for the connections it held, not ranked"
        } else {
            ""
        }
    );
    let _ = write!(out, "{:<38}", "figure");
    for (server, width) in servers.iter().zip(&widths) {
        let _ = write!(out, "  {:>width$}", server.name);
    }
    let _ = writeln!(out);
    for (row, cells) in rows.iter().zip(&cells) {
        let _ = write!(out, "{:<38}", row.label);
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {cell:>width$}");
        }
        let _ = writeln!(out);
    }
}

const TLS_HEADING: &str =
    "TLS ÷ plain: each figure's median over wss:// ÷ its median over ws://, same backend, same run";

/// `fanout bench --tls` (suffix `+tls`) or `--deflate` (`+deflate-MODE`):
/// for each backend measured both ways, every figure's median as the
/// variant divided by its median as the backend is.
fn ratio_table(out: &mut String, servers: &[ServerResult], suffix: &str, heading: &str) {
    let pairs: Vec<[ServerResult; 2]> = servers
        .iter()
        .filter_map(|variant| {
            let plain_name = variant.name.strip_suffix(suffix)?;
            let plain = servers.iter().find(|s| s.name == plain_name)?;
            Some([plain.clone(), variant.clone()])
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let tables: Vec<Vec<Row>> = pairs.iter().map(|pair| table_rows(pair)).collect();
    let _ = writeln!(out, "\n{heading}");
    let _ = write!(out, "{:<38}", "figure");
    for pair in &pairs {
        let _ = write!(out, "  {:>10}", pair[0].name);
    }
    let _ = writeln!(out);
    for row in &tables[0] {
        let _ = write!(out, "{:<38}", row.label);
        for table in &tables {
            let ratio = table
                .iter()
                .find(|r| r.label == row.label)
                .and_then(|r| Some((r.values[0].as_ref()?.median, r.values[1].as_ref()?.median)))
                .filter(|(plain, secure)| *plain > 0.0 && *secure >= 0.0)
                .map_or("—".to_string(), |(plain, secure)| {
                    format!("{:.2}×", secure / plain)
                });
            let _ = write!(out, "  {ratio:>10}");
        }
        let _ = writeln!(out);
    }
    if suffix == "+tls"
        && tables[0]
            .iter()
            .any(|r| r.label.starts_with("churn setup p99"))
    {
        let _ = writeln!(
            out,
            "(churn setup p99 is read at each server's own highest sustained rate: over TLS a lower rate, so its ratio compares different loads and a value under 1 is not TLS being faster)"
        );
    }
}

fn row_cells(row: &Row, short: &[bool]) -> Vec<String> {
    let unranked = |i: usize| row.at_n && short[i];
    let medians: Vec<f64> = row
        .values
        .iter()
        .enumerate()
        .filter(|(i, _)| !unranked(*i))
        .filter_map(|(_, v)| v.as_ref().map(|s| s.median))
        .collect();
    // A ratio needs positive values (a slope at small N can be noise below 0).
    let comparable = medians.iter().all(|v| *v > 0.0);
    let best = match row.better {
        Better::Higher => medians.iter().copied().fold(f64::MIN, f64::max),
        Better::Lower => medians.iter().copied().fold(f64::MAX, f64::min),
    };
    row.values
        .iter()
        .enumerate()
        .map(|(i, value)| match value {
            Some(s) if unranked(i) => format!("{} short", spread(s, decimals_for(s.median))),
            Some(s) => {
                let d = decimals_for(s.median);
                let ratio = match row.better {
                    Better::Higher => best / s.median,
                    Better::Lower => s.median / best,
                };
                let ratio = if comparable {
                    format!(" {ratio:.2}×")
                } else {
                    String::new()
                };
                format!("{}{ratio}", spread(s, d))
            }
            None => "—".into(),
        })
        .collect()
}

fn table_rows(servers: &[ServerResult]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add =
        |label: &str, better: Better, at_n: bool, f: &dyn Fn(&ServerResult) -> Option<Spread>| {
            let values: Vec<Option<Spread>> = servers.iter().map(f).collect();
            if values.iter().any(Option::is_some) {
                rows.push(Row {
                    label: label.to_string(),
                    better,
                    values,
                    at_n,
                });
            }
        };
    // Figures of the room job depend on how many connections were held.
    let mut room_row =
        |label: &str, better: Better, f: &dyn Fn(&ServerResult) -> Option<Spread>| {
            add(label, better, true, f)
        };
    use Better::{Higher, Lower};
    room_row("connections held (of N)", Higher, &|s| {
        Some(s.reach.as_ref()?.held)
    });
    room_row("idle user B/conn (allocator)", Lower, &|s| {
        s.memory.as_ref()?.heap_per_conn
    });
    room_row("  after a broadcast (allocator)", Lower, &|s| {
        s.memory.as_ref()?.heap_after_broadcast_per_conn
    });
    room_row("idle user B/conn (RSS)", Lower, &|s| {
        Some(s.memory.as_ref()?.rss_per_conn)
    });
    room_row("whole server RSS ÷ N, B", Lower, &|s| {
        s.memory.as_ref()?.rss_over_n
    });
    room_row("client user B/conn (allocator)", Lower, &|s| {
        Some(s.memory.as_ref()?.client.as_ref()?.heap_per_conn)
    });
    room_row("kernel B/socket", Lower, &|s| {
        Some(s.memory.as_ref()?.kernel_per_socket)
    });
    room_row("ramp, connections/s", Higher, &|s| {
        Some(s.ramp.as_ref()?.measured)
    });
    room_row("broadcast first delivery, ms", Lower, &|s| {
        Some(s.broadcast.as_ref()?.first_delivery_ms)
    });
    room_row("broadcast median delivery, ms", Lower, &|s| {
        Some(s.broadcast.as_ref()?.median_delivery_ms)
    });
    room_row("broadcast p99 delivery, ms", Lower, &|s| {
        Some(s.broadcast.as_ref()?.p99_delivery_ms)
    });
    room_row("broadcast last delivery, ms", Lower, &|s| {
        Some(s.broadcast.as_ref()?.last_delivery_ms.measured)
    });
    room_row("server CPU-s per million deliveries", Lower, &|s| {
        s.broadcast.as_ref()?.cpu_seconds_per_million
    });
    room_row("client CPU-s per million deliveries", Lower, &|s| {
        s.broadcast.as_ref()?.client_cpu_seconds_per_million
    });
    room_row("bytes on the wire per delivery", Lower, &|s| {
        s.broadcast.as_ref()?.wire_bytes_per_delivery
    });
    let modes: Vec<(usize, String)> = servers
        .first()
        .map(|s| s.echo.iter().map(|e| (e.conns, e.mode.clone())).collect())
        .unwrap_or_default();
    for (conns, mode) in modes {
        let kind = if mode.starts_with("open") {
            "open"
        } else {
            "closed"
        };
        let find = move |s: &ServerResult| -> Option<EchoBench> {
            s.echo
                .iter()
                .find(|e| e.conns == conns && e.mode == mode)
                .cloned()
        };
        let label = format!("echo {conns} {kind} loop");
        let find_rate = find.clone();
        add(&format!("{label}, msgs/s"), Higher, false, &move |s| {
            find_rate(s).map(|e| e.msgs_per_s)
        });
        add(&format!("{label}, p99 µs"), Lower, false, &move |s| {
            find(s).map(|e| e.p99_us)
        });
    }
    add("churn sustained, connections/s", Higher, false, &|s| {
        Some(Spread::of(&[s.churn.as_ref()?.sustained_per_s()?]))
    });
    add("churn sustained, full TLS, conns/s", Higher, false, &|s| {
        Some(Spread::of(&[s
            .churn_full_tls
            .as_ref()?
            .sustained_per_s()?]))
    });
    add("churn, cycles/s", Higher, false, &|s| {
        Some(s.churn.as_ref()?.spread(|c| c.rate_per_s))
    });
    add("churn setup p99, µs", Lower, false, &|s| {
        Some(s.churn.as_ref()?.spread(|c| c.setup.p99_us))
    });
    // A plain server's one kind beside a TLS server's first full one: the
    // TLS ÷ plain table then says what a full handshake costs.
    add("open+close cycles per server CPU-s", Higher, false, &|s| {
        let first = s.handshakes.as_ref()?.kinds.first()?;
        (!first.kind.ends_with(" resumed"))
            .then_some(first.cycles_per_server_cpu_s)
            .flatten()
    });
    add("  resumed, per server CPU-s", Higher, false, &|s| {
        let handshakes = s.handshakes.as_ref()?;
        let resumed = handshakes
            .kinds
            .iter()
            .find(|k| k.kind.ends_with(" resumed"))?;
        resumed.cycles_per_server_cpu_s
    });
    for (at_once, policy) in [(true, "at once"), (false, "backoff")] {
        for (resumption, how) in [(true, ""), (false, ", full TLS")] {
            let label = format!("storm {policy}{how}: all back, s");
            add(&label, Lower, false, &move |s| {
                let policies = &s.storm.as_ref()?.policies;
                policies
                    .iter()
                    .filter(|p| (p.reconnect == "at once") == at_once)
                    .find(|p| p.resumption.unwrap_or(true) == resumption)?
                    .all_back_s
            });
        }
    }
    add("overload peak user B/member", Lower, false, &|s| {
        Some(s.overload.as_ref()?.peak_bytes_per_member)
    });
    add("overload peak kernel TCP, MB", Lower, false, &|s| {
        Some(s.overload.as_ref()?.peak_kernel_tcp_mb)
    });
    add("overload deliveries/s", Higher, false, &|s| {
        Some(s.overload.as_ref()?.deliveries_per_s)
    });
    for (i, setup) in ["alone", "via redis"].into_iter().enumerate() {
        add(
            &format!("backplane {setup}: all had it, ms"),
            Lower,
            false,
            &move |s| Some(s.backplane.as_ref()?.setups.get(i)?.last_delivery_ms),
        );
    }
    rows
}

fn comparisons(out: &mut String, r: &ServerResult) {
    let floored =
        r.ramp.is_some() || r.broadcast.is_some() || r.echo.iter().any(|e| e.vs_floor.is_some());
    if !floored {
        return;
    }
    if r.name == "uring" {
        let _ = writeln!(
            out,
            "note: the floors run on epoll; io_uring's batched I/O can do less than epoll's least, so a uring ratio below 1 may be real (see docs/method.md)"
        );
    }
    let _ = writeln!(
        out,
        "{:<34} {:<30} {:<30} server ÷ floor",
        "figure", "server: median (min – max)", "floor: median (min – max)"
    );
    if let Some(ramp) = &r.ramp {
        compared_line(out, "ramp, connections/s", ramp);
    }
    if let Some(b) = &r.broadcast {
        compared_line(out, "broadcast last delivery, ms", &b.last_delivery_ms);
    }
    for e in &r.echo {
        if let Some(c) = &e.vs_floor {
            compared_line(
                out,
                &format!("echo {} conns closed loop, msgs/s", e.conns),
                c,
            );
        }
    }
}

/// How far the server got: every connection, or where and why it stopped.
fn reach(out: &mut String, r: &ServerResult) {
    let Some(reach) = &r.reach else { return };
    if reach.complete() {
        return;
    }
    let causes: Vec<String> = reach
        .connect_failures
        .iter()
        .map(|(cause, count)| format!("{cause} {}", num(*count as f64, 0)))
        .collect();
    let _ = writeln!(
        out,
        "STOPPED SHORT: held {} of the {} connections asked when the broadcasts began; failed to open, over the samples: {}; the server said: {}; every figure of this server is for the connections it held{}",
        spread(&reach.held, 0),
        num(reach.asked as f64, 0),
        if causes.is_empty() { "none (closed by the server)".to_string() } else { causes.join(", ") },
        r.server,
        if r.memory.is_none() {
            "; no memory slope: it opened (almost) nothing between N/2 and N"
        } else {
            ""
        }
    );
}

fn memory(out: &mut String, r: &ServerResult) {
    let Some(m) = &r.memory else { return };
    let _ = writeln!(out);
    let heap = m
        .heap_per_conn
        .as_ref()
        .map(|h| format!(", allocator {} B", spread(h, 1)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "memory    server user space per connection, slope from N/2 to N: RSS {} B{heap}{}",
        spread(&m.rss_per_conn, 1),
        m.rss_over_n
            .as_ref()
            .map(|r| format!("; whole RSS at N ÷ N {} B", spread(r, 1)))
            .unwrap_or_default()
    );
    if let (Some(bytes), Some(slots)) = (m.slot_bytes, &m.slots) {
        let _ = writeln!(
            out,
            "          slab slots of {bytes} B (in chunks of {}, allocated as the connections need them): {} → {} between the points in sample 1; their growth is {} B of the slope per connection; at N they hold {}× the connections, {} B of state per connection",
            num(crate::chunked_slab::CHUNK_SLOTS as f64, 0),
            num(slots.first_half as f64, 0),
            num(slots.first_full as f64, 0),
            spread(&slots.growth_per_conn, 1),
            spread(&slots.per_conn_at_n, 2),
            spread(&slots.bytes_per_conn_at_n, 1)
        );
    }
    if let Some(client) = &m.client {
        let _ = writeln!(
            out,
            "client    load generator user space per connection, slope from N/2 to N: RSS {} B, allocator {} B (slots of {} B)",
            spread(&client.rss_per_conn, 1),
            spread(&client.heap_per_conn, 1),
            client.slot_bytes
        );
    }
    let caches: Vec<String> = m
        .kernel_caches_per_socket
        .iter()
        .filter(|(_, bytes)| bytes.abs() >= 1.0)
        .map(|(name, bytes)| format!("{name} {}", num(*bytes, 0)))
        .collect();
    let _ = writeln!(
        out,
        "kernel    {} B per socket (slab, slope, both ends): {}, unattributed {}",
        spread(&m.kernel_per_socket, 0),
        caches.join(", "),
        num(m.kernel_unattributed_per_socket, 0)
    );
    let _ = writeln!(out, "          {}", m.kernel_check);
}

fn details(out: &mut String, r: &ServerResult) {
    if let (Some(p50), Some(p99)) = (&r.connect_p50_ms, &r.connect_p99_ms) {
        let _ = writeln!(
            out,
            "connect   TCP + upgrade latency: p50 {} ms, p99 {} ms",
            spread(p50, 2),
            spread(p99, 2)
        );
    }
    if let Some(b) = &r.broadcast {
        let t = &b.tally;
        let _ = writeln!(
            out,
            "broadcast {} × {} B to {} members: first {} ms, median {} ms, p99 {} ms; {} deliveries/s",
            b.last_delivery_ms.measured.n,
            b.size,
            num(b.members as f64, 0),
            spread(&b.first_delivery_ms, 2),
            spread(&b.median_delivery_ms, 1),
            spread(&b.p99_delivery_ms, 1),
            spread(&b.deliveries_per_s, 0)
        );
        let _ = writeln!(
            out,
            "          delivered {}, missing {}, duplicated {}, in flight {}, closed by server {} members ({} undelivered)",
            num(t.delivered as f64, 0),
            t.missing,
            t.duplicated,
            t.in_flight,
            b.members_closed,
            t.closed
        );
        if let Some(check) = &b.cross_check {
            let _ = writeln!(out, "          {check}");
        }
        if let Some(cpu) = &b.cpu_seconds_per_million {
            let _ = writeln!(
                out,
                "          server CPU {} s per million deliveries (process tree, user + system, first broadcast to last delivery)",
                spread(cpu, 2)
            );
        }
        if let Some(cpu) = &b.client_cpu_seconds_per_million {
            let _ = writeln!(
                out,
                "          client CPU {} s per million deliveries received (the load generator's shard threads, over the broadcasts)",
                spread(cpu, 2)
            );
        }
    }
    for e in &r.echo {
        let rate = e
            .open_loop_rate
            .map(|rate| format!(" at {} msgs/s asked", num(rate, 0)))
            .unwrap_or_default();
        let lag = e
            .send_lag_p99_us
            .as_ref()
            .map(|lag| format!("; send lag p99 {} µs", spread(lag, 0)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "echo      {} conns, {}{rate}: {} msgs/s; latency p50 {} µs, p99 {} µs, p99.9 {} µs{lag}",
            num(e.conns as f64, 0),
            e.mode,
            spread(&e.msgs_per_s, 0),
            spread(&e.p50_us, 0),
            spread(&e.p99_us, 0),
            spread(&e.p999_us, 0)
        );
    }
    if let Some(Churn::Search(search)) = &r.churn {
        if r.churn_full_tls.is_some() {
            out.push_str("churn over TLS, resuming from the server's tickets:\n");
        }
        out.push_str(&super::churn::text(search));
    }
    if let Some(Churn::Search(search)) = &r.churn_full_tls {
        out.push_str("churn over TLS, every handshake full (--tls-resume off):\n");
        out.push_str(&super::churn::text(search));
    }
    if let Some(handshakes) = &r.handshakes {
        out.push_str(&super::handshakes::text(handshakes));
    }
    if let Some(storm) = &r.storm {
        out.push_str(&super::storm::text(storm));
    }
    if let Some(soak) = &r.soak {
        out.push_str(&super::soak::text(soak));
    }
    if let Some(overload) = &r.overload {
        out.push_str(&super::overload::text(overload));
    }
    if let Some(backplane) = &r.backplane {
        out.push_str(&super::backplane::text(backplane));
    }
    if let Some(Churn::Single(c)) = &r.churn {
        let _ = writeln!(
            out,
            "churn     {}/s of {}/s asked; setup p50 {} µs, p99 {} µs",
            num(c.rate_per_s, 0),
            num(c.target_rate_per_s, 0),
            num(c.setup.p50_us, 0),
            num(c.setup.p99_us, 0)
        );
    }
}

fn evidence(out: &mut String, r: &BenchResult) {
    for phase in r.phases.iter().filter(|p| !p.trouble.is_empty()) {
        let _ = writeln!(
            out,
            "kernel evidence: {}: {}",
            phase.label(),
            phase.trouble.join(", ")
        );
        for cause in &phase.causes {
            let _ = writeln!(out, "  {cause}");
        }
    }
    for suspect in &r.suspects {
        let _ = writeln!(out, "SUSPECT: {suspect}");
    }
    for warning in &r.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed two-server overload result: its figures are in the
    /// table side by side; with those rows taken away nothing is left and
    /// no empty table is printed.
    #[test]
    fn the_side_by_side_table_shows_overload_figures_and_is_left_out_when_empty() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/results/2026-11-30-vm/overload-100k-kernel.json"
        );
        let mut r = BenchResult::read(std::path::Path::new(path)).unwrap();
        let shown = text(&r);
        assert!(shown.contains("servers side by side"), "{shown}");
        assert!(shown.contains("overload peak kernel TCP, MB"), "{shown}");
        for server in &mut r.servers {
            server.overload = None;
        }
        assert!(!text(&r).contains("servers side by side"));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(num(1234567.0, 0), "1,234,567");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(1000.5, 1), "1,000.5");
        assert_eq!(num(-4200.0, 0), "-4,200");
        assert_eq!(num(0.25, 2), "0.25");
    }
}
