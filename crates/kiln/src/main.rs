//! The `kiln` command: a thin clap layer over `kiln-profile`,
//! `kiln-agent` (the push client, and self-profiling of `kiln server`) and
//! `kiln-server`. Each subcommand parses its arguments, calls library
//! functions and prints; see `cli.rs` and `server.rs`.

mod cli;
mod demo;
mod merge;
mod render;
mod server;

use std::process::ExitCode;

use clap::Parser;

/// Every allocation of every subcommand goes through the agent's sampler:
/// `kiln server` and the demo service profile their heaps too (it only
/// forwards while no agent samples allocations).
#[global_allocator]
static ALLOC: kiln_agent::alloc::Profiled<std::alloc::System> =
    kiln_agent::alloc::Profiled::new(std::alloc::System);

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::from(1)
        }
    }
}
