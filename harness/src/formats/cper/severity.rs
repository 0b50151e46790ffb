//! Error severity, shared by the status block and each data entry.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Error severity (ACPI 6.5 table 18.11 "Generic Error Status Block", Error Severity;
/// UEFI 2.10 N.2.1; the kernel's `CPER_SEV_*` in include/linux/cper.h).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Severity {
    /// 0: uncorrected, recoverable (CPER_SEV_RECOVERABLE).
    Recoverable,
    /// 1: fatal (CPER_SEV_FATAL). A Linux guest panics on it.
    Fatal,
    /// 2: corrected (CPER_SEV_CORRECTED).
    Corrected,
    /// 3: informational (CPER_SEV_INFORMATIONAL; QEMU calls it ACPI_CPER_SEV_NONE).
    Informational,
    /// Any other value: reserved by the spec, kept as data.
    Unknown(u32),
}

impl Severity {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            Self::Recoverable => 0,
            Self::Fatal => 1,
            Self::Corrected => 2,
            Self::Informational => 3,
            Self::Unknown(v) => v,
        }
    }
}

impl From<u32> for Severity {
    fn from(v: u32) -> Self {
        match v {
            0 => Self::Recoverable,
            1 => Self::Fatal,
            2 => Self::Corrected,
            3 => Self::Informational,
            other => Self::Unknown(other),
        }
    }
}

impl From<Severity> for u32 {
    fn from(s: Severity) -> Self {
        s.code()
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recoverable => f.write_str("recoverable"),
            Self::Fatal => f.write_str("fatal"),
            Self::Corrected => f.write_str("corrected"),
            Self::Informational => f.write_str("informational"),
            Self::Unknown(v) => write!(f, "{v:#x}"),
        }
    }
}

/// Why a string names no severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown severity {0:?}: expected recoverable, fatal, corrected, informational or a number"
)]
pub struct ParseSeverityError(pub String);

impl FromStr for Severity {
    type Err = ParseSeverityError;

    /// Accepts the spec words (as [`Display`](fmt::Display) prints them) or a number
    /// (decimal or `0x` hex), so that a CLI can write reserved values too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "recoverable" => Ok(Self::Recoverable),
            "fatal" => Ok(Self::Fatal),
            "corrected" => Ok(Self::Corrected),
            "informational" => Ok(Self::Informational),
            _ => {
                let n = match s.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => s.parse(),
                };
                n.map(Self::from)
                    .map_err(|_| ParseSeverityError(s.to_owned()))
            }
        }
    }
}

impl Serialize for Severity {
    /// The spec word, or the hex value when reserved.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_values() {
        assert_eq!(Severity::from(0), Severity::Recoverable);
        assert_eq!(Severity::from(1), Severity::Fatal);
        assert_eq!(Severity::from(2), Severity::Corrected);
        assert_eq!(Severity::from(3), Severity::Informational);
        assert_eq!(Severity::from(4), Severity::Unknown(4));
        assert_eq!("fatal".parse(), Ok(Severity::Fatal));
        assert_eq!("0x7".parse(), Ok(Severity::Unknown(7)));
        assert!("bad".parse::<Severity>().is_err());
    }

    proptest! {
        #[test]
        fn code_round_trips(v in any::<u32>()) {
            prop_assert_eq!(Severity::from(v).code(), v);
            prop_assert_eq!(Severity::from(v).to_string().parse(), Ok(Severity::from(v)));
        }
    }
}
