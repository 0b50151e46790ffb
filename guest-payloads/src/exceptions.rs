//! The exception handler: record what the vector saw, then resume after the step.

use crate::acpi;
use crate::entry::guard_resume;
use crate::mailbox::Mailbox;
use crate::platform::{fatal, park, psci_system_off, ring};
use crate::{read_sysreg, say};
use ras_guest_abi::arch::{ESR_ELx_EC_SHIFT, ESR_ELx_EC_SVC64, VECTOR_LOWER_A64_SYNC};
use ras_guest_abi::doorbell::{Doorbell, Event, FatalReason};
use ras_guest_abi::mailbox::{flags, ExceptionRecord, NO_STEP};

/// Entered from every vector with its offset; never returns to the interrupted code.
#[no_mangle]
extern "C" fn handle_exception(vector_offset: u64) -> ! {
    let mb = Mailbox::current();
    let (nested, in_el0, armed, step) =
        mb.with_scratch(|s| (s.in_handler != 0, s.in_el0 != 0, s.armed != 0, s.step));
    if nested {
        // The handler itself faulted: touch as little as possible and stop.
        psci_system_off(mb);
        park();
    }
    mb.with_scratch(|s| s.in_handler = 1);

    let esr = read_sysreg!("esr_el1");
    // An EL0 step ends with `svc #0`: that is the step returning, not an observation.
    if vector_offset == VECTOR_LOWER_A64_SYNC
        && esr >> ESR_ELx_EC_SHIFT == u64::from(ESR_ELx_EC_SVC64)
        && in_el0
    {
        resume(mb, 0);
    }

    let mut record = ExceptionRecord {
        vector_offset,
        esr,
        far: read_sysreg!("far_el1"),
        elr: read_sysreg!("elr_el1"),
        spsr: read_sysreg!("spsr_el1"),
        isr: read_sysreg!("isr_el1"),
        cntvct: read_sysreg!("cntvct_el0"),
        step: if armed { step } else { NO_STEP },
        cper: Default::default(),
    };
    let index = mb.with_report(|r| {
        let index = r.exception_count;
        // Past MAX_RECORDS the exception is only counted.
        if let Some(slot) = r.records.get_mut(index as usize) {
            *slot = record;
        }
        r.exception_count = index.saturating_add(1);
        index
    });
    // As an OS does when notified (Linux: ghes_notify_sea from do_sea), look for the
    // error record now, at this exception: through the handshake, once the host knows.
    let params = mb.params();
    if params.doorbell_gpa == 0 {
        ring(
            mb,
            Doorbell::new(Event::ExceptionTaken, record.step as u16, index),
        );
    }
    if params.flags & flags::WALK_ACPI != 0 && params.rsdp_gpa != 0 {
        let ack = params.flags & flags::ACK != 0;
        mb.with_report(|r| {
            acpi::walk(params.rsdp_gpa, ack, &mut r.acpi, &mut record.cper);
            if let Some(slot) = r.records.get_mut(index as usize) {
                slot.cper = record.cper;
            }
        });
    }
    let step = record.step as u16;
    let cpu = mb.with_scratch(|s| s.index);
    say!(
        mb,
        "exception cpu={cpu} step={} vector={vector_offset:#x} esr={esr:#x} far={:#x} elr={:#x} record={}",
        record.step as i64,
        record.far,
        record.elr,
        record.cper.record_len
    );
    ring(mb, Doorbell::new(Event::ExceptionRecorded, step, index));

    if armed {
        resume(mb, 1);
    }
    fatal(mb, step, FatalReason::UnexpectedException)
}

/// Leaves the handler and returns `value` from the step's `guard_call`.
fn resume(mb: Mailbox, value: u64) -> ! {
    mb.with_scratch(|s| {
        s.in_handler = 0;
        s.in_el0 = 0;
        s.armed = 0;
    });
    // SAFETY: `armed` (or `in_el0`, set only inside a guard) says guard_call filled the
    // buffer and its frame is still live: the step runs below it on the same stack.
    unsafe { guard_resume(mb.jmpbuf(), value) }
}
