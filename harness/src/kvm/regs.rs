//! Register ids for KVM_{GET,SET}_ONE_REG, in one table: the core registers of
//! `struct kvm_regs` and the system registers the harness reads or writes.

use kvm_bindings::{KVM_REG_ARM64, KVM_REG_ARM64_SYSREG, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64};

/// A core register: a field of `struct kvm_regs` (arch/arm64/include/uapi/asm/kvm.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreReg {
    /// `regs.regs[n]`, x0-x30.
    X(u8),
    /// `regs.sp` (SP_EL0).
    Sp,
    /// `regs.pc`.
    Pc,
    /// `regs.pstate`.
    Pstate,
    /// `sp_el1`.
    SpEl1,
    /// `elr_el1`.
    ElrEl1,
}

/// KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset in kvm_regs / 4)
/// (arch/arm64/include/uapi/asm/kvm.h, KVM_REG_ARM_CORE_REG). `struct kvm_regs` starts
/// with `struct user_pt_regs { u64 regs[31]; u64 sp; u64 pc; u64 pstate; }`, then
/// `u64 sp_el1; u64 elr_el1;`. `None` for x31 and above.
pub fn core_reg(reg: CoreReg) -> Option<u64> {
    let offset: u64 = match reg {
        CoreReg::X(n) if n < 31 => 8 * u64::from(n),
        CoreReg::X(_) => return None,
        CoreReg::Sp => 8 * 31,
        CoreReg::Pc => 8 * 32,
        CoreReg::Pstate => 8 * 33,
        CoreReg::SpEl1 => 8 * 34,
        CoreReg::ElrEl1 => 8 * 35,
    };
    Some(KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | (offset / 4))
}

/// A system register id from its encoding (arch/arm64/include/uapi/asm/kvm.h,
/// ARM64_SYS_REG: op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2). E.g. ESR_EL1 is
/// (3, 0, 5, 2, 0), ID_AA64PFR0_EL1 (3, 0, 0, 4, 0).
pub const fn sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG as u64
        | (op0 & 3) << 14
        | (op1 & 7) << 11
        | (crn & 0xf) << 7
        | (crm & 0xf) << 3
        | (op2 & 7)
}

/// SPSR_EL1: `spsr[KVM_SPSR_EL1]` of `struct kvm_regs`, after `user_pt_regs` (34 u64s),
/// `sp_el1` and `elr_el1`, so byte 288 (arch/arm64/include/uapi/asm/kvm.h). Not a
/// [`CoreReg`]: only the emulated exception entry writes it.
pub const SPSR_EL1: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (288 / 4);

// System registers (Arm ARM encodings op0, op1, CRn, CRm, op2).
/// ID_AA64PFR0_EL1, whose RAS field ([`ID_AA64PFR0_EL1_RAS`]) says FEAT_RAS.
pub const ID_AA64PFR0_EL1: u64 = sys_reg(3, 0, 0, 4, 0);
/// ID_AA64PFR0_EL1.RAS, bits \[31:28\].
pub const ID_AA64PFR0_EL1_RAS: u64 = 0xF << 28;
/// SCTLR_EL1: SPAN and DSSBS decide PSTATE.PAN and SSBS on an exception entry.
pub const SCTLR_EL1: u64 = sys_reg(3, 0, 1, 0, 0);
/// ESR_EL1.
pub const ESR_EL1: u64 = sys_reg(3, 0, 5, 2, 0);
/// FAR_EL1.
pub const FAR_EL1: u64 = sys_reg(3, 0, 6, 0, 0);
/// VBAR_EL1.
pub const VBAR_EL1: u64 = sys_reg(3, 0, 12, 0, 0);
/// KVM_REG_ARM_TIMER_CNT (arch/arm64/include/uapi/asm/kvm.h): the guest's CNTVCT_EL0.
/// ARM64_SYS_REG(3, 3, 14, 3, 2): the uapi swapped the CNT and CVAL encodings by mistake
/// and keeps them for ABI, so this is not CNTVCT_EL0's architectural encoding.
pub const TIMER_CNT: u64 = sys_reg(3, 3, 14, 3, 2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_ids_match_the_uapi_encoding() {
        // 0x6030_0000_0010_0000 | offset/4: KVM_REG_ARM64 (0x6000...), SIZE_U64
        // (0x0030...), ARM_CORE (0x0010_0000); pc is at byte 256 -> 0x40.
        assert_eq!(core_reg(CoreReg::X(0)), Some(0x6030_0000_0010_0000));
        assert_eq!(core_reg(CoreReg::Pc), Some(0x6030_0000_0010_0040));
        assert_eq!(core_reg(CoreReg::Pstate), Some(0x6030_0000_0010_0042));
        assert_eq!(core_reg(CoreReg::X(31)), None);
        // ESR_EL1 = S3_0_C5_C2_0: 0x6030_0000_0013_0000 | 3<<14 | 5<<7 | 2<<3.
        assert_eq!(sys_reg(3, 0, 5, 2, 0), 0x6030_0000_0013_c290);
    }
}
