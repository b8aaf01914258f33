//! Handshake floods on every backend: hundreds of connections that send
//! half a request and stall, and some that drip a byte at a time, get HTTP
//! 408 at --handshake-timeout (counted from accept: dripping does not
//! extend it), while real clients keep connecting and echoing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

const HALF_REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n";

/// Everything the server sends until it hangs up (bounded by the read
/// timeout), as text.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

every_backend! {
    fn stalled_and_dripping_handshakes_get_408_and_real_clients_are_served(backend: Backend) {
        let server = Server::start(backend, &["--handshake-timeout", "3s"]);
        let started = Instant::now();
        let mut stalled: Vec<TcpStream> = (0..300)
            .map(|_| {
                let mut stream = tcp_connect(server.addr);
                stream.write_all(HALF_REQUEST).unwrap();
                stream
            })
            .collect();
        // Drippers: a byte every 100 ms of a request that would take 15 s.
        let drippers: Vec<_> = (0..4)
            .map(|_| {
                let addr = server.addr;
                std::thread::spawn(move || {
                    let mut stream = tcp_connect(addr);
                    let opened = Instant::now();
                    let request = upgrade_request("/echo");
                    for byte in request.as_bytes() {
                        if stream.write_all(&[*byte]).is_err() {
                            break; // the server hung up
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        if opened.elapsed() > Duration::from_secs(8) {
                            break;
                        }
                    }
                    (read_to_close(&mut stream), opened.elapsed())
                })
            })
            .collect();
        // Real clients, during the flood: connected and served at once.
        for i in 0..20 {
            let mut ws = ws_connect(&server, "/echo");
            assert_echo(&mut ws, Message::text(format!("real client {i}")));
        }
        // ... while the flood was still open (its deadline is 3 s away).
        assert!(started.elapsed() < Duration::from_secs(3), "served within the flood");
        for stream in &mut stalled {
            let answer = read_to_close(stream);
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
        }
        for dripper in drippers {
            let (answer, took) = dripper.join().unwrap();
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
            assert!(took < Duration::from_secs(6), "dripping extended the deadline: {took:?}");
        }
        let stats = server.stats();
        assert_eq!(stats.totals.handshake_timeouts, 304, "{stats:?}");
        assert_eq!(stats.totals.upgraded, 20);
        // After the flood: still accepting.
        assert_echo(&mut ws_connect(&server, "/echo"), Message::text("after"));
    }
}
