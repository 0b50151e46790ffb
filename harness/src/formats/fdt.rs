//! The device tree a DTB-only guest boots with (no ACPI, so no GHES: docs/ras-facts.md §9), built
//! with rust-vmm `vm-fdt`, and a small decoder that prints a DTB as dts-like text.
//!
//! Nodes and properties follow the Linux bindings: Documentation/devicetree/bindings/
//! arm/cpus.yaml, arm/psci.yaml, interrupt-controller/arm,gic-v3.yaml,
//! timer/arm,arch_timer.yaml, and the Devicetree Specification v0.4 (§3.4 /memory,
//! §3.6 /chosen, §5 the blob format).
//!
//! ```
//! use ras_harness::formats::fdt::{build, dump, FdtConfig};
//! let dtb = build(&FdtConfig::example()).unwrap();
//! assert!(dump(&dtb).unwrap().contains("compatible = \"arm,psci-0.2\", \"arm,psci\";"));
//! ```

use std::fmt::Write as _;

use vm_fdt::FdtWriter;

/// phandle of the interrupt controller (the only node referenced by phandle).
const GIC_PHANDLE: u32 = 1;
/// GIC interrupt specifier type for a PPI (arm,gic-v3.yaml, first cell: 1 = PPI).
const GIC_PPI: u32 = 1;
/// IRQ_TYPE_LEVEL_HIGH (include/dt-bindings/interrupt-controller/irq.h), the flags QEMU
/// gives the timer PPIs with a GICv3 (hw/arm/virt.c fdt_add_timer_nodes).
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// Architected timer PPIs in binding order: secure physical, non-secure physical,
/// virtual, hypervisor (arm,arch_timer.yaml; QEMU's ARCH_TIMER_*_IRQ).
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// PSCI 0.2 function IDs for the "arm,psci" (0.1) fallback binding, which names them
/// (Arm DEN0022 §5: CPU_SUSPEND and CPU_ON and MIGRATE in SMC64, CPU_OFF in SMC32).
const PSCI_0_2_FN64_CPU_SUSPEND: u32 = 0xC400_0001;
const PSCI_0_2_FN_CPU_OFF: u32 = 0x8400_0002;
const PSCI_0_2_FN64_CPU_ON: u32 = 0xC400_0003;
const PSCI_0_2_FN64_MIGRATE: u32 = 0xC400_0005;
/// The MPIDR_EL1 affinity fields Aff3 \[39:32\] and Aff2..Aff0 \[23:0\]: what a cpu node's
/// reg holds (arm/cpus.yaml).
const MPIDR_AFFINITY_MASK: u64 = 0xFF_00FF_FFFF;

/// One guest RAM range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Guest physical base.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The GICv3 frames, as the VMM created them with KVM_DEV_ARM_VGIC_GRP_ADDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gicv3 {
    /// Distributor (GICD) base and size (64 KiB).
    pub distributor: MemoryRegion,
    /// Redistributor (GICR) region: 128 KiB per vCPU.
    pub redistributor: MemoryRegion,
}

/// What the guest's device tree describes; every value is the caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdtConfig {
    /// RAM ranges, one /memory node each.
    pub memory: Vec<MemoryRegion>,
    /// MPIDR_EL1 of each vCPU, in vCPU order (see [`kvm_mpidr`]).
    pub cpu_mpidrs: Vec<u64>,
    /// Interrupt controller.
    pub gic: Gicv3,
    /// /chosen bootargs, if any.
    pub bootargs: Option<String>,
}

impl FdtConfig {
    /// A small fixed configuration (2 vCPUs, 128 MiB at 1 GiB, QEMU virt's GIC frames),
    /// for examples and snapshots.
    pub fn example() -> FdtConfig {
        FdtConfig {
            memory: vec![MemoryRegion {
                base: 0x4000_0000,
                size: 128 << 20,
            }],
            cpu_mpidrs: (0..2).map(kvm_mpidr).collect(),
            gic: Gicv3 {
                distributor: MemoryRegion {
                    base: 0x0800_0000,
                    size: 0x1_0000,
                },
                redistributor: MemoryRegion {
                    base: 0x080A_0000,
                    size: 2 * 0x2_0000,
                },
            },
            bootargs: Some("console=ttyAMA0".into()),
        }
    }
}

/// The MPIDR_EL1 KVM gives vCPU `index` at reset: Aff0 = index bits 3:0, Aff1 = bits 11:4,
/// Aff2 = bits 19:12 (arch/arm64/kvm/sys_regs.c, reset_mpidr), plus RES1 bit 31.
pub const fn kvm_mpidr(index: u32) -> u64 {
    let i = index as u64;
    (1 << 31) | (i & 0xF) | (((i >> 4) & 0xFF) << 8) | (((i >> 12) & 0xFF) << 16)
}

/// Why a device tree could not be built.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FdtError {
    /// The guest needs at least one CPU.
    #[error("no cpus")]
    NoCpus,
    /// The guest needs RAM.
    #[error("no memory regions")]
    NoMemory,
    /// vm-fdt refused (bad string, size overflow, ...).
    #[error("vm-fdt: {0}")]
    Writer(#[from] vm_fdt::Error),
    /// The blob is larger than the space the guest map leaves it.
    #[error("{0} bytes of device tree do not fit the space the guest map leaves it")]
    TooLarge(usize),
}

/// Builds the DTB.
///
/// # Errors
/// [`FdtError::NoCpus`] / [`FdtError::NoMemory`] for an empty configuration,
/// [`FdtError::Writer`] when vm-fdt rejects a value (e.g. a NUL in bootargs).
pub fn build(config: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    if config.cpu_mpidrs.is_empty() {
        return Err(FdtError::NoCpus);
    }
    if config.memory.is_empty() {
        return Err(FdtError::NoMemory);
    }
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = fdt.begin_node("chosen")?;
    if let Some(args) = &config.bootargs {
        fdt.property_string("bootargs", args)?;
    }
    fdt.end_node(chosen)?;

    for m in &config.memory {
        let node = fdt.begin_node(&format!("memory@{:x}", m.base))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[m.base, m.size])?;
        fdt.end_node(node)?;
    }

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for mpidr in &config.cpu_mpidrs {
        let reg = mpidr & MPIDR_AFFINITY_MASK;
        let cpu = fdt.begin_node(&format!("cpu@{reg:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u64("reg", reg)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list("compatible", vec!["arm,psci-0.2".into(), "arm,psci".into()])?;
    fdt.property_string("method", "hvc")?;
    fdt.property_u32("cpu_suspend", PSCI_0_2_FN64_CPU_SUSPEND)?;
    fdt.property_u32("cpu_off", PSCI_0_2_FN_CPU_OFF)?;
    fdt.property_u32("cpu_on", PSCI_0_2_FN64_CPU_ON)?;
    fdt.property_u32("migrate", PSCI_0_2_FN64_MIGRATE)?;
    fdt.end_node(psci)?;

    let (d, r) = (config.gic.distributor, config.gic.redistributor);
    let gic = fdt.begin_node(&format!("intc@{:x}", d.base))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    // An interrupt provider states #address-cells (dtc's interrupt_provider check); QEMU
    // gives its GICv3 node the same three properties (hw/arm/virt.c create_gic).
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_array_u64("reg", &[d.base, d.size, r.base, r.size])?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(gic)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|ppi| [GIC_PPI, *ppi, IRQ_TYPE_LEVEL_HIGH])
        .collect();
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

/// Why [`dump`] could not read a DTB.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    /// Fewer bytes than a header field or structure needs.
    #[error("{what} at offset {offset:#x} runs past the blob ({len} bytes)")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where.
        offset: usize,
        /// Blob length.
        len: usize,
    },
    /// The header is wrong.
    #[error("header {field} is {value:#x}: {why}")]
    BadHeader {
        /// Field.
        field: &'static str,
        /// Value.
        value: u32,
        /// Why.
        why: &'static str,
    },
    /// The structure block holds something other than a token sequence.
    #[error("structure block at offset {offset:#x}: {why}")]
    BadStructure {
        /// Offset in the blob.
        offset: usize,
        /// Why.
        why: &'static str,
    },
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Big-endian reads that fail instead of panicking.
struct Be<'a>(&'a [u8]);

impl<'a> Be<'a> {
    fn u32(&self, what: &'static str, offset: usize) -> Result<u32, DumpError> {
        self.0
            .get(offset..)
            .and_then(|t| t.get(..4))
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(DumpError::Truncated {
                what,
                offset,
                len: self.0.len(),
            })
    }

    fn u64(&self, what: &'static str, offset: usize) -> Result<u64, DumpError> {
        let hi = self.u32(what, offset)?;
        let lo = self.u32(what, offset + 4)?;
        Ok((u64::from(hi) << 32) | u64::from(lo))
    }

    /// The NUL-terminated string at `offset`, without the NUL.
    fn cstr(&self, what: &'static str, offset: usize) -> Result<&'a str, DumpError> {
        let tail = self.0.get(offset..).unwrap_or_default();
        let end = tail
            .iter()
            .position(|b| *b == 0)
            .ok_or(DumpError::Truncated {
                what,
                offset,
                len: self.0.len(),
            })?;
        std::str::from_utf8(&tail[..end]).map_err(|_| DumpError::BadStructure {
            offset,
            why: "name is not UTF-8",
        })
    }
}

/// Prints a DTB as dts-like text: a header line, the memory reservations, then the tree
/// with strings quoted, cells in <0x..> and other values as `[bytes]`.
///
/// # Errors
/// [`DumpError`] for a bad header or structure block; never panics.
pub fn dump(dtb: &[u8]) -> Result<String, DumpError> {
    let be = Be(dtb);
    let magic = be.u32("magic", 0)?;
    if magic != ras_guest_abi::fdt::MAGIC {
        return Err(DumpError::BadHeader {
            field: "magic",
            value: magic,
            why: "not 0xd00dfeed",
        });
    }
    let total = be.u32("totalsize", 4)?;
    if total as usize > dtb.len() {
        return Err(DumpError::BadHeader {
            field: "totalsize",
            value: total,
            why: "larger than the blob",
        });
    }
    let off_struct = be.u32("off_dt_struct", 8)? as usize;
    let off_strings = be.u32("off_dt_strings", 12)? as usize;
    let off_rsvmap = be.u32("off_mem_rsvmap", 16)? as usize;
    let version = be.u32("version", 20)?;
    let boot_cpu = be.u32("boot_cpuid_phys", 28)?;
    let size_strings = be.u32("size_dt_strings", 32)? as usize;
    let strings = dtb
        .get(off_strings..off_strings.saturating_add(size_strings))
        .ok_or(DumpError::Truncated {
            what: "strings block",
            offset: off_strings,
            len: dtb.len(),
        })?;
    let mut out = format!("/dts-v1/; // version {version}, boot cpu {boot_cpu}\n");

    let mut at = off_rsvmap;
    loop {
        let (addr, size) = (
            be.u64("reserve entry", at)?,
            be.u64("reserve entry", at + 8)?,
        );
        if (addr, size) == (0, 0) {
            break;
        }
        let _ = writeln!(out, "/memreserve/ {addr:#x} {size:#x};");
        at += 16;
    }

    let mut depth = 0usize;
    let mut at = off_struct;
    loop {
        let token = be.u32("token", at)?;
        at += 4;
        let indent = "    ".repeat(depth);
        match token {
            FDT_BEGIN_NODE => {
                let name = be.cstr("node name", at)?;
                let shown = if name.is_empty() { "/" } else { name };
                let _ = writeln!(out, "{indent}{shown} {{");
                at += (name.len() + 1).next_multiple_of(4);
                depth += 1;
            }
            FDT_END_NODE => {
                depth = depth.checked_sub(1).ok_or(DumpError::BadStructure {
                    offset: at - 4,
                    why: "FDT_END_NODE without a node",
                })?;
                let _ = writeln!(out, "{}}};", "    ".repeat(depth));
            }
            FDT_PROP => {
                let len = be.u32("property length", at)? as usize;
                let name_off = be.u32("property name offset", at + 4)? as usize;
                let value =
                    dtb.get(at + 8..)
                        .and_then(|t| t.get(..len))
                        .ok_or(DumpError::Truncated {
                            what: "property value",
                            offset: at + 8,
                            len: dtb.len(),
                        })?;
                let name = Be(strings).cstr("property name", name_off)?;
                let _ = writeln!(out, "{indent}{name}{};", format_value(value));
                at += 8 + len.next_multiple_of(4);
            }
            FDT_NOP => {}
            FDT_END if depth == 0 => return Ok(out),
            FDT_END => {
                return Err(DumpError::BadStructure {
                    offset: at - 4,
                    why: "FDT_END inside a node",
                })
            }
            _ => {
                return Err(DumpError::BadStructure {
                    offset: at - 4,
                    why: "unknown token",
                })
            }
        }
    }
}

/// ` = "a", "b"` for printable NUL-terminated strings, ` = <0x..>` for whole cells,
/// ` = [..]` otherwise, nothing for an empty (boolean) property.
fn format_value(value: &[u8]) -> String {
    if value.is_empty() {
        return String::new();
    }
    let strings: Option<Vec<&str>> = value
        .strip_suffix(&[0])
        .map(|v| v.split(|b| *b == 0))
        .and_then(|parts| {
            parts
                .map(|p| {
                    (!p.is_empty() && p.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
                        .then(|| std::str::from_utf8(p).ok())
                        .flatten()
                })
                .collect()
        });
    if let Some(strings) = strings {
        let quoted: Vec<String> = strings.iter().map(|s| format!("{s:?}")).collect();
        return format!(" = {}", quoted.join(", "));
    }
    if value.len().is_multiple_of(4) {
        let cells: Vec<String> = value
            .chunks_exact(4)
            .map(|c| format!("{:#x}", u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        return format!(" = <{}>", cells.join(" "));
    }
    let bytes: Vec<String> = value.iter().map(|b| format!("{b:02x}")).collect();
    format!(" = [{}]", bytes.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::snapshot_settings;
    use proptest::prelude::*;

    /// The example DTB as dts: what a DTB-only guest sees. Cross-checked once by hand
    /// with `dtc -I dtb -O dts` (same tree, no warnings); PSCI lists the 0.2 compatible first so
    /// that Linux picks the 0.2 driver and uses the standard function IDs.
    #[test]
    fn example_dtb_snapshot() {
        let dtb = build(&FdtConfig::example()).unwrap();
        let text = dump(&dtb).unwrap();
        snapshot_settings("fdt").bind(|| insta::assert_snapshot!("example", text));
    }

    #[test]
    fn cpus_follow_the_caller_and_kvm_mpidrs() {
        assert_eq!(kvm_mpidr(0), 0x8000_0000);
        assert_eq!(kvm_mpidr(17), 0x8000_0101);
        let mut config = FdtConfig::example();
        config.cpu_mpidrs = (0..18).map(kvm_mpidr).collect();
        config.bootargs = None;
        let text = dump(&build(&config).unwrap()).unwrap();
        assert_eq!(text.matches("enable-method = \"psci\";").count(), 18);
        assert!(text.contains("cpu@100 {"), "vCPU 16 is Aff1=1, Aff0=0");
        assert!(text.contains("cpu@101 {"), "{text}");
        assert!(!text.contains("bootargs"));
        assert!(text.contains("chosen {"));
    }

    #[test]
    fn empty_configurations_and_bad_strings_are_refused() {
        let mut c = FdtConfig::example();
        c.cpu_mpidrs.clear();
        assert_eq!(build(&c), Err(FdtError::NoCpus));
        let mut c = FdtConfig::example();
        c.memory.clear();
        assert_eq!(build(&c), Err(FdtError::NoMemory));
        let mut c = FdtConfig::example();
        c.bootargs = Some("a\0b".into());
        assert_eq!(
            build(&c),
            Err(FdtError::Writer(vm_fdt::Error::InvalidString))
        );
    }

    proptest! {
        #[test]
        fn dump_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = dump(&bytes);
        }

        /// Corrupting any byte of a real DTB gives text or an error, never a panic.
        #[test]
        fn dump_never_panics_on_corrupted_dtbs(at: prop::sample::Index, value: u8) {
            let mut dtb = build(&FdtConfig::example()).unwrap();
            let i = at.index(dtb.len());
            dtb[i] = value;
            let _ = dump(&dtb);
        }
    }
}
