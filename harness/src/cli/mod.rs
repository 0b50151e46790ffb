//! Argument parsing and dispatch for the `ras-harness` binary.

mod cper;
mod esr;
mod exec;

use clap::{Parser, Subcommand};

/// Fault-injection and RAS conformance harness for arm64 KVM.
///
/// The codecs below work on any host: use them to check the CPER records and syndromes
/// another VMM produces.
#[derive(Parser, Debug)]
#[command(name = "ras-harness", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encode or decode UEFI CPER records (the bytes a VMM writes behind ACPI GHESv2).
    #[command(subcommand)]
    Cper(cper::CperCommand),
    /// Decode ESR_ELx syndrome values (what the guest reads in ESR_EL1).
    #[command(subcommand)]
    Esr(esr::EsrCommand),
    /// Runs one scenario in this process and prints one JSON line (used by the runner).
    #[command(name = "__exec", hide = true)]
    Exec(exec::ExecArgs),
}

/// Runs a parsed command line; the error is printed as one line and exits with status 2.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Cper(cmd) => cper::run(cmd),
        Command::Esr(cmd) => esr::run(cmd),
        Command::Exec(args) => exec::run(args),
    }
}

/// Parses an address or value given as `0x`-prefixed hex or as decimal.
fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not a number (use 0x-prefixed hex or decimal)"))
}
