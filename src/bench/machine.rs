//! The machine a result was measured on, recorded beside every figure: CPU,
//! cores, memory, kernel, limits, the sysctls that bound connection counts,
//! and the git revision of the code.

use std::collections::BTreeMap;
use std::process::Command;

use serde::{Deserialize, Serialize};

const SYSCTLS: [&str; 9] = [
    "net/core/somaxconn",
    "net/ipv4/tcp_max_syn_backlog",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/ip_local_reserved_ports",
    "net/ipv4/tcp_mem",
    "net/ipv4/tcp_rmem",
    "net/ipv4/tcp_wmem",
    "fs/file-max",
    "fs/nr_open",
];

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Machine {
    /// The machine's hostname.
    pub hostname: String,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Total memory (MemTotal), bytes.
    pub memory_bytes: u64,
    /// Kernel release (uname -r).
    pub kernel: String,
    /// Soft RLIMIT_NOFILE: fds one fd table holds.
    pub rlimit_nofile: usize,
    /// The sysctls that limit connections, as read (name → value).
    pub sysctls: BTreeMap<String, String>,
    /// The fanout source revision (`-dirty` when it had uncommitted changes).
    pub git_revision: String,
    /// The fanout version.
    pub fanout_version: String,
}

impl Machine {
    /// `vm: 2 × Intel Xeon, 23.5 GiB, Linux 6.18`: the machine in a line.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} × {}, {:.1} GiB, Linux {}",
            self.hostname,
            self.cores,
            self.cpu_model,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kernel
        )
    }
}

pub fn fingerprint() -> Machine {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    Machine {
        hostname: read("/proc/sys/kernel/hostname"),
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory_bytes: meminfo_kib("MemTotal") * 1024,
        kernel: read("/proc/sys/kernel/osrelease"),
        rlimit_nofile: crate::sys::nofile_limit().unwrap_or(0),
        sysctls: SYSCTLS
            .iter()
            .map(|name| {
                (
                    name.replace('/', "."),
                    read(&format!("/proc/sys/{name}"))
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })
            .collect(),
        git_revision: git_revision(),
        fanout_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// `git describe` of the working tree, marked `-dirty` when it has changes.
fn git_revision() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A `/proc/meminfo` field in KiB (0 when absent).
pub fn meminfo_kib(field: &str) -> u64 {
    crate::sys::proc_kib("/proc/meminfo", field)
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_reads_this_machine() {
        let m = fingerprint();
        assert!(m.cores >= 1 && m.memory_bytes > 0 && !m.kernel.is_empty());
        assert!(m.sysctls.contains_key("net.core.somaxconn"));
        assert!(meminfo_kib("MemTotal") > 0);
        assert_eq!(meminfo_kib("NoSuchField"), 0);
    }
}
