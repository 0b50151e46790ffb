//! The guest payload image, built from guest-payloads/ by build.rs and embedded here, so
//! every harness binary carries the exact guest its tests ran.

use ras_guest_abi::map::RAM_BASE;

/// The flat image: copy it to [`RAM_BASE`] and start a vCPU at [`ENTRY`] with x0 = its
/// mailbox (see `ras_guest_abi`).
pub static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ras-guest.bin"));

/// Guest physical address of the first instruction: the ELF entry point.
pub const ENTRY: u64 = parse_hex(env!("RAS_GUEST_ENTRY"));

/// Parses the `0x...` string build.rs emits (const, so a bad value fails the build).
const fn parse_hex(s: &str) -> u64 {
    let b = s.as_bytes();
    assert!(b.len() > 2 && b[0] == b'0' && b[1] == b'x');
    let mut value = 0u64;
    let mut i = 2;
    while i < b.len() {
        let digit = match b[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("RAS_GUEST_ENTRY is not lower-case hex"),
        };
        value = value * 16 + digit as u64;
        i += 1;
    }
    value
}

const _: () = assert!(
    ENTRY == RAM_BASE,
    "the payload must be entered at its first byte"
);

#[cfg(test)]
mod tests {
    use super::*;
    use ras_guest_abi::arch::{VECTOR_ENTRY_SIZE, VECTOR_TABLE_SIZE};
    use ras_guest_abi::map::IMAGE_MAX_SIZE;

    #[test]
    fn image_fits_its_slot_and_starts_with_the_entry_code() {
        assert!(!IMAGE.is_empty());
        assert!(
            IMAGE.len() as u64 <= IMAGE_MAX_SIZE,
            "{} bytes",
            IMAGE.len()
        );
        assert_eq!(IMAGE.len() % 4, 0, "whole A64 instructions");
        // _start's first instruction: `msr tpidr_el1, x0` (0xd518d080), which keeps the
        // mailbox address for the exception handler.
        let first = u32::from_le_bytes(IMAGE[..4].try_into().unwrap());
        assert_eq!(first, 0xd518_d080, "{first:#x}");
    }

    #[test]
    fn vector_table_is_where_vbar_alignment_puts_it() {
        // The table is the first 2 KiB-aligned block after _start; each entry begins
        // `mov x0, #offset` (movz x0, imm16 = 0xd2800000 | imm16 << 5).
        let (table, entry_size) = (VECTOR_TABLE_SIZE as usize, VECTOR_ENTRY_SIZE as usize);
        for (i, entry) in IMAGE[table..2 * table].chunks(entry_size).enumerate() {
            let insn = u32::from_le_bytes(entry[..4].try_into().unwrap());
            let offset = (i * entry_size) as u32;
            assert_eq!(insn, 0xd280_0000 | (offset << 5), "entry {i}");
        }
    }
}
