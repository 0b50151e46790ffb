//! Guest physical memory map.
//!
//! The payload runs wherever a VMM loads it (an arm64 Image is placed at a 2 MiB-aligned
//! base, Linux Documentation/arch/arm64/booting.rst), so its own layout is relative to that
//! image base: mailboxes at [`MAILBOXES_OFFSET`], and targets in the [`target_window`],
//! the first GiB above it. The reference VMM loads it at [`RAM_BASE`]:
//!
//! ```text
//! 0x0800_0000  GICv3 distributor (64 KiB)          } not RAM: QEMU virt's layout
//! 0x080a_0000  GICv3 redistributors (128 KiB each) } (hw/arm/virt.c memmap)
//! 0x0a00_0000  doorbell: outside every memslot, so a store is a KVM_EXIT_MMIO
//! 0x4000_0000  RAM slot (RAM_SIZE), QEMU virt's RAM base:
//!   +0x00_0000   payload image (IMAGE_MAX_SIZE), entry at its first byte
//!   +0x10_0000   mailboxes, MAILBOX_SIZE per vCPU, MAX_VCPUS of them
//!   +0x18_0000   (under UEFI firmware: what the EFI entry learned, EFI_BOOT_OFFSET)
//!   +0x20_0000   firmware area: ACPI tables, GHES registers and status blocks,
//!   +0x3f_0000   the DTB (DTB_MAX_SIZE)
//! 0x8000_0000  target slot (up to TARGET_MAX_SIZE), backed as the scenario chooses:
//!              the target window of an image at RAM_BASE
//! ```
//!
//! The target slot is the only memory ever poisoned, and it starts on a 1 GiB boundary,
//! so neither code nor mailboxes can share a (huge) page with a poisoned address.

/// Base of the GICv3 distributor (QEMU virt `VIRT_GIC_DIST`).
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// Size of the GICv3 distributor frame (Arm GICv3 spec, 12.1: 64 KiB).
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// Base of the GICv3 redistributor region (QEMU virt `VIRT_GIC_REDIST`).
pub const GIC_REDIST_BASE: u64 = 0x080a_0000;
/// Size of one vCPU's redistributor (two 64 KiB frames: RD_base and SGI_base).
pub const GIC_REDIST_SIZE_PER_CPU: u64 = 0x2_0000;

/// The doorbell: one 8-byte store of a [`crate::doorbell::Doorbell`] value. No memslot
/// covers it, so every store exits to the VMM as `KVM_EXIT_MMIO`.
pub const DOORBELL: u64 = 0x0a00_0000;

/// Base of the RAM slot, where the payload image is loaded and entered.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Size of the RAM slot. The guest maps exactly this much.
pub const RAM_SIZE: u64 = 16 << 20;

/// Largest payload image the map leaves room for.
pub const IMAGE_MAX_SIZE: u64 = 1 << 20;

/// Most vCPUs the map has mailboxes for.
pub const MAX_VCPUS: usize = 8;
/// Offset of the first vCPU's mailbox from the image base.
pub const MAILBOXES_OFFSET: u64 = IMAGE_MAX_SIZE;
/// First vCPU's mailbox under the reference VMM.
pub const MAILBOX_BASE: u64 = RAM_BASE + MAILBOXES_OFFSET;
/// Bytes per vCPU mailbox: params, report, guest scratch, page tables and stacks.
pub const MAILBOX_SIZE: u64 = 0x1_0000;

/// Offsets inside one mailbox.
pub mod mailbox_offset {
    /// [`crate::Params`], written by the guest from its bootargs.
    pub const PARAMS: u64 = 0x0000;
    /// [`crate::Handshake`], in the same page.
    pub const HANDSHAKE: u64 = 0x0800;
    /// [`crate::Report`], written by the guest; two pages.
    pub const REPORT: u64 = 0x1000;
    /// Guest-private scratch (exception recovery state); not part of the contract.
    pub const SCRATCH: u64 = 0x3000;
    /// The guest's stage-1 page tables (four 4 KiB tables).
    pub const PAGE_TABLES: u64 = 0x4000;
    /// EL0 stack (mapped EL0-writable, so EL1 never executes it either).
    pub const EL0_STACK: u64 = 0x8000;
    /// EL1 stack; the guest sets SP_EL1 to the top, [`EL1_STACK_TOP`].
    pub const EL1_STACK: u64 = 0xc000;
    /// Initial SP_EL1, the end of the mailbox.
    pub const EL1_STACK_TOP: u64 = super::MAILBOX_SIZE;
    /// Initial SP_EL0.
    pub const EL0_STACK_TOP: u64 = EL1_STACK;
}

/// Firmware area: the VMM places ACPI tables, GHES registers, status blocks or a DTB
/// here and tells the guest where through [`crate::Params`].
pub const FIRMWARE_BASE: u64 = RAM_BASE + (2 << 20);
/// Size of the firmware area.
pub const FIRMWARE_SIZE: u64 = 2 << 20;

/// Most bytes of DTB the reference VMM passes, at the end of the firmware area.
pub const DTB_MAX_SIZE: u64 = 64 << 10;
/// Where the reference VMM puts the DTB whose address it passes in x0.
pub const DTB_BASE: u64 = FIRMWARE_BASE + FIRMWARE_SIZE - DTB_MAX_SIZE;

/// One GiB: the size of the target window, and its alignment.
const GIB: u64 = 1 << 30;
/// Most target memory the guest maps (one 1 GiB block of stage-1 address space).
pub const TARGET_MAX_SIZE: u64 = GIB;
/// Base of the target slot: the only memory the harness poisons.
pub const TARGET_BASE: u64 = target_window(RAM_BASE);

/// The target window of a payload loaded at `image_base`: the first GiB boundary above it,
/// where targets (`ras.vcpuN` offsets) lie, so no code or mailbox shares a (huge) page
/// with a poisoned address.
pub const fn target_window(image_base: u64) -> u64 {
    (image_base / GIB + 1) * GIB
}

/// What an image occupies from its base: the image, the mailboxes, and what an EFI boot
/// leaves for the plain boot path at [`EFI_BOOT_OFFSET`]. A UEFI firmware reserves it
/// (the PE header's SizeOfImage).
pub const IMAGE_SPAN: u64 = 2 << 20;
/// Offset from the image base of what the payload's EFI entry learned from the firmware
/// (its device tree, in effect): just past the last mailbox.
pub const EFI_BOOT_OFFSET: u64 = MAILBOXES_OFFSET + MAX_VCPUS as u64 * MAILBOX_SIZE;

/// Guest physical address of vCPU `index`'s mailbox for an image at `image_base`.
pub const fn mailbox_at(image_base: u64, index: usize) -> u64 {
    image_base + MAILBOXES_OFFSET + index as u64 * MAILBOX_SIZE
}

/// Guest physical address of vCPU `index`'s mailbox, or `None` past [`MAX_VCPUS`].
pub const fn mailbox_base(index: usize) -> Option<u64> {
    if index < MAX_VCPUS {
        Some(mailbox_at(RAM_BASE, index))
    } else {
        None
    }
}

const _: () = assert!(MAILBOX_BASE + MAX_VCPUS as u64 * MAILBOX_SIZE <= FIRMWARE_BASE);
const _: () = assert!(EFI_BOOT_OFFSET < IMAGE_SPAN && RAM_BASE + IMAGE_SPAN <= FIRMWARE_BASE);
const _: () = assert!(FIRMWARE_BASE + FIRMWARE_SIZE <= RAM_BASE + RAM_SIZE);
const _: () = assert!(RAM_BASE + RAM_SIZE <= TARGET_BASE);
const _: () = assert!(TARGET_BASE == 0x8000_0000);
const _: () = assert!(DTB_BASE.is_multiple_of(8) && DTB_BASE >= FIRMWARE_BASE);
const _: () = assert!(DOORBELL < RAM_BASE && DOORBELL >= GIC_REDIST_BASE + 0x2_0000 * 8);
// The guest maps the image and the mailboxes with 4 KiB pages, all within the first
// 2 MiB of RAM (one level-3 table); the rest of RAM with 2 MiB blocks.
const _: () = assert!(FIRMWARE_BASE == RAM_BASE + (2 << 20));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_do_not_overlap_the_image_or_each_other() {
        assert_eq!(mailbox_base(0), Some(RAM_BASE + IMAGE_MAX_SIZE));
        assert_eq!(mailbox_base(1), Some(RAM_BASE + IMAGE_MAX_SIZE + 0x1_0000));
        assert_eq!(mailbox_base(MAX_VCPUS), None);
        let last = mailbox_base(MAX_VCPUS - 1).unwrap();
        assert!(last + MAILBOX_SIZE <= FIRMWARE_BASE);
    }
}
