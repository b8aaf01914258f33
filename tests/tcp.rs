//! `--proto tcp`: echo and room over the length-prefixed framing of
//! docs/tcp-framing.md, checked against hand-written byte streams and
//! against the project's codec.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use fanout::protocol::tcp;

fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).expect("read");
    buf
}

/// Read one message with the project's codec.
fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let header = read_exact(stream, tcp::HEADER_LEN);
    let len = u32::from_be_bytes(header.try_into().unwrap()) as usize;
    read_exact(stream, len)
}

fn join(server: &Server, route: &[u8]) -> TcpStream {
    let mut stream = tcp_connect(server.addr);
    stream.write_all(&tcp::encode(route)).unwrap();
    assert_eq!(read_message(&mut stream), tcp::HELLO_OK);
    stream
}

fn expect_eof(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("server closes");
}

every_backend! {
    fn hand_written_bytes_echo(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp"]);
        let mut stream = tcp_connect(server.addr);
        stream.write_all(b"\x00\x00\x00\x05/echo").unwrap();
        assert_eq!(read_exact(&mut stream, 6), b"\x00\x00\x00\x02ok");
        // Two messages in one write, the second split over two writes.
        stream
            .write_all(b"\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x00")
            .unwrap();
        stream.write_all(b"\x00\x02hi").unwrap();
        assert_eq!(
            read_exact(&mut stream, 7 + 4 + 6),
            b"\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x00\x00\x02hi"
        );
    }

    fn codec_echo_at_length_boundaries(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp"]);
        let mut stream = join(&server, b"/echo");
        for size in [0, 1, 255, 256, 65535, 65536, 1 << 20] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            stream.write_all(&tcp::encode(&payload)).unwrap();
            assert_eq!(read_message(&mut stream), payload, "size {size}");
        }
    }

    fn room_reaches_every_member_once(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp", "--shards", "3"]);
        let mut members: Vec<TcpStream> = (0..30).map(|_| join(&server, b"/room")).collect();
        for (i, member) in members.iter_mut().enumerate().take(3) {
            member
                .write_all(&tcp::encode(format!("from {i}").as_bytes()))
                .unwrap();
        }
        for member in &mut members {
            let mut got: Vec<Vec<u8>> = (0..3).map(|_| read_message(member)).collect();
            got.sort();
            assert_eq!(
                got,
                vec![b"from 0".to_vec(), b"from 1".to_vec(), b"from 2".to_vec()]
            );
        }
        let (stats, _) = server.stop();
        assert_eq!(stats.totals.delivered, 90);
    }

    fn unknown_route_and_oversized_messages_end_the_connection(backend: Backend) {
        let server = Server::start(backend, &["--proto", "tcp", "--max-message", "1KiB"]);
        let mut echo = join(&server, b"/echo");
        let mut stream = tcp_connect(server.addr);
        stream.write_all(&tcp::encode(b"/nowhere")).unwrap();
        assert_eq!(read_message(&mut stream), tcp::HELLO_NOT_FOUND);
        expect_eof(&mut stream);
        let mut stream = join(&server, b"/echo");
        stream.write_all(&tcp::header(1025)).unwrap();
        expect_eof(&mut stream);
        // The well-behaved connection is untouched.
        echo.write_all(&tcp::encode(b"fine")).unwrap();
        assert_eq!(read_message(&mut echo), b"fine");
        let stats = server.stats();
        assert_eq!(
            (stats.totals.rejected, stats.totals.protocol_errors),
            (1, 1)
        );
    }
}
