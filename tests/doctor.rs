//! `fanout doctor` on this machine: what it exits with and names. The
//! verdicts themselves are unit-tested with injected values
//! (src/doctor/checks.rs); here, the command around them.

use std::process::{Command, Output};

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("doctor")
        .args(args)
        .output()
        .expect("fanout runs")
}

#[test]
fn a_small_goal_is_within_reach() {
    let output = doctor(&["--conns", "100"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("100 connections are within reach here."),
        "{stdout}"
    );
    // Every limit is listed with its value now and the value needed.
    for limit in [
        "RLIMIT_NOFILE",
        "fs.file-max",
        "ephemeral ports",
        "ports already held",
        "accept queue",
        "nf_conntrack_max",
        "tcp_mem",
        "memory available",
        "io_uring",
        "threads",
    ] {
        assert!(stdout.contains(limit), "{limit} missing from:\n{stdout}");
    }
}

#[test]
fn one_source_address_to_a_remote_server_cannot_reach_ten_million() {
    let output = doctor(&[
        "--conns",
        "10000000",
        "--url",
        "ws://10.0.0.5:80/room",
        "--sources",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  ephemeral ports × source addresses"),
        "{stdout}"
    );
    assert!(stdout.contains("EADDRNOTAVAIL"), "{stdout}");
    assert!(stdout.contains("out of reach"), "{stdout}");
}

#[test]
fn a_url_without_an_ip_host_is_a_usage_error() {
    let output = doctor(&["--url", "ws://example.com/room"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("as an IP address"));
}
