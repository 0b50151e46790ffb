//! This vCPU's mailbox: the VMM's params, the report, and the guest's private scratch.

use core::mem::offset_of;
use ras_guest_abi::mailbox::State;
use ras_guest_abi::mailbox::MAX_TARGETS;
use ras_guest_abi::map::{mailbox_base, mailbox_offset, MAILBOX_BASE, MAX_VCPUS};
use ras_guest_abi::{Params, Report, StepAddresses, PARAMS_MAGIC};

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
}

const _: () = assert!(core::mem::size_of::<Scratch>() <= 0x1000);

/// Handle on the mailbox of the vCPU running this code.
#[derive(Clone, Copy)]
pub struct Mailbox {
    base: u64,
}

impl Mailbox {
    /// The mailbox at `base` (the value the VMM put in x0).
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

    /// `Params::el` read with one aligned 32-bit load: with the MMU off memory is
    /// Device-nGnRnE, where a wider or unaligned compiler-generated copy would fault.
    pub fn params_el_before_mmu(self) -> u32 {
        let addr = self.base + mailbox_offset::PARAMS + offset_of!(Params, el) as u64;
        // SAFETY: the VMM placed a Params there; the field is 4-byte aligned.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }

    /// Whether this is vCPU 0's mailbox: the vCPU that powers the VM off.
    pub const fn is_first(self) -> bool {
        self.base == MAILBOX_BASE
    }

    /// Spins until every other mailbox that holds valid-magic params reports Done or
    /// Fatal (each of those vCPUs writes its state after its last doorbell, so nothing it
    /// says is lost when vCPU 0 then powers the VM off).
    pub fn wait_for_other_vcpus(self) {
        for other in (0..MAX_VCPUS).filter_map(mailbox_base) {
            if other == self.base {
                continue;
            }
            // SAFETY: every mailbox lies in the identity-mapped RAM slot; the VMM wrote the
            // params before starting any vCPU and zeroed the rest of RAM; aligned loads.
            let magic =
                unsafe { core::ptr::read_volatile((other + mailbox_offset::PARAMS) as *const u64) };
            if magic != PARAMS_MAGIC {
                continue;
            }
            let state =
                (other + mailbox_offset::REPORT + offset_of!(Report, state) as u64) as *const u32;
            loop {
                // SAFETY: as above; the other vCPU writes this u32 with one aligned store.
                let s = State::from_code(unsafe { core::ptr::read_volatile(state) });
                if matches!(s, Some(State::Done | State::Fatal)) {
                    break;
                }
                core::hint::spin_loop();
            }
        }
    }

    /// A copy of the params (MMU on).
    pub fn params(self) -> Params {
        // SAFETY: the VMM wrote a Params at this page-aligned address before starting the
        // vCPU; every bit pattern is a valid Params.
        unsafe { core::ptr::read_volatile((self.base + mailbox_offset::PARAMS) as *const Params) }
    }

    /// Zeroes the report (so stale bytes never pass for observations) and the scratch.
    pub fn init(self) {
        // SAFETY: the report's pages and the scratch page belong to this vCPU's mailbox;
        // all-zero is a valid Report and a valid Scratch.
        unsafe {
            core::ptr::write_bytes((self.base + mailbox_offset::REPORT) as *mut Report, 0, 1);
            core::ptr::write_bytes((self.base + mailbox_offset::SCRATCH) as *mut Scratch, 0, 1);
        }
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
