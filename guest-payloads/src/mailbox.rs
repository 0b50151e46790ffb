//! This vCPU's mailbox: the params it booted with, the handshake, the report, and the
//! guest's private scratch.

use crate::console::Console;
use core::mem::offset_of;
use ras_guest_abi::fdt::{Uart, UartKind};
use ras_guest_abi::mailbox::State;
use ras_guest_abi::mailbox::MAX_TARGETS;
use ras_guest_abi::map::{mailbox_at, mailbox_offset};
use ras_guest_abi::{Handshake, Params, Report, StepAddresses, HANDSHAKE_MAGIC};

/// Entries of `Report::steps`: the access steps, then the SError wait.
const STEPS: usize = MAX_TARGETS + 1;

/// Guest-private state for exception recovery, at `mailbox_offset::SCRATCH`.
#[repr(C)]
pub struct Scratch {
    /// Callee-saved registers x19-x30 and SP saved by `guard_call` (see `entry`).
    pub jmpbuf: [u64; 13],
    /// Non-zero while a guarded step runs: exceptions then resume after the step.
    pub armed: u64,
    /// The running step (the `step` of an exception record).
    pub step: u64,
    /// Non-zero while the exception handler runs (a second exception is fatal).
    pub in_handler: u64,
    /// Non-zero while EL0 code runs: its `svc #0` ends the step normally.
    pub in_el0: u64,
    /// FEAT_RAS present (DISR_EL1 readable).
    pub has_ras: u64,
    /// This vCPU's index (MPIDR_EL1).
    pub index: u64,
    /// Where the image was loaded.
    pub image_base: u64,
    /// PSCI over SMC rather than HVC.
    pub psci_smc: u64,
    /// The console: kind (0 none, 1 PL011, 2 16550), base, reg-shift, reg-io-width.
    pub uart: [u64; 4],
    /// Where firmware tables may lie (`boot::Boot::tables`).
    pub tables: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<Scratch>() <= 0x1000);

/// Handle on the mailbox of the vCPU running this code.
#[derive(Clone, Copy)]
pub struct Mailbox {
    base: u64,
}

impl Mailbox {
    /// The mailbox at `base` (the value `_start` computed).
    pub const fn at(base: u64) -> Self {
        Self { base }
    }

    /// The mailbox `_start` stored in TPIDR_EL1.
    pub fn current() -> Self {
        Self::at(crate::read_sysreg!("tpidr_el1"))
    }

    /// Guest physical address of the mailbox.
    pub const fn base(self) -> u64 {
        self.base
    }

    /// Whether this is vCPU 0: the vCPU that powers the VM off.
    pub fn is_first(self) -> bool {
        self.with_scratch(|s| s.index == 0)
    }

    /// Spins until the other vCPUs report Done or Fatal (each writes its state after its
    /// last announcement, so nothing it says is lost when vCPU 0 then powers the VM off).
    pub fn wait_for_other_vcpus(self, vcpus: u32) {
        self.wait_for_others(vcpus, |s| matches!(s, State::Done | State::Fatal));
    }

    /// Spins until every other of the `vcpus` vCPUs has started: no vCPU runs its steps
    /// before, so a VMM that dies of one vCPU's access cannot leave the others' progress
    /// to the scheduler. Through the doorbell, started is a report saying Running or
    /// later; through the handshake, the host's answer to a first announcement (it read
    /// the report then, so what it reports of the vCPU no longer depends on when the VMM
    /// ends).
    pub fn wait_for_other_vcpus_started(self, vcpus: u32) {
        if self.params().doorbell_gpa != 0 {
            self.wait_for_others(vcpus, |s| s != State::NotStarted);
            return;
        }
        let (base, me) = self.with_scratch(|s| (s.image_base, s.index as usize));
        for other in (0..(vcpus as usize).min(ras_guest_abi::map::MAX_VCPUS)).filter(|&o| o != me) {
            let hs = (mailbox_at(base, other) + mailbox_offset::HANDSHAKE) as *const Handshake;
            // SAFETY: every mailbox lies in the identity-mapped first 2 MiB of the image,
            // zeroed before any vCPU ran; the host writes `ack` with one aligned store.
            while unsafe { core::ptr::read_volatile(&raw const (*hs).ack) } == 0 {
                core::hint::spin_loop();
            }
        }
    }

    /// Spins until each other vCPU's report holds a state for which `until` holds.
    fn wait_for_others(self, vcpus: u32, until: impl Fn(State) -> bool) {
        let (base, me) = self.with_scratch(|s| (s.image_base, s.index as usize));
        for other in (0..(vcpus as usize).min(ras_guest_abi::map::MAX_VCPUS)).filter(|&o| o != me) {
            let state = (mailbox_at(base, other)
                + mailbox_offset::REPORT
                + offset_of!(Report, state) as u64) as *const u32;
            loop {
                // SAFETY: every mailbox lies in the identity-mapped first 2 MiB of the
                // image; the other vCPU writes this u32 with one aligned store.
                let s = State::from_code(unsafe { core::ptr::read_volatile(state) });
                if s.is_some_and(&until) {
                    break;
                }
                core::hint::spin_loop();
            }
        }
    }

    /// A copy of the params (MMU on).
    pub fn params(self) -> Params {
        // SAFETY: the guest wrote a Params at this page-aligned address at boot; every bit
        // pattern is a valid Params.
        unsafe { core::ptr::read_volatile((self.base + mailbox_offset::PARAMS) as *const Params) }
    }

    /// Records the params boot read, and the console and PSCI conduit.
    pub fn set_boot(self, params: &Params, uart: Option<Uart>, psci_smc: bool, tables: [u64; 2]) {
        // SAFETY: the params slot of this vCPU's mailbox, aligned; Params is plain data.
        unsafe {
            core::ptr::write_volatile((self.base + mailbox_offset::PARAMS) as *mut Params, *params)
        };
        self.with_scratch(|s| {
            s.tables = tables;
            s.psci_smc = u64::from(psci_smc);
            s.uart = uart.map_or([0; 4], |u| {
                let kind = match u.kind {
                    UartKind::Pl011 => 1,
                    UartKind::Ns16550 => 2,
                };
                [kind, u.base, u64::from(u.reg_shift), u64::from(u.io_width)]
            });
        });
    }

    /// The console, if boot found one.
    pub fn console(self) -> Option<Console> {
        let [kind, base, reg_shift, io_width] = self.with_scratch(|s| s.uart);
        let kind = match kind {
            1 => UartKind::Pl011,
            2 => UartKind::Ns16550,
            _ => return None,
        };
        Some(Console(Uart {
            kind,
            base,
            reg_shift: reg_shift as u32,
            io_width: io_width as u32,
        }))
    }

    /// Whether PSCI calls use SMC.
    pub fn psci_smc(self) -> bool {
        self.with_scratch(|s| s.psci_smc != 0)
    }

    /// Announces `event` through the handshake and waits until the host acknowledges it.
    pub fn handshake(self, event: u64) {
        let hs = self.handshake_ptr();
        // SAFETY: this vCPU's handshake, aligned and mapped; the host writes only `ack`.
        // The barriers order the event before the count and both before the wait.
        unsafe {
            let seq = core::ptr::read_volatile(&raw const (*hs).seq) + 1;
            core::ptr::write_volatile(&raw mut (*hs).event, event);
            core::arch::asm!("dsb sy", options(nostack)); // the event (and report) first
            core::ptr::write_volatile(&raw mut (*hs).seq, seq);
            core::arch::asm!("dsb sy", options(nostack)); // then the count
            while core::ptr::read_volatile(&raw const (*hs).ack) != seq {
                core::hint::spin_loop();
            }
        }
    }

    /// This vCPU's handshake, as a raw pointer (the host writes into it).
    pub fn handshake_ptr(self) -> *mut Handshake {
        (self.base + mailbox_offset::HANDSHAKE) as *mut Handshake
    }

    /// Zeroes the report (so stale bytes never pass for observations) and the scratch,
    /// keeps `index` and `image_base` in the scratch, and opens the handshake for the host
    /// to find.
    pub fn init(self, index: usize, image_base: u64) {
        // SAFETY: the report's pages, the scratch page and the handshake belong to this
        // vCPU's mailbox; all-zero is a valid Report, Scratch and Handshake.
        unsafe {
            core::ptr::write_bytes((self.base + mailbox_offset::REPORT) as *mut Report, 0, 1);
            core::ptr::write_bytes((self.base + mailbox_offset::SCRATCH) as *mut Scratch, 0, 1);
            let hs = self.handshake_ptr();
            core::ptr::write_bytes(hs, 0, 1);
            core::ptr::write_volatile(&raw mut (*hs).mailbox_gpa, self.base);
            core::ptr::write_volatile(&raw mut (*hs).magic, HANDSHAKE_MAGIC);
        }
        self.with_scratch(|s| {
            s.index = index as u64;
            s.image_base = image_base;
        });
    }

    /// Runs `f` on this vCPU's report. The reference lives only for the call, so none is
    /// live when the exception handler, which writes the report too, interrupts a step;
    /// `f` itself performs no access that could take an exception. The VMM reads the
    /// report only while the vCPU is stopped in an exit.
    pub fn with_report<T>(self, f: impl FnOnce(&mut Report) -> T) -> T {
        // SAFETY: this vCPU's report, aligned and mapped; only this vCPU writes it, and no
        // other reference to it exists during `f` (see above).
        f(unsafe { &mut *((self.base + mailbox_offset::REPORT) as *mut Report) })
    }

    /// Runs `f` on the guest-private scratch, with the same discipline as
    /// [`Mailbox::with_report`].
    pub fn with_scratch<T>(self, f: impl FnOnce(&mut Scratch) -> T) -> T {
        // SAFETY: the scratch page is this vCPU's, aligned and mapped; all-zero is valid;
        // no other reference to it exists during `f`.
        f(unsafe { &mut *self.scratch_ptr() })
    }

    /// The jump buffer of the step guard, as a raw pointer: `guard_call` fills it while a
    /// step runs and the exception handler reads it, so no Rust reference may cover it.
    pub fn jmpbuf(self) -> *mut [u64; 13] {
        // SAFETY: a field address inside the scratch page; nothing is dereferenced.
        unsafe { &raw mut (*self.scratch_ptr()).jmpbuf }
    }

    /// Step `step`'s entry of the report's `steps`, as a raw pointer (the step's assembly
    /// stores into it), or `None` past the array.
    pub fn step_addresses(self, step: usize) -> Option<*mut StepAddresses> {
        let report = (self.base + mailbox_offset::REPORT) as *mut Report;
        // SAFETY: field and element addresses inside this vCPU's report, `step` checked
        // against the array's length; nothing is dereferenced.
        (step < STEPS)
            .then(|| unsafe { (&raw mut (*report).steps).cast::<StepAddresses>().add(step) })
    }

    fn scratch_ptr(self) -> *mut Scratch {
        (self.base + mailbox_offset::SCRATCH) as *mut Scratch
    }
}
