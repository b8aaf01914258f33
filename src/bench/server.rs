//! `fanout serve` as a child process: start it, wait for `ready`, ask for
//! `stats` lines (SIGUSR1), stop it (SIGTERM) and collect its final stats.
//! The bench driver and the integration tests both drive the server this way.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::server::stats::Snapshot;

pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// What the server printed before `ready` (its plan).
    pub plan: String,
    lines: Receiver<String>,
    patience: Duration,
}

impl ServerProcess {
    /// Spawn `command` (a `fanout serve ...` invocation; stdout is taken) and
    /// wait up to `patience` for its `ready` line.
    pub fn spawn(mut command: Command, patience: Duration) -> anyhow::Result<ServerProcess> {
        command.stdout(Stdio::piped());
        let mut child = command.spawn().context("starting fanout serve")?;
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
            lines,
            patience,
        };
        loop {
            let line = server
                .next_line()
                .context("waiting for the server's `ready` line")?;
            if let Some(addr) = line.strip_prefix("ready ") {
                server.addr = addr.parse().context("parsing the `ready` address")?;
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

    /// Ask for a `stats` line and parse it.
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

    /// SIGTERM; the final stats and the exit status.
    pub fn stop(mut self) -> anyhow::Result<(Snapshot, ExitStatus)> {
        self.signal(libc::SIGTERM);
        let stats = self.read_stats()?;
        let status = self.child.wait()?;
        Ok((stats, status))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
