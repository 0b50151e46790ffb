//! The machine: one VM, one thread per vCPU, and the VMM thread that poisons. A memory
//! error is handled where it lands: the vCPU thread whose KVM_RUN the SIGBUS interrupted
//! takes it, decides, writes the CPER record and injects ([`ErrorHandler`]), and runs on,
//! with no hand-over to another thread (a hand-over and back costs about two null MMIO
//! exits, docs/benchmarks.md). The threads share one [`Controller`] under a mutex: the
//! SIGBUS ring, the fault states and what the outcome reports.
//!
//! ```text
//! vCPU thread                               VMM thread (execute)
//! run_until_stop -> ReadyForFault --------> poison now, or hold until the previous fault
//!   (complete_mmio first), wait for            is notified / acknowledged; answer
//!   Resume / Halt / Notify(AO)                 Resume, or Notify an early-kill AO
//! run_until_stop -> EINTR (SIGBUS)
//!   lock: drain the ring, take this
//!   thread's AR, on_memory_error, record;
//!   hold (condvar) while a scenario's
//!   before-ack order asks for it; run on
//! ```

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ras_guest_abi::map::{self, mailbox_offset, RAM_BASE, TARGET_BASE};
use ras_guest_abi::Report;

use super::ghes::{self, GuestMemory};
use super::handler::ErrorHandler;
use super::log::{Injection, VmmLog};
use super::plan::{self, Plan};
use super::{ExecError, Options};
use crate::fault::sigbus::{self, SigbusEvent};
use crate::fault::translate::{translate, Memslot};
use crate::fault::{self, mce_kill, GuestRanges, PoisonError, PoisonedPage, Poisoner, SigbusCode};
use crate::kvm::Watchdog;
use crate::kvm::{self, sys_reg, Cap, CoreReg, Mapping, RunState, Stop, Vcpu, Vm};
use crate::payload;
use crate::scenario::{
    Backing, GuestReport, Hex, HexBytes, HostSignal, KvmCap, MceKill, Method, Outcome, Scenario,
    VmmEnd, When,
};

/// ID_AA64PFR0_EL1 (Arm ARM encoding op0, op1, CRn, CRm, op2).
const ID_AA64PFR0_EL1: u64 = sys_reg(3, 0, 0, 4, 0);
/// ID_AA64PFR0_EL1.RAS, bits \[31:28\].
const PFR0_RAS: u64 = 0xF << 28;
/// How long the VMM thread waits for a message, and a held vCPU for a change, before
/// re-checking (an acknowledgement is a guest memory write: nothing signals it).
const TICK: Duration = Duration::from_millis(20);
/// How long an early-kill BUS_MCEERR_AO may take to reach the ring after the poison call
/// (it is queued to whichever thread the kernel picks, and handled when that thread runs).
const AO_GRACE: Duration = Duration::from_millis(300);

/// Builds and runs `s`; see the module docs of [`super`].
pub fn execute(s: &Scenario, opts: &Options) -> Result<(Outcome, VmmLog), ExecError> {
    let plan = plan::plan(s).map_err(|e| ExecError::Failed(e.to_string()))?;
    sigbus::install().map_err(|e| ExecError::Failed(format!("SIGBUS handler: {e}")))?;
    let policy = match s.vmm.mce_kill {
        MceKill::Early => mce_kill::MceKill::Early,
        MceKill::Late => mce_kill::MceKill::Late,
    };
    mce_kill::set_mce_kill(policy).map_err(|e| ExecError::Failed(format!("PR_MCE_KILL: {e}")))?;
    // Whatever an earlier run in this process left behind is not this run's.
    drop(sigbus::take_events());

    let pools = fault::hugetlb_pool::snapshot();
    let mut machine = Machine::build(s, &plan)?;
    let result = machine.run(s, &plan, opts);
    let pages = std::mem::take(
        machine
            .poisoned
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let outcome = result.and_then(|run| machine.outcome(s, run));
    drop(machine);
    // Best effort: the mappings are gone, give the frames back where the host allows it,
    // then the huge pages that poisoning dissolved.
    let _ = fault::unpoison::unpoison(&pages);
    for short in pools.restore() {
        eprintln!("hugetlb pool not restored: {short}");
    }
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
    /// Every page poisoned, for giving back at the end (the VMM thread poisons).
    poisoned: Mutex<Vec<PoisonedPage>>,
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
            poisoned: Mutex::new(Vec::new()),
            _gic: gic,
        })
    }

    /// Poisons the host page holding fault `index`'s target page, through the guarded
    /// poisoner (it refuses any address outside the registered target slot).
    fn poison(&self, s: &Scenario, index: usize) -> Result<(), ExecError> {
        let f = &s.faults[index];
        let method = match f.method {
            Method::MadviseHwpoison => fault::Method::MadviseHwpoison,
            Method::HardOffline => fault::Method::HardOffline,
            Method::SoftOffline => fault::Method::SoftOffline,
        };
        let poisoner = Poisoner::new(&self.ranges);
        let host_page = poisoner.page_size() as u64;
        let offset = (f.gpa() - TARGET_BASE) / host_page * host_page;
        let hva = self.target_hva + offset as usize;
        match poisoner.poison(hva, method) {
            Ok(page) => {
                lock(&self.poisoned).push(page);
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
        ctl.collect();
        let handler = ErrorHandler::new(
            s.firmware,
            self.vm.caps(),
            &s.vmm,
            self.slots.clone(),
            plan.ghes,
        )?;

        let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
        let vcpus = std::mem::take(&mut self.vcpus);
        let shared = Shared {
            m: self,
            s,
            handler,
            ctl: Mutex::new(ctl),
            changed: Condvar::new(),
        };
        std::thread::scope(|scope| {
            let mut commands = Vec::new();
            for (i, vcpu) in vcpus.into_iter().enumerate() {
                let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
                commands.push(cmd_tx);
                let tx = msg_tx.clone();
                let timeout = opts.vcpu_timeout;
                let sh = &shared;
                std::thread::Builder::new()
                    .name(format!("vcpu{i}"))
                    .spawn_scoped(scope, move || {
                        vcpu_thread(sh, i as u8, vcpu, timeout, &tx, &cmd_rx)
                    })
                    .map_err(|e| ExecError::Failed(format!("spawn vCPU thread: {e}")))?;
            }
            drop(msg_tx);
            let deadline = Instant::now() + opts.vcpu_timeout + Duration::from_secs(10);
            let result = shared.drive(&msg_rx, &commands, deadline);
            // Whatever happened, held vCPUs halt now, and dropping the senders lets every
            // vCPU waiting for a command end.
            lock(&shared.ctl).halt = true;
            shared.changed.notify_all();
            drop(commands);
            // Wait for every vCPU thread to end: the iterator stops when the last one drops
            // its sender.
            for _ in msg_rx.iter() {}
            result
        })?;
        let ctl = shared
            .ctl
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(ctl.into_run(&self.slots))
    }

    /// The outcome as for any VMM: each vCPU's report read back from guest memory, the
    /// host's signals and how the run ended; the VMM's own log beside it.
    fn outcome(&self, s: &Scenario, run: Run) -> Result<(Outcome, VmmLog), ExecError> {
        let mut guest = Vec::new();
        for v in 0..s.guest.vcpus {
            let at = map::mailbox_base(usize::from(v)).unwrap_or(0) + mailbox_offset::REPORT;
            let mut bytes = vec![0u8; std::mem::size_of::<Report>()];
            self.vm
                .read_guest(at, &mut bytes)
                .map_err(failed("read a report"))?;
            let r = Report::from_bytes(&bytes)
                .ok_or_else(|| ExecError::Failed("short report".into()))?;
            guest.push(GuestReport::from_report(v, &r));
        }
        let outcome = Outcome {
            vmm_end: run.end,
            host_signals: run.host_signals,
            guest,
        };
        Ok((outcome, run.log))
    }
}

/// vCPU thread -> VMM thread.
enum Msg {
    /// The guest rang ReadyForFault for this step (the MMIO is already completed); the
    /// vCPU waits for a [`Command`].
    Ready { vcpu: u8, step: u16 },
    /// A fault was notified while the VMM thread holds a vCPU: check the holds now.
    Notified,
    /// The thread ends.
    Exited { vcpu: u8, how: Ended },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    SystemOff,
    Halted,
    Timeout,
    Error(String),
}

/// VMM thread -> a vCPU thread waiting at its doorbell.
#[derive(Clone, Copy, Debug)]
enum Command {
    Resume,
    Halt,
    /// Act on this early-kill BUS_MCEERR_AO (`on_ao: notify`).
    Notify(SigbusEvent),
}

/// What a vCPU thread does after handling a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Run,
    Halt,
}

/// Locks `m`; a thread that panicked holding it leaves data still worth reporting.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn vcpu_thread(
    sh: &Shared<'_>,
    id: u8,
    mut vcpu: Vcpu,
    timeout: Duration,
    tx: &Sender<Msg>,
    rx: &Receiver<Command>,
) {
    let how = vcpu_loop(sh, id, &mut vcpu, timeout, tx, rx).unwrap_or_else(Ended::Error);
    // Unregister while still alive, under the lock kick_the_rest holds: a scoped thread
    // whose handle was dropped is detached, and musl unmaps a detached thread's pthread_t
    // with its stack when it ends, so a pthread_kill after that faults in the VMM
    // thread (the 4-vCPU SIGSEGV, scenarios/README.md). `exited` is no guard: the VMM
    // thread records it only when it reads this thread's Exited message.
    lock(&sh.ctl).threads.remove(&id);
    let _ = tx.send(Msg::Exited { vcpu: id, how });
}

fn vcpu_loop(
    sh: &Shared<'_>,
    id: u8,
    vcpu: &mut Vcpu,
    timeout: Duration,
    tx: &Sender<Msg>,
    rx: &Receiver<Command>,
) -> Result<Ended, String> {
    // Known before the first fault, so the SIGBUS path makes no gettid call.
    let tid = sigbus::gettid();
    {
        let mut ctl = lock(&sh.ctl);
        ctl.tids.insert(tid, format!("vcpu{id}"));
        // SAFETY: pthread_self has no preconditions.
        ctl.threads
            .insert(id, unsafe { libc::pthread_self() } as usize);
    }
    let watchdog = Watchdog::start(vcpu, timeout).map_err(|e| e.to_string())?;
    let mut state = RunState::default();
    loop {
        let next = match vcpu.run_until_stop(&mut state).map_err(|e| e.to_string())? {
            Stop::ReadyForFault { step } => {
                // Retire the doorbell store now, so that an injection written while the
                // vCPU waits does not lose its first instruction (RAS-FACTS.md §2).
                vcpu.complete_mmio().map_err(|e| e.to_string())?;
                tx.send(Msg::Ready { vcpu: id, step })
                    .map_err(|_| "the VMM thread is gone".to_owned())?;
                match rx.recv() {
                    Ok(Command::Resume) => Next::Run,
                    Ok(Command::Halt) | Err(_) => Next::Halt,
                    Ok(Command::Notify(ev)) => {
                        let ctl = lock(&sh.ctl);
                        sh.on_memory_error(ctl, id, vcpu, &ev, tx)
                            .map_err(|e| e.to_string())?
                    }
                }
            }
            Stop::Interrupted => sh
                .on_interrupt(id, tid, vcpu, tx)
                .map_err(|e| e.to_string())?,
            Stop::SystemOff => return Ok(Ended::SystemOff),
            Stop::Kicked => return Ok(Ended::Timeout),
            other => return Err(format!("vCPU {id}: unexpected stop {other:?}")),
        };
        if next == Next::Halt {
            return Ok(Ended::Halted);
        }
        if watchdog.fired() {
            return Ok(Ended::Timeout);
        }
    }
}

/// One fault's progress.
#[derive(Clone, Copy, Debug, Default)]
struct FaultState {
    poisoned: bool,
    notified: bool,
}

/// What a held vCPU waits for before it goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// Nothing: released at the next check.
    Now,
    /// Fault n has been notified to the guest.
    Notified(usize),
    /// Fault n has been notified and the guest acknowledged its record.
    Acked(usize),
}

/// How the run ended, the host's signals, and the VMM's own log.
struct Run {
    end: VmmEnd,
    host_signals: Vec<HostSignal>,
    log: VmmLog,
}

/// What the VMM thread and the vCPU threads share, under [`Shared::ctl`].
struct Controller {
    faults: Vec<FaultState>,
    /// Step -> fault index, per vCPU.
    steps: Vec<Vec<Option<usize>>>,
    tids: HashMap<i32, String>,
    /// vCPUs the VMM thread holds at their doorbell: poison fault n once `Until` holds.
    held: Vec<(u8, Until, usize)>,
    /// vCPU threads waiting on [`Shared::changed`].
    waiting: usize,
    /// pthread_t of each live vCPU thread, to interrupt its KVM_RUN (removed by the
    /// thread itself before it ends).
    threads: HashMap<u8, usize>,
    /// A vCPU called PSCI SYSTEM_OFF: the VM is off.
    vm_off: bool,
    /// The VMM thread stopped driving: held vCPUs halt.
    halt: bool,
    timed_out: bool,
    /// The fault each vCPU is in the middle of (from its last ReadyForFault).
    current: HashMap<u8, usize>,
    /// Every SIGBUS taken from the ring, in order (the outcome's `host_signals`).
    signals: Vec<SigbusEvent>,
    /// AR/AO events not yet acted on.
    pending: Vec<SigbusEvent>,
    exited: HashMap<u8, Ended>,
    injections: Vec<Injection>,
    records: Vec<Vec<u8>>,
    stopped: Option<String>,
}

impl Controller {
    fn new(s: &Scenario, plan: &Plan) -> Self {
        Self {
            faults: vec![FaultState::default(); s.faults.len()],
            steps: plan.vcpus.iter().map(|v| v.step_faults.clone()).collect(),
            tids: HashMap::new(),
            held: Vec::new(),
            waiting: 0,
            threads: HashMap::new(),
            vm_off: false,
            halt: false,
            timed_out: false,
            current: HashMap::new(),
            signals: Vec::new(),
            pending: Vec::new(),
            exited: HashMap::new(),
            injections: Vec::new(),
            records: Vec::new(),
            stopped: None,
        }
    }

    fn into_run(self, slots: &[Memslot]) -> Run {
        let end = if let Some(message) = self.stopped {
            VmmEnd::Stopped { message }
        } else if self.timed_out || self.exited.values().any(|e| *e == Ended::Timeout) {
            VmmEnd::TimedOut
        } else {
            VmmEnd::Completed
        };
        let host_signals = self
            .signals
            .iter()
            .map(|ev| HostSignal {
                code: ev.si_code,
                lsb: u8::try_from(ev.si_addr_lsb).unwrap_or(0),
                gpa: translate(slots, ev.si_addr, ev.si_addr_lsb)
                    .ok()
                    .and_then(|t| t.first().map(|t| Hex(t.gpa))),
                thread: self
                    .tids
                    .get(&ev.tid)
                    .cloned()
                    .unwrap_or_else(|| "other".to_owned()),
            })
            .collect();
        Run {
            end,
            host_signals,
            log: VmmLog {
                injections: self.injections,
                records: self.records.into_iter().map(HexBytes).collect(),
            },
        }
    }

    /// Moves the SIGBUS ring into `signals`, keeping AR/AO events for decisions. Only
    /// copies: what the outcome reports of them is worked out at the end.
    fn collect(&mut self) {
        for ev in sigbus::take_events() {
            self.signals.push(ev);
            if ev.si_code == SigbusCode::MceerrAr || ev.si_code == SigbusCode::MceerrAo {
                self.pending.push(ev);
            }
        }
    }

    /// After SYSTEM_OFF the payload's other vCPUs have ended with PSCI CPU_OFF, which does
    /// not exit: their threads sleep in KVM_RUN. SIGRTMIN (the watchdog's empty handler)
    /// makes KVM_RUN return EINTR; the vCPU then sees the VM off and halts. Repeated each
    /// tick, in case a signal lands between two KVM_RUNs.
    fn kick_the_rest(&self) {
        for (v, &thread) in &self.threads {
            if !self.exited.contains_key(v) {
                // SAFETY: a vCPU thread removes itself from `threads` under the lock held
                // here before it ends, so the pthread_t is of a live thread; SIGRTMIN has a
                // handler (installed by Watchdog::start before the thread's first KVM_RUN).
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

    fn satisfied(&self, sh: &Shared<'_>, until: Until) -> bool {
        match until {
            Until::Now => true,
            Until::Notified(i) => self.faults.get(i).is_some_and(|f| f.notified),
            Until::Acked(i) => {
                self.faults.get(i).is_some_and(|f| f.notified)
                    && sh
                        .handler
                        .ghes()
                        .is_some_and(|g| ghes::acked(&sh.m.vm, g).unwrap_or(false))
            }
        }
    }
}

/// The machine during a run, as every thread sees it.
struct Shared<'a> {
    m: &'a Machine,
    s: &'a Scenario,
    handler: ErrorHandler,
    ctl: Mutex<Controller>,
    /// Signalled when a fault is notified or the run ends, for vCPUs held after theirs.
    changed: Condvar,
}

impl Shared<'_> {
    /// KVM_RUN returned EINTR on vCPU `v` (thread `tid`): its SIGBUS, or a stray signal.
    fn on_interrupt(
        &self,
        v: u8,
        tid: i32,
        vcpu: &Vcpu,
        tx: &Sender<Msg>,
    ) -> Result<Next, ExecError> {
        let mut ctl = lock(&self.ctl);
        if ctl.stopped.is_some() || ctl.vm_off || ctl.halt {
            return Ok(Next::Halt);
        }
        ctl.collect();
        let Some(at) = ctl
            .pending
            .iter()
            .position(|e| e.si_code == SigbusCode::MceerrAr && e.tid == tid)
        else {
            // A stray EINTR (a signal that was not this vCPU's SIGBUS): run on.
            return Ok(Next::Run);
        };
        let ev = ctl.pending.remove(at);
        self.on_memory_error(ctl, v, vcpu, &ev, tx)
    }

    /// Handles `ev` on vCPU `v`'s thread, records what was done, and holds the vCPU while
    /// the scenario's order asks for it.
    fn on_memory_error(
        &self,
        mut ctl: MutexGuard<'_, Controller>,
        v: u8,
        vcpu: &Vcpu,
        ev: &SigbusEvent,
        tx: &Sender<Msg>,
    ) -> Result<Next, ExecError> {
        let fault = ctl.current.get(&v).copied();
        let handled = self
            .handler
            .on_memory_error(&self.m.vm, vcpu, v, ev, &mut ())?;
        if let Some(bytes) = handled.record {
            ctl.records.push(bytes.to_vec());
        }
        if let Some(reason) = handled.stop {
            ctl.stopped = Some(reason);
            if let Some(i) = fault {
                ctl.faults[i].notified = true;
            }
            self.wake(&ctl, tx);
            return Ok(Next::Halt);
        }
        let Some(injection) = handled.injection else {
            return Ok(Next::Run);
        };
        // A fault counts as notified once its injection is done, so that a vCPU held for
        // it runs only after it, and the order of injections is fixed.
        ctl.injections.push(injection);
        if let Some(i) = fault {
            ctl.faults[i].notified = true;
        }
        self.wake(&ctl, tx);
        let Some(until) = ctl.hold_after_notify(self.s, v) else {
            return Ok(Next::Run);
        };
        while !ctl.satisfied(self, until) {
            if ctl.halt || ctl.stopped.is_some() {
                return Ok(Next::Halt);
            }
            ctl.waiting += 1;
            ctl = self
                .changed
                .wait_timeout(ctl, TICK)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            ctl.waiting -= 1;
        }
        Ok(Next::Run)
    }

    /// Tells whoever waits for a notification, and only them: a wake-up is a system call.
    fn wake(&self, ctl: &Controller, tx: &Sender<Msg>) {
        if ctl.waiting > 0 {
            self.changed.notify_all();
        }
        if !ctl.held.is_empty() {
            let _ = tx.send(Msg::Notified);
        }
    }

    /// The VMM thread: answers doorbells, poisons, and ends the run.
    fn drive(
        &self,
        rx: &Receiver<Msg>,
        commands: &[Sender<Command>],
        deadline: Instant,
    ) -> Result<(), ExecError> {
        let send = |v: u8, c: Command| {
            let _ = commands[usize::from(v)].send(c);
        };
        let s = self.s;
        loop {
            if lock(&self.ctl).exited.len() >= commands.len() {
                return Ok(());
            }
            let msg = match rx.recv_timeout(TICK) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            {
                let mut ctl = lock(&self.ctl);
                match msg {
                    None | Some(Msg::Notified) => {}
                    Some(Msg::Exited { vcpu, how }) => {
                        if let Ended::Error(e) = &how {
                            return Err(ExecError::Failed(e.clone()));
                        }
                        ctl.vm_off |= how == Ended::SystemOff;
                        ctl.exited.insert(vcpu, how);
                    }
                    Some(Msg::Ready { vcpu, step }) => {
                        if ctl.stopped.is_some() || ctl.vm_off {
                            send(vcpu, Command::Halt);
                        } else {
                            let fault = ctl
                                .steps
                                .get(usize::from(vcpu))
                                .and_then(|st| st.get(usize::from(step)).copied())
                                .flatten();
                            match fault {
                                Some(i) if !ctl.faults[i].poisoned => {
                                    ctl.current.insert(vcpu, i);
                                    let until = match s.faults[i].when {
                                        When::BeforeAck => Until::Notified(i - 1),
                                        When::AfterAck => Until::Acked(i - 1),
                                        When::AtReady | When::BeforeBoot => Until::Now,
                                    };
                                    ctl.held.push((vcpu, until, i));
                                }
                                Some(i) => {
                                    ctl.current.insert(vcpu, i);
                                    send(vcpu, Command::Resume);
                                }
                                None => send(vcpu, Command::Resume),
                            }
                        }
                    }
                }
            }
            self.release(&send)?;
            let mut ctl = lock(&self.ctl);
            if ctl.vm_off {
                ctl.kick_the_rest();
            }
            if Instant::now() > deadline {
                for v in 0..commands.len() as u8 {
                    send(v, Command::Halt);
                }
                ctl.held.clear();
                ctl.timed_out = true;
                return Ok(());
            }
        }
    }

    /// Poisons for every held vCPU whose wait is over and lets it go on.
    fn release(&self, send: &impl Fn(u8, Command)) -> Result<(), ExecError> {
        loop {
            let (v, i) = {
                let mut ctl = lock(&self.ctl);
                let Some(at) = ctl
                    .held
                    .iter()
                    .position(|&(_, until, _)| ctl.satisfied(self, until))
                else {
                    return Ok(());
                };
                let (v, _, i) = ctl.held.remove(at);
                (v, i)
            };
            self.m.poison(self.s, i)?;
            lock(&self.ctl).faults[i].poisoned = true;
            send(v, self.after_poison()?);
        }
    }

    /// Right after poisoning a fault for its vCPU (waiting at its ReadyForFault): an
    /// early-kill AO may have arrived; the vCPU acts on it (with `on_ao: ignore` its
    /// handler does nothing).
    fn after_poison(&self) -> Result<Command, ExecError> {
        let until = Instant::now()
            + if self.s.vmm.mce_kill == MceKill::Early {
                AO_GRACE
            } else {
                Duration::ZERO
            };
        loop {
            {
                let mut ctl = lock(&self.ctl);
                ctl.collect();
                if let Some(at) = ctl
                    .pending
                    .iter()
                    .position(|e| e.si_code == SigbusCode::MceerrAo)
                {
                    return Ok(Command::Notify(ctl.pending.remove(at)));
                }
            }
            if Instant::now() >= until {
                return Ok(Command::Resume);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
