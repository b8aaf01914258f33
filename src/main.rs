//! The `fanout` binary: parse the command line, run the job, report errors.

use clap::Parser;
use fanout::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(config) => fanout::bench::bench(config),
        Command::Serve(config) => fanout::server::serve(config),
        Command::Load(config) => fanout::load::load(config),
    };
    if let Err(error) = result {
        eprintln!("fanout: error: {error:#}");
        std::process::exit(1);
    }
}
