//! Before a run: can N connections be reached on this machine? Every check
//! that fails says why and what would fix it, before anything is started.

use super::machine::Machine;
use crate::backend::BackendKind;
use crate::doctor::checks::{self, Goal, Snapshot, Verdict};
use crate::load::{client_shards, sources};
use crate::server::plan::{self, PlanInput};

/// More per connection for a task-per-connection server: measured here at
/// 9,750 B (tokio-tungstenite) and 7,500 B (tokio-uring) at 15K, rounded up.
const TASK_BACKEND_BYTES_PER_CONN: u64 = 10_000;

/// More per connection over TLS (--tls), both ends' compact state: measured
/// here at 305 B (server) and 316 B (client) at 1M, with slack. A task
/// backend keeps rustls's state: 6,500 B more measured at 15K (tokio).
const TLS_BYTES_PER_CONN: u64 = 700;
const TASK_BACKEND_TLS_BYTES_PER_CONN: u64 = 8_000;
/// More per connection with `--deflate per-connection` once a broadcast
/// has gone through: the server's compressor, measured at 393,603 B
/// (zlib-rs's 376,832 B in jemalloc's 384 KiB class, results/2026-12-07-vm
/// deflate-15k), and the client's inflater (2^15 B + 7 KiB, by zlib's sizing).
const DEFLATE_PER_CONNECTION_BYTES: u64 = 393_603 + 39_936;

#[derive(Debug, Default)]
pub struct Preflight {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Check `conns` connections against this machine for the floor's epoll
/// plan and every backend's.
pub fn check(
    conns: usize,
    machine: &Machine,
    backends: &[BackendKind],
    memory_share: f64,
    tls: bool,
    deflate: &[crate::protocol::deflate::DeflateMode],
) -> Preflight {
    let mut out = Preflight::default();
    let cores = machine.cores;
    let nofile = machine.rlimit_nofile;
    let mut kinds = vec![BackendKind::Epoll];
    kinds.extend(backends.iter().filter(|b| **b != BackendKind::Epoll));
    for kind in kinds {
        if kind.single_fd_table() {
            out.lines.push(one_table_line(
                kind,
                conns,
                cores,
                nofile,
                &mut out.warnings,
            ));
            continue;
        }
        match plan::plan(PlanInput {
            cores,
            shards: None,
            max_conns: Some(super::server_max_conns(conns)),
            nofile,
            fds_per_shard: None,
            fd_use: crate::backend::fd_use(kind),
        }) {
            Ok(plan) => out.lines.push(format!("server ({}): {plan}", kind.name())),
            Err(e) => out.errors.push(format!(
                "server ({}): {e}; ask for fewer connections",
                kind.name()
            )),
        }
    }
    let (shards, private) = client_shards(None, cores, conns, nofile);
    out.lines.push(format!(
        "client: {shards} shards{}",
        if private {
            ", each with a private fd table"
        } else {
            ""
        }
    ));
    let ports = sources::ports_per_source();
    match sources::plan(conns, ports, None) {
        Ok(list) => out.lines.push(format!(
            "sources: {} addresses from {} × {ports} ephemeral ports",
            list.len(),
            list[0]
        )),
        Err(e) => out.errors.push(format!("sources: {e}")),
    }
    // The machine-wide limits are fanout doctor's checks.
    let tasks = backends.iter().any(|kind| kind.is_task_per_connection());
    let goal = Goal {
        conns: conns as u64,
        local_client: true,
        source_addresses: 1,
        user_bytes_per_conn: checks::fanout_user_bytes_per_conn(true)
            + match (tasks, tls) {
                (false, false) => 0,
                (true, false) => TASK_BACKEND_BYTES_PER_CONN,
                (false, true) => TLS_BYTES_PER_CONN,
                (true, true) => TASK_BACKEND_BYTES_PER_CONN + TASK_BACKEND_TLS_BYTES_PER_CONN,
            }
            + match deflate.contains(&crate::protocol::deflate::DeflateMode::PerConnection) {
                true => DEFLATE_PER_CONNECTION_BYTES,
                false => 0,
            },
        memory_share,
    };
    let snapshot = Snapshot::read();
    let limits = [
        checks::memory(&snapshot, &goal),
        checks::file_max(&snapshot, &goal),
        checks::accept_queue(&snapshot),
    ];
    for check in limits {
        let text = format!(
            "{}: now {}; needed {}",
            check.limit, check.current, check.needed
        );
        match check.verdict {
            Verdict::Ok => out.lines.push(text),
            Verdict::Warn => out.warnings.push(format!("{text}: {}", check.fix)),
            Verdict::Fail => out.errors.push(format!("{text}: {}", check.fix)),
        }
    }
    out
}

/// A single-runtime backend (`tokio`) is one shard in one fd table: say
/// what it holds, and warn when the run asks for more (it will stop short).
fn one_table_line(
    kind: BackendKind,
    conns: usize,
    cores: usize,
    nofile: usize,
    warnings: &mut Vec<String>,
) -> String {
    let one_table = plan::plan(PlanInput {
        cores,
        shards: Some(1),
        max_conns: None,
        nofile,
        fds_per_shard: None,
        fd_use: crate::backend::fd_use(kind),
    })
    .expect("one shard in one table always has a plan");
    if one_table.capacity < conns {
        warnings.push(format!(
            "server ({}): one runtime in one fd table holds {} connections, fewer than the {conns} asked; it will stop short there (tokio-tpc is the way past)",
            kind.name(),
            one_table.capacity
        ));
    }
    format!(
        "server ({}): {one_table}, one runtime with a worker per core",
        kind.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_pass_and_absurd_ones_say_why() {
        let machine = super::super::machine::fingerprint();
        let share = checks::MEMORY_SHARE;
        let ok = check(
            2_000,
            &machine,
            &[BackendKind::Epoll, BackendKind::Uring],
            share,
            false,
            &[],
        );
        assert!(ok.errors.is_empty(), "{:?}", ok.errors);
        assert!(ok.lines.iter().any(|l| l.starts_with("server (epoll):")));
        assert!(ok.lines.iter().any(|l| l.starts_with("server (uring):")));
        let absurd = check(
            100_000_000,
            &machine,
            &[BackendKind::Epoll],
            share,
            false,
            &[],
        );
        assert!(
            absurd
                .errors
                .iter()
                .any(|e| e.starts_with("memory available:")),
            "{:?}",
            absurd.errors
        );
    }
}
