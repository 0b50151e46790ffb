//! The two ways out of the guest: the MMIO doorbell and PSCI.

use crate::mailbox::Mailbox;
use core::arch::asm;
use ras_guest_abi::doorbell::{Doorbell, Event, FatalReason};
use ras_guest_abi::mailbox::State;
use ras_guest_abi::map::DOORBELL;

/// PSCI function ids (Arm DEN0022, PSCI 0.2+, table "Function IDs"): SYSTEM_OFF and
/// CPU_OFF, both SMC32 calls.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_CPU_OFF: u64 = 0x8400_0002;

/// Rings the doorbell: one 8-byte `str` to device memory, which KVM cannot satisfy from a
/// memslot and so reports as one KVM_EXIT_MMIO carrying `d.encode()`.
pub fn ring(d: Doorbell) {
    // SAFETY: DOORBELL is mapped as device memory and backed by nothing but the VMM; the
    // store has a valid syndrome (single register, no writeback) so KVM can decode it.
    // `dsb sy` first makes every earlier report write visible before the VMM looks.
    unsafe {
        asm!(
            "dsb sy",          // complete all earlier stores (the report) first
            "str {v}, [{a}]",  // the doorbell store itself
            v = in(reg) d.encode(),
            a = in(reg) DOORBELL,
            options(nostack),
        )
    };
}

/// PSCI SYSTEM_OFF over HVC; if it ever returns, reports that and parks the vCPU (the
/// VMM's watchdog then stops it).
pub fn system_off(mb: Mailbox) -> ! {
    psci_system_off();
    mb.with_report(|r| r.state = State::Fatal as u32);
    ring(Doorbell::new(
        Event::Fatal,
        0,
        FatalReason::SystemOffReturned as u32,
    ));
    park()
}

/// Issues SYSTEM_OFF without touching memory (usable from a nested exception).
pub fn psci_system_off() {
    psci_call(PSCI_SYSTEM_OFF);
}

/// PSCI CPU_OFF for a vCPU other than vCPU 0 (see `ras_guest_abi`, "How a vCPU ends"):
/// this vCPU stops, the VM runs on. If it returns, the call was refused: fatal.
pub fn cpu_off(mb: Mailbox) -> ! {
    psci_call(PSCI_CPU_OFF);
    fatal(mb, 0, FatalReason::CpuOffReturned)
}

/// One argument-less PSCI call over HVC.
fn psci_call(function: u64) {
    // SAFETY: an HVC to the PSCI implementation in KVM; SYSTEM_OFF and CPU_OFF do not
    // return on success and clobber at most x0-x3 (SMCCC) otherwise.
    unsafe {
        asm!(
            "hvc #0", // SMC Calling Convention call to the hypervisor
            inout("x0") function => _,
            out("x1") _, out("x2") _, out("x3") _,
            options(nostack),
        )
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
    ring(Doorbell::new(Event::Fatal, step, reason as u32));
    system_off(mb)
}
