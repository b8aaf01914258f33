//! The tungstenite client (an independent implementation) against
//! `fanout serve`: echo at every length boundary, fragmentation, ping/pong,
//! the close handshake, 404, and the room across shards.

mod common;

use std::collections::HashMap;

use common::*;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

const SIZES: [usize; 7] = [0, 1, 125, 126, 65535, 65536, 1 << 20];

every_backend! {
    fn echo_text_and_binary_at_every_length_boundary(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut ws = ws_connect(&server, "/echo");
        for size in SIZES {
            let binary: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            assert_echo(&mut ws, Message::binary(binary));
            let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            assert_echo(&mut ws, Message::text(text));
        }
        // Multi-byte UTF-8 goes through unchanged.
        assert_echo(&mut ws, Message::text("héllo wörld €𝄞"));
        let (stats, status) = server.stop();
        assert!(status.success());
        assert_eq!(stats.totals.echoed, 2 * SIZES.len() as u64 + 1);
        assert_eq!(stats.totals.protocol_errors, 0);
    }

    /// io_uring's shards hand their receive buffers' pages back to the
    /// kernel a second after they were written into, and faults fresh ones
    /// in on the next read. Echo goes on whole across those releases: one
    /// client streams messages without a pause for 2.5 s, another sends
    /// half a frame, waits past a release, then the rest.
    fn echo_stays_whole_across_the_receive_buffers_release(backend: Backend) {
        let server = Server::start(backend, &["--shards", "1"]);
        let mut streaming = ws_connect(&server, "/echo");
        let mut halting = RawWs::connect(&server, "/echo");
        let payload: Vec<u8> = (0..10_000).map(|i| (i * 13 % 251) as u8).collect();
        let frame = raw_frame(0x82, &payload);
        halting.send(&frame[..frame.len() / 2]);
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(2500) {
            let message: Vec<u8> = (0..3000).map(|i| (i as u64 * 7 + sent) as u8).collect();
            assert_echo(&mut streaming, Message::binary(message));
            sent += 1;
            if sent == 20 {
                std::thread::sleep(std::time::Duration::from_millis(1200));
            }
        }
        halting.send(&frame[frame.len() / 2..]);
        let (opcode, echoed) = halting.read_frame().expect("the halted message's echo");
        assert_eq!(opcode, 2, "binary");
        assert!(echoed == payload, "the halted message came back whole");
        let stats = server.stats();
        let buffers = stats.totals.recv_buffer_bytes;
        match backend {
            Backend::Uring => assert!(
                (16 * 1024..=1024 * 1024).contains(&buffers),
                "one shard gives its ring 16 KiB to 1 MiB of buffers, not {buffers}"
            ),
            _ => assert_eq!(buffers, 0, "only uring has a buffer ring"),
        }
        let (stats, status) = server.stop();
        assert!(status.success());
        assert_eq!(stats.totals.echoed, sent + 1);
        assert_eq!(stats.totals.protocol_errors, 0);
    }

    /// Many clients send large messages at once: more bytes arrive together
    /// than io_uring's receive buffers hold (1 MiB per shard), so reads find
    /// the ring dry and are issued again; every message must still come back
    /// whole and in order.
    fn many_large_messages_at_once_come_back_whole(backend: Backend) {
        const CLIENTS: usize = 32;
        const MESSAGES: usize = 4;
        const SIZE: usize = 256 * 1024;
        let server = Server::start(backend, &[]);
        let start = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let mut ws = ws_connect(&server, "/echo");
                let start = start.clone();
                std::thread::spawn(move || {
                    let message = |m: usize| {
                        let payload: Vec<u8> = (0..SIZE).map(|i| (i * 31 + c * 7 + m) as u8).collect();
                        Message::binary(payload)
                    };
                    start.wait();
                    for m in 0..MESSAGES {
                        ws.send(message(m)).expect("send");
                    }
                    for m in 0..MESSAGES {
                        assert_eq!(read_data(&mut ws), message(m), "client {c} message {m}");
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("every echo came back whole");
        }
        let (stats, status) = server.stop();
        assert!(status.success());
        assert_eq!(stats.totals.echoed, (CLIENTS * MESSAGES) as u64);
        eprintln!("{}: {} reads found the receive buffers dry", backend.name(), stats.totals.recv_buffer_shortages);
        if backend != Backend::Uring {
            assert_eq!(stats.totals.recv_buffer_shortages, 0, "only uring has a buffer ring");
        }
    }

    fn fragmented_messages_are_reassembled_and_echoed_whole(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut ws = ws_connect(&server, "/echo");
        // "€" (3 bytes) split across fragments, with a ping in the middle.
        let text = "price: 5€, fragmented".as_bytes();
        ws.write(Message::Frame(Frame::message(
            text[..8].to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .unwrap();
        ws.write(Message::Ping(b"mid".to_vec().into())).unwrap();
        ws.write(Message::Frame(Frame::message(
            text[8..10].to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .unwrap();
        ws.write(Message::Frame(Frame::message(
            text[10..].to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .unwrap();
        ws.flush().unwrap();
        assert_eq!(ws.read().unwrap(), Message::Pong(b"mid".to_vec().into()));
        assert_eq!(ws.read().unwrap(), Message::text("price: 5€, fragmented"));
        // A binary message in many small fragments.
        let data: Vec<u8> = (0..=255).collect();
        for (i, chunk) in data.chunks(10).enumerate() {
            let opcode = if i == 0 { Data::Binary } else { Data::Continue };
            let last = (i + 1) * 10 >= data.len();
            ws.write(Message::Frame(Frame::message(
                chunk.to_vec(),
                OpCode::Data(opcode),
                last,
            )))
            .unwrap();
        }
        ws.flush().unwrap();
        assert_eq!(read_data(&mut ws), Message::binary(data));
    }

    fn ping_gets_a_pong_with_the_same_payload(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut ws = ws_connect(&server, "/echo");
        for payload in [&b""[..], b"x", &[7u8; 125]] {
            ws.send(Message::Ping(payload.to_vec().into())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::Pong(payload.to_vec().into()));
        }
    }

    fn close_handshake_completes_with_the_clients_code(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut ws = ws_connect(&server, "/echo");
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        let reply = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame,
                Ok(_) => continue,
                Err(e) => panic!("no close reply: {e}"),
            }
        };
        assert_eq!(reply.unwrap().code, CloseCode::Normal);
        // After the handshake tungstenite reports the connection closed cleanly.
        assert!(matches!(
            ws.read(),
            Err(tungstenite::Error::ConnectionClosed)
        ));
        server.wait_for_stats("the closed connection to be freed", |s| s.open == 0);
    }

    fn unknown_path_is_404(backend: Backend) {
        let server = Server::start(backend, &[]);
        let stream = tcp_connect(server.addr);
        let error = tungstenite::client(server.url("/nope"), stream).unwrap_err();
        match error {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 404)
            }
            other => panic!("expected HTTP 404, got {other:?}"),
        }
    }

    fn room_delivers_every_message_exactly_once_to_every_member_across_shards(backend: Backend) {
        const MEMBERS: usize = 200;
        const PUBLISHERS: usize = 5;
        const PER_PUBLISHER: usize = 4;
        let server = Server::start(backend, &["--shards", "4"]);
        let mut members: Vec<Ws> = (0..MEMBERS).map(|_| ws_connect(&server, "/room")).collect();
        let stats = server.stats();
        let busy_shards = stats.open_per_shard.iter().filter(|&&n| n > 0).count();
        // `tokio` is one runtime (one "shard" whose 4 workers share the tasks).
        assert!(
            busy_shards >= 2 || backend == Backend::Tokio,
            "members spread over shards: {:?}",
            stats.open_per_shard
        );

        let mut expected = Vec::new();
        for round in 0..PER_PUBLISHER {
            for (publisher, member) in members.iter_mut().enumerate().take(PUBLISHERS) {
                let text = format!("message {round} from member {publisher}");
                member.send(Message::text(text.clone())).unwrap();
                expected.push(text);
            }
        }
        for (i, member) in members.iter_mut().enumerate() {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut next_round = [0usize; PUBLISHERS];
            for _ in 0..expected.len() {
                let message = read_data(member).into_text().unwrap().to_string();
                // Per publisher, messages arrive in the order they were sent.
                let words: Vec<&str> = message.split(' ').collect();
                let (round, publisher): (usize, usize) =
                    (words[1].parse().unwrap(), words[4].parse().unwrap());
                assert_eq!(
                    round, next_round[publisher],
                    "member {i}: order from {publisher}"
                );
                next_round[publisher] += 1;
                *seen.entry(message).or_default() += 1;
            }
            for text in &expected {
                assert_eq!(seen.get(text), Some(&1), "member {i} got {text:?} once");
            }
        }
        let (stats, _) = server.stop();
        let total = (PUBLISHERS * PER_PUBLISHER) as u64;
        assert_eq!(stats.totals.published, total);
        assert_eq!(stats.totals.delivered, total * MEMBERS as u64);
    }

    fn a_member_that_left_is_not_written_to_and_others_still_receive(backend: Backend) {
        let server = Server::start(backend, &["--shards", "2"]);
        let mut stayer = ws_connect(&server, "/room");
        let mut leaver = ws_connect(&server, "/room");
        leaver.close(None).unwrap();
        while leaver.read().is_ok() {}
        server.wait_for_stats("the leaver to be gone", |s| s.open == 1);
        stayer.send(Message::text("after")).unwrap();
        assert_eq!(read_data(&mut stayer), Message::text("after"));
        let (stats, _) = server.stop();
        assert_eq!(stats.totals.delivered, 1, "only the member still present");
    }
}
