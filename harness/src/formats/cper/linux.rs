//! What a Linux guest checks before it acts on a record: the path an SEA notification
//! takes through drivers/acpi/apei/ghes.c (ghes_notify_sea -> ghes_in_nmi_queue_one_entry
//! -> __ghes_peek_estatus, __ghes_check_estatus, __ghes_read_estatus, then
//! ghes_proc_in_irq -> ghes_do_proc) and drivers/firmware/efi/cper.c
//! (cper_estatus_check_header, cper_estatus_check), as of Linux 6.x.

use super::data_entry::{header_len, DATA_ENTRY_LEN_OLD, FLAG_ERROR_THRESHOLD_EXCEEDED};
use super::guid::{Guid, CPER_SEC_PLATFORM_MEM};
use super::memory::valid;
use super::status_block::STATUS_BLOCK_LEN;
use super::Severity;

/// Why a Linux guest would not recover from a record: it ignores it, rejects it as
/// malformed, panics, or reads it but hands no page to memory_failure().
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Rejection {
    /// Not a kernel check: fewer bytes were given than the kernel reads (`needed`), so the
    /// rest would come from whatever follows in guest memory.
    #[error("record is {available} bytes, the guest reads {needed}")]
    Incomplete { needed: usize, available: usize },
    /// __ghes_peek_estatus: Block Status 0 means "no error"; the block is not read
    /// (-ENOENT).
    #[error("block status is 0: no error pending")]
    ZeroBlockStatus,
    /// __ghes_check_estatus: cper_estatus_len() below the 20-byte header, "Truncated error
    /// status block!". The length is a u32 sum that only gets there by wrapping.
    #[error("error status length {len} (u32, wrapped) is below 20: truncated block")]
    TruncatedBlock { len: u32 },
    /// __ghes_check_estatus: cper_estatus_len() (20 + Data Length, or Raw Data Offset +
    /// Raw Data Length when there is raw data) exceeds the HEST Error Status Block Length,
    /// "Invalid error status block length!".
    #[error("error status length {len} exceeds the {block_len}-byte error status block")]
    BlockOverflow { len: u32, block_len: usize },
    /// cper_estatus_check_header: a non-zero Data Length shorter than one 64-byte entry
    /// header, "Invalid CPER header!".
    #[error("data length {data_length} is below one 64-byte entry header")]
    DataLengthTooShort { data_length: u32 },
    /// cper_estatus_check_header: raw data present but starting inside the entries.
    #[error("raw data offset {raw_data_offset} is inside the entries, which end at {data_end}")]
    RawDataOverlapsEntries { raw_data_offset: u32, data_end: u64 },
    /// cper_estatus_check: the entry at `offset` (from the block's start) needs a
    /// `header_len`-byte header (72 at revision >= 0x300, else 64; `acpi_hest_get_size`)
    /// but only `remaining` bytes of Data Length are left.
    #[error("entry at {offset}: {header_len}-byte header, {remaining} bytes of data length left")]
    EntryHeaderOverrun {
        offset: usize,
        header_len: usize,
        remaining: usize,
    },
    /// cper_estatus_check: header plus Error Data Length (`acpi_hest_get_record_size`)
    /// exceeds the Data Length left, so the entries do not consume it exactly.
    #[error("entry at {offset}: {record_len} bytes, {remaining} bytes of data length left")]
    EntryOverrun {
        offset: usize,
        record_len: u64,
        remaining: usize,
    },
    /// ghes_in_nmi_queue_one_entry / ghes_proc: block severity fatal maps to
    /// GHES_SEV_PANIC and __ghes_panic() panics the guest.
    #[error("block severity is fatal: the guest panics")]
    FatalSeverity,
    /// ghes_severity: a reserved block severity is "Unknown, go panic" (GHES_SEV_PANIC).
    #[error("block severity {value:#x} is reserved: the guest panics")]
    UnknownSeverity { value: u32 },
    /// ghes_do_proc: no Platform Memory section, so nothing is queued for
    /// memory_failure(); on a synchronous (SEA) source the kernel then force-kills the
    /// current task with SIGBUS ("synchronous unrecoverable error"). ARM processor
    /// sections, which ghes_handle_arm_hw_error can also queue, are not judged here.
    #[error("no platform memory section: nothing for memory_failure()")]
    NoMemorySection,
    /// ghes_handle_memory_failure reads the section's validation bits and physical
    /// address without checking Error Data Length; a section shorter than those 24 bytes
    /// makes it read whatever follows.
    #[error("memory section of entry {entry} is {length} bytes, shorter than its address")]
    MemorySectionTooShort { entry: usize, length: u32 },
    /// ghes_handle_memory_failure: without CPER_MEM_VALID_PA the section is ignored.
    #[error("memory section of entry {entry}: physical address not valid ({validation_bits:#x})")]
    MemoryAddressNotValid { entry: usize, validation_bits: u64 },
    /// ghes_handle_memory_failure: memory_failure() is queued only when block and section
    /// are both recoverable (MF_ACTION_REQUIRED on SEA), or the section is corrected with
    /// Error Threshold Exceeded (soft offline). Anything else is only logged.
    #[error(
        "memory section of entry {entry}: block {block_severity}, section {section_severity}, \
         flags {flags:#x}: not acted on"
    )]
    MemoryErrorNotActionable {
        entry: usize,
        block_severity: Severity,
        section_severity: Severity,
        flags: u8,
    },
}

/// Little-endian u16/u32/u64 at `at`, `None` past the end.
fn le<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Judges `record` (the bytes at the error status address) the way a Linux guest whose
/// HEST gives an Error Status Block Length of `block_len` would, in the kernel's order.
///
/// `Ok(())` means: the guest reads the record, does not panic, and queues every Platform
/// Memory section's page for memory_failure(). Not judged, because one record does not
/// show them: whether the page exists in the guest (`pfn_valid` in
/// ghes_do_memory_failure), and the duplicate filter that drops a byte-identical record
/// seen in the last 10 s (ghes_estatus_cached; the record is then still acknowledged).
///
/// # Errors
/// The first [`Rejection`] the kernel would hit.
pub fn linux_accepts(record: &[u8], block_len: usize) -> Result<(), Rejection> {
    let incomplete = |needed: usize| Rejection::Incomplete {
        needed,
        available: record.len(),
    };
    let word = |at: usize| le::<4>(record, at).map(u32::from_le_bytes);
    let (Some(block_status), Some(raw_off), Some(raw_len), Some(data_length), Some(severity)) =
        (word(0), word(4), word(8), word(12), word(16))
    else {
        return Err(incomplete(STATUS_BLOCK_LEN));
    };

    // __ghes_peek_estatus
    if block_status == 0 {
        return Err(Rejection::ZeroBlockStatus);
    }

    // __ghes_check_estatus, with cper_estatus_len's u32 arithmetic.
    let len = if raw_len != 0 {
        raw_off.wrapping_add(raw_len)
    } else {
        (STATUS_BLOCK_LEN as u32).wrapping_add(data_length)
    };
    if (len as usize) < STATUS_BLOCK_LEN {
        return Err(Rejection::TruncatedBlock { len });
    }
    if len as usize > block_len {
        return Err(Rejection::BlockOverflow { len, block_len });
    }
    // cper_estatus_check_header: sizeof(struct acpi_hest_generic_data) is 64.
    if data_length != 0 && (data_length as usize) < DATA_ENTRY_LEN_OLD {
        return Err(Rejection::DataLengthTooShort { data_length });
    }
    let data_end = STATUS_BLOCK_LEN as u64 + u64::from(data_length);
    if raw_len != 0 && u64::from(raw_off) < data_end {
        return Err(Rejection::RawDataOverlapsEntries {
            raw_data_offset: raw_off,
            data_end,
        });
    }

    // __ghes_read_estatus copies `len` bytes, then cper_estatus_check walks the entries.
    if record.len() < len as usize {
        return Err(incomplete(len as usize));
    }
    let mut memory_entries = Vec::new();
    let mut remaining = data_length as usize;
    let mut offset = STATUS_BLOCK_LEN;
    let mut index = 0;
    while remaining > 0 {
        // Any header is at least 64 bytes, so with less left the revision does not matter.
        let header = match le::<2>(record, offset + 20) {
            Some(rev) if remaining >= DATA_ENTRY_LEN_OLD => header_len(u16::from_le_bytes(rev)),
            _ => DATA_ENTRY_LEN_OLD,
        };
        if header > remaining {
            return Err(Rejection::EntryHeaderOverrun {
                offset,
                header_len: header,
                remaining,
            });
        }
        let (Some(guid), Some(sec_sev), Some(flags), Some(err_len)) = (
            le::<16>(record, offset),
            le::<4>(record, offset + 16),
            le::<1>(record, offset + 23),
            le::<4>(record, offset + 24),
        ) else {
            return Err(incomplete(offset + header));
        };
        let err_len = u32::from_le_bytes(err_len);
        let record_len = header as u64 + u64::from(err_len);
        if record_len > remaining as u64 {
            return Err(Rejection::EntryOverrun {
                offset,
                record_len,
                remaining,
            });
        }
        if Guid::from_bytes(guid) == CPER_SEC_PLATFORM_MEM {
            let section_severity = Severity::from(u32::from_le_bytes(sec_sev));
            memory_entries.push((index, offset + header, err_len, section_severity, flags[0]));
        }
        // record_len <= remaining, so it fits in usize.
        remaining -= record_len as usize;
        offset += record_len as usize;
        index += 1;
    }

    // ghes_in_nmi_queue_one_entry: panic on a fatal or unknown block severity.
    let block_severity = Severity::from(severity);
    match block_severity {
        Severity::Fatal => return Err(Rejection::FatalSeverity),
        Severity::Unknown(value) => return Err(Rejection::UnknownSeverity { value }),
        _ => {}
    }

    // ghes_do_proc -> ghes_handle_memory_failure for each memory section.
    if memory_entries.is_empty() {
        return Err(Rejection::NoMemorySection);
    }
    for (entry, payload, length, section_severity, flags) in memory_entries {
        if length < 24 {
            return Err(Rejection::MemorySectionTooShort { entry, length });
        }
        // The section lies inside the walked data, so its first 8 bytes are present.
        let Some(validation_bits) = le::<8>(record, payload).map(u64::from_le_bytes) else {
            return Err(incomplete(payload + 8));
        };
        if validation_bits & valid::PHYSICAL_ADDRESS == 0 {
            return Err(Rejection::MemoryAddressNotValid {
                entry,
                validation_bits,
            });
        }
        let soft_offline =
            section_severity == Severity::Corrected && flags & FLAG_ERROR_THRESHOLD_EXCEEDED != 0;
        let recover =
            block_severity == Severity::Recoverable && section_severity == Severity::Recoverable;
        if !soft_offline && !recover {
            return Err(Rejection::MemoryErrorNotActionable {
                entry,
                block_severity,
                section_severity,
                flags,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cper::{
        memory_error_record, BlockStatus, Entry, Profile, Record, Section, FLAG_PRIMARY,
    };
    use proptest::prelude::*;

    /// QEMU's error status block length (ACPI_GHES_MAX_RAW_DATA_LENGTH).
    const BLOCK: usize = 1024;

    fn qemu() -> Vec<u8> {
        memory_error_record(0x4001_0000, Severity::Recoverable, Profile::Qemu).encode()
    }

    fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn both_profiles_are_accepted() {
        for profile in [Profile::Qemu, Profile::Strict] {
            let bytes = memory_error_record(0x4001_0000, Severity::Recoverable, profile).encode();
            assert_eq!(linux_accepts(&bytes, BLOCK), Ok(()), "{profile}");
            assert_eq!(linux_accepts(&bytes, 172), Ok(()), "{profile}: exact fit");
        }
    }

    #[test]
    fn incomplete() {
        assert_eq!(
            linux_accepts(&qemu()[..10], BLOCK),
            Err(Rejection::Incomplete {
                needed: 20,
                available: 10
            })
        );
        assert_eq!(
            linux_accepts(&qemu()[..100], BLOCK),
            Err(Rejection::Incomplete {
                needed: 172,
                available: 100
            })
        );
    }

    #[test]
    fn zero_block_status() {
        let mut b = qemu();
        put_u32(&mut b, 0, 0);
        assert_eq!(linux_accepts(&b, BLOCK), Err(Rejection::ZeroBlockStatus));
    }

    #[test]
    fn truncated_block() {
        // 20 + 0xffff_fff0 wraps to 4 in cper_estatus_len's u32.
        let mut b = qemu();
        put_u32(&mut b, 12, 0xffff_fff0);
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::TruncatedBlock { len: 4 })
        );
    }

    #[test]
    fn block_overflow() {
        assert_eq!(
            linux_accepts(&qemu(), 171),
            Err(Rejection::BlockOverflow {
                len: 172,
                block_len: 171
            })
        );
        // With raw data the length is raw offset + raw length.
        let mut b = qemu();
        put_u32(&mut b, 4, 172);
        put_u32(&mut b, 8, 900);
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::BlockOverflow {
                len: 1072,
                block_len: BLOCK
            })
        );
    }

    #[test]
    fn data_length_too_short() {
        let mut b = qemu();
        put_u32(&mut b, 12, 63);
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::DataLengthTooShort { data_length: 63 })
        );
    }

    #[test]
    fn raw_data_overlaps_entries() {
        let mut b = qemu();
        put_u32(&mut b, 4, 171);
        put_u32(&mut b, 8, 1);
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::RawDataOverlapsEntries {
                raw_data_offset: 171,
                data_end: 172
            })
        );
    }

    #[test]
    fn entry_header_overrun() {
        // Data length 152 + 70: a second "entry" of 70 bytes cannot hold a 72-byte header.
        let mut b = qemu();
        put_u32(&mut b, 12, 152 + 70);
        b.resize(172 + 70, 0);
        b[172 + 20..172 + 22].copy_from_slice(&0x300u16.to_le_bytes());
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::EntryHeaderOverrun {
                offset: 172,
                header_len: 72,
                remaining: 70
            })
        );
    }

    #[test]
    fn entry_overrun() {
        // Error data length 81 in a 152-byte data region: 72 + 81 > 152.
        let mut b = qemu();
        put_u32(&mut b, 20 + 24, 81);
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::EntryOverrun {
                offset: 20,
                record_len: 153,
                remaining: 152
            })
        );
    }

    #[test]
    fn fatal_severity() {
        let b = memory_error_record(0x4001_0000, Severity::Fatal, Profile::Qemu).encode();
        assert_eq!(linux_accepts(&b, BLOCK), Err(Rejection::FatalSeverity));
    }

    #[test]
    fn unknown_severity() {
        let mut b = qemu();
        put_u32(&mut b, 16, 7);
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::UnknownSeverity { value: 7 })
        );
    }

    #[test]
    fn no_memory_section() {
        let other = Entry::new(
            Section::Other {
                section_type: Guid::new(1, 2, 3, [4; 8]),
                bytes: vec![0; 8],
            },
            Severity::Recoverable,
            FLAG_PRIMARY,
        );
        let b = Record::new(BlockStatus(0x11), Severity::Recoverable, vec![other]).encode();
        assert_eq!(linux_accepts(&b, BLOCK), Err(Rejection::NoMemorySection));
        // An empty block (data length 0) is read, and nothing is done with it either.
        let empty = Record::new(BlockStatus(0x1), Severity::Recoverable, vec![]).encode();
        assert_eq!(
            linux_accepts(&empty, BLOCK),
            Err(Rejection::NoMemorySection)
        );
    }

    #[test]
    fn memory_section_too_short() {
        let short = Entry::new(
            Section::Other {
                section_type: CPER_SEC_PLATFORM_MEM,
                bytes: vec![2, 0, 0, 0, 0, 0, 0, 0],
            },
            Severity::Recoverable,
            0,
        );
        let b = Record::new(BlockStatus(0x1), Severity::Recoverable, vec![short]).encode();
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::MemorySectionTooShort {
                entry: 0,
                length: 8
            })
        );
    }

    #[test]
    fn memory_address_not_valid() {
        // Validation bits 0x4000: error type only, as if the VMM forgot the address bit.
        let mut b = qemu();
        b[20 + 72] = 0x00;
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::MemoryAddressNotValid {
                entry: 0,
                validation_bits: 0x4000
            })
        );
    }

    #[test]
    fn memory_error_not_actionable() {
        let b = memory_error_record(0x4001_0000, Severity::Corrected, Profile::Qemu).encode();
        assert_eq!(
            linux_accepts(&b, BLOCK),
            Err(Rejection::MemoryErrorNotActionable {
                entry: 0,
                block_severity: Severity::Corrected,
                section_severity: Severity::Corrected,
                flags: 0
            })
        );
        // Corrected with Error Threshold Exceeded is soft-offlined: accepted.
        let mut soft = b;
        soft[20 + 23] = FLAG_ERROR_THRESHOLD_EXCEEDED;
        assert_eq!(linux_accepts(&soft, BLOCK), Ok(()));
        // A recoverable block with an informational section is only logged.
        let mut mixed = qemu();
        put_u32(&mut mixed, 20 + 16, 3);
        assert_eq!(
            linux_accepts(&mixed, BLOCK),
            Err(Rejection::MemoryErrorNotActionable {
                entry: 0,
                block_severity: Severity::Recoverable,
                section_severity: Severity::Informational,
                flags: 0
            })
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), block_len in 0usize..2048) {
            if linux_accepts(&bytes, block_len).is_ok() {
                // Whatever Linux accepts has a status block, a non-zero status and fits.
                prop_assert!(bytes.len() >= 20 && bytes[..4] != [0; 4]);
            }
        }

        /// Damaged QEMU records reach the entry walk and the memory checks.
        #[test]
        fn never_panics_on_damaged_records(
            edits in proptest::collection::vec((0usize..172, any::<u8>()), 1..4),
            block_len in 0usize..400,
        ) {
            let mut b = qemu();
            for (at, value) in edits {
                b[at] = value;
            }
            if linux_accepts(&b, block_len).is_ok() {
                prop_assert!(block_len >= 20 && b[..4] != [0; 4]);
            }
        }
    }
}
