//! The ras-harness guest payload: one bare-metal program any arm64 VMM boots as it boots
//! Linux, its behaviour chosen by its bootargs (see the `ras_guest_abi` crate for the
//! contract).
//!
//! Flow: [`entry`] (assembly: the Image header, self-relocation, this vCPU's mailbox) sets
//! up the stack, FP/SIMD and VBAR_EL1 and calls [`payload_main`], which reads the device
//! tree ([`boot`]; under UEFI firmware, what [`efi`] learned instead), turns the MMU on ([`paging`]), runs one guarded step per target
//! ([`steps`]), optionally the SError wait, the ACPI walk ([`acpi`]), and ends with PSCI SYSTEM_OFF (vCPU 0, once the others are done) or CPU_OFF (the
//! others). Exceptions go to [`exceptions`], which records them in
//! the report (with ACPI, after the [`acpi`] walk to the record an OS would read) and
//! resumes after the step, never re-executing the faulting access.

#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

mod acpi;
mod boot;
mod console;
mod efi;
mod entry;
mod exceptions;
mod mailbox;
mod paging;
mod platform;
mod steps;
mod sysreg;

use boot::BootError;
use mailbox::Mailbox;
use platform::{fatal, ring};
use ras_guest_abi::doorbell::{Doorbell, Event, FatalReason};
use ras_guest_abi::mailbox::{flags, Access, State};
use ras_guest_abi::REPORT_MAGIC;

/// Called by `_start` with the DTB, this vCPU's mailbox and index, and the image base;
/// never returns.
#[no_mangle]
extern "C" fn payload_main(dtb: u64, mailbox: u64, index: usize, image_base: u64) -> ! {
    let mb = Mailbox::at(mailbox);
    // With the MMU off: the page tables depend on the access EL (the target is mapped for
    // EL0 or for EL1 execution).
    let boot = boot::read(dtb, index, image_base);
    paging::enable_identity_map(mb, image_base, boot.params.el, boot.tables);

    mb.init(index, image_base);
    let params = boot.params;
    mb.set_boot(&params, boot.uart, boot.psci_smc, boot.tables);
    mb.with_report(|r| {
        r.magic = REPORT_MAGIC;
        r.state = State::Running as u32;
        r.cntfrq = read_sysreg!("cntfrq_el0");
        r.id_aa64pfr0 = read_sysreg!("id_aa64pfr0_el1");
        r.dtb = boot.dtb;
    });
    match boot.error {
        Some(BootError::Dtb(e)) => {
            say!(mb, "fatal cpu={index} no device tree at x0={dtb:#x}: {e:?}");
            fatal(mb, 0, FatalReason::BadParams)
        }
        Some(BootError::Bootargs(key, len, problem)) => {
            let key = core::str::from_utf8(&key[..len]).unwrap_or("?");
            say!(
                mb,
                "fatal cpu={index} bootargs: {key}: {}",
                problem.as_str()
            );
            fatal(mb, 0, FatalReason::BadParams)
        }
        None => {}
    }
    let Some(access) = Access::from_code(params.access) else {
        fatal(mb, 0, FatalReason::BadParams)
    };
    mb.with_scratch(|s| s.has_ras = u64::from(sysreg::has_feat_ras()));
    ring(mb, Doorbell::new(Event::Ready, 0, 0));
    // vCPU 0 starts the others, as an OS does (a VMM that started them says ALREADY_ON).
    if index == 0 {
        for other in 1..u64::from(params.vcpus) {
            if !platform::cpu_on(mb, other, image_base, dtb) {
                say!(mb, "fatal cpu=0 CPU_ON refused for cpu={other}");
                fatal(mb, 0, FatalReason::CpuOnFailed)
            }
        }
    }
    mb.wait_for_other_vcpus_started(params.vcpus);

    if params.flags & flags::HANG != 0 {
        loop {
            core::hint::spin_loop();
        }
    }
    if params.flags & flags::DOORBELL_LOOP != 0 {
        // The null-exit floor: nothing between two exits but the counter read.
        let mut count: u16 = 0;
        loop {
            let now = read_sysreg!("cntvct_el0");
            ring(mb, Doorbell::new(Event::ReadyForFault, count, now as u32));
            count = count.wrapping_add(1);
        }
    }

    let steps = (params.target_count as usize).min(params.targets.len());
    for (i, &target) in params.targets[..steps].iter().enumerate() {
        let step = i as u16;
        mb.with_report(|r| r.step = u32::from(step));
        steps::run_access(mb, step, &params, access, target);
        step_done(mb, step);
    }

    if params.flags & flags::SERROR_WAIT != 0 {
        let step = steps as u16;
        mb.with_report(|r| r.step = u32::from(step));
        steps::run_serror_wait(mb, step, params.flags & flags::SERROR_ESB != 0);
        step_done(mb, step);
    }

    let (done, exceptions) = mb.with_report(|r| {
        r.step = r.steps_done;
        (r.steps_done, r.exception_count)
    });
    // Through the doorbell, Done is written after ringing: vCPU 0 waits for it before its
    // SYSTEM_OFF, so no doorbell is lost. Through the handshake, before: the host reads
    // the report when the announcement arrives, and may never see it again.
    let handshake = params.doorbell_gpa == 0;
    if handshake {
        mb.with_report(|r| r.state = State::Done as u32);
    }
    ring(mb, Doorbell::new(Event::Done, done as u16, exceptions));
    if !handshake {
        mb.with_report(|r| r.state = State::Done as u32);
    }
    if mb.is_first() {
        mb.wait_for_other_vcpus(params.vcpus);
        platform::system_off(mb)
    } else {
        platform::cpu_off(mb)
    }
}

/// Counts step `step` done and tells the VMM.
fn step_done(mb: Mailbox, step: u16) {
    let exceptions = mb.with_report(|r| {
        r.steps_done += 1;
        r.exception_count
    });
    ring(mb, Doorbell::new(Event::StepDone, step, exceptions));
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    fatal(Mailbox::current(), 0, FatalReason::Panic)
}

// The mailbox layout the assembly relies on.
const _: () = assert!(ras_guest_abi::map::mailbox_offset::EL1_STACK_TOP == 0x1_0000);
