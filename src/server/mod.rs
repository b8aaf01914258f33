//! The server side, free of any event loop: the shard core (connections,
//! sessions, the room, deadlines), the hub where shards meet, the shard
//! plan, and the process skeleton that starts shards, prints `ready <addr>`,
//! turns SIGUSR1 into `stats` lines and stops cleanly on SIGINT or SIGTERM.
//! Backends (`crate::backend`) build on this; nothing here knows them.

pub mod admission;
pub mod core;
pub mod deadline;
pub mod deflate;
pub mod histogram;
pub mod hub;
pub mod listen;
pub mod metrics;
pub mod overload;
pub mod plan;
pub mod session;
pub mod settings;
pub mod silence;
pub mod stats;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::sys;
use hub::{Hub, OtherInstances, Wake};
pub use plan::FdUse;
use plan::{FdTables, Plan, PlanInput};

/// How often the main thread looks for signals and dead shards.
const SUPERVISE_EVERY: Duration = Duration::from_millis(20);

/// What a server runs beside its shards, each optional.
#[derive(Default)]
pub struct Services {
    /// Prometheus scrapes at this address.
    pub metrics: Option<SocketAddr>,
    /// The room across instances (`--backplane`).
    pub others: Option<LinkToOthers>,
    /// With TLS: what the kernel said when asked for kernel TLS.
    pub tls_kernel: Option<crate::tls::kernel::KernelTls>,
}

/// How to reach the other instances of this server once the hub exists, and
/// the line the server prints about it.
pub struct LinkToOthers {
    pub describe: String,
    pub start: StartLink,
}

/// Starts the link (its threads, its connections) for a hub.
pub type StartLink = Box<dyn FnOnce(Arc<Hub>) -> std::io::Result<Arc<dyn OtherInstances>>>;

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
/// and `run` it with its [`ShardStart`], print `banner` and `ready <addr>`,
/// answer SIGUSR1 with a `stats` line (and scrapes at `metrics`, if
/// given), and stop cleanly on SIGINT or SIGTERM. `fanout serve` and the
/// floor server (`fanout bare`) both live here.
pub fn run_shards<P, R>(
    plan: &Plan,
    listen: SocketAddr,
    services: Services,
    banner: String,
    prepare: impl Fn() -> std::io::Result<(P, Box<dyn Wake>)>,
    run: R,
) -> anyhow::Result<()>
where
    P: Send + 'static,
    R: Fn(P, ShardStart, usize, Arc<Hub>) -> std::io::Result<()> + Clone + Send + 'static,
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
    if let Some(kernel) = services.tls_kernel {
        hub.set_tls_kernel(kernel);
    }
    let mut backplane_line = None;
    let metrics = services
        .metrics
        .map(|addr| metrics::start(addr, hub.clone()))
        .transpose()?;
    if let Some(link) = services.others {
        let others = (link.start)(hub.clone()).context("starting the backplane's threads")?;
        hub.attach_other_instances(others);
        backplane_line = Some(link.describe);
    }
    let (bound_tx, bound_rx) = mpsc::channel();
    let everyone_ready = Arc::new(Barrier::new(plan.shards));
    let private = plan.fd_tables == FdTables::PerShard;
    let shards: Vec<JoinHandle<()>> = prepared
        .into_iter()
        .enumerate()
        .map(|(id, prepared)| {
            let (hub, run) = (hub.clone(), run.clone());
            let start = ShardStart {
                addr,
                private_fd_table: private,
                everyone_ready: everyone_ready.clone(),
                bound: Some(bound_tx.clone()),
            };
            std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || {
                    if let Err(error) = run(prepared, start, id, hub) {
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
    if let Some(metrics) = metrics {
        println!("metrics http://{metrics}/metrics");
    }
    if let Some(line) = backplane_line {
        println!("{line}");
    }
    println!("ready {addr}");
    std::io::stdout().flush()?;
    let outcome = supervise(&mut signals, &hub, &shards);
    stop(&hub, shards);
    // The shards are gone, and their allocator caches with them.
    print_stats(&hub, false);
    if let Some(began) = hub.drain_began() {
        println!("{}", drain_summary(&hub.snapshot().totals, began.elapsed()));
    }
    outcome
}

/// The last line of a drained server: how its goodbyes went. Connections
/// the server stopped on before telling them (a second signal) are cut too.
fn drain_summary(totals: &stats::Totals, took: Duration) -> String {
    let count = |n: u64| crate::units::grouped(n as f64, 0);
    let told = totals.drain_goodbyes;
    let untold = (totals.drain_clean + totals.drain_cut).saturating_sub(told);
    let mut line = format!(
        "drain: {} of {} told to go closed cleanly, {} cut, in {:.1} s",
        count(totals.drain_clean),
        count(told),
        count(totals.drain_cut.saturating_sub(untold)),
        took.as_secs_f64()
    );
    if untold > 0 {
        line += &format!(
            "; {} more cut untold (the server stopped first)",
            count(untold)
        );
    }
    line
}

/// A shard thread's way to its listener. Whatever a shard makes before
/// [`ShardStart::claim`] (a runtime whose waker other threads write to) is
/// in every fd table: `claim` waits until every shard has got that far,
/// then takes a private fd table if planned, binds the shard's
/// SO_REUSEPORT listener and reports how that went.
pub struct ShardStart {
    addr: SocketAddr,
    private_fd_table: bool,
    everyone_ready: Arc<Barrier>,
    /// Taken by `claim`; a shard that fails before claiming still reports.
    bound: Option<mpsc::Sender<Result<(), String>>>,
}

impl ShardStart {
    pub fn claim(mut self) -> std::io::Result<std::net::TcpListener> {
        let bound = self.bound.take().expect("claimed once");
        self.everyone_ready.wait();
        let listener = (|| {
            if self.private_fd_table {
                sys::unshare_fd_table()?;
            }
            listen::reuseport_listener(self.addr)
        })();
        let _ = bound.send(listener.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        listener
    }
}

impl Drop for ShardStart {
    fn drop(&mut self) {
        if let Some(bound) = self.bound.take() {
            self.everyone_ready.wait();
            let _ = bound.send(Err("the shard failed before listening".into()));
        }
    }
}

/// Serve until told to stop, printing stats on SIGUSR1: the first SIGINT
/// or SIGTERM starts the drain (the shards end when it is over), a second
/// stops at once. A shard that ends before the drain is an error.
fn supervise(signals: &mut Signals, hub: &Hub, shards: &[JoinHandle<()>]) -> anyhow::Result<()> {
    loop {
        for signal in signals.pending() {
            match signal {
                SIGUSR1 => print_stats(hub, true),
                _ if hub.leaving() => hub.request_shutdown(),
                _ => hub.request_drain(),
            }
        }
        if hub.leaving() {
            if shards.iter().all(JoinHandle::is_finished) {
                return Ok(());
            }
        } else if let Some(id) = shards.iter().position(JoinHandle::is_finished) {
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
    let snapshot = hub.snapshot();
    let json = serde_json::to_string(&snapshot).expect("stats serialize");
    println!("stats {json}");
    let _ = std::io::stdout().flush();
}
