//! The command line: one binary, one subcommand per job.

use clap::{Parser, Subcommand};

use crate::bench::BenchConfig;
use crate::load::config::LoadConfig;
use crate::server::config::ServeConfig;

/// fanout — how many sockets can this box hold, what does each one cost, and
/// how fast can it talk to all of them?
#[derive(Debug, Parser)]
#[command(name = "fanout", version, about, long_about = None)]
#[command(after_help = "Exit status: 0 on success, 1 on a runtime error, 2 on a usage error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: measure this machine end to end and write results/.
    ///
    /// Measures the floors (bare connect + accept, bare write loop), starts
    /// `fanout serve`, samples its memory and the kernel slab at 0 and at
    /// --conns idle WebSocket connections, broadcasts to all of them, runs
    /// echo and churn, prints a table and writes
    /// results/<date>-<host>/<name>.json.
    #[command(
        after_help = "Examples:\n  fanout bench                      # 100K connections, about two minutes here\n  fanout bench --conns 500000       # the full run (see scripts/tune.sh)\n  fanout bench --server-cmd target/release/examples/reference_server"
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
}
