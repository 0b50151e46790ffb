//! The VMM's side of a GHESv2 error source (ACPI 6.5 §18.3.2.8): before writing a record it
//! requires the Read Ack register to be non-zero (the guest acknowledged the previous one)
//! and clears it; the guest sets it again after reading (docs/ras-facts.md §8). QEMU does the
//! same in hw/acpi/ghes.c, and abort()s when the register is still 0; this VMM keeps the
//! old record instead ([`super::policy::RecordAction::KeepUnacknowledged`]).
//!
//! The record comes from [`crate::formats::cper::RecordTemplate`], encoded once per error
//! source.

use crate::formats::acpi::GhesSource;
use crate::kvm::GuestMemory;

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
}
