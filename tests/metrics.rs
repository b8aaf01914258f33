//! `fanout serve --metrics`: scraped on every backend and read with two
//! independent parsers — the prometheus-parse crate, and Prometheus's own
//! `promtool check metrics` (Debian's `prometheus` package, which .ci/run
//! installs) — and the numbers match what the clients did; and the
//! allocator that gives memory back after a burst.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use tungstenite::Message;

/// Send `request` to the metrics address; the status line and the body.
fn http(server: &Server, request: &str) -> (String, String) {
    let response = http_response(server.metrics_addr(), request.as_bytes());
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn scrape(server: &Server) -> String {
    let (status, body) = http(server, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

/// Every sample by name (labels summed), as prometheus-parse reads them,
/// after checking every metric has HELP. A histogram reads as its count
/// (`name`), with `name_sum` and `name_count` as they are exposed.
fn parse(text: &str) -> HashMap<String, f64> {
    use prometheus_parse::Value;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse reads it");
    let mut values: HashMap<String, f64> = HashMap::new();
    for sample in &scrape.samples {
        let value = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => {
                let last = buckets.last().expect("buckets");
                assert_eq!(last.less_than, f64::INFINITY, "{}", sample.metric);
                last.count
            }
            other => panic!("{}: {other:?} is not ours", sample.metric),
        };
        let family = sample
            .metric
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            scrape.docs.contains_key(family),
            "{} has HELP",
            sample.metric
        );
        *values.entry(sample.metric.clone()).or_default() += value;
    }
    values
}

/// Scrape until `settled` holds (a counter is bumped just after the reply
/// the client already read), at most a few seconds; the last scrape.
fn scrape_until(server: &Server, settled: impl Fn(&HashMap<String, f64>) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape(server);
        if settled(&parse(&text)) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `promtool check metrics` on the text: its parser and its lint rules.
fn promtool_accepts(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED the promtool check: promtool is not installed (Debian: apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of `metric` with `label="value"`, as prometheus-parse reads it.
fn labeled(text: &str, metric: &str, label: &str, value: &str) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse reads it");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get(label) == Some(value))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{other:?}"),
        })
        .unwrap_or_else(|| panic!("no {metric}{{{label}=\"{value}\"}} in {text}"))
}

every_backend! {
    /// Closes by the code the server sent, the client's own closes, and
    /// messages both ways.
    fn closes_are_counted_by_code_and_messages_both_ways(backend: Backend) {
        let server = Server::start(backend, &["--metrics", "127.0.0.1:0", "--idle-timeout", "1s"]);
        let mut bad = RawWs::connect(&server, "/echo");
        bad.send(&raw_frame(0x81, &[b'a', 0xFF]));
        assert_eq!(bad.expect_close(), 1007);
        let mut polite = ws_connect(&server, "/echo");
        assert_echo(&mut polite, Message::text("x"));
        polite.close(None).unwrap();
        while polite.read().is_ok() {}
        let mut silent = RawWs::connect(&server, "/echo");
        assert_eq!(silent.expect_close(), 1001);
        let text = scrape_until(&server, |m| {
            m["fanout_idle_timeouts_total"] == 1.0 && m["fanout_peer_closes_total"] == 1.0
        });
        promtool_accepts(&text);
        assert_eq!(labeled(&text, "fanout_closes_total", "code", "1007"), 1.0, "{text}");
        assert_eq!(labeled(&text, "fanout_closes_total", "code", "1001"), 1.0, "{text}");
        assert_eq!(labeled(&text, "fanout_closes_total", "code", "1002"), 0.0, "{text}");
        assert_eq!(labeled(&text, "fanout_closes_total", "code", "1013"), 0.0, "{text}");
        let m = parse(&text);
        assert_eq!(m["fanout_peer_closes_total"], 1.0, "{text}");
        assert_eq!(m["fanout_messages_received_total"], 1.0, "{text}");
        assert_eq!(m["fanout_messages_sent_total"], 1.0, "{text}");
    }

    /// Every byte both ways, counted exactly (an echo and a room of two),
    /// and a handshake and a broadcast observation in the histograms.
    fn bytes_both_ways_and_durations_are_counted(backend: Backend) {
        let server = Server::start(backend, &["--metrics", "127.0.0.1:0"]);
        let (mut sent, mut received) = (0usize, 0usize);
        let mut clients = Vec::new();
        for path in ["/echo", "/room", "/room"] {
            let mut client = tcp_connect(server.addr);
            let request = upgrade_request(path);
            client.write_all(request.as_bytes()).unwrap();
            sent += request.len();
            let mut raw = RawWs::from_stream(client);
            received += raw.read_http_head().len();
            clients.push(raw);
        }
        server.wait_for_stats("two room members", |s| s.totals.upgraded == 3);
        for (client, text) in [(0, &b"hello"[..]), (1, b"to the room")] {
            let frame = raw_frame(0x81, text);
            clients[client].send(&frame);
            sent += frame.len();
        }
        for client in &mut clients {
            let (opcode, payload) = client.read_frame().expect("a frame");
            assert_eq!(opcode, 0x1);
            received += 2 + payload.len();
        }
        let text = scrape_until(&server, |m| {
            m["fanout_bytes_sent_total"] == received as f64
                && m["fanout_broadcast_duration_seconds_count"] >= 1.0
        });
        promtool_accepts(&text);
        let m = parse(&text);
        assert_eq!(m["fanout_bytes_received_total"], sent as f64, "{text}");
        assert_eq!(m["fanout_bytes_sent_total"], received as f64, "{text}");
        assert_eq!(m["fanout_handshake_duration_seconds_count"], 3.0, "{text}");
        assert_eq!(m["fanout_handshake_duration_seconds"], 3.0, "{text}");
        // One message: one observation per shard with members (two at
        // most), or one for the task backends' single room.
        let broadcasts = m["fanout_broadcast_duration_seconds_count"];
        assert!((1.0..=2.0).contains(&broadcasts), "{text}");
        assert!(m["fanout_broadcast_duration_seconds_sum"] < 1.0, "{text}");
    }

    fn metrics_count_what_the_clients_did(backend: Backend) {
        let server = Server::start(backend, &["--metrics", "127.0.0.1:0"]);
        let before = parse(&scrape(&server));
        assert_eq!(before["fanout_open_connections"], 0.0);
        let mut clients: Vec<Ws> = (0..3).map(|_| ws_connect(&server, "/echo")).collect();
        assert_echo(&mut clients[0], Message::Text("hello".into()));
        let text = scrape_until(&server, |m| {
            m["fanout_upgraded_total"] == 3.0 && m["fanout_echoed_total"] == 1.0
        });
        promtool_accepts(&text);
        let after = parse(&text);
        assert_eq!(after["fanout_accepted_total"], 3.0, "{text}");
        assert_eq!(after["fanout_upgraded_total"], 3.0, "{text}");
        assert_eq!(after["fanout_open_connections"], 3.0, "{text}");
        assert_eq!(after["fanout_echoed_total"], 1.0, "{text}");
        // Three sockets more in the fd tables than before (summed over the
        // tables a shared table is counted once per shard, so at least).
        assert!(
            after["fanout_fd_table_fds"] >= before["fanout_fd_table_fds"] + 3.0,
            "{text}"
        );
        assert!(after["fanout_fd_table_limit"] > 0.0);
        assert!(after["fanout_resident_memory_bytes"] > 0.0);
        drop(clients);
    }

    fn the_metrics_address_answers_bad_requests_with_their_status(backend: Backend) {
        let server = Server::start(backend, &["--metrics", "127.0.0.1:0"]);
        let (status, _) = http(&server, "GET /other HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _) = http(&server, "POST /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        let (status, _) = http(&server, "hello\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        // The server's own connections are unharmed.
        assert_echo(&mut ws_connect(&server, "/echo"), Message::Text("still".into()));
        let text = scrape_until(&server, |m| m["fanout_echoed_total"] == 1.0);
        assert_eq!(parse(&text)["fanout_echoed_total"], 1.0, "{text}");
    }

    fn freed_memory_is_purged_by_a_background_thread(backend: Backend) {
        // jemalloc purges by decay on a thread of its own, so a server that
        // goes quiet after a burst gives its pages back (the curve:
        // results/2026-11-29-vm/memory-after-burst.txt). One thread, named
        // by jemalloc.
        let server = Server::start(backend, &[]);
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        let purgers = names.iter().filter(|n| *n == "jemalloc_bg_thd").count();
        assert_eq!(purgers, 1, "{names:?}");
    }
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", &addr])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains(&format!("--metrics: cannot listen on {addr}")),
        "{said}"
    );
}
