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
    load_report(&args).0
}

fn assert_all_opened(report: &Report, conns: u64) {
    let c = &report.connect;
    assert_eq!((c.opened, c.failed), (conns, 0), "{:?}", c.failures);
    assert_eq!(c.timeline.iter().sum::<u64>(), conns);
    assert_eq!(c.latency.count, conns);
    assert!(c.latency.min_us <= c.latency.p50_us && c.latency.p50_us <= c.latency.max_us);
    assert!((c.rate_per_s - conns as f64 / c.ramp_seconds).abs() < 1e-6);
}

#[test]
fn hold_opens_every_connection_and_keeps_it() {
    let server = Server::start(Backend::Epoll, &[]);
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
    let server = Server::start(Backend::Epoll, &["--shards", "2"]);
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
    assert_eq!(
        (b.last_delivery_us.n, b.members_closed, b.timed_out),
        (5, 0, 0)
    );
    assert_eq!(b.tally.accounted(), 5 * 200);
    assert!(b.mode.starts_with("one at a time"), "{}", b.mode);
    for m in &b.per_message {
        assert_eq!(m.deliveries, 200);
        assert!(m.first_us <= m.p50_us && m.p50_us <= m.p99_us && m.p99_us <= m.last_us);
    }
    let (stats, _) = server.stop();
    assert_eq!(stats.totals.delivered, 1000);
}

#[test]
fn more_broadcasts_than_per_message_tables_still_report_every_message() {
    let server = Server::start(Backend::Epoll, &[]);
    let url = server.url("/room");
    let report = load(&format!(
        "broadcast --url {url} --conns 20 --count 150 --interval 0ms"
    ));
    let b = report.broadcast.expect("broadcast section");
    assert_eq!(b.messages_sent, 150);
    assert_eq!(b.tally.delivered, 150 * 20);
    // Percentiles per message only for the first 100; exact first and last
    // delivery for every one of them.
    assert!(b.per_message.is_empty());
    assert_eq!((b.first_delivery_us.n, b.last_delivery_us.n), (150, 150));
    assert!(b.first_delivery_us.median <= b.last_delivery_us.median);
    assert!(b.delivery_seconds > 0.0 && b.delivery_seconds <= b.seconds);
}

/// A room server written here, independent of fanout's: the floor wire
/// (one greeting byte, then length-prefixed messages), misbehaving by
/// script. Of the members other than the publisher, the first never gets
/// message 1 (a gap), the second never gets the last message though its
/// connection stays open (in flight), the third is closed after message 0.
fn scripted_room(members: usize, messages: u64) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut conns: Vec<Option<std::net::TcpStream>> = (0..members)
            .map(|_| {
                let (mut stream, _) = listener.accept().unwrap();
                stream
                    .write_all(&[fanout::protocol::bare::GREETING])
                    .unwrap();
                stream.set_nonblocking(true).unwrap();
                Some(stream)
            })
            .collect();
        let mut inbox = vec![Vec::new(); members];
        let mut roles: Option<[usize; 3]> = None;
        let deadline = std::time::Instant::now() + PATIENCE * 2;
        while std::time::Instant::now() < deadline && conns.iter().any(Option::is_some) {
            for i in 0..members {
                let mut chunk = [0u8; 4096];
                let Some(stream) = conns[i].as_mut() else {
                    continue;
                };
                match stream.read(&mut chunk) {
                    Ok(0) => conns[i] = None,
                    Ok(n) => inbox[i].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => conns[i] = None,
                }
                while let Ok(Some((payload, len))) =
                    fanout::protocol::tcp::decode(&inbox[i], 1 << 20)
                {
                    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
                    let message = inbox[i][..len].to_vec();
                    inbox[i].drain(..len);
                    let [gap, held, closed] = *roles.get_or_insert_with(|| {
                        let others: Vec<usize> = (0..members).filter(|&m| m != i).collect();
                        [others[0], others[1], others[2]]
                    });
                    for (m, conn) in conns.iter_mut().enumerate() {
                        let skip = (m == gap && seq == 1) || (m == held && seq == messages - 1);
                        if let (Some(stream), false) = (conn.as_mut(), skip) {
                            stream.set_nonblocking(false).unwrap();
                            let _ = stream.write_all(&message);
                            stream.set_nonblocking(true).unwrap();
                        }
                        if m == closed && seq == 0 {
                            *conn = None;
                        }
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    addr
}

#[test]
fn late_lost_and_closed_deliveries_are_told_apart() {
    let addr = scripted_room(10, 3);
    let report = load(&format!(
        "broadcast --url bare://{addr} --conns 10 --count 3 --interval 10ms --drain 1s"
    ));
    assert_eq!(report.connect.opened, 10);
    assert_eq!(report.connect.closed_by_server, 1);
    let b = report.broadcast.expect("broadcast section");
    assert_eq!((b.members, b.messages_sent, b.members_closed), (10, 3, 1));
    let t = b.tally;
    // 7 members got all 3; the gap member 2, the held one 2, the closed one 1.
    assert_eq!(t.delivered, 7 * 3 + 2 + 2 + 1);
    assert_eq!(
        (t.missing, t.in_flight, t.closed, t.duplicated),
        (1, 1, 2, 0)
    );
    assert_eq!(t.accounted(), 3 * 10);
    // Message 1 (the gap) and message 2 (held back) never reached everyone.
    assert_eq!(b.timed_out, 2);
    let warnings = report.client.warnings.join("\n");
    assert!(
        warnings.contains("1 deliveries were still in flight"),
        "{warnings}"
    );
    assert!(
        warnings.contains("1 deliveries missing, 2 lost with 1 members"),
        "{warnings}"
    );
}

#[test]
fn sustained_broadcast_publishes_at_its_rate() {
    let server = Server::start(Backend::Epoll, &[]);
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
    let server = Server::start(Backend::Epoll, &[]);
    let url = server.url("/echo");
    let closed = load(&format!(
        "echo --url {url} --conns 20 --window 4 --duration 300ms --size 100"
    ));
    assert_all_opened(&closed, 20);
    let e = closed.echo.expect("echo section");
    assert!(e.messages > 0 && e.latency.count == e.messages);
    assert_eq!(e.conns, 20);
    assert!((e.msgs_per_s - e.messages as f64 / e.seconds).abs() < 1e-6);
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
    let server = Server::start(Backend::Epoll, &[]);
    let url = server.url("/echo");
    let report = load(&format!("churn --url {url} --rate 400 --duration 500ms"));
    let churn = report.churn.expect("churn section");
    assert!(churn.completed >= 100, "{} cycles", churn.completed);
    assert!(churn.setup.count >= churn.completed);
    assert!(churn.total.p50_us >= churn.setup.p50_us);
    assert_eq!(churn.dropped, 0, "nothing near the bound");
    assert!(churn.arrivals >= churn.completed);
    server.wait_for_stats("churned connections to be gone", |s| s.open == 0);
}

#[test]
fn churn_past_its_bound_drops_arrivals_instead_of_failing_them() {
    let server = Server::start(Backend::Epoll, &[]);
    let url = server.url("/echo");
    // Far more arrivals than one cycle in flight at a time can carry.
    let report = load(&format!(
        "churn --url {url} --rate 20000 --duration 500ms --max-inflight 1 --shards 1"
    ));
    let churn = report.churn.clone().expect("churn section");
    assert_eq!(churn.max_inflight_per_shard, 1);
    assert!(churn.completed > 0, "{churn:?}");
    assert!(churn.dropped > 0, "{churn:?}");
    assert_eq!(churn.failed, 0, "{:?}", report.connect.failures);
    assert!(
        churn.dropped + churn.completed <= churn.arrivals,
        "{churn:?}"
    );
    assert!(
        report
            .client
            .warnings
            .iter()
            .any(|w| w.contains("churn arrivals were dropped")),
        "{:?}",
        report.client.warnings
    );
    let text = report.text();
    assert!(text.contains("churn at 20000 connections/s"), "{text}");
    assert!(
        !text.contains("\nconnect "),
        "no hold block for churn: {text}"
    );
    server.wait_for_stats("churned connections to be gone", |s| s.open == 0);
}

#[test]
fn raw_tcp_hold_broadcast_and_echo() {
    let server = Server::start(Backend::Epoll, &["--proto", "tcp"]);
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
    let server = Server::start(Backend::Epoll, &[]);
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
        (&["burst", "--url", "ws://127.0.0.1:1/"], "--burst K"),
        (&["burst", "--burst", "0"], "at least 1"),
        (&["hold", "--burst", "10"], "burst scenario"),
        (&["broadcast", "--publish-burst", "0"], "at least 1"),
        (&["echo", "--publish-burst", "5"], "--publish-burst belongs"),
        (&["hold", "--agents", "2"], "--coordinator"),
        (
            &[
                "hold",
                "--coordinator",
                "redis://127.0.0.1:1",
                "--agents",
                "0",
            ],
            "--agents",
        ),
        (
            &[
                "hold",
                "--url",
                "ws://127.0.0.1:1",
                "--url",
                "tcp://127.0.0.1:2",
            ],
            "same scheme",
        ),
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
        assert_eq!(output.status.code(), Some(2), "{args:?}");
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

/// A storm of client resets against a server that admits 2,000 upgrades a
/// second: the 400 connections come back with backoff, the refused ones
/// (503) are retried, and the report accounts for every attempt.
#[test]
fn a_storm_of_resets_comes_back_with_backoff_through_the_servers_503s() {
    let server = Server::start(Backend::Epoll, &["--accept-rate", "2000"]);
    let url = server.url("/echo");
    let report = load(&format!(
        "storm --url {url} --conns 400 --rate 1000 --duration 20s --backoff 20ms,400ms"
    ));
    let storm = report.storm.as_ref().expect("a storm section");
    assert_eq!(storm.cause, "reset by the client");
    assert_eq!((storm.open_before, storm.lost, storm.back), (400, 400, 400));
    assert!(storm.all_back_seconds.is_some(), "{storm:?}");
    assert_eq!(storm.attempts, storm.back + storm.failed_attempts);
    assert_eq!(storm.setup.count, 400);
    assert_eq!((storm.gave_up, storm.waiting_at_end), (0, 0));
    assert_eq!(report.connect.alive_at_end, 400);
    let refused = report
        .connect
        .failures
        .get("http 503")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        refused, storm.failed_attempts,
        "{:?}",
        report.connect.failures
    );
    let stats = server.stats();
    assert_eq!(stats.totals.rejected_accept_rate, refused);
    assert!(
        refused > 0,
        "400 at once against a 200-token bucket: some refused"
    );
    let last = storm.curve.last().unwrap();
    assert_eq!(last[1], 400.0);
    assert!(
        report.client.warnings.iter().all(|w| !w.contains("failed")),
        "{:?}",
        report.client.warnings
    );
}

/// Several servers: connections are spread by --balance and each server's
/// share is reported, matching what each server counted.
#[test]
fn connections_spread_over_several_servers_by_each_balance() {
    let servers: Vec<Server> = (0..3).map(|_| Server::start(Backend::Epoll, &[])).collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("--url {}", s.url("/echo")))
        .collect();
    let mut accepted_before = [0u64; 3];
    for balance in ["round-robin", "least-conn", "random", "p2c"] {
        let report = load(&format!(
            "hold {} --conns 300 --shards 2 --duration 100ms --balance {balance}",
            urls.join(" ")
        ));
        assert_eq!(report.balance.as_deref(), Some(balance));
        assert_eq!(report.servers.len(), 3);
        let opened: Vec<u64> = report.servers.iter().map(|s| s.opened).collect();
        assert_eq!(opened.iter().sum::<u64>(), 300, "{balance}: {opened:?}");
        if matches!(balance, "round-robin" | "least-conn") {
            assert_eq!(opened, [100, 100, 100], "{balance}");
        } else {
            assert!(opened.iter().all(|&n| n >= 40), "{balance}: {opened:?}");
        }
        for (i, server) in servers.iter().enumerate() {
            let accepted = server.stats().totals.upgraded;
            assert_eq!(
                accepted - accepted_before[i],
                opened[i],
                "{balance}, server {i}"
            );
            accepted_before[i] = accepted;
            assert_eq!(report.servers[i].url, server.url("/echo"));
        }
    }
}

/// Start `agents` processes of `fanout load ARGS` at once, each writing its
/// JSON report; wait for all and return their reports, in start order.
fn run_agents(agents: usize, args: &[&str]) -> Vec<Report> {
    let started: Vec<(Child, PathBuf)> = (0..agents)
        .map(|i| {
            let json =
                std::env::temp_dir().join(format!("fanout-agent-{}-{i}.json", std::process::id()));
            let child = Command::new(env!("CARGO_BIN_EXE_fanout"))
                .arg("load")
                .args(args)
                .arg("--json")
                .arg(&json)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            (child, json)
        })
        .collect();
    started
        .into_iter()
        .map(|(mut child, json)| {
            assert!(child.wait().unwrap().success());
            let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            std::fs::remove_file(json).unwrap();
            report
        })
        .collect()
}

/// Two load agents meet in a real redis-server and start together; each
/// opens its half, and the first merges both: the merged counts are the sum
/// of the two agents' own reports, the merged histograms hold every value,
/// and the server saw every connection.
#[test]
fn two_agents_make_one_load_merged_by_the_first() {
    let Some(redis) = redis_or_skip("two_agents_make_one_load") else {
        return;
    };
    let server = Server::start(Backend::Epoll, &[]);
    let url = server.url("/echo");
    let reports = run_agents(
        2,
        &[
            "echo",
            "--url",
            &url,
            "--conns",
            "101",
            "--duration",
            "1s",
            "--coordinator",
            &redis.url(),
            "--agents",
            "2",
            "--run",
            "two-agents",
        ],
    );
    let merged: Vec<_> = reports.iter().filter_map(|r| r.agents.as_ref()).collect();
    assert_eq!(merged.len(), 1, "exactly one agent merges");
    let merged = merged[0];
    let opened: Vec<u64> = reports.iter().map(|r| r.connect.opened).collect();
    assert_eq!(opened.iter().sum::<u64>(), 101);
    assert!(opened.contains(&51) && opened.contains(&50), "{opened:?}");
    assert_eq!(
        (merged.agents, merged.hosts, merged.opened, merged.failed),
        (2, 1, 101, 0)
    );
    assert_eq!(merged.connect_latency.count, 101);
    let echoed: u64 = reports
        .iter()
        .map(|r| r.echo.as_ref().unwrap().messages)
        .sum();
    assert!(echoed > 0);
    assert_eq!(merged.echo_messages, echoed);
    assert_eq!(merged.echo_latency.unwrap().count, echoed);
    let slowest = reports
        .iter()
        .map(|r| r.connect.latency.max_us)
        .fold(0.0, f64::max);
    assert_eq!(merged.connect_latency.max_us, slowest);
    assert_eq!(server.stats().totals.upgraded, 101);
}

/// A broadcast over two agents: the first publishes, both hold members;
/// each agent tallies its own members and the merged report holds them
/// all, every message once to every member, latencies from one host.
#[test]
fn a_broadcast_over_two_agents_reaches_every_member_once() {
    let Some(redis) = redis_or_skip("a_broadcast_over_two_agents") else {
        return;
    };
    let server = Server::start(Backend::Epoll, &[]);
    let url = server.url("/room");
    let reports = run_agents(
        2,
        &[
            "broadcast",
            "--url",
            &url,
            "--conns",
            "60",
            "--count",
            "10",
            "--interval",
            "5ms",
            "--coordinator",
            &redis.url(),
            "--agents",
            "2",
            "--run",
            "broadcast-agents",
        ],
    );
    for report in &reports {
        let b = report
            .broadcast
            .as_ref()
            .expect("each agent's own broadcast section");
        assert_eq!((b.members, b.messages_sent), (30, 10));
        assert_eq!(
            (b.tally.delivered, b.tally.lost(), b.tally.duplicated),
            (300, 0, 0)
        );
    }
    let merged = reports
        .iter()
        .find_map(|r| r.agents.as_ref())
        .expect("a merged report");
    assert_eq!((merged.members, merged.messages_published), (60, 10));
    let tally = merged.tally.expect("a merged tally");
    assert_eq!(
        (tally.delivered, tally.lost(), tally.duplicated),
        (600, 0, 0)
    );
    assert_eq!(merged.delivery_latency.unwrap().count, 600);
    assert!(merged.clock.starts_with("one host"), "{}", merged.clock);
    assert_eq!(server.stats().totals.published, 10);
}

/// Publish bursts: 3 bursts of 200 messages, each published back to back
/// and the next only once every member has the whole burst; every message
/// reaches every member once, and each burst's time to the last member is
/// reported.
#[test]
fn publish_bursts_reach_every_member_whole() {
    let server = Server::start(Backend::Epoll, &["--shards", "2"]);
    let url = server.url("/room");
    let report = load(&format!(
        "broadcast --url {url} --conns 20 --count 3 --publish-burst 200 --interval 10ms"
    ));
    let b = report.broadcast.expect("broadcast section");
    assert_eq!((b.members, b.messages_sent), (20, 600));
    assert_eq!(
        (
            b.tally.delivered,
            b.tally.lost(),
            b.tally.duplicated,
            b.timed_out
        ),
        (600 * 20, 0, 0, 0)
    );
    assert!(b.mode.contains("bursts of 200"), "{}", b.mode);
    let bursts = b.burst_last_delivery_us.expect("a figure per burst");
    assert_eq!((bursts.n, b.last_delivery_us.n), (3, 600));
    // A burst is over when its slowest message is.
    assert_eq!(bursts.max, b.last_delivery_us.max);
    assert!(bursts.min >= b.last_delivery_us.min);
}

/// A burst against a server that admits 1,000 upgrades a second: its
/// bucket's tenth of a second admits the first ones and refuses the rest
/// with 503; every attempt is accounted for, on both sides, and the held
/// connections are unharmed.
#[test]
fn a_burst_past_the_accept_rate_is_refused_with_503_and_the_held_stay() {
    let server = Server::start(Backend::Epoll, &["--accept-rate", "1000"]);
    let url = server.url("/echo");
    let report = load(&format!(
        "burst --url {url} --conns 20 --rate 100 --burst 600 --duration 500ms"
    ));
    let burst = report.burst.as_ref().expect("a burst section");
    assert_eq!(
        (burst.size, burst.held, burst.held_open_at_end),
        (600, 20, 20)
    );
    assert!(burst.settled_seconds.is_some(), "{burst:?}");
    assert_eq!(burst.opened + burst.refused, 600, "{:?}", burst.failures);
    assert_eq!(burst.failures.get("http 503"), Some(&burst.refused));
    assert!(burst.opened > 0 && burst.refused > 0, "{burst:?}");
    assert_eq!(
        (burst.open_at_end, burst.setup.count),
        (burst.opened, burst.opened)
    );
    assert_eq!(server.stats().totals.rejected_accept_rate, burst.refused);
    // The held connections' ramp is reported apart.
    assert_eq!((report.connect.opened, report.connect.failed), (20, 0));
}

/// A burst into an accept queue of 8 (this test's own network namespace):
/// the server's kernel drops SYNs, the client sends them again a second
/// later, and the report says how many opened that way and shows the
/// kernel's counters.
#[test]
fn a_burst_past_the_accept_queue_shows_the_syns_sent_again() {
    in_new_netns("a_burst_past_the_accept_queue", || {
        if let Err(e) = std::fs::write("/proc/sys/net/core/somaxconn", "8") {
            eprintln!(
                "SKIPPED a_burst_past_the_accept_queue: setting this namespace's somaxconn: {e}"
            );
            return;
        }
        let server = Server::start(Backend::Epoll, &["--shards", "1"]);
        let url = server.url("/echo");
        // Some never get through: their last handshake ACK was dropped, so
        // they are open on the client's side only and wait for an answer
        // (tens of seconds, measured); --connect-timeout bounds the wait.
        let report = load(&format!(
            "burst --url {url} --conns 10 --burst 400 --duration 500ms --connect-timeout 3s"
        ));
        let burst = report.burst.as_ref().expect("a burst section");
        assert!(burst.settled_seconds.is_some(), "{burst:?}");
        let failed: u64 = burst.failures.values().sum();
        assert_eq!(burst.opened + failed, 400, "{:?}", burst.failures);
        assert_eq!(burst.refused, 0);
        assert!(burst.opened > 0 && burst.retransmitted > 0, "{burst:?}");
        assert!(burst.listen_overflows > 0, "{burst:?}");
        // A resent SYN waits for the kernel's first retransmit, a second.
        assert!(burst.setup.max_us > 900_000.0, "{:?}", burst.setup);
        assert_eq!(burst.held_open_at_end, 10);
    });
}

/// A storm the server causes: it drains (1001 to everyone) and a new server
/// takes its address; every client notices, retries while nobody listens
/// (refused) and comes back to the new one.
#[test]
fn a_storm_from_a_server_restart_comes_back_to_the_new_server() {
    let first = Server::start(Backend::Epoll, &[]);
    let addr = first.addr;
    let url = first.url("/echo");
    let storm = std::thread::spawn(move || {
        load(&format!(
            "storm --url {url} --conns 300 --duration 20s --storm-cause server --backoff 50ms,500ms"
        ))
    });
    first.wait_for_stats("every connection open", |s| s.open == 300);
    let (stats, _) = first.stop();
    assert_eq!(stats.totals.drain_goodbyes, 300);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.args(["serve", "--listen", &addr.to_string()]);
    let second = fanout::process::ServerProcess::spawn(command, PATIENCE).unwrap();
    let report = storm.join().unwrap();
    let storm = report.storm.as_ref().expect("a storm section");
    assert_eq!(storm.cause, "dropped by the server");
    // A client that came back while the old server drained was refused
    // (503), not admitted and told to go again: each lost exactly once.
    assert_eq!((storm.lost, storm.back), (300, 300), "{storm:?}");
    assert_eq!(report.connect.server_closes.get("1001"), Some(&300));
    assert!(
        report
            .connect
            .failures
            .get("refused")
            .is_some_and(|&n| n > 0),
        "{:?}",
        report.connect.failures
    );
    let (after, _) = second.stop().unwrap();
    assert_eq!(after.totals.upgraded, 300);
}
