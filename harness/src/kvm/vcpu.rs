//! A vCPU: init, registers by id, exception injection, and the run loop.

use super::exit::{handle_exit, Action, Exit, RunState, Stop};
use super::kick::{KickTarget, Kicker};
use super::regs::{core_reg, CoreReg, ID_AA64PFR0_EL1, ID_AA64PFR0_EL1_RAS};
use super::{Error, Result};
use kvm_bindings::{kvm_vcpu_events, kvm_vcpu_init, KVM_ARM_VCPU_PSCI_0_2};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use std::sync::Arc;

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
    pub(super) fn init(vm: &VmFd, fd: VcpuFd, id: u64) -> Result<Self> {
        let mut kvi = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut kvi)
            .map_err(|e| Error::sys("KVM_ARM_PREFERRED_TARGET", e))?;
        kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        fd.vcpu_init(&kvi)
            .map_err(|e| Error::sys("KVM_ARM_VCPU_INIT", e))?;
        Ok(Self {
            fd,
            id,
            kick: Arc::default(),
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

    /// Hides FEAT_RAS from the guest: ID_AA64PFR0_EL1.RAS = 0, before the first KVM_RUN.
    /// Kernels that do not let userspace lower it (6.1, 6.12) answer with an error.
    pub fn hide_feat_ras(&self) -> Result<()> {
        let pfr0 = self.get_reg(ID_AA64PFR0_EL1)?;
        self.set_reg(ID_AA64PFR0_EL1, pfr0 & !ID_AA64PFR0_EL1_RAS)
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

    /// A handle that interrupts this vCPU's KVM_RUN from another thread.
    pub fn kicker(&self) -> Result<Kicker> {
        Kicker::new(Arc::clone(&self.kick))
    }

    /// Runs until [`handle_exit`] says stop. The calling thread is the vCPU thread: a
    /// watchdog kick or a SIGBUS interrupts it here.
    pub fn run_until_stop(&mut self, state: &mut RunState) -> Result<Stop> {
        let _running = self.kick.running_on_this_thread();
        loop {
            // A kick whose signal landed between two KVM_RUNs is seen here.
            let exit = if self.kick.fired() {
                Exit::Interrupted
            } else {
                match self.fd.run() {
                    Ok(exit) => exit_of(exit),
                    Err(e) if e.errno() == libc::EINTR => Exit::Interrupted,
                    Err(e) => return Err(Error::sys("KVM_RUN", e)),
                }
            };
            match handle_exit(&exit, self.kick.fired(), state) {
                Action::Resume => continue,
                Action::Stop(stop) => return Ok(stop),
            }
        }
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
