//! The records a VMM writes for a guest memory error: QEMU's bytes or the strict ones
//! ([`Profile`]), encoded afresh ([`memory_error_record`]) or patched into a template encoded
//! once ([`RecordTemplate`], for the vCPU thread, where encoding costs more than the guest
//! memory accesses that publish the record).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::data_entry::{DATA_ENTRY_LEN, FLAG_PRIMARY};
use super::memory::{
    valid, MemoryErrorSection, MemoryErrorType, MEMORY_SECTION_LEN, PHYSICAL_ADDRESS_AT,
    PHYSICAL_ADDRESS_MASK_AT,
};
use super::record::{Entry, Record, Section};
use super::status_block::{BlockStatus, STATUS_BLOCK_LEN};
use super::Severity;

/// Whose bytes [`memory_error_record`] writes.
///
/// `Qemu` is byte-identical to QEMU's hw/acpi/ghes.c `acpi_ghes_memory_errors` (QEMU
/// 10.x, `ghes_gen_err_data_uncorrectable_recoverable` + `acpi_ghes_build_append_mem_cper`)
/// when the severity is [`Severity::Recoverable`], the only one QEMU writes; another
/// severity goes into both severity fields and nothing else changes.
///
/// `Strict` differs from `Qemu` in exactly these fields, which QEMU leaves out: the first one
/// ACPI requires, the other two the UEFI spec leaves optional (Linux's recovery path reads
/// none of them):
/// 1. Block Status (ACPI 6.5 §18.3.2.7.1, Generic Error Status Block): bits 13:4 are the
///    Error Data Entry Count, "the number of Error Data Entries found in the Data
///    section", a plain field (1 here); QEMU leaves it 0. The valid bit follows the severity: Uncorrectable Error Valid (bit 0)
///    for recoverable and fatal, Correctable Error Valid (bit 1) for corrected, neither for
///    informational (QEMU always sets bit 0). So a recoverable record is 0x11, not 0x1.
/// 2. Data entry Flags: Primary (0x01), since the single section is the one the error is
///    about (UEFI 2.10 §N.2.2 section descriptor flags: optional, "should be taken as a
///    hint"); QEMU writes 0.
/// 3. Memory section (UEFI 2.10 §N.2.5, optional): Physical Address Mask valid (validation
///    bit 2) with a mask of the error granule, `!0 << granule_shift` (4 KiB by default, 0xFFFFFFFFFFFFF000);
///    QEMU writes no mask, so its validation bits are 0x4002 and Strict's 0x4006.
///
/// Kept the same in both: raw data offset/length 0, revision 0x300, no FRU id/text,
/// timestamp 0 and not valid (so Linux's 10-second duplicate filter, ghes_estatus_cached,
/// sees two errors on one page as the same record in both profiles), error status 0 and
/// not valid, memory error type 0 "unknown" marked valid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// What QEMU writes.
    #[default]
    Qemu,
    /// QEMU's, plus the entry count ACPI requires and the two optional UEFI fields.
    Strict,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Qemu => "qemu",
            Self::Strict => "strict",
        })
    }
}

/// Why a string names no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CPER profile {0:?}: expected qemu or strict")]
pub struct ParseProfileError(pub String);

impl FromStr for Profile {
    type Err = ParseProfileError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(Self::Qemu),
            "strict" => Ok(Self::Strict),
            _ => Err(ParseProfileError(s.to_owned())),
        }
    }
}

/// The error granule [`memory_error_record`] assumes: a 4 KiB page, the `si_addr_lsb`
/// KVM reports for anonymous memory on a 4K-page host (docs/ras-facts.md §2).
pub const DEFAULT_GRANULE_SHIFT: u32 = 12;

/// The record a VMM writes for a guest memory error at guest physical `address`: one
/// Platform Memory Error section. See [`Profile`] for what each profile writes.
///
/// # Example
/// ```
/// use ras_harness::formats::cper::{memory_error_record, Profile, Severity};
/// let record = memory_error_record(0x4001_0000, Severity::Recoverable, Profile::Qemu);
/// let bytes = record.encode();
/// assert_eq!(bytes.len(), 172);
/// assert_eq!(bytes[..4], [1, 0, 0, 0]); // block status: uncorrectable valid, count 0
/// ```
pub fn memory_error_record(address: u64, severity: Severity, profile: Profile) -> Record {
    memory_error_record_with_granule(address, DEFAULT_GRANULE_SHIFT, severity, profile)
}

/// [`memory_error_record`] for an error granule of `1 << granule_shift` bytes (use the
/// SIGBUS `si_addr_lsb`). Only [`Profile::Strict`] writes it, as the address mask.
pub fn memory_error_record_with_granule(
    address: u64,
    granule_shift: u32,
    severity: Severity,
    profile: Profile,
) -> Record {
    // QEMU: acpi_ghes_build_append_mem_cper writes validation (1 << 14) | (1 << 1), error
    // status 0, the address, 48 zero bytes (mask through target id), error type 0
    // "Unknown error", 7 zero bytes.
    let mut section = MemoryErrorSection::with_address(address, MemoryErrorType::Unknown);
    let (block_status, flags) = match profile {
        // QEMU: ACPI_GEBS_UNCORRECTABLE (1) and flags 0 in
        // ghes_gen_err_data_uncorrectable_recoverable.
        Profile::Qemu => (BlockStatus(BlockStatus::UNCORRECTABLE_VALID), 0),
        Profile::Strict => {
            section.validation_bits |= valid::PHYSICAL_ADDRESS_MASK;
            section.physical_address_mask = granule_mask(granule_shift);
            let valid_bit = match severity {
                Severity::Corrected => BlockStatus::CORRECTABLE_VALID,
                Severity::Informational => 0,
                _ => BlockStatus::UNCORRECTABLE_VALID,
            };
            (BlockStatus::with_entry_count(valid_bit, 1), FLAG_PRIMARY)
        }
    };
    let entry = Entry::new(Section::PlatformMemory(section), severity, flags);
    Record::new(block_status, severity, vec![entry])
}

/// The Physical Address Mask of an error granule of `1 << granule_shift` bytes: the address
/// bits above it (none for a shift of 64 or more).
fn granule_mask(granule_shift: u32) -> u64 {
    u64::MAX.checked_shl(granule_shift).unwrap_or(0)
}

/// Where [`memory_error_record`]'s one Platform Memory section starts: after the Generic
/// Error Status Block and one revision 0x300 Generic Error Data Entry (ACPI 6.5
/// §18.3.2.7.1).
const SECTION_AT: usize = STATUS_BLOCK_LEN + DATA_ENTRY_LEN;
/// The length of a [`memory_error_record`]: status block, entry, section.
pub const MEMORY_ERROR_RECORD_LEN: usize = SECTION_AT + MEMORY_SECTION_LEN;
/// Where the fields that depend on the error sit in the record: the section's Physical
/// Address and Physical Address Mask.
const ADDRESS_AT: usize = SECTION_AT + PHYSICAL_ADDRESS_AT;
const MASK_AT: usize = SECTION_AT + PHYSICAL_ADDRESS_MASK_AT;

/// A recoverable [`memory_error_record`] in `profile`'s layout, encoded once;
/// [`Self::encode`] patches the only fields that depend on the error (the tests compare it
/// with a fresh encoding for every profile and granule).
#[derive(Clone, Debug)]
pub struct RecordTemplate {
    bytes: [u8; MEMORY_ERROR_RECORD_LEN],
    profile: Profile,
}

impl RecordTemplate {
    /// Encodes the record for address 0.
    ///
    /// # Errors
    /// The encoding is not [`MEMORY_ERROR_RECORD_LEN`] bytes long (never, the tests say).
    pub fn new(profile: Profile) -> Result<Self, String> {
        let encoded = memory_error_record(0, Severity::Recoverable, profile).encode();
        let bytes = <[u8; MEMORY_ERROR_RECORD_LEN]>::try_from(encoded.as_slice())
            .map_err(|_| format!("a memory-error record of {} bytes", encoded.len()))?;
        Ok(Self { bytes, profile })
    }

    /// The record for the error at guest physical `address`, in a granule of
    /// `1 << granule_shift` bytes (only [`Profile::Strict`] reports it, as the mask).
    pub fn encode(&self, address: u64, granule_shift: u32) -> [u8; MEMORY_ERROR_RECORD_LEN] {
        let mut bytes = self.bytes;
        bytes[ADDRESS_AT..ADDRESS_AT + 8].copy_from_slice(&address.to_le_bytes());
        if self.profile == Profile::Strict {
            let mask = granule_mask(granule_shift);
            bytes[MASK_AT..MASK_AT + 8].copy_from_slice(&mask.to_le_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cper::testing::{hex_dump, roundtrip_exact};
    use crate::testutil::snapshot_settings;

    const ADDRESS: u64 = 0x4001_0000;

    /// The 172 bytes QEMU's hw/acpi/ghes.c writes for a memory error at `address`, spelled
    /// out field by field from acpi_ghes_memory_errors and the helpers it calls.
    fn qemu_ghes_c_bytes(address: u64) -> Vec<u8> {
        let mut b = Vec::new();
        // acpi_ghes_generic_error_status(block, ACPI_GEBS_UNCORRECTABLE, 0, 0,
        //     data_length = ACPI_GHES_DATA_LENGTH + ACPI_GHES_MEM_CPER_LENGTH,
        //     ACPI_CPER_SEV_RECOVERABLE)
        b.extend_from_slice(&1u32.to_le_bytes()); // block status
        b.extend_from_slice(&0u32.to_le_bytes()); // raw data offset
        b.extend_from_slice(&0u32.to_le_bytes()); // raw data length
        b.extend_from_slice(&(72u32 + 80).to_le_bytes()); // data length
        b.extend_from_slice(&0u32.to_le_bytes()); // error severity
                                                  // acpi_ghes_generic_error_data(block, guid, ACPI_CPER_SEV_RECOVERABLE, 0, 0,
                                                  //     ACPI_GHES_MEM_CPER_LENGTH, fru_id = {}, 0)
        b.extend_from_slice(&[
            0x14, 0x11, 0xBC, 0xA5, 0x64, 0x6F, 0xDE, 0x4E, 0xB8, 0x63, 0x3E, 0x83, 0xED, 0x7C,
            0x83, 0xB1,
        ]); // UUID_LE(0xA5BC1114, 0x6F64, 0x4EDE, 0xB8, 0x63, ...)
        b.extend_from_slice(&0u32.to_le_bytes()); // error severity
        b.extend_from_slice(&0x300u16.to_le_bytes()); // revision
        b.push(0); // validation bits
        b.push(0); // flags
        b.extend_from_slice(&80u32.to_le_bytes()); // error data length
        b.extend_from_slice(&[0; 16]); // FRU id
        b.extend_from_slice(&[0; 20]); // FRU text
        b.extend_from_slice(&0u64.to_le_bytes()); // timestamp
                                                  // acpi_ghes_build_append_mem_cper(block, address)
        b.extend_from_slice(&((1u64 << 14) | (1 << 1)).to_le_bytes()); // validation bits
        b.extend_from_slice(&0u64.to_le_bytes()); // error status
        b.extend_from_slice(&address.to_le_bytes()); // physical address
        b.extend_from_slice(&[0; 48]); // "skip all the detailed information"
        b.push(0); // memory error type: "Unknown error"
        b.extend_from_slice(&[0; 7]); // the rest
        b
    }

    #[test]
    fn qemu_record_is_what_ghes_c_writes() {
        let bytes = memory_error_record(ADDRESS, Severity::Recoverable, Profile::Qemu).encode();
        assert_eq!(bytes.len(), 172);
        assert_eq!(bytes, qemu_ghes_c_bytes(ADDRESS));
        for address in [0, 0x1000, u64::MAX] {
            let record = memory_error_record(address, Severity::Recoverable, Profile::Qemu);
            assert_eq!(record.encode(), qemu_ghes_c_bytes(address));
        }
    }

    #[test]
    fn strict_differs_from_qemu_only_where_profile_says() {
        let qemu = memory_error_record(ADDRESS, Severity::Recoverable, Profile::Qemu).encode();
        let strict = memory_error_record(ADDRESS, Severity::Recoverable, Profile::Strict).encode();
        assert_eq!(strict.len(), qemu.len());
        let diff: Vec<(usize, u8, u8)> = qemu
            .iter()
            .zip(&strict)
            .enumerate()
            .filter(|(_, (q, s))| q != s)
            .map(|(i, (q, s))| (i, *q, *s))
            .collect();
        assert_eq!(
            diff,
            vec![
                (0, 0x01, 0x11),   // block status: entry count 1 in bits 13:4
                (43, 0x00, 0x01),  // entry flags (20 + 23): Primary
                (92, 0x02, 0x06),  // memory validation bits (20 + 72): + address mask valid
                (117, 0x00, 0xf0), // physical address mask (92 + 24): 0xffff_ffff_ffff_f000
                (118, 0x00, 0xff),
                (119, 0x00, 0xff),
                (120, 0x00, 0xff),
                (121, 0x00, 0xff),
                (122, 0x00, 0xff),
                (123, 0x00, 0xff),
            ]
        );
    }

    #[test]
    fn strict_block_status_follows_severity() {
        let status = |sev| {
            memory_error_record(ADDRESS, sev, Profile::Strict)
                .status
                .block_status
                .0
        };
        assert_eq!(status(Severity::Recoverable), 0x11);
        assert_eq!(status(Severity::Fatal), 0x11);
        assert_eq!(status(Severity::Corrected), 0x12);
        assert_eq!(status(Severity::Informational), 0x10);
        let qemu = memory_error_record(ADDRESS, Severity::Corrected, Profile::Qemu);
        assert_eq!(qemu.status.block_status.0, 0x1);
        assert_eq!(qemu.status.error_severity, Severity::Corrected);
        assert_eq!(qemu.entries[0].header.error_severity, Severity::Corrected);
    }

    #[test]
    fn granule_sets_the_strict_mask() {
        let mask = |shift| match &memory_error_record_with_granule(
            ADDRESS,
            shift,
            Severity::Recoverable,
            Profile::Strict,
        )
        .entries[0]
            .section
        {
            Section::PlatformMemory(m) => m.physical_address_mask,
            other => panic!("not a memory section: {other:?}"),
        };
        assert_eq!(mask(21), 0xffff_ffff_ffe0_0000);
        assert_eq!(mask(0), u64::MAX);
        assert_eq!(mask(64), 0);
    }

    fn snapshot_record(name: &str, profile: Profile) {
        let record = memory_error_record(ADDRESS, Severity::Recoverable, profile);
        let bytes = record.encode();
        let decoded = roundtrip_exact(&bytes, Record::decode, Record::encode);
        assert_eq!(decoded, record);
        let json = serde_json::to_string_pretty(&decoded).expect("records serialise");
        let text = format!(
            "{} bytes, memory error at {ADDRESS:#x}, profile {profile}\n\n{}\n{json}\n",
            bytes.len(),
            hex_dump(&bytes)
        );
        snapshot_settings("cper").bind(|| {
            insta::assert_snapshot!(name, text);
            insta::assert_binary_snapshot!(&format!("{name}_bytes.bin"), bytes);
        });
    }

    #[test]
    fn snapshot_qemu_record() {
        snapshot_record("qemu_memory_error_0x40010000", Profile::Qemu);
    }

    #[test]
    fn snapshot_strict_record() {
        snapshot_record("strict_memory_error_0x40010000", Profile::Strict);
    }

    #[test]
    fn the_template_patched_is_the_record_encoded_afresh() {
        for profile in [Profile::Qemu, Profile::Strict] {
            let template = RecordTemplate::new(profile).unwrap();
            for (address, shift) in [
                (0x8000_0000, 12),
                (0x8000_1234, 16),
                (0x8020_0000, 21),
                (u64::MAX, 64),
                (0, 0),
            ] {
                let fresh = memory_error_record_with_granule(
                    address,
                    shift,
                    Severity::Recoverable,
                    profile,
                )
                .encode();
                assert_eq!(
                    template.encode(address, shift).as_slice(),
                    fresh.as_slice(),
                    "{profile} {address:#x} lsb {shift}"
                );
            }
        }
    }
}
