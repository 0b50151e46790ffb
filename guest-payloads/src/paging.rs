//! The identity map: stage-1 translation for EL1&0 with a 4 KiB granule, built in this
//! vCPU's mailbox and switched on before anything else touches memory.
//!
//! For an image at `base` (2 MiB-aligned, at or above 1 GiB; 0x4000_0000 under the
//! reference VMM):
//!
//! ```text
//! L1[0]         1 GiB block   Device-nGnRnE, EL1 RW, XN  (GIC, doorbell, UART)
//! L1[base GiB]  -> L2 RAM:    [base] -> L3 (image and mailboxes, 4 KiB pages)
//!                             the blocks holding firmware tables, Normal, EL1 RW, XN
//!                             (the next 7 under the reference VMM: its firmware area)
//! L1[+1]        -> L2 target: 512 x 2 MiB Normal blocks, EL0- or EL1-accessible
//! ```
//!
//! Level-3 pages: EL1 code is EL1 read-only executable; EL0 code is read-only at both ELs
//! and executable at EL0 only; EL0 stacks are EL0-writable (hence never EL1-executable,
//! Arm ARM D8.4.1.1 "implicit PXN"); everything else is EL1 read-write, execute-never.
//! The table writes run with the MMU off (memory is Device-nGnRnE): aligned 8-byte
//! volatile stores only.

use crate::mailbox::Mailbox;
use crate::write_sysreg;
use core::arch::asm;
use ras_guest_abi::map::{
    mailbox_offset, target_window, MAILBOXES_OFFSET, MAILBOX_SIZE, MAX_VCPUS,
};

// Descriptor fields, Arm ARM D8.3 "Translation table descriptor formats" (VMSAv8-64).
const VALID: u64 = 1 << 0;
/// Bit 1: table descriptor at levels 0-2, page descriptor at level 3 (clear = block).
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx[2:0] (bits 4:2) selects a MAIR_EL1 byte.
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
/// AP[2:1] (bits 7:6): 00 EL1 RW, 01 EL1+EL0 RW, 10 EL1 RO, 11 EL1+EL0 RO.
const AP_EL1_RW: u64 = 0b00 << 6;
const AP_EL0_RW: u64 = 0b01 << 6;
const AP_EL1_RO: u64 = 0b10 << 6;
const AP_EL0_RO: u64 = 0b11 << 6;
/// SH[1:0] (bits 9:8) = 0b11, inner shareable.
const INNER_SHAREABLE: u64 = 0b11 << 8;
/// Access flag (bit 10): set, so the first access does not fault.
const AF: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

const NORMAL: u64 = VALID | ATTR_NORMAL | INNER_SHAREABLE | AF;

/// MAIR_EL1: Attr0 = 0x00 Device-nGnRnE, Attr1 = 0xff Normal write-back RW-allocate.
const MAIR: u64 = 0xff << 8;
/// TCR_EL1 (Arm ARM D24.2.194): T0SZ = 25 (39-bit VA, walks start at level 1), IRGN0 =
/// ORGN0 = 0b01 (write-back), SH0 = 0b11, TG0 = 0b00 (4 KiB), EPD1 = 1 (no TTBR1 walks),
/// IPS = 0b010 (40-bit PA).
const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);
/// SCTLR_EL1 (Arm ARM D24.2.175): M, C, SA, SA0, EOS, I, nTWI, nTWE, TSCXT, EIS, SPAN
/// (PSTATE.PAN untouched on exception entry, so EL1 can reach EL0-accessible pages),
/// nTLSMD, LSMAOE. WXN stays 0: the target may be writable and executable.
const SCTLR: u64 = (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 11)
    | (1 << 12)
    | (1 << 16)
    | (1 << 18)
    | (1 << 20)
    | (1 << 22)
    | (1 << 23)
    | (1 << 28)
    | (1 << 29);

const PAGE: u64 = 0x1000;
const BLOCK_2M: u64 = 0x20_0000;
const GIB: u64 = 1 << 30;
const ENTRIES: u64 = 512;

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __el0_text_start: u8;
    static __el0_text_end: u8;
}

fn symbol(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Writes entry `index` of the table at `table`.
fn set(table: u64, index: u64, descriptor: u64) {
    // SAFETY: `table` is one of this vCPU's four page-aligned table pages in its mailbox and
    // index < 512; an aligned 8-byte volatile store is safe on Device memory.
    unsafe { core::ptr::write_volatile((table + index * 8) as *mut u64, descriptor) };
}

/// Attributes of the 4 KiB page at `addr` in the image's 2 MiB at `base`.
fn page_attributes(base: u64, addr: u64) -> u64 {
    // SAFETY: only the addresses of linker-script symbols are taken.
    let (text, text_end, el0, el0_end) = unsafe {
        (
            symbol(&__text_start),
            symbol(&__text_end),
            symbol(&__el0_text_start),
            symbol(&__el0_text_end),
        )
    };
    let mailboxes = base + MAILBOXES_OFFSET;
    let in_el0_stack = addr >= mailboxes
        && addr < mailboxes + MAX_VCPUS as u64 * MAILBOX_SIZE
        && (mailbox_offset::EL0_STACK..mailbox_offset::EL1_STACK)
            .contains(&((addr - mailboxes) % MAILBOX_SIZE));
    if (text..text_end).contains(&addr) {
        AP_EL1_RO | UXN
    } else if (el0..el0_end).contains(&addr) {
        AP_EL0_RO | PXN
    } else if in_el0_stack {
        AP_EL0_RW | PXN | UXN
    } else {
        AP_EL1_RW | PXN | UXN
    }
}

/// Builds the tables for an image at `base`, an access at `el` and firmware tables in
/// `firmware` (a RAM range), and turns the MMU on.
pub fn enable_identity_map(mb: Mailbox, base: u64, el: u32, firmware: [u64; 2]) {
    let tables = mb.base() + mailbox_offset::PAGE_TABLES;
    let (l1, l2_ram, l3_ram, l2_target) =
        (tables, tables + PAGE, tables + 2 * PAGE, tables + 3 * PAGE);
    let (ram_gib, window) = (base / GIB, target_window(base));
    let first_block = (base % GIB) / BLOCK_2M;

    for i in 0..ENTRIES {
        set(l1, i, 0);
        // The image's 2 MiB: image and mailboxes, page by page.
        let page = base + i * PAGE;
        set(
            l3_ram,
            i,
            page | NORMAL | TABLE_OR_PAGE | page_attributes(base, page),
        );
        // The rest of the image's GiB in 2 MiB blocks: those holding firmware tables.
        let block = ram_gib * GIB + i * BLOCK_2M;
        let ram = if i == first_block {
            l3_ram | VALID | TABLE_OR_PAGE
        } else if block + BLOCK_2M > firmware[0] && block < firmware[1] {
            block | NORMAL | AP_EL1_RW | PXN | UXN
        } else {
            0
        };
        set(l2_ram, i, ram);
        // The target GiB: EL0 read-write-execute for EL0 steps, else EL1 read-write-execute.
        let target_access = if el == 0 { AP_EL0_RW } else { AP_EL1_RW | UXN };
        set(
            l2_target,
            i,
            (window + i * BLOCK_2M) | NORMAL | target_access,
        );
    }
    set(l1, 0, VALID | ATTR_DEVICE | AP_EL1_RW | AF | PXN | UXN);
    set(l1, ram_gib, l2_ram | VALID | TABLE_OR_PAGE);
    set(l1, window / GIB, l2_target | VALID | TABLE_OR_PAGE);

    write_sysreg!("mair_el1", MAIR);
    write_sysreg!("tcr_el1", TCR);
    write_sysreg!("ttbr0_el1", l1);
    // SAFETY: orders the table writes before the walker uses them and drops stale TLB
    // entries (Arm ARM D8.17 "TLB maintenance"); no memory is accessed.
    unsafe {
        asm!(
            "dsb ish",      // table writes complete
            "tlbi vmalle1", // no stale translations for this VMID
            "dsb ish",      // ...and the invalidation completes
            "isb",          // MAIR/TCR/TTBR0 take effect
            options(nostack),
        )
    };
    write_sysreg!("sctlr_el1", SCTLR);
    // SAFETY: the identity map keeps the PC valid across the switch.
    unsafe {
        asm!(
            "isb", // the MMU enable takes effect for the next instruction
            options(nomem, nostack),
        )
    };
}
