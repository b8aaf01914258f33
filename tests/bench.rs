//! `fanout bench` end to end at small scale: the JSON result has every
//! documented field with sane values.

use std::process::Command;

use fanout::bench::BenchResult;

#[test]
fn small_bench_writes_a_complete_result() {
    let out = std::env::temp_dir().join(format!("fanout-bench-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "bench",
            "--conns",
            "2000",
            "--broadcasts",
            "3",
            "--echo-conns",
            "50,200",
        ])
        .args([
            "--echo-duration",
            "300ms",
            "--churn-rate",
            "500",
            "--churn-duration",
            "300ms",
        ])
        .args(["--name", "small", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("fanout bench — 2000 connections"),
        "{stdout}"
    );
    let written = stdout
        .lines()
        .find_map(|l| l.strip_prefix("written: "))
        .expect("a written: line");
    let result: BenchResult =
        serde_json::from_str(&std::fs::read_to_string(written).unwrap()).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    assert!(result.command.contains("bench"));
    assert!(result.machine.cores >= 1 && !result.machine.git_revision.is_empty());
    assert!(result.server.contains("fanout serve"));
    let idle = &result.idle;
    assert_eq!((idle.opened, idle.failed), (2000, 0));
    assert!(idle.connect_per_s > 0.0 && idle.connect_vs_floor > 0.0);
    assert!(idle.rss_bytes_per_conn.is_finite());
    assert!(
        idle.heap_bytes_per_conn
            .is_some_and(|b| b > 0.0 && b < 1000.0),
        "{:?}",
        idle.heap_bytes_per_conn
    );
    assert!(idle.kernel_bytes_per_socket > 0.0);
    let b = &result.broadcast;
    assert_eq!((b.report.messages_sent, b.report.members), (3, 2000));
    assert_eq!(
        (
            b.report.tally.delivered,
            b.report.tally.missing,
            b.report.tally.duplicated
        ),
        (6000, 0, 0)
    );
    assert!(b.last_delivery_us > 0.0 && b.floor_us > 0.0 && b.vs_floor > 0.0);
    assert_eq!(result.echo.len(), 2);
    assert!(result
        .echo
        .iter()
        .all(|e| e.messages > 0 && e.latency.p99_us > 0.0));
    let churn = result.churn.as_ref().expect("churn");
    assert!(churn.completed > 0);
    let floors = &result.floors;
    assert_eq!(floors.conns, 2000);
    assert!(floors.connect_per_s > 0.0 && floors.write_ns_per_socket > 0.0);
}

#[test]
fn unreachable_targets_stop_in_preflight_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--conns", "100000000", "--no-write"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot be reached here") && stderr.contains("memory:"),
        "{stderr}"
    );
}
