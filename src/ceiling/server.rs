//! A server seen from outside, for a ceiling's evidence: which process
//! listens on the port, how full its fullest fd table is against its
//! RLIMIT_NOFILE, its memory and CPU. Works for any server on this machine,
//! not only fanout's.

use std::path::Path;

use crate::process::{pids, tasks};

/// What the server's process showed at the ceiling.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ServerView {
    pub pid: u32,
    /// Fds in its fullest fd table (threads with private tables counted
    /// apart; /proc/PID/task/TID/fd).
    pub fullest_fd_table: u64,
    /// Its soft RLIMIT_NOFILE: no fd table can hold more.
    pub nofile_soft: Option<u64>,
    /// Resident memory of it and every process it started.
    pub rss_bytes: u64,
    /// CPU seconds its process tree had used.
    pub cpu_seconds: f64,
}

/// Look at process `pid` now; None when it is gone.
pub fn look(pid: u32) -> Option<ServerView> {
    let proc_dir = format!("/proc/{pid}");
    if !Path::new(&proc_dir).exists() {
        return None;
    }
    let limits = std::fs::read_to_string(format!("{proc_dir}/limits")).unwrap_or_default();
    Some(ServerView {
        pid,
        fullest_fd_table: fullest_fd_table(pid),
        nofile_soft: soft_nofile(&limits),
        rss_bytes: crate::process::tree_rss_bytes(pid),
        cpu_seconds: crate::process::tree_cpu_seconds(pid),
    })
}

/// The process listening on TCP `port` on this machine (in this network
/// namespace), if one can be found.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        inodes.extend(listening_inodes(&text, port));
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    pids().find(|&pid| {
        tasks(pid).any(|task| {
            fd_links(&format!("/proc/{pid}/task/{task}/fd")).any(|link| wanted.contains(&link))
        })
    })
}

/// Inodes of the sockets in LISTEN state (st 0A) on `port`, from the text
/// of /proc/net/tcp or tcp6.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let listening = *state == "0A" && u16::from_str_radix(hex_port, 16).ok()? == port;
            listening.then(|| inode.parse().ok()).flatten()
        })
        .collect()
}

/// The soft "Max open files" of a /proc/PID/limits text.
fn soft_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn fullest_fd_table(pid: u32) -> u64 {
    tasks(pid)
        .map(|task| crate::process::task_fds(pid, task))
        .max()
        .unwrap_or(0)
}

fn fd_links(dir: &str) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some(std::fs::read_link(entry.path()).ok()?.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2329 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 81240 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_are_found() {
        // 0x2329 = 9001; the established connection on it is not a listener.
        assert_eq!(listening_inodes(TCP, 9001), vec![81234]);
        assert_eq!(listening_inodes(TCP, 8080), vec![77]);
        assert!(listening_inodes(TCP, 9002).is_empty());
    }

    #[test]
    fn the_soft_fd_limit_is_read_from_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            20000                20000                files     \n";
        assert_eq!(soft_nofile(limits), Some(20000));
        assert_eq!(soft_nofile("nothing"), None);
    }

    #[test]
    fn this_process_is_found_by_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
        let view = look(std::process::id()).unwrap();
        assert!(view.fullest_fd_table >= 1 && view.rss_bytes > 0, "{view:?}");
    }
}
