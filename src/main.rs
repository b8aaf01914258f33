//! The `fanout` binary: parse the command line, run the job, report errors.

use clap::Parser;
use fanout::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(config) => fanout::bench::bench(config),
        Command::Serve(config) => fanout::serve::serve(config),
        Command::Load(config) => fanout::load::load(config),
        Command::Bare(config) => fanout::bench::bare::bare(config),
        Command::Report(config) => fanout::report::report(&config),
        Command::Schema => fanout::bench::schema::print(),
        Command::Plan(config) => fanout::plan::plan(&config),
        Command::Ceiling(config) => fanout::ceiling::ceiling(&config),
        Command::Doctor(config) => match fanout::doctor::doctor(&config) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(error) => Err(error),
        },
    };
    if let Err(error) = result {
        eprintln!("fanout: error: {error:#}");
        let usage = error.downcast_ref::<fanout::cli::UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
