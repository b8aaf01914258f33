//! `fanout report DIR`: Markdown tables and SVG plots from the result
//! files in a results folder — bench runs (side-by-side tables, broadcast
//! and echo bars with their ranges, broadcast delivery quantiles, memory
//! per connection against N across runs), ceilings (connections opened per
//! second during the ramp) and plans (request queues against utilization
//! per routing policy). Nothing in it is typed: every figure is read from
//! a file, and every plot names its file, machine, date and revision.

pub mod html;
pub mod index;
pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::bench::{BenchResult, ServerResult};
use crate::load::spread::Spread;
use svg::{Bar, BarPlot, Group, LinePlot, Series};

#[derive(Clone, Debug, clap::Args)]
pub struct ReportConfig {
    /// A results folder (results/<date>-<host>), or the results root: then
    /// every folder's report is written and results/README.md regenerated.
    pub dir: PathBuf,

    /// Where report.md and the plots go. Default: DIR/report.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Also write report.html beside report.md: one self-contained file
    /// (inline SVG plots and styles, nothing fetched) with the same tables,
    /// plots and warnings, made from the same Markdown, to send to someone.
    #[arg(long)]
    pub html: bool,
}

/// The result files of a folder, by kind.
#[derive(Default)]
pub struct Runs {
    pub benches: Vec<(String, BenchResult)>,
    pub ceilings: Vec<(String, Value)>,
    pub plans: Vec<(String, Value)>,
    /// `fanout bench --sweep` fits and `--slo` ladders.
    pub sweeps: Vec<(String, Value)>,
    pub slos: Vec<(String, Value)>,
    /// JSON files read as none of those (an older layout; `null` when not
    /// JSON at all).
    pub skipped: Vec<(String, Value)>,
}

impl Runs {
    /// Whether any file is one the report draws.
    pub fn drawable(&self) -> bool {
        !(self.benches.is_empty()
            && self.ceilings.is_empty()
            && self.plans.is_empty()
            && self.sweeps.is_empty()
            && self.slos.is_empty())
    }

    /// The files not read, by name.
    pub fn skipped_names(&self) -> String {
        let names: Vec<&str> = self.skipped.iter().map(|(name, _)| name.as_str()).collect();
        names.join(", ")
    }
}

pub fn report(config: &ReportConfig) -> anyhow::Result<()> {
    let runs = read_dir(&config.dir)?;
    if runs.drawable() {
        let out = config
            .out
            .clone()
            .unwrap_or_else(|| config.dir.join("report"));
        return report_folder(&config.dir, &out, &runs, config.html);
    }
    let folders = result_folders(&config.dir)?;
    if folders.is_empty() {
        return Err(crate::usage::UsageError(format!(
            "{} holds no fanout result files (bench, ceiling, plan, sweep or slo JSON), nor folders of them",
            config.dir.display()
        ))
        .into());
    }
    index::write(&config.dir, &folders, config.html)
}

/// The folders under `dir` that hold JSON files (`dir` being the results
/// root), newest name first.
fn result_folders(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let has_json = |d: &Path| {
        std::fs::read_dir(d)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .unwrap_or(false)
    };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && has_json(p))
        .collect();
    folders.sort();
    folders.reverse();
    Ok(folders)
}

/// One results folder's report.md and plots in `out`, from its `runs`
/// (which hold something to draw), and with `html` report.html.
pub fn report_folder(dir: &Path, out: &Path, runs: &Runs, html: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let written = write(runs, dir, out, html)?;
    println!(
        "report: {}{} ({} plots) from {} bench, {} ceiling and {} plan files, {} sweeps and {} slo ladders{}",
        out.join("report.md").display(),
        match html {
            true => format!(" and {}", out.join("report.html").display()),
            false => String::new(),
        },
        written,
        runs.benches.len(),
        runs.ceilings.len(),
        runs.plans.len(),
        runs.sweeps.len(),
        runs.slos.len(),
        if runs.skipped.is_empty() {
            String::new()
        } else {
            format!("; not read (earlier layouts): {}", runs.skipped_names())
        }
    );
    Ok(())
}

pub fn read_dir(dir: &Path) -> anyhow::Result<Runs> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    let mut runs = Runs::default();
    for path in names {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path)?;
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            runs.skipped.push((name, Value::Null));
            continue;
        };
        if value.get("diagnosis").is_some() && value.get("timeline").is_some() {
            runs.ceilings.push((name, value));
        } else if value.get("fleet").is_some() && value.get("requests").is_some() {
            runs.plans.push((name, value));
        } else if value.get("verdicts").is_some() && value.get("steps").is_some() {
            runs.slos.push((name, value));
        } else if value.get("files").is_some() && value.get("servers").is_some() {
            runs.sweeps.push((name, value));
        } else if let Ok(bench) = <BenchResult as serde::Deserialize>::deserialize(&value) {
            runs.benches.push((name, bench));
        } else {
            runs.skipped.push((name, value));
        }
    }
    Ok(runs)
}

fn footer(bench: &BenchResult, file: &str) -> String {
    let m = &bench.machine;
    format!(
        "{file}.json · {} ({} cores, {:.1} GiB, Linux {}) · {} · fanout {}",
        m.hostname,
        m.cores,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.kernel,
        bench.time_utc,
        m.git_revision
    )
}

/// Write report.md and every plot, and with `html` report.html made from
/// them; returns how many plots.
fn write(runs: &Runs, dir: &Path, out: &Path, html: bool) -> anyhow::Result<usize> {
    let mut md = String::new();
    let mut plots = BTreeMap::new();
    let _ = writeln!(
        md,
        "# {}\n\nGenerated by `fanout report {}` from the result files beside it; every figure is a median (min – max) over the samples the file holds.\n",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        dir.display()
    );
    let mut save = |name: &str, svg: Result<String, String>, md: &mut String, alt: &str| match svg {
        Ok(svg) => {
            std::fs::write(out.join(name), &svg)?;
            plots.insert(name.to_string(), svg);
            let _ = writeln!(md, "![{alt}]({name})\n");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("drawing {name}: {e}")),
    };
    if let Some(plot) = memory_plot(&runs.benches, false) {
        let _ = writeln!(md, "## Memory per connection against N, every run\n");
        save(
            "memory-user.svg",
            svg::line_svg(&plot),
            &mut md,
            &plot.title,
        )?;
        if let Some(plot) = memory_plot(&runs.benches, true) {
            save(
                "memory-kernel.svg",
                svg::line_svg(&plot),
                &mut md,
                &plot.title,
            )?;
        }
    }
    for (file, bench) in &runs.benches {
        let _ = writeln!(
            md,
            "## {file}: {} connections, {} sample(s)\n\n`{}` — {}, revision {}\n",
            bench.conns, bench.samples, bench.command, bench.time_utc, bench.machine.git_revision
        );
        md.push_str(&table(bench));
        for (suffix, plot) in bar_plots(file, bench) {
            let name = format!("{file}-{suffix}.svg");
            save(&name, svg::bar_svg(&plot), &mut md, &plot.title)?;
        }
        if let Some(plot) = delivery_quantiles(file, bench) {
            let name = format!("{file}-delivery.svg");
            save(&name, svg::line_svg(&plot), &mut md, &plot.title)?;
        }
        if let Some(plot) = storm_curves(file, bench) {
            let name = format!("{file}-storm.svg");
            save(&name, svg::line_svg(&plot), &mut md, &plot.title)?;
        }
        for s in &bench.servers {
            if let Some(soak) = &s.soak {
                let _ = writeln!(md, "```\n{}```\n", crate::bench::soak::text(soak));
            }
        }
        if let Some(plot) = soak_memory(file, bench) {
            let name = format!("{file}-soak-rss.svg");
            save(&name, svg::line_svg(&plot), &mut md, &plot.title)?;
        }
    }
    if !runs.ceilings.is_empty() {
        let _ = writeln!(md, "## Ceilings\n");
        for (file, c) in &runs.ceilings {
            let _ = writeln!(
                md,
                "- **{file}**: {} held — {} (side: {})",
                c["evidence"]["held"],
                c["diagnosis"]["summary"].as_str().unwrap_or("?"),
                c["diagnosis"]["side"].as_str().unwrap_or("?")
            );
        }
        md.push('\n');
        let plot = ramp_plot(&runs.ceilings);
        save(
            "ceiling-ramps.svg",
            svg::line_svg(&plot),
            &mut md,
            &plot.title,
        )?;
    }
    for (file, sweep) in &runs.sweeps {
        let _ = writeln!(md, "## {file}: how cost grows with N\n");
        md.push_str(&sweep_table(sweep));
        for (suffix, plot) in sweep_plots(file, sweep) {
            save(
                &format!("{file}-{suffix}.svg"),
                svg::line_svg(&plot),
                &mut md,
                &plot.title,
            )?;
        }
    }
    for (file, slo) in &runs.slos {
        let _ = writeln!(
            md,
            "## {file}: capacity at \"{}\"\n",
            slo["slo"]["text"].as_str().unwrap_or("?")
        );
        for v in slo["verdicts"].as_array().into_iter().flatten() {
            let missed = &v["first_missed"];
            let _ = writeln!(
                md,
                "- **{}**: largest N meeting it {}; {}",
                v["server"].as_str().unwrap_or("?"),
                v["largest_met"]
                    .as_u64()
                    .map_or("none tried".into(), |n| n.to_string()),
                match (missed[0].as_u64(), missed[1].as_f64()) {
                    (Some(n), Some(ms)) => format!("first missed at {n} ({ms:.1} ms)"),
                    (Some(n), None) => format!("first missed at {n} (stopped short or no figure)"),
                    _ => "never missed".to_string(),
                }
            );
        }
        md.push('\n');
        let plot = slo_plot(file, slo);
        save(
            &format!("{file}-curve.svg"),
            svg::line_svg(&plot),
            &mut md,
            &plot.title,
        )?;
    }
    for (file, plan) in &runs.plans {
        let _ = writeln!(
            md,
            "## {file}: {} users → {} machines, bound by {}\n",
            plan["demand"]["users"],
            plan["fleet"]["machines"],
            plan["fleet"]["binding"].as_str().unwrap_or("?")
        );
        let plot = routing_plot(file, plan);
        save(
            &format!("{file}-routing.svg"),
            svg::line_svg(&plot),
            &mut md,
            &plot.title,
        )?;
    }
    if !runs.skipped.is_empty() {
        let _ = writeln!(md, "Not read (earlier layouts): {}.", runs.skipped_names());
    }
    std::fs::write(out.join("report.md"), &md)?;
    if html {
        let title = format!("fanout report: {}", dir.display());
        let page = html::render(&title, &md, &plots, &footers(runs));
        std::fs::write(out.join("report.html"), page)?;
    }
    Ok(plots.len())
}

/// The HTML report's footer: each file's machine, date and revision, and
/// the revision that drew the report.
fn footers(runs: &Runs) -> Vec<String> {
    let mut lines: Vec<String> = runs
        .benches
        .iter()
        .map(|(file, bench)| footer(bench, file))
        .collect();
    let others = [&runs.ceilings, &runs.plans, &runs.sweeps, &runs.slos];
    for (file, value) in others.into_iter().flatten() {
        lines.push(match value.get("machine").is_some_and(|m| m.is_object()) {
            true => footer_of(file, value),
            false => format!("{file}.json · the file records no machine or revision"),
        });
    }
    lines.push(format!(
        "drawn by fanout report, revision {}",
        crate::bench::machine::fingerprint().git_revision
    ));
    lines
}

fn cell(spread: Option<&Spread>, digits: usize) -> String {
    match spread {
        Some(s) if s.n > 0 => {
            if s.n == 1 || (s.max - s.min).abs() < f64::EPSILON {
                format!("{:.*}", digits, s.median)
            } else {
                format!(
                    "{:.*} ({:.*} – {:.*})",
                    digits, s.median, digits, s.min, digits, s.max
                )
            }
        }
        _ => "—".into(),
    }
}

/// The side-by-side table of one bench file.
pub fn table(bench: &BenchResult) -> String {
    type Row = (&'static str, usize, fn(&ServerResult) -> Option<Spread>);
    let rows: [Row; 15] = [
        ("held", 0, |s| s.reach.as_ref().map(|r| r.held)),
        ("user B/conn (RSS)", 1, |s| {
            s.memory.as_ref().map(|m| m.rss_per_conn)
        }),
        ("user B/conn (allocator)", 1, |s| {
            s.memory.as_ref().and_then(|m| m.heap_per_conn)
        }),
        ("kernel B/socket", 0, |s| {
            s.memory.as_ref().map(|m| m.kernel_per_socket)
        }),
        ("ramp, connections/s", 0, |s| {
            s.ramp.as_ref().map(|r| r.measured)
        }),
        ("broadcast last delivery, ms", 1, |s| {
            s.broadcast.as_ref().map(|b| b.last_delivery_ms.measured)
        }),
        ("broadcast p99 delivery, ms", 1, |s| {
            s.broadcast.as_ref().map(|b| b.p99_delivery_ms)
        }),
        ("deliveries/s", 0, |s| {
            s.broadcast.as_ref().map(|b| b.deliveries_per_s)
        }),
        ("echo msgs/s (first echo job)", 0, |s| {
            s.echo.first().map(|e| e.msgs_per_s)
        }),
        ("echo p99, µs (first echo job)", 0, |s| {
            s.echo.first().map(|e| e.p99_us)
        }),
        ("churn sustained, connections/s", 0, |s| {
            let rate = s.churn.as_ref()?.sustained_per_s()?;
            Some(Spread::of(&[rate]))
        }),
        ("churn cycles/s", 0, |s| {
            Some(s.churn.as_ref()?.spread(|c| c.rate_per_s))
        }),
        ("churn setup p99, ms", 1, |s| {
            Some(s.churn.as_ref()?.spread(|c| c.setup.p99_us / 1000.0))
        }),
        ("storm at once: all back, s", 2, |s| {
            s.storm.as_ref()?.policies.first()?.all_back_s
        }),
        ("storm with backoff: all back, s", 2, |s| {
            s.storm.as_ref()?.policies.get(1)?.all_back_s
        }),
    ];
    let mut md = String::new();
    let names: Vec<String> = bench.servers.iter().map(|s| label(s, bench)).collect();
    let _ = writeln!(md, "| | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(names.len()));
    for (label, digits, get) in rows {
        let cells: Vec<String> = bench
            .servers
            .iter()
            .map(|s| cell(get(s).as_ref(), digits))
            .collect();
        if cells.iter().all(|c| c == "—") {
            continue;
        }
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    md.push('\n');
    for s in bench.servers.iter().filter(|s| short(s)) {
        let _ = writeln!(
            md,
            "{}{} stopped short: its room figures are for the members it held, not {} (failed connections: {}).\n",
            html::ALERT,
            s.name,
            bench.conns,
            s.reach
                .iter()
                .flat_map(|r| &r.connect_failures)
                .map(|(cause, n)| format!("{cause} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for suspect in &bench.suspects {
        let _ = writeln!(md, "{}SUSPECT: {suspect}\n", html::ALERT);
    }
    md
}

/// Whether a server held fewer than N in some sample.
fn short(s: &ServerResult) -> bool {
    s.reach.as_ref().is_some_and(|r| !r.complete())
}

/// A server's name, with what it held when it stopped short of N.
fn label(s: &ServerResult, bench: &BenchResult) -> String {
    match &s.reach {
        Some(r) if !r.complete() => {
            format!("{} (held {:.0} of {})", s.name, r.held.median, bench.conns)
        }
        _ => s.name.clone(),
    }
}

/// Per-server bars with ranges: broadcast last delivery, echo rate.
fn bar_plots(file: &str, bench: &BenchResult) -> Vec<(&'static str, BarPlot)> {
    let bars = |get: &dyn Fn(&ServerResult) -> Option<Spread>| -> Vec<Group> {
        bench
            .servers
            .iter()
            .filter_map(|s| {
                let v = get(s)?;
                Some(Group {
                    label: label(s, bench),
                    bars: vec![Bar {
                        series: s.name.clone(),
                        median: v.median,
                        min: v.min,
                        max: v.max,
                    }],
                })
            })
            .collect()
    };
    let mut plots = Vec::new();
    let broadcast = bars(&|s| s.broadcast.as_ref().map(|b| b.last_delivery_ms.measured));
    if !broadcast.is_empty() {
        plots.push((
            "broadcast",
            BarPlot {
                title: format!(
                    "Broadcast to {} members: last delivery (lower is better)",
                    bench.conns
                ),
                y_label: "ms from publish to the last member".into(),
                groups: broadcast,
                footer: footer(bench, file),
            },
        ));
    }
    let echo_groups: Vec<Group> = bench
        .servers
        .iter()
        .filter_map(|s| {
            let e = s.echo.first()?;
            let bar = |series: &str, v: Spread| Bar {
                series: series.into(),
                median: v.median / 1000.0,
                min: v.min / 1000.0,
                max: v.max / 1000.0,
            };
            Some(Group {
                label: s.name.clone(),
                bars: vec![
                    bar("p50", e.p50_us),
                    bar("p99", e.p99_us),
                    bar("p99.9", e.p999_us),
                ],
            })
        })
        .collect();
    if !echo_groups.is_empty() {
        let e = bench.servers.iter().find_map(|s| s.echo.first());
        plots.push((
            "echo-latency",
            BarPlot {
                title: format!(
                    "Echo round trip, {} connections, {}",
                    e.map_or(0, |e| e.conns),
                    e.map_or("", |e| e.mode.as_str())
                ),
                y_label: "round trip, ms".into(),
                groups: echo_groups,
                footer: footer(bench, file),
            },
        ));
    }
    plots
}

/// Each server's broadcast delivery quantiles (first, median, p99, last;
/// medians over the broadcasts) as a cumulative curve.
fn delivery_quantiles(file: &str, bench: &BenchResult) -> Option<LinePlot> {
    let series: Vec<Series> = bench
        .servers
        .iter()
        .filter_map(|s| {
            let b = s.broadcast.as_ref()?;
            Some(Series {
                name: label(s, bench),
                points: vec![
                    (b.first_delivery_ms.median, 0.0),
                    (b.median_delivery_ms.median, 50.0),
                    (b.p99_delivery_ms.median, 99.0),
                    (b.last_delivery_ms.measured.median, 100.0),
                ],
            })
        })
        .collect();
    (!series.is_empty()).then(|| LinePlot {
        title: format!(
            "Broadcast to {} members: share delivered by time",
            bench.conns
        ),
        x_label: "ms after publish (first, median, p99, last delivery)".into(),
        y_label: "% of members".into(),
        x_log: false,
        y_log: false,
        series,
        footer: footer(bench, file),
    })
}

/// Each server's storm curves: connections open against seconds since the
/// first loss, one series per server and policy (the run whose time to all
/// back is the median of its policy's runs).
fn storm_curves(file: &str, bench: &BenchResult) -> Option<LinePlot> {
    let mut series = Vec::new();
    for s in &bench.servers {
        let Some(storm) = &s.storm else { continue };
        for policy in &storm.policies {
            let mut runs: Vec<_> = policy.runs.iter().collect();
            runs.sort_by(|a, b| {
                let back = |r: &&crate::bench::storm::StormRun| {
                    r.storm.all_back_seconds.unwrap_or(f64::MAX)
                };
                back(a).total_cmp(&back(b))
            });
            let Some(median) = runs.get(runs.len() / 2) else {
                continue;
            };
            let kind = if policy.reconnect == "at once" {
                "at once"
            } else {
                "backoff"
            };
            series.push(Series {
                name: format!("{} {kind}", label(s, bench)),
                points: median
                    .storm
                    .curve
                    .iter()
                    .map(|&[t, open]| (t, open))
                    .collect(),
            });
        }
    }
    let conns = bench
        .servers
        .iter()
        .find_map(|s| Some(s.storm.as_ref()?.conns))?;
    (!series.is_empty()).then(|| LinePlot {
        title: format!("Reconnect storm: {conns} connections reset at once, open again over time"),
        x_label: "seconds after the first loss".into(),
        y_label: "connections open".into(),
        x_log: false,
        y_log: false,
        series,
        footer: footer(bench, file),
    })
}

/// Each soaked server's resident memory over the soak, sampled every second.
fn soak_memory(file: &str, bench: &BenchResult) -> Option<LinePlot> {
    let megabytes = |points: &[[f64; 2]]| points.iter().map(|&[t, b]| (t, b / 1e6)).collect();
    let series: Vec<Series> = bench
        .servers
        .iter()
        .filter_map(|s| {
            let soak = s.soak.as_ref()?;
            Some([
                Series {
                    name: format!("{} RSS", label(s, bench)),
                    points: megabytes(&soak.rss_curve),
                },
                Series {
                    name: format!("kernel TCP buffers, machine-wide ({} run)", label(s, bench)),
                    points: megabytes(&soak.kernel_tcp_curve),
                },
            ])
        })
        .flatten()
        .filter(|series| !series.points.is_empty())
        .collect();
    (!series.is_empty()).then(|| LinePlot {
        title: format!("Soak at {} connections: memory over time", bench.conns),
        x_label: "seconds since the soak began".into(),
        y_label: "MB".into(),
        x_log: false,
        y_log: false,
        series,
        footer: footer(bench, file),
    })
}

/// User (or kernel) bytes per connection against N, one series per
/// server name, over every run that measured memory.
fn memory_plot(benches: &[(String, BenchResult)], kernel: bool) -> Option<LinePlot> {
    let mut by_server: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (_, bench) in benches {
        for s in &bench.servers {
            let Some(m) = &s.memory else { continue };
            let held = s
                .reach
                .as_ref()
                .map_or(bench.conns as f64, |r| r.held.median);
            let y = if kernel {
                m.kernel_per_socket.median
            } else {
                m.rss_per_conn.median
            };
            by_server.entry(s.name.clone()).or_default().push((held, y));
        }
    }
    if by_server.is_empty() {
        return None;
    }
    let series = by_server
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            Series { name, points }
        })
        .collect();
    let times: Vec<&str> = benches.iter().map(|(_, b)| b.time_utc.as_str()).collect();
    let mut revisions: Vec<&str> = benches
        .iter()
        .map(|(_, b)| b.machine.git_revision.as_str())
        .collect();
    revisions.sort();
    revisions.dedup();
    let machine = &benches[0].1.machine;
    Some(LinePlot {
        title: if kernel {
            "Kernel memory per socket against connections held".into()
        } else {
            "Server user space per connection (RSS slope) against connections held".into()
        },
        x_label: "connections held (log)".into(),
        y_label: if kernel {
            "bytes per socket".into()
        } else {
            "bytes per connection (log)".into()
        },
        x_log: true,
        y_log: !kernel,
        series,
        footer: format!(
            "{} bench files · {} ({} cores) · {} to {} · fanout {}",
            benches.len(),
            machine.hostname,
            machine.cores,
            times.iter().min().unwrap_or(&"?"),
            times.iter().max().unwrap_or(&"?"),
            match revisions.len() {
                0..=3 => revisions.join(", "),
                n => format!("{n} revisions, {} … {}", revisions[0], revisions[n - 1]),
            }
        ),
    })
}

fn ramp_plot(ceilings: &[(String, Value)]) -> LinePlot {
    let series = ceilings
        .iter()
        .map(|(file, c)| Series {
            name: file.clone(),
            points: c["timeline"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .enumerate()
                        .map(|(i, n)| (i as f64 + 1.0, n.as_f64().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    LinePlot {
        title: "Connections opened in each second of a ceiling ramp".into(),
        x_label: "second of the ramp".into(),
        y_label: "connections opened that second".into(),
        x_log: false,
        y_log: false,
        series,
        footer: format!(
            "{} · fanout ceiling",
            ceilings
                .iter()
                .map(|(f, _)| format!("{f}.json"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn routing_plot(file: &str, plan: &Value) -> LinePlot {
    let mut by_series: BTreeMap<(u64, String), Vec<(f64, f64)>> = BTreeMap::new();
    for row in plan["requests"].as_array().into_iter().flatten() {
        let utilization = row["utilization"].as_f64().unwrap_or(0.0);
        if utilization >= 1.0 {
            continue; // no steady state: the queue is the run's length
        }
        let key = (
            row["routers"].as_u64().unwrap_or(0),
            row["policy"].as_str().unwrap_or("?").to_string(),
        );
        let p99 = row["queue"]["p99"].as_f64().unwrap_or(0.0);
        by_series
            .entry(key)
            .or_default()
            .push((utilization * 100.0, p99));
    }
    let series = by_series
        .into_iter()
        .map(|((routers, policy), points)| Series {
            name: format!("{policy}, {routers} router(s)"),
            points,
        })
        .collect();
    LinePlot {
        title: format!(
            "Request queue found on arrival (p99) over {} servers, by routing policy",
            plan["fleet"]["machines"].as_u64().unwrap_or(0).max(2)
        ),
        x_label: "utilization, %".into(),
        y_label: "requests at the chosen server, p99".into(),
        x_log: false,
        y_log: false,
        series,
        footer: format!(
            "{file}.json · seeded simulation (seed {}) · Poisson arrivals, exponential service · sized from {}",
            plan["seed"],
            plan["measured"]["from"].as_str().unwrap_or("?")
        ),
    }
}

fn footer_of(file: &str, value: &Value) -> String {
    let m = &value["machine"];
    format!(
        "{file}.json · {} ({} cores, Linux {}) · fanout {}",
        m["hostname"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["git_revision"].as_str().unwrap_or("?")
    )
}

/// A sweep's points, one row per server and N.
fn sweep_table(sweep: &Value) -> String {
    let mut md = String::from(
        "| server | N | held | memory at N, MiB | user B/conn | kernel B/socket | ramp/s | broadcast last, ms | deliveries/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let num =
        |v: &Value, digits: usize| v.as_f64().map_or("—".into(), |x| format!("{x:.digits$}"));
    for server in sweep["servers"].as_array().into_iter().flatten() {
        let name = server["name"].as_str().unwrap_or("?");
        for p in server["points"].as_array().into_iter().flatten() {
            let memory = p["heap_at_n_bytes"]
                .as_f64()
                .or(p["rss_at_n_bytes"].as_f64())
                .map_or("—".into(), |b| format!("{:.1}", b / (1u64 << 20) as f64));
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {memory} | {} | {} | {} | {} | {} |",
                p["conns"],
                num(&p["held"], 0),
                num(&p["user_bytes_per_conn"], 1),
                num(&p["kernel_bytes_per_socket"], 0),
                num(&p["ramp_per_s"], 0),
                num(&p["broadcast_last_ms"], 1),
                num(&p["deliveries_per_s"], 0)
            );
        }
    }
    md.push('\n');
    for server in sweep["servers"].as_array().into_iter().flatten() {
        let name = server["name"].as_str().unwrap_or("?");
        if let Some(f) = server["memory"].as_object() {
            let _ = writeln!(
                md,
                "- {name}: memory ({}) ≈ {:.2} MiB + {:.1} B × N (R² {:.4})",
                server["memory_measure"].as_str().unwrap_or("?"),
                f["fixed"].as_f64().unwrap_or(0.0) / (1u64 << 20) as f64,
                f["per_conn"].as_f64().unwrap_or(0.0),
                f["r2"].as_f64().unwrap_or(0.0)
            );
        }
        if let Some(f) = server["broadcast_last"].as_object() {
            let _ = writeln!(
                md,
                "- {name}: broadcast last delivery ≈ {:.1} ms + {:.3} µs × N (R² {:.4})",
                f["fixed"].as_f64().unwrap_or(0.0),
                f["per_conn"].as_f64().unwrap_or(0.0) * 1000.0,
                f["r2"].as_f64().unwrap_or(0.0)
            );
        }
    }
    md.push('\n');
    md
}

/// Memory at N and broadcast last delivery against N, per server.
fn sweep_plots(file: &str, sweep: &Value) -> Vec<(&'static str, LinePlot)> {
    let series = |get: &dyn Fn(&Value) -> Option<f64>| -> Vec<Series> {
        sweep["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|server| Series {
                name: server["name"].as_str().unwrap_or("?").to_string(),
                points: server["points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p["conns"].as_f64()?, get(p)?)))
                    .collect(),
            })
            .collect()
    };
    let footer = footer_of(file, sweep);
    vec![
        (
            "memory",
            LinePlot {
                title: "Server memory at N (allocator bytes, else RSS)".into(),
                x_label: "connections (N)".into(),
                y_label: "MiB".into(),
                x_log: false,
                y_log: false,
                series: series(&|p| {
                    Some(
                        p["heap_at_n_bytes"]
                            .as_f64()
                            .or(p["rss_at_n_bytes"].as_f64())?
                            / (1u64 << 20) as f64,
                    )
                }),
                footer: footer.clone(),
            },
        ),
        (
            "broadcast",
            LinePlot {
                title: "Broadcast to every member: last delivery against N".into(),
                x_label: "members (N)".into(),
                y_label: "ms from publish to the last member".into(),
                x_log: false,
                y_log: false,
                series: series(&|p| p["broadcast_last_ms"].as_f64()),
                footer,
            },
        ),
    ]
}

/// Each server's figure at every step of an --slo ladder, and the target.
fn slo_plot(file: &str, slo: &Value) -> LinePlot {
    let mut by_server: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut sizes = Vec::new();
    for step in slo["steps"].as_array().into_iter().flatten() {
        let n = step["conns"].as_f64().unwrap_or(0.0);
        sizes.push(n);
        for m in step["servers"].as_array().into_iter().flatten() {
            if let Some(v) = m["value_ms"].as_f64() {
                by_server
                    .entry(m["server"].as_str().unwrap_or("?").to_string())
                    .or_default()
                    .push((n, v));
            }
        }
    }
    let bound = slo["slo"]["bound_ms"].as_f64().unwrap_or(0.0);
    let mut series: Vec<Series> = by_server
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    series.push(Series {
        name: format!("target: {}", slo["slo"]["text"].as_str().unwrap_or("?")),
        points: sizes.iter().map(|&n| (n, bound)).collect(),
    });
    LinePlot {
        title: format!(
            "Capacity at \"{}\": the figure at each N tried",
            slo["slo"]["text"].as_str().unwrap_or("?")
        ),
        x_label: "connections (N, log)".into(),
        y_label: "ms".into(),
        x_log: true,
        y_log: false,
        series,
        footer: footer_of(file, slo),
    }
}
