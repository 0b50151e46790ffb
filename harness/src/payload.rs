//! The guest payload image, built from guest-payloads/ by build.rs and embedded here, so
//! every harness binary carries the exact guest its tests ran; and the device tree and
//! bootargs it boots with under the reference VMM.

/// The arm64 Image: any VMM loads it at a 2 MiB-aligned base and enters its first byte with
/// x0 = a device tree (see `ras_guest_abi`). The reference VMM loads it at
/// [`ras_guest_abi::map::RAM_BASE`].
pub static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ras-guest.bin"));

use crate::formats::fdt::{self, FdtConfig, Gicv3, MemoryRegion};
use ras_guest_abi::bootargs::{self, Bootargs, VcpuArgs};
use ras_guest_abi::mailbox::{Access, MAX_TARGETS};
use ras_guest_abi::{map, Params};

/// Offset of the first instruction from the image base: the ELF entry point.
pub const ENTRY: u64 = parse_hex(env!("RAS_GUEST_ENTRY"));

/// The bootargs line ([`ras_guest_abi::bootargs`]) for a VM whose vCPU `i` runs
/// `params[i]`: flags, RSDP and doorbell from vCPU 0's params, each vCPU's access, EL and
/// targets (as offsets into the target window at [`map::TARGET_BASE`] (wrapping, so a
/// target below it still reaches the guest as the same address).
pub fn bootargs(params: &[Params]) -> String {
    let first = params.first().copied().unwrap_or_default();
    let common = Bootargs {
        access: Access::from_code(first.access).unwrap_or(Access::None),
        el: first.el,
        flags: first.flags,
        vcpus: params.len() as u32,
        targets: [0; MAX_TARGETS],
        target_count: 0,
        rsdp: first.rsdp_gpa,
        doorbell: first.doorbell_gpa,
    };
    let offsets: Vec<Vec<u64>> = params
        .iter()
        .map(|p| {
            p.targets[..(p.target_count as usize).min(MAX_TARGETS)]
                .iter()
                .map(|t| t.wrapping_sub(map::TARGET_BASE))
                .collect()
        })
        .collect();
    let vcpus: Vec<VcpuArgs> = params
        .iter()
        .zip(&offsets)
        .map(|(p, targets)| VcpuArgs {
            targets,
            access: Access::from_code(p.access).unwrap_or(Access::None),
            el: p.el,
        })
        .collect();
    let mut line = String::new();
    bootargs::write(&mut line, &common, &vcpus).expect("writing to a String cannot fail");
    line
}

/// The device tree the reference VMM boots the payload with, at [`map::DTB_BASE`]: the RAM
/// slot and `target_size` bytes of target slot as memory, one CPU node per vCPU, the GICv3
/// at the payload's map, PSCI over HVC, and [`bootargs()`]. Any firmware kind gets one (with
/// ACPI, bootargs carry `ras.rsdp`, as Linux's `acpi_rsdp=`); it names no console.
pub fn device_tree(params: &[Params], target_size: u64) -> Result<Vec<u8>, fdt::FdtError> {
    device_tree_with(&bootargs(params), params.len() as u32, target_size)
}

/// [`device_tree`] with any bootargs line (tests give the payload lines it must refuse).
pub fn device_tree_with(
    bootargs: &str,
    vcpus: u32,
    target_size: u64,
) -> Result<Vec<u8>, fdt::FdtError> {
    let config = FdtConfig {
        memory: vec![
            MemoryRegion {
                base: map::RAM_BASE,
                size: map::RAM_SIZE,
            },
            MemoryRegion {
                base: map::TARGET_BASE,
                size: target_size,
            },
        ],
        cpu_mpidrs: (0..vcpus).map(fdt::kvm_mpidr).collect(),
        gic: Gicv3 {
            distributor: MemoryRegion {
                base: map::GIC_DIST_BASE,
                size: map::GIC_DIST_SIZE,
            },
            redistributor: MemoryRegion {
                base: map::GIC_REDIST_BASE,
                size: map::GIC_REDIST_SIZE_PER_CPU * u64::from(vcpus),
            },
        },
        bootargs: Some(bootargs.to_owned()),
    };
    let dtb = fdt::build(&config)?;
    if dtb.len() as u64 > map::DTB_MAX_SIZE {
        return Err(fdt::FdtError::TooLarge(dtb.len()));
    }
    Ok(dtb)
}

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

const _: () = assert!(ENTRY == 0, "the payload must be entered at its first byte");

#[cfg(test)]
mod tests {
    use super::*;
    use ras_guest_abi::fdt::boot_info;
    use ras_guest_abi::mailbox::flags;

    #[test]
    fn the_payload_reads_back_the_device_tree_the_reference_vmm_writes() {
        let mut first = Params::new(Access::Load, 0, flags::WALK_ACPI, &[map::TARGET_BASE]);
        first.rsdp_gpa = map::FIRMWARE_BASE;
        let second = Params::new(Access::Load, 0, 0, &[map::TARGET_BASE + 0x4000, 0x100]);
        let dtb = device_tree(&[first, second], 64 << 20).unwrap();
        let info = boot_info(&dtb).unwrap();
        let ram = &info.memory[..info.memory_count];
        assert_eq!(ram.len(), 2);
        assert_eq!((ram[0].base, ram[0].size), (map::RAM_BASE, map::RAM_SIZE));
        assert_eq!((ram[1].base, ram[1].size), (map::TARGET_BASE, 64 << 20));
        assert!(info.uart.is_none() && !info.psci_smc);
        let line = std::str::from_utf8(info.bootargs).unwrap();
        assert_eq!(
            line,
            "ras.abi=4 ras.access=load ras.el=0 ras.flags=walk-acpi ras.vcpus=2 ras.vcpu0=0x0 \
             ras.vcpu1=0x4000,0xffffffff80000100 ras.rsdp=0x40200000 ras.doorbell=0xa000000"
        );
        let v1 = bootargs::parse(info.bootargs, 1).unwrap();
        let window = map::target_window(map::RAM_BASE);
        assert_eq!(
            window.wrapping_add(v1.targets[1]),
            0x100,
            "a target below the window"
        );
    }
    use ras_guest_abi::arch::{VECTOR_ENTRY_SIZE, VECTOR_TABLE_SIZE};
    use ras_guest_abi::map::IMAGE_MAX_SIZE;

    /// Another VMM's tree: 1 address and size cell, the console a 16550 named through
    /// /aliases with options, PSCI over SMC, bootargs among a kernel's own words.
    #[test]
    fn the_payload_reads_a_16550_console_named_by_an_alias() {
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string(
            "bootargs",
            "console=ttyS0 ras.abi=4 ras.access=store ras.el=1",
        )
        .unwrap();
        w.property_string("stdout-path", "serial0:115200n8")
            .unwrap();
        w.end_node(chosen).unwrap();
        let aliases = w.begin_node("aliases").unwrap();
        w.property_string("serial0", "/uart@3f8000").unwrap();
        w.end_node(aliases).unwrap();
        let memory = w.begin_node("memory@80000000").unwrap();
        w.property_array_u32("reg", &[0x8000_0000, 0x4000_0000])
            .unwrap();
        w.end_node(memory).unwrap();
        let uart = w.begin_node("uart@3f8000").unwrap();
        w.property_string_list("compatible", vec!["vendor,uart".into(), "ns16550a".into()])
            .unwrap();
        w.property_array_u32("reg", &[0x3f_8000, 0x100]).unwrap();
        w.property_u32("reg-shift", 2).unwrap();
        w.property_u32("reg-io-width", 4).unwrap();
        w.end_node(uart).unwrap();
        let psci = w.begin_node("psci").unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node(psci).unwrap();
        w.end_node(root).unwrap();
        let dtb = w.finish().unwrap();

        let info = boot_info(&dtb).unwrap();
        let uart = info.uart.unwrap();
        assert_eq!(uart.kind, ras_guest_abi::fdt::UartKind::Ns16550);
        assert_eq!(
            (uart.base, uart.reg_shift, uart.io_width),
            (0x3f_8000, 2, 4)
        );
        assert!(info.psci_smc);
        assert!(info.is_ram(0xbfff_f000, 0x1000) && !info.is_ram(0xc000_0000, 0x1000));
        let b = bootargs::parse(info.bootargs, 0).unwrap();
        assert_eq!((b.access, b.el), (Access::Store, 1));
    }

    #[test]
    fn image_fits_its_slot() {
        assert!(!IMAGE.is_empty());
        assert!(
            IMAGE.len() as u64 <= IMAGE_MAX_SIZE,
            "{} bytes",
            IMAGE.len()
        );
    }

    #[test]
    fn image_starts_with_an_arm64_image_header() {
        // Documentation/arch/arm64/booting.rst: code0 "MZ" (a PE/COFF image too), code1 a
        // branch (B, opcode 0b000101 in bits 31:26), text_offset 0, image_size covering
        // the file, flags LE + 4 KiB pages + anywhere, magic "ARM\x64" at 0x38.
        let u64_at = |at: usize| u64::from_le_bytes(IMAGE[at..at + 8].try_into().unwrap());
        assert_eq!(&IMAGE[..2], b"MZ");
        let code1 = u32::from_le_bytes(IMAGE[4..8].try_into().unwrap());
        assert_eq!(code1 >> 26, 0b000101, "{code1:#x}");
        assert_eq!(u64_at(8), 0, "text_offset");
        assert!(
            u64_at(16) >= IMAGE.len() as u64,
            "image_size {}",
            u64_at(16)
        );
        assert_eq!(u64_at(24), 0b1010, "flags");
        assert_eq!(&IMAGE[0x38..0x3c], b"ARM\x64");
    }

    #[test]
    fn image_is_an_efi_application_too() {
        // Microsoft PE format: e_lfanew at 0x3c; "PE\0\0", the COFF header (machine,
        // section count at +6, optional header size at +20), the PE32+ optional header at
        // +24 (entry point +16, SizeOfImage +56, SizeOfHeaders +60, Subsystem +68), then
        // 40-byte section headers (VirtualSize +8, VirtualAddress +12, SizeOfRawData +16,
        // PointerToRawData +20, Characteristics +36).
        let u16_at = |at: usize| u16::from_le_bytes(IMAGE[at..at + 2].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(IMAGE[at..at + 4].try_into().unwrap());
        let pe = u32_at(0x3c) as usize;
        assert_eq!(&IMAGE[pe..pe + 4], b"PE\0\0");
        assert_eq!(u16_at(pe + 4), 0xaa64, "machine");
        let optional = pe + 24;
        assert_eq!(u16_at(optional), 0x20b, "PE32+");
        assert_eq!(u16_at(optional + 68), 10, "EFI application");
        assert_eq!(
            u64::from(u32_at(optional + 56)),
            ras_guest_abi::map::IMAGE_SPAN
        );
        let headers = u32_at(optional + 60);
        let entry = u32_at(optional + 16);
        let sections = optional + usize::from(u16_at(pe + 20));
        let mut covered = headers;
        for i in 0..usize::from(u16_at(pe + 6)) {
            let h = sections + 40 * i;
            let (virtual_size, address) = (u32_at(h + 8), u32_at(h + 12));
            let (raw_size, raw_at) = (u32_at(h + 16), u32_at(h + 20));
            // File and memory layout agree, and the sections follow each other.
            assert_eq!((address, raw_at), (covered, covered), "section {i}");
            assert!(
                raw_at as usize + raw_size as usize <= IMAGE.len(),
                "section {i}"
            );
            if u32_at(h + 36) & 0x2000_0000 != 0 {
                assert!(
                    (address..address + raw_size).contains(&entry),
                    "entry {entry:#x}"
                );
            }
            covered = address + virtual_size;
        }
        assert_eq!(u64::from(covered), ras_guest_abi::map::IMAGE_SPAN);
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
