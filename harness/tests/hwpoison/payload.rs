//! The guest payload under real KVM. Each trial builds its own VM, reads as a story, and
//! is reported as ignored, with the reason, when /dev/kvm or a capability is missing.

use libtest_mimic::{Completion, Failed, Trial};
use ras_guest_abi::doorbell::Event;
use ras_guest_abi::mailbox::{Access, State};
use ras_guest_abi::map::{self, mailbox_offset};
use ras_guest_abi::{Params, Report, ABI_VERSION, PARAMS_MAGIC, REPORT_MAGIC};
use ras_harness::kvm::{Backing, Cap, CoreReg, Mapping, RunState, Stop, Vcpu, Vm, Watchdog};
use ras_harness::payload;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::ignorable_test(
            "payload::boot_without_access_rings_doorbells_and_powers_off",
            boot_without_access_rings_doorbells_and_powers_off,
        ),
        Trial::ignorable_test(
            "payload::store_to_unbacked_gpa_takes_the_injected_external_abort",
            store_to_unbacked_gpa_takes_the_injected_external_abort,
        ),
    ]
}

/// Generous: a nested KVM_RUN round trip under TCG takes about 9 ms.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A one-vCPU VM with the payload in RAM, `params` in mailbox 0, no target memslot.
fn boot(params: Params) -> Result<(Vm, Vcpu), Completion> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(Completion::ignored_with("no /dev/kvm"));
    }
    let mut vm = Vm::new().expect("create VM");
    let ram = Mapping::new(Backing::Anonymous, map::RAM_SIZE as usize).expect("map RAM");
    vm.add_memory(map::RAM_BASE, ram).expect("RAM memslot");
    vm.write_guest(map::RAM_BASE, payload::IMAGE)
        .expect("load image");
    let mailbox = map::mailbox_base(0).unwrap();
    vm.write_guest(mailbox + mailbox_offset::PARAMS, params.as_bytes())
        .expect("write params");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    vm.create_gic_v3(map::GIC_DIST_BASE, map::GIC_REDIST_BASE)
        .expect("GICv3");
    vcpu.set_core(CoreReg::Pc, payload::ENTRY).expect("PC");
    vcpu.set_core(CoreReg::X(0), mailbox).expect("x0");
    Ok((vm, vcpu))
}

fn params(access: Access, el: u32, targets: &[u64]) -> Params {
    let mut p = Params {
        magic: PARAMS_MAGIC,
        abi_version: ABI_VERSION,
        access: access as u32,
        el,
        target_count: targets.len() as u32,
        ..Params::default()
    };
    p.targets[..targets.len()].copy_from_slice(targets);
    p
}

fn report(vm: &Vm) -> Report {
    let mut bytes = vec![0u8; std::mem::size_of::<Report>()];
    let at = map::mailbox_base(0).unwrap() + mailbox_offset::REPORT;
    vm.read_guest(at, &mut bytes).expect("read report");
    Report::from_bytes(&bytes).expect("report size")
}

/// Boot with access=none: the guest rings its doorbells in order, powers off, and its
/// report says it ran (a non-zero counter frequency, no exceptions).
fn boot_without_access_rings_doorbells_and_powers_off() -> Result<Completion, Failed> {
    let (vm, mut vcpu) = match boot(params(Access::None, 1, &[map::TARGET_BASE])) {
        Ok(booted) => booted,
        Err(skip) => return Ok(skip),
    };
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(
        vcpu.run_until_stop(&mut state).unwrap(),
        Stop::ReadyForFault { step: 0 }
    );
    assert_eq!(vcpu.run_until_stop(&mut state).unwrap(), Stop::SystemOff);
    assert_eq!(
        state.events(),
        [
            Event::Ready,
            Event::ReadyForFault,
            Event::StepDone,
            Event::Done
        ]
        .map(Some)
    );
    let r = report(&vm);
    assert_eq!(r.magic, REPORT_MAGIC);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_ne!(r.cntfrq, 0);
    assert_eq!((r.exception_count, r.steps_done), (0, 1));
    assert_ne!(r.counter_before[0], 0);
    Ok(Completion::Completed)
}

/// A store to an unbacked GPA exits as KVM_EXIT_MMIO; the VMM answers with
/// ext_dabt_pending and the guest records a synchronous external abort at 0x200 (current
/// EL, SPx) with ESR 0x96000010 (EC 0x25, IL, FSC 0x10; KVM's injection reports no WnR)
/// and FAR = the target, then carries on to SYSTEM_OFF.
fn store_to_unbacked_gpa_takes_the_injected_external_abort() -> Result<Completion, Failed> {
    let (vm, mut vcpu) = match boot(params(Access::Store, 1, &[map::TARGET_BASE])) {
        Ok(booted) => booted,
        Err(skip) => return Ok(skip),
    };
    if !vm.caps().has(Cap::ArmInjectExtDabt) {
        return Ok(Completion::ignored_with("no KVM_CAP_ARM_INJECT_EXT_DABT"));
    }
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(
        vcpu.run_until_stop(&mut state).unwrap(),
        Stop::ReadyForFault { step: 0 }
    );
    assert_eq!(
        vcpu.run_until_stop(&mut state).unwrap(),
        Stop::Mmio {
            addr: map::TARGET_BASE,
            write: true,
            len: 8
        }
    );
    // Retire the MMIO access first (older kernels would otherwise also skip an
    // instruction at the vector), then point PC back at the store so ELR names it.
    vcpu.complete_mmio().unwrap();
    let store_pc = vcpu.get_core(CoreReg::Pc).unwrap() - 4;
    vcpu.set_core(CoreReg::Pc, store_pc).unwrap();
    vcpu.inject_ext_dabt().unwrap();
    assert_eq!(vcpu.run_until_stop(&mut state).unwrap(), Stop::SystemOff);

    assert_eq!(
        state.events(),
        [
            Event::Ready,
            Event::ReadyForFault,
            Event::ExceptionRecorded,
            Event::StepDone,
            Event::Done
        ]
        .map(Some)
    );
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!(r.exception_count, 1, "{r:#x?}");
    let e = r.records[0];
    assert_eq!(e.vector_offset, 0x200, "{e:#x?}");
    // Kernel 6.1 sign-extends the injected ESR: compare 32 bits.
    assert_eq!(e.esr as u32, 0x9600_0010, "{e:#x?}");
    assert_eq!(e.far, map::TARGET_BASE, "{e:#x?}");
    assert_eq!(e.elr, store_pc, "{e:#x?}");
    assert_eq!(e.step, 0);
    Ok(Completion::Completed)
}
