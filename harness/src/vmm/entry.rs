//! The exception entry the VMM writes itself when it does not (or cannot) let KVM inject:
//! QEMU's way (target/arm/kvm.c `kvm_inject_arm_sea` builds the syndrome and runs its own
//! `arm_cpu_do_interrupt`, then writes the registers back with KVM_SET_ONE_REG). Pure: the
//! caller reads PC, PSTATE, VBAR_EL1 and SCTLR_EL1 and writes [`EntryRegs`] back.
//!
//! The register effects are those of the Arm ARM pseudo-code `AArch64.TakeException`
//! (and of KVM's own `enter_exception64`, arch/arm64/kvm/hyp/exception.c): SPSR_EL1 = old
//! PSTATE, ELR_EL1 = the preferred return address (the faulting instruction for an abort),
//! PSTATE = EL1h with D, A, I, F masked, PC = VBAR_EL1 + the vector offset.

use crate::formats::esr::{DataAbort, Esr, InstructionAbort, Origin};
use ras_guest_abi::arch::{
    SPSR_DAIF, SPSR_M_AARCH32, SPSR_M_EL0T, SPSR_M_EL1H, SPSR_M_EL1T, SPSR_M_MASK, VECTOR_CUR_SP0,
    VECTOR_CUR_SPX, VECTOR_LOWER_A64,
};

/// PSTATE.PAN (bit 22), DIT (bit 24), SSBS (bit 12).
const PAN: u64 = 1 << 22;
const DIT: u64 = 1 << 24;
const SSBS: u64 = 1 << 12;
/// SCTLR_EL1.SPAN (bit 23): 0 sets PAN on exception entry; DSSBS (bit 44): the SSBS value
/// on exception entry.
const SCTLR_SPAN: u64 = 1 << 23;
const SCTLR_DSSBS: u64 = 1 << 44;

/// What is being delivered through the emulated entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A synchronous external Data Abort (EC 0x24/0x25, DFSC 0x10).
    DataAbort,
    /// A synchronous external Instruction Abort (EC 0x20/0x21, IFSC 0x10).
    InstructionAbort,
}

/// The vCPU state the entry depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuState {
    /// PC: the faulting instruction.
    pub pc: u64,
    /// PSTATE (`kvm_regs.regs.pstate`).
    pub pstate: u64,
    /// VBAR_EL1.
    pub vbar: u64,
    /// SCTLR_EL1.
    pub sctlr: u64,
}

/// The registers to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRegs {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1: 0, since the syndrome says FnV (FAR not valid; its value is UNKNOWN, and
    /// QEMU's guests were seen reading 0, docs/ras-facts.md §9).
    pub far: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// SPSR_EL1.
    pub spsr: u64,
    /// The new PSTATE.
    pub pstate: u64,
    /// The new PC.
    pub pc: u64,
    /// Offset of that PC from VBAR_EL1.
    pub vector_offset: u64,
}

/// Why no entry can be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The vCPU was in AArch32 or at EL2/EL3: the payload never is.
    #[error("cannot emulate an exception entry from PSTATE {0:#x} (only EL0t, EL1t, EL1h)")]
    UnsupportedMode(u64),
}

/// Where the exception comes from and which vector group it uses.
pub fn origin(pstate: u64) -> Result<(Origin, u64), EntryError> {
    if pstate & SPSR_M_AARCH32 != 0 {
        return Err(EntryError::UnsupportedMode(pstate));
    }
    match pstate & SPSR_M_MASK {
        SPSR_M_EL0T => Ok((Origin::LowerEl, VECTOR_LOWER_A64)),
        SPSR_M_EL1T => Ok((Origin::SameEl, VECTOR_CUR_SP0)),
        SPSR_M_EL1H => Ok((Origin::SameEl, VECTOR_CUR_SPX)),
        _ => Err(EntryError::UnsupportedMode(pstate)),
    }
}

/// The syndrome of an emulated synchronous external abort: IL 1, FnV 1 (the VMM knows the
/// page, not the faulting virtual address), FSC 0x10, nothing else. From EL1: Data Abort
/// 0x96000410, Instruction Abort 0x86000410; from EL0: 0x92000410, 0x82000410. WnR is 0:
/// on the hwpoison path the VMM does not know whether the access was a write.
pub fn syndrome(kind: EntryKind, from: Origin) -> Esr {
    match kind {
        EntryKind::DataAbort => Esr::data_abort(DataAbort::sea(from, true)),
        EntryKind::InstructionAbort => Esr::instruction_abort(InstructionAbort::sea(from, true)),
    }
}

/// The registers of a synchronous exception entry to EL1 for `kind` from `cpu`.
pub fn enter(kind: EntryKind, cpu: CpuState) -> Result<EntryRegs, EntryError> {
    let (from, group) = origin(cpu.pstate)?;
    let mut pstate = SPSR_M_EL1H | SPSR_DAIF | (cpu.pstate & (PAN | DIT));
    if cpu.sctlr & SCTLR_SPAN == 0 {
        pstate |= PAN;
    }
    if cpu.sctlr & SCTLR_DSSBS != 0 {
        pstate |= SSBS;
    }
    Ok(EntryRegs {
        esr: syndrome(kind, from).raw(),
        far: 0,
        elr: cpu.pc,
        spsr: cpu.pstate,
        pstate,
        pc: cpu.vbar + group,
        vector_offset: group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KVM's reset SCTLR_EL1 has SPAN set (arch/arm64/kvm/sys_regs.c), as the payload's.
    const SCTLR: u64 = 0x30d0_0980 | SCTLR_SPAN;

    fn cpu(pstate: u64) -> CpuState {
        CpuState {
            pc: 0x4000_2468,
            pstate,
            vbar: 0x4000_0800,
            sctlr: SCTLR,
        }
    }

    #[test]
    fn from_el1h_a_data_abort_goes_to_0x200_with_qemus_syndrome() {
        let r = enter(EntryKind::DataAbort, cpu(0x3c5)).unwrap();
        assert_eq!(r.esr, 0x9600_0410);
        assert_eq!((r.pc, r.vector_offset), (0x4000_0a00, 0x200));
        assert_eq!((r.elr, r.spsr, r.far), (0x4000_2468, 0x3c5, 0));
        assert_eq!(r.pstate, 0x3c5);
    }

    #[test]
    fn from_el0_both_aborts_go_to_0x400() {
        // EL0t with A unmasked, as the payload enters EL0.
        let d = enter(EntryKind::DataAbort, cpu(0x2c0)).unwrap();
        assert_eq!(
            (d.esr, d.vector_offset, d.spsr),
            (0x9200_0410, 0x400, 0x2c0)
        );
        let i = enter(EntryKind::InstructionAbort, cpu(0x0)).unwrap();
        assert_eq!((i.esr, i.pc), (0x8200_0410, 0x4000_0c00));
        assert_eq!(
            enter(EntryKind::InstructionAbort, cpu(0x3c5)).unwrap().esr,
            0x8600_0410
        );
    }

    #[test]
    fn pan_dit_and_ssbs_follow_the_arm_arm() {
        let mut c = cpu(0x3c5 | DIT);
        c.sctlr &= !SCTLR_SPAN;
        c.sctlr |= SCTLR_DSSBS;
        let r = enter(EntryKind::DataAbort, c).unwrap();
        assert_eq!(r.pstate, 0x3c5 | DIT | PAN | SSBS);
        assert_eq!(
            enter(EntryKind::DataAbort, cpu(0x4)).unwrap().vector_offset,
            0
        );
    }

    #[test]
    fn aarch32_and_el2_are_refused() {
        assert_eq!(
            enter(EntryKind::DataAbort, cpu(0x10)),
            Err(EntryError::UnsupportedMode(0x10))
        );
        assert!(enter(EntryKind::DataAbort, cpu(0x9)).is_err());
    }
}
