//! Server pings and the idle timeout on every backend: a client that stays
//! silent for --ping-interval is pinged and one that does not answer is
//! dropped, while a client that answers (tungstenite does, as browsers do)
//! stays; --idle-timeout closes a silent connection with 1001 (TCP: our
//! FIN) and spares one that talks.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::*;
use fanout::protocol::tcp;
use tungstenite::Message;

/// Let tungstenite read (and so answer pings) for `how_long`; returns the
/// client and how many pings it saw.
fn read_for(mut ws: Ws, how_long: Duration) -> (Ws, usize) {
    let tcp = match ws.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(tcp) => tcp.try_clone().unwrap(),
        _ => unreachable!(),
    };
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + how_long;
    let mut pings = 0;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(error) => panic!("the connection ended: {error}"),
        }
    }
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    (ws, pings)
}

every_backend! {
    fn a_client_that_answers_pings_stays_and_one_that_does_not_is_dropped(backend: Backend) {
        let server = Server::start(backend, &["--ping-interval", "500ms"]);
        let answering = ws_connect(&server, "/echo");
        let mut silent = RawWs::connect(&server, "/echo");
        let answering = std::thread::spawn(move || read_for(answering, Duration::from_millis(2500)));
        // The silent one is pinged, then dropped without a close frame.
        let (opcode, _) = silent.read_frame().expect("a ping");
        assert_eq!(opcode, 0x9);
        silent.expect_eof();
        let (mut answering, pings) = answering.join().unwrap();
        assert!(pings >= 2, "pinged {pings} times in 2.5 s at a 500 ms interval");
        assert_echo(&mut answering, Message::text("still here"));
        let stats = server.wait_for_stats("the drop counted", |s| s.totals.ping_timeouts == 1);
        assert_eq!(stats.open, 1);
        assert!(stats.totals.pings_sent >= 3);
    }

    fn the_idle_timeout_closes_a_silent_connection_and_spares_a_talking_one(backend: Backend) {
        let server = Server::start(backend, &["--idle-timeout", "1s"]);
        let mut talking = ws_connect(&server, "/echo");
        let mut silent = RawWs::connect(&server, "/echo");
        let started = Instant::now();
        let closer = std::thread::spawn(move || (silent.expect_close(), started.elapsed()));
        for i in 0..8 {
            std::thread::sleep(Duration::from_millis(250));
            assert_echo(&mut talking, Message::text(format!("{i}")));
        }
        let (code, after) = closer.join().unwrap();
        assert_eq!(code, 1001);
        assert!(after >= Duration::from_secs(1), "closed after {after:?}");
        let stats = server.wait_for_stats("the close counted", |s| s.totals.idle_timeouts == 1);
        assert_eq!(stats.open, 1);
        assert_eq!(stats.totals.pings_sent, 0, "no pings unless asked");
    }

    fn an_idle_tcp_connection_gets_our_fin(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp", "--idle-timeout", "500ms", "--ping-interval", "200ms"]);
        let mut stream = tcp_connect(server.addr);
        stream.write_all(&tcp::encode(b"/room")).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("our FIN");
        // The hello's answer and nothing else: the TCP protocol has no pings.
        assert_eq!(answer, tcp::encode(tcp::HELLO_OK));
        let stats = server.wait_for_stats("the close counted", |s| s.totals.idle_timeouts == 1);
        assert_eq!(stats.totals.pings_sent, 0);
    }
}

#[test]
fn a_zero_interval_is_refused_with_a_clear_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["serve", "--listen", "127.0.0.1:0", "--ping-interval", "0s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--ping-interval must be more than 0"),
        "{stderr}"
    );
}
