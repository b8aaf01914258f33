//! Limits and pressure: private fd tables, a full fd table (EMFILE), a slow
//! room member over --max-backlog, a listen address already in use, echo
//! backpressure.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

every_backend! {
    fn private_fd_tables_hold_more_than_one_shard_can(backend: Backend) {
        const CONNS: usize = 120;
        if backend == Backend::Tokio {
            // One runtime, one fd table: asking for more is a usage error
            // that names the way past it.
            let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
                .args(["serve", "--backend", "tokio", "--listen", "127.0.0.1:0"])
                .args(["--fds-per-shard", "64", "--max-conns", "120"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("one fd table") && stderr.contains("--backend tokio-tpc"), "{stderr}");
            return;
        }
        // 96 fds leave a table room for tokio-uring's three runtime fds per shard.
        let server = Server::start(backend, &["--fds-per-shard", "96", "--max-conns", "120"]);
        assert!(server.plan.contains("private fd table"), "{}", server.plan);
        let mut clients: Vec<Ws> = (0..CONNS).map(|_| ws_connect(&server, "/echo")).collect();
        for (i, ws) in clients.iter_mut().enumerate() {
            assert_echo(ws, Message::text(format!("client {i}")));
        }
        let stats = server.stats();
        assert_eq!(stats.open, CONNS as u64);
        let per_shard_limit = 96;
        assert!(
            stats.open_per_shard.iter().all(|&n| n < per_shard_limit),
            "{:?}",
            stats.open_per_shard
        );
        assert!(stats.open_per_shard.iter().filter(|&&n| n > 0).count() >= 2);
        // The sockets live in the shards' private tables, not the main one.
        let main_table = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count();
        assert!(main_table < CONNS, "main fd table holds {main_table} fds");
        // A room spread over private tables: a shard wakes the others (their
        // wakers must be valid in its table) and every member gets the message.
        drop(clients);
        server.wait_for_stats("the echo clients to be freed", |s| s.open == 0);
        let mut members: Vec<Ws> = (0..CONNS).map(|_| ws_connect(&server, "/room")).collect();
        let spread = server.stats().open_per_shard;
        assert!(spread.iter().filter(|&&n| n > 0).count() >= 2, "{spread:?}");
        members[0].send(Message::text("to every table")).unwrap();
        for member in &mut members {
            assert_eq!(read_data(member), Message::text("to every table"));
        }
    }

    fn a_full_fd_table_pauses_accepting_without_spinning_and_resumes(backend: Backend) {
        // The child's own RLIMIT_NOFILE is lowered to 64 (lowering needs no privilege).
        let server = Server::start_with(backend, &["--shards", "1"], |command| {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 64,
                        rlim_max: 64,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        });
        // More connections than the table has room for; the kernel completes TCP
        // for all of them, the server can accept only some.
        let streams: Vec<_> = (0..80).map(|_| tcp_connect(server.addr)).collect();
        let stats = server.wait_for_stats("accept to pause on EMFILE", |s| {
            s.totals.accept_pauses_fd_limit > 0
        });
        assert!(stats.open < 64);
        // Over half a second a paused loop wakes a handful of times (retry
        // timer); a spinning one would wake hundreds of thousands of times.
        let before = server.stats().totals.wakeups;
        std::thread::sleep(Duration::from_millis(500));
        let woke = server.stats().totals.wakeups - before;
        assert!(
            woke < 200,
            "event loop woke {woke} times in 0.5 s while paused"
        );
        // Freeing fds lets the waiting connections in.
        let opened_before = stats.totals.accepted;
        drop(streams);
        let mut ws = ws_connect(&server, "/echo");
        assert_echo(&mut ws, Message::text("in after the pause"));
        let stats = server.stats();
        assert!(stats.totals.accepted > opened_before);
    }

    fn a_slow_room_member_is_closed_with_1008_and_others_are_unharmed(backend: Backend) {
        let server = Server::start(backend, &["--max-backlog", "64KiB", "--shards", "1"]);
        // A small receive buffer keeps the kernel from absorbing the backlog.
        let slow_stream = {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&server.addr.into()).unwrap();
            let stream: std::net::TcpStream = socket.into();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            stream
        };
        let (mut slow, _) = tungstenite::client(server.url("/room"), slow_stream).unwrap();
        let mut publisher = ws_connect(&server, "/room");
        let payload = vec![7u8; 32 * 1024];
        for _ in 0..400 {
            publisher.send(Message::binary(payload.clone())).unwrap();
            // The publisher reads its own copy, so it never falls behind.
            assert_eq!(read_data(&mut publisher), Message::binary(payload.clone()));
            if server.stats().totals.backlog_closes > 0 {
                break;
            }
        }
        assert_eq!(server.stats().totals.backlog_closes, 1);
        // The slow member finds data, then a 1008 close, then the end.
        let close = loop {
            match slow.read() {
                Ok(Message::Binary(_)) => continue,
                Ok(Message::Close(frame)) => break frame,
                other => panic!("expected data then a close, got {other:?}"),
            }
        };
        assert_eq!(close.unwrap().code, CloseCode::Policy);
        // tungstenite answers the close on its next call; the server then hangs up.
        assert!(matches!(
            slow.read(),
            Err(tungstenite::Error::ConnectionClosed)
        ));
        publisher.send(Message::text("still delivering")).unwrap();
        assert_eq!(read_data(&mut publisher), Message::text("still delivering"));
        server.wait_for_stats("the slow member to be freed", |s| s.open == 1);
    }

    fn an_echo_client_that_does_not_read_is_paused_not_killed(backend: Backend) {
        const MESSAGES: usize = 256;
        let server = Server::start(backend, &["--max-backlog", "64KiB"]);
        let mut raw = RawWs::connect(&server, "/echo");
        // 16 MiB of echo requests, more than the socket buffers hold, written
        // while nobody reads the replies: the server must stop reading from us
        // rather than queue replies without bound or close us.
        let frame = raw_frame(0x82, &[1u8; 64 * 1024]);
        let mut writer = raw.stream.try_clone().unwrap();
        writer.set_write_timeout(None).unwrap();
        let writing = std::thread::spawn(move || {
            for _ in 0..MESSAGES {
                std::io::Write::write_all(&mut writer, &frame).unwrap();
            }
        });
        server.wait_for_stats("reading to pause", |s| s.totals.read_pauses > 0);
        for i in 0..MESSAGES {
            let (opcode, payload) = raw.read_frame().expect("every echo arrives");
            assert_eq!((opcode, payload.len()), (0x2, 64 * 1024), "reply {i}");
        }
        writing.join().unwrap();
        let stats = server.stats();
        assert_eq!(
            (stats.totals.echoed, stats.totals.backlog_closes),
            (MESSAGES as u64, 0)
        );
    }
}

#[test]
fn a_listen_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["serve", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("already in use"),
        "{stderr}"
    );
    // Another fanout on the same port, which would otherwise share it silently.
    let server = Server::start(Backend::Epoll, &[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["serve", "--listen", &server.addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already in use"));
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["serve", "--listen", "nowhere"][..],
        &["serve", "--max-message", "lots"],
        &["serve", "--handshake-timeout", "10"],
        &["serve", "--shards", "0"],
        &["serve", "--fds-per-shard", "20", "--max-conns", "1000000"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?} explains itself");
    }
}
