//! A vCPU: init, registers by id, exception injection, and the run loop.

use super::exit::{handle_exit, Action, Exit, RunState, Stop};
use super::watchdog::KickTarget;
use super::{Error, Result};
use kvm_bindings::{
    kvm_vcpu_events, kvm_vcpu_init, KVM_ARM_VCPU_PSCI_0_2, KVM_REG_ARM64, KVM_REG_ARM64_SYSREG,
    KVM_REG_ARM_CORE, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use std::sync::Arc;

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

/// A vCPU fd with its id and the handle the watchdog uses to kick it.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    id: u64,
    kick: Arc<KickTarget>,
}

impl Vcpu {
    /// KVM_ARM_VCPU_INIT with the host's preferred target (KVM_ARM_PREFERRED_TARGET) and
    /// PSCI 0.2, so SYSTEM_OFF arrives as KVM_EXIT_SYSTEM_EVENT.
    pub(super) fn init(vm: &VmFd, mut fd: VcpuFd, id: u64) -> Result<Self> {
        let mut kvi = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut kvi)
            .map_err(|e| Error::sys("KVM_ARM_PREFERRED_TARGET", e))?;
        kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        fd.vcpu_init(&kvi)
            .map_err(|e| Error::sys("KVM_ARM_VCPU_INIT", e))?;
        let immediate_exit = std::ptr::addr_of_mut!(fd.get_kvm_run().immediate_exit);
        Ok(Self {
            fd,
            id,
            kick: Arc::new(KickTarget::new(immediate_exit)),
        })
    }

    /// The vCPU id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The underlying fd, for ioctls this layer does not wrap.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// KVM_SET_ONE_REG of a 64-bit register.
    pub fn set_reg(&self, id: u64, value: u64) -> Result<()> {
        self.fd
            .set_one_reg(id, &value.to_le_bytes())
            .map(drop)
            .map_err(|e| Error::sys("KVM_SET_ONE_REG", e))
    }

    /// KVM_GET_ONE_REG of a 64-bit register.
    pub fn get_reg(&self, id: u64) -> Result<u64> {
        let mut bytes = [0u8; 8];
        self.fd
            .get_one_reg(id, &mut bytes)
            .map_err(|e| Error::sys("KVM_GET_ONE_REG", e))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// A core register (x0-x30 beyond range is refused).
    pub fn set_core(&self, reg: CoreReg, value: u64) -> Result<()> {
        let id = core_reg(reg).ok_or_else(|| Error::Invalid(format!("{reg:?}")))?;
        self.set_reg(id, value)
    }

    /// Reads a core register.
    pub fn get_core(&self, reg: CoreReg) -> Result<u64> {
        let id = core_reg(reg).ok_or_else(|| Error::Invalid(format!("{reg:?}")))?;
        self.get_reg(id)
    }

    /// KVM_SET_VCPU_EVENTS with `ext_dabt_pending` (needs KVM_CAP_ARM_INJECT_EXT_DABT):
    /// KVM takes a synchronous external abort into the guest at once.
    pub fn inject_ext_dabt(&self) -> Result<()> {
        let mut events = kvm_vcpu_events::default();
        events.exception.ext_dabt_pending = 1;
        self.fd
            .set_vcpu_events(&events)
            .map_err(|e| Error::sys("KVM_SET_VCPU_EVENTS(ext_dabt_pending)", e))
    }

    /// KVM_SET_VCPU_EVENTS with `serror_pending`, and `serror_has_esr` + the ISS when
    /// `esr` is given (needs KVM_CAP_ARM_INJECT_SERROR_ESR; bits above 24 are EINVAL).
    pub fn inject_serror(&self, esr: Option<u64>) -> Result<()> {
        let mut events = kvm_vcpu_events::default();
        events.exception.serror_pending = 1;
        if let Some(esr) = esr {
            events.exception.serror_has_esr = 1;
            events.exception.serror_esr = esr;
        }
        self.fd
            .set_vcpu_events(&events)
            .map_err(|e| Error::sys("KVM_SET_VCPU_EVENTS(serror_pending)", e))
    }

    /// Finishes the MMIO access of the last exit without running guest code: KVM_RUN
    /// with `immediate_exit = 1` retires the instruction (PC += 4) and returns EINTR.
    /// Needed before setting registers after an MMIO exit, or KVM skips an instruction of
    /// the new PC (docs/ras-facts.md §3, seen).
    pub fn complete_mmio(&mut self) -> Result<()> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(drop);
        self.fd.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(Error::sys("KVM_RUN(immediate_exit)", e)),
            Ok(()) => Ok(()),
        }
    }

    /// The handle a [`super::Watchdog`] kicks.
    pub(super) fn kick_target(&self) -> Arc<KickTarget> {
        Arc::clone(&self.kick)
    }

    /// Runs until [`handle_exit`] says stop. The calling thread is the vCPU thread: a
    /// watchdog kick or a SIGBUS interrupts it here.
    pub fn run_until_stop(&mut self, state: &mut RunState) -> Result<Stop> {
        let _running = self.kick.running_on_this_thread();
        loop {
            let exit = match self.fd.run() {
                Ok(exit) => exit_of(exit),
                Err(e) if e.errno() == libc::EINTR => Exit::Interrupted,
                Err(e) => return Err(Error::sys("KVM_RUN", e)),
            };
            match handle_exit(&exit, self.kick.fired(), state) {
                Action::Resume => continue,
                Action::Stop(stop) => return Ok(stop),
            }
        }
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // The kvm_run mapping goes away with the fd: the watchdog must not touch it after.
        self.kick.detach();
    }
}

/// Reduces a kvm-ioctls exit to the harness's [`Exit`].
fn exit_of(exit: VcpuExit<'_>) -> Exit {
    let mmio = |addr: u64, data: &[u8], write: bool| {
        let mut bytes = [0u8; 8];
        let n = data.len().min(8);
        bytes[..n].copy_from_slice(&data[..n]);
        Exit::Mmio {
            addr,
            write,
            len: data.len() as u32,
            data: if write { u64::from_le_bytes(bytes) } else { 0 },
        }
    };
    match exit {
        VcpuExit::MmioWrite(addr, data) => mmio(addr, data, true),
        VcpuExit::MmioRead(addr, data) => mmio(addr, data, false),
        VcpuExit::SystemEvent(kind, _) => Exit::SystemEvent { kind },
        VcpuExit::Intr => Exit::Interrupted,
        VcpuExit::Unsupported(reason) => Exit::Other(reason),
        _ => Exit::Other(u32::MAX),
    }
}

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
