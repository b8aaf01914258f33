//! `fanout serve --backplane`: two server instances share one room through
//! a real redis-server (Debian's package, which .ci/run installs), started
//! here on a free loopback port with no persistence. Every member on either
//! instance gets every message exactly once, wherever it was published; a
//! Redis restart never holds up local delivery and the room is whole again
//! once Redis is back.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use fanout::backplane::redis_server::RedisServer;
use fanout::backplane::resp::Value;
use fanout::protocol::tcp;
use tungstenite::Message;

fn wait_for_subscribers(redis: &RedisServer, channel: &str, count: i64) {
    assert!(
        redis.wait_for_subscribers(channel, count, Duration::from_secs(15)),
        "{count} subscribers to {channel} never came"
    );
}

/// Read room messages until `expected` have come, then check nothing more
/// arrives for a moment: each exactly once, in order.
fn expect_exactly(member: &mut Ws, expected: &[String]) {
    for want in expected {
        match read_data(member) {
            Message::Text(got) => assert_eq!(got.as_str(), want),
            other => panic!("expected {want}, got {other:?}"),
        }
    }
    set_read_timeout(member, Some(Duration::from_millis(300)));
    match member.read() {
        Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("nothing more expected, got {other:?}"),
    }
    set_read_timeout(member, Some(PATIENCE));
}

fn set_read_timeout(member: &mut Ws, timeout: Option<Duration>) {
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = member.get_mut() {
        stream.set_read_timeout(timeout).unwrap();
    }
}

fn messages(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn publish(publisher: &mut Ws, texts: &[String]) {
    for text in texts {
        publisher.send(Message::text(text.clone())).unwrap();
    }
}

/// Two instances on one channel, three members each.
struct TwoInstances {
    a: Server,
    b: Server,
    on_a: Vec<Ws>,
    on_b: Vec<Ws>,
}

fn two_instances(backend: Backend, redis: &RedisServer, channel: &str) -> TwoInstances {
    let args = ["--backplane", &redis.url(), "--channel", channel];
    let (a, b) = (Server::start(backend, &args), Server::start(backend, &args));
    wait_for_subscribers(redis, channel, 2);
    let on_a = (0..3).map(|_| ws_connect(&a, "/room")).collect();
    let on_b = (0..3).map(|_| ws_connect(&b, "/room")).collect();
    a.wait_for_stats("3 members", |s| s.totals.upgraded == 3);
    b.wait_for_stats("3 members", |s| s.totals.upgraded == 3);
    TwoInstances { a, b, on_a, on_b }
}

fn every_backend() -> Vec<Backend> {
    [
        Backend::Epoll,
        Backend::Uring,
        Backend::Tokio,
        Backend::TokioTpc,
        Backend::TokioUring,
    ]
    .into_iter()
    .filter_map(|b| b.available_or_skip("backplane"))
    .collect()
}

#[test]
fn every_member_on_either_instance_gets_every_message_once() {
    let Some(redis) = redis_or_skip("every_member_gets_every_message_once") else {
        return;
    };
    for backend in every_backend() {
        let channel = format!("once-{}", backend.name());
        let mut room = two_instances(backend, &redis, &channel);
        let from_a = messages("from-a", 20);
        publish(&mut room.on_a[0], &from_a);
        for member in room.on_a.iter_mut().chain(&mut room.on_b) {
            expect_exactly(member, &from_a);
        }
        let from_b = messages("from-b", 10);
        publish(&mut room.on_b[2], &from_b);
        for member in room.on_a.iter_mut().chain(&mut room.on_b) {
            expect_exactly(member, &from_b);
        }
        let (a, b) = (room.a.stats().totals, room.b.stats().totals);
        assert_eq!((a.backplane_published, a.backplane_received), (20, 10));
        assert_eq!((b.backplane_published, b.backplane_received), (10, 20));
        for totals in [a, b] {
            assert_eq!(totals.backplane_dropped + totals.backplane_missed, 0);
            assert_eq!(totals.backplane_rejected + totals.backplane_outages, 0);
        }
    }
}

#[test]
fn a_redis_restart_never_holds_up_local_delivery_and_the_room_comes_back() {
    let Some(redis) = redis_or_skip("a_redis_restart") else {
        return;
    };
    let channel = "restart";
    let mut room = two_instances(Backend::Epoll, &redis, channel);
    let before = messages("before", 5);
    publish(&mut room.on_a[0], &before);
    for member in room.on_a.iter_mut().chain(&mut room.on_b) {
        expect_exactly(member, &before);
    }
    // Redis goes away: A's members still get A's messages at once; they
    // cannot cross, and A counts them as not published.
    let port = redis.port;
    drop(redis);
    let during = messages("during", 5);
    publish(&mut room.on_a[0], &during);
    for member in &mut room.on_a {
        expect_exactly(member, &during);
    }
    room.a.wait_for_stats("the outage's messages dropped", |s| {
        s.totals.backplane_dropped == 5
    });
    for member in &mut room.on_b {
        expect_exactly(member, &[]);
    }
    // Redis is back on the same port: both links reconnect by themselves.
    let redis = RedisServer::start_on(port).expect("redis-server starts again");
    wait_for_subscribers(&redis, channel, 2);
    let after = messages("after", 5);
    publish(&mut room.on_a[0], &after);
    for member in room.on_a.iter_mut().chain(&mut room.on_b) {
        expect_exactly(member, &after);
    }
    let (a, b) = (room.a.stats().totals, room.b.stats().totals);
    assert_eq!(a.backplane_published, 10);
    assert_eq!(b.backplane_received, 10);
    assert!(
        a.backplane_outages >= 1 && b.backplane_outages >= 1,
        "{a:?} {b:?}"
    );
    // Nothing A published was lost on the way: the outage's messages were
    // never published, so B has no gap in A's sequence.
    assert_eq!(b.backplane_missed, 0);
}

/// The load generator's own accounting across three instances: 30
/// members spread round-robin, one publisher on the first, every delivery
/// checked by sequence number — each member has each message once.
#[test]
fn a_broadcast_over_three_instances_reaches_every_member_once() {
    let Some(redis) = redis_or_skip("a_broadcast_over_three_instances") else {
        return;
    };
    let args = ["--backplane", &redis.url(), "--channel", "three"];
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(Backend::Epoll, &args))
        .collect();
    wait_for_subscribers(&redis, "three", 3);
    let urls: Vec<String> = servers.iter().map(|s| s.url("/room")).collect();
    let mut command = vec![
        "broadcast",
        "--conns",
        "30",
        "--count",
        "20",
        "--interval",
        "5ms",
    ];
    for url in &urls {
        command.extend(["--url", url]);
    }
    let (report, _) = load_report(&command);
    let b = report.broadcast.expect("a broadcast section");
    assert_eq!((b.members, b.messages_sent), (30, 20));
    assert_eq!(
        (b.tally.delivered, b.tally.missing, b.tally.duplicated),
        (600, 0, 0)
    );
    let opened: Vec<u64> = report.servers.iter().map(|s| s.opened).collect();
    assert_eq!(opened, [10, 10, 10]);
    // The publisher's instance handed 20 to Redis; the other two got them.
    let totals: Vec<_> = servers.iter().map(|s| s.stats().totals).collect();
    let mut published: Vec<u64> = totals.iter().map(|t| t.backplane_published).collect();
    published.sort();
    assert_eq!(published, [0, 0, 20]);
    for totals in totals.iter().filter(|t| t.backplane_published == 0) {
        assert_eq!(totals.backplane_received, 20);
    }
}

/// Instances on different backends share one room: what crosses is the
/// frame the members get, whichever room (shard core, tungstenite's
/// messages, the session task's frames) it came from. WebSocket between
/// epoll and tokio, raw TCP between tokio-uring and epoll.
#[test]
fn instances_on_different_backends_share_one_room() {
    let Some(redis) = redis_or_skip("instances_on_different_backends") else {
        return;
    };
    let url = redis.url();
    let ws =
        |backend: Backend| Server::start(backend, &["--backplane", &url, "--channel", "mixed-ws"]);
    let (a, b) = (ws(Backend::Epoll), ws(Backend::Tokio));
    wait_for_subscribers(&redis, "mixed-ws", 2);
    let mut members = [ws_connect(&a, "/room"), ws_connect(&b, "/room")];
    a.wait_for_stats("a member", |s| s.totals.upgraded == 1);
    b.wait_for_stats("a member", |s| s.totals.upgraded == 1);
    let from_a = messages("epoll", 3);
    publish(&mut members[0], &from_a);
    let from_b = messages("tokio", 3);
    members.iter_mut().for_each(|m| expect_exactly(m, &from_a));
    publish(&mut members[1], &from_b);
    members.iter_mut().for_each(|m| expect_exactly(m, &from_b));

    let Some(tokio_uring) = Backend::TokioUring.available_or_skip("mixed tcp") else {
        return;
    };
    let tcp = |backend: Backend| {
        let args = [
            "--proto",
            "tcp",
            "--backplane",
            &url,
            "--channel",
            "mixed-tcp",
        ];
        Server::start(backend, &args)
    };
    let (c, d) = (tcp(tokio_uring), tcp(Backend::Epoll));
    wait_for_subscribers(&redis, "mixed-tcp", 2);
    let mut on_c = tcp_member(c.addr);
    let mut on_d = tcp_member(d.addr);
    c.wait_for_stats("a member", |s| s.totals.upgraded == 1);
    d.wait_for_stats("a member", |s| s.totals.upgraded == 1);
    on_c.write_all(&tcp::encode(b"over tcp")).unwrap();
    for member in [&mut on_c, &mut on_d] {
        let mut got = vec![0u8; tcp::HEADER_LEN + 8];
        member.read_exact(&mut got).unwrap();
        assert_eq!(&got[tcp::HEADER_LEN..], b"over tcp");
    }
}

/// A raw-TCP room member, past its hello.
fn tcp_member(addr: SocketAddr) -> TcpStream {
    let mut stream = tcp_connect(addr);
    stream.write_all(&tcp::encode(b"/room")).unwrap();
    let mut hello = vec![0; tcp::HEADER_LEN + tcp::HELLO_OK.len()];
    stream.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[tcp::HEADER_LEN..], tcp::HELLO_OK);
    stream
}

/// Redis drops the subscribed links only (CLIENT KILL TYPE pubsub): what A
/// publishes before they are back reaches Redis but nobody listening, and
/// B counts exactly those messages as missed, from A's sequence numbers.
#[test]
fn a_subscriber_that_was_away_counts_what_it_missed() {
    let Some(redis) = redis_or_skip("a_subscriber_that_was_away") else {
        return;
    };
    let channel = "away";
    let mut room = two_instances(Backend::Epoll, &redis, channel);
    // B must have heard from A once to know where A's numbers stand.
    let hello = messages("hello", 1);
    publish(&mut room.on_a[0], &hello);
    for member in room.on_a.iter_mut().chain(&mut room.on_b) {
        expect_exactly(member, &hello);
    }
    let killed = redis.query(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
    assert_eq!(killed.ok(), Some(Value::Integer(2)));
    // Published at once, well inside the subscribers' 50 ms before they
    // reconnect.
    let unheard = messages("unheard", 5);
    publish(&mut room.on_a[0], &unheard);
    for member in &mut room.on_a {
        expect_exactly(member, &unheard);
    }
    room.a
        .wait_for_stats("6 published", |s| s.totals.backplane_published == 6);
    wait_for_subscribers(&redis, channel, 2);
    let heard = messages("heard", 5);
    publish(&mut room.on_a[0], &heard);
    for member in room.on_a.iter_mut() {
        expect_exactly(member, &heard);
    }
    for member in room.on_b.iter_mut() {
        expect_exactly(member, &heard);
    }
    let b = room.b.stats().totals;
    assert_eq!((b.backplane_received, b.backplane_missed), (6, 5), "{b:?}");
    assert!(b.backplane_outages >= 1);
}

#[test]
fn backplane_options_that_cannot_work_are_refused() {
    for (args, says) in [
        (
            &["--backplane", "http://127.0.0.1:1"][..],
            "redis://HOST:PORT",
        ),
        (&["--backplane", "redis://10.1.2.3:6379"], "loopback"),
        (&["--channel", "x"], "--backplane"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
