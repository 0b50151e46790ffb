//! Architectural constants both sides of the contract need: the guest tests them at its
//! exceptions, the harness builds and judges syndromes, vector offsets and PSTATE with them.
//!
//! Citations are to the Arm ARM, DDI 0487 M.a.a, one per register or table
//! (docs/ras-facts.md §5): D24.2.45 ESR_EL1 for the syndrome, D1.4.1.6 for the vector
//! offsets, D24.2.214 VBAR_EL1 for the table's alignment, C5.2.20 SPSR_EL1 for PSTATE.

// ESR_ELx constants keep the Linux spelling (arch/arm64/include/asm/esr.h) so that they
// grep across both.
#![allow(non_upper_case_globals)]

// ESR_ELx: EC [31:26], IL [25], ISS [24:0] (Arm ARM D24.2.45 ESR_EL1).
/// ESR_ELx.EC is bits \[31:26\].
pub const ESR_ELx_EC_SHIFT: u32 = 26;

// Exception classes, ESR_ELx.EC (Arm ARM D24.2.45 ESR_EL1, EC).
/// EC 0x15: SVC instruction execution in AArch64 state.
pub const ESR_ELx_EC_SVC64: u8 = 0x15;
/// EC 0x20: Instruction Abort from a lower Exception level.
pub const ESR_ELx_EC_IABT_LOW: u8 = 0x20;
/// EC 0x21: Instruction Abort taken without a change in Exception level.
pub const ESR_ELx_EC_IABT_CUR: u8 = 0x21;
/// EC 0x24: Data Abort from a lower Exception level.
pub const ESR_ELx_EC_DABT_LOW: u8 = 0x24;
/// EC 0x25: Data Abort taken without a change in Exception level.
pub const ESR_ELx_EC_DABT_CUR: u8 = 0x25;
/// EC 0x2F: SError exception.
pub const ESR_ELx_EC_SERROR: u8 = 0x2F;

// Fault status codes (Arm ARM D24.2.45 ESR_EL1, ISS encoding for an exception from a Data
// Abort / Instruction Abort / SError exception).
/// DFSC/IFSC 0b010000: synchronous External abort, not on a translation table walk.
pub const ESR_ELx_FSC_EXTABT: u8 = 0x10;
/// SError DFSC 0b010001: asynchronous SError interrupt. For a Data Abort the same value
/// means a synchronous Tag Check Fault.
pub const ESR_ELx_FSC_SERROR: u8 = 0x11;

// Vector offsets from VBAR_EL1 (Arm ARM D1.4.1.6 Exception vectors): four groups by where
// the exception is taken from, each of four 0x80-byte entries by exception type.
/// Group: current Exception level with SP_EL0 (EL1t).
pub const VECTOR_CUR_SP0: u64 = 0x000;
/// Group: current Exception level with SP_ELx (EL1h).
pub const VECTOR_CUR_SPX: u64 = 0x200;
/// Group: lower Exception level using AArch64 (EL0 for VBAR_EL1).
pub const VECTOR_LOWER_A64: u64 = 0x400;
/// Entry within a group: synchronous exception.
pub const VECTOR_SYNC: u64 = 0x000;
/// Entry within a group: SError.
pub const VECTOR_SERROR: u64 = 0x180;
/// Synchronous exception from the current EL with SP_ELx.
pub const VECTOR_CUR_SPX_SYNC: u64 = VECTOR_CUR_SPX + VECTOR_SYNC;
/// SError from the current EL with SP_ELx.
pub const VECTOR_CUR_SPX_SERROR: u64 = VECTOR_CUR_SPX + VECTOR_SERROR;
/// Synchronous exception from a lower EL using AArch64.
pub const VECTOR_LOWER_A64_SYNC: u64 = VECTOR_LOWER_A64 + VECTOR_SYNC;
/// SError from a lower EL using AArch64.
pub const VECTOR_LOWER_A64_SERROR: u64 = VECTOR_LOWER_A64 + VECTOR_SERROR;
/// Size of one vector entry: 32 instructions.
pub const VECTOR_ENTRY_SIZE: u64 = 0x80;
/// Size of the table, 16 entries; VBAR_EL1 bits \[10:0\] are RES0 (Arm ARM D24.2.214
/// VBAR_EL1), so the table base is aligned to it too.
pub const VECTOR_TABLE_SIZE: u64 = 16 * VECTOR_ENTRY_SIZE;

// PSTATE as SPSR_ELx saves it, which is also the layout of KVM's `regs.pstate` (Arm ARM
// C5.2.20 SPSR_EL1).
/// M\[3:0\] = 0b0000: EL0 with SP_EL0 (EL0t).
pub const SPSR_M_EL0T: u64 = 0b0000;
/// M\[3:0\] = 0b0100: EL1 with SP_EL0 (EL1t).
pub const SPSR_M_EL1T: u64 = 0b0100;
/// M\[3:0\] = 0b0101: EL1 with SP_EL1 (EL1h), what an exception entry to EL1 selects.
pub const SPSR_M_EL1H: u64 = 0b0101;
/// M\[3:0\]: the field the modes above are values of.
pub const SPSR_M_MASK: u64 = 0b1111;
/// M\[4\]: the state was AArch32.
pub const SPSR_M_AARCH32: u64 = 1 << 4;
/// F \[6\]: FIQ masked.
pub const SPSR_F: u64 = 1 << 6;
/// I \[7\]: IRQ masked.
pub const SPSR_I: u64 = 1 << 7;
/// A \[8\]: SError masked.
pub const SPSR_A: u64 = 1 << 8;
/// D \[9\]: Debug exceptions masked.
pub const SPSR_D: u64 = 1 << 9;
/// D, A, I and F: all four masked, as an exception entry sets them.
pub const SPSR_DAIF: u64 = SPSR_D | SPSR_A | SPSR_I | SPSR_F;

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets the reports and scenario files write as numbers.
    #[test]
    fn vector_offsets_are_those_of_d1_4_1_6() {
        assert_eq!(VECTOR_CUR_SPX_SYNC, 0x200);
        assert_eq!(VECTOR_CUR_SPX_SERROR, 0x380);
        assert_eq!(VECTOR_LOWER_A64_SYNC, 0x400);
        assert_eq!(VECTOR_LOWER_A64_SERROR, 0x580);
        assert_eq!(VECTOR_TABLE_SIZE, 0x800);
    }

    /// PSTATE after an exception entry to EL1h, as KVM and the payload's records show it.
    #[test]
    fn el1h_with_daif_masked_is_0x3c5() {
        assert_eq!(SPSR_M_EL1H | SPSR_DAIF, 0x3c5);
    }
}
