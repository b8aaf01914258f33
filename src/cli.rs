//! The command line: one binary, one subcommand per job.

use clap::{Parser, Subcommand};

use crate::bench::bare::BareConfig;
use crate::bench::BenchConfig;
use crate::ceiling::CeilingConfig;
use crate::doctor::DoctorConfig;
use crate::load::config::LoadConfig;
use crate::plan::PlanConfig;
use crate::report::ReportConfig;
use crate::serve::ServeConfig;

/// fanout — how many sockets can this box hold, what does each one cost, and
/// how fast can it talk to all of them?
#[derive(Debug, Parser)]
#[command(name = "fanout", version, about, long_about = None)]
#[command(after_help = "Exit status: 0 on success, 1 on a runtime error, 2 on a usage error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One value, parsed once at start: the bench's many options cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: measure this machine end to end and write results/.
    ///
    /// Runs each job several times on `fanout serve` and on its floor
    /// (`fanout bare`, the least a server can do on the same machinery),
    /// interleaved, each on a fresh server and a settled system: the room
    /// (ramp to --conns idle members, memory as a slope from N/2 to N, one
    /// broadcast at a time), echo (closed loop against the floor, then open
    /// loop) and churn. Prints medians with their ranges, every ratio to its
    /// floor (flagged when the server beats it), the kernel counters of
    /// troubled phases, and writes results/<date>-<host>/<name>.json.
    #[command(
        after_help = "Examples:\n  fanout bench                            # 100K connections, about two minutes here\n  fanout bench --conns 500000             # the full run (see scripts/tune.sh)\n  fanout bench --measure room --samples 5 # ramp, memory and broadcast only\n  fanout bench --backends epoll,uring     # both event loops, one table\n  fanout bench --backends epoll --server-cmd ref=target/release/examples/reference_server"
    )]
    Bench(BenchConfig),

    /// Run the high-density WebSocket / raw-TCP echo and room server.
    ///
    /// Prints its plan (shards, fd tables, capacity), then `ready <addr>` once
    /// every shard listens. SIGUSR1 prints a `stats {json}` line; SIGINT or
    /// SIGTERM stop it cleanly and print the final stats.
    #[command(
        after_help = "Examples:\n  fanout serve                              # WebSocket on 127.0.0.1:9001, a shard per core\n  fanout serve --proto tcp --listen 127.0.0.1:9002\n  fanout serve --max-conns 500000           # private fd tables, shard count raised to fit"
    )]
    Serve(ServeConfig),

    /// Load a server that speaks the benchmark protocol: open many
    /// connections and hold, broadcast, echo or churn; print a report.
    #[command(
        after_help = "Examples:\n  fanout load hold --conns 10000 --duration 10s\n  fanout load broadcast --conns 10000 --count 10 --interval 500ms\n  fanout load echo --conns 1000 --send-rate 100 --size 64 --duration 10s\n  fanout load churn --rate 5000 --duration 5s --json churn.json"
    )]
    Load(LoadConfig),

    /// The floor server `fanout bench` measures against: the same shard
    /// plan as `fanout serve`, doing the least a server can.
    ///
    /// Accepts with serve's shard plan, fd tables and listeners, writes one
    /// greeting byte to each connection, then writes back (echo) or to every
    /// connection (room) exactly the bytes it reads, never parsing or
    /// queueing. Load it with `fanout load ... --url bare://ADDR`.
    #[command(
        after_help = "Examples:\n  fanout bare --route room --listen 127.0.0.1:9002\n  fanout load broadcast --url bare://127.0.0.1:9002 --conns 10000 --count 5"
    )]
    Bare(BareConfig),

    /// Every limit between this machine and N connections: its value now,
    /// the value needed, a verdict and the exact fix.
    ///
    /// Checks RLIMIT_NOFILE and fd tables, fs.file-max, ephemeral ports ×
    /// source addresses (one address reaches one server port through at most
    /// the port range, ~28K by default), the accept queue, conntrack, tcp_mem
    /// during a broadcast, memory (user space + ~4.2 KB of kernel per
    /// socket, both ends when the client is here), io_uring, threads and
    /// maps. Exit status 1 when a limit says FAIL (N is out of reach).
    #[command(
        after_help = "Examples:\n  fanout doctor --conns 500000                       # a fanout bench here\n  fanout doctor --conns 50000 --url ws://10.0.0.5:80 # a client here, the server elsewhere, one source address\n  scripts/tune.sh fanout doctor --conns 500000       # the same with the sysctls tune.sh sets"
    )]
    Doctor(DoctorConfig),

    /// Ramp connections until something gives, then name the limit with
    /// evidence and the fix.
    ///
    /// Opens connections (idle, like `fanout load hold`) until the first one
    /// fails or --up-to is reached, then says which limit it was from the
    /// errno the client saw (EADDRNOTAVAIL: source ports; EMFILE/ENFILE:
    /// fds; ENOMEM: memory), the kernel's counters (ListenOverflows: the
    /// accept queue), the server's fd tables against its RLIMIT_NOFILE, its
    /// memory and CPU, and whether the client, the server or the machine hit
    /// it — with the fix `fanout doctor` gives for that limit.
    #[command(
        after_help = "Examples:\n  fanout ceiling --up-to 200000                       # fanout serve here, started for the ramp\n  fanout ceiling --backend tokio                      # where a one-fd-table server stops\n  fanout ceiling --url ws://127.0.0.1:8080/ws --source 127.0.0.1   # a server already running, one source address"
    )]
    Ceiling(CeilingConfig),

    /// How many machines like the measured one a fleet needs, and why.
    ///
    /// From a `fanout bench` result: memory for the connections held (user
    /// space + kernel per socket, at 80 % of RAM), accepting every user back
    /// within --reconnect-window after a restart, delivering
    /// --msgs-per-user to each — each at --headroom, the binding one named.
    /// A seeded simulation of the routing (random, round-robin,
    /// least-connections, power of two choices; 1 and --routers load
    /// balancers that share no state) gives the busiest machine's share of
    /// long-lived connections, which the memory line pays for, and the
    /// request queues at 10–110 % utilization.
    #[command(
        after_help = "Examples:\n  fanout plan --users 1000000 --from results/2026-11-29-vm/all-backends-100k.json\n  fanout plan --users 5000000 --msgs-per-user 1 --reconnect-window 30s --policy least-connections --routers 8 --from R.json --server uring"
    )]
    Plan(PlanConfig),

    /// Markdown tables and SVG plots from a results folder.
    ///
    /// Reads every bench, ceiling and plan JSON file in DIR and writes
    /// DIR/report/report.md with the side-by-side table of each bench run
    /// and plots: memory per connection against N across runs, broadcast
    /// last delivery and echo latency with their ranges, broadcast delivery
    /// quantiles, ceiling ramps, and request queues by routing policy. Each
    /// plot names its file, machine, date and revision.
    #[command(
        after_help = "Examples:\n  fanout report results/2026-11-29-vm\n  fanout report results/2026-11-29-vm --out /tmp/report"
    )]
    Report(ReportConfig),

    /// Print the JSON Schema of a `fanout bench` result file (every field,
    /// its type and what it means); results/schema.json is this output.
    Schema,
}
