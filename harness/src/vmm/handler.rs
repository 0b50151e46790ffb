//! What the reference VMM does on a vCPU thread with one memory error, between KVM_RUN
//! returning (EINTR after the SIGBUS) and the next KVM_RUN: decide, write the CPER record,
//! inject. The SIGBUS is placed in guest memory once, when it is taken from the recorder
//! ([`ErrorHandler::memory_error`]). The machine calls the handler on every vCPU thread
//! with no lock of its own held (the GHESv2 handshake takes the handler's); the latency
//! bench calls the same functions and times them through a [`Probe`].
//!
//! Cost is counted in register ioctls (each a round trip into the host kernel): an SError
//! takes one (KVM_SET_VCPU_EVENTS), KVM's ext_dabt two (PC for the ifetch check first), the
//! emulated entry ten: it reads PC, PSTATE, VBAR_EL1 and SCTLR_EL1 and writes six
//! registers (see [`inject_entry`]). Nothing is read when a stop is not a memory error.

use std::sync::Mutex;

use super::entry::{self, CpuState, EntryKind};
use super::ghes;
use super::log::{Injection, InjectionKind, InjectionVia};
use super::policy::{self, Decision, Delivery, FaultInfo, RecordAction};
use super::ExecError;
use crate::fault::sigbus::SigbusEvent;
use crate::fault::translate::{translate_first, GpaRange, Memslot};
use crate::fault::SigbusCode;
use crate::formats::acpi::GhesSource;
use crate::formats::cper::{RecordTemplate, MEMORY_ERROR_RECORD_LEN};
use crate::formats::esr::{ESR_ELx_EC_SERROR, Esr};
use crate::kvm::regs::{ESR_EL1, FAR_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1};
use crate::kvm::{self, CapSet, CoreReg, Vcpu, Vm};
use crate::scenario::{Firmware, Hex, OnMemoryError, SignalCode, Vmm};

/// A point in [`ErrorHandler::on_memory_error`], for a bench to put a clock read on. The
/// machine passes `()`, which reads nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// One register ioctl returned (named as the breakdown shows it).
    Ioctl(&'static str),
    /// The decision is taken (the PC read, the read-ack checked).
    Decided,
    /// The CPER record is written, or none was due.
    Recorded,
}

/// Observes the handler's progress.
pub trait Probe {
    /// Called as the handler reaches `at`.
    fn mark(&mut self, at: Mark);
}

impl Probe for () {
    #[inline(always)]
    fn mark(&mut self, _: Mark) {}
}

/// What the handler did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// The CPER record written behind GHESv2.
    pub record: Option<[u8; MEMORY_ERROR_RECORD_LEN]>,
    /// The injection made.
    pub injection: Option<Injection>,
    /// The VM is to stop, for this reason.
    pub stop: Option<String>,
}

/// A BUS_MCEERR_AR or AO placed in guest memory: what the decision needs of a SIGBUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryError {
    /// Action required or optional.
    pub code: SignalCode,
    /// The guest physical address of `si_addr`.
    pub gpa: u64,
    /// The guest range the signalled host page covers in that slot.
    pub range: GpaRange,
    /// `si_addr_lsb`: log2 of the host page's size.
    pub lsb: u8,
}

/// One VM's memory-error handling; shared by its vCPU threads.
#[derive(Debug)]
pub struct ErrorHandler {
    firmware: Firmware,
    caps: CapSet,
    vmm: Vmm,
    slots: Vec<Memslot>,
    ghes: Option<GhesSource>,
    record: RecordTemplate,
    /// Held from reading the read-ack register to writing the record: one error source,
    /// one status block, several vCPU threads.
    handshake: Mutex<()>,
}

impl ErrorHandler {
    /// A handler for a VM with these memslots, `firmware` (and its SEA-notified GHESv2
    /// source for ACPI), the capabilities the VMM may use and its configuration.
    pub fn new(
        firmware: Firmware,
        caps: CapSet,
        vmm: &Vmm,
        slots: Vec<Memslot>,
        ghes: Option<GhesSource>,
    ) -> Result<Self, ExecError> {
        Ok(Self {
            firmware,
            caps,
            vmm: vmm.clone(),
            slots,
            ghes,
            record: RecordTemplate::new(vmm.cper_profile.into()).map_err(ExecError::Failed)?,
            handshake: Mutex::new(()),
        })
    }

    /// `ev` placed in guest memory, or `None` for a signal that is not a memory error of
    /// guest RAM (another si_code, or an address outside every slot).
    pub fn memory_error(&self, ev: &SigbusEvent) -> Option<MemoryError> {
        let code = match ev.si_code {
            SigbusCode::MceerrAr => SignalCode::Ar,
            SigbusCode::MceerrAo => SignalCode::Ao,
            _ => return None,
        };
        let t = translate_first(&self.slots, ev.si_addr, ev.si_addr_lsb).ok()?;
        Some(MemoryError {
            code,
            gpa: t.gpa,
            range: t.range,
            lsb: u8::try_from(ev.si_addr_lsb).ok()?,
        })
    }

    /// Whether the guest acknowledged the last record (always, without GHES).
    pub fn guest_acked(&self, vm: &Vm) -> Result<bool, ExecError> {
        match &self.ghes {
            Some(g) => ghes::acked(vm, g).map_err(ExecError::Failed),
            None => Ok(true),
        }
    }

    /// The GHESv2 source the records go to (ACPI).
    pub fn ghes(&self) -> Option<&GhesSource> {
        self.ghes.as_ref()
    }

    /// Handles `err` (an AR, or an AO the VMM acts on) for `vcpu` (number `id`), stopped
    /// in the VMM: at the faulting access for an AR, at its doorbell for an AO.
    pub fn on_memory_error(
        &self,
        vm: &Vm,
        vcpu: &Vcpu,
        id: u8,
        err: &MemoryError,
        probe: &mut impl Probe,
    ) -> Result<Handled, ExecError> {
        // Only an SEA depends on the PC (policy::decide: an Instruction Abort when the PC is
        // in the poisoned range). Otherwise it is not read, and the decision is given one
        // just past the range, which no ifetch check can take for a fetch from it.
        let pc = if self.vmm.on_memory_error == OnMemoryError::Sea {
            let pc = vcpu.get_core(CoreReg::Pc).map_err(kvm_failed)?;
            probe.mark(Mark::Ioctl("get pc"));
            pc
        } else {
            err.range.start.wrapping_add(err.range.len)
        };
        let mut handled = Handled::default();
        let delivery = {
            let _handshake = self
                .handshake
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let info = FaultInfo {
                code: err.code,
                gpa: err.gpa,
                gpa_start: err.range.start,
                gpa_len: err.range.len,
                pc,
                acked: self.guest_acked(vm)?,
            };
            let Decision { record, delivery } =
                policy::decide(self.firmware, self.caps, &self.vmm, &info);
            probe.mark(Mark::Decided);
            if let (RecordAction::Write { gpa }, Some(g)) = (record, &self.ghes) {
                let bytes = self.record.encode(gpa, u32::from(err.lsb));
                ghes::write_record(vm, g, &bytes).map_err(ExecError::Failed)?;
                handled.record = Some(bytes);
            }
            probe.mark(Mark::Recorded);
            delivery
        };
        handled.injection = match delivery {
            Delivery::Nothing => None,
            Delivery::Stop(reason) => {
                handled.stop = Some(reason);
                None
            }
            Delivery::Sea { kind, via } => Some(match (kind, via) {
                (InjectionKind::Iabt, _) => {
                    inject_entry(vcpu, id, EntryKind::InstructionAbort, pc, probe)?
                }
                (_, InjectionVia::KvmExtDabt) => {
                    vcpu.inject_ext_dabt().map_err(kvm_failed)?;
                    probe.mark(Mark::Ioctl("set_vcpu_events"));
                    Injection {
                        vcpu: id,
                        kind: InjectionKind::Sea,
                        via: InjectionVia::KvmExtDabt,
                        esr: None,
                    }
                }
                _ => inject_entry(vcpu, id, EntryKind::DataAbort, pc, probe)?,
            }),
            Delivery::Serror { iss } => {
                vcpu.inject_serror(iss).map_err(kvm_failed)?;
                probe.mark(Mark::Ioctl("set_vcpu_events"));
                // ESR_EL1 as the guest should see it: EC 0x2F, IL 1, the ISS.
                let esr = iss.map(|iss| Hex(Esr::new(ESR_ELx_EC_SERROR, true, iss as u32).raw()));
                Some(Injection {
                    vcpu: id,
                    kind: InjectionKind::Serror,
                    via: InjectionVia::KvmSerror,
                    esr,
                })
            }
        };
        Ok(handled)
    }
}

fn kvm_failed(e: kvm::Error) -> ExecError {
    ExecError::Failed(e.to_string())
}

/// QEMU's way: the VMM takes the exception itself ([`entry::enter`]) and writes it with
/// KVM_SET_ONE_REG. Of the state `AArch64.TakeException` reads, PC is known already;
/// PSTATE, VBAR_EL1 and SCTLR_EL1 (SPAN and DSSBS decide PSTATE.PAN and SSBS) are read.
/// Every one of the six registers written changes: ESR_EL1, FAR_EL1 (the syndrome says FnV,
/// and a stale FAR would be seen by the guest), SPSR_EL1, ELR_EL1, PSTATE, PC. KVM has no
/// batched register write on arm64 (KVM_SET_REGS is not implemented there).
fn inject_entry(
    vcpu: &Vcpu,
    id: u8,
    kind: EntryKind,
    pc: u64,
    probe: &mut impl Probe,
) -> Result<Injection, ExecError> {
    let mut get = |name, read: &dyn Fn() -> kvm::Result<u64>| {
        let v = read().map_err(kvm_failed)?;
        probe.mark(Mark::Ioctl(name));
        Ok::<u64, ExecError>(v)
    };
    let pstate = get("get pstate", &|| vcpu.get_core(CoreReg::Pstate))?;
    let vbar = get("get vbar_el1", &|| vcpu.get_reg(VBAR_EL1))?;
    let sctlr = get("get sctlr_el1", &|| vcpu.get_reg(SCTLR_EL1))?;
    let cpu = CpuState {
        pc,
        pstate,
        vbar,
        sctlr,
    };
    let regs = entry::enter(kind, cpu).map_err(|e| ExecError::Failed(e.to_string()))?;
    for (name, reg, value) in [
        ("set esr_el1", ESR_EL1, regs.esr),
        ("set far_el1", FAR_EL1, regs.far),
        ("set spsr_el1", SPSR_EL1, regs.spsr),
    ] {
        vcpu.set_reg(reg, value).map_err(kvm_failed)?;
        probe.mark(Mark::Ioctl(name));
    }
    for (name, reg, value) in [
        ("set elr_el1", CoreReg::ElrEl1, regs.elr),
        ("set pstate", CoreReg::Pstate, regs.pstate),
        ("set pc", CoreReg::Pc, regs.pc),
    ] {
        vcpu.set_core(reg, value).map_err(kvm_failed)?;
        probe.mark(Mark::Ioctl(name));
    }
    Ok(Injection {
        vcpu: id,
        kind: match kind {
            EntryKind::DataAbort => InjectionKind::Sea,
            EntryKind::InstructionAbort => InjectionKind::Iabt,
        },
        via: InjectionVia::Emulated,
        esr: Some(Hex(regs.esr)),
    })
}
