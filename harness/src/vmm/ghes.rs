//! The VMM's side of a GHESv2 error source (ACPI 6.5 §18.3.2.8): before writing a record it
//! requires the Read Ack register to be non-zero (the guest acknowledged the previous one)
//! and clears it; the guest sets it again after reading (docs/ras-facts.md §8). QEMU does the
//! same in hw/acpi/ghes.c, and abort()s when the register is still 0; this VMM keeps the
//! old record instead ([`super::policy::RecordAction::KeepUnacknowledged`]).
//!
//! The record itself is encoded once per error source ([`RecordTemplate`]) and only its
//! address (and mask) patched per error: on the vCPU thread, encoding costs more than the
//! three guest memory accesses.

use crate::formats::acpi::GhesSource;
use crate::formats::cper::{
    memory_error_record_with_granule, Profile, Severity, DATA_ENTRY_LEN, MEMORY_SECTION_LEN,
    STATUS_BLOCK_LEN,
};
use crate::kvm::GuestMemory;

/// A memory-error record: a Generic Error Status Block, one revision 0x300 Generic Error
/// Data Entry, one Platform Memory Error section (ACPI 6.5 §18.3.2.7.1, UEFI 2.10 N.2.5).
pub const RECORD_LEN: usize = STATUS_BLOCK_LEN + DATA_ENTRY_LEN + MEMORY_SECTION_LEN;
/// The section's Physical Address and Physical Address Mask, after its Validation Bits and
/// Error Status (UEFI 2.10 Table N-32: offsets 16 and 24).
const ADDRESS_AT: usize = STATUS_BLOCK_LEN + DATA_ENTRY_LEN + 16;
const MASK_AT: usize = ADDRESS_AT + 8;

/// A recoverable memory-error record in `profile`'s layout, encoded once; [`Self::encode`]
/// patches the only fields that depend on the error (the tests compare it with a fresh
/// encoding for every profile and granule).
#[derive(Clone, Debug)]
pub struct RecordTemplate {
    bytes: [u8; RECORD_LEN],
    profile: Profile,
}

impl RecordTemplate {
    /// Encodes the record for address 0.
    pub fn new(profile: Profile) -> Result<Self, String> {
        let encoded =
            memory_error_record_with_granule(0, 12, Severity::Recoverable, profile).encode();
        let bytes = <[u8; RECORD_LEN]>::try_from(encoded.as_slice())
            .map_err(|_| format!("a memory-error record of {} bytes", encoded.len()))?;
        Ok(Self { bytes, profile })
    }

    /// The record for the error at guest physical `address`, in a granule of
    /// `1 << granule_shift` bytes (only [`Profile::Strict`] reports it, as the mask).
    pub fn encode(&self, address: u64, granule_shift: u32) -> [u8; RECORD_LEN] {
        let mut bytes = self.bytes;
        bytes[ADDRESS_AT..ADDRESS_AT + 8].copy_from_slice(&address.to_le_bytes());
        if self.profile == Profile::Strict {
            let mask = u64::MAX.checked_shl(granule_shift).unwrap_or(0);
            bytes[MASK_AT..MASK_AT + 8].copy_from_slice(&mask.to_le_bytes());
        }
        bytes
    }
}

/// Whether a new record may be written: the Read Ack register is non-zero.
pub fn acked(mem: &impl GuestMemory, source: &GhesSource) -> Result<bool, String> {
    let mut word = [0u8; 8];
    mem.read(source.read_ack, &mut word)?;
    Ok(u64::from_le_bytes(word) != 0)
}

/// Clears the Read Ack register and writes `record` (a whole Generic Error Status Block)
/// into the status block.
pub fn write_record(
    mem: &impl GuestMemory,
    source: &GhesSource,
    record: &[u8],
) -> Result<(), String> {
    if record.len() > source.status_block_length as usize {
        return Err(format!(
            "a {}-byte record does not fit the {}-byte status block",
            record.len(),
            source.status_block_length
        ));
    }
    mem.write(source.read_ack, &0u64.to_le_bytes())?;
    mem.write(source.status_block, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::acpi::{acknowledge, AcpiLayout, READ_ACK_PRESERVE, READ_ACK_WRITE};
    use std::cell::RefCell;

    /// 64 KiB of guest memory at 0x4001_0000.
    struct Mem(RefCell<Vec<u8>>);
    const BASE: u64 = 0x4001_0000;

    impl GuestMemory for Mem {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
            let at = (gpa - BASE) as usize;
            buf.copy_from_slice(&self.0.borrow()[at..at + buf.len()]);
            Ok(())
        }
        fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), String> {
            let at = (gpa - BASE) as usize;
            self.0.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn the_read_ack_handshake_gates_the_second_record() {
        let source = AcpiLayout::qemu_like(0x4000_0000, 0x4000_1000, BASE).sources[0];
        let mem = Mem(RefCell::new(vec![0; 0x1_0000]));
        mem.write(source.read_ack, &1u64.to_le_bytes()).unwrap();
        assert!(acked(&mem, &source).unwrap());
        write_record(&mem, &source, &[0xAA; 172]).unwrap();
        let mut back = vec![0u8; 172];
        mem.read(source.status_block, &mut back).unwrap();
        assert_eq!(back, vec![0xAA; 172]);
        assert!(
            !acked(&mem, &source).unwrap(),
            "cleared for the guest to set"
        );
        // The guest acknowledges: (value & preserve) | write.
        let v = acknowledge(0, READ_ACK_PRESERVE, READ_ACK_WRITE);
        mem.write(source.read_ack, &v.to_le_bytes()).unwrap();
        assert!(acked(&mem, &source).unwrap());
        assert!(write_record(&mem, &source, &[0; 2000])
            .unwrap_err()
            .contains("does not fit"));
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
