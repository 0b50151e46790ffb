//! The `ras-harness` command line.
//!
//! Exit status: 0 on success, 2 for bad arguments or bad input (clap's own usage errors
//! use 2 as well), so scripts can tell "your input is wrong" from a harness failure.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ras-harness: {err}");
            ExitCode::from(2)
        }
    }
}
