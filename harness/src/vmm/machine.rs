//! The machine: one VM, one thread per vCPU, and the VMM thread that poisons, decides and
//! records. vCPU threads only run KVM_RUN, read registers and inject; every decision is
//! taken on the VMM thread, which talks to them through channels:
//!
//! ```text
//! vCPU thread                          VMM thread (execute)
//! run_until_stop -> ReadyForFault ---> poison now, or hold until the previous fault is
//!   (complete_mmio first)               notified / acknowledged
//! run_until_stop -> EINTR (SIGBUS) --> take the SIGBUS, HVA -> GPA, policy::decide,
//!                                      write CPER, answer Inject / Halt
//! inject (emulated entry or KVM) ----> record the injection, answer Resume (or hold)
//! ```

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_REG_ARM64, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64};
use ras_guest_abi::mailbox::acpi_found;
use ras_guest_abi::map::{self, mailbox_offset, RAM_BASE, TARGET_BASE};
use ras_guest_abi::Report;

use super::entry::{self, CpuState, EntryKind};
use super::ghes::{self, GuestMemory};
use super::plan::{self, Plan};
use super::policy::{self, Decision, Delivery, FaultInfo, RecordAction};
use super::{ExecError, Options};
use crate::fault::sigbus::{self, SigbusEvent, BUS_MCEERR_AO, BUS_MCEERR_AR};
use crate::fault::translate::{translate, Memslot};
use crate::fault::{self, GuestRanges, PoisonError, PoisonedPage, Poisoner};
use crate::formats::cper::{memory_error_record_with_granule, Severity};
use crate::kvm::Watchdog;
use crate::kvm::{self, sys_reg, Cap, CoreReg, Mapping, RunState, Stop, Vcpu, Vm};
use crate::payload;
use crate::scenario::{
    Backing, CperObserved, Exit, GuestException, GuestObservation, Hex, HostSignal, Injection,
    InjectionKind, InjectionVia, KvmCap, MceKill, Method, Scenario, SignalCode, When,
};

/// ESR_EL1, FAR_EL1, VBAR_EL1, SCTLR_EL1, ID_AA64PFR0_EL1 (Arm ARM encodings op0, op1,
/// CRn, CRm, op2).
const ESR_EL1: u64 = sys_reg(3, 0, 5, 2, 0);
const FAR_EL1: u64 = sys_reg(3, 0, 6, 0, 0);
const VBAR_EL1: u64 = sys_reg(3, 0, 12, 0, 0);
const SCTLR_EL1: u64 = sys_reg(3, 0, 1, 0, 0);
const ID_AA64PFR0_EL1: u64 = sys_reg(3, 0, 0, 4, 0);
/// ID_AA64PFR0_EL1.RAS, bits \[31:28\].
const PFR0_RAS: u64 = 0xF << 28;
/// SPSR_EL1 is `spsr[KVM_SPSR_EL1]` of `struct kvm_regs`, after `user_pt_regs` (34 u64),
/// `sp_el1` and `elr_el1`: byte 288 (arch/arm64/include/uapi/asm/kvm.h).
const SPSR_EL1: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (288 / 4);
/// How long the VMM thread waits for a message before re-checking held vCPUs.
const TICK: Duration = Duration::from_millis(20);
/// How long an early-kill BUS_MCEERR_AO may take to reach the ring after the poison call
/// (it is queued to whichever thread the kernel picks, and handled when that thread runs).
const AO_GRACE: Duration = Duration::from_millis(300);

/// Builds and runs `s`; see the module docs of [`super`].
pub fn execute(s: &Scenario, opts: &Options) -> Result<crate::scenario::Outcome, ExecError> {
    let plan = plan::plan(s).map_err(|e| ExecError::Failed(e.to_string()))?;
    sigbus::install().map_err(|e| ExecError::Failed(format!("SIGBUS handler: {e}")))?;
    let policy = match s.vmm.mce_kill {
        MceKill::Early => sigbus::MceKill::Early,
        MceKill::Late => sigbus::MceKill::Late,
    };
    sigbus::set_mce_kill(policy).map_err(|e| ExecError::Failed(format!("PR_MCE_KILL: {e}")))?;
    // Whatever an earlier run in this process left behind is not this run's.
    drop(sigbus::take_events());

    let mut machine = Machine::build(s, &plan)?;
    let result = machine.run(s, &plan, opts);
    let pages = std::mem::take(&mut machine.poisoned);
    let outcome = result.and_then(|run| machine.outcome(s, run));
    drop(machine);
    // Best effort: the mappings are gone, give the frames back where the host allows it.
    let _ = fault::unpoison::unpoison(&pages);
    outcome
}

/// The VM and what the VMM knows about it.
struct Machine {
    /// Declared before `vm`: the registry must not outlive the mappings it vouches for.
    ranges: GuestRanges,
    slots: Vec<Memslot>,
    target_hva: usize,
    vm: Vm,
    vcpus: Vec<Vcpu>,
    poisoned: Vec<PoisonedPage>,
    _gic: kvm_ioctls::DeviceFd,
}

impl GuestMemory for Vm {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
        self.read_guest(gpa, buf).map_err(|e| e.to_string())
    }
    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), String> {
        self.write_guest(gpa, bytes).map_err(|e| e.to_string())
    }
}

fn failed(what: &str) -> impl Fn(kvm::Error) -> ExecError + '_ {
    move |e| ExecError::Failed(format!("{what}: {e}"))
}

fn kvm_backing(b: Backing) -> kvm::Backing {
    match b {
        Backing::Anon => kvm::Backing::Anonymous,
        Backing::Thp => kvm::Backing::Thp,
        Backing::Hugetlb2m => kvm::Backing::Hugetlb2M,
        Backing::Hugetlb1g => kvm::Backing::Hugetlb1G,
        Backing::Memfd => kvm::Backing::Memfd,
    }
}

fn kvm_cap(c: KvmCap) -> Cap {
    match c {
        KvmCap::VcpuEvents => Cap::VcpuEvents,
        KvmCap::ArmInjectSerrorEsr => Cap::ArmInjectSerrorEsr,
        KvmCap::ArmInjectExtDabt => Cap::ArmInjectExtDabt,
        KvmCap::ArmSeaToUser => Cap::ArmSeaToUser,
    }
}

impl Machine {
    fn build(s: &Scenario, plan: &Plan) -> Result<Self, ExecError> {
        if !std::path::Path::new("/dev/kvm").exists() {
            return Err(ExecError::Unsupported("no /dev/kvm".into()));
        }
        let mut vm = Vm::new().map_err(failed("create the VM"))?;
        let mask: Vec<Cap> = s.vmm.mask_caps.iter().map(|&c| kvm_cap(c)).collect();
        vm.set_caps(vm.caps().masked(&mask));

        let ram = Mapping::new(kvm::Backing::Anonymous, map::RAM_SIZE as usize)
            .map_err(failed("map RAM"))?;
        let target = Mapping::new(kvm_backing(s.guest.backing), plan.target_size as usize)
            .map_err(failed("map the target slot"))?;
        let slots = vec![
            Memslot {
                gpa: RAM_BASE,
                hva: ram.as_ptr() as u64,
                size: ram.len() as u64,
            },
            Memslot {
                gpa: TARGET_BASE,
                hva: target.as_ptr() as u64,
                size: target.len() as u64,
            },
        ];
        let target_hva = target.as_ptr() as usize;
        let mut ranges = GuestRanges::new();
        // SAFETY: the target slot is a mapping made above as guest RAM; `ranges` is dropped
        // before `vm`, which owns the mapping from the next line on (field order).
        unsafe { ranges.add(target_hva, target.len()) }
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        vm.add_memory(RAM_BASE, ram)
            .map_err(failed("RAM memslot"))?;
        vm.add_memory(TARGET_BASE, target)
            .map_err(failed("target memslot"))?;

        vm.write_guest(RAM_BASE, payload::IMAGE)
            .map_err(failed("load the payload"))?;
        for (name, gpa, bytes) in &plan.blobs {
            vm.write_guest(*gpa, bytes)
                .map_err(|e| ExecError::Failed(format!("write {name}: {e}")))?;
        }
        let mut vcpus = Vec::new();
        for (i, v) in plan.vcpus.iter().enumerate() {
            let mailbox = map::mailbox_base(i)
                .ok_or_else(|| ExecError::Failed(format!("no mailbox for vCPU {i}")))?;
            vm.write_guest(mailbox + mailbox_offset::PARAMS, v.params.as_bytes())
                .map_err(failed("write params"))?;
            let vcpu = vm.create_vcpu(i as u64).map_err(failed("create a vCPU"))?;
            vcpu.set_core(CoreReg::Pc, payload::ENTRY)
                .map_err(failed("set PC"))?;
            vcpu.set_core(CoreReg::X(0), mailbox)
                .map_err(failed("set x0"))?;
            if !s.guest.ras {
                let pfr0 = vcpu.get_reg(ID_AA64PFR0_EL1).map_err(failed("read PFR0"))?;
                vcpu.set_reg(ID_AA64PFR0_EL1, pfr0 & !PFR0_RAS)
                    .map_err(|e| {
                        ExecError::Unsupported(format!("KVM cannot hide FEAT_RAS: {e}"))
                    })?;
            }
            vcpus.push(vcpu);
        }
        let gic = vm
            .create_gic_v3(map::GIC_DIST_BASE, map::GIC_REDIST_BASE)
            .map_err(failed("GICv3"))?;
        Ok(Self {
            ranges,
            slots,
            target_hva,
            vm,
            vcpus,
            poisoned: Vec::new(),
            _gic: gic,
        })
    }

    /// Poisons the host page holding fault `index`'s target page, through the guarded
    /// poisoner (it refuses any address outside the registered target slot).
    fn poison(&mut self, s: &Scenario, index: usize) -> Result<(), ExecError> {
        let f = &s.faults[index];
        let method = match f.method {
            Method::MadviseHwpoison => fault::Method::MadviseHwpoison,
            Method::HardOffline => fault::Method::HardOffline,
            Method::SoftOffline => fault::Method::SoftOffline,
        };
        let poisoner = Poisoner::new(&self.ranges);
        let host_page = poisoner.page_size() as u64;
        let offset = (plan::target_gpa(f.page) - TARGET_BASE) / host_page * host_page;
        let hva = self.target_hva + offset as usize;
        match poisoner.poison(hva, method) {
            Ok(page) => {
                self.poisoned.push(page);
                Ok(())
            }
            Err(e @ (PoisonError::NeedsRoot { .. } | PoisonError::NoMemoryFailure { .. })) => {
                Err(ExecError::Unsupported(e.to_string()))
            }
            // Linux 6.1 answers MADV_HWPOISON on a 1 GiB hugetlb page with EBUSY (6.12 poisons
            // it): a limit of the host kernel, not of the scenario.
            Err(e @ PoisonError::Busy { .. }) if s.guest.backing == Backing::Hugetlb1g => {
                Err(ExecError::Unsupported(format!(
                    "the kernel cannot poison a 1 GiB hugetlb page: {e}"
                )))
            }
            Err(e) => Err(ExecError::Failed(format!("faults[{index}]: {e}"))),
        }
    }

    fn run(&mut self, s: &Scenario, plan: &Plan, opts: &Options) -> Result<Run, ExecError> {
        let mut ctl = Controller::new(s, plan);
        ctl.tids.insert(sigbus::gettid(), "vmm".to_owned());
        for i in 0..s.faults.len() {
            if s.faults[i].when == When::BeforeBoot {
                self.poison(s, i)?;
                ctl.faults[i].poisoned = true;
            }
        }
        ctl.collect(&self.slots);

        let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
        let vcpus = std::mem::take(&mut self.vcpus);
        std::thread::scope(|scope| {
            let mut commands = Vec::new();
            for (i, vcpu) in vcpus.into_iter().enumerate() {
                let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
                commands.push(cmd_tx);
                let tx = msg_tx.clone();
                let timeout = opts.vcpu_timeout;
                std::thread::Builder::new()
                    .name(format!("vcpu{i}"))
                    .spawn_scoped(scope, move || {
                        vcpu_thread(i as u8, vcpu, timeout, &tx, &cmd_rx)
                    })
                    .map_err(|e| ExecError::Failed(format!("spawn vCPU thread: {e}")))?;
            }
            drop(msg_tx);
            let deadline = Instant::now() + opts.vcpu_timeout + Duration::from_secs(10);
            let result = ctl.drive(self, s, &msg_rx, &commands, deadline);
            // Dropping the senders lets every waiting vCPU thread end.
            drop(commands);
            // Wait for every vCPU thread to end: the iterator stops when the last one drops
            // its sender.
            for _ in msg_rx.iter() {}
            result
        })?;
        Ok(ctl.into_run())
    }

    fn outcome(&self, s: &Scenario, run: Run) -> Result<crate::scenario::Outcome, ExecError> {
        let mut guest = Vec::new();
        for v in 0..s.guest.vcpus {
            let at = map::mailbox_base(usize::from(v)).unwrap_or(0) + mailbox_offset::REPORT;
            let mut bytes = vec![0u8; std::mem::size_of::<Report>()];
            self.vm
                .read_guest(at, &mut bytes)
                .map_err(failed("read a report"))?;
            let r = Report::from_bytes(&bytes)
                .ok_or_else(|| ExecError::Failed("short report".into()))?;
            guest.extend(observations(v, &r));
        }
        Ok(crate::scenario::Outcome {
            exit: run.exit,
            host_signals: run.host_signals,
            injection: run.injections,
            cper: run.cper,
            guest,
        })
    }
}

/// What a vCPU's report says, one entry per exception (or one `none` entry).
fn observations(vcpu: u8, r: &Report) -> Vec<GuestObservation> {
    let seen = r.acpi.found & acpi_found::RECORD != 0;
    let acked = r.acpi.found & acpi_found::ACKED != 0;
    let kept = (r.exception_count as usize).min(r.records.len());
    let mut out: Vec<GuestObservation> = r.records[..kept]
        .iter()
        .map(|e| GuestObservation {
            vcpu,
            exception: GuestException::from_esr(e.esr),
            vector_offset: Some(Hex(e.vector_offset)),
            esr: Some(Hex(e.esr)),
            far: Some(Hex(e.far)),
            elr: Some(Hex(e.elr)),
            elr_at: usize::try_from(e.step)
                .ok()
                .and_then(|step| r.steps.get(step))
                .and_then(|at| crate::scenario::code_address_name(e.elr, at)),
            isr: Some(Hex(e.isr)),
            disr: Some(Hex(e.disr)),
            cper_seen: seen,
            acked,
        })
        .collect();
    if out.is_empty() {
        out.push(GuestObservation {
            vcpu,
            exception: GuestException::None,
            vector_offset: None,
            esr: None,
            far: None,
            elr: None,
            elr_at: None,
            isr: (r.serror.ran != 0).then_some(Hex(r.serror.isr_masked)),
            disr: (r.serror.esb_executed != 0).then_some(Hex(r.serror.disr)),
            cper_seen: seen,
            acked,
        });
    }
    out
}

/// vCPU thread -> VMM thread.
enum Msg {
    Started {
        vcpu: u8,
        tid: i32,
        /// Its pthread_t, as an integer (a pointer on musl, which is not Send).
        thread: usize,
    },
    /// Stopped and waiting for a [`Command`].
    Stopped { vcpu: u8, why: Why, cpu: CpuState },
    /// An injection was done; waiting for a [`Command`].
    Injected(Injection),
    /// The thread ends.
    Exited { vcpu: u8, how: Ended },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// The guest rang ReadyForFault for this step (the MMIO is already completed).
    Ready(u16),
    /// KVM_RUN returned EINTR: a SIGBUS, or a stray signal.
    Interrupted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    SystemOff,
    Halted,
    Timeout,
    Error(String),
}

/// VMM thread -> vCPU thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Resume,
    Halt,
    Inject(Inject),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inject {
    Emulated(EntryKind),
    ExtDabt,
    Serror(Option<u64>),
}

fn read_cpu(vcpu: &Vcpu) -> kvm::Result<CpuState> {
    Ok(CpuState {
        pc: vcpu.get_core(CoreReg::Pc)?,
        pstate: vcpu.get_core(CoreReg::Pstate)?,
        vbar: vcpu.get_reg(VBAR_EL1)?,
        sctlr: vcpu.get_reg(SCTLR_EL1)?,
    })
}

fn vcpu_thread(
    id: u8,
    mut vcpu: Vcpu,
    timeout: Duration,
    tx: &Sender<Msg>,
    rx: &Receiver<Command>,
) {
    let _ = tx.send(Msg::Started {
        vcpu: id,
        tid: sigbus::gettid(),
        // SAFETY: pthread_self has no preconditions.
        thread: unsafe { libc::pthread_self() } as usize,
    });
    let how = vcpu_loop(id, &mut vcpu, timeout, tx, rx).unwrap_or_else(Ended::Error);
    let _ = tx.send(Msg::Exited { vcpu: id, how });
}

fn vcpu_loop(
    id: u8,
    vcpu: &mut Vcpu,
    timeout: Duration,
    tx: &Sender<Msg>,
    rx: &Receiver<Command>,
) -> Result<Ended, String> {
    let watchdog = Watchdog::start(vcpu, timeout).map_err(|e| e.to_string())?;
    let mut state = RunState::default();
    loop {
        let why = match vcpu.run_until_stop(&mut state).map_err(|e| e.to_string())? {
            Stop::ReadyForFault { step } => {
                // Retire the doorbell store now, so that an injection written while the
                // vCPU waits does not lose its first instruction (RAS-FACTS.md §2).
                vcpu.complete_mmio().map_err(|e| e.to_string())?;
                Why::Ready(step)
            }
            Stop::Interrupted => Why::Interrupted,
            Stop::SystemOff => return Ok(Ended::SystemOff),
            Stop::Kicked => return Ok(Ended::Timeout),
            other => return Err(format!("vCPU {id}: unexpected stop {other:?}")),
        };
        let cpu = read_cpu(vcpu).map_err(|e| e.to_string())?;
        tx.send(Msg::Stopped { vcpu: id, why, cpu })
            .map_err(|_| "the VMM thread is gone".to_owned())?;
        loop {
            match rx.recv() {
                Ok(Command::Resume) => break,
                Ok(Command::Halt) | Err(_) => return Ok(Ended::Halted),
                Ok(Command::Inject(what)) => {
                    let done = inject(id, vcpu, what, cpu).map_err(|e| e.to_string())?;
                    tx.send(Msg::Injected(done))
                        .map_err(|_| "the VMM thread is gone".to_owned())?;
                }
            }
        }
        if watchdog.fired() {
            return Ok(Ended::Timeout);
        }
    }
}

fn inject(id: u8, vcpu: &Vcpu, what: Inject, cpu: CpuState) -> Result<Injection, String> {
    match what {
        Inject::Emulated(kind) => {
            let regs = entry::enter(kind, cpu).map_err(|e| e.to_string())?;
            let set = |reg, value| vcpu.set_reg(reg, value).map_err(|e| e.to_string());
            set(ESR_EL1, regs.esr)?;
            set(FAR_EL1, regs.far)?;
            set(SPSR_EL1, regs.spsr)?;
            let core = |reg, value| vcpu.set_core(reg, value).map_err(|e| e.to_string());
            core(CoreReg::ElrEl1, regs.elr)?;
            core(CoreReg::Pstate, regs.pstate)?;
            core(CoreReg::Pc, regs.pc)?;
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
        Inject::ExtDabt => {
            vcpu.inject_ext_dabt().map_err(|e| e.to_string())?;
            Ok(Injection {
                vcpu: id,
                kind: InjectionKind::Sea,
                via: InjectionVia::KvmExtDabt,
                esr: None,
            })
        }
        Inject::Serror(iss) => {
            vcpu.inject_serror(iss).map_err(|e| e.to_string())?;
            // ESR_EL1 as the guest should see it: EC 0x2F, IL 1, the ISS (Arm ARM D24.2.40).
            let esr =
                iss.map(|iss| Hex(crate::formats::esr::Esr::new(0x2F, true, iss as u32).raw()));
            Ok(Injection {
                vcpu: id,
                kind: InjectionKind::Serror,
                via: InjectionVia::KvmSerror,
                esr,
            })
        }
    }
}

/// One fault's progress.
#[derive(Clone, Copy, Debug, Default)]
struct FaultState {
    poisoned: bool,
    notified: bool,
}

/// What a held vCPU waits for before it gets its command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// Nothing: released at the next check.
    Now,
    /// Fault n has been notified to the guest.
    Notified(usize),
    /// Fault n has been notified and the guest acknowledged its record.
    Acked(usize),
}

/// What a held vCPU does once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Poison fault n, then resume (or notify an AO); the vCPU's state at its doorbell.
    Poison(usize, CpuState),
    Send(Command),
}

/// Everything observed, as the outcome reports it.
struct Run {
    exit: Exit,
    host_signals: Vec<HostSignal>,
    injections: Vec<Injection>,
    cper: Vec<CperObserved>,
}

struct Controller {
    faults: Vec<FaultState>,
    /// Step -> fault index, per vCPU.
    steps: Vec<Vec<Option<usize>>>,
    tids: HashMap<i32, String>,
    vcpu_tid: HashMap<u8, i32>,
    held: Vec<(u8, Until, Then)>,
    /// pthread_t of each vCPU thread, to interrupt its KVM_RUN.
    threads: HashMap<u8, usize>,
    /// A vCPU called PSCI SYSTEM_OFF: the VM is off.
    vm_off: bool,
    /// The GHESv2 source notified by SEA (ACPI).
    ghes: Option<crate::formats::acpi::GhesSource>,
    timed_out: bool,
    /// The fault each vCPU is in the middle of (from its last ReadyForFault).
    current: HashMap<u8, usize>,
    pending: Vec<SigbusEvent>,
    exited: HashMap<u8, Ended>,
    host_signals: Vec<HostSignal>,
    injections: Vec<Injection>,
    cper: Vec<CperObserved>,
    stopped: Option<String>,
}

impl Controller {
    fn new(s: &Scenario, plan: &Plan) -> Self {
        Self {
            faults: vec![FaultState::default(); s.faults.len()],
            steps: plan.vcpus.iter().map(|v| v.step_faults.clone()).collect(),
            tids: HashMap::new(),
            vcpu_tid: HashMap::new(),
            held: Vec::new(),
            threads: HashMap::new(),
            vm_off: false,
            ghes: plan.ghes,
            timed_out: false,
            current: HashMap::new(),
            pending: Vec::new(),
            exited: HashMap::new(),
            host_signals: Vec::new(),
            injections: Vec::new(),
            cper: Vec::new(),
            stopped: None,
        }
    }

    fn into_run(self) -> Run {
        let exit = if self.stopped.is_some() {
            Exit::VmStopped
        } else if self.timed_out || self.exited.values().any(|e| *e == Ended::Timeout) {
            Exit::Timeout
        } else {
            Exit::Completed
        };
        Run {
            exit,
            host_signals: self.host_signals,
            injections: self.injections,
            cper: self.cper,
        }
    }

    /// Moves the SIGBUS ring into `host_signals`, keeping AR/AO events for decisions.
    fn collect(&mut self, slots: &[Memslot]) {
        for ev in sigbus::take_events() {
            let gpa = translate(slots, ev.si_addr, ev.si_addr_lsb)
                .ok()
                .and_then(|t| t.first().map(|t| Hex(t.gpa)));
            let thread = self
                .tids
                .get(&ev.tid)
                .cloned()
                .unwrap_or_else(|| "other".to_owned());
            self.host_signals.push(HostSignal {
                code: ev.si_code,
                lsb: u8::try_from(ev.si_addr_lsb).unwrap_or(0),
                gpa,
                thread,
            });
            if ev.si_code == BUS_MCEERR_AR || ev.si_code == BUS_MCEERR_AO {
                self.pending.push(ev);
            }
        }
    }

    fn drive(
        &mut self,
        m: &mut Machine,
        s: &Scenario,
        rx: &Receiver<Msg>,
        commands: &[Sender<Command>],
        deadline: Instant,
    ) -> Result<(), ExecError> {
        let send = |v: u8, c: Command| {
            let _ = commands[usize::from(v)].send(c);
        };
        while self.exited.len() < commands.len() {
            let msg = match rx.recv_timeout(TICK) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                None => {}
                Some(Msg::Started { vcpu, tid, thread }) => {
                    self.tids.insert(tid, format!("vcpu{vcpu}"));
                    self.vcpu_tid.insert(vcpu, tid);
                    self.threads.insert(vcpu, thread);
                }
                Some(Msg::Exited { vcpu, how }) => {
                    if let Ended::Error(e) = &how {
                        return Err(ExecError::Failed(e.clone()));
                    }
                    self.vm_off |= how == Ended::SystemOff;
                    self.exited.insert(vcpu, how);
                }
                Some(Msg::Injected(inj)) => {
                    let v = inj.vcpu;
                    self.injections.push(inj);
                    if let Some(&i) = self.current.get(&v) {
                        self.faults[i].notified = true;
                    }
                    let hold = self.hold_after_notify(s, v);
                    match hold {
                        Some(until) => self.held.push((v, until, Then::Send(Command::Resume))),
                        None => send(v, Command::Resume),
                    }
                }
                Some(Msg::Stopped { vcpu, why, cpu }) => {
                    if self.stopped.is_some() || self.vm_off {
                        send(vcpu, Command::Halt);
                        continue;
                    }
                    match why {
                        Why::Ready(step) => {
                            let fault = self
                                .steps
                                .get(usize::from(vcpu))
                                .and_then(|st| st.get(usize::from(step)).copied())
                                .flatten();
                            match fault {
                                Some(i) if !self.faults[i].poisoned => {
                                    self.current.insert(vcpu, i);
                                    let until = match s.faults[i].when {
                                        When::BeforeAck => Until::Notified(i - 1),
                                        When::AfterAck => Until::Acked(i - 1),
                                        When::AtReady | When::BeforeBoot => Until::Now,
                                    };
                                    self.held.push((vcpu, until, Then::Poison(i, cpu)));
                                }
                                Some(i) => {
                                    self.current.insert(vcpu, i);
                                    send(vcpu, Command::Resume);
                                }
                                None => send(vcpu, Command::Resume),
                            }
                        }
                        Why::Interrupted => {
                            self.collect(&m.slots);
                            let cmd = self.on_interrupt(m, s, vcpu, cpu)?;
                            send(vcpu, cmd);
                        }
                    }
                }
            }
            self.release(m, s, &send)?;
            if self.vm_off {
                self.kick_the_rest();
            }
            if Instant::now() > deadline {
                for v in 0..commands.len() as u8 {
                    send(v, Command::Halt);
                }
                self.held.clear();
                self.timed_out = true;
                break;
            }
        }
        Ok(())
    }

    /// After SYSTEM_OFF the payload's other vCPUs have ended with PSCI CPU_OFF, which does
    /// not exit: their threads sleep in KVM_RUN. SIGRTMIN (the watchdog's empty handler)
    /// makes KVM_RUN return EINTR; the vCPU then reports and is told to halt. Repeated each
    /// tick, in case a signal lands between two KVM_RUNs.
    fn kick_the_rest(&self) {
        for (v, &thread) in &self.threads {
            if !self.exited.contains_key(v) {
                // SAFETY: the thread is a scoped vCPU thread that is joined only after this
                // controller returns, so its pthread_t is valid; SIGRTMIN has a handler
                // (installed by Watchdog::start before the thread's first KVM_RUN).
                unsafe { libc::pthread_kill(thread as libc::pthread_t, libc::SIGRTMIN()) };
            }
        }
    }

    /// After vCPU `v` was notified: hold it while a later fault must arrive before the
    /// guest can acknowledge ("before-ack"), so the order is the scenario's, not the
    /// scheduler's.
    /// The vCPU notified of the later fault then waits until the guest acknowledged the
    /// first record, so which of them reads the status block first is fixed too.
    /// (It cannot wait for the first vCPU to end: vCPU 0 powers off only after the others.)
    /// A guest that never acknowledges leaves the record in place whoever reads first.
    fn hold_after_notify(&self, s: &Scenario, v: u8) -> Option<Until> {
        let i = *self.current.get(&v)?;
        if let Some(next) = s.faults.get(i + 1) {
            if next.when == When::BeforeAck && next.vcpu != v && !self.faults[i + 1].notified {
                return Some(Until::Notified(i + 1));
            }
        }
        let prev = i.checked_sub(1)?;
        (s.faults[i].when == When::BeforeAck && s.faults[prev].vcpu != v && s.guest.ack)
            .then_some(Until::Acked(prev))
    }

    fn satisfied(&self, m: &Machine, until: Until) -> bool {
        match until {
            Until::Now => true,
            Until::Notified(i) => self.faults.get(i).is_some_and(|f| f.notified),
            Until::Acked(i) => {
                self.faults.get(i).is_some_and(|f| f.notified)
                    && self
                        .ghes
                        .is_some_and(|g| ghes::acked(&m.vm, &g).unwrap_or(false))
            }
        }
    }

    fn release(
        &mut self,
        m: &mut Machine,
        s: &Scenario,
        send: &impl Fn(u8, Command),
    ) -> Result<(), ExecError> {
        loop {
            let Some(at) = self
                .held
                .iter()
                .position(|&(_, until, _)| self.satisfied(m, until))
            else {
                return Ok(());
            };
            let (v, _, then) = self.held.remove(at);
            match then {
                Then::Send(c) => send(v, c),
                Then::Poison(i, cpu) => {
                    m.poison(s, i)?;
                    self.faults[i].poisoned = true;
                    let cmd = self.after_poison(m, s, i, cpu)?;
                    send(v, cmd);
                }
            }
        }
    }

    /// Right after poisoning fault `i` for its vCPU (waiting at its ReadyForFault): an
    /// early-kill AO may have arrived; with `on_ao: notify` the VMM acts on it now.
    fn after_poison(
        &mut self,
        m: &Machine,
        s: &Scenario,
        i: usize,
        cpu: CpuState,
    ) -> Result<Command, ExecError> {
        let until = Instant::now()
            + if s.vmm.mce_kill == MceKill::Early {
                AO_GRACE
            } else {
                Duration::ZERO
            };
        loop {
            self.collect(&m.slots);
            if let Some(at) = self.pending.iter().position(|e| e.si_code == BUS_MCEERR_AO) {
                let ev = self.pending.remove(at);
                return self.notify(m, s, Some(i), SignalCode::Ao, &ev, cpu);
            }
            if Instant::now() >= until {
                return Ok(Command::Resume);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn on_interrupt(
        &mut self,
        m: &Machine,
        s: &Scenario,
        v: u8,
        cpu: CpuState,
    ) -> Result<Command, ExecError> {
        let tid = self.vcpu_tid.get(&v).copied();
        let Some(at) = self
            .pending
            .iter()
            .position(|e| e.si_code == BUS_MCEERR_AR && Some(e.tid) == tid)
        else {
            // A stray EINTR (a signal that was not this vCPU's SIGBUS): run on.
            return Ok(Command::Resume);
        };
        let ev = self.pending.remove(at);
        let fault = self.current.get(&v).copied();
        self.notify(m, s, fault, SignalCode::Ar, &ev, cpu)
    }

    /// Decides on one memory error and carries out the record part; returns
    /// the command for the vCPU.
    fn notify(
        &mut self,
        m: &Machine,
        s: &Scenario,
        fault: Option<usize>,
        code: SignalCode,
        ev: &SigbusEvent,
        cpu: CpuState,
    ) -> Result<Command, ExecError> {
        let t = translate(&m.slots, ev.si_addr, ev.si_addr_lsb)
            .map_err(|e| ExecError::Failed(format!("SIGBUS outside guest memory: {e}")))?;
        let t = t[0];
        let ghes = self.ghes;
        let acked = match &ghes {
            Some(g) => ghes::acked(&m.vm, g).map_err(ExecError::Failed)?,
            None => true,
        };
        let info = FaultInfo {
            code,
            gpa: t.gpa,
            gpa_start: t.range.start,
            gpa_len: t.range.len,
            pc: cpu.pc,
            acked,
        };
        let Decision { record, delivery } = policy::decide(s.firmware, m.vm.caps(), &s.vmm, &info);
        if let (RecordAction::Write { gpa }, Some(g)) = (record, ghes) {
            let lsb = u32::try_from(ev.si_addr_lsb).unwrap_or(12);
            let bytes = memory_error_record_with_granule(
                gpa,
                lsb,
                Severity::Recoverable,
                s.vmm.cper_profile.into(),
            )
            .encode();
            let back = ghes::write_record(&m.vm, &g, &bytes).map_err(ExecError::Failed)?;
            self.cper.push(CperObserved::from_bytes(&back));
        }
        let cmd = match delivery {
            Delivery::Nothing => return Ok(Command::Resume),
            Delivery::Stop(reason) => {
                self.stopped = Some(reason);
                Command::Halt
            }
            Delivery::Sea { kind, via } => Command::Inject(match (kind, via) {
                (InjectionKind::Iabt, _) => Inject::Emulated(EntryKind::InstructionAbort),
                (_, InjectionVia::KvmExtDabt) => Inject::ExtDabt,
                _ => Inject::Emulated(EntryKind::DataAbort),
            }),
            Delivery::Serror { iss } => Command::Inject(Inject::Serror(iss)),
        };
        // An injection counts as notified once the vCPU reports it done (Msg::Injected), so
        // that a vCPU held for it runs only after it, and the order of injections is fixed.
        if let (Some(i), Command::Halt) = (fault, cmd) {
            self.faults[i].notified = true;
        }
        Ok(cmd)
    }
}
