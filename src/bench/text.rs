//! The bench result as a fixed text block: the comparisons with their
//! floors first, then memory, broadcast detail, echo, churn, the kernel
//! evidence of flagged phases, suspects and warnings. Every figure is a
//! median with its range over the samples.

use std::fmt::Write as _;

use super::compare::Compared;
use super::BenchResult;
use crate::load::spread::Spread;

/// A number with thousands separators and `decimals` decimals.
fn num(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

/// `median (min – max)`.
fn spread(s: &Spread, decimals: usize) -> String {
    format!(
        "{} ({} – {})",
        num(s.median, decimals),
        num(s.min, decimals),
        num(s.max, decimals)
    )
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
    let _ = writeln!(out, "server: {}", r.server);
    for floor in &r.floor_servers {
        let _ = writeln!(out, "floor:  {floor}");
    }
    let b = &r.baseline.sockets;
    let _ = writeln!(
        out,
        "method: {} samples per figure and side, floor and server interleaved, each on a fresh server once the machine's sockets were back to the {} in use and {} in TIME_WAIT found before the run",
        r.samples, b.tcp_inuse, b.tcp_time_wait
    );
    comparisons(&mut out, r);
    memory(&mut out, r);
    details(&mut out, r);
    evidence(&mut out, r);
    out
}

fn comparisons(out: &mut String, r: &BenchResult) {
    let _ = writeln!(
        out,
        "\n{:<34} {:<30} {:<30} server ÷ floor",
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

fn memory(out: &mut String, r: &BenchResult) {
    let Some(m) = &r.memory else { return };
    let _ = writeln!(out);
    let heap = m
        .heap_per_conn
        .as_ref()
        .map(|h| format!(", allocator {} B", spread(h, 1)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "memory    server user space per connection, slope from N/2 to N: RSS {} B{heap}",
        spread(&m.rss_per_conn, 1)
    );
    if let (Some(bytes), Some(slots)) = (m.slot_bytes, &m.slots) {
        let _ = writeln!(
            out,
            "          slab slots of {bytes} B (they grow by doubling): {} → {} between the points in sample 1; their growth is {} B of the slope per connection; at N they hold {}× the connections, {} B of state per connection",
            num(slots.first_half as f64, 0),
            num(slots.first_full as f64, 0),
            spread(&slots.growth_per_conn, 1),
            spread(&slots.per_conn_at_n, 2),
            spread(&slots.bytes_per_conn_at_n, 1)
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

fn details(out: &mut String, r: &BenchResult) {
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
    if let Some(c) = &r.churn {
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

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(num(1234567.0, 0), "1,234,567");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(1000.5, 1), "1,000.5");
        assert_eq!(num(-4200.0, 0), "-4,200");
        assert_eq!(num(0.25, 2), "0.25");
    }
}
