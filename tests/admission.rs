//! Admission control on every backend: past `--max-conns` admitted
//! connections, or faster than `--accept-rate`, an upgrade is refused with
//! HTTP 503 and Retry-After (read by tungstenite's client, an independent
//! implementation), a TCP hello with `error: try again later`; each refusal
//! is counted by reason, and the connections already open are unharmed.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use fanout::protocol::tcp;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

/// Try the WebSocket upgrade with tungstenite's client: the open socket, or
/// the HTTP status and Retry-After it was refused with.
fn try_upgrade(server: &Server, path: &str) -> Result<Ws, (u16, Option<String>)> {
    let stream = tcp_connect(server.addr);
    match tungstenite::client(server.url(path), MaybeTlsStream::Plain(stream)) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            Err((response.status().as_u16(), retry))
        }
        Err(other) => panic!(
            "the upgrade neither succeeded nor was refused: {other}; the server's counters: {:?}",
            server.stats()
        ),
    }
}

/// Until `attempt` succeeds (a close takes a moment to reach the server),
/// at most a few seconds.
fn eventually<T>(mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "never succeeded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `rounds` clients on each of `threads` threads send `request`, read just
/// the response head and hang up at once; the status line each one got.
fn hang_up_after_the_head(
    server: &Server,
    request: &'static [u8],
    threads: usize,
    rounds: usize,
) -> Vec<String> {
    let addr = server.addr;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                (0..rounds)
                    .map(|_| {
                        let mut stream = tcp_connect(addr);
                        stream.write_all(request).unwrap();
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).to_string();
                        head.lines()
                            .next()
                            .unwrap_or("nothing: EOF before a response")
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

every_backend! {
    fn refused_clients_that_hang_up_at_once_never_cost_the_next_its_response(backend: Backend) {
        // Found on io_uring: a shutdown queued on the ring ran on a worker
        // after the connection's fd number had been closed and reused, and
        // cut the next connection's write side (about 1 in 300 here).
        let server = Server::start(backend, &[]);
        let mut held = ws_connect(&server, "/echo");
        let request = b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let statuses = hang_up_after_the_head(&server, request, 4, 300);
        let wrong: Vec<&String> = statuses.iter().filter(|s| *s != "HTTP/1.1 404 Not Found").collect();
        assert!(wrong.is_empty(), "{} of {}: {:?}", wrong.len(), statuses.len(), &wrong[..wrong.len().min(5)]);
        assert_echo(&mut held, Message::text("unharmed"));
    }

    fn past_max_conns_an_upgrade_gets_503_and_the_others_are_unharmed(backend: Backend) {
        let server = Server::start(backend, &["--max-conns", "3"]);
        let mut open: Vec<Ws> = (0..3).map(|_| ws_connect(&server, "/echo")).collect();
        assert_eq!(try_upgrade(&server, "/echo").err(), Some((503, Some("1".to_string()))));
        assert_eq!(try_upgrade(&server, "/room").err(), Some((503, Some("1".to_string()))));
        for (i, ws) in open.iter_mut().enumerate() {
            assert_echo(ws, Message::text(format!("still here {i}")));
        }
        // A place freed is a place taken.
        let mut gone = open.pop().unwrap();
        gone.close(None).unwrap();
        drop(gone);
        let mut again = eventually(|| try_upgrade(&server, "/echo").ok());
        assert_echo(&mut again, Message::text("admitted"));
        let stats = server.stats();
        assert_eq!(stats.totals.rejected_over_capacity, stats.totals.rejected);
        assert!(stats.totals.rejected_over_capacity >= 2, "{stats:?}");
        assert_eq!(stats.totals.rejected_accept_rate, 0);
    }

    fn faster_than_accept_rate_upgrades_get_503_counted_apart(backend: Backend) {
        // 1 a second across the shards: each shard's bucket holds one.
        let server = Server::start(backend, &["--accept-rate", "1"]);
        let shards = server.plan.matches("shard").count().max(1);
        let outcomes: Vec<_> = (0..12).map(|_| try_upgrade(&server, "/echo")).collect();
        let admitted = outcomes.iter().filter(|o| o.is_ok()).count();
        let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        assert!(admitted >= 1, "one token per shard to begin with");
        assert!(refused.len() >= 12 - 12.min(shards * 2), "{refused:?}");
        assert!(refused.iter().all(|r| **r == (503, Some("1".to_string()))));
        let stats = server.stats();
        assert_eq!(stats.totals.rejected_accept_rate, refused.len() as u64);
        assert_eq!(stats.totals.rejected_over_capacity, 0);
    }

    fn past_max_conns_a_tcp_hello_is_told_to_try_again_later(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp", "--max-conns", "1"]);
        let answer = |stream: &mut std::net::TcpStream| {
            let mut header = [0u8; tcp::HEADER_LEN];
            stream.read_exact(&mut header).unwrap();
            let mut body = vec![0; u32::from_be_bytes(header) as usize];
            stream.read_exact(&mut body).unwrap();
            body
        };
        let mut first = tcp_connect(server.addr);
        first.write_all(&tcp::encode(b"/echo")).unwrap();
        assert_eq!(answer(&mut first), tcp::HELLO_OK);
        let mut second = tcp_connect(server.addr);
        second.write_all(&tcp::encode(b"/echo")).unwrap();
        assert_eq!(answer(&mut second), tcp::HELLO_BUSY);
        let mut rest = Vec::new();
        second.read_to_end(&mut rest).expect("the refused client is closed");
        // The admitted one still echoes.
        first.write_all(&tcp::encode(b"abc")).unwrap();
        assert_eq!(answer(&mut first), b"abc");
        assert_eq!(server.stats().totals.rejected_over_capacity, 1);
    }
}
