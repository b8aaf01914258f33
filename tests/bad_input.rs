//! Every bad input gets its specific outcome — the close code or HTTP status
//! RFC 6455 asks for — and a well-behaved client on the same server keeps
//! working meanwhile.

mod common;

use std::io::Write;
use std::net::Shutdown;

use common::*;
use tungstenite::Message;

/// A server and a well-behaved echo client that must survive every case.
struct Bystander {
    server: Server,
    ws: Ws,
    round: usize,
}

impl Bystander {
    fn new(backend: Backend, args: &[&str]) -> Bystander {
        let server = Server::start(backend, args);
        let ws = ws_connect(&server, "/echo");
        Bystander {
            server,
            ws,
            round: 0,
        }
    }

    fn still_fine(&mut self) {
        self.round += 1;
        assert_echo(
            &mut self.ws,
            Message::text(format!("still here {}", self.round)),
        );
    }

    /// Open a raw connection, send `bytes` after the handshake, expect `code`.
    fn expect_close_code(&mut self, what: &str, bytes: &[u8], code: u16) {
        let mut raw = RawWs::connect(&self.server, "/echo");
        raw.send(bytes);
        assert_eq!(raw.expect_close(), code, "{what}");
        self.still_fine();
    }
}

every_backend! {
    fn frame_violations_close_with_their_codes(backend: Backend) {
        let mut b = Bystander::new(backend, &["--max-message", "1KiB"]);
        let unmasked = [0x81, 0x02, b'h', b'i'];
        b.expect_close_code("unmasked client frame", &unmasked, 1002);
        b.expect_close_code("RSV1 set", &raw_frame(0xC1, b"x"), 1002);
        b.expect_close_code("RSV3 set", &raw_frame(0x91, b"x"), 1002);
        b.expect_close_code("reserved data opcode 3", &raw_frame(0x83, b"x"), 1002);
        b.expect_close_code("reserved control opcode 0xB", &raw_frame(0x8B, b""), 1002);
        b.expect_close_code("fragmented ping", &raw_frame(0x09, b"p"), 1002);
        b.expect_close_code("ping of 126 bytes", &raw_frame(0x89, &[0; 126]), 1002);
        b.expect_close_code("continuation first", &raw_frame(0x80, b"x"), 1002);
        let mut interleaved = raw_frame(0x01, b"a");
        interleaved.extend(raw_frame(0x81, b"b"));
        b.expect_close_code("new message inside a fragmented one", &interleaved, 1002);
    }

    fn invalid_utf8_closes_with_1007_also_across_fragments(backend: Backend) {
        let mut b = Bystander::new(backend, &[]);
        b.expect_close_code("invalid text", &raw_frame(0x81, &[b'a', 0xFF]), 1007);
        b.expect_close_code("overlong encoding", &raw_frame(0x81, &[0xC0, 0xAF]), 1007);
        // A code point cut at a fragment edge and never finished.
        let mut cut = raw_frame(0x01, &[0xE2, 0x82]);
        cut.extend(raw_frame(0x80, b"x"));
        b.expect_close_code("unfinished code point across fragments", &cut, 1007);
        // Invalid bytes in a later fragment.
        let mut later = raw_frame(0x01, b"fine so far");
        later.extend(raw_frame(0x80, &[0xED, 0xA0, 0x80])); // a UTF-16 surrogate
        b.expect_close_code("surrogate in second fragment", &later, 1007);
        b.expect_close_code(
            "close reason not UTF-8",
            &raw_frame(0x88, &[0x03, 0xE8, 0xFF]),
            1007,
        );
    }

    fn close_frames_with_illegal_payloads_are_protocol_errors(backend: Backend) {
        let mut b = Bystander::new(backend, &[]);
        b.expect_close_code("1-byte close payload", &raw_frame(0x88, &[0x03]), 1002);
        for code in [999u16, 1005, 1006, 1015, 2000, 5000] {
            b.expect_close_code(
                &format!("close code {code}"),
                &raw_frame(0x88, &code.to_be_bytes()),
                1002,
            );
        }
    }

    fn messages_over_the_limit_close_with_1009(backend: Backend) {
        let mut b = Bystander::new(backend, &["--max-message", "1KiB"]);
        b.expect_close_code(
            "one frame over the limit",
            &raw_frame(0x82, &[0; 1025]),
            1009,
        );
        let mut fragments = raw_frame(0x02, &[0; 600]);
        fragments.extend(raw_frame(0x80, &[0; 600]));
        b.expect_close_code("fragments adding up over the limit", &fragments, 1009);
        // Exactly at the limit is fine.
        let mut raw = RawWs::connect(&b.server, "/echo");
        raw.send(&raw_frame(0x82, &[5; 1024]));
        let (opcode, payload) = raw.read_frame().unwrap();
        assert_eq!((opcode, payload.len()), (0x2, 1024));
        let stats = b.server.stats();
        assert_eq!(stats.totals.protocol_errors, 2);
    }

    fn bad_handshakes_get_their_http_status(backend: Backend) {
        let mut b = Bystander::new(backend, &["--max-handshake", "1KiB"]);
        let key = format!("Sec-WebSocket-Key: {KEY}\r\n");
        let cases = [
            ("wrong method", format!("POST /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{key}\r\n"), 405, "Allow: GET"),
            ("no Upgrade header", format!("GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{key}\r\n"), 426, "Upgrade: websocket"),
            ("no Connection: Upgrade", format!("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{key}\r\n"), 400, ""),
            ("no key", "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(), 400, ""),
            ("version 8", format!("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n{key}\r\n"), 426, "Sec-WebSocket-Version: 13"),
            ("unknown path", upgrade_request("/elsewhere"), 404, ""),
            ("HTTP/1.0", "GET /echo HTTP/1.0\r\n\r\n".to_string(), 505, ""),
            ("not HTTP", "\x16\x03\x01\x02\x00 hello\r\n\r\n".to_string(), 400, ""),
            ("headers too large", format!("GET /echo HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(2000)), 431, ""),
        ];
        for (what, request, status, header) in cases {
            let (got, response) = http_status(&b.server, request.as_bytes());
            assert_eq!(got, status, "{what}: {response}");
            assert!(response.contains(header), "{what}: {response}");
            b.still_fine();
        }
        let stats = b.server.stats();
        assert_eq!(stats.totals.rejected, 9);
    }

    fn a_client_that_never_finishes_its_handshake_is_closed(backend: Backend) {
        let mut b = Bystander::new(backend, &["--handshake-timeout", "300ms"]);
        let mut raw = RawWs {
            stream: tcp_connect(b.server.addr),
            buffered: Vec::new(),
        };
        raw.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n"); // and nothing more
        let head = raw.read_http_head();
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
        raw.expect_eof();
        // A silent connection that sends nothing at all is closed too.
        let mut silent = RawWs {
            stream: tcp_connect(b.server.addr),
            buffered: Vec::new(),
        };
        let head = silent.read_http_head();
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
        b.still_fine();
        assert_eq!(b.server.stats().totals.handshake_timeouts, 2);
    }

    fn peers_that_vanish_are_cleaned_up(backend: Backend) {
        let mut b = Bystander::new(backend, &[]);
        let baseline = b.server.stats().open;
        // Reset: SO_LINGER 0 makes close() send RST.
        for path in ["/echo", "/room"] {
            let raw = RawWs::connect(&b.server, path);
            socket2::SockRef::from(&raw.stream)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
            drop(raw);
        }
        // Half-close: the client shuts its write side and keeps the socket.
        let half = RawWs::connect(&b.server, "/room");
        half.stream.shutdown(Shutdown::Write).unwrap();
        // Mid-frame disappearance: half a frame, then gone.
        let mut partial = RawWs::connect(&b.server, "/echo");
        partial.send(&raw_frame(0x82, &[1; 1000])[..500]);
        drop(partial);
        // Mid-handshake disappearance.
        let mut stream = tcp_connect(b.server.addr);
        stream.write_all(b"GET /echo HTTP/1.1\r\n").unwrap();
        drop(stream);
        b.server
            .wait_for_stats("vanished peers to be freed", |s| s.open == baseline);
        b.still_fine();
        drop(half);
    }

    fn pipelined_request_and_frames_in_one_write_are_all_handled(backend: Backend) {
        let server = Server::start(backend, &[]);
        let mut stream = tcp_connect(server.addr);
        let mut bytes = upgrade_request("/echo").into_bytes();
        bytes.extend(raw_frame(0x81, b"one"));
        bytes.extend(raw_frame(0x81, b"two"));
        bytes.extend(raw_frame(0x88, &1000u16.to_be_bytes()));
        stream.write_all(&bytes).unwrap();
        let mut raw = RawWs {
            stream,
            buffered: Vec::new(),
        };
        assert!(raw.read_http_head().starts_with("HTTP/1.1 101 "));
        assert_eq!(raw.read_frame(), Some((0x1, b"one".to_vec())));
        assert_eq!(raw.read_frame(), Some((0x1, b"two".to_vec())));
        assert_eq!(raw.expect_close(), 1000);
    }
}
