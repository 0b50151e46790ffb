//! What a SIGBUS's `si_code` says, on every host: the handler decodes it on Linux, and a
//! scenario's outcome carries it (as the kernel's number) wherever the report is read.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `BUS_ADRALN`: invalid address alignment (include/uapi/asm-generic/siginfo.h).
const BUS_ADRALN: i32 = 1;
/// `BUS_ADRERR`: non-existent physical address (include/uapi/asm-generic/siginfo.h).
const BUS_ADRERR: i32 = 2;
/// `BUS_OBJERR`: object-specific hardware error (include/uapi/asm-generic/siginfo.h).
const BUS_OBJERR: i32 = 3;
/// `BUS_MCEERR_AR`: hardware memory error consumed, action required
/// (include/uapi/asm-generic/siginfo.h).
const BUS_MCEERR_AR: i32 = 4;
/// `BUS_MCEERR_AO`: hardware memory error detected in the process but not consumed, action
/// optional (include/uapi/asm-generic/siginfo.h).
const BUS_MCEERR_AO: i32 = 5;

/// What `si_code` says about a SIGBUS.
///
/// Compared, hashed and ordered as the number it stands for, and serialised as that number:
/// a report holds what the kernel wrote. [`SigbusCode::from_raw`] picks the variant; one
/// built by hand with a number of another variant (`Fault(4)`) still equals that variant.
#[derive(Debug, Clone, Copy)]
pub enum SigbusCode {
    /// BUS_MCEERR_AR (4): the thread consumed poison.
    MceerrAr,
    /// BUS_MCEERR_AO (5): poison found in the process's memory, not yet consumed.
    MceerrAo,
    /// BUS_ADRALN (1), BUS_ADRERR (2), BUS_OBJERR (3): not a memory error.
    Fault(i32),
    /// `si_code <= 0`: sent by a process (kill, tgkill, sigqueue), not by a fault.
    Sent(i32),
    /// Anything else the kernel may add.
    Unknown(i32),
}

impl SigbusCode {
    /// The meaning of the kernel's `si_code`. Pure: the signal handler calls it.
    pub const fn from_raw(code: i32) -> Self {
        match code {
            BUS_MCEERR_AR => Self::MceerrAr,
            BUS_MCEERR_AO => Self::MceerrAo,
            BUS_ADRALN | BUS_ADRERR | BUS_OBJERR => Self::Fault(code),
            c if c <= 0 => Self::Sent(c),
            c => Self::Unknown(c),
        }
    }

    /// The kernel's `si_code`.
    pub const fn raw(self) -> i32 {
        match self {
            Self::MceerrAr => BUS_MCEERR_AR,
            Self::MceerrAo => BUS_MCEERR_AO,
            Self::Fault(c) | Self::Sent(c) | Self::Unknown(c) => c,
        }
    }
}

impl PartialEq for SigbusCode {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl Eq for SigbusCode {}

impl Hash for SigbusCode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw().hash(state);
    }
}

impl PartialOrd for SigbusCode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SigbusCode {
    fn cmp(&self, other: &Self) -> Ordering {
        self.raw().cmp(&other.raw())
    }
}

impl fmt::Display for SigbusCode {
    /// The number, as `si_code` holds it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.raw(), f)
    }
}

impl Serialize for SigbusCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.raw())
    }
}

impl<'de> Deserialize<'de> for SigbusCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i32::deserialize(deserializer).map(Self::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decode_with_catch_alls() {
        assert_eq!(SigbusCode::from_raw(4), SigbusCode::MceerrAr);
        assert_eq!(SigbusCode::from_raw(5), SigbusCode::MceerrAo);
        assert_eq!(SigbusCode::from_raw(2), SigbusCode::Fault(2));
        assert_eq!(SigbusCode::from_raw(0), SigbusCode::Sent(0)); // SI_USER
        assert_eq!(SigbusCode::from_raw(-6), SigbusCode::Sent(-6)); // SI_TKILL
        assert_eq!(SigbusCode::from_raw(9), SigbusCode::Unknown(9));
    }

    #[test]
    fn raw_gives_back_the_kernel_number() {
        for code in -10..200 {
            let decoded = SigbusCode::from_raw(code);
            assert_eq!(decoded.raw(), code);
            assert_eq!(decoded.to_string(), code.to_string());
        }
        assert!(matches!(SigbusCode::from_raw(2), SigbusCode::Fault(2)));
        assert!(matches!(SigbusCode::from_raw(-6), SigbusCode::Sent(-6)));
        assert!(matches!(
            SigbusCode::from_raw(128),
            SigbusCode::Unknown(128)
        ));
    }

    #[test]
    fn equality_and_order_are_the_numbers() {
        assert_eq!(SigbusCode::Fault(4), SigbusCode::MceerrAr);
        assert!(SigbusCode::MceerrAr < SigbusCode::MceerrAo);
        assert!(SigbusCode::Fault(1) < SigbusCode::MceerrAr);
        assert!(SigbusCode::Sent(0) < SigbusCode::Fault(1));
    }

    #[test]
    fn serialises_as_the_number() {
        assert_eq!(serde_json::to_string(&SigbusCode::MceerrAr).unwrap(), "4");
        assert_eq!(serde_json::to_string(&SigbusCode::MceerrAo).unwrap(), "5");
        assert_eq!(serde_json::to_string(&SigbusCode::Sent(-6)).unwrap(), "-6");
        let back: SigbusCode = serde_json::from_str("5").unwrap();
        assert!(matches!(back, SigbusCode::MceerrAo));
        let back: SigbusCode = serde_json::from_str("3").unwrap();
        assert!(matches!(back, SigbusCode::Fault(3)));
        assert!(serde_json::from_str::<SigbusCode>("\"ar\"").is_err());
    }
}
