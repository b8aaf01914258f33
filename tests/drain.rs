//! The drain on every backend: the first SIGTERM tells every open client to
//! go (WebSocket close 1001, TCP our FIN) spread over --drain-time, each
//! close counted clean or cut and summed up in the last line; a second
//! SIGTERM stops at once.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use fanout::protocol::tcp;
use tungstenite::Message;

/// A tungstenite client that reads until the server's close, answers it
/// (tungstenite does) and sees the connection end; returns the close code
/// and when it came, counted from `since` (set before the signal).
fn await_goodbye(mut ws: Ws, since: Arc<OnceLock<Instant>>) -> (u16, Duration) {
    loop {
        match ws.read().expect("read until the close") {
            Message::Close(Some(frame)) => {
                let at = since.get().expect("signalled before").elapsed();
                // tungstenite has queued the answer; reading sends it and
                // then sees the server hang up.
                loop {
                    match ws.read() {
                        Ok(_) => continue,
                        Err(tungstenite::Error::ConnectionClosed) => break,
                        Err(error) => panic!("after the close: {error}"),
                    }
                }
                return (u16::from(frame.code), at);
            }
            Message::Close(None) => panic!("a close without a code"),
            _ => continue,
        }
    }
}

fn drain_line(lines: &[String]) -> &str {
    lines
        .iter()
        .find(|line| line.starts_with("drain: "))
        .unwrap_or_else(|| panic!("no drain line in {lines:?}"))
}

every_backend! {
    /// 20 clients that answer and 2 that never read: the goodbyes reach
    /// the answering ones spread over the 2 s window, every one 1001; the
    /// silent two are cut at --close-timeout; the summary says so.
    fn the_drain_spreads_its_goodbyes_and_counts_clean_and_cut_closes(backend: Backend) {
        let server = Server::start(backend, &["--drain-time", "2s", "--close-timeout", "1s"]);
        let since = Arc::new(OnceLock::new());
        let answering: Vec<_> = (0..20)
            .map(|_| {
                let ws = ws_connect(&server, "/echo");
                let since = since.clone();
                std::thread::spawn(move || await_goodbye(ws, since))
            })
            .collect();
        let silent: Vec<RawWs> = (0..2).map(|_| RawWs::connect(&server, "/room")).collect();
        server.wait_for_stats("22 upgrades", |s| s.totals.upgraded == 22);
        since.set(Instant::now()).unwrap();
        server.terminate();
        let mut arrivals: Vec<Duration> = answering
            .into_iter()
            .map(|client| {
                let (code, at) = client.join().expect("a goodbye");
                assert_eq!(code, 1001);
                at
            })
            .collect();
        arrivals.sort();
        let (stats, lines, status) = server.wait_for_exit();
        assert!(status.success());
        // Spread, not a burst: the first goodbyes come early in the window,
        // the last late in it.
        assert!(arrivals[0] < Duration::from_millis(800), "{arrivals:?}");
        assert!(arrivals[19] > Duration::from_millis(1200), "{arrivals:?}");
        assert_eq!(stats.totals.drain_goodbyes, 22);
        assert_eq!(stats.totals.drain_clean, 20);
        assert_eq!(stats.totals.drain_cut, 2);
        assert_eq!(stats.open, 0);
        let line = drain_line(&lines);
        assert!(line.starts_with("drain: 20 of 22 told to go closed cleanly, 2 cut"), "{line}");
        drop(silent);
    }

    /// A second SIGTERM does not wait out a 60 s window: the server stops
    /// at once, and everything still open is counted cut.
    fn a_second_signal_stops_at_once(backend: Backend) {
        let server = Server::start(backend, &["--drain-time", "60s"]);
        let clients: Vec<Ws> = (0..10).map(|_| ws_connect(&server, "/echo")).collect();
        server.wait_for_stats("10 upgrades", |s| s.totals.upgraded == 10);
        let start = Instant::now();
        server.terminate();
        std::thread::sleep(Duration::from_millis(300));
        server.terminate();
        let (stats, lines, status) = server.wait_for_exit();
        assert!(status.success());
        assert!(start.elapsed() < Duration::from_secs(10), "waited for the window");
        assert_eq!(stats.totals.drain_clean, 0, "nobody read its goodbye");
        assert_eq!(stats.totals.drain_cut, 10);
        assert!(stats.totals.drain_goodbyes < 10, "the window had barely begun");
        let line = drain_line(&lines);
        assert!(line.contains("more cut untold (the server stopped first)"), "{line}");
        drop(clients);
    }

    /// A handshake that completes after the drain began is refused with
    /// 503 (go elsewhere), not admitted only to be told to go.
    fn an_upgrade_finished_during_the_drain_gets_503(backend: Backend) {
        let server = Server::start(backend, &["--drain-time", "2s"]);
        let request = upgrade_request("/echo");
        let (first_half, rest) = request.as_bytes().split_at(20);
        let mut late = tcp_connect(server.addr);
        late.write_all(first_half).unwrap();
        server.wait_for_stats("the connection accepted", |s| s.totals.accepted == 1);
        server.terminate();
        std::thread::sleep(Duration::from_millis(300));
        late.write_all(rest).unwrap();
        let mut response = String::new();
        late.read_to_string(&mut response).expect("the answer, then our FIN");
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{response}");
        assert!(response.contains("Retry-After: 1\r\n"), "{response}");
        assert!(response.contains("shutting down"), "{response}");
        drop(late);
        let (stats, _, status) = server.wait_for_exit();
        assert!(status.success());
        assert_eq!(stats.totals.rejected_draining, 1);
        assert_eq!((stats.totals.upgraded, stats.totals.drain_goodbyes), (0, 0));
    }

    /// Clients that have not been told yet are still served during the
    /// drain, and a TCP client is told with our FIN.
    fn tcp_clients_are_served_until_told_then_get_a_fin(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp", "--drain-time", "3s"]);
        let mut clients: Vec<std::net::TcpStream> = (0..6)
            .map(|_| {
                let mut stream = tcp_connect(server.addr);
                stream.write_all(&tcp::encode(b"/echo")).unwrap();
                let mut hello = vec![0; tcp::HEADER_LEN + tcp::HELLO_OK.len()];
                stream.read_exact(&mut hello).unwrap();
                stream
            })
            .collect();
        server.wait_for_stats("6 hellos", |s| s.totals.upgraded == 6);
        server.terminate();
        // A tenth of the way into the 3 s window at most one per shard has
        // been told; the rest are still served.
        std::thread::sleep(Duration::from_millis(300));
        let served = clients
            .iter_mut()
            .map(|client| {
                let _ = client.write_all(&tcp::encode(b"still here"));
                let mut echo = vec![0; tcp::HEADER_LEN + 10];
                client.read_exact(&mut echo).is_ok() && &echo[tcp::HEADER_LEN..] == b"still here"
            })
            .filter(|&echoed| echoed)
            .count();
        assert!(served >= 3, "only {served} of 6 served early in the drain");
        for client in &mut clients {
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).expect("our FIN");
        }
        drop(clients);
        let (stats, lines, status) = server.wait_for_exit();
        assert!(status.success());
        assert_eq!(stats.totals.drain_goodbyes, 6);
        assert_eq!(stats.totals.drain_clean, 6);
        assert!(drain_line(&lines).starts_with("drain: 6 of 6 told to go closed cleanly, 0 cut"));
    }
}
