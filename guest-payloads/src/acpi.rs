//! Finding the error record the way an OS does: RSDP -> XSDT -> HEST -> GHES(v2) ->
//! error status address -> status block; then the acknowledgement. Also the DTB check.
//!
//! Every address read from a table is checked to lie in RAM before it is dereferenced,
//! so a broken table ends the walk (visible in `found`) instead of faulting. Guest memory is
//! read through [`Ram`], with volatile loads: the VMM may rewrite it (the status block, the
//! read-ack register) at any exit, so no Rust reference is ever made to it.

use crate::mailbox::Mailbox;
use ras_guest_abi::acpi::SDT_HEADER_LEN;
use ras_guest_abi::mailbox::{acpi_checksum, acpi_found, CPER_COPY_MAX};
use ras_guest_abi::{AcpiObservation, RecordRead};

/// HEST entry types (ACPI 6.5 18.3.2): Generic Hardware Error Source and its version 2.
const HEST_GHES: u16 = 9;
const HEST_GHES_V2: u16 = 10;
/// Entry sizes: GHES 64 bytes (Table 18.13), GHESv2 92 bytes (Table 18.15).
const GHES_LEN: usize = 64;
const GHES_V2_LEN: usize = 92;
/// Generic Error Status Block header: block status, raw data offset/length, data length,
/// error severity, 4 bytes each (ACPI 6.5 Table 18.17).
const STATUS_BLOCK_HEADER_LEN: u64 = 20;

/// `len` bytes of guest RAM at `addr`, checked to lie where boot said tables may (mapped
/// RAM: the RAM_SIZE bytes from the image base, where the reference VMM puts its tables, or
/// the RAM a UEFI firmware's memory map describes).
#[derive(Clone, Copy)]
struct Ram {
    addr: u64,
    len: usize,
}

impl Ram {
    /// The range, or `None` if any of its bytes lies outside RAM.
    fn at(addr: u64, len: u64) -> Option<Self> {
        let end = addr.checked_add(len)?;
        let [start, limit] = Mailbox::current().with_scratch(|s| s.tables);
        if addr < start || end > limit {
            return None;
        }
        Some(Self {
            addr,
            len: len as usize,
        })
    }

    fn len(self) -> usize {
        self.len
    }

    /// The byte at `at`; 0 past the end (a caller bug, never a fault).
    fn u8(self, at: usize) -> u8 {
        if at >= self.len {
            return 0;
        }
        // SAFETY: inside the range `at` checked to lie in the tables' RAM, which the
        // identity map covers; a volatile load of a u8, valid for any byte.
        unsafe { core::ptr::read_volatile((self.addr + at as u64) as *const u8) }
    }

    fn bytes<const N: usize>(self, at: usize) -> [u8; N] {
        core::array::from_fn(|i| self.u8(at + i))
    }

    fn u16(self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes(at))
    }

    fn u32(self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes(at))
    }

    fn u64(self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes(at))
    }

    /// The first `n` bytes of the range, from offset 0.
    fn starts_with(self, bytes: &[u8]) -> bool {
        bytes.len() <= self.len && bytes.iter().enumerate().all(|(i, &b)| self.u8(i) == b)
    }

    /// The sub-range `[from, from + len)`, if it lies inside this one.
    fn sub(self, from: usize, len: usize) -> Option<Self> {
        (from.checked_add(len)? <= self.len).then_some(Self {
            addr: self.addr + from as u64,
            len,
        })
    }

    /// Whether its bytes sum to 0 (ACPI 6.5 5.2.5.3, 5.2.6: the table checksum).
    fn checksum_ok(self) -> bool {
        (0..self.len).fold(0u8, |sum, i| sum.wrapping_add(self.u8(i))) == 0
    }
}

/// A whole system description table at `addr` with signature `sig`.
fn sdt(addr: u64, sig: &[u8; 4]) -> Option<Ram> {
    let header = Ram::at(addr, SDT_HEADER_LEN as u64)?;
    if !header.starts_with(sig) {
        return None;
    }
    let len = header.u32(4) as usize;
    if len < SDT_HEADER_LEN {
        return None;
    }
    Ram::at(addr, len as u64)
}

fn write_u32(addr: u64, value: u32) {
    if Ram::at(addr, 4).is_some() {
        // SAFETY: checked to lie in RAM (the firmware area); the VMM reads it after an exit.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
    }
}

fn write_u64(addr: u64, value: u64) {
    if Ram::at(addr, 8).is_some() {
        // SAFETY: as in write_u32.
        unsafe { core::ptr::write_volatile(addr as *mut u64, value) };
    }
}

/// Walks from the RSDP at `rsdp`, copies the first pending record into `read` and, with
/// `ack`, clears its block status and writes the read-ack register; what it found of the
/// tables goes to `obs`.
pub fn walk(rsdp: u64, ack: bool, obs: &mut AcpiObservation, read: &mut RecordRead) {
    obs.walks += 1;
    obs.found = 0;
    obs.checksum_errors = 0;
    obs.ghes_count = 0;
    let Some(hest) = find_hest(rsdp, obs) else {
        return;
    };
    let count = hest.u32(SDT_HEADER_LEN) as usize;
    let mut off = SDT_HEADER_LEN + 4;
    for _ in 0..count {
        if off + 2 > hest.len() {
            break;
        }
        let kind = hest.u16(off);
        let len = match kind {
            HEST_GHES => GHES_LEN,
            HEST_GHES_V2 => GHES_V2_LEN,
            _ => {
                obs.found |= acpi_found::UNKNOWN_ENTRY;
                break;
            }
        };
        let Some(entry) = hest.sub(off, len) else {
            break;
        };
        obs.ghes_count += 1;
        obs.found |= acpi_found::GHES;
        if read.found & acpi_found::RECORD == 0 {
            read_record(entry, kind, ack, obs, read);
        }
        off += len;
    }
    obs.found |= read.found;
}

/// RSDP (ACPI 6.5 5.2.5.3) -> XSDT (5.2.8) -> the HEST it lists.
fn find_hest(rsdp: u64, obs: &mut AcpiObservation) -> Option<Ram> {
    let r = Ram::at(rsdp, 36)?;
    if !r.starts_with(b"RSD PTR ") {
        return None;
    }
    obs.found |= acpi_found::RSDP;
    if !r.sub(0, 20).is_some_and(Ram::checksum_ok) {
        obs.checksum_errors |= acpi_checksum::RSDP;
    }
    // Revision (offset 15) >= 2 has Length (20) and XsdtAddress (24).
    if r.u8(15) < 2 {
        return None;
    }
    if !Ram::at(rsdp, u64::from(r.u32(20))).is_some_and(Ram::checksum_ok) {
        obs.checksum_errors |= acpi_checksum::RSDP_EXTENDED;
    }
    let xsdt = sdt(r.u64(24), b"XSDT")?;
    obs.found |= acpi_found::XSDT;
    if !xsdt.checksum_ok() {
        obs.checksum_errors |= acpi_checksum::XSDT;
    }
    let entries = (xsdt.len() - SDT_HEADER_LEN) / 8;
    let hest = (0..entries).find_map(|i| sdt(xsdt.u64(SDT_HEADER_LEN + 8 * i), b"HEST"))?;
    obs.found |= acpi_found::HEST;
    if !hest.checksum_ok() {
        obs.checksum_errors |= acpi_checksum::HEST;
    }
    if hest.len() < SDT_HEADER_LEN + 4 {
        return None;
    }
    Some(hest)
}

/// One GHES/GHESv2 entry: follow its error status address (GAS at offset 20, address at
/// +4; address space 0 = system memory) to the status block; copy it if block status is
/// non-zero. The acknowledgement follows Linux's ghes_clear_estatus + ghes_ack_error:
/// clear block status, then write `(ack & preserve) | write` to the read-ack register
/// (GHESv2 fields at offsets 64 (GAS), 76 (preserve), 84 (write)).
fn read_record(entry: Ram, kind: u16, ack: bool, obs: &mut AcpiObservation, read: &mut RecordRead) {
    if entry.u8(20) != 0 {
        return;
    }
    let status_register = entry.u64(24);
    let Some(pointer) = Ram::at(status_register, 8) else {
        return;
    };
    let block = pointer.u64(0);
    let Some(header) = Ram::at(block, STATUS_BLOCK_HEADER_LEN) else {
        return;
    };
    let block_status = header.u32(0);
    if block_status == 0 {
        return;
    }
    let record_len = STATUS_BLOCK_HEADER_LEN + u64::from(header.u32(12));
    let copy_len = record_len.min(CPER_COPY_MAX as u64);
    let Some(record) = Ram::at(block, copy_len) else {
        return;
    };
    read.found |= acpi_found::RECORD;
    read.block_status = block_status;
    read.record_len = record_len as u32;
    read.copied_len = copy_len as u32;
    for (i, byte) in read.bytes[..record.len()].iter_mut().enumerate() {
        *byte = record.u8(i);
    }
    obs.ghes_type = u32::from(kind);
    obs.source_id = u32::from(entry.u16(2));
    obs.notification_type = u32::from(entry.u8(32));
    obs.error_status_address = status_register;
    obs.block_address = block;
    if !ack {
        return;
    }
    write_u32(block, 0);
    if kind == HEST_GHES_V2 && entry.u8(64) == 0 {
        let ack_register = entry.u64(68);
        let Some(register) = Ram::at(ack_register, 8) else {
            return;
        };
        let before = register.u64(0);
        obs.read_ack_before = before;
        write_u64(ack_register, (before & entry.u64(76)) | entry.u64(84));
        obs.read_ack_after = register.u64(0);
    }
    read.found |= acpi_found::ACKED;
}
