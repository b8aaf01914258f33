//! How cost grows with N: `fanout bench --sweep 10k,50k,100k` runs the
//! bench once per N (a fresh server for every phase, as always), keeps each
//! run's file, and fits the growth across them — the server's memory as a
//! fixed cost plus bytes per connection, the broadcast's last delivery as a
//! fixed time plus time per member — with R² saying how well a line fits.

use std::fmt::Write as _;

use serde::Serialize;

use super::BenchResult;

/// A least-squares line y = fixed + per_conn × N.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fit {
    pub fixed: f64,
    pub per_conn: f64,
    /// 1 when every point is on the line.
    pub r2: f64,
    pub points: usize,
}

/// Fit a line through (N, y); None with fewer than two distinct N.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let per_conn = sxy / sxx;
    let fixed = mean_y - per_conn * mean_x;
    let total: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let residual: f64 = points
        .iter()
        .map(|p| (p.1 - fixed - per_conn * p.0).powi(2))
        .sum();
    Some(Fit {
        fixed,
        per_conn,
        r2: if total == 0.0 {
            1.0
        } else {
            1.0 - residual / total
        },
        points: points.len(),
    })
}

/// One server's figures at one N (medians over the run's samples).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    pub conns: usize,
    /// Shards in the server's plan (fanout: more shards at larger N, one
    /// fd table each past the first).
    pub shards: Option<usize>,
    pub held: Option<f64>,
    pub rss_at_n_bytes: Option<f64>,
    /// jemalloc allocated bytes at N (fanout servers).
    pub heap_at_n_bytes: Option<f64>,
    pub user_bytes_per_conn: Option<f64>,
    pub kernel_bytes_per_socket: Option<f64>,
    pub ramp_per_s: Option<f64>,
    pub broadcast_last_ms: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub echo_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerSweep {
    pub name: String,
    pub points: Vec<Point>,
    /// Server memory at N: fixed bytes + bytes per connection; fitted to
    /// the allocator's bytes where every point has them (fanout), else RSS.
    pub memory: Option<Fit>,
    /// `allocator` or `RSS`: what `memory` was fitted to.
    pub memory_measure: String,
    /// The within-run slopes (N/2 to N), median over the points: what one
    /// more connection costs on a given plan.
    pub marginal_bytes_per_conn: Option<f64>,
    /// What memory at N holds beyond the within-run slope × N, fitted
    /// against the plan's shard count: `per_conn` here is bytes per shard.
    pub per_shard: Option<Fit>,
    /// Broadcast last delivery: fixed ms + ms per member.
    pub broadcast_last: Option<Fit>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    pub command: String,
    pub machine: Option<super::machine::Machine>,
    /// The run files, one per N.
    pub files: Vec<String>,
    pub servers: Vec<ServerSweep>,
}

/// The sweep over runs at increasing N.
pub fn sweep(command: String, runs: &[(String, BenchResult)]) -> Sweep {
    let mut names: Vec<String> = Vec::new();
    for (_, run) in runs {
        for s in &run.servers {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
    }
    let servers = names
        .into_iter()
        .map(|name| {
            let points: Vec<Point> = runs
                .iter()
                .filter_map(|(_, run)| point(run, &name))
                .collect();
            let pairs = |get: &dyn Fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
                points
                    .iter()
                    .filter(|p| p.held.is_none_or(|h| h >= p.conns as f64))
                    .filter_map(|p| Some((p.conns as f64, get(p)?)))
                    .collect()
            };
            let heap = pairs(&|p| p.heap_at_n_bytes);
            let (memory, memory_measure) = if heap.len() == points.len() && heap.len() >= 2 {
                (fit(&heap), "allocator")
            } else {
                (fit(&pairs(&|p| p.rss_at_n_bytes)), "RSS")
            };
            let marginal: Vec<f64> = points
                .iter()
                .filter_map(|p| p.user_bytes_per_conn)
                .collect();
            let residuals: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|p| {
                    let at_n = if memory_measure == "allocator" {
                        p.heap_at_n_bytes?
                    } else {
                        p.rss_at_n_bytes?
                    };
                    Some((
                        p.shards? as f64,
                        at_n - p.user_bytes_per_conn? * p.conns as f64,
                    ))
                })
                .collect();
            ServerSweep {
                marginal_bytes_per_conn: (!marginal.is_empty())
                    .then(|| crate::load::spread::Spread::of(&marginal).median),
                per_shard: fit(&residuals),
                memory,
                memory_measure: memory_measure.into(),
                broadcast_last: fit(&pairs(&|p| p.broadcast_last_ms)),
                name,
                points,
            }
        })
        .collect();
    Sweep {
        command,
        machine: runs.first().map(|(_, run)| run.machine.clone()),
        files: runs.iter().map(|(file, _)| file.clone()).collect(),
        servers,
    }
}

fn point(run: &BenchResult, name: &str) -> Option<Point> {
    let s = run.servers.iter().find(|s| s.name == name)?;
    let memory = s.memory.as_ref();
    let at_n = |get: &dyn Fn(&super::memory::Slope) -> Option<u64>| -> Option<f64> {
        let values: Vec<f64> = memory
            .into_iter()
            .flat_map(|m| &m.slopes)
            .filter_map(|slope| get(slope).map(|b| b as f64))
            .collect();
        (!values.is_empty()).then(|| crate::load::spread::Spread::of(&values).median)
    };
    Some(Point {
        conns: run.conns,
        shards: shards_in_plan(&s.server),
        held: s.reach.as_ref().map(|r| r.held.median),
        rss_at_n_bytes: at_n(&|slope| slope.rss_at_n),
        heap_at_n_bytes: at_n(&|slope| slope.heap_at_n),
        user_bytes_per_conn: memory.map(|m| m.heap_per_conn.unwrap_or(m.rss_per_conn).median),
        kernel_bytes_per_socket: memory.map(|m| m.kernel_per_socket.median),
        ramp_per_s: s.ramp.as_ref().map(|r| r.measured.median),
        broadcast_last_ms: s
            .broadcast
            .as_ref()
            .map(|b| b.last_delivery_ms.measured.median),
        deliveries_per_s: s.broadcast.as_ref().map(|b| b.deliveries_per_s.median),
        echo_p99_ms: s.echo.first().map(|e| e.p99_us.median / 1000.0),
    })
}

/// `fanout serve: …; 27 shards, …` → 27 (a single shard says `1 shard`).
fn shards_in_plan(plan: &str) -> Option<usize> {
    let words: Vec<&str> = plan.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let unit = w[1].trim_end_matches([',', ';']);
        (unit == "shards" || unit == "shard").then(|| w[0].parse().ok())?
    })
}

pub fn text(sweep: &Sweep) -> String {
    let mut out = String::new();
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    for server in &sweep.servers {
        let _ = writeln!(out, "\nsweep: {}", server.name);
        let _ = writeln!(
            out,
            "{:>9} {:>6} {:>9} {:>11} {:>10} {:>10} {:>10} {:>13} {:>13} {:>11}",
            "N",
            "shards",
            "held",
            "RSS at N",
            "user B/c",
            "kernel B/s",
            "ramp/s",
            "bcast last ms",
            "deliveries/s",
            "echo p99 ms"
        );
        for p in &server.points {
            let _ = writeln!(
                out,
                "{:>9} {:>6} {:>9} {:>11} {:>10} {:>10} {:>10} {:>13} {:>13} {:>11}",
                p.conns,
                p.shards.map_or("—".into(), |n| n.to_string()),
                opt(p.held, 0),
                p.rss_at_n_bytes.map_or("—".into(), |b| format!(
                    "{:.1} MiB",
                    b / (1u64 << 20) as f64
                )),
                opt(p.user_bytes_per_conn, 1),
                opt(p.kernel_bytes_per_socket, 0),
                opt(p.ramp_per_s, 0),
                opt(p.broadcast_last_ms, 1),
                opt(p.deliveries_per_s, 0),
                opt(p.echo_p99_ms, 2),
            );
        }
        match server.memory {
            Some(f) => {
                let _ = writeln!(
                    out,
                    "  memory ({}): ≈ {:.1} MiB + {:.1} B × N (R² {:.4}, {} points){}",
                    server.memory_measure,
                    f.fixed / (1u64 << 20) as f64,
                    f.per_conn,
                    f.r2,
                    f.points,
                    loose(f)
                );
            }
            None => {
                let _ = writeln!(out, "  memory: no fit (fewer than two sizes held in full)");
            }
        }
        if let (Some(f), Some(marginal)) = (server.memory, server.marginal_bytes_per_conn) {
            if f.per_conn > 1.25 * marginal {
                let per_shard = server.per_shard.map_or(String::new(), |s| {
                    format!(": about {:.0} KiB per shard", s.per_conn / 1024.0)
                });
                let shards: Vec<usize> = server.points.iter().filter_map(|p| p.shards).collect();
                let _ = writeln!(
                    out,
                    "  note: across N memory grows {:.1} B per connection, one more connection on a given plan costs {:.1} B (the N/2-to-N slope): the rest grows with the plan, not the connections — shards {} → {}{per_shard}",
                    f.per_conn,
                    marginal,
                    shards.first().copied().unwrap_or(0),
                    shards.last().copied().unwrap_or(0),
                );
            }
        }
        if let Some(f) = server.broadcast_last {
            let _ = writeln!(
                out,
                "  broadcast last delivery ≈ {:.1} ms + {:.3} µs × N (R² {:.4}, {} points){}",
                f.fixed,
                f.per_conn * 1000.0,
                f.r2,
                f.points,
                loose(f)
            );
            if f.fixed < 0.0 {
                let rates: Vec<f64> = server
                    .points
                    .iter()
                    .filter_map(|p| p.deliveries_per_s)
                    .collect();
                let _ = writeln!(
                    out,
                    "  note: a negative fixed time means the time grows faster than linearly: deliveries/s fall from {:.0} to {:.0} as N grows",
                    rates.first().copied().unwrap_or(0.0),
                    rates.last().copied().unwrap_or(0.0)
                );
            }
        }
    }
    out
}

/// A warning when a line explains little of the variation: the growth
/// over these N is below the noise, or not linear.
fn loose(f: Fit) -> &'static str {
    if f.r2 < 0.9 {
        " — a line fits poorly here: the growth over these N is within the noise, or not linear"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_count_is_read_from_a_plan_line() {
        let plan = "fanout serve: epoll backend, ws protocol; 27 shards, each with a private fd table of 20000 fds";
        assert_eq!(shards_in_plan(plan), Some(27));
        assert_eq!(
            shards_in_plan("fanout serve: tokio backend, ws protocol; 1 shard in one fd table"),
            Some(1)
        );
        assert_eq!(shards_in_plan("ref server"), None);
    }

    #[test]
    fn a_line_is_fitted_exactly_and_noise_lowers_r2() {
        let exact: Vec<(f64, f64)> = [1e4, 5e4, 1e5, 5e5]
            .iter()
            .map(|&n| (n, 6e6 + 42.0 * n))
            .collect();
        let f = fit(&exact).unwrap();
        assert!((f.per_conn - 42.0).abs() < 1e-9 && (f.fixed - 6e6).abs() < 1e-3);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        let noisy = [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (4.0, 5.0)];
        let f = fit(&noisy).unwrap();
        assert!(f.r2 > 0.5 && f.r2 < 1.0, "{f:?}");
        assert!(fit(&[(1.0, 2.0)]).is_none());
        assert!(fit(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
    }
}
