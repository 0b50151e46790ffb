//! Argument parsing and dispatch for the `ras-harness` binary.

mod caps;
mod cper;
mod esr;
mod exec;
mod run;
mod soak;

use clap::{Parser, Subcommand};

/// Fault-injection and RAS conformance harness for arm64 KVM.
///
/// `run` boots tiny guests under KVM, poisons their memory for real and judges what the
/// guest saw and the host kernel signalled against each scenario's `expect`
/// (scenarios/README.md).
/// Off arm64 KVM it runs inside an emulated arm64 KVM host (emuhost/README.md). The codecs
/// (`cper`, `esr`) work on any host: use them to check another VMM's records and syndromes.
///
/// Exit status: 0 success (at least one scenario passed, the rest skipped with a stated
/// reason), 1 a scenario failed, 2 bad input or a harness error, 3 nothing was tested
/// (every scenario skipped).
#[derive(Parser, Debug)]
#[command(name = "ras-harness", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenario files or directories and report each verdict.
    ///
    /// Examples: `ras-harness run` (the whole scenarios/ matrix),
    /// `ras-harness run scenarios/acpi-store.json --report json --out report.json`.
    Run(run::RunArgs),
    /// Run the matrix N times on this host and check that nothing leaks.
    ///
    /// After each round: HardwareCorrupted in /proc/meminfo is back where it was (every
    /// poisoned page was given back), and this process's open descriptors and RSS have not
    /// grown since round 1; every scenario has the `--timeout`, so nothing hangs. Prints one
    /// line of figures per round and a final verdict; exit 0 when clean, 1 otherwise.
    /// Example: `ras-harness soak --rounds 10` (off arm64 KVM it runs in the emulated host).
    Soak(soak::SoakArgs),
    /// Describe what this host offers the scenarios (kernel, page size, KVM caps 41/158/178/245,
    /// memory-failure support, privileges).
    Caps(caps::CapsArgs),
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

/// Runs a parsed command line and returns its exit status; an error is printed as one
/// message and exits with status 2.
pub fn run(cli: Cli) -> Result<u8, String> {
    let done = |r: Result<(), String>| r.map(|()| 0);
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Caps(args) => caps::run(args),
        Command::Cper(cmd) => done(cper::run(cmd)),
        Command::Esr(cmd) => done(esr::run(cmd)),
        Command::Exec(args) => done(exec::run(args)),
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
