//! System register access: `mrs`/`msr` wrappers, named as the Arm ARM names registers.

/// Reads a system register by its assembler name (e.g. `"esr_el1"`).
#[macro_export]
macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading a system register has no side effect on memory; the registers
        // read here are all accessible at EL1.
        unsafe {
            core::arch::asm!(
                concat!("mrs {}, ", $name), // one system register read
                out(reg) value,
                options(nomem, nostack),
            )
        };
        value
    }};
}

/// Writes a system register by its assembler name.
#[macro_export]
macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the caller writes registers that configure this EL1 program only
        // (translation, vectors, traps); each call site says why its value is right.
        unsafe {
            core::arch::asm!(
                concat!("msr ", $name, ", {}"), // one system register write
                in(reg) value,
                options(nostack),
            )
        };
    }};
}

/// ID_AA64PFR0_EL1.RAS, bits [31:28] (Arm ARM D24.2.93): non-zero means FEAT_RAS, so
/// DISR_EL1 and ESB exist.
pub fn has_feat_ras() -> bool {
    (read_sysreg!("id_aa64pfr0_el1") >> 28) & 0xf != 0
}

/// DISR_EL1 (op0=3 op1=0 CRn=12 CRm=1 op2=1), or 0 without FEAT_RAS (the register is
/// UNDEFINED there).
pub fn read_disr(has_ras: bool) -> u64 {
    if has_ras {
        read_sysreg!("s3_0_c12_c1_1")
    } else {
        0
    }
}

/// Masks SError: sets PSTATE.A, in effect from the next instruction.
pub fn mask_serror() {
    // SAFETY: changes PSTATE.A only.
    unsafe {
        core::arch::asm!(
            "msr daifset, #4", // DAIFSet bit 2 = A: mask SError
            "isb",             // in effect before the next instruction
            options(nomem, nostack),
        )
    };
}

/// ESB (FEAT_RAS): with PSTATE.A masked, a pending SError is deferred into DISR_EL1 instead
/// of being taken (Arm ARM D1.16 "Error synchronization barrier").
pub fn esb() {
    // SAFETY: a barrier; touches no memory. Only called when has_feat_ras() (elsewhere the
    // hint space encoding is a NOP anyway).
    unsafe {
        core::arch::asm!(
            "hint #16", // ESB, in the hint space so any assembler accepts it
            "isb",      // the DISR_EL1 read that follows sees the deferral
            options(nomem, nostack),
        )
    };
}
