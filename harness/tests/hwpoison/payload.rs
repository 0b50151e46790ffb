//! The guest payload under real KVM, path by path, no poison needed: an unbacked target
//! GPA gives KVM_EXIT_MMIO, and the VMM answers with KVM's injection (ext_dabt, SError)
//! or by emulating the exception entry with KVM_SET_ONE_REG, as QEMU does. Each trial
//! builds its own VM, reads as a story, asserts what the guest recorded, and is reported
//! as ignored, with the reason, when /dev/kvm or a capability is missing.

use libtest_mimic::{Completion, Failed, Trial};
use ras_guest_abi::arch::{
    SPSR_DAIF, SPSR_M_EL0T, SPSR_M_EL1H, SPSR_M_MASK, VECTOR_CUR_SPX_SERROR, VECTOR_CUR_SPX_SYNC,
    VECTOR_LOWER_A64_SYNC,
};
use ras_guest_abi::doorbell::{Doorbell, Event, FatalReason};
use ras_guest_abi::mailbox::{acpi_found, flags, Access, State};
use ras_guest_abi::map;
use ras_guest_abi::{Params, Report, ABI_VERSION, REPORT_MAGIC};
use ras_harness::formats::acpi::{AcpiLayout, AcpiTables, Notify};
use ras_harness::formats::cper::{memory_error_record, Profile, Severity};
use ras_harness::kvm::{
    self, regs, Backing, Cap, CoreReg, Mapping, RunState, Stop, Vcpu, Vm, Watchdog,
};
use ras_harness::payload;
use std::os::unix::thread::JoinHandleExt;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let t = |name: &str, f: fn() -> Result<Completion, Failed>| {
        Trial::ignorable_test(format!("payload::{name}"), f)
    };
    vec![
        t(
            "boot_without_access_rings_doorbells_and_powers_off",
            boot_without_access_rings_doorbells_and_powers_off,
        ),
        t(
            "store_to_unbacked_gpa_takes_the_injected_external_abort",
            store_to_unbacked_gpa_takes_the_injected_external_abort,
        ),
        t(
            "el0_load_and_store_take_the_injected_sea_at_lower_el_vector",
            el0_load_and_store_take_the_injected_sea_at_lower_el_vector,
        ),
        t(
            "el0_load_takes_an_emulated_sea_entry_like_qemus",
            el0_load_takes_an_emulated_sea_entry_like_qemus,
        ),
        t(
            "stores_reach_every_target_backing",
            stores_reach_every_target_backing,
        ),
        t(
            "ifetch_at_el1_runs_backed_code_and_kvm_aborts_unbacked",
            ifetch_at_el1_runs_backed_code_and_kvm_aborts_unbacked,
        ),
        t(
            "ifetch_at_el0_runs_backed_code_and_kvm_aborts_unbacked",
            ifetch_at_el0_runs_backed_code_and_kvm_aborts_unbacked,
        ),
        t(
            "masked_serror_with_esr_is_pending_then_taken_at_0x380",
            masked_serror_with_esr_is_pending_then_taken_at_0x380,
        ),
        t(
            "masked_serror_without_esr_is_taken_with_ids",
            masked_serror_without_esr_is_taken_with_ids,
        ),
        t(
            "esb_defers_a_masked_serror_into_disr",
            esb_defers_a_masked_serror_into_disr,
        ),
        t(
            "acpi_walk_copies_the_record_and_acknowledges",
            acpi_walk_copies_the_record_and_acknowledges,
        ),
        t("the_device_tree_is_read", the_device_tree_is_read),
        t(
            "two_vcpus_each_record_their_own_abort_and_vcpu0_powers_off_last",
            two_vcpus_each_record_their_own_abort_and_vcpu0_powers_off_last,
        ),
        t(
            "a_hung_guest_is_kicked_by_the_watchdog",
            a_hung_guest_is_kicked_by_the_watchdog,
        ),
        t(
            "junk_params_end_in_fatal_and_system_off",
            junk_params_end_in_fatal_and_system_off,
        ),
    ]
}

/// Generous: a nested KVM_RUN round trip under TCG takes about 9 ms.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the two-vCPU trial holds vCPU 1 in its MMIO exit: far longer than vCPU 0
/// needs to finish (about 20 exits, well under 0.2 s here).
const VCPU1_DELAY: Duration = Duration::from_millis(300);
/// KVM_MP_STATE_STOPPED (include/uapi/linux/kvm.h): a powered-off vCPU.
const KVM_MP_STATE_STOPPED: u32 = 5;
/// Where the target memslot ends when a trial backs it: the first 2 MiB of the target
/// slot are memory, the next 2 MiB (still mapped by the guest) are not.
const BACKED_TARGET_LEN: u64 = 2 << 20;
const UNBACKED_TARGET: u64 = map::TARGET_BASE + BACKED_TARGET_LEN;

// ESR_EL1 values (Arm ARM D24.2.45: EC [31:26], IL [25], ISS [24:0]; docs/ras-facts.md §6).
/// Data abort from EL1 (EC 0x25), IL, FSC 0x10 synchronous external abort.
const ESR_DABT_CUR_SEA: u32 = 0x9600_0010;
/// Data abort from EL0 (EC 0x24), IL, FSC 0x10.
const ESR_DABT_LOW_SEA: u32 = 0x9200_0010;
/// The same with FnV (bit 10): what QEMU injects, FAR not valid.
const ESR_DABT_LOW_SEA_FNV: u32 = 0x9200_0410;
/// Instruction abort from EL1 (EC 0x21) / EL0 (EC 0x20), IL, FSC 0x10.
const ESR_IABT_CUR_SEA: u32 = 0x8600_0010;
const ESR_IABT_LOW_SEA: u32 = 0x8200_0010;
/// SError (EC 0x2F), IL, with ISS 0x811: AET UEO (0b010 << 10), EA 0, DFSC 0x11.
const SERROR_ISS_UEO: u64 = 0x811;
const ESR_SERROR_UEO: u32 = 0xBE00_0811;
/// SError as KVM injects it without an ESR: IDS (bit 24), ISS otherwise 0.
const ESR_SERROR_IDS: u32 = 0xBF00_0000;

/// ISR_EL1.A (bit 8): an SError is pending (Arm ARM D24.2.118).
const ISR_A: u64 = 1 << 8;
/// DISR_EL1.A (bit 31): an SError was deferred by ESB (Arm ARM D24.9.1).
const DISR_A: u64 = 1 << 31;

/// PSTATE as an exception entry to EL1h sets it: M[3:0] = EL1h, D, A, I, F masked (0x3c5).
const PSTATE_EL1H_DAIF: u64 = SPSR_M_EL1H | SPSR_DAIF;

/// A VM with guest RAM holding the payload, or a skip without /dev/kvm.
fn vm_with_payload() -> Result<Vm, Completion> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(Completion::ignored_with("no /dev/kvm"));
    }
    let mut vm = Vm::new().expect("create VM");
    kvm::boot::add_payload_ram(&mut vm).expect("payload RAM");
    Ok(vm)
}

/// vCPU `i` runs `params[i]`: the device tree with their bootargs, then each vCPU.
fn add_vcpus(vm: &Vm, params: &[Params]) -> Vec<Vcpu> {
    kvm::boot::write_device_tree(vm, params, BACKED_TARGET_LEN).expect("device tree");
    (0..params.len())
        .map(|i| kvm::boot::add_payload_vcpu(vm, i).expect("vCPU"))
        .collect()
}

fn add_vcpu(vm: &Vm, params: &Params) -> Vcpu {
    add_vcpus(vm, std::slice::from_ref(params)).remove(0)
}

fn add_gic(vm: &Vm) {
    kvm::boot::add_gic(vm).expect("GICv3");
}

/// A one-vCPU VM with the payload and `params`, no target memslot.
fn boot(params: Params) -> Result<(Vm, Vcpu), Completion> {
    let vm = vm_with_payload()?;
    let vcpu = add_vcpu(&vm, &params);
    add_gic(&vm);
    Ok((vm, vcpu))
}

/// Backs the first [`BACKED_TARGET_LEN`] bytes of the target slot as `backing`.
fn back_target(vm: &mut Vm, backing: Backing) -> Result<(), kvm::Error> {
    let target = Mapping::new(backing, BACKED_TARGET_LEN as usize)?;
    vm.add_memory(map::TARGET_BASE, target).map(drop)
}

fn params(access: Access, el: u32, targets: &[u64]) -> Params {
    Params::new(access, el, 0, targets)
}

fn report_of(vm: &Vm, index: usize) -> Report {
    kvm::boot::read_report(vm, index).expect("read report")
}

fn report(vm: &Vm) -> Report {
    report_of(vm, 0)
}

fn run(vcpu: &mut Vcpu, state: &mut RunState) -> Stop {
    vcpu.run_until_stop(state).expect("KVM_RUN")
}

fn events(list: &[Event]) -> Vec<Option<Event>> {
    list.iter().copied().map(Some).collect()
}

/// Answers the MMIO exit of a faulting access the way the harness injects an SEA: retire
/// the access (KVM_RUN with immediate_exit; without it older kernels also skip an
/// instruction at the vector), put PC back on it so ELR names it, then ext_dabt_pending.
/// Returns the access's PC.
fn answer_with_ext_dabt(vcpu: &mut Vcpu) -> u64 {
    vcpu.complete_mmio().unwrap();
    let pc = vcpu.get_core(CoreReg::Pc).unwrap() - 4;
    vcpu.set_core(CoreReg::Pc, pc).unwrap();
    vcpu.inject_ext_dabt().unwrap();
    pc
}

/// The A64 instruction the guest image holds at `pc`.
fn instruction_at(pc: u64) -> u32 {
    let at = (pc - map::RAM_BASE) as usize;
    u32::from_le_bytes(payload::IMAGE[at..at + 4].try_into().unwrap())
}

/// LDR/STR (immediate, unsigned offset), 64-bit: bits 31:22 = 0b1111100101 / 0b1111100100.
fn is_ldr64(insn: u32) -> bool {
    insn & 0xffc0_0000 == 0xf940_0000
}
fn is_str64(insn: u32) -> bool {
    insn & 0xffc0_0000 == 0xf900_0000
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
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);
    assert_eq!(
        state.events(),
        events(&[
            Event::Ready,
            Event::ReadyForFault,
            Event::StepDone,
            Event::Done
        ])
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
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
    assert_eq!(
        run(&mut vcpu, &mut state),
        Stop::Mmio {
            addr: map::TARGET_BASE,
            write: true,
            len: 8
        }
    );
    let store_pc = answer_with_ext_dabt(&mut vcpu);
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);

    assert_eq!(
        state.events(),
        events(&[
            Event::Ready,
            Event::ReadyForFault,
            Event::ExceptionRecorded,
            Event::StepDone,
            Event::Done
        ])
    );
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!(r.exception_count, 1, "{r:#x?}");
    let e = r.records[0];
    assert_eq!(e.vector_offset, VECTOR_CUR_SPX_SYNC, "{e:#x?}");
    // Kernel 6.1 sign-extends the injected ESR: compare 32 bits.
    assert_eq!(e.esr as u32, ESR_DABT_CUR_SEA, "{e:#x?}");
    assert_eq!(e.far, map::TARGET_BASE, "{e:#x?}");
    assert_eq!(e.elr, store_pc, "{e:#x?}");
    assert_eq!(e.step, 0);
    Ok(Completion::Completed)
}

/// EL0 under the identity map: the guest erets to its EL0 code, which loads from (then, in
/// a second VM, stores to) an unbacked target. The access exits as MMIO with the EL0 PC;
/// ext_dabt_pending makes KVM build the exception from the EL0 context: vector 0x400
/// (lower EL, AArch64), ESR 0x92000010 (EC 0x24), FAR = target, ELR = the EL0 ldr/str,
/// SPSR.M = EL0t. The handler ends the step and the guest goes on to SYSTEM_OFF.
fn el0_load_and_store_take_the_injected_sea_at_lower_el_vector() -> Result<Completion, Failed> {
    for (access, write) in [(Access::Load, false), (Access::Store, true)] {
        let (vm, mut vcpu) = match boot(params(access, 0, &[map::TARGET_BASE])) {
            Ok(booted) => booted,
            Err(skip) => return Ok(skip),
        };
        if !vm.caps().has(Cap::ArmInjectExtDabt) {
            return Ok(Completion::ignored_with("no KVM_CAP_ARM_INJECT_EXT_DABT"));
        }
        let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
        let mut state = RunState::default();
        assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
        let addr = map::TARGET_BASE;
        let len = 8;
        assert_eq!(run(&mut vcpu, &mut state), Stop::Mmio { addr, write, len });
        let pc = answer_with_ext_dabt(&mut vcpu);
        assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff, "{access:?}");

        let insn = instruction_at(pc);
        let right_insn = if write {
            is_str64(insn)
        } else {
            is_ldr64(insn)
        };
        assert!(right_insn, "{access:?}: {insn:#010x} at {pc:#x}");
        let r = report(&vm);
        assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
        assert_eq!((r.exception_count, r.steps_done), (1, 1), "{r:#x?}");
        let e = r.records[0];
        assert_eq!(e.vector_offset, VECTOR_LOWER_A64_SYNC, "{access:?} {e:#x?}");
        assert_eq!(e.esr as u32, ESR_DABT_LOW_SEA, "{access:?} {e:#x?}");
        assert_eq!(e.far, map::TARGET_BASE, "{access:?} {e:#x?}");
        assert_eq!(e.elr, pc, "{access:?} {e:#x?}");
        assert_eq!(e.spsr & SPSR_M_MASK, SPSR_M_EL0T, "{access:?} {e:#x?}");
        println!(
            "{access:?} at EL0: vector {:#x} ESR {:#x} FAR {:#x} ELR {:#x} SPSR {:#x}",
            e.vector_offset, e.esr, e.far, e.elr, e.spsr
        );
    }
    Ok(Completion::Completed)
}

/// The target slot as each backing the scenarios use (anonymous, THP, 2 MiB hugetlb,
/// shared memfd): an EL1 store to it is plain guest memory, no exit and no exception,
/// and the VMM reads the guest's value (0x5a5a) through its own mapping.
fn stores_reach_every_target_backing() -> Result<Completion, Failed> {
    let target = map::TARGET_BASE + 0x40;
    for backing in [
        Backing::Anonymous,
        Backing::Thp,
        Backing::Memfd,
        Backing::Hugetlb2M,
    ] {
        let mut vm = match vm_with_payload() {
            Ok(vm) => vm,
            Err(skip) => return Ok(skip),
        };
        if let Err(e) = back_target(&mut vm, backing) {
            // Only hugetlb needs host set-up (reserved pages: the emulated host has 16).
            assert_eq!(backing, Backing::Hugetlb2M, "{e}");
            return Ok(Completion::ignored_with(format!("{backing:?}: {e}")));
        }
        let mut vcpu = add_vcpu(&vm, &params(Access::Store, 1, &[target]));
        add_gic(&vm);
        let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
        let mut state = RunState::default();
        assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
        assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff, "{backing:?}");
        let r = report(&vm);
        assert_eq!((r.exception_count, r.steps_done), (0, 1), "{backing:?}");
        let mut value = [0u8; 8];
        vm.read_guest(target, &mut value).unwrap();
        assert_eq!(u64::from_le_bytes(value), 0x5a5a, "{backing:?}");
    }
    Ok(Completion::Completed)
}

/// QEMU does not use ext_dabt_pending: it writes the exception entry itself
/// (target/arm/kvm.c, kvm_inject_arm_sea). The same with KVM_SET_ONE_REG after the EL0
/// load's MMIO exit: ESR_EL1 = 0x92000410 (FnV: FAR not valid), FAR_EL1 = 0, ELR_EL1 = the
/// load, SPSR_EL1 = its PSTATE, PSTATE = EL1h with DAIF masked, PC = VBAR_EL1 + 0x400. The
/// guest cannot tell the difference from hardware: it records exactly those values.
fn el0_load_takes_an_emulated_sea_entry_like_qemus() -> Result<Completion, Failed> {
    let (vm, mut vcpu) = match boot(params(Access::Load, 0, &[map::TARGET_BASE])) {
        Ok(booted) => booted,
        Err(skip) => return Ok(skip),
    };
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
    assert!(matches!(
        run(&mut vcpu, &mut state),
        Stop::Mmio { write: false, .. }
    ));
    vcpu.complete_mmio().unwrap();
    let pc = vcpu.get_core(CoreReg::Pc).unwrap() - 4;
    let pstate = vcpu.get_core(CoreReg::Pstate).unwrap();
    let vbar = vcpu.get_reg(regs::VBAR_EL1).unwrap();
    vcpu.set_reg(regs::ESR_EL1, u64::from(ESR_DABT_LOW_SEA_FNV))
        .unwrap();
    vcpu.set_reg(regs::FAR_EL1, 0).unwrap();
    vcpu.set_core(CoreReg::ElrEl1, pc).unwrap();
    vcpu.set_reg(regs::SPSR_EL1, pstate).unwrap();
    vcpu.set_core(CoreReg::Pstate, PSTATE_EL1H_DAIF).unwrap();
    vcpu.set_core(CoreReg::Pc, vbar + VECTOR_LOWER_A64_SYNC)
        .unwrap();
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);

    assert_eq!(
        pstate & SPSR_M_MASK,
        SPSR_M_EL0T,
        "the load ran at EL0: {pstate:#x}"
    );
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!(r.exception_count, 1, "{r:#x?}");
    let e = r.records[0];
    assert_eq!(e.vector_offset, VECTOR_LOWER_A64_SYNC, "{e:#x?}");
    assert_eq!(e.esr, u64::from(ESR_DABT_LOW_SEA_FNV), "{e:#x?}");
    assert_eq!((e.far, e.elr, e.spsr), (0, pc, pstate), "{e:#x?}");
    Ok(Completion::Completed)
}

/// Instruction fetch at `el`: step 0 branches to a backed target page where the guest
/// wrote `ret` (EL1) or `svc #0` (EL0) and comes back with no exception; step 1 branches
/// to an unbacked one. Writing its instruction there is an MMIO exit the VMM ignores;
/// the fetch itself never reaches the VMM: KVM finds no memslot for an instruction abort
/// and injects an external instruction abort itself (arch/arm64/kvm/mmu.c,
/// kvm_handle_guest_abort: `if (is_iabt)` -> kvm_inject_pabt). The guest records EC 0x21
/// (from EL1) / 0x20 (from EL0), FSC 0x10, FAR = ELR = the target (seen on 6.1 and 6.12;
/// 6.1 sign-extends this ESR too, 0xffffffff86000010).
fn ifetch_runs_backed_code_and_kvm_aborts_unbacked(
    el: u32,
    vector: u64,
    esr: u32,
) -> Result<Completion, Failed> {
    let mut vm = match vm_with_payload() {
        Ok(vm) => vm,
        Err(skip) => return Ok(skip),
    };
    back_target(&mut vm, Backing::Anonymous).expect("target memslot");
    let targets = [map::TARGET_BASE, UNBACKED_TARGET];
    let mut vcpu = add_vcpu(&vm, &params(Access::Ifetch, el, &targets));
    add_gic(&vm);
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
    // The instruction for step 1, written to where there is no memory.
    let (addr, write, len) = (UNBACKED_TARGET, true, 4);
    assert_eq!(run(&mut vcpu, &mut state), Stop::Mmio { addr, write, len });
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 1 });
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);

    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!((r.exception_count, r.steps_done), (1, 2), "{r:#x?}");
    let e = r.records[0];
    assert_eq!(e.step, 1, "step 0's branch came back cleanly: {e:#x?}");
    assert_eq!(e.vector_offset, vector, "{e:#x?}");
    assert_eq!(e.esr as u32, esr, "{e:#x?}");
    assert_eq!(
        (e.far, e.elr),
        (UNBACKED_TARGET, UNBACKED_TARGET),
        "{e:#x?}"
    );
    println!(
        "ifetch at EL{el}: vector {:#x} ESR {:#x} FAR {:#x} ELR {:#x}",
        e.vector_offset, e.esr, e.far, e.elr
    );
    Ok(Completion::Completed)
}

fn ifetch_at_el1_runs_backed_code_and_kvm_aborts_unbacked() -> Result<Completion, Failed> {
    ifetch_runs_backed_code_and_kvm_aborts_unbacked(1, VECTOR_CUR_SPX_SYNC, ESR_IABT_CUR_SEA)
}

fn ifetch_at_el0_runs_backed_code_and_kvm_aborts_unbacked() -> Result<Completion, Failed> {
    ifetch_runs_backed_code_and_kvm_aborts_unbacked(0, VECTOR_LOWER_A64_SYNC, ESR_IABT_LOW_SEA)
}

/// The SError wait with `flags`: the guest masks PSTATE.A and rings ReadyForFault; the VMM
/// makes an SError pending (with `esr` or without). Returns the report.
fn serror_wait(flags: u32, esr: Option<u64>) -> Result<Report, Completion> {
    let mut p = params(Access::None, 1, &[]);
    p.flags = flags;
    let (vm, mut vcpu) = boot(p)?;
    if esr.is_some() && !vm.caps().has(Cap::ArmInjectSerrorEsr) {
        return Err(Completion::ignored_with("no KVM_CAP_ARM_INJECT_SERROR_ESR"));
    }
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
    vcpu.inject_serror(esr).unwrap();
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!(r.serror.ran, 1, "{r:#x?}");
    Ok(r)
}

/// An SError made pending while the guest has PSTATE.A masked is not taken: ISR_EL1.A
/// shows it. When the guest unmasks, it is taken at 0x380 (current EL, SPx) with the ESR
/// the VMM gave: EC 0x2F, IL, ISS 0x811.
fn masked_serror_with_esr_is_pending_then_taken_at_0x380() -> Result<Completion, Failed> {
    let r = match serror_wait(flags::SERROR_WAIT, Some(SERROR_ISS_UEO)) {
        Ok(r) => r,
        Err(skip) => return Ok(skip),
    };
    assert_ne!(r.serror.isr_masked & ISR_A, 0, "{:#x?}", r.serror);
    assert_eq!(r.exception_count, 1, "{r:#x?}");
    let e = r.records[0];
    assert_eq!(e.vector_offset, VECTOR_CUR_SPX_SERROR, "{e:#x?}");
    assert_eq!(e.esr as u32, ESR_SERROR_UEO, "{e:#x?}");
    assert_eq!(e.step, 0);
    println!(
        "SError ISS 0x811: ISR masked {:#x}, vector {:#x} ESR {:#x} ISR {:#x}",
        r.serror.isr_masked, e.vector_offset, e.esr, e.isr
    );
    Ok(Completion::Completed)
}

/// The same without an ESR: KVM pends its default SError, IDS set (0xBF000000).
fn masked_serror_without_esr_is_taken_with_ids() -> Result<Completion, Failed> {
    let r = match serror_wait(flags::SERROR_WAIT, None) {
        Ok(r) => r,
        Err(skip) => return Ok(skip),
    };
    assert_ne!(r.serror.isr_masked & ISR_A, 0, "{:#x?}", r.serror);
    assert_eq!(r.exception_count, 1, "{r:#x?}");
    let e = r.records[0];
    assert_eq!(e.vector_offset, VECTOR_CUR_SPX_SERROR, "{e:#x?}");
    assert_eq!(e.esr as u32, ESR_SERROR_IDS, "{e:#x?}");
    println!(
        "SError no ESR: ISR masked {:#x}, vector {:#x} ESR {:#x}",
        r.serror.isr_masked, e.vector_offset, e.esr
    );
    Ok(Completion::Completed)
}

/// With FEAT_RAS, ESB while PSTATE.A is masked consumes the pending virtual SError into
/// DISR_EL1 (the hardware writes VDISR_EL2, which a guest read of DISR_EL1 returns while
/// HCR_EL2.AMO is set; Arm ARM D1.16 "Error synchronization barrier"): A (bit 31) set,
/// the syndrome from VSESR_EL2, and nothing is left to take when the guest unmasks. Seen
/// on 6.1 and 6.12: 0x80000811 for ISS 0x811, 0x81000000 (IDS, KVM's default) without.
fn esb_defers_a_masked_serror_into_disr() -> Result<Completion, Failed> {
    let wait = flags::SERROR_WAIT | flags::SERROR_ESB;
    for (esr, syndrome) in [(Some(SERROR_ISS_UEO), 0x811), (None, 0x100_0000)] {
        let r = match serror_wait(wait, esr) {
            Ok(r) => r,
            Err(skip) => return Ok(skip),
        };
        if (r.id_aa64pfr0 >> 28) & 0xf == 0 {
            assert_eq!(r.serror.esb_executed, 0, "no FEAT_RAS, no ESB");
            return Ok(Completion::ignored_with("guest has no FEAT_RAS"));
        }
        println!(
            "ESB, ESR {esr:x?}: ISR masked {:#x}, DISR {:#x}, exceptions {}",
            r.serror.isr_masked, r.serror.disr, r.exception_count
        );
        assert_eq!(r.serror.esb_executed, 1, "{:#x?}", r.serror);
        assert_ne!(r.serror.isr_masked & ISR_A, 0, "{:#x?}", r.serror);
        assert_eq!(
            r.serror.disr,
            DISR_A | syndrome,
            "{esr:x?}: {:#x?}",
            r.serror
        );
        assert_eq!(r.exception_count, 0, "deferred, not taken: {r:#x?}");
    }
    Ok(Completion::Completed)
}

/// The VMM's side of the GHESv2 protocol (docs/ras-facts.md §8) and the guest's: QEMU-like
/// tables in the firmware area; at ReadyForFault the VMM finds read-ack non-zero, sets it
/// to 0 and writes a CPER memory error record into source 0's status block, then answers
/// the guest's load from the (unbacked) target with an SEA. In its handler, as an OS does
/// when notified, the guest walks RSDP -> XSDT -> HEST -> GHESv2 -> error status address ->
/// status block, copies the record byte for byte into that exception's report, clears
/// block status and writes (ack & preserve) | write = 1.
fn acpi_walk_copies_the_record_and_acknowledges() -> Result<Completion, Failed> {
    let fw = map::FIRMWARE_BASE;
    let layout = AcpiLayout::qemu_like(fw, fw + 0x1000, fw + 0x2000);
    let tables = AcpiTables::build(&layout).expect("tables");
    let mut p = params(Access::Load, 1, &[map::TARGET_BASE]);
    p.flags = flags::WALK_ACPI | flags::ACK;
    p.rsdp_gpa = layout.rsdp;
    let (vm, mut vcpu) = match boot(p) {
        Ok(booted) => booted,
        Err(skip) => return Ok(skip),
    };
    for blob in tables.blobs() {
        vm.write_guest(blob.gpa, &blob.bytes).expect(&blob.name);
    }
    let sea = *layout.source_for(Notify::Sea).unwrap();
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });

    let read_u64 = |gpa| {
        let mut b = [0u8; 8];
        vm.read_guest(gpa, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    assert_eq!(read_u64(sea.read_ack), 1, "the guest has acked everything");
    vm.write_guest(sea.read_ack, &0u64.to_le_bytes()).unwrap();
    let record = memory_error_record(map::TARGET_BASE, Severity::Recoverable, Profile::Qemu);
    let bytes = record.encode();
    vm.write_guest(sea.status_block, &bytes).unwrap();
    assert!(matches!(
        run(&mut vcpu, &mut state),
        Stop::Mmio { write: false, .. }
    ));
    answer_with_ext_dabt(&mut vcpu);
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);

    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!(r.exception_count, 1, "{r:#x?}");
    let a = &r.acpi;
    let all = acpi_found::RSDP
        | acpi_found::XSDT
        | acpi_found::HEST
        | acpi_found::GHES
        | acpi_found::RECORD
        | acpi_found::ACKED;
    assert_eq!(
        (a.walks, a.found, a.checksum_errors),
        (1, all, 0),
        "one walk, at the exception: {a:#x?}"
    );
    // QEMU's layout: source 0 (SEA, notification type 8) and source 1 (GPIO), both GHESv2.
    assert_eq!((a.ghes_count, a.ghes_type), (2, 10), "{a:#x?}");
    assert_eq!((a.source_id, a.notification_type), (0, 8), "{a:#x?}");
    assert_eq!(a.error_status_address, sea.error_status_address);
    assert_eq!(a.block_address, sea.status_block);
    assert_eq!((a.read_ack_before, a.read_ack_after), (0, 1), "{a:#x?}");
    let read = &r.records[0].cper;
    assert_eq!(
        read.found,
        acpi_found::RECORD | acpi_found::ACKED,
        "{read:#x?}"
    );
    assert_eq!(read.block_status, 1, "QEMU profile: uncorrectable valid");
    assert_eq!(read.record_len as usize, bytes.len());
    assert_eq!(read.copied_len as usize, bytes.len());
    assert_eq!(
        &read.bytes[..bytes.len()],
        &bytes[..],
        "the record, byte for byte"
    );
    // And in guest memory: block status cleared, read-ack = (0 & !1) | 1.
    let mut status = [0u8; 4];
    vm.read_guest(sea.status_block, &mut status).unwrap();
    assert_eq!(status, [0; 4]);
    assert_eq!(read_u64(sea.read_ack), 1);
    Ok(Completion::Completed)
}

/// The device tree every boot gets, at map::DTB_BASE: the guest finds its big-endian magic
/// and reports its totalsize.
fn the_device_tree_is_read() -> Result<Completion, Failed> {
    let p = params(Access::None, 1, &[]);
    let dtb = payload::device_tree(&[p], BACKED_TARGET_LEN).expect("dtb");
    let (vm, mut vcpu) = match boot(p) {
        Ok(booted) => booted,
        Err(skip) => return Ok(skip),
    };
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Done), "{r:#x?}");
    assert_eq!(r.dtb.recognised, 1, "{:#x?}", r.dtb);
    assert_eq!(r.dtb.total_size as usize, dtb.len(), "{:#x?}", r.dtb);
    Ok(Completion::Completed)
}

/// Two vCPUs on two threads at once, each with its own mailbox, page tables and stacks:
/// vCPU 0 loads at EL1, vCPU 1 stores at EL0, each from its own unbacked target, each
/// answered with ext_dabt on its own thread. vCPU 1's VMM thread answers late, so vCPU 0
/// finishes first: it must wait for vCPU 1's report to say Done before its SYSTEM_OFF,
/// which would otherwise stop vCPU 1 mid-step. vCPU 1 ends with PSCI CPU_OFF, which does
/// not exit: its thread sleeps in KVM_RUN (MP state STOPPED) until the VMM signals it.
fn two_vcpus_each_record_their_own_abort_and_vcpu0_powers_off_last() -> Result<Completion, Failed> {
    let vm = match vm_with_payload() {
        Ok(vm) => vm,
        Err(skip) => return Ok(skip),
    };
    if !vm.caps().has(Cap::ArmInjectExtDabt) {
        return Ok(Completion::ignored_with("no KVM_CAP_ARM_INJECT_EXT_DABT"));
    }
    let targets = [map::TARGET_BASE, map::TARGET_BASE + 0x1000];
    let accesses = [(Access::Load, 1, false), (Access::Store, 0, true)];
    let all: Vec<Params> = (0..2)
        .map(|i| {
            let (access, el, _) = accesses[i];
            params(access, el, &targets[i..=i])
        })
        .collect();
    let vcpus = add_vcpus(&vm, &all);
    add_gic(&vm);
    let watchdogs: Vec<Watchdog> = vcpus
        .iter()
        .map(|v| Watchdog::start(v, TIMEOUT).unwrap())
        .collect();

    let threads: Vec<_> = vcpus
        .into_iter()
        .enumerate()
        .map(|(i, mut vcpu)| {
            let (_, _, write) = accesses[i];
            let addr = targets[i];
            std::thread::spawn(move || {
                let mut state = RunState::default();
                assert_eq!(run(&mut vcpu, &mut state), Stop::ReadyForFault { step: 0 });
                let len = 8;
                assert_eq!(run(&mut vcpu, &mut state), Stop::Mmio { addr, write, len });
                if i == 1 {
                    std::thread::sleep(VCPU1_DELAY);
                }
                answer_with_ext_dabt(&mut vcpu);
                let last = run(&mut vcpu, &mut state);
                (last, state, vcpu)
            })
        })
        .collect();
    let mut threads = threads.into_iter();
    let (first, second) = (threads.next().unwrap(), threads.next().unwrap());
    let (stop0, state0, _) = first.join().expect("vCPU 0 thread");
    assert_eq!(stop0, Stop::SystemOff);
    assert!(!second.is_finished(), "vCPU 1 never exits after CPU_OFF");
    // vCPU 1 is off (CPU_OFF, or stopped by the SYSTEM_OFF): its KVM_RUN only returns on
    // a signal. SIGRTMIN has the watchdog's empty handler; repeat in case one lands while
    // the thread is between two KVM_RUNs.
    while !second.is_finished() {
        // SAFETY: the thread has not been joined, so its pthread_t is valid (an integer in
        // std, a pointer in musl's libc, hence the cast).
        unsafe { libc::pthread_kill(second.as_pthread_t() as _, libc::SIGRTMIN()) };
        std::thread::sleep(Duration::from_millis(10));
    }
    let (stop1, state1, vcpu1) = second.join().expect("vCPU 1 thread");
    assert_eq!(stop1, Stop::Interrupted, "a signal, not the watchdog");
    let mp_state = vcpu1.fd().get_mp_state().unwrap().mp_state;
    assert_eq!(mp_state, KVM_MP_STATE_STOPPED, "powered off");
    assert!(watchdogs.iter().all(|w| !w.fired()));

    let done = |s: &RunState| s.doorbells.last().copied() == Some(Doorbell::new(Event::Done, 1, 1));
    assert!(done(&state0) && done(&state1), "{state0:?} {state1:?}");
    for (i, (vector, esr)) in [
        (VECTOR_CUR_SPX_SYNC, ESR_DABT_CUR_SEA),
        (VECTOR_LOWER_A64_SYNC, ESR_DABT_LOW_SEA),
    ]
    .into_iter()
    .enumerate()
    {
        let r = report_of(&vm, i);
        assert_eq!(State::from_code(r.state), Some(State::Done), "vCPU {i}");
        assert_eq!(r.exception_count, 1, "vCPU {i}: {r:#x?}");
        let e = r.records[0];
        assert_eq!((e.vector_offset, e.esr as u32), (vector, esr), "vCPU {i}");
        assert_eq!(e.far, targets[i], "vCPU {i}: its own target");
    }
    Ok(Completion::Completed)
}

/// A guest that never exits again (params flag HANG: it spins after Ready) is stopped by
/// the watchdog: KVM_RUN returns EINTR after the timeout and the run loop says Kicked.
fn a_hung_guest_is_kicked_by_the_watchdog() -> Result<Completion, Failed> {
    let mut p = params(Access::None, 1, &[]);
    p.flags = flags::HANG;
    let (vm, mut vcpu) = match boot(p) {
        Ok(booted) => booted,
        Err(skip) => return Ok(skip),
    };
    let timeout = Duration::from_millis(500);
    let watchdog = Watchdog::start(&vcpu, timeout).unwrap();
    let started = Instant::now();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::Kicked);
    let waited = started.elapsed();
    assert!(watchdog.fired());
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(state.events(), events(&[Event::Ready]));
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Running), "{r:#x?}");
    println!("kicked after {waited:?} (timeout {timeout:?})");
    Ok(Completion::Completed)
}

/// Bootargs the guest cannot run (an EL it does not know) end in a Fatal doorbell with
/// reason BadParams and SYSTEM_OFF: never a hang.
fn junk_params_end_in_fatal_and_system_off() -> Result<Completion, Failed> {
    let vm = match vm_with_payload() {
        Ok(vm) => vm,
        Err(skip) => return Ok(skip),
    };
    let line = format!(
        "ras.abi={ABI_VERSION} ras.access=load ras.el=7 ras.doorbell={:#x}",
        map::DOORBELL
    );
    let dtb = payload::device_tree_with(&line, 1, BACKED_TARGET_LEN).expect("dtb");
    vm.write_guest(map::DTB_BASE, &dtb).unwrap();
    let mut vcpu = kvm::boot::add_payload_vcpu(&vm, 0).expect("vCPU");
    add_gic(&vm);
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT).unwrap();
    let mut state = RunState::default();
    assert_eq!(run(&mut vcpu, &mut state), Stop::SystemOff);
    assert_eq!(
        state.doorbells,
        [Doorbell::new(
            Event::Fatal,
            0,
            FatalReason::BadParams as u32
        )]
    );
    let r = report(&vm);
    assert_eq!(State::from_code(r.state), Some(State::Fatal), "{r:#x?}");
    Ok(Completion::Completed)
}
