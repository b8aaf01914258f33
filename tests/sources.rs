//! `fanout load` on a machine that is not empty: source ports already held
//! toward the server are planned around and named, and a source address
//! that runs out of ports mid-run hands its attempts to the next one. Each
//! test runs in a network namespace of its own with a narrow port range
//! (per-namespace sysctls: nothing changes outside); without the privilege
//! for one it says SKIPPED.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};

use common::{in_new_netns, load_report as load, Backend, Server};

/// `count` connections from `source` to the server, held by this process.
/// Like any load client's, each port is chosen at connect time
/// (IP_BIND_ADDRESS_NO_PORT): bound at bind time, a port would be taken
/// from every source address at once.
fn hold_from(source: Ipv4Addr, server: SocketAddr, count: usize) -> Vec<TcpStream> {
    use std::os::fd::AsRawFd;
    (0..count)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let one: libc::c_int = 1;
            // SAFETY: a valid socket fd and an int option of the right size.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0);
            socket
                .bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())
                .unwrap();
            socket.connect(&server.into()).unwrap();
            socket.into()
        })
        .collect()
}

#[test]
fn ports_already_held_toward_the_server_are_planned_around_and_named() {
    in_new_netns("ports_already_held_are_planned_around", || {
        // 300 ports; a plan fills about a third of each address's range.
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40299").unwrap();
        let server = Server::start(Backend::Epoll, &[]);
        let busy = Ipv4Addr::new(127, 0, 0, 2);
        let held = hold_from(busy, server.addr, 100);
        let url = server.url("/echo");
        let (report, text) = load(&["hold", "--url", &url, "--conns", "150", "--duration", "0s"]);
        assert_eq!(report.connect.opened, 150, "{text}");
        let notes = report.source_notes.join("\n");
        assert!(
            notes.contains(&format!(
                "127.0.0.2: 100 ports toward {} held (0 TIME_WAIT, 100 established, 0 other)",
                server.addr
            )),
            "{notes}"
        );
        // 127.0.0.2 has room for 5 of its share of 105: the plan adds two more.
        assert!(notes.contains("using 127.0.0.2–127.0.0.4"), "{notes}");
        assert!(text.contains("sources   127.0.0.2: 100 ports"), "{text}");
        drop(held);
    });
}

#[test]
fn an_address_out_of_ports_hands_its_attempts_to_the_next() {
    in_new_netns("an_address_out_of_ports_hands_over", || {
        // 100 ports; 127.0.0.2 keeps 20 of them free, 127.0.0.3 all 100.
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40099").unwrap();
        let server = Server::start(Backend::Epoll, &[]);
        let held = hold_from(Ipv4Addr::new(127, 0, 0, 2), server.addr, 80);
        let url = server.url("/echo");
        // Ramp until every attempt fails: round-robin over both addresses.
        let (report, text) = load(&[
            "hold",
            "--url",
            &url,
            "--conns",
            "1000",
            "--duration",
            "0s",
            "--until-failure",
            "--shards",
            "1",
            "--source",
            "127.0.0.2-127.0.0.3",
        ]);
        // Without moving on, the first address out of ports would have
        // stopped the ramp at about 40 (20 from each); moving on, both
        // addresses are used up: 20 + 100, minus the ports the kernel keeps.
        assert!(report.connect.opened >= 110, "{text}");
        assert!(report.connect.source_moves > 0, "{text}");
        assert!(
            report.connect.failures.contains_key("no free source port"),
            "{text}"
        );
        assert!(
            report
                .client
                .warnings
                .iter()
                .any(|w| w.contains("every one of the 2 source addresses out of ports")),
            "{:?}",
            report.client.warnings
        );
        drop(held);
    });
}

#[test]
fn listeners_in_the_port_range_are_lost_to_every_address_and_named() {
    in_new_netns("listeners_in_the_port_range", || {
        // 300 ports, a share of 105 per address; 60 of them listened on
        // from another address, so each source address has room for 45.
        // The server's own listener goes below the range (it would count).
        let range = "/proc/sys/net/ipv4/ip_local_port_range";
        std::fs::write(range, "20000 20999").unwrap();
        let server = Server::start(Backend::Epoll, &[]);
        std::fs::write(range, "40000 40299").unwrap();
        let listeners: Vec<std::net::TcpListener> = (40000..40060)
            .map(|port| std::net::TcpListener::bind(("127.0.0.9", port)).unwrap())
            .collect();
        let url = server.url("/echo");
        let (report, text) = load(&["hold", "--url", &url, "--conns", "150", "--duration", "0s"]);
        assert_eq!(report.connect.opened, 150, "{text}");
        let notes = report.source_notes.join("\n");
        assert!(
            notes.contains("60 ports of the range held by listeners (lost to every address)"),
            "{notes}"
        );
        assert!(notes.contains("using 127.0.0.2–127.0.0.5"), "{notes}");
        let doctor = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["doctor", "--conns", "100", "--url", &url])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&doctor.stdout);
        assert!(
            said.contains("240 ports (40000–40299, 60 held by listeners)")
                && said.contains("60 ports of the range held by listeners on every address"),
            "{said}"
        );
        drop(listeners);
    });
}

/// `count` connections from `source` closed by this side first: each
/// leaves a TIME_WAIT socket holding its port for 60 s.
fn time_wait_from(source: Ipv4Addr, server: SocketAddr, count: usize) {
    drop(hold_from(source, server, count));
    // The server closes its side on EOF; then the client's sockets sit in
    // TIME_WAIT, and connect() may reuse them only after the reuse delay.
    std::thread::sleep(std::time::Duration::from_millis(1500));
}

#[test]
fn time_wait_blocks_an_address_unless_connect_may_reuse_it() {
    for reuse in ["0", "2"] {
        in_new_netns("time_wait_blocks_an_address", move || {
            let range = "/proc/sys/net/ipv4/ip_local_port_range";
            std::fs::write(range, "20000 20999").unwrap();
            let server = Server::start(Backend::Epoll, &[]);
            // 300 ports, a share of 105 per address; 200 in TIME_WAIT.
            std::fs::write(range, "40000 40299").unwrap();
            std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", reuse).unwrap();
            time_wait_from(Ipv4Addr::new(127, 0, 0, 2), server.addr, 200);
            let url = server.url("/echo");
            let (report, text) =
                load(&["hold", "--url", &url, "--conns", "150", "--duration", "0s"]);
            assert_eq!(report.connect.opened, 150, "{text}");
            let notes = report.source_notes.join("\n");
            if reuse == "0" {
                // Never reused: the address is skipped.
                assert!(notes.contains(" TIME_WAIT, 0 established"), "{notes}");
                assert!(
                    notes.contains("using 127.0.0.3–127.0.0.4, skipping 127.0.0.2 (no room)"),
                    "{notes}"
                );
            } else {
                // Loopback, older than the reuse delay: connect() takes
                // them over, so the address keeps its whole share.
                // (A few of the 200 may have closed otherwise.)
                let reusable = (100..=200).any(|n| {
                    notes.contains(&format!("({n} TIME_WAIT ({n} reusable), 0 established"))
                });
                assert!(reusable, "{notes}");
                assert!(notes.contains("using 127.0.0.2–127.0.0.3"), "{notes}");
            }
        });
    }
}

/// `count` connections from 127.0.0.1, each bound to a port of the
/// ephemeral range explicitly (as tcpkali binds its ports), closed by this
/// side: each leaves a TIME_WAIT on an explicitly bound port.
fn explicit_bind_and_close(server: SocketAddr, ports: std::ops::Range<u16>) {
    let held: Vec<TcpStream> = ports
        .filter_map(|port| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_reuse_address(true).unwrap();
            let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            // The server's own listeners sit in this range too.
            socket.bind(&SocketAddr::V4(local).into()).ok()?;
            socket.connect(&server.into()).unwrap();
            Some(socket.into())
        })
        .collect();
    assert!(held.len() >= 890, "{} ports bound", held.len());
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// The machine right after another tool: a client that binds its ports
/// explicitly held and closed most of the range. connect()'s own port
/// search skips every port an explicitly bound socket holds, on any
/// address, so a second source address does not help while the kernel
/// picks the port; fanout then picks ports itself (bind address and port,
/// the 4-tuple free) and opens every connection asked, saying so.
#[test]
fn ports_an_explicit_bind_client_left_in_time_wait_are_chosen_around() {
    in_new_netns("explicit_bind_time_wait", || {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40999").unwrap();
        let server = Server::start(Backend::Epoll, &[]);
        explicit_bind_and_close(server.addr, 40000..40900);
        let url = server.url("/echo");
        let (report, text) = load(&[
            "hold",
            "--url",
            &url,
            "--conns",
            "600",
            "--duration",
            "0s",
            "--shards",
            "2",
        ]);
        assert_eq!(report.connect.opened, 600, "{text}");
        assert_eq!(report.connect.failed, 0, "{text}");
        assert!(report.connect.explicit_ports > 0, "{text}");
        assert!(
            text.contains("chose their source ports itself"),
            "the report says which way it took: {text}"
        );
    });
}
