//! The ways out of the guest: announcements (the MMIO doorbell or the mailbox handshake,
//! and a console line) and PSCI.

use crate::mailbox::Mailbox;
use crate::say;
use core::arch::asm;
use ras_guest_abi::doorbell::{Doorbell, Event, FatalReason};
use ras_guest_abi::mailbox::State;

/// PSCI function ids (Arm DEN0022, PSCI 0.2+, table "Function IDs"): SYSTEM_OFF and
/// CPU_OFF, both SMC32 calls.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
/// CPU_ON, SMC64 (DEN0022 "Function IDs"); its return values SUCCESS 0 and ALREADY_ON -4
/// (DEN0022 "Return error codes").
const PSCI_CPU_ON: u64 = 0xC400_0003;
const PSCI_SUCCESS: i64 = 0;
const PSCI_ALREADY_ON: i64 = -4;

/// Announces `d`: one store to the doorbell when bootargs named one, else the mailbox
/// handshake; and a console line.
pub fn ring(mb: Mailbox, d: Doorbell) {
    say_event(mb, d);
    let doorbell = mb.params().doorbell_gpa;
    if doorbell == 0 {
        mb.handshake(d.encode());
        return;
    }
    // SAFETY: the doorbell is device memory (the identity map's first GiB) backed by
    // nothing but the VMM; the store has a valid syndrome (single register, no writeback)
    // so KVM can decode it. `dsb sy` first makes every earlier report write visible.
    unsafe {
        asm!(
            "dsb sy",          // complete all earlier stores (the report) first
            "str {v}, [{a}]",  // the doorbell store itself
            v = in(reg) d.encode(),
            a = in(reg) doorbell,
            options(nostack),
        )
    };
}

/// The console line of an announcement: `ras: EVENT cpu=N step=S` and its argument.
pub fn say_event(mb: Mailbox, d: Doorbell) {
    let cpu = mb.with_scratch(|s| s.index);
    let (step, arg) = (d.step, d.arg);
    match d.kind() {
        Some(Event::Ready) => say!(mb, "ready cpu={cpu} mailbox={:#x}", mb.base()),
        Some(Event::ReadyForFault) => say!(mb, "ready-for-fault cpu={cpu} step={step}"),
        Some(Event::ExceptionRecorded) => {
            say!(mb, "exception-recorded cpu={cpu} step={step} index={arg}")
        }
        Some(Event::StepDone) => say!(mb, "step-done cpu={cpu} step={step} exceptions={arg}"),
        Some(Event::Done) => say!(mb, "done cpu={cpu} steps={step} exceptions={arg}"),
        Some(Event::ExceptionTaken) => say!(mb, "exception-taken cpu={cpu} step={step}"),
        Some(Event::Fatal) => say!(mb, "fatal cpu={cpu} step={step} reason={arg}"),
        None => {}
    }
}

/// PSCI SYSTEM_OFF; if it ever returns, reports that and parks the vCPU (the
/// VMM's watchdog then stops it).
pub fn system_off(mb: Mailbox) -> ! {
    psci_system_off(mb);
    mb.with_report(|r| r.state = State::Fatal as u32);
    ring(
        mb,
        Doorbell::new(Event::Fatal, 0, FatalReason::SystemOffReturned as u32),
    );
    park()
}

/// Issues SYSTEM_OFF, touching no memory but the scratch's conduit (usable from a nested
/// exception).
pub fn psci_system_off(mb: Mailbox) {
    psci_call(mb, PSCI_SYSTEM_OFF);
}

/// PSCI CPU_OFF for a vCPU other than vCPU 0 (see `ras_guest_abi`, "How a vCPU ends"):
/// this vCPU stops, the VM runs on. If it returns, the call was refused: fatal.
pub fn cpu_off(mb: Mailbox) -> ! {
    psci_call(mb, PSCI_CPU_OFF);
    fatal(mb, 0, FatalReason::CpuOffReturned)
}

/// Starts vCPU `index` (MPIDR Aff0 = index % 16, Aff1 = index / 16, the numbering `_start`
/// reads back) at the image's first byte with x0 = `dtb`, as PSCI CPU_ON does: MMU off, at
/// EL1. A VMM that starts every vCPU itself (the reference VMM) answers ALREADY_ON.
/// Returns whether the vCPU is running.
pub fn cpu_on(mb: Mailbox, index: u64, image_base: u64, dtb: u64) -> bool {
    let mpidr = (index % 16) | (index / 16) << 8;
    let ret: i64;
    // SAFETY: a PSCI call (SMCCC): CPU_ON returns in x0 and clobbers at most x1-x3; the new
    // vCPU enters the payload's own entry code with its own mailbox and stack.
    unsafe {
        if mb.psci_smc() {
            asm!(
                "smc #0", // SMC Calling Convention call to the secure monitor
                inout("x0") PSCI_CPU_ON => ret,
                inout("x1") mpidr => _, inout("x2") image_base => _, inout("x3") dtb => _,
                options(nostack),
            )
        } else {
            asm!(
                "hvc #0", // SMC Calling Convention call to the hypervisor
                inout("x0") PSCI_CPU_ON => ret,
                inout("x1") mpidr => _, inout("x2") image_base => _, inout("x3") dtb => _,
                options(nostack),
            )
        }
    };
    ret == PSCI_SUCCESS || ret == PSCI_ALREADY_ON
}

/// One argument-less PSCI call, over the conduit `/psci` `method` names (HVC by default).
fn psci_call(mb: Mailbox, function: u64) {
    // SAFETY: a call to the PSCI implementation (KVM's, or firmware's over SMC);
    // SYSTEM_OFF and CPU_OFF do not return on success and clobber at most x0-x3 (SMCCC)
    // otherwise.
    unsafe {
        if mb.psci_smc() {
            asm!(
                "smc #0", // SMC Calling Convention call to the secure monitor
                inout("x0") function => _,
                out("x1") _, out("x2") _, out("x3") _,
                options(nostack),
            )
        } else {
            asm!(
                "hvc #0", // SMC Calling Convention call to the hypervisor
                inout("x0") function => _,
                out("x1") _, out("x2") _, out("x3") _,
                options(nostack),
            )
        }
    };
}

/// Waits for interrupts forever (all are masked, so this only ends with the VM).
pub fn park() -> ! {
    loop {
        // SAFETY: wfi only waits.
        unsafe {
            asm!(
                "wfi", // wait for an interrupt that never comes
                options(nomem, nostack),
            )
        };
    }
}

/// Marks the report fatal, rings `Fatal(reason)` and powers off.
pub fn fatal(mb: Mailbox, step: u16, reason: FatalReason) -> ! {
    mb.with_report(|r| r.state = State::Fatal as u32);
    ring(mb, Doorbell::new(Event::Fatal, step, reason as u32));
    system_off(mb)
}
