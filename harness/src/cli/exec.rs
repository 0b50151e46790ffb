//! `ras-harness __exec FILE --vmm NAME` (hidden): runs one scenario from this process (the
//! reference VMM in it, any other VMM as a process it drives) and prints one JSON line, `{"outcome": ...}`, `{"skip": reason}` or `{"error": reason}`. The parent
//! (`ras_harness::runner::run_isolated`) isolates each scenario in such a child.

use std::path::PathBuf;

use clap::Args;
use ras_harness::runner::{exec_line, ExecLine};
use ras_harness::sut::Sut;

/// Arguments of `__exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The scenario file.
    file: PathBuf,
    /// The VMM under test (as `run --vmm`).
    #[arg(long, default_value = "reference", value_parser = Sut::parse)]
    vmm: Sut,
}

/// Prints the result line; the verdict travels in it, so the exit status is 0.
pub fn run(args: ExecArgs) -> Result<(), String> {
    let line = exec_line(&args.file, &args.vmm);
    let json = serde_json::to_string(&line)
        .or_else(|e| serde_json::to_string(&ExecLine::Error(format!("outcome to JSON: {e}"))))
        .map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}
