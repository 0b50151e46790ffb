//! The machine: one VM, one thread per vCPU ([`super::vcpu_thread`]), and the VMM thread
//! that poisons in the scenario's order ([`super::order`]). A memory error is handled where
//! it lands: the vCPU thread whose KVM_RUN the SIGBUS interrupted takes it, decides, writes
//! the CPER record and injects ([`ErrorHandler`]), and runs on, with no hand-over to
//! another thread (a hand-over and back costs about two null MMIO exits,
//! docs/benchmarks.md). The threads share a [`Controller`] under a mutex held only for
//! bookkeeping: never across a KVM ioctl.
//!
//! ```text
//! vCPU thread                               VMM thread (drive)
//! run_until_stop -> ReadyForFault --------> poison now, or hold until the previous fault
//!   (complete_mmio first), wait for            is notified / acknowledged; answer
//!   Resume / Halt / Notify(AO)                 Resume, or Notify an early-kill AO
//! run_until_stop -> EINTR (SIGBUS)
//!   take this thread's AR from the
//!   recorder, handle it (no lock), record;
//!   hold while the scenario's before-ack
//!   order asks for it; run on
//! ```

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ras_guest_abi::map::TARGET_BASE;

use super::handler::{ErrorHandler, MemoryError};
use super::log::{Injection, VmmLog};
use super::order::{AtReady, Order, Until};
use super::plan::{self, Plan};
use super::vcpu_thread::{self, Command, Ended, Msg};
use super::{ExecError, Options};
use crate::fault::sigbus::{self, SigbusEvent, RING_LEN};
use crate::fault::translate::Memslot;
use crate::fault::{self, mce_kill, GuestRanges, PoisonError, PoisonedPage, Poisoner, SigbusCode};
use crate::formats::cper::MEMORY_ERROR_RECORD_LEN;
use crate::kvm::{self, boot, Kicker, Mapping, Vcpu, Vm};
use crate::scenario::{
    page_size, Backing, GuestReport, Hex, HexBytes, HostSignal, MceKill, Method, Outcome, Scenario,
    VmmEnd,
};

/// How long the VMM thread waits for a message, and a held vCPU for a change, before
/// re-checking (an acknowledgement is a guest memory write: nothing signals it).
pub(super) const TICK: Duration = Duration::from_millis(20);
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
pub(super) struct Machine {
    /// Declared before `vm`: the registry must not outlive the mappings it vouches for.
    ranges: GuestRanges,
    slots: Vec<Memslot>,
    target_hva: usize,
    pub(super) vm: Vm,
    vcpus: Vec<Vcpu>,
    /// Every page poisoned, for giving back at the end (the VMM thread poisons).
    poisoned: Mutex<Vec<PoisonedPage>>,
    _gic: kvm_ioctls::DeviceFd,
}

fn failed(what: &str) -> impl Fn(kvm::Error) -> ExecError + '_ {
    move |e| ExecError::Failed(format!("{what}: {e}"))
}

impl Machine {
    fn build(s: &Scenario, plan: &Plan) -> Result<Self, ExecError> {
        if !std::path::Path::new("/dev/kvm").exists() {
            return Err(ExecError::Unsupported("no /dev/kvm".into()));
        }
        let mut vm = Vm::new().map_err(failed("create the VM"))?;
        vm.set_caps(vm.caps().masked(&s.vmm.mask_caps));

        boot::add_payload_ram(&mut vm).map_err(failed("the payload's RAM"))?;
        let target = Mapping::new(s.guest.backing, plan.target_size as usize)
            .map_err(failed("map the target slot"))?;
        let target_hva = target.as_ptr() as usize;
        let mut ranges = GuestRanges::new();
        // SAFETY: the target slot is a mapping made above as guest RAM; `ranges` is dropped
        // before `vm`, which owns the mapping from the next line on (field order).
        unsafe { ranges.add(target_hva, target.len()) }
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        vm.add_memory(TARGET_BASE, target)
            .map_err(failed("target memslot"))?;
        let slots = vm.memslots();

        for (name, gpa, bytes) in &plan.blobs {
            vm.write_guest(*gpa, bytes)
                .map_err(|e| ExecError::Failed(format!("write {name}: {e}")))?;
        }
        let mut vcpus = Vec::new();
        for i in 0..plan.vcpus.len() {
            let vcpu = boot::add_payload_vcpu(&vm, i).map_err(failed("a vCPU"))?;
            if !s.guest.ras {
                vcpu.hide_feat_ras().map_err(|e| {
                    ExecError::Unsupported(format!("KVM cannot hide FEAT_RAS: {e}"))
                })?;
            }
            vcpus.push(vcpu);
        }
        let gic = boot::add_gic(&vm).map_err(failed("GICv3"))?;
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
        if self.already_poisoned(s, hva) {
            return Ok(());
        }
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
            Err(e @ PoisonError::Busy { .. }) if s.guest.backing == Backing::Hugetlb1G => {
                Err(ExecError::Unsupported(format!(
                    "the kernel cannot poison a 1 GiB hugetlb page: {e}"
                )))
            }
            Err(e) => Err(ExecError::Failed(format!("faults[{index}]: {e}"))),
        }
    }

    /// Whether an earlier fault already poisoned the host page (or hugetlb page) holding
    /// `hva` ([`page_size::poison_unit`]). Its access meets the poison already; poisoning
    /// it again would touch it first, and the VMM thread would take BUS_MCEERR_AR on every
    /// retry of that load.
    fn already_poisoned(&self, s: &Scenario, hva: usize) -> bool {
        lock(&self.poisoned).iter().any(|p| {
            let unit = page_size::poison_unit(s.guest.backing, p.page_size) as usize;
            p.method != fault::Method::SoftOffline && p.hva / unit == hva / unit
        })
    }

    fn run(&mut self, s: &Scenario, plan: &Plan, opts: &Options) -> Result<Run, ExecError> {
        let handler = ErrorHandler::new(
            s.firmware,
            self.vm.caps(),
            &s.vmm,
            self.slots.clone(),
            plan.ghes,
        )?;
        let steps = plan.vcpus.iter().map(|v| v.step_faults.clone()).collect();
        let mut ctl = Controller::new(Order::new(s, steps), s.faults.len());
        ctl.tids.insert(sigbus::gettid(), "vmm".to_owned());
        let early: Vec<usize> = ctl.order.before_boot().collect();
        for i in early {
            self.poison(s, i)?;
            ctl.order.poisoned(i);
        }
        ctl.collect(&handler);

        let vcpus = std::mem::take(&mut self.vcpus);
        let kickers = vcpus
            .iter()
            .map(Vcpu::kicker)
            .collect::<kvm::Result<Vec<Kicker>>>()
            .map_err(failed("vCPU kicker"))?;
        let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
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
                        vcpu_thread::run(sh, i as u8, vcpu, timeout, &tx, &cmd_rx)
                    })
                    .map_err(|e| ExecError::Failed(format!("spawn vCPU thread: {e}")))?;
            }
            drop(msg_tx);
            let deadline = Instant::now() + opts.vcpu_timeout + Duration::from_secs(10);
            let result = shared.drive(&msg_rx, &commands, &kickers, deadline);
            // Whatever happened, held vCPUs halt now, and dropping the senders lets every
            // vCPU waiting for a command end.
            lock(&shared.ctl).halt = true;
            shared.changed.notify_all();
            drop(commands);
            // Wait for every vCPU thread to end: the iterator stops when the last one drops
            // its sender. A vCPU still in KVM_RUN (CPU_OFF after a stop) is interrupted.
            loop {
                match msg_rx.recv_timeout(TICK) {
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => kickers.iter().for_each(Kicker::interrupt),
                    Ok(_) => {}
                }
            }
            result
        })?;
        let ctl = shared
            .ctl
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(ctl.into_run())
    }

    /// The outcome as for any VMM: each vCPU's report read back from guest memory, the
    /// host's signals and how the run ended; the VMM's own log beside it.
    fn outcome(&self, s: &Scenario, run: Run) -> Result<(Outcome, VmmLog), ExecError> {
        let mut guest = Vec::new();
        for v in 0..s.guest.vcpus {
            let r = boot::read_report(&self.vm, usize::from(v)).map_err(failed("read a report"))?;
            guest.push(GuestReport::from_report(v, &r));
        }
        let outcome = Outcome {
            vmm_end: run.end,
            host_signals: run.host_signals,
            guest,
            console: Vec::new(),
        };
        Ok((outcome, run.log))
    }
}

/// Locks `m`; a thread that panicked holding it leaves data still worth reporting.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the run ended, the host's signals, and the VMM's own log.
struct Run {
    end: VmmEnd,
    host_signals: Vec<HostSignal>,
    log: VmmLog,
}

/// A SIGBUS taken from the recorder, placed in guest memory once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Signal {
    pub(super) event: SigbusEvent,
    /// `None` when it is not a memory error of guest RAM.
    pub(super) error: Option<MemoryError>,
}

/// What the VMM thread and the vCPU threads share, under [`Shared::ctl`].
pub(super) struct Controller<'s> {
    pub(super) order: Order<'s>,
    /// Thread id -> name (`vcpu0`, `vmm`), for the outcome's `host_signals`.
    pub(super) tids: HashMap<i32, String>,
    /// vCPUs the VMM thread holds at their doorbell: poison fault n once `Until` holds.
    held: Vec<(u8, Until, usize)>,
    /// vCPU threads waiting on [`Shared::changed`].
    pub(super) waiting: usize,
    /// A vCPU called PSCI SYSTEM_OFF: the VM is off.
    pub(super) vm_off: bool,
    /// The VMM thread stopped driving: held vCPUs halt.
    pub(super) halt: bool,
    timed_out: bool,
    /// Every SIGBUS taken from the recorder, in order (the outcome's `host_signals`).
    signals: Vec<Signal>,
    /// Memory errors not yet acted on.
    pending: Vec<(SigbusEvent, MemoryError)>,
    /// Where the recorder is drained into; it and the vectors above and below are
    /// allocated up front, so that the memory-error path allocates nothing.
    drained: Vec<SigbusEvent>,
    exited: HashMap<u8, Ended>,
    injections: Vec<Injection>,
    records: Vec<[u8; MEMORY_ERROR_RECORD_LEN]>,
    pub(super) stopped: Option<String>,
}

impl<'s> Controller<'s> {
    fn new(order: Order<'s>, faults: usize) -> Self {
        // Each fault can raise a few signals (the vCPU's AR, the poisoning thread's, an
        // early-kill AO); more than this only costs an allocation.
        let signals = 4 * faults + RING_LEN;
        Self {
            order,
            tids: HashMap::new(),
            held: Vec::new(),
            waiting: 0,
            vm_off: false,
            halt: false,
            timed_out: false,
            signals: Vec::with_capacity(signals),
            pending: Vec::with_capacity(signals),
            drained: Vec::with_capacity(RING_LEN),
            exited: HashMap::new(),
            injections: Vec::with_capacity(faults),
            records: Vec::with_capacity(faults),
            stopped: None,
        }
    }

    fn into_run(self) -> Run {
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
            .map(|s| HostSignal {
                code: s.event.si_code,
                lsb: u8::try_from(s.event.si_addr_lsb).unwrap_or(0),
                gpa: s.error.map(|e| Hex(e.gpa)),
                thread: self
                    .tids
                    .get(&s.event.tid)
                    .cloned()
                    .unwrap_or_else(|| "other".to_owned()),
            })
            .collect();
        Run {
            end,
            host_signals,
            log: VmmLog {
                injections: self.injections,
                records: self.records.iter().map(|r| HexBytes(r.to_vec())).collect(),
            },
        }
    }

    /// Moves the recorder's events into `signals`, each placed in guest memory once, and
    /// keeps the memory errors for the threads that act on them.
    pub(super) fn collect(&mut self, handler: &ErrorHandler) {
        self.drained.clear();
        sigbus::take_events_into(&mut self.drained);
        for &event in &self.drained {
            let error = handler.memory_error(&event);
            self.signals.push(Signal { event, error });
            if let Some(error) = error {
                self.pending.push((event, error));
            }
        }
    }

    /// Takes the action-required error KVM signalled to thread `tid`, if it is pending.
    pub(super) fn take_ar(&mut self, tid: i32) -> Option<MemoryError> {
        let at = self
            .pending
            .iter()
            .position(|(ev, _)| ev.si_code == SigbusCode::MceerrAr && ev.tid == tid)?;
        Some(self.pending.remove(at).1)
    }

    /// Takes any pending action-optional error (an early-kill AO goes to one thread).
    fn take_ao(&mut self) -> Option<MemoryError> {
        let at = self
            .pending
            .iter()
            .position(|(ev, _)| ev.si_code == SigbusCode::MceerrAo)?;
        Some(self.pending.remove(at).1)
    }

    /// What vCPU `v`'s handler did, in the log and in the order.
    pub(super) fn handled(
        &mut self,
        v: u8,
        record: Option<[u8; MEMORY_ERROR_RECORD_LEN]>,
        injection: Option<Injection>,
        stop: Option<String>,
    ) -> bool {
        if let Some(bytes) = record {
            self.records.push(bytes);
        }
        let notified = stop.is_some() || injection.is_some();
        if let Some(reason) = stop {
            self.stopped = Some(reason);
        }
        if let Some(injection) = injection {
            self.injections.push(injection);
        }
        // A fault counts as notified once its injection is done, so that a vCPU held for
        // it runs only after it, and the order of injections is fixed.
        if notified {
            self.order.notified(v);
        }
        notified
    }
}

/// The machine during a run, as every thread sees it.
pub(super) struct Shared<'a> {
    pub(super) m: &'a Machine,
    pub(super) s: &'a Scenario,
    pub(super) handler: ErrorHandler,
    pub(super) ctl: Mutex<Controller<'a>>,
    /// Signalled when a fault is notified or the run ends, for vCPUs held after theirs.
    pub(super) changed: Condvar,
}

impl Shared<'_> {
    /// Whether `until` holds now.
    pub(super) fn satisfied(&self, ctl: &Controller<'_>, until: Until) -> bool {
        ctl.order.satisfied(until, || {
            self.handler.guest_acked(&self.m.vm).unwrap_or(false)
        })
    }

    /// Tells whoever waits for a notification, and only them: a wake-up is a system call.
    pub(super) fn wake(&self, ctl: &Controller<'_>, tx: &Sender<Msg>) {
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
        kickers: &[Kicker],
        deadline: Instant,
    ) -> Result<(), ExecError> {
        let send = |v: u8, c: Command| {
            let _ = commands[usize::from(v)].send(c);
        };
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
                            match ctl.order.at_ready(vcpu, step) {
                                AtReady::Resume => send(vcpu, Command::Resume),
                                AtReady::Poison { fault, after } => {
                                    ctl.held.push((vcpu, after, fault));
                                }
                            }
                        }
                    }
                }
            }
            self.release(&send)?;
            let mut ctl = lock(&self.ctl);
            if ctl.vm_off {
                // After SYSTEM_OFF the payload's other vCPUs have ended with PSCI CPU_OFF,
                // which does not exit: their threads sleep in KVM_RUN until interrupted;
                // they then see the VM off and halt. Repeated each tick, in case a signal
                // lands between two KVM_RUNs.
                for (v, k) in kickers.iter().enumerate() {
                    if !ctl.exited.contains_key(&(v as u8)) {
                        k.interrupt();
                    }
                }
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
                    .position(|&(_, until, _)| self.satisfied(&ctl, until))
                else {
                    return Ok(());
                };
                let (v, _, i) = ctl.held.remove(at);
                (v, i)
            };
            self.m.poison(self.s, i)?;
            lock(&self.ctl).order.poisoned(i);
            send(v, self.after_poison());
        }
    }

    /// Right after poisoning a fault for its vCPU (waiting at its ReadyForFault): an
    /// early-kill AO may have arrived; the vCPU acts on it (with `on_ao: ignore` its
    /// handler does nothing).
    fn after_poison(&self) -> Command {
        let until = Instant::now()
            + if self.s.vmm.mce_kill == MceKill::Early {
                AO_GRACE
            } else {
                Duration::ZERO
            };
        loop {
            {
                let mut ctl = lock(&self.ctl);
                ctl.collect(&self.handler);
                if let Some(error) = ctl.take_ao() {
                    return Command::Notify(error);
                }
            }
            let now = Instant::now();
            if now >= until {
                return Command::Resume;
            }
            // Woken by the SIGBUS recorder as soon as any signal is recorded.
            sigbus::wait_for_event(until - now);
        }
    }
}
