//! The floor server (`fanout bare`) with raw sockets: the greeting byte,
//! echo of exactly the bytes read, room forwarding to every connection on
//! every shard, and a floor that cannot keep up failing loudly instead of
//! turning into a figure.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{tcp_connect, PATIENCE};
use fanout::process::ServerProcess;
use fanout::protocol::bare::GREETING;

fn start(args: &[&str]) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command
        .args(["bare", "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::inherit());
    ServerProcess::spawn(command, PATIENCE).expect("fanout bare starts")
}

/// Connect and read the greeting.
fn join(server: &ServerProcess) -> TcpStream {
    let mut stream = tcp_connect(server.addr);
    let mut greeting = [0u8; 1];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting[0], GREETING);
    stream
}

fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).unwrap();
    bytes
}

#[test]
fn echo_floor_returns_exactly_the_bytes_read() {
    let server = start(&["--route", "echo"]);
    assert!(
        server.plan.starts_with("fanout bare: echo floor"),
        "{}",
        server.plan
    );
    let mut a = join(&server);
    let mut b = join(&server);
    // Not framed: the floor never parses.
    let odd: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    a.write_all(&odd).unwrap();
    b.write_all(b"\x00\x00\x00\x03abc").unwrap();
    assert_eq!(read_exactly(&mut b, 7), b"\x00\x00\x00\x03abc");
    assert_eq!(read_exactly(&mut a, odd.len()), odd);
    let (stats, status) = server.stop().unwrap();
    assert!(status.success());
    assert_eq!((stats.totals.accepted, stats.totals.delivered), (2, 0));
}

#[test]
fn room_floor_forwards_to_every_connection_on_every_shard() {
    let server = start(&["--route", "room", "--shards", "3"]);
    let mut members: Vec<TcpStream> = (0..30).map(|_| join(&server)).collect();
    let message = b"\x00\x00\x00\x05hello";
    members[7].write_all(message).unwrap();
    for member in &mut members {
        assert_eq!(read_exactly(member, message.len()), message);
    }
    let stats = server.stats().unwrap();
    let shards_used = stats.open_per_shard.iter().filter(|&&n| n > 0).count();
    assert!(shards_used >= 2, "members on one shard only: {stats:?}");
    assert_eq!(stats.totals.delivered, 30);
    drop(members);
    server.stop().unwrap();
}

#[test]
fn a_floor_that_cannot_write_whole_fails_loudly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "bare",
            "--listen",
            "127.0.0.1:0",
            "--route",
            "room",
            "--shards",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no ready line");
        if let Some(addr) = line.trim().strip_prefix("ready ") {
            break addr.parse().unwrap();
        }
    };
    let join = |addr| {
        let mut stream = tcp_connect(addr);
        let mut greeting = [0u8; 1];
        stream.read_exact(&mut greeting).unwrap();
        stream
    };
    // A member that never reads, and a publisher that reads its own copies.
    let _stuck = join(addr);
    let mut publisher = join(addr);
    let mut reader = publisher.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    let chunk = vec![0x5Au8; 1 << 16];
    let start = Instant::now();
    let mut sent = 0usize;
    // Bounded: at most 256 MiB or the patience, whichever comes first.
    while sent < 256 << 20 && start.elapsed() < PATIENCE {
        if publisher.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("the floor is broken"), "{stderr}");
}
