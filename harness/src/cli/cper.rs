//! `ras-harness cper encode|decode`.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use ras_harness::formats::cper::{memory_error_record, Profile, Record, Severity};

#[derive(Subcommand, Debug)]
pub enum CperCommand {
    /// Build the CPER record a VMM writes for a guest memory error at ADDRESS.
    ///
    /// Example: ras-harness cper encode --address 0x40010000 --profile qemu --format hex
    Encode {
        /// Guest physical address of the error (0x-prefixed hex or decimal).
        #[arg(long, value_parser = super::parse_u64)]
        address: u64,
        /// `qemu`: byte-identical to QEMU's hw/acpi/ghes.c (172 bytes). `strict`: also the
        /// entry count in block status ACPI requires, and the optional primary flag and
        /// address mask.
        #[arg(long, value_enum, default_value_t = ProfileArg::Qemu)]
        profile: ProfileArg,
        /// Error severity written to the status block and the data entry.
        #[arg(long, value_enum, default_value_t = SeverityArg::Recoverable)]
        severity: SeverityArg,
        /// `hex`: one line of lower-case hex. `bin`: the raw bytes (redirect them to a file).
        #[arg(long, value_enum, default_value_t = Format::Hex)]
        format: Format,
    },
    /// Decode a CPER record (raw bytes, or hex text) to JSON.
    ///
    /// Reads FILE, or standard input when FILE is `-` or absent. Hex text may contain white
    /// space. Trailing bytes after the record (a whole status block dump) are ignored.
    Decode {
        /// The record: a file of raw bytes or hex text, or `-` for standard input.
        file: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ProfileArg {
    Qemu,
    Strict,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SeverityArg {
    Recoverable,
    Fatal,
    Corrected,
    Info,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Hex,
    Bin,
}

pub fn run(cmd: CperCommand) -> Result<(), String> {
    match cmd {
        CperCommand::Encode {
            address,
            profile,
            severity,
            format,
        } => encode(address, profile, severity, format),
        CperCommand::Decode { file } => decode(file),
    }
}

fn encode(
    address: u64,
    profile: ProfileArg,
    severity: SeverityArg,
    format: Format,
) -> Result<(), String> {
    let profile = match profile {
        ProfileArg::Qemu => Profile::Qemu,
        ProfileArg::Strict => Profile::Strict,
    };
    let severity = match severity {
        SeverityArg::Recoverable => Severity::Recoverable,
        SeverityArg::Fatal => Severity::Fatal,
        SeverityArg::Corrected => Severity::Corrected,
        SeverityArg::Info => Severity::Informational,
    };
    let bytes = memory_error_record(address, severity, profile).encode();
    let mut out = std::io::stdout().lock();
    let written = match format {
        Format::Hex => writeln!(out, "{}", to_hex(&bytes)),
        Format::Bin => out.write_all(&bytes),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the record: {e}"))
}

fn decode(file: Option<PathBuf>) -> Result<(), String> {
    let (name, input) = match file {
        Some(path) if path.as_os_str() != "-" => {
            let input = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            (path.display().to_string(), input)
        }
        _ => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| format!("reading standard input: {e}"))?;
            ("standard input".to_owned(), input)
        }
    };
    let bytes = from_hex(&input).unwrap_or(input);
    let (record, _) = Record::decode_prefix(&bytes).map_err(|e| format!("{name}: {e}"))?;
    let json = serde_json::to_string_pretty(&record).map_err(|e| format!("{name}: {e}"))?;
    println!("{json}");
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `input` as hex text if it is nothing but hex digits and white space; `None` means
/// the input is raw bytes.
fn from_hex(input: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
