//! `fanout ceiling` forced into each limit it must name: a narrow port range
//! from one source address, a server whose fd table is small, an accept
//! queue nobody drains. Limits that need sysctls run in a network namespace
//! of their own (per-namespace sysctls, counters of their own, nothing
//! changed outside); without the privilege for one they say SKIPPED.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{in_new_netns, Backend, Server};
use serde_json::Value;

fn ceiling(args: &[&str], json: &Path) -> (Output, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("ceiling")
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("fanout runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let result = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (output, result)
}

fn json_path(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fanout-ceiling-{test}-{}.json", std::process::id()))
}

fn limit_and_side(result: &Value) -> (&str, &str) {
    let d = &result["diagnosis"];
    (d["limit"].as_str().unwrap(), d["side"].as_str().unwrap())
}

fn evidence_lines(result: &Value) -> String {
    result["diagnosis"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_ramp_that_meets_no_limit_says_so() {
    let json = json_path("none");
    let (output, result) = ceiling(&["--up-to", "300"], &json);
    assert_eq!(limit_and_side(&result), ("none_below_asked", "neither"));
    assert_eq!(result["evidence"]["held"], 300);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ceiling: 300 connections held"), "{stdout}");
    std::fs::remove_file(json).unwrap();
}

#[test]
fn one_source_address_runs_out_of_ports_and_the_client_is_named() {
    in_new_netns("one_source_address_runs_out_of_ports", || {
        // 200 ephemeral ports in this namespace only.
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40199").unwrap();
        let json = json_path("ports");
        let (_, result) = ceiling(&["--up-to", "1000", "--source", "127.0.0.1"], &json);
        assert_eq!(limit_and_side(&result), ("source_ports", "client"));
        let held = result["evidence"]["held"].as_u64().unwrap();
        assert!((150..=200).contains(&held), "held {held}");
        assert!(evidence_lines(&result).contains("no free source port"));
        assert!(result["fix"]
            .as_str()
            .unwrap()
            .contains("ip_local_port_range"));
        std::fs::remove_file(json).unwrap();
    });
}

#[test]
fn an_accept_queue_nobody_drains_is_named_by_its_counters() {
    in_new_netns("an_accept_queue_nobody_drains", || {
        // A listener with room for 4 that never accepts.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(4).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let json = json_path("queue");
        let url = format!("ws://127.0.0.1:{port}/echo");
        let (_, result) = ceiling(
            &["--url", &url, "--up-to", "500", "--connect-timeout", "1s"],
            &json,
        );
        assert_eq!(limit_and_side(&result), ("accept_queue", "server"));
        let evidence = evidence_lines(&result);
        assert!(evidence.contains("ListenOverflows +"), "{evidence}");
        assert!(evidence.contains("connect timeout"), "{evidence}");
        // The listener is this test's process, found by its port.
        assert_eq!(
            result["evidence"]["server"]["pid"].as_u64(),
            Some(std::process::id() as u64)
        );
        std::fs::remove_file(json).unwrap();
    });
}

every_backend! {
    fn a_server_out_of_fds_is_named_before_the_queue_it_overflows(backend: Backend) {
        // The server's own RLIMIT_NOFILE is lowered to 128 (no privilege needed).
        let server = Server::start_with(backend, &["--shards", "1"], |command| {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit { rlim_cur: 128, rlim_max: 128 };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        });
        let json = json_path(&format!("fds-{}", backend.name()));
        let url = server.url("/echo");
        let (_, result) = ceiling(
            &["--url", &url, "--up-to", "400", "--connect-timeout", "1s"],
            &json,
        );
        assert_eq!(limit_and_side(&result), ("server_fd_table", "server"));
        let held = result["evidence"]["held"].as_u64().unwrap();
        assert!(held < 128, "held {held}");
        let evidence = evidence_lines(&result);
        assert!(evidence.contains(&format!("pid {}", server.pid())), "{evidence}");
        assert!(evidence.contains("of 128 (RLIMIT_NOFILE)"), "{evidence}");
        std::fs::remove_file(json).unwrap();
    }
}

#[test]
fn a_zero_ceiling_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["ceiling", "--up-to", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--up-to"));
}
