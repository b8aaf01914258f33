//! `fanout load` end to end at small scale: every scenario against
//! `fanout serve` (WebSocket and raw TCP) and against the tokio-tungstenite
//! reference server in examples/, checking the JSON report's accounting.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use fanout::load::report::Report;

/// Run `fanout load ARGS --json FILE` (ARGS split on spaces) and parse the report.
fn load(args: &str) -> Report {
    let args: Vec<&str> = args.split_whitespace().collect();
    let dir = std::env::temp_dir().join(format!("fanout-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{}.json", args.join("_").replace(['/', ':'], "-")));
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("load")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.starts_with("fanout load "),
        "text report printed: {text}"
    );
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    report
}

fn assert_all_opened(report: &Report, conns: u64) {
    let c = &report.connect;
    assert_eq!((c.opened, c.failed), (conns, 0), "{:?}", c.failures);
    assert_eq!(c.timeline.iter().sum::<u64>(), conns);
    assert_eq!(c.latency.count, conns);
    assert!(c.latency.p50_us > 0.0 && c.latency.p50_us <= c.latency.max_us);
    assert!(c.rate_per_s > 0.0);
}

#[test]
fn hold_opens_every_connection_and_keeps_it() {
    let server = Server::start(&[]);
    let url = server.url("/room");
    let report = load(&format!("hold --url {url} --conns 300 --duration 200ms"));
    assert_all_opened(&report, 300);
    assert_eq!(report.connect.alive_at_end, 300);
    assert_eq!(report.connect.closed_by_server, 0);
    assert!(report.broadcast.is_none() && report.echo.is_none() && report.churn.is_none());
    assert!(report.client.cpu_share > 0.0 && report.client.cpu_share <= 1.0);
}

#[test]
fn broadcast_reaches_every_member_exactly_once() {
    let server = Server::start(&["--shards", "2"]);
    let url = server.url("/room");
    let report = load(&format!(
        "broadcast --url {url} --conns 200 --count 5 --interval 20ms"
    ));
    assert_all_opened(&report, 200);
    let b = report.broadcast.expect("broadcast section");
    assert_eq!((b.members, b.messages_sent), (200, 5));
    assert_eq!(
        (b.tally.delivered, b.tally.missing, b.tally.duplicated),
        (1000, 0, 0)
    );
    assert_eq!(b.per_message.len(), 5);
    for m in &b.per_message {
        assert_eq!(m.deliveries, 200);
        assert!(m.first_us <= m.p50_us && m.p50_us <= m.p99_us && m.p99_us <= m.last_us);
    }
    let (stats, _) = server.stop();
    assert_eq!(stats.totals.delivered, 1000);
}

#[test]
fn sustained_broadcast_publishes_at_its_rate() {
    let server = Server::start(&[]);
    let url = server.url("/room");
    let report = load(&format!(
        "broadcast --url {url} --conns 50 --send-rate 100 --duration 300ms"
    ));
    let b = report.broadcast.expect("broadcast section");
    // 100/s for 0.3 s: 30 messages, every one to every member.
    assert_eq!(b.messages_sent, 30);
    assert_eq!(
        (b.tally.delivered, b.tally.missing, b.tally.duplicated),
        (1500, 0, 0)
    );
    assert_eq!(b.latency.count, 1500);
}

#[test]
fn echo_closed_and_open_loop() {
    let server = Server::start(&[]);
    let url = server.url("/echo");
    let closed = load(&format!(
        "echo --url {url} --conns 20 --window 4 --duration 300ms --size 100"
    ));
    assert_all_opened(&closed, 20);
    let e = closed.echo.expect("echo section");
    assert!(e.messages > 0 && e.latency.count == e.messages);
    assert_eq!(e.bytes, e.messages * 100);
    assert!(e.send_lag.is_none());
    let open = load(&format!(
        "echo --url {url} --conns 20 --send-rate 50 --duration 400ms"
    ));
    let e = open.echo.expect("echo section");
    // 20 connections × 50/s × 0.4 s = 400 due. Never more (the rate holds);
    // fewer only by replies still in flight at the end, or a starved client
    // on a busy machine, so the lower bound is loose.
    assert!((200..=440).contains(&e.messages), "{} echoes", e.messages);
    assert!(e.send_lag.expect("open-loop reports its lag").count >= e.messages);
}

#[test]
fn churn_opens_echoes_and_closes() {
    let server = Server::start(&[]);
    let url = server.url("/echo");
    let report = load(&format!("churn --url {url} --rate 400 --duration 500ms"));
    let churn = report.churn.expect("churn section");
    assert!(churn.completed >= 100, "{} cycles", churn.completed);
    assert!(churn.setup.count >= churn.completed);
    assert!(churn.total.p50_us >= churn.setup.p50_us);
    server.wait_for_stats("churned connections to be gone", |s| s.open == 0);
}

#[test]
fn raw_tcp_hold_broadcast_and_echo() {
    let server = Server::start(&["--proto", "tcp"]);
    let url = format!("tcp://{}", server.addr);
    assert_all_opened(
        &load(&format!("hold --url {url} --conns 50 --duration 100ms")),
        50,
    );
    let b = load(&format!(
        "broadcast --url {url} --conns 50 --count 3 --interval 20ms"
    ));
    assert_eq!(b.broadcast.unwrap().tally.delivered, 150);
    let e = load(&format!("echo --url {url} --conns 10 --duration 200ms"));
    assert!(e.echo.unwrap().messages > 0);
}

#[test]
fn failures_are_counted_by_cause() {
    // A port nobody listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let report = load(&format!("hold --url {url} --conns 20 --duration 100ms"));
    assert_eq!(report.connect.opened, 0);
    assert_eq!(report.connect.failures.get("refused"), Some(&20));
    assert!(report
        .client
        .warnings
        .iter()
        .any(|w| w.contains("20 connections failed")));
    // A path the server refuses: the HTTP status is the cause.
    let server = Server::start(&[]);
    let report = load(&format!(
        "hold --url {} --conns 5 --duration 100ms",
        server.url("/nope")
    ));
    assert_eq!(report.connect.failures.get("http 404"), Some(&5));
}

#[test]
fn bad_load_arguments_are_clear_errors() {
    for (args, says) in [
        (&["hold", "--url", "http://127.0.0.1:1/"][..], "ws://"),
        (&["hold", "--url", "ws://10.1.2.3:80/"], "loopback"),
        (&["churn", "--url", "ws://127.0.0.1:1/"], "--rate"),
        (&["hold", "--conns", "0"], "--conns"),
        (
            &["hold", "--conns", "100000", "--source", "127.0.0.2"],
            "source addresses",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .arg("load")
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// The tokio-tungstenite reference server from examples/, built by `cargo test`.
struct Reference {
    child: Child,
    addr: String,
}

impl Reference {
    fn start() -> Reference {
        let fanout = PathBuf::from(env!("CARGO_BIN_EXE_fanout"));
        let binary = fanout
            .parent()
            .unwrap()
            .join("examples")
            .join("reference_server");
        let mut child = Command::new(&binary)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr = line
            .trim()
            .strip_prefix("ready ")
            .expect("ready line")
            .to_string();
        Reference { child, addr }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn works_against_the_tokio_tungstenite_reference_server() {
    let reference = Reference::start();
    let url = format!("ws://{}", reference.addr);
    let b = load(&format!(
        "broadcast --url {url} --conns 100 --count 3 --interval 20ms"
    ));
    assert_all_opened(&b, 100);
    let tally = b.broadcast.unwrap().tally;
    assert_eq!(
        (tally.delivered, tally.missing, tally.duplicated),
        (300, 0, 0)
    );
    let e = load(&format!("echo --url {url} --conns 10 --duration 200ms"));
    assert!(e.echo.unwrap().messages > 0);
}
