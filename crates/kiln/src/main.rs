//! The `kiln` command: a thin clap layer over `kiln-profile` (and, as they
//! land, the agent, store and server crates). Each subcommand parses its
//! arguments, calls library functions and prints; see `cli.rs`.

mod cli;
mod merge;
mod render;
mod server;

use std::process::ExitCode;

use clap::Parser;

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
