//! permessage-deflate on every backend: an independent client (Python's
//! websockets and its zlib, tests/python/deflate_client.py) negotiates each
//! parameter and exchanges compressed messages with `--deflate shared` and
//! `per-connection`; every bad compressed input gets its close code, is
//! counted by its reason, and harms no other connection; the codec memory
//! budget declines what does not fit and gives back what closes.

mod common;

use std::io::Write;
use std::process::Command;

use common::*;
use fanout::protocol::deflate::{Deflater, Inflater};
use tungstenite::Message;

/// Run tests/python/deflate_client.py against `server`; its transcript.
fn python_client(server: &Server, mode: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/deflate_client.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(server.addr.port().to_string())
        .arg(mode)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success() && stdout.ends_with("ok\n"),
        "the Python client failed against --deflate {mode}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A raw connection to /echo that offered permessage-deflate with
/// `params`; the 101's extension answer.
fn offer(server: &Server, params: &str) -> (RawWs, Option<String>) {
    let mut stream = tcp_connect(server.addr);
    let request = upgrade_request("/echo").replace(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Extensions: permessage-deflate{params}\r\n\r\n"),
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = RawWs::from_stream(stream);
    let head = raw.read_http_head();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let answer = head
        .lines()
        .find_map(|line| line.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(str::to_string);
    (raw, answer)
}

/// A masked client frame with RSV1 set (a compressed message's first frame).
fn compressed(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(first_byte | 0x40, payload)
}

every_backend! {
    fn an_independent_client_negotiates_every_parameter_and_exchanges_compressed_messages(backend: Backend) {
        if !python_websockets_or_skip("deflate interop") {
            return;
        }
        for mode in ["shared", "per-connection"] {
            let server = Server::start(backend, &["--deflate", mode]);
            let transcript = python_client(&server, mode);
            assert!(transcript.contains("server-window-8: declined"), "{transcript}");
            let (stats, _) = server.stop();
            let totals = stats.totals;
            // Seven offers echoed and three deflate members in the room.
            assert_eq!(totals.deflate_agreed, 10, "{mode}: {totals:?}");
            assert_eq!(totals.deflate_declined_window, 1, "{mode}");
            assert_eq!(totals.deflate_inflated, 7 * 3 * 5 + 3, "{mode}");
            // Echoes, then the four room messages: per-connection compresses
            // them for each of the three deflate members; shared once per
            // window size in use (15 and 9) and shard (or runtime thread)
            // with such members: 2 or 3 times each here.
            let echoes = 7 * 3 * 5;
            let room = totals.deflate_compressed - echoes;
            match mode {
                "per-connection" => assert_eq!(room, 4 * 3),
                _ => assert!((4 * 2..=4 * 3).contains(&room), "{room}"),
            }
            assert_eq!(totals.deflate_codec_bytes, 0, "{mode}: every codec given back");
            assert_eq!(totals.protocol_errors, 0, "{mode}");
        }
    }

    fn compressed_messages_round_trip_with_fanouts_own_codec(backend: Backend) {
        let server = Server::start(backend, &["--deflate", "shared"]);
        let (mut raw, answer) = offer(&server, "; client_max_window_bits");
        assert_eq!(
            answer.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let mut deflater = Deflater::new(15, false);
        let mut inflater = Inflater::new(15, false);
        for text in ["hello", "{\"a\":1,\"a\":1,\"a\":1,\"a\":1}"] {
            raw.send(&compressed(0x81, &deflater.message(text.as_bytes())));
            let (first, payload) = raw.read_frame_with_first_byte().unwrap();
            assert_eq!(first, 0xC1, "a final compressed text frame");
            assert_eq!(inflater.message(&payload, 1000).unwrap(), text.as_bytes());
        }
        // An uncompressed message on a deflate connection is fine too (RSV1
        // clear); the echo comes back compressed.
        raw.send(&raw_frame(0x82, b"plain bytes"));
        let (first, payload) = raw.read_frame_with_first_byte().unwrap();
        assert_eq!(first, 0xC2);
        assert_eq!(inflater.message(&payload, 1000).unwrap(), b"plain bytes");
    }

    fn bad_compressed_input_closes_with_its_code_and_harms_nobody(backend: Backend) {
        let server = Server::start(backend, &["--deflate", "shared", "--max-message", "1KiB"]);
        let mut bystander = ws_connect(&server, "/echo");
        let mut round = 0;
        let mut still_fine = |ws: &mut Ws| {
            round += 1;
            assert_echo(ws, Message::text(format!("still here {round}")));
        };
        let mut deflater = Deflater::new(15, false);
        let bomb = deflater.message(&vec![0u8; 200_000]);
        assert!(bomb.len() < 500, "a frame under --max-message");
        let hello = deflater.message(b"hello");
        let mut fragmented = compressed(0x01, &hello[..2]);
        fragmented.extend(compressed(0x80, &hello[2..]));
        let cases: [(&str, Vec<u8>, u16); 5] = [
            ("a bomb past --max-message", compressed(0x82, &bomb), 1009),
            ("corrupt deflate data", compressed(0x82, &[0xff; 8]), 1007),
            ("RSV1 on a continuation frame", fragmented, 1002),
            ("RSV1 on a ping", compressed(0x89, b""), 1002),
            ("invalid UTF-8 once inflated", compressed(0x81, &deflater.message(&[0xc3, 0x28])), 1007),
        ];
        for (what, bytes, code) in cases {
            let (mut raw, answer) = offer(&server, "");
            assert!(answer.is_some(), "{what}: agreed first");
            raw.send(&bytes);
            assert_eq!(raw.expect_close(), code, "{what}");
            still_fine(&mut bystander);
        }
        // RSV1 where deflate was not agreed: a connection that did not offer it.
        let mut raw = RawWs::connect(&server, "/echo");
        raw.send(&compressed(0x81, &hello));
        assert_eq!(raw.expect_close(), 1002, "RSV1 without deflate");
        still_fine(&mut bystander);
        // Window bits out of range: the offer is declined, the connection works.
        for params in ["; client_max_window_bits=16", "; server_max_window_bits=7", "; x=1"] {
            let (mut raw, answer) = offer(&server, params);
            assert_eq!(answer, None, "{params}");
            raw.send(&raw_frame(0x81, b"ok"));
            assert_eq!(raw.read_frame(), Some((0x1, b"ok".to_vec())), "{params}");
        }
        let stats = server.wait_for_stats("the counts", |s| s.totals.deflate_unnegotiated_rsv1 == 1);
        let totals = stats.totals;
        assert_eq!(totals.deflate_too_big, 1);
        assert_eq!(totals.deflate_corrupt, 1);
        assert_eq!(totals.deflate_misplaced_rsv1, 2);
        assert_eq!(totals.deflate_declined_parameters, 3);
        assert_eq!(totals.invalid_payload_closes, 2);
    }

    fn a_room_message_is_compressed_once_per_shard_in_shared_mode_and_per_member_otherwise(backend: Backend) {
        for (mode, answer) in [
            ("shared", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ("per-connection", "permessage-deflate"),
        ] {
            let server = Server::start(backend, &["--deflate", mode, "--shards", "2"]);
            let members: Vec<RawWs> = (0..20)
                .map(|_| {
                    let mut stream = tcp_connect(server.addr);
                    let request = upgrade_request("/room").replace(
                        "\r\n\r\n",
                        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                    );
                    stream.write_all(request.as_bytes()).unwrap();
                    let mut raw = RawWs::from_stream(stream);
                    let head = raw.read_http_head();
                    assert!(head.contains(answer), "{head}");
                    raw
                })
                .collect();
            let mut plain = ws_connect(&server, "/room");
            server.wait_for_stats("every member joined", |s| s.totals.upgraded == 21);
            let message = "{\"price\":101.5,\"symbol\":\"ABC\",\"price\":101.5}";
            plain.send(Message::text(message)).unwrap();
            assert_eq!(read_data(&mut plain), Message::text(message), "the plain member");
            for (i, mut member) in members.into_iter().enumerate() {
                let (first, payload) = member.read_frame_with_first_byte().unwrap();
                assert_eq!(first, 0xC1, "member {i}: a compressed text frame");
                let text = Inflater::new(15, false).message(&payload, 1000).unwrap();
                assert_eq!(text, message.as_bytes(), "member {i}");
            }
            let compressed = server.stats().totals.deflate_compressed;
            match mode {
                // Once per shard (or runtime thread) that has members.
                "shared" => assert!((1..=2).contains(&compressed), "{compressed}"),
                _ => assert_eq!(compressed, 20),
            }
        }
    }

    fn the_codec_budget_declines_what_does_not_fit_and_takes_back_what_closes(backend: Backend) {
        // One codec at full windows is 416,768 B by zlib-rs's layout:
        // 600 KiB holds one (with one shard: tokio has one whatever
        // --shards says).
        let server = Server::start(
            backend,
            &["--deflate", "per-connection", "--deflate-memory", "600KiB", "--shards", "1"],
        );
        let (first, answer) = offer(&server, "");
        assert_eq!(answer.as_deref(), Some("permessage-deflate"));
        let (_second, answer) = offer(&server, "");
        assert_eq!(answer, None, "over the budget");
        let stats = server.stats();
        assert_eq!(stats.totals.deflate_declined_memory, 1);
        assert_eq!(stats.totals.deflate_codec_bytes, 416_768);
        drop(first);
        server.wait_for_stats("the codec given back", |s| s.totals.deflate_codec_bytes == 0);
        let (_third, answer) = offer(&server, "");
        assert_eq!(answer.as_deref(), Some("permessage-deflate"));
    }
}
