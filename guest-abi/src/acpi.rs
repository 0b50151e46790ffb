//! What a payload booted by UEFI firmware, with ACPI tables and no device tree, reads from
//! two of those tables instead: its console from the SPCR, its PSCI conduit from the FADT.

use crate::fdt::{Uart, UartKind};

/// Length of an ACPI system description table header (ACPI 6.5 Table 5.4).
pub const SDT_HEADER_LEN: usize = 36;

/// The console an SPCR table (Microsoft "Serial Port Console Redirection Table", revision
/// 2 and later) describes: Interface Type at offset 36, the Base Address GAS at 40 (its
/// address at 44), for the types this payload can drive. QEMU virt's is a PL011
/// (hw/arm/virt-acpi-build.c, build_spcr).
pub fn spcr_uart(spcr: &[u8]) -> Option<Uart> {
    if spcr.len() < 52 || spcr[..4] != *b"SPCR" {
        return None;
    }
    // Interface types (the SPCR spec's Table 3, "Debug Port Types"): 0x00 full 16550,
    // 0x03 ARM PL011, 0x0e ARM SBSA Generic UART (a PL011 subset, 32-bit accesses),
    // 0x12 16550-compatible with the register layout in the GAS.
    let (kind, reg_shift, io_width) = match spcr[36] {
        0x03 | 0x0e => (UartKind::Pl011, 0, 4),
        0x00 | 0x12 => (UartKind::Ns16550, 0, 1),
        _ => return None,
    };
    // GAS (ACPI 6.5 Table 5.1): address space 0 = system memory.
    if spcr[40] != 0 {
        return None;
    }
    let base = u64::from_le_bytes(spcr[44..52].try_into().ok()?);
    (base != 0).then_some(Uart {
        kind,
        base,
        reg_shift,
        io_width,
    })
}

/// Whether PSCI is called with SMC (`Some(true)`) or HVC (`Some(false)`), from the FADT's
/// ARM Boot Architecture Flags (offset 129, ACPI 6.5 Table 5.12: bit 0 PSCI compliant,
/// bit 1 use HVC); `None` when the FADT says PSCI is absent.
pub fn fadt_psci_smc(fadt: &[u8]) -> Option<bool> {
    if fadt.len() < 131 || fadt[..4] != *b"FACP" {
        return None;
    }
    let flags = u16::from_le_bytes([fadt[129], fadt[130]]);
    (flags & 1 != 0).then_some(flags & 2 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spcr(interface: u8, space: u8, base: u64) -> [u8; 80] {
        let mut t = [0u8; 80];
        t[..4].copy_from_slice(b"SPCR");
        t[36] = interface;
        t[40] = space;
        t[44..52].copy_from_slice(&base.to_le_bytes());
        t
    }

    #[test]
    fn spcr_names_a_pl011_or_a_16550_in_memory() {
        let pl011 = spcr_uart(&spcr(0x03, 0, 0x0900_0000)).unwrap();
        assert_eq!((pl011.kind, pl011.base), (UartKind::Pl011, 0x0900_0000));
        let sbsa = spcr_uart(&spcr(0x0e, 0, 0x0900_0000)).unwrap();
        assert_eq!(sbsa.kind, UartKind::Pl011);
        let ns = spcr_uart(&spcr(0x00, 0, 0x3f8_0000)).unwrap();
        assert_eq!((ns.kind, ns.io_width), (UartKind::Ns16550, 1));
        // Another interface, I/O space, no address, another table: no console.
        assert_eq!(spcr_uart(&spcr(0x10, 0, 0x0900_0000)), None);
        assert_eq!(spcr_uart(&spcr(0x03, 1, 0x3f8)), None);
        assert_eq!(spcr_uart(&spcr(0x03, 0, 0)), None);
        let mut other = spcr(0x03, 0, 0x0900_0000);
        other[..4].copy_from_slice(b"DBG2");
        assert_eq!(spcr_uart(&other), None);
        assert_eq!(spcr_uart(&spcr(0x03, 0, 0x0900_0000)[..51]), None);
    }

    #[test]
    fn fadt_flags_choose_the_psci_conduit() {
        let fadt = |flags: u16| {
            let mut t = [0u8; 276];
            t[..4].copy_from_slice(b"FACP");
            t[129..131].copy_from_slice(&flags.to_le_bytes());
            t
        };
        // QEMU virt: PSCI compliant, over HVC (hw/arm/virt-acpi-build.c, build_fadt_rev6).
        assert_eq!(fadt_psci_smc(&fadt(0b11)), Some(false));
        assert_eq!(fadt_psci_smc(&fadt(0b01)), Some(true));
        assert_eq!(fadt_psci_smc(&fadt(0b10)), None);
        assert_eq!(fadt_psci_smc(&fadt(0b11)[..130]), None);
    }
}
