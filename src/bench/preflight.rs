//! Before a run: can N connections be reached on this machine? Every check
//! that fails says why and what would fix it, before anything is started.

use super::machine::{meminfo_kib, Machine};
use crate::backend::BackendKind;
use crate::load::{client_shards, sources};
use crate::server::plan::{self, PlanInput};

/// Kernel bytes per idle loopback TCP socket: measured here at 4,186 B with
/// epoll (results/README.md), rounded up.
const KERNEL_BYTES_PER_SOCKET: u64 = 4_200;
/// User-space bytes per connection of the client (~200) and of a
/// hand-rolled server (~64), with slack.
const USER_BYTES_PER_CONN: u64 = 400;
/// More per connection for a task-per-connection server: measured here at
/// 9,750 B (tokio-tungstenite) and 7,500 B (tokio-uring) at 15K, rounded up.
const TASK_BACKEND_BYTES_PER_CONN: u64 = 10_000;
/// Share of available memory a run may plan to use.
const MEMORY_SHARE: f64 = 0.8;

#[derive(Debug, Default)]
pub struct Preflight {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Check `conns` connections against this machine for the floor's epoll
/// plan and every backend's.
pub fn check(conns: usize, machine: &Machine, backends: &[BackendKind]) -> Preflight {
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
    let tasks = backends.iter().any(|kind| kind.is_task_per_connection());
    let user = USER_BYTES_PER_CONN
        + if tasks {
            TASK_BACKEND_BYTES_PER_CONN
        } else {
            0
        };
    let needed = conns as u64 * (2 * KERNEL_BYTES_PER_SOCKET + user);
    let available = meminfo_kib("MemAvailable") * 1024;
    out.lines.push(format!(
        "memory: ~{:.2} GiB estimated (2 sockets × ~4.2 KB kernel + user space per connection{}), {:.1} GiB available",
        gib(needed),
        if tasks { ", ~10 KB of it for a task per connection" } else { "" },
        gib(available)
    ));
    if needed as f64 > available as f64 * MEMORY_SHARE {
        out.errors.push(format!(
            "memory: {conns} connections need ~{:.1} GiB but only {:.1} GiB is available; use fewer connections",
            gib(needed),
            gib(available)
        ));
    }
    let file_max: u64 = sysctl(machine, "fs.file-max").parse().unwrap_or(u64::MAX);
    if file_max < 2 * conns as u64 + 10_000 {
        out.errors.push(format!(
            "fs.file-max is {file_max}, below the {} files both ends need; run scripts/tune.sh (as root)",
            2 * conns + 10_000
        ));
    }
    let somaxconn: usize = sysctl(machine, "net.core.somaxconn").parse().unwrap_or(0);
    if somaxconn < 4096 {
        out.warnings.push(format!(
            "net.core.somaxconn is {somaxconn}: a fast ramp may overflow the accept queue (SYN retries show as 1 s connect latencies); scripts/tune.sh raises it"
        ));
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

fn sysctl<'a>(machine: &'a Machine, name: &str) -> &'a str {
    machine.sysctls.get(name).map(String::as_str).unwrap_or("")
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_pass_and_absurd_ones_say_why() {
        let machine = super::super::machine::fingerprint();
        let ok = check(2_000, &machine, &[BackendKind::Epoll, BackendKind::Uring]);
        assert!(ok.errors.is_empty(), "{:?}", ok.errors);
        assert!(ok.lines.iter().any(|l| l.starts_with("server (epoll):")));
        assert!(ok.lines.iter().any(|l| l.starts_with("server (uring):")));
        let absurd = check(100_000_000, &machine, &[BackendKind::Epoll]);
        assert!(
            absurd.errors.iter().any(|e| e.starts_with("memory:")),
            "{:?}",
            absurd.errors
        );
    }
}
