//! EFI_GUID as CPER carries it, and the section types the harness knows by name.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A 128-bit EFI_GUID (UEFI 2.10 appendix A).
///
/// On the wire it is "mixed endian": the first three groups (u32, u16, u16) are stored
/// little-endian, the last eight bytes as they are written. That is the kernel's `guid_t`
/// built with `GUID_INIT` and QEMU's `UUID_LE`, so CPER_SEC_PLATFORM_MEM
/// A5BC1114-6F64-4EDE-B863-3E83ED7C83B1 is the bytes
/// `14 11 BC A5 64 6F DE 4E B8 63 3E 83 ED 7C 83 B1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid {
    /// First group, as a number (stored little-endian).
    pub data1: u32,
    /// Second group (stored little-endian).
    pub data2: u16,
    /// Third group (stored little-endian).
    pub data3: u16,
    /// Last two groups, in wire order.
    pub data4: [u8; 8],
}

/// Size of a GUID on the wire.
pub const GUID_LEN: usize = 16;

impl Guid {
    /// Builds a GUID from its canonical groups, like the kernel's `GUID_INIT`.
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self {
            data1,
            data2,
            data3,
            data4,
        }
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; GUID_LEN] {
        let mut out = [0u8; GUID_LEN];
        out[..4].copy_from_slice(&self.data1.to_le_bytes());
        out[4..6].copy_from_slice(&self.data2.to_le_bytes());
        out[6..8].copy_from_slice(&self.data3.to_le_bytes());
        out[8..].copy_from_slice(&self.data4);
        out
    }

    /// Reads the 16 wire bytes.
    pub fn from_bytes(bytes: [u8; GUID_LEN]) -> Self {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = bytes;
        Self {
            data1: u32::from_le_bytes([a0, a1, a2, a3]),
            data2: u16::from_le_bytes([b0, b1]),
            data3: u16::from_le_bytes([c0, c1]),
            data4: d,
        }
    }
}

impl fmt::Display for Guid {
    /// Canonical upper-case form, as the UEFI spec prints section types.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a string is not a canonical GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GUID in 8-4-4-4-12 hex form: {0:?}")]
pub struct ParseGuidError(pub String);

impl FromStr for Guid {
    type Err = ParseGuidError;

    /// Parses the canonical 8-4-4-4-12 form, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseGuidError(s.to_owned());
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] || !s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let hex: String = groups.concat();
        let byte = |i: usize| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or(""), 16);
        let mut be = [0u8; GUID_LEN];
        for (i, b) in be.iter_mut().enumerate() {
            *b = byte(i).map_err(|_| err())?;
        }
        let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = be;
        Ok(Self::new(
            u32::from_be_bytes([a0, a1, a2, a3]),
            u16::from_be_bytes([b0, b1]),
            u16::from_be_bytes([c0, c1]),
            d,
        ))
    }
}

/// Platform Memory Error section (UEFI 2.10 N.2.5; include/linux/cper.h).
pub const CPER_SEC_PLATFORM_MEM: Guid = Guid::new(
    0xA5BC1114,
    0x6F64,
    0x4EDE,
    [0xB8, 0x63, 0x3E, 0x83, 0xED, 0x7C, 0x83, 0xB1],
);

/// ARM Processor Error section (UEFI 2.10 N.2.4.4; include/linux/cper.h).
pub const CPER_SEC_PROC_ARM: Guid = Guid::new(
    0xE19E3D16,
    0xBC11,
    0x11E4,
    [0x9C, 0xAA, 0xC2, 0x05, 0x1D, 0x5D, 0x46, 0xB0],
);

/// The section type of a Generic Error Data Entry (UEFI 2.10 N.2.2 "Section Type").
///
/// Types this crate decodes are named; any other GUID is kept as data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SectionType {
    /// [`CPER_SEC_PLATFORM_MEM`].
    PlatformMemory,
    /// [`CPER_SEC_PROC_ARM`].
    ArmProcessor,
    /// Any other section type.
    Other(Guid),
}

impl SectionType {
    /// The GUID written on the wire.
    pub fn guid(self) -> Guid {
        match self {
            Self::PlatformMemory => CPER_SEC_PLATFORM_MEM,
            Self::ArmProcessor => CPER_SEC_PROC_ARM,
            Self::Other(guid) => guid,
        }
    }

    /// The kernel's constant name, for known types.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::PlatformMemory => Some("CPER_SEC_PLATFORM_MEM"),
            Self::ArmProcessor => Some("CPER_SEC_PROC_ARM"),
            Self::Other(_) => None,
        }
    }
}

impl From<Guid> for SectionType {
    fn from(guid: Guid) -> Self {
        match guid {
            CPER_SEC_PLATFORM_MEM => Self::PlatformMemory,
            CPER_SEC_PROC_ARM => Self::ArmProcessor,
            other => Self::Other(other),
        }
    }
}

impl From<SectionType> for Guid {
    fn from(t: SectionType) -> Self {
        t.guid()
    }
}

impl Serialize for SectionType {
    /// `{"guid": "A5BC...", "name": "CPER_SEC_PLATFORM_MEM"}`, name null when unknown.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SectionType", 2)?;
        s.serialize_field("guid", &self.guid())?;
        s.serialize_field("name", &self.name())?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn platform_mem_guid_has_the_spec_wire_bytes() {
        // docs/ras-facts.md §8 and QEMU ghes.c UUID_LE(0xA5BC1114, ...): mixed endian.
        assert_eq!(
            CPER_SEC_PLATFORM_MEM.to_bytes(),
            [
                0x14, 0x11, 0xBC, 0xA5, 0x64, 0x6F, 0xDE, 0x4E, 0xB8, 0x63, 0x3E, 0x83, 0xED, 0x7C,
                0x83, 0xB1
            ]
        );
        assert_eq!(
            CPER_SEC_PLATFORM_MEM.to_string(),
            "A5BC1114-6F64-4EDE-B863-3E83ED7C83B1"
        );
        assert_eq!(
            CPER_SEC_PROC_ARM.to_string(),
            "E19E3D16-BC11-11E4-9CAA-C2051D5D46B0"
        );
    }

    #[test]
    fn parses_canonical_form_and_rejects_others() {
        assert_eq!(
            "a5bc1114-6f64-4ede-b863-3e83ed7c83b1".parse::<Guid>(),
            Ok(CPER_SEC_PLATFORM_MEM)
        );
        for bad in [
            "",
            "A5BC1114-6F64-4EDE-B863-3E83ED7C83B",
            "A5BC11146F644EDEB8633E83ED7C83B1",
            "G5BC1114-6F64-4EDE-B863-3E83ED7C83B1",
            "+5BC1114-6F64-4EDE-B863-3E83ED7C83B1",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn section_type_maps_known_guids_and_keeps_others() {
        assert_eq!(
            SectionType::from(CPER_SEC_PLATFORM_MEM),
            SectionType::PlatformMemory
        );
        assert_eq!(
            SectionType::from(CPER_SEC_PROC_ARM),
            SectionType::ArmProcessor
        );
        let other = Guid::new(1, 2, 3, [4; 8]);
        assert_eq!(SectionType::from(other), SectionType::Other(other));
        assert_eq!(SectionType::from(other).guid(), other);
    }

    proptest! {
        #[test]
        fn wire_bytes_round_trip(bytes in any::<[u8; 16]>()) {
            prop_assert_eq!(Guid::from_bytes(bytes).to_bytes(), bytes);
        }

        #[test]
        fn display_parses_back(bytes in any::<[u8; 16]>()) {
            let guid = Guid::from_bytes(bytes);
            prop_assert_eq!(guid.to_string().parse::<Guid>(), Ok(guid));
        }
    }
}
