//! Generic Error Data Entry: the header in front of each CPER section inside a status block
//! (ACPI 6.5 section 18.3.2.7.1, table 18.12; Linux `struct acpi_hest_generic_data` and
//! `acpi_hest_generic_data_v300`).

use serde::Serialize;

use super::guid::{Guid, SectionType, GUID_LEN};
use super::wire::{hex, hex_bytes, hex_opt, Reader, Result};
use super::Severity;

/// Size of a revision 0x300 entry header, with its timestamp (ACPI 6.1+; QEMU
/// `ACPI_GHES_DATA_LENGTH`).
pub const DATA_ENTRY_LEN: usize = 72;
/// Size of an entry header before revision 0x300 (ACPI 4.0-6.0: no timestamp).
pub const DATA_ENTRY_LEN_OLD: usize = 64;
const _: () = assert!(DATA_ENTRY_LEN_OLD == GUID_LEN + 4 + 2 + 1 + 1 + 4 + GUID_LEN + 20);
const _: () = assert!(DATA_ENTRY_LEN == DATA_ENTRY_LEN_OLD + 8);

/// The revision this crate writes: 0x0300 (ACPI 6.1+, as QEMU writes it).
pub const DATA_ENTRY_REVISION: u16 = 0x0300;

/// Size of the FRU Text field.
pub const FRU_TEXT_LEN: usize = 20;

/// Validation Bits (table 18.12): bit 0 FRU Id valid.
pub const VALID_FRU_ID: u8 = 1 << 0;
/// Validation Bits: bit 1 FRU String valid.
pub const VALID_FRU_TEXT: u8 = 1 << 1;
/// Validation Bits: bit 2 Timestamp valid.
pub const VALID_TIMESTAMP: u8 = 1 << 2;

/// Flags (table 18.12, the UEFI N.2.2 section descriptor flags): bit 0 Primary.
pub const FLAG_PRIMARY: u8 = 0x01;
/// Flags: Containment Warning.
pub const FLAG_CONTAINMENT_WARNING: u8 = 0x02;
/// Flags: Reset.
pub const FLAG_RESET: u8 = 0x04;
/// Flags: Error threshold exceeded. With a corrected memory section Linux soft-offlines
/// the page (ghes_handle_memory_failure).
pub const FLAG_ERROR_THRESHOLD_EXCEEDED: u8 = 0x08;
/// Flags: Resource not accessible.
pub const FLAG_RESOURCE_NOT_ACCESSIBLE: u8 = 0x10;
/// Flags: Latent error.
pub const FLAG_LATENT_ERROR: u8 = 0x20;
/// Flags: Propagated.
pub const FLAG_PROPAGATED: u8 = 0x40;
/// Flags: Overflow.
pub const FLAG_OVERFLOW: u8 = 0x80;

/// True when `revision` has the 72-byte layout. Linux's `acpi_hest_get_version` takes the
/// major revision, `revision >> 8`, and uses the v300 layout from 3 on.
pub fn has_timestamp(revision: u16) -> bool {
    revision >> 8 >= 3
}

/// The header size for `revision`.
pub fn header_len(revision: u16) -> usize {
    if has_timestamp(revision) {
        DATA_ENTRY_LEN
    } else {
        DATA_ENTRY_LEN_OLD
    }
}

/// A Generic Error Data Entry header, every field as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct DataEntryHeader {
    /// Offset 0: Section Type.
    pub section_type: SectionType,
    /// Offset 16: Error Severity of this section.
    pub error_severity: Severity,
    /// Offset 20: Revision. From 0x300 on the header is 72 bytes.
    #[serde(serialize_with = "hex")]
    pub revision: u16,
    /// Offset 22: Validation Bits ([`VALID_FRU_ID`], ...).
    #[serde(serialize_with = "hex")]
    pub validation_bits: u8,
    /// Offset 23: Flags ([`FLAG_PRIMARY`], ...).
    #[serde(serialize_with = "hex")]
    pub flags: u8,
    /// Offset 24: Error Data Length, the section's size in bytes.
    pub error_data_length: u32,
    /// Offset 28: FRU Id.
    pub fru_id: Guid,
    /// Offset 44: FRU Text.
    #[serde(serialize_with = "hex_bytes")]
    pub fru_text: [u8; FRU_TEXT_LEN],
    /// Offset 64: Timestamp, present iff the revision is 0x300 or later.
    #[serde(serialize_with = "hex_opt")]
    pub timestamp: Option<u64>,
}

impl DataEntryHeader {
    pub(crate) const NAME: &'static str = "Generic Error Data Entry";

    /// A revision 0x300 header with zero FRU fields and timestamp, as QEMU's
    /// `acpi_ghes_generic_error_data` writes it.
    pub fn new(
        section_type: SectionType,
        error_severity: Severity,
        flags: u8,
        error_data_length: u32,
    ) -> Self {
        Self {
            section_type,
            error_severity,
            revision: DATA_ENTRY_REVISION,
            validation_bits: 0,
            flags,
            error_data_length,
            fru_id: Guid::default(),
            fru_text: [0; FRU_TEXT_LEN],
            timestamp: Some(0),
        }
    }

    /// Size of this header on the wire.
    pub fn encoded_len(&self) -> usize {
        header_len(self.revision)
    }

    /// The wire bytes: 72 from revision 0x300, else 64. A missing timestamp at revision
    /// 0x300+ is written as zero; a timestamp at an older revision is not written.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DATA_ENTRY_LEN);
        out.extend_from_slice(&self.section_type.guid().to_bytes());
        out.extend_from_slice(&self.error_severity.code().to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.push(self.validation_bits);
        out.push(self.flags);
        out.extend_from_slice(&self.error_data_length.to_le_bytes());
        out.extend_from_slice(&self.fru_id.to_bytes());
        out.extend_from_slice(&self.fru_text);
        if has_timestamp(self.revision) {
            out.extend_from_slice(&self.timestamp.unwrap_or(0).to_le_bytes());
        }
        out
    }

    /// Decodes exactly one header (64 or 72 bytes, by its revision).
    ///
    /// # Errors
    /// [`Error::Truncated`](super::Error::Truncated) when shorter than the revision needs,
    /// [`Error::TrailingBytes`](super::Error::TrailingBytes) when longer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let header = Self::read(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(header)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut f = r.take(Self::NAME, DATA_ENTRY_LEN_OLD)?;
        let section_type = SectionType::from(Guid::from_bytes(f.array()));
        let error_severity = Severity::from(f.u32());
        let revision = f.u16();
        let validation_bits = f.u8();
        let flags = f.u8();
        let error_data_length = f.u32();
        let fru_id = Guid::from_bytes(f.array());
        let fru_text = f.array();
        let timestamp = if has_timestamp(revision) {
            Some(
                r.take(Self::NAME, DATA_ENTRY_LEN - DATA_ENTRY_LEN_OLD)?
                    .u64(),
            )
        } else {
            None
        };
        Ok(Self {
            section_type,
            error_severity,
            revision,
            validation_bits,
            flags,
            error_data_length,
            fru_id,
            fru_text,
            timestamp,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::cper::guid::CPER_SEC_PLATFORM_MEM;
    use crate::formats::cper::testing::roundtrip_exact;
    use crate::formats::cper::Error;
    use proptest::prelude::*;

    /// Headers whose timestamp presence matches their revision, as decode returns them.
    pub(crate) fn any_header() -> impl Strategy<Value = DataEntryHeader> {
        (
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u16>(),
            any::<(u8, u8, u32)>(),
            any::<[u8; 16]>(),
            any::<[u8; FRU_TEXT_LEN]>(),
            any::<u64>(),
        )
            .prop_map(
                |(st, sev, rev, (vb, fl, len), fru, text, ts)| DataEntryHeader {
                    section_type: SectionType::from(Guid::from_bytes(st)),
                    error_severity: Severity::from(sev),
                    revision: rev,
                    validation_bits: vb,
                    flags: fl,
                    error_data_length: len,
                    fru_id: Guid::from_bytes(fru),
                    fru_text: text,
                    timestamp: has_timestamp(rev).then_some(ts),
                },
            )
    }

    #[test]
    fn qemu_header_bytes() {
        // QEMU acpi_ghes_generic_error_data(): GUID, severity, 0x300, 0, 0, length 80,
        // zero FRU id, zero FRU text, timestamp 0.
        let h = DataEntryHeader::new(SectionType::PlatformMemory, Severity::Recoverable, 0, 80);
        let bytes = h.encode();
        assert_eq!(bytes.len(), DATA_ENTRY_LEN);
        assert_eq!(bytes[..16], CPER_SEC_PLATFORM_MEM.to_bytes());
        assert_eq!(bytes[16..20], [0, 0, 0, 0]);
        assert_eq!(bytes[20..22], [0x00, 0x03]);
        assert_eq!(bytes[22..24], [0, 0]);
        assert_eq!(bytes[24..28], [80, 0, 0, 0]);
        assert!(bytes[28..].iter().all(|&b| b == 0));
        roundtrip_exact(&bytes, DataEntryHeader::decode, DataEntryHeader::encode);
    }

    #[test]
    fn old_revision_is_64_bytes_without_timestamp() {
        let mut h = DataEntryHeader::new(SectionType::ArmProcessor, Severity::Corrected, 1, 40);
        h.revision = 0x0201;
        h.timestamp = None;
        let bytes = h.encode();
        assert_eq!(bytes.len(), DATA_ENTRY_LEN_OLD);
        assert_eq!(DataEntryHeader::decode(&bytes), Ok(h));
        // The same bytes claiming revision 0x300 are 8 bytes short.
        let mut v3 = bytes.clone();
        v3[20..22].copy_from_slice(&0x0300u16.to_le_bytes());
        assert_eq!(
            DataEntryHeader::decode(&v3),
            Err(Error::Truncated {
                structure: "Generic Error Data Entry",
                offset: 64,
                needed: 8,
                available: 0
            })
        );
    }

    proptest! {
        #[test]
        fn round_trips(h in any_header()) {
            let bytes = h.encode();
            prop_assert_eq!(bytes.len(), h.encoded_len());
            prop_assert_eq!(DataEntryHeader::decode(&bytes), Ok(h));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            // Valid exactly when the length is the one the revision at offset 20 asks for.
            let wanted = bytes.get(20..22).map(|r| header_len(u16::from_le_bytes([r[0], r[1]])));
            match DataEntryHeader::decode(&bytes) {
                Ok(h) => prop_assert_eq!(h.encode(), bytes),
                Err(_) => prop_assert_ne!(wanted, Some(bytes.len())),
            }
        }
    }
}
