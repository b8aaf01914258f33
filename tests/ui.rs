//! The live page: `fanout load --ui` on every backend (its address said
//! at start, its event stream carrying the run's samples as it goes — the
//! ramp, then the work, connections open rising to N — and then the
//! report), and `fanout bench --ui` read by a script and watched in a real
//! browser (headless Chromium): every chart gets data points, the phase
//! shown moves on with the bench, the final table arrives, and the page
//! logs no error.

mod browser;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::*;

every_backend! {
    fn a_load_serves_its_samples_and_its_report_live(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut load = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["load", "broadcast", "--url", &server.url("/room")])
            .args(["--conns", "300", "--count", "3", "--ui", "127.0.0.1:0", "--ui-linger", "0s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fanout load starts");
        let (_stderr, url) = ui_address(&mut load);
        let mut events = TcpStream::connect(&url).unwrap();
        events.set_read_timeout(Some(PATIENCE)).unwrap();
        events.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (mut stages, mut most_open, mut report) = (Vec::new(), 0, None);
        for line in BufReader::new(events).lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data: ") else { continue };
            let sample: serde_json::Value = serde_json::from_str(data).unwrap();
            if sample["kind"] == "done" {
                report = sample["report"].as_str().map(str::to_string);
                break;
            }
            assert_eq!(sample["kind"], "load", "{sample}");
            let stage = sample["stage"].as_str().unwrap().to_string();
            most_open = most_open.max(sample["open"].as_u64().unwrap());
            if stages.last() != Some(&stage) {
                stages.push(stage);
            }
        }
        let status = load.wait().unwrap();
        assert!(status.success());
        assert_eq!(stages.last().map(String::as_str), Some("work"), "{stages:?}");
        assert_eq!(most_open, 300);
        let report = report.expect("the report came last");
        assert!(report.contains("broadcast 3 messages"), "{report}");
        let mut stdout = String::new();
        load.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        assert!(stdout.contains("broadcast 3 messages"));
    }
}

#[test]
fn the_page_is_served_from_the_binary() {
    let (_live, addr) = fanout::ui::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut page = String::new();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(page.contains("id=\"chart-open\"") && page.contains("new EventSource(\"/events\")"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network fetch"
    );
}

/// The page's address from a fanout's `ui http://ADDR/` line, and the rest
/// of its stderr.
fn ui_address(child: &mut std::process::Child) -> (BufReader<std::process::ChildStderr>, String) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no `ui` line");
        if let Some(url) = line.trim().strip_prefix("ui http://") {
            return (stderr, url.trim_end_matches('/').to_string());
        }
    }
}

/// A lingering fanout, killed (it is this test's child) when the test is
/// over, however it ends.
struct Lingering(std::process::Child);

impl Drop for Lingering {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The charts of the live page, by the id of their figure.
const CHARTS: [&str; 7] = [
    "chart-open",
    "chart-connect",
    "chart-memory",
    "chart-memory-conns",
    "chart-wave",
    "chart-broadcasts",
    "chart-echo",
];

/// Read `/events` at `addr` until the `done` event (or the stream ends).
fn read_events(addr: &str) -> Vec<serde_json::Value> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut events = Vec::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        let done = event["kind"] == "done";
        events.push(event);
        if done {
            break;
        }
    }
    events
}

/// One small bench (room and echo on epoll, 5 phases) with `--ui`: a script
/// reads every event, and Chromium watches the page as it runs.
#[test]
fn a_bench_is_watched_live_by_a_script_and_in_a_real_browser() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "bench",
            "--backends",
            "epoll",
            "--conns",
            "2000",
            "--samples",
            "1",
        ])
        .args([
            "--measure",
            "room,echo",
            "--echo-conns",
            "200",
            "--echo-duration",
            "1s",
        ])
        .args([
            "--broadcasts",
            "3",
            "--no-write",
            "--ui",
            "127.0.0.1:0",
            "--ui-linger",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanout bench starts");
    let (mut stderr, addr) = ui_address(&mut bench);
    let bench = Lingering(bench);
    // Keep reading stderr, so the bench never waits on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let script = {
        let addr = addr.clone();
        std::thread::spawn(move || read_events(&addr))
    };
    let watched = watch_in_browser(&addr);
    let events = script.join().unwrap();
    // The bench lingers for the page: this test has what it needs.
    drop(bench);
    let _ = drain.join();
    check_events(&events);
    if let Err(reason) = watched {
        eprintln!("SKIPPED the browser half of the live bench test: {reason}");
    }
}

/// What a script reading /events sees: the plan, then each of the five
/// phases begun and done in order, with the server's memory sampled, the
/// room's checkpoints, each broadcast's latencies and the echo's figures,
/// then the table, then the end.
fn check_events(events: &[serde_json::Value]) {
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"plan"), "{kinds:?}");
    assert_eq!(events[0]["phases"], 5);
    assert_eq!(kinds.last(), Some(&"done"));
    let phases: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["kind"] == "phase" || e["kind"] == "phase_done")
        .map(|e| (e["index"].as_u64().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    let expected: Vec<(u64, &str)> = (1..=5)
        .flat_map(|i| [(i, "phase"), (i, "phase_done")])
        .collect();
    assert_eq!(phases, expected);
    let server_samples = events.iter().filter(|e| e["kind"] == "server").count();
    assert!(server_samples >= 5, "{server_samples} server samples");
    assert!(events
        .iter()
        .filter(|e| e["kind"] == "server")
        .all(|e| e["rss"].as_u64() > Some(0) && e["slab"].as_u64() > Some(0)));
    let checkpoints: Vec<(u64, bool)> = events
        .iter()
        .filter(|e| e["kind"] == "memory")
        .map(|e| (e["open"].as_u64().unwrap(), e["heap"].as_u64().is_some()))
        .collect();
    assert_eq!(checkpoints, [(1000, true), (2000, true)]);
    let done: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "phase_done")
        .collect();
    let broadcasts = done[1]["load"]["broadcasts"].as_array().unwrap();
    assert_eq!(
        (done[1]["who"].as_str(), broadcasts.len()),
        (Some("epoll"), 3)
    );
    for b in broadcasts {
        assert_eq!(b["deliveries"], 2000);
        let [first, p50, p99, last] =
            ["first_ms", "p50_ms", "p99_ms", "last_ms"].map(|k| b[k].as_f64().unwrap());
        assert!(first <= p50 && p50 <= p99 && p99 <= last, "{b}");
    }
    for echo in &done[2..] {
        let e = &echo["load"]["echo"];
        assert!(e["msgs_per_s"].as_f64() > Some(0.0), "{echo}");
        assert!(e["p50_ms"].as_f64() <= e["p99_ms"].as_f64(), "{echo}");
    }
    let ramps = events
        .iter()
        .filter(|e| e["kind"] == "load" && e["stage"] == "ramp")
        .count();
    assert!(ramps > 0);
    let table = events.iter().find(|e| e["kind"] == "table").unwrap();
    assert!(table["text"].as_str().unwrap().contains("echo"), "{table}");
}

/// Chromium opens the page while the bench runs, watches the phase shown
/// move on until `done`, then checks every chart has points, the tables
/// their rows and the console is clean, and takes a screenshot.
fn watch_in_browser(addr: &str) -> Result<(), String> {
    let mut browser = browser::Browser::launch()?;
    let tab = browser.open(&format!("http://{addr}/"));
    let mut shown: Vec<String> = Vec::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let now = browser.eval(&tab, "document.getElementById('progress-text').textContent + '|' + document.getElementById('stage').textContent");
        let now = now.as_str().unwrap_or_default().to_string();
        let (progress, stage) = now.split_once('|').unwrap_or_default();
        if progress.starts_with("phase") && shown.last().map(String::as_str) != Some(progress) {
            shown.push(progress.to_string());
        }
        if stage.starts_with("done") {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the page never said done: {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(shown.len() >= 3, "the phase shown moved on only {shown:?}");
    let numbers: Vec<u64> = shown
        .iter()
        .map(|p| p.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
    // Drawing happens on the next animation frame.
    let charts = browser.wait_for(
        &tab,
        "every chart has data points",
        "JSON.stringify([...document.querySelectorAll('figure.chart')].map(f => [f.id, +f.dataset.points]))",
        std::time::Duration::from_secs(10),
        |v| {
            let list: Vec<(String, u64)> = serde_json::from_str(v.as_str().unwrap()).unwrap();
            list.len() == CHARTS.len() && list.iter().all(|(_, n)| *n > 0)
        },
    );
    let list: Vec<(String, u64)> = serde_json::from_str(charts.as_str().unwrap()).unwrap();
    assert_eq!(
        list.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        CHARTS
    );
    let mut rows = |table: &str| {
        browser
            .eval(
                &tab,
                &format!("document.querySelectorAll('#{table} tbody tr').length"),
            )
            .as_u64()
            .unwrap()
    };
    let (phases, broadcasts, echoes) = (
        rows("phase-table"),
        rows("broadcast-table"),
        rows("echo-table"),
    );
    assert_eq!(
        (phases, broadcasts, echoes),
        (5, 6, 3),
        "floor and epoll broadcast 3 each; 3 echo phases"
    );
    let report = browser.eval(&tab, "document.getElementById('report').textContent");
    assert!(report.as_str().unwrap().contains("closed-loop"), "{report}");
    let height = browser.eval(&tab, "document.documentElement.scrollHeight");
    let height = height.as_u64().unwrap() as u32;
    browser.screenshot(&tab, &browser::screenshot_path("live-bench.png"), height);
    let errors = browser.errors(&tab);
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    Ok(())
}

/// `fanout ceiling --ui`: its plan and one phase, the ramp's samples, the
/// server's memory, the phase's figures, then the diagnosis as the end.
#[test]
fn a_ceiling_is_watched_live() {
    let mut ceiling = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["ceiling", "--up-to", "300", "--rate", "600"])
        .args(["--ui", "127.0.0.1:0", "--ui-linger", "30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanout ceiling starts");
    let (_stderr, addr) = ui_address(&mut ceiling);
    let ceiling = Lingering(ceiling);
    let events = read_events(&addr);
    drop(ceiling);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["plan", "phase"], "{kinds:?}");
    assert_eq!(events[0]["tool"], "ceiling");
    assert!(
        kinds.contains(&"server") && kinds.contains(&"load"),
        "{kinds:?}"
    );
    let most_open = events.iter().filter_map(|e| e["open"].as_u64()).max();
    assert_eq!(most_open, Some(300));
    let done = events.iter().find(|e| e["kind"] == "phase_done").unwrap();
    assert_eq!(done["load"]["opened"], 300);
    let report = events.last().unwrap()["report"].as_str().unwrap();
    assert!(report.contains("ceiling: 300 connections held"), "{report}");
}
