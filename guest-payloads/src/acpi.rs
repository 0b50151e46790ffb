//! Finding the error record the way an OS does: RSDP -> XSDT -> HEST -> GHES(v2) ->
//! error status address -> status block; then the acknowledgement. Also the DTB check.
//!
//! Every address read from a table is checked to lie in RAM before it is dereferenced,
//! so a broken table ends the walk (visible in `found`) instead of faulting.

use ras_guest_abi::mailbox::{acpi_checksum, acpi_found, CPER_COPY_MAX};
use ras_guest_abi::map::{RAM_BASE, RAM_SIZE};
use ras_guest_abi::{AcpiObservation, DtbObservation, RecordRead};

/// Length of an ACPI system description table header (ACPI 6.5 Table 5.4).
const SDT_HEADER_LEN: usize = 36;
/// HEST entry types (ACPI 6.5 18.3.2): Generic Hardware Error Source and its version 2.
const HEST_GHES: u16 = 9;
const HEST_GHES_V2: u16 = 10;
/// Entry sizes: GHES 64 bytes (Table 18.13), GHESv2 92 bytes (Table 18.15).
const GHES_LEN: usize = 64;
const GHES_V2_LEN: usize = 92;
/// Generic Error Status Block header: block status, raw data offset/length, data length,
/// error severity, 4 bytes each (ACPI 6.5 Table 18.17).
const STATUS_BLOCK_HEADER_LEN: u64 = 20;
/// FDT header magic (Devicetree Specification 0.4, 5.2), stored big-endian.
const FDT_MAGIC: u32 = 0xd00d_feed;

/// `len` bytes of RAM at `addr`, or `None` if any of them lies outside RAM.
fn ram(addr: u64, len: u64) -> Option<&'static [u8]> {
    let end = addr.checked_add(len)?;
    if addr < RAM_BASE || end > RAM_BASE + RAM_SIZE {
        return None;
    }
    // SAFETY: the range lies in the RAM slot, which the identity map covers; it is only
    // read, and every byte value is a valid u8.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | u64::from(le_u32(b, at + 4)) << 32
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |sum, &x| sum.wrapping_add(x)) == 0
}

/// A whole system description table at `addr` with signature `sig`.
fn sdt(addr: u64, sig: &[u8; 4]) -> Option<&'static [u8]> {
    let header = ram(addr, SDT_HEADER_LEN as u64)?;
    if &header[..4] != sig {
        return None;
    }
    let len = le_u32(header, 4) as usize;
    if len < SDT_HEADER_LEN {
        return None;
    }
    ram(addr, len as u64)
}

fn write_u32(addr: u64, value: u32) {
    if ram(addr, 4).is_some() {
        // SAFETY: checked to lie in RAM (the firmware area); the VMM reads it after an exit.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
    }
}

fn write_u64(addr: u64, value: u64) {
    if ram(addr, 8).is_some() {
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
    let count = le_u32(hest, SDT_HEADER_LEN) as usize;
    let mut off = SDT_HEADER_LEN + 4;
    for _ in 0..count {
        if off + 2 > hest.len() {
            break;
        }
        let kind = le_u16(hest, off);
        let len = match kind {
            HEST_GHES => GHES_LEN,
            HEST_GHES_V2 => GHES_V2_LEN,
            _ => {
                obs.found |= acpi_found::UNKNOWN_ENTRY;
                break;
            }
        };
        let Some(entry) = hest.get(off..off + len) else {
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
fn find_hest(rsdp: u64, obs: &mut AcpiObservation) -> Option<&'static [u8]> {
    let r = ram(rsdp, 36)?;
    if &r[..8] != b"RSD PTR " {
        return None;
    }
    obs.found |= acpi_found::RSDP;
    if !checksum_ok(&r[..20]) {
        obs.checksum_errors |= acpi_checksum::RSDP;
    }
    // Revision (offset 15) >= 2 has Length (20) and XsdtAddress (24).
    if r[15] < 2 {
        return None;
    }
    match ram(rsdp, u64::from(le_u32(r, 20))) {
        Some(full) if checksum_ok(full) => {}
        _ => obs.checksum_errors |= acpi_checksum::RSDP_EXTENDED,
    }
    let xsdt = sdt(le_u64(r, 24), b"XSDT")?;
    obs.found |= acpi_found::XSDT;
    if !checksum_ok(xsdt) {
        obs.checksum_errors |= acpi_checksum::XSDT;
    }
    let entries = (xsdt.len() - SDT_HEADER_LEN) / 8;
    let hest = (0..entries).find_map(|i| sdt(le_u64(xsdt, SDT_HEADER_LEN + 8 * i), b"HEST"))?;
    obs.found |= acpi_found::HEST;
    if !checksum_ok(hest) {
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
fn read_record(
    entry: &[u8],
    kind: u16,
    ack: bool,
    obs: &mut AcpiObservation,
    read: &mut RecordRead,
) {
    if entry[20] != 0 {
        return;
    }
    let status_register = le_u64(entry, 24);
    let Some(pointer) = ram(status_register, 8) else {
        return;
    };
    let block = le_u64(pointer, 0);
    let Some(header) = ram(block, STATUS_BLOCK_HEADER_LEN) else {
        return;
    };
    let block_status = le_u32(header, 0);
    if block_status == 0 {
        return;
    }
    let record_len = STATUS_BLOCK_HEADER_LEN + u64::from(le_u32(header, 12));
    let copy_len = record_len.min(CPER_COPY_MAX as u64);
    if ram(block, copy_len).is_none() {
        return;
    }
    read.found |= acpi_found::RECORD;
    read.block_status = block_status;
    read.record_len = record_len as u32;
    read.copied_len = copy_len as u32;
    for (i, byte) in read.bytes[..copy_len as usize].iter_mut().enumerate() {
        // SAFETY: `ram` checked that the whole range lies in RAM; the VMM may rewrite the
        // block at any exit, so each byte is read once, as it is now.
        *byte = unsafe { core::ptr::read_volatile((block + i as u64) as *const u8) };
    }
    obs.ghes_type = u32::from(kind);
    obs.source_id = u32::from(le_u16(entry, 2));
    obs.notification_type = u32::from(entry[32]);
    obs.error_status_address = status_register;
    obs.block_address = block;
    if !ack {
        return;
    }
    write_u32(block, 0);
    if kind == HEST_GHES_V2 && entry[64] == 0 {
        let ack_register = le_u64(entry, 68);
        let Some(before) = ram(ack_register, 8).map(|b| le_u64(b, 0)) else {
            return;
        };
        obs.read_ack_before = before;
        write_u64(
            ack_register,
            (before & le_u64(entry, 76)) | le_u64(entry, 84),
        );
        obs.read_ack_after = ram(ack_register, 8).map_or(0, |b| le_u64(b, 0));
    }
    read.found |= acpi_found::ACKED;
}

/// Recognises a flattened device tree at `dtb` by its big-endian magic.
pub fn check_dtb(dtb: u64, obs: &mut DtbObservation) {
    let Some(header) = ram(dtb, 8) else {
        return;
    };
    let be = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if be(0) == FDT_MAGIC {
        obs.recognised = 1;
        obs.total_size = be(4);
    }
}
