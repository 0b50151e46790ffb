//! Booting the guest payload for a bench: one vCPU, the payload in RAM, a GICv3, a
//! watchdog, run up to its first `ReadyForFault`.

use ras_guest_abi::mailbox::State;
use ras_guest_abi::map::TARGET_MAX_SIZE;
use ras_guest_abi::{Params, Report};
use ras_harness::kvm::{boot, RunState, Stop, Vcpu, Vm, Watchdog};
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
        boot::add_payload_ram(&mut vm).map_err(err("payload RAM"))?;
        prepare(&mut vm)?;
        boot::write_device_tree(&vm, std::slice::from_ref(params), TARGET_MAX_SIZE)
            .map_err(err("device tree"))?;
        let vcpu = boot::add_payload_vcpu(&vm, 0).map_err(err("vCPU"))?;
        boot::add_gic(&vm).map_err(err("GICv3"))?;
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
        let report = boot::read_report(&self.vm, 0).map_err(|e| e.to_string())?;
        if State::from_code(report.state) == Some(State::Fatal) {
            return Err(format!(
                "the guest stopped: {:?}",
                self.state.doorbells.last()
            ));
        }
        Ok(report)
    }
}
