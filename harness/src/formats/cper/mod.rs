//! CPER as a VMM hands it to a guest over ACPI GHES: the Generic Error Status Block, its
//! Generic Error Data Entries, and the Platform Memory and ARM Processor error sections
//! (UEFI 2.10 appendix N, ACPI 6.5 section 18.3.2.7), byte for byte.
//!
//! - [`Record`] is a whole status block: [`Record::decode`] and [`Record::encode`], and
//!   `serde::Serialize` for JSON with every address and bit field as a `"0x..."` string.
//! - [`memory_error_record`] builds the record for a guest memory error, as QEMU writes it
//!   ([`Profile::Qemu`]) or with the fields QEMU leaves out ([`Profile::Strict`]);
//!   [`RecordTemplate`] encodes it once and patches in each error's address.
//! - [`linux_response`] predicts what a Linux guest does with a record, for the exception
//!   that notifies it and the kernel it runs: recover the page, kill the task, panic, ...
//! - Each structure also has its own codec: [`ErrorStatusBlock`], [`DataEntryHeader`],
//!   [`MemoryErrorSection`], [`ArmProcessorSection`], [`Guid`].
//!
//! Decoders take any bytes and return a value or an [`Error`] naming the structure, the
//! field and the offset; they never panic. Wire codes the spec reserves stay data
//! ([`Severity::Unknown`], [`MemoryErrorType::Reserved`], [`SectionType::Other`]).
//!
//! ```
//! use ras_harness::formats::cper::{linux_response, memory_error_record, Kernel, LinuxContext};
//! use ras_harness::formats::cper::{Notification, Profile, Record, Severity, SigbusCode};
//! use ras_harness::formats::esr::Origin;
//! let bytes = memory_error_record(0x4001_0000, Severity::Recoverable, Profile::Strict).encode();
//! let record = Record::decode(&bytes).unwrap();
//! assert_eq!(record.status.block_status.entry_count(), 1);
//! let el0 = Notification::Sea { from: Origin::LowerEl };
//! let guest = LinuxContext { notification: el0, kernel: Kernel::V6_18_2 };
//! let response = linux_response(&bytes, 1024, guest).unwrap();
//! assert_eq!(response.sigbus(), Some(SigbusCode::BusMceerrAr));
//! ```

mod arm_processor;
mod data_entry;
mod guid;
mod linux;
mod memory;
mod profile;
mod record;
mod severity;
mod status_block;
mod wire;

pub use arm_processor::{
    cache_error_section, info_flags as arm_info_flags, info_valid as arm_info_valid,
    valid as arm_valid, ArmContextInfo, ArmErrorInfo, ArmProcessorSection, ARM_CONTEXT_HEADER_LEN,
    ARM_ERROR_INFO_LEN, ARM_SECTION_HEADER_LEN,
};
pub use data_entry::{
    has_timestamp, header_len, DataEntryHeader, DATA_ENTRY_LEN, DATA_ENTRY_LEN_OLD,
    DATA_ENTRY_REVISION, FLAG_CONTAINMENT_WARNING, FLAG_ERROR_THRESHOLD_EXCEEDED,
    FLAG_LATENT_ERROR, FLAG_OVERFLOW, FLAG_PRIMARY, FLAG_PROPAGATED, FLAG_RESET,
    FLAG_RESOURCE_NOT_ACCESSIBLE, FRU_TEXT_LEN, VALID_FRU_ID, VALID_FRU_TEXT, VALID_TIMESTAMP,
};
pub use guid::{
    Guid, ParseGuidError, SectionType, CPER_SEC_PLATFORM_MEM, CPER_SEC_PROC_ARM, GUID_LEN,
};
pub use linux::{
    linux_response, Incomplete, Kernel, LinuxContext, LinuxResponse, MemoryFailure, MfFlags,
    Notification, PanicCause, Rejection, SigbusCode,
};
pub use memory::{valid as memory_valid, MemoryErrorSection, MemoryErrorType, MEMORY_SECTION_LEN};
pub use profile::{
    memory_error_record, memory_error_record_with_granule, ParseProfileError, Profile,
    RecordTemplate, DEFAULT_GRANULE_SHIFT, MEMORY_ERROR_RECORD_LEN,
};
pub use record::{Entry, Record, Section};
pub use severity::{ParseSeverityError, Severity};
pub use status_block::{BlockStatus, ErrorStatusBlock, STATUS_BLOCK_LEN};
pub use wire::{Error, Result};

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers every codec's tests share.

    use std::fmt::Debug;

    /// Decodes `bytes`, re-encodes the value and asserts the same bytes come back: the
    /// codec neither drops nor invents a bit. Returns the value for further checks.
    pub(crate) fn roundtrip_exact<T: Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> super::Result<T>,
        encode: impl Fn(&T) -> Vec<u8>,
    ) -> T {
        let value = decode(bytes).unwrap_or_else(|e| panic!("decode failed: {e}\n{bytes:02x?}"));
        assert_eq!(
            encode(&value),
            bytes,
            "re-encoding {value:?} changed the bytes"
        );
        value
    }

    /// A hex dump, 16 bytes a line, each line prefixed with its offset.
    pub(crate) fn hex_dump(bytes: &[u8]) -> String {
        bytes
            .chunks(16)
            .enumerate()
            .map(|(i, line)| {
                let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                format!("{:04x}: {}\n", i * 16, hex.join(" "))
            })
            .collect()
    }
}
