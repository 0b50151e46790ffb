//! One tampered observation per kind of expectation: each must fail, naming the field.

use std::path::Path;

use super::*;
use crate::fault::SigbusCode;
use crate::formats::cper::{memory_error_record, Profile, Severity};
use crate::scenario::{load, GuestReport, Hex, RecordRead, SerrorWait};

/// The judge of a run on a 4 KiB host, which these observations are shaped like, whatever
/// host the tests run on (the emulated 16 KiB one too).
fn judge(s: &Scenario, o: &Outcome) -> Verdict {
    judge_on(s, o, 4096)
}

fn scenario(name: &str) -> Scenario {
    load(&Path::new("../scenarios").join(format!("{name}.json"))).unwrap()
}

/// acpi-el1-load-emulated's page 0 of the target region.
const GPA: u64 = 0x8000_0000;

fn record(gpa: u64, acked: bool) -> RecordRead {
    let bytes = memory_error_record(gpa, Severity::Recoverable, Profile::Qemu).encode();
    RecordRead::new(&bytes, bytes.len() as u32, acked)
}

fn sea(step: u32, record: Option<RecordRead>) -> ExceptionTaken {
    ExceptionTaken {
        kind: GuestException::Sea,
        vector_offset: Hex(0x200),
        // As Linux 6.1 reports it, sign-extended: judged on 32 bits.
        esr: Hex(0xffff_ffff_9600_0410),
        far: Hex(0),
        elr: Hex(0x4000_1000),
        elr_at: None,
        spsr: Hex(0x3c5),
        isr: Hex(0),
        step: Some(step),
        unfinished: false,
        record,
        access_to_vector_ns: None,
    }
}

fn guest(vcpu: u8, exceptions: Vec<ExceptionTaken>) -> GuestReport {
    GuestReport {
        vcpu,
        state: GuestState::Done,
        exceptions,
        serror_wait: None,
    }
}

fn ar(gpa: u64, thread: &str) -> HostSignal {
    HostSignal {
        code: SigbusCode::MceerrAr,
        lsb: 12,
        gpa: Some(Hex(gpa)),
        thread: thread.into(),
    }
}

/// What a correct run of acpi-el1-load-emulated looks like.
fn emulated_el1() -> Outcome {
    Outcome {
        vmm_end: VmmEnd::Completed,
        host_signals: vec![ar(GPA, "vcpu0")],
        guest: vec![guest(0, vec![sea(0, Some(record(GPA, true)))])],
        console: Vec::new(),
    }
}

fn reasons(v: Verdict) -> Vec<String> {
    match v {
        Verdict::Fail(m) => m.iter().map(Mismatch::to_string).collect(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_matching_outcome_passes() {
    let s = scenario("acpi-el1-load-emulated");
    assert_eq!(s.faults[0].gpa(), GPA);
    assert_eq!(judge(&s, &emulated_el1()), Verdict::Pass);
}

#[test]
fn ext_dabt_syndrome_against_emulated_expectation_lists_each_field() {
    let mut o = emulated_el1();
    o.guest[0].exceptions[0].esr = Hex(0x9600_0010);
    o.guest[0].exceptions[0].vector_offset = Hex(0x400);
    assert_eq!(
        reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
        [
            "expect.esr: expected 0x96000410, observed vcpu0 0x96000010",
            "expect.vector_offset: expected 0x200, observed vcpu0 0x400",
        ]
    );
}

#[test]
fn a_stopped_vm_fails_a_notification_scenario_with_the_reason() {
    let mut o = emulated_el1();
    o.vmm_end = VmmEnd::Stopped {
        message: "Hardware memory error!".into(),
    };
    o.guest[0].exceptions.clear();
    assert_eq!(
        reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
        [
            "expect.outcome: expected guest-notified, observed vm-stopped",
            "expect.notifications: expected 1, observed 0",
            "expect.cper (faults[0]): expected vcpu0 step 0 reads a record naming \
             0x80000000/12 and acks it, observed no exception there",
        ]
    );
    assert_eq!(judge(&scenario("dtb-stop"), &o), Verdict::Pass);
    o.vmm_end = VmmEnd::Killed { signal: 7 };
    assert_eq!(
        reasons(judge(&scenario("dtb-stop"), &o)),
        ["expect.outcome: expected vm-stopped, observed vmm-crashed"]
    );
}

#[test]
fn a_timeout_and_an_unfinished_guest_are_named() {
    let s = scenario("acpi-el1-load-emulated");
    let mut o = emulated_el1();
    o.vmm_end = VmmEnd::TimedOut;
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.outcome: expected guest-notified, observed timeout"]
    );
    let mut o = emulated_el1();
    o.guest[0].state = GuestState::Fatal;
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.outcome: expected guest-notified, observed completed with vcpu0 fatal"]
    );
}

#[test]
fn missing_signal_wrong_kind_and_unread_record() {
    let mut o = emulated_el1();
    o.host_signals[0].code = SigbusCode::MceerrAo;
    o.guest[0].exceptions[0].kind = GuestException::Serror;
    o.guest[0].exceptions[0].record = None;
    assert_eq!(
        reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
        [
            "expect.host_signals[0]: expected ar, a signal of its own, observed ao lsb 12 on vcpu0",
            "expect.guest_exception: expected sea, observed vcpu0 serror",
            "expect.cper (faults[0]): expected vcpu0 step 0 reads a record naming \
             0x80000000/12 and acks it, observed vcpu0 step 0 no record",
        ]
    );
}

/// hard-offline with late kill gives one AR: a scenario asking for two fails, because
/// each expected entry takes a signal of its own.
#[test]
fn host_signals_are_a_multiset() {
    let mut s = scenario("hard-offline");
    let one = s.expect.host_signals[0];
    s.expect.host_signals.push(one);
    let mut o = emulated_el1();
    // hard-offline delivers with ext_dabt: 0x96000010.
    o.guest[0].exceptions[0].esr = Hex(0x9600_0010);
    o.guest[0].exceptions[0].record = Some(record(s.faults[0].gpa(), true));
    o.host_signals = vec![ar(s.faults[0].gpa(), "vcpu0")];
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.host_signals[1]: expected ar, a signal of its own, observed ar lsb 12 on vcpu0"]
    );
    // A second AR, on the poisoning thread, satisfies it; a third is allowed.
    o.host_signals.push(ar(s.faults[0].gpa(), "vmm"));
    o.host_signals.push(ar(s.faults[0].gpa(), "vmm"));
    assert_eq!(judge(&s, &o), Verdict::Pass);
    // An entry naming an lsb is matched first, so a generic entry before it cannot take
    // the one signal it matches.
    s.expect.host_signals[1].lsb = Some(21);
    o.host_signals.truncate(2);
    o.host_signals[1].lsb = 21;
    assert_eq!(judge(&s, &o), Verdict::Pass);
    s.expect.host_signals[0].lsb = Some(21);
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.host_signals[1]: expected ar lsb 21, a signal of its own, observed ar lsb 12 on vcpu0, ar lsb 21 on vmm"]
    );
}

#[test]
fn an_lsb_is_expected_as_the_host_page_size_reports_it() {
    let mut s = scenario("acpi-el1-load-emulated");
    s.expect.host_signals[0].lsb = Some(12);
    let mut o = emulated_el1();
    o.host_signals[0].lsb = 14;
    // A base page is lsb 14 on a 16 KiB host, not 12, and not 14 on a 4 KiB one.
    assert_eq!(judge_on(&s, &o, 16384), Verdict::Pass);
    assert_eq!(
        reasons(judge_on(&s, &o, 4096)),
        ["expect.host_signals[0]: expected ar lsb 12, a signal of its own, observed ar lsb 14 on vcpu0"]
    );
    o.host_signals[0].lsb = 12;
    assert_eq!(
        reasons(judge_on(&s, &o, 16384)),
        ["expect.host_signals[0]: expected ar lsb 14, a signal of its own, observed ar lsb 12 on vcpu0"]
    );
    // A 2 MiB hugetlb page is mapped with 16 KiB PTEs there (CONT_PTE), so lsb 14 too.
    s.expect.host_signals[0].lsb = Some(21);
    o.host_signals[0].lsb = 14;
    assert_eq!(judge_on(&s, &o, 16384), Verdict::Pass);
}

#[test]
fn a_record_for_another_page_fails() {
    let mut o = emulated_el1();
    o.guest[0].exceptions[0].record = Some(record(GPA + 0x1000, true));
    assert_eq!(
        reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
        [
            "expect.cper (faults[0]): expected vcpu0 step 0 reads a record naming \
          0x80000000/12 and acks it, observed vcpu0 step 0 0x80001000"
        ]
    );
    // The same record is inside a 2 MiB hugetlb page's extent (lsb 21).
    o.host_signals[0].lsb = 21;
    assert_eq!(
        judge(&scenario("acpi-el1-load-emulated"), &o),
        Verdict::Pass
    );
}

#[test]
fn an_unacknowledged_or_undecodable_record_is_not_consumed() {
    let s = scenario("acpi-el1-load-emulated");
    let mut o = emulated_el1();
    o.guest[0].exceptions[0].record = Some(record(GPA, false));
    assert_eq!(
        reasons(judge(&s, &o)),
        [
            "expect.cper (faults[0]): expected vcpu0 step 0 reads a record naming \
          0x80000000/12 and acks it, observed read, not acknowledged"
        ]
    );
    o.guest[0].exceptions[0].record = Some(RecordRead::new(&[1, 2, 3], 3, true));
    assert_eq!(
        reasons(judge(&s, &o)),
        [
            "expect.cper (faults[0]): expected vcpu0 step 0 reads a record naming \
          0x80000000/12 and acks it, observed vcpu0 step 0 a record naming no page"
        ]
    );
}

#[test]
fn a_record_on_dtb_fails_cper_none() {
    let s = scenario("dtb-sea");
    let mut o = emulated_el1();
    o.host_signals = vec![ar(s.faults[0].gpa(), "vcpu0")];
    o.guest[0].exceptions[0].esr = Hex(0x9600_0410);
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.cper: expected no record read, observed vcpu0 step 0 0x80000000"]
    );
}

/// Two errors, one record: `recorded` for both fails on the second (the old judge
/// passed it, checking only that some record existed); per fault, the truth passes.
#[test]
fn recorded_means_every_fault_has_a_record_the_guest_read() {
    let mut s = scenario("acpi-second-before-ack");
    let (p0, p1) = (s.faults[0].gpa(), s.faults[1].gpa());
    let mut first = sea(0, Some(record(p0, true)));
    first.vector_offset = Hex(0x400);
    first.esr = Hex(0x9200_0410);
    let mut second = first.clone();
    second.record = None;
    let o = Outcome {
        vmm_end: VmmEnd::Completed,
        host_signals: vec![ar(p0, "vcpu0"), ar(p1, "vcpu1")],
        guest: vec![guest(0, vec![first]), guest(1, vec![second])],
        console: Vec::new(),
    };
    assert_eq!(judge(&s, &o), Verdict::Pass, "the file's own expectation");
    s.expect.cper = Some(CperExpectation::All(ExpectedCper::Recorded));
    assert_eq!(
        reasons(judge(&s, &o)),
        [
            "expect.cper (faults[1]): expected a record naming 0x80004000/12, observed \
          vcpu0 step 0 0x80000000, vcpu1 step 0 no record"
        ]
    );
    // Per fault: "none" fails when a record names the page after all.
    let mut named = o.clone();
    named.guest[1].exceptions[0].record = Some(record(p1, true));
    s.expect.cper = Some(CperExpectation::PerFault(vec![
        ExpectedCper::Consumed,
        ExpectedCper::None,
    ]));
    assert_eq!(
        reasons(judge(&s, &named)),
        [
            "expect.cper[1]: expected no record naming 0x80004000/12, observed \
          vcpu0 step 0 0x80000000, vcpu1 step 0 0x80004000"
        ]
    );
}

/// `consumed` is judged at each fault's own exception: vCPU 1 reading vCPU 0's record
/// has not consumed its own.
#[test]
fn consumed_means_each_vcpu_read_its_own_page() {
    let s = scenario("acpi-ack-then-second");
    let (p0, p1) = (s.faults[0].gpa(), s.faults[1].gpa());
    let el0 = |step, gpa| {
        let mut e = sea(step, Some(record(gpa, true)));
        e.vector_offset = Hex(0x400);
        e.esr = Hex(0x9200_0410);
        e
    };
    let mut o = Outcome {
        vmm_end: VmmEnd::Completed,
        host_signals: vec![ar(p0, "vcpu0"), ar(p1, "vcpu0")],
        guest: vec![guest(0, vec![el0(0, p0), el0(1, p1)])],
        console: Vec::new(),
    };
    assert_eq!(judge(&s, &o), Verdict::Pass);
    o.guest[0].exceptions[1].record = Some(record(p0, true));
    assert_eq!(
        reasons(judge(&s, &o)),
        [
            "expect.cper (faults[1]): expected vcpu0 step 1 reads a record naming \
          0x80004000/12 and acks it, observed vcpu0 step 0 0x80000000, vcpu0 step 1 0x80000000"
        ]
    );
}

/// Two vCPUs faulting at once: each must be notified, and one missing is counted.
#[test]
fn two_vcpus_each_notified() {
    let mut s = scenario("acpi-el1-load-emulated");
    s.guest.vcpus = 2;
    s.faults.push(crate::scenario::Fault {
        vcpu: 1,
        page: 1,
        ..s.faults[0].clone()
    });
    s.expect.cper = None;
    let mut o = emulated_el1();
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.notifications: expected 2, observed 1"]
    );
    o.guest.push(guest(1, vec![sea(0, None)]));
    assert_eq!(judge(&s, &o), Verdict::Pass);
}

/// What ESB deferred is the point of the masked rows: a VMM that ignores the AO leaves
/// ISR_EL1.A clear and DISR_EL1 0, and fails them.
#[test]
fn isr_and_disr_of_the_masked_wait() {
    let s = scenario("serror-masked-esb");
    let wait = |isr, disr| SerrorWait {
        isr: Hex(isr),
        disr,
    };
    let mut o = Outcome {
        vmm_end: VmmEnd::Completed,
        host_signals: vec![HostSignal {
            code: SigbusCode::MceerrAo,
            ..ar(s.faults[0].gpa(), "vmm")
        }],
        guest: vec![GuestReport {
            serror_wait: Some(wait(0x100, Some(Hex(0x8000_0811)))),
            ..guest(0, vec![])
        }],
        console: Vec::new(),
    };
    assert_eq!(judge(&s, &o), Verdict::Pass);
    o.guest[0].serror_wait = Some(wait(0, Some(Hex(0))));
    assert_eq!(
        reasons(judge(&s, &o)),
        [
            "expect.isr: expected 0x100, observed vcpu0 0x0",
            "expect.disr: expected 0x80000811, observed vcpu0 0x0",
        ]
    );
    o.guest[0].serror_wait = Some(wait(0x100, None));
    assert_eq!(
        reasons(judge(&s, &o)),
        ["expect.disr: expected 0x80000811, observed vcpu0 none (no ESB ran)"]
    );
    o.guest[0].serror_wait = None;
    assert_eq!(
        reasons(judge(&s, &o)),
        [
            "expect.isr: expected 0x100, observed vcpu0 no masked SError wait",
            "expect.disr: expected 0x80000811, observed vcpu0 none (no ESB ran)",
        ]
    );
}

#[test]
fn guest_exception_none_fails_when_one_was_taken() {
    let s = scenario("ao-early-kill-ignored");
    let mut o = emulated_el1();
    o.host_signals[0].code = SigbusCode::MceerrAo;
    o.guest[0].exceptions[0].record = None;
    let mut s_none = s.clone();
    s_none.expect.guest_exception = Some(GuestException::None);
    assert_eq!(
        reasons(judge(&s_none, &o)),
        [
            "expect.outcome: expected guest-unaffected, observed guest-notified",
            "expect.guest_exception: expected none, observed vcpu0 sea",
        ]
    );
}

/// A Linux guest's outcome: how QEMU ended and the console's lines.
fn linux(vmm_end: VmmEnd, console: &[&str]) -> Outcome {
    Outcome {
        vmm_end,
        host_signals: vec![],
        guest: vec![],
        console: console.iter().map(|l| l.to_string()).collect(),
    }
}

/// Each Linux scenario passes its own kind of outcome and fails the others' and that of a
/// guest that saw nothing, naming the field.
#[test]
fn linux_rows_refuse_each_others_outcomes() {
    let row = |name: &str| load(&Path::new("../scenarios/linux").join(format!("{name}.json")));
    let recovered = linux(
        VmmEnd::Completed,
        &[
            "{1}[Hardware Error]:   physical_address: TARGET_PA",
            "Memory failure: TARGET_PFN: recovery action for dirty LRU page: Recovered",
            "ras-linux: sigbus code=4 addr=TARGET_VA lsb=12",
        ],
    );
    let panicked = linux(
        VmmEnd::Completed,
        &[
            "Internal error: synchronous external abort: 0000000096000410 [#1] SMP",
            "Kernel panic - not syncing: synchronous external abort: Fatal exception",
        ],
    );
    let stopped = linux(
        VmmEnd::Stopped {
            message: "qemu-system-aarch64: Hardware memory error! (exit status 1)".into(),
        },
        &[],
    );
    let nothing = linux(
        VmmEnd::Completed,
        &["ras-linux: load returned 0x5a5a5a5a5a5a5a5a"],
    );
    let crashed = Outcome {
        vmm_end: VmmEnd::Killed { signal: 6 },
        ..recovered.clone()
    };
    let recovered_row = row("el0-load-acpi").unwrap();
    let panic_row = row("el1-syscall-acpi").unwrap();
    let dtb_row = row("el0-load-dtb").unwrap();
    assert_eq!(judge(&recovered_row, &recovered), Verdict::Pass);
    assert_eq!(judge(&panic_row, &panicked), Verdict::Pass);
    assert_eq!(judge(&dtb_row, &stopped), Verdict::Pass);
    assert_eq!(
        reasons(judge(&recovered_row, &panicked)),
        [
            r#"expect.console.contains[0]: expected a line with "[Hardware Error]:   physical_address: TARGET_PA", observed none"#,
            r#"expect.console.contains[1]: expected a line with "Memory failure: TARGET_PFN: recovery action for dirty LRU page: Recovered", observed none"#,
            r#"expect.console.contains[2]: expected a line with "ras-linux: sigbus code=4 addr=TARGET_VA lsb=12", observed none"#,
            r#"expect.console.excludes[0]: expected no line with "Kernel panic", observed "Kernel panic - not syncing: synchronous external abort: Fatal exception""#,
        ]
    );
    let first = |s: &Scenario, o: &Outcome| reasons(judge(s, o)).swap_remove(0);
    assert_eq!(
        first(&recovered_row, &nothing),
        "expect.outcome: expected guest-notified, observed guest-unaffected"
    );
    assert_eq!(
        first(&recovered_row, &crashed),
        "expect.outcome: expected guest-notified, observed vmm-crashed"
    );
    assert!(matches!(judge(&panic_row, &recovered), Verdict::Fail(_)));
    let wrote = linux(VmmEnd::Completed, &["ras-linux: write returned 8 errno=0"]);
    assert_eq!(
        first(&panic_row, &wrote),
        "expect.outcome: expected guest-notified, observed guest-unaffected"
    );
    assert_eq!(
        first(&dtb_row, &recovered),
        "expect.outcome: expected vm-stopped, observed guest-notified"
    );
    let stopped_with_record = Outcome {
        console: recovered.console.clone(),
        ..stopped
    };
    assert_eq!(
        reasons(judge(&dtb_row, &stopped_with_record)),
        [
            r#"expect.console.excludes[0]: expected no line with "[Hardware Error]", observed "{1}[Hardware Error]:   physical_address: TARGET_PA""#
        ]
    );
    assert!(matches!(judge(&dtb_row, &nothing), Verdict::Fail(_)));
}
