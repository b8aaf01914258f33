//! The server side, free of any event loop: the shard core (connections,
//! sessions, the room, deadlines), the hub where shards meet, the shard
//! plan, and the process skeleton that starts shards, prints `ready <addr>`,
//! turns SIGUSR1 into `stats` lines and stops cleanly on SIGINT or SIGTERM.
//! Backends (`crate::backend`) build on this; nothing here knows them.

pub mod core;
pub mod deadline;
pub mod hub;
pub mod listen;
pub mod plan;
pub mod session;
pub mod settings;
pub mod stats;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::sys;
use hub::{Hub, Wake};
pub use plan::FdUse;
use plan::{FdTables, Plan, PlanInput};
use stats::Snapshot;

/// How often the main thread looks for signals and dead shards.
const SUPERVISE_EVERY: Duration = Duration::from_millis(20);

/// What one shard thread needs besides its backend state.
pub struct ShardSetup {
    pub id: usize,
    /// Connections this shard may hold before it pauses accepting.
    pub conn_limit: usize,
    pub settings: Arc<settings::Settings>,
    pub hub: Arc<Hub>,
}

/// The plan for a server with these options on this machine.
pub fn plan_for(
    shards: Option<usize>,
    max_conns: Option<usize>,
    fds_per_shard: Option<usize>,
    fd_use: FdUse,
) -> anyhow::Result<Plan> {
    let nofile = sys::nofile_limit().context("reading RLIMIT_NOFILE")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let plan = plan::plan(PlanInput {
        cores,
        shards,
        max_conns,
        nofile,
        fds_per_shard,
        fd_use,
    })?;
    Ok(plan)
}

/// The life of a server process, whatever its shards run: claim the
/// address, make every shard's event loop (`prepare`, in this thread, so
/// that its waker is valid in every fd table), start one thread per shard
/// (private fd table if planned, its own SO_REUSEPORT listener, then `run`),
/// print `banner` and `ready <addr>`, answer SIGUSR1 with a `stats` line,
/// and stop cleanly on SIGINT or SIGTERM. `fanout serve` and the floor
/// server (`fanout bare`) both live here.
pub fn run_shards<P, R>(
    plan: &Plan,
    listen: SocketAddr,
    banner: String,
    prepare: impl Fn() -> std::io::Result<(P, Box<dyn Wake>)>,
    run: R,
) -> anyhow::Result<()>
where
    P: Send + 'static,
    R: Fn(P, std::net::TcpListener, usize, Arc<Hub>) -> std::io::Result<()>
        + Clone
        + Send
        + 'static,
{
    let addr = listen::claim_address(listen)?;
    // Made before any shard unshares, so the signal pipe is in every table.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
    let (prepared, wakers): (Vec<_>, Vec<_>) = (0..plan.shards)
        .map(|_| prepare())
        .collect::<std::io::Result<Vec<_>>>()
        .context("creating event loops")?
        .into_iter()
        .unzip();
    let hub = Arc::new(Hub::new(wakers));
    let (bound_tx, bound_rx) = mpsc::channel();
    let private = plan.fd_tables == FdTables::PerShard;
    let shards: Vec<JoinHandle<()>> = prepared
        .into_iter()
        .enumerate()
        .map(|(id, prepared)| {
            let (hub, run, bound) = (hub.clone(), run.clone(), bound_tx.clone());
            std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || {
                    let Some(listener) = bind_shard(addr, private, bound) else {
                        return;
                    };
                    if let Err(error) = run(prepared, listener, id, hub) {
                        eprintln!("shard {id} stopped: {error}");
                    }
                })
        })
        .collect::<std::io::Result<_>>()
        .context("spawning shard threads")?;
    drop(bound_tx);
    for _ in 0..plan.shards {
        let started = bound_rx
            .recv()
            .unwrap_or_else(|_| Err("a shard died while starting".into()));
        if let Err(error) = started {
            stop(&hub, shards);
            anyhow::bail!("cannot listen on {addr}: {error}");
        }
    }
    println!("{banner}");
    println!("ready {addr}");
    std::io::stdout().flush()?;
    let outcome = supervise(&mut signals, &hub, &shards);
    stop(&hub, shards);
    // The shards are gone, and their allocator caches with them.
    print_stats(&hub, false);
    outcome
}

/// In a shard thread: take a private fd table if planned, bind the
/// listener, and report how that went.
fn bind_shard(
    addr: SocketAddr,
    private_fd_table: bool,
    bound: mpsc::Sender<Result<(), String>>,
) -> Option<std::net::TcpListener> {
    let listener = (|| {
        if private_fd_table {
            sys::unshare_fd_table()?;
        }
        listen::reuseport_listener(addr)
    })();
    let _ = bound.send(listener.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    listener.ok()
}

/// Wait for a signal or a shard that died; print stats on SIGUSR1.
fn supervise(signals: &mut Signals, hub: &Hub, shards: &[JoinHandle<()>]) -> anyhow::Result<()> {
    loop {
        for signal in signals.pending() {
            match signal {
                SIGUSR1 => print_stats(hub, true),
                _ => return Ok(()),
            }
        }
        if let Some(id) = shards.iter().position(JoinHandle::is_finished) {
            anyhow::bail!("shard {id} stopped unexpectedly");
        }
        std::thread::sleep(SUPERVISE_EVERY);
    }
}

fn stop(hub: &Hub, shards: Vec<JoinHandle<()>>) {
    hub.request_shutdown();
    for shard in shards {
        let _ = shard.join();
    }
}

/// Print a `stats` line; with `flush`, after every running shard has
/// flushed its allocator cache (see [`Hub::flush_allocator_caches`]).
fn print_stats(hub: &Hub, flush: bool) {
    if flush {
        hub.flush_allocator_caches(Duration::from_secs(1));
    }
    let snapshot = Snapshot::take(hub.all_counters());
    let json = serde_json::to_string(&snapshot).expect("stats serialize");
    println!("stats {json}");
    let _ = std::io::stdout().flush();
}
