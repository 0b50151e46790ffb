//! One step = one guarded access (or the SError wait). Any exception inside it is
//! recorded by the handler, which then returns from the step's `guard_call` with 1: the
//! faulting access is never re-executed.

use crate::entry::{el0_load, el0_load_access, el0_store, el0_store_access, guard_call};
use crate::mailbox::Mailbox;
use crate::{read_sysreg, sysreg};
use core::arch::asm;
use core::mem::offset_of;
use ras_guest_abi::arch::{SPSR_D, SPSR_F, SPSR_I, SPSR_M_EL0T};
use ras_guest_abi::doorbell::{Doorbell, Event};
use ras_guest_abi::mailbox::Access;
use ras_guest_abi::map::mailbox_offset;
use ras_guest_abi::{Handshake, Params, StepAddresses};

/// `ret` (A64 encoding 0xd65f03c0): what an EL1 instruction fetch step executes.
const INSN_RET: u32 = 0xd65f_03c0;
/// `svc #0` (0xd4000001): what an EL0 instruction fetch step executes to come back.
const INSN_SVC0: u32 = 0xd400_0001;
/// SPSR_EL1 for entering EL0: EL0t, D, I, F masked, A unmasked so a pending SError is
/// taken at the access.
const SPSR_EL0T_A_UNMASKED: u64 = SPSR_M_EL0T | SPSR_D | SPSR_I | SPSR_F;

struct AccessArgs {
    mb: Mailbox,
    step: u16,
    access: Access,
    el: u32,
    target: u64,
}

struct SerrorArgs {
    mb: Mailbox,
    step: u16,
    esb: bool,
}

/// Runs `f(arg)` as step `step`; returns true if an exception ended it.
fn guarded(mb: Mailbox, step: u16, f: extern "C" fn(u64), arg: u64) -> bool {
    mb.with_scratch(|s| {
        s.step = u64::from(step);
        s.armed = 1;
    });
    // SAFETY: the buffer is this vCPU's scratch; `f` is an AAPCS64 function; an exception
    // inside `f` comes back through guard_resume into this frame, which is still live.
    let faulted = unsafe { guard_call(mb.jmpbuf(), f, arg) } != 0;
    mb.with_scratch(|s| s.armed = 0);
    faulted
}

/// Performs `params.access` on `target` at `params.el`, as step `step`.
pub fn run_access(mb: Mailbox, step: u16, params: &Params, access: Access, target: u64) -> bool {
    let args = AccessArgs {
        mb,
        step,
        access,
        el: params.el,
        target,
    };
    guarded(mb, step, access_step, &args as *const AccessArgs as u64)
}

/// Step `step`'s entry in the report's [`StepAddresses`]; `spare` for a step beyond it
/// (there is none: the payload runs at most `MAX_TARGETS` access steps and one wait).
fn addresses(mb: Mailbox, step: u16, spare: &mut StepAddresses) -> *mut StepAddresses {
    mb.step_addresses(usize::from(step))
        .unwrap_or(spare as *mut StepAddresses)
}

extern "C" fn access_step(arg: u64) {
    // SAFETY: run_access passes a pointer to its live AccessArgs.
    let a = unsafe { &*(arg as *const AccessArgs) };
    let mut spare = StepAddresses::default();
    let at = addresses(a.mb, a.step, &mut spare);
    let target = a.target;
    // SAFETY: `at` points into this vCPU's report (or at `spare`), which outlives the step.
    unsafe { (*at).target = target };
    if a.access == Access::Ifetch {
        let insn = if a.el == 0 { INSN_SVC0 } else { INSN_RET };
        place_instruction(target, insn);
    }
    // SAFETY: as above; the fields are plain u64s the asm below stores into.
    let (access, ready, unmask) = unsafe {
        (
            &raw mut (*at).access,
            &raw mut (*at).ready,
            &raw mut (*at).unmask,
        )
    };
    ring_ready(a.mb, a.step, ready);
    // An SError the VMM made pending is taken here; the handler records it.
    unmask_serror_noting(unmask);
    let el0_access = match a.access {
        Access::Load => el0_load_access as *const () as u64,
        Access::Store => el0_store_access as *const () as u64,
        Access::Ifetch => target,
        Access::None => 0,
    };
    if a.el == 0 {
        // SAFETY: `access` is valid, see above.
        unsafe { *access = el0_access };
    }
    // After the handshake, in which the VMM may take its time (poisoning the target):
    // from here to the vector is the fault's own path.
    let now = read_sysreg!("cntvct_el0");
    a.mb.with_report(|r| {
        if let Some(slot) = r.counter_before.get_mut(usize::from(a.step)) {
            *slot = now;
        }
    });
    match (a.el, a.access) {
        (_, Access::None) => {}
        (0, Access::Load) => enter_el0(a.mb, el0_load as *const () as u64, target),
        (0, Access::Store) => enter_el0(a.mb, el0_store as *const () as u64, target),
        (0, Access::Ifetch) => enter_el0(a.mb, target, target),
        (_, Access::Load) => {
            // SAFETY: `access` is a valid u64 slot; then an 8-byte load from the
            // identity-mapped target; any abort it raises is taken by the handler, which
            // abandons this step.
            unsafe {
                asm!(
                    "adr {n}, 2f",      // the address of the access...
                    "str {n}, [{at}]",  // ...into StepAddresses::access first
                    "2:",
                    "ldr {t}, [{a}]",   // the access: an 8-byte load from the target
                    a = in(reg) target,
                    at = in(reg) access,
                    n = out(reg) _,
                    t = out(reg) _,
                    options(nostack),
                )
            };
        }
        (_, Access::Store) => {
            // SAFETY: `access` is a valid u64 slot; then an 8-byte store to the target
            // slot, which holds no code or data of this program.
            unsafe {
                asm!(
                    "adr {n}, 2f",      // the address of the access...
                    "str {n}, [{at}]",  // ...into StepAddresses::access first
                    "2:",
                    "str {v}, [{a}]",   // the access: an 8-byte store to the target
                    a = in(reg) target,
                    v = in(reg) 0x5a5au64,
                    at = in(reg) access,
                    n = out(reg) _,
                    options(nostack),
                )
            };
        }
        (_, Access::Ifetch) => {
            // SAFETY: `access` is a valid u64 slot; place_instruction wrote `ret` at the
            // target and synchronised the caches; the call returns at once or aborts into
            // the handler.
            unsafe {
                asm!(
                    "adr x9, 2f",       // the address of the branch...
                    "str x9, [{at}]",   // ...into StepAddresses::access first
                    "2:",
                    "blr {a}",          // the access: fetch and run the target's `ret`
                    a = in(reg) target,
                    at = in(reg) access,
                    out("x9") _,
                    clobber_abi("C"),
                    options(nostack),
                )
            };
        }
    }
    sysreg::mask_serror();
}

/// Announces `ReadyForFault` for `step` as [`crate::platform::ring`] does, first storing
/// at `ready` the address where the vCPU resumes once the VMM or the harness is done: the
/// instruction after the doorbell store (where an injection at that exit lands), or after
/// the handshake's wait.
fn ring_ready(mb: Mailbox, step: u16, ready: *mut u64) {
    let event = Doorbell::new(Event::ReadyForFault, step, 0);
    crate::platform::say_event(mb, event);
    let doorbell = mb.params().doorbell_gpa;
    if doorbell != 0 {
        // SAFETY: `ready` is a valid u64 slot in the report; the doorbell is the MMIO
        // doorbell (see `platform::ring`): one single-register store KVM can decode.
        unsafe {
            asm!(
                "adr {n}, 2f",     // the instruction after the doorbell store...
                "str {n}, [{at}]", // ...into StepAddresses::ready
                "dsb sy",          // complete all earlier stores (the report) first
                "str {v}, [{a}]",  // the doorbell store itself
                "2:",
                at = in(reg) ready,
                n = out(reg) _,
                v = in(reg) event.encode(),
                a = in(reg) doorbell,
                options(nostack),
            )
        };
        return;
    }
    let hs = mb.handshake_ptr();
    // SAFETY: `ready` is a valid u64 slot in the report; `hs` is this vCPU's handshake
    // (see `Mailbox::handshake`, which this is, with the resume address noted).
    unsafe {
        let seq = core::ptr::read_volatile(&raw const (*hs).seq) + 1;
        asm!(
            "adr {n}, 2f",         // the instruction after the wait...
            "str {n}, [{at}]",     // ...into StepAddresses::ready
            "str {v}, [{h}, #{event}]",
            "dsb sy",              // the event (and report) before the count
            "str {s}, [{h}, #{seq}]",
            "dsb sy",              // the count before the wait
            "1:",
            "ldr {t}, [{h}, #{ack}]",
            "cmp {t}, {s}",
            "b.ne 1b",             // until the host acknowledges this count
            "2:",
            at = in(reg) ready,
            n = out(reg) _,
            t = out(reg) _,
            v = in(reg) event.encode(),
            s = in(reg) seq,
            h = in(reg) hs,
            event = const offset_of!(Handshake, event),
            seq = const offset_of!(Handshake, seq),
            ack = const offset_of!(Handshake, ack),
            options(nostack),
        )
    };
}

/// Unmasks SError (PSTATE.A), first storing at `unmask` the address
/// of its `msr daifclr` (a pending SError is taken with ELR just after it).
fn unmask_serror_noting(unmask: *mut u64) {
    // SAFETY: `unmask` is a valid u64 slot in the report; the rest changes PSTATE.A only,
    // and an SError taken here goes to the handler, which resumes the guarded step's caller.
    unsafe {
        asm!(
            "adr {n}, 2f",      // the unmasking instruction...
            "str {n}, [{at}]",  // ...into StepAddresses::unmask
            "2:",
            "msr daifclr, #4",  // DAIFClr bit 2 = A: unmask SError
            "isb",              // a pending SError is taken at this synchronisation
            at = in(reg) unmask,
            n = out(reg) _,
            options(nostack),
        )
    };
}

/// Writes one instruction at `addr` and makes it visible to instruction fetch
/// (Arm ARM B2.2.5, "Concurrent modification and execution of instructions").
fn place_instruction(addr: u64, insn: u32) {
    // SAFETY: the target is mapped writable at EL1 and is this step's own memory.
    unsafe {
        core::ptr::write_volatile(addr as *mut u32, insn);
        asm!(
            "dc cvau, {a}", // clean the data cache line to the point of unification
            "dsb ish",      // ...and wait for it
            "ic ivau, {a}", // invalidate the instruction cache line
            "dsb ish",      // ...and wait for it
            "isb",          // refetch from here on
            a = in(reg) addr,
            options(nostack),
        );
    }
}

/// Erets to `pc` at EL0 with x0 = `target`; the step continues when EL0 calls `svc #0`
/// or faults (either way through the handler).
fn enter_el0(mb: Mailbox, pc: u64, target: u64) {
    mb.with_scratch(|s| s.in_el0 = 1);
    let sp = mb.base() + mailbox_offset::EL0_STACK_TOP;
    // SAFETY: EL0 code runs on its own stack and returns only through an exception, which
    // resumes the guard; nothing after the eret executes.
    unsafe {
        asm!(
            "msr sp_el0, {sp}",     // EL0 stack (mapped EL0-writable)
            "msr elr_el1, {pc}",    // where EL0 starts
            "msr spsr_el1, {spsr}", // EL0t, D/I/F masked, A unmasked
            "eret",
            sp = in(reg) sp,
            pc = in(reg) pc,
            spsr = in(reg) SPSR_EL0T_A_UNMASKED,
            in("x0") target,
            options(noreturn, nostack),
        )
    }
}

/// The masked SError wait, as step `step`: mask PSTATE.A, ring `ReadyForFault`, read
/// ISR_EL1 (A = bit 8), optionally ESB and DISR_EL1, then unmask and take what is pending.
pub fn run_serror_wait(mb: Mailbox, step: u16, esb: bool) -> bool {
    let args = SerrorArgs { mb, step, esb };
    guarded(mb, step, serror_step, &args as *const SerrorArgs as u64)
}

extern "C" fn serror_step(arg: u64) {
    // SAFETY: run_serror_wait passes a pointer to its live SerrorArgs.
    let a = unsafe { &*(arg as *const SerrorArgs) };
    let mut spare = StepAddresses::default();
    let at = addresses(a.mb, a.step, &mut spare);
    // SAFETY: `at` points into this vCPU's report (or at `spare`), which outlives the step.
    let (ready, unmask) = unsafe { (&raw mut (*at).ready, &raw mut (*at).unmask) };
    sysreg::mask_serror();
    ring_ready(a.mb, a.step, ready);
    let isr = read_sysreg!("isr_el1");
    let has_ras = a.mb.with_scratch(|s| s.has_ras != 0);
    // ESB takes no exception: a pending SError is deferred into DISR_EL1.
    let deferred = (a.esb && has_ras).then(|| {
        sysreg::esb();
        sysreg::read_disr(true)
    });
    a.mb.with_report(|r| {
        r.serror.ran = 1;
        r.serror.isr_masked = isr;
        if let Some(disr) = deferred {
            r.serror.disr = disr;
            r.serror.esb_executed = 1;
        }
    });
    // A pending SError is taken here, into the handler, which ends the step.
    unmask_serror_noting(unmask);
    // Nothing was pending: mask again.
    sysreg::mask_serror();
}
