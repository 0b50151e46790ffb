//! `ras-harness esr decode`.

use clap::Subcommand;
use ras_harness::formats::esr::Esr;

#[derive(Subcommand, Debug)]
pub enum EsrCommand {
    /// Decode an ESR_ELx value to JSON: EC, IL, ISS fields and a one-line description.
    ///
    /// Example: ras-harness esr decode 0x96000410
    Decode {
        /// The syndrome (0x-prefixed hex, bare hex or decimal). A 6.1 kernel's sign-extended
        /// value such as 0xffffffff96000010 is accepted and flagged.
        value: String,
    },
}

pub fn run(cmd: EsrCommand) -> Result<(), String> {
    match cmd {
        EsrCommand::Decode { value } => {
            let esr: Esr = value
                .parse()
                .map_err(|e| format!("esr decode: '{value}': {e}"))?;
            let json = serde_json::to_string_pretty(&esr.report()).map_err(|e| e.to_string())?;
            println!("{json}");
            Ok(())
        }
    }
}
