//! Booting the guest payload for a bench: one vCPU, the payload in RAM, a GICv3, a
//! watchdog, run up to its first `ReadyForFault`.

use ras_guest_abi::mailbox::{Access, State};
use ras_guest_abi::map::{self, mailbox_offset};
use ras_guest_abi::{Params, Report, ABI_VERSION, PARAMS_MAGIC};
use ras_harness::kvm::{Backing, CoreReg, Mapping, RunState, Stop, Vcpu, Vm, Watchdog};
use ras_harness::payload;
use std::time::Duration;

/// A bench VM lives for at most a few criterion calls; a stuck guest is kicked after this.
const WATCHDOG: Duration = Duration::from_secs(300);

/// A running one-vCPU guest. Field order: the watchdog stops before the vCPU goes, the
/// vCPU before the VM.
pub struct Guest {
    _watchdog: Watchdog,
    pub vcpu: Vcpu,
    pub vm: Vm,
    pub state: RunState,
}

/// Params for `access` at EL0 on `targets`, with `flags`.
pub fn params(access: Access, targets: &[u64], flags: u32) -> Params {
    let mut p = Params {
        magic: PARAMS_MAGIC,
        abi_version: ABI_VERSION,
        access: access as u32,
        el: 0,
        flags,
        target_count: targets.len() as u32,
        ..Params::default()
    };
    p.targets[..targets.len()].copy_from_slice(targets);
    p
}

impl Guest {
    /// A VM with guest RAM holding the payload; `prepare` adds memory and writes tables
    /// before the vCPU starts.
    pub fn boot(
        params: &Params,
        prepare: impl FnOnce(&mut Vm) -> Result<(), String>,
    ) -> Result<Self, String> {
        fn err(what: &'static str) -> impl Fn(ras_harness::kvm::Error) -> String {
            move |e| format!("{what}: {e}")
        }
        let mut vm = Vm::new().map_err(err("create VM"))?;
        let ram = Mapping::new(Backing::Anonymous, map::RAM_SIZE as usize).map_err(err("RAM"))?;
        vm.add_memory(map::RAM_BASE, ram)
            .map_err(err("RAM memslot"))?;
        vm.write_guest(map::RAM_BASE, payload::IMAGE)
            .map_err(err("load payload"))?;
        prepare(&mut vm)?;
        let mailbox = map::mailbox_base(0).ok_or("no mailbox 0")?;
        vm.write_guest(mailbox + mailbox_offset::PARAMS, params.as_bytes())
            .map_err(err("params"))?;
        let vcpu = vm.create_vcpu(0).map_err(err("vCPU"))?;
        vcpu.set_core(CoreReg::Pc, payload::ENTRY)
            .map_err(err("PC"))?;
        vcpu.set_core(CoreReg::X(0), mailbox).map_err(err("x0"))?;
        vm.create_gic_v3(map::GIC_DIST_BASE, map::GIC_REDIST_BASE)
            .map_err(err("GICv3"))?;
        let watchdog = Watchdog::start(&vcpu, WATCHDOG).map_err(err("watchdog"))?;
        let mut guest = Self {
            _watchdog: watchdog,
            vcpu,
            vm,
            state: RunState::default(),
        };
        match guest.run()? {
            Stop::ReadyForFault { step: 0 } => Ok(guest),
            other => Err(format!(
                "boot: expected ReadyForFault(0), got {other:?} ({:#x?})",
                guest.report().map(|r| (r.state, r.exception_count))
            )),
        }
    }

    /// KVM_RUN until the run loop stops.
    pub fn run(&mut self) -> Result<Stop, String> {
        self.vcpu
            .run_until_stop(&mut self.state)
            .map_err(|e| e.to_string())
    }

    /// The guest's report.
    pub fn report(&self) -> Result<Report, String> {
        let mut bytes = vec![0u8; std::mem::size_of::<Report>()];
        let at = map::mailbox_base(0).ok_or("no mailbox 0")? + mailbox_offset::REPORT;
        self.vm
            .read_guest(at, &mut bytes)
            .map_err(|e| e.to_string())?;
        let report = Report::from_bytes(&bytes).ok_or("short report")?;
        if State::from_code(report.state) == Some(State::Fatal) {
            return Err(format!(
                "the guest stopped: {:?}",
                self.state.doorbells.last()
            ));
        }
        Ok(report)
    }
}
