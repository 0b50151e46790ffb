//! The `ras-harness` command line.
//!
//! Exit status: 0 on success, 1 when a scenario failed, 2 for bad arguments or bad input
//! (clap's own usage errors use 2 as well) or a harness error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("ras-harness: {err}");
            ExitCode::from(2)
        }
    }
}
