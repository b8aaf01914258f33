//! A server under test as a child process: start it in a process group of
//! its own, wait for `ready ADDR`, ask `fanout serve` (or `fanout bare`)
//! for `stats` lines (SIGUSR1), measure the memory of its whole process tree
//! (a server started by a shell script, npm or a wrapper is still measured),
//! and stop it by process group so nothing it started outlives the bench.
//! The bench driver and the integration tests drive servers this way.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::server::stats::Snapshot;

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// The process groups of the servers this process started and has not
/// reaped: what [`stop_servers_on_signal`] kills.
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// When this process is told to stop (SIGINT from Ctrl-C, SIGTERM, SIGHUP),
/// kill every server it started that still runs, then exit with 128 + the
/// signal. The servers lead process groups of their own, so Ctrl-C reaches
/// only this process: without this they would outlive it, holding their
/// ports and memory. For `fanout bench` and `fanout ceiling`.
pub fn stop_servers_on_signal() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("stop-servers".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let groups = live_groups();
                for &group in groups.iter() {
                    // SAFETY: kill() of a group a child of ours leads and
                    // that has not been reaped (so not reused).
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
                eprintln!(
                    "fanout: stopped by signal {signal}; killed the {} server(s) it had running",
                    groups.len()
                );
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// What the server printed before `ready` (its plan).
    pub plan: String,
    /// Where it serves Prometheus metrics (`--metrics`), from its `metrics` line.
    pub metrics: Option<SocketAddr>,
    /// Its `tls` line (certificate, state kept, record layer), if it speaks TLS.
    pub tls: Option<String>,
    lines: Receiver<String>,
    patience: Duration,
}

impl ServerProcess {
    /// Spawn `command` (stdout is taken) in a new process group and wait up
    /// to `patience` for its `ready ADDR` line.
    pub fn spawn(mut command: Command, patience: Duration) -> anyhow::Result<ServerProcess> {
        command.stdout(Stdio::piped()).process_group(0);
        let program = command.get_program().to_string_lossy().to_string();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        live_groups().push(child.id() as i32);
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            plan: String::new(),
            metrics: None,
            tls: None,
            lines,
            patience,
        };
        loop {
            let line = server
                .next_line()
                .with_context(|| format!("waiting for {program}'s `ready ADDR` line"))?;
            if let Some(url) = line.strip_prefix("metrics http://") {
                let addr = url.trim_end_matches("/metrics");
                server.metrics = Some(addr.parse().context("parsing the `metrics` address")?);
                continue;
            }
            if line.starts_with("backplane ") {
                continue; // what it connects to, not the plan
            }
            if line.starts_with("tls ") {
                server.tls = Some(line.trim().to_string());
                continue;
            }
            if let Some(addr) = line.strip_prefix("ready ") {
                server.addr = addr.trim().parse().context("parsing the `ready` address")?;
                return Ok(server);
            }
            server.plan.push_str(&line);
        }
    }

    fn next_line(&self) -> anyhow::Result<String> {
        use mpsc::RecvTimeoutError::*;
        self.lines
            .recv_timeout(self.patience)
            .map_err(|error| match error {
                Disconnected => anyhow!("the server exited"),
                Timeout => anyhow!("the server said nothing for {:?}", self.patience),
            })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill() on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Signal every process of the server's group (it leads its own group,
    /// so these are the processes it started).
    fn signal_group(&self, signal: i32) {
        // SAFETY: kill() with a negative pid signals the group our child
        // leads; ESRCH (nobody left) is harmless.
        unsafe { libc::kill(-self.pid(), signal) };
    }

    /// Ask for a `stats` line and parse it (fanout servers only).
    pub fn stats(&self) -> anyhow::Result<Snapshot> {
        self.signal(libc::SIGUSR1);
        self.read_stats()
    }

    fn read_stats(&self) -> anyhow::Result<Snapshot> {
        loop {
            let line = self.next_line()?;
            if let Some(json) = line.strip_prefix("stats ") {
                return serde_json::from_str(json).context("parsing a stats line");
            }
        }
    }

    /// Resident memory of the server and every process it started.
    pub fn tree_rss_bytes(&self) -> u64 {
        tree_rss_bytes(self.pid() as u32)
    }

    /// CPU seconds its process tree has used so far (/proc/PID/stat).
    pub fn tree_cpu_seconds(&self) -> f64 {
        tree_cpu_seconds(self.pid() as u32)
    }

    /// How it ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM a fanout server; its final stats and exit status.
    pub fn stop(self) -> anyhow::Result<(Snapshot, ExitStatus)> {
        self.terminate();
        let (stats, _, status) = self.wait_for_exit()?;
        Ok((stats, status))
    }

    /// Send SIGTERM without waiting: a fanout server starts its drain (a
    /// second one stops it at once).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Wait for the server to end; its final stats, the lines it printed
    /// after them (the drain's summary) and its exit status.
    pub fn wait_for_exit(mut self) -> anyhow::Result<(Snapshot, Vec<String>, ExitStatus)> {
        let stats = self.read_stats()?;
        let after: Vec<String> = self.lines.iter().collect();
        let status = self.child.wait()?;
        self.signal_group(libc::SIGKILL);
        self.forget_group();
        Ok((stats, after, status))
    }

    /// Stop any server: SIGTERM to its whole group, SIGKILL to whatever is
    /// left after a grace period. Returns the leader's exit status.
    pub fn stop_group(mut self) -> anyhow::Result<ExitStatus> {
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + STOP_PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                self.signal_group(libc::SIGKILL);
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A wrapper may have exited before the server it started.
        self.signal_group(libc::SIGKILL);
        self.forget_group();
        Ok(status)
    }

    /// Its group is gone (the leader reaped, the rest killed): nothing for
    /// [`stop_servers_on_signal`] to kill any more.
    fn forget_group(&self) {
        let pid = self.pid();
        live_groups().retain(|&group| group != pid);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait();
        }
        self.forget_group();
    }
}

/// Every process on the machine (in this pid namespace), from /proc.
pub fn pids() -> impl Iterator<Item = u32> {
    numbered_entries("/proc")
}

/// The threads of process `pid`, from /proc/PID/task.
pub fn tasks(pid: u32) -> impl Iterator<Item = u32> {
    numbered_entries(&format!("/proc/{pid}/task"))
}

/// Fds in the table thread `task` of process `pid` uses (threads that took
/// a private table with unshare(CLONE_FILES) show their own).
pub fn task_fds(pid: u32, task: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task/{task}/fd")).map_or(0, |dir| dir.count() as u64)
}

/// The entries of `dir` named by a number.
fn numbered_entries(dir: &str) -> impl Iterator<Item = u32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The pids of `root` and all its descendants, from /proc/*/stat.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for pid in pids() {
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        tree.extend(children.get(&tree[next]).into_iter().flatten());
        next += 1;
    }
    tree
}

/// The parent pid of `pid`: field 4 of /proc/PID/stat, after the command
/// name in parentheses (which may itself contain spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

fn parse_parent(stat: &str) -> Option<u32> {
    stat_field(stat, 4)?.parse().ok()
}

/// Field `n` (from 1, as in proc(5)) of a /proc/PID/stat line; fields 3 on
/// come after the command name in parentheses.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(n.checked_sub(3)?)
}

/// CPU time (user + system, all threads) of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime (field 14) + stime (field 15), in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let utime: u64 = stat_field(stat, 14)?.parse().ok()?;
    let stime: u64 = stat_field(stat, 15)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds used so far by `root` and its descendants.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    process_tree(root).into_iter().filter_map(cpu_seconds).sum()
}

/// Resident memory of `root` and its descendants (processes that exit
/// while being read count as 0).
pub fn tree_rss_bytes(root: u32) -> u64 {
    process_tree(root)
        .iter()
        .filter_map(|pid| crate::sys::resident_bytes_of(&pid.to_string()).ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_a_command_name_with_spaces_and_parens() {
        assert_eq!(parse_parent("42 (my (odd) name) S 7 42 42 0"), Some(7));
        assert_eq!(parse_parent("garbage"), None);
        let stat = "42 (a) b) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3";
        assert_eq!(parse_cpu_ticks(stat), Some(280));
    }

    #[test]
    fn a_tree_holds_grandchildren_and_its_memory_sums_them() {
        // sh starts a sleep and waits: the sleep is sh's child.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let root = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let tree = loop {
            let tree = process_tree(root);
            if tree.len() >= 2 || Instant::now() > deadline {
                break tree;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let sleep_pid = tree[1];
        let sleep_rss = crate::sys::resident_bytes_of(&sleep_pid.to_string()).unwrap();
        let sh_rss = crate::sys::resident_bytes_of(&root.to_string()).unwrap();
        let total = tree_rss_bytes(root);
        // SAFETY: signalling processes this test started.
        unsafe { libc::kill(sleep_pid as i32, libc::SIGKILL) };
        child.wait().unwrap();
        assert_eq!(tree.len(), 2, "{tree:?}");
        assert!(
            total >= sh_rss + sleep_rss / 2 && sleep_rss > 0,
            "{total} {sh_rss} {sleep_rss}"
        );
    }
}
