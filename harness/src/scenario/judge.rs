//! Comparing a scenario's `expect` with an [`Outcome`]: every unmet expectation is listed,
//! not just the first, so one run explains itself. Only what the guest reported, what the
//! host kernel signalled and how the VMM ended is judged, so any VMM can be.

use super::json_name;
use super::outcome::{ExceptionTaken, GuestState, HostSignal, Mismatch, Outcome, Verdict, VmmEnd};
use super::spec::{
    CperExpectation, ExpectedCper, ExpectedOutcome, GuestException, Scenario, SignalCode,
};

/// Judges `outcome` against `scenario.expect`. Never returns Skip or Error: those come from
/// the runner, before or instead of an outcome.
pub fn judge(scenario: &Scenario, outcome: &Outcome) -> Verdict {
    let e = &scenario.expect;
    let mut m = Vec::new();
    let events: Vec<(u8, &ExceptionTaken)> = outcome.exceptions().collect();

    match observed_outcome(outcome, !events.is_empty()) {
        Ok(o) if o == e.outcome => {}
        Ok(o) => m.push(mismatch(
            "expect.outcome",
            json_name(&e.outcome),
            json_name(&o),
        )),
        Err(what) => m.push(mismatch("expect.outcome", json_name(&e.outcome), what)),
    }

    check_signals(&mut m, scenario, &outcome.host_signals);

    if e.outcome == ExpectedOutcome::GuestNotified {
        let want = e
            .notifications
            .map_or(scenario.faults.len(), |n| n as usize);
        if events.len() != want {
            m.push(mismatch(
                "expect.notifications",
                want.to_string(),
                events.len().to_string(),
            ));
        }
    }

    match e.guest_exception {
        Some(GuestException::None) if !events.is_empty() => m.push(mismatch(
            "expect.guest_exception",
            "none",
            list(
                events
                    .iter()
                    .map(|(v, g)| format!("vcpu{v} {}", json_name(&g.kind))),
            ),
        )),
        Some(kind) => check_each(
            &mut m,
            "expect.guest_exception",
            &events,
            json_name(&kind),
            |g| g.kind == kind,
            |g| json_name(&g.kind),
        ),
        None => {}
    }
    if let Some(esr) = e.esr {
        check_each(
            &mut m,
            "expect.esr",
            &events,
            esr.to_string(),
            |g| g.esr.low32() == esr.low32(),
            |g| format!("{:#x}", g.esr.low32()),
        );
    }
    if let Some(offset) = e.vector_offset {
        check_each(
            &mut m,
            "expect.vector_offset",
            &events,
            offset.to_string(),
            |g| g.vector_offset == offset,
            |g| g.vector_offset.to_string(),
        );
    }

    if let Some(cper) = &e.cper {
        check_cper(&mut m, scenario, outcome, cper);
    }
    check_serror_wait(&mut m, scenario, outcome);

    if m.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(m)
    }
}

/// The scenario-level outcome the VMM's end and the guest's reports amount to, or what was
/// seen instead when it is none of them (a timeout, a guest that did not finish).
fn observed_outcome(o: &Outcome, took_exception: bool) -> Result<ExpectedOutcome, String> {
    match &o.vmm_end {
        VmmEnd::Completed => {
            let unfinished: Vec<String> = o
                .guest
                .iter()
                .filter(|g| g.state != GuestState::Done)
                .map(|g| format!("vcpu{} {}", g.vcpu, json_name(&g.state)))
                .collect();
            if !unfinished.is_empty() {
                Err(format!("completed with {}", unfinished.join(", ")))
            } else if took_exception {
                Ok(ExpectedOutcome::GuestNotified)
            } else {
                Ok(ExpectedOutcome::GuestUnaffected)
            }
        }
        VmmEnd::Stopped { .. } => Ok(ExpectedOutcome::VmStopped),
        VmmEnd::Killed { .. } => Ok(ExpectedOutcome::VmmCrashed),
        VmmEnd::TimedOut => Err("timeout".to_owned()),
    }
}

/// `expect.host_signals` as a multiset: each entry takes one observed signal of its own,
/// entries that name an lsb first (they match fewer signals). Signals left over are
/// allowed.
fn check_signals(m: &mut Vec<Mismatch>, s: &Scenario, observed: &[HostSignal]) {
    let wanted = &s.expect.host_signals;
    let mut free: Vec<&HostSignal> = observed.iter().collect();
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| wanted[i].lsb.is_none());
    let mut missing = Vec::new();
    for i in order {
        let want = &wanted[i];
        let at = free.iter().position(|sig| {
            sig.code == want.code.si_code() && want.lsb.is_none_or(|lsb| lsb == sig.lsb)
        });
        match at {
            Some(at) => {
                free.remove(at);
            }
            None => missing.push(i),
        }
    }
    missing.sort_unstable();
    for i in missing {
        let want = &wanted[i];
        let expected = match want.lsb {
            Some(lsb) => format!("{} lsb {lsb}", json_name(&want.code)),
            None => json_name(&want.code),
        };
        m.push(mismatch(
            format!("expect.host_signals[{i}]"),
            format!("{expected}, a signal of its own"),
            list(observed.iter().map(|sig| {
                let code = match SignalCode::from_si_code(sig.code) {
                    Some(c) => json_name(&c),
                    None => format!("si_code {}", sig.code),
                };
                format!("{code} lsb {} on {}", sig.lsb, sig.thread)
            })),
        ));
    }
}

/// One mismatch listing every guest exception for which `ok` fails.
fn check_each(
    m: &mut Vec<Mismatch>,
    field: &str,
    events: &[(u8, &ExceptionTaken)],
    expected: String,
    ok: impl Fn(&ExceptionTaken) -> bool,
    show: impl Fn(&ExceptionTaken) -> String,
) {
    let wrong: Vec<String> = events
        .iter()
        .filter(|(_, g)| !ok(g))
        .map(|(v, g)| format!("vcpu{v} {}", show(g)))
        .collect();
    if !wrong.is_empty() {
        m.push(mismatch(field, expected, wrong.join(", ")));
    }
}

/// Whether physical address `pa` lies in the `1 << lsb`-byte extent around `gpa`.
fn same_extent(pa: u64, gpa: u64, lsb: u8) -> bool {
    let mask = !1u64.checked_shl(u32::from(lsb)).map_or(u64::MAX, |v| v - 1);
    pa & mask == gpa & mask
}

/// What the guest read at each exception, for a message: "vcpu0 step 0 0x80000000".
fn records_read(o: &Outcome) -> String {
    list(o.exceptions().map(|(v, g)| {
        let step = g
            .step
            .map_or("outside a step".to_owned(), |s| format!("step {s}"));
        let read = match &g.record {
            None => "no record".to_owned(),
            Some(r) => match r.physical_addresses().as_slice() {
                [] => "a record naming no page".to_owned(),
                pas => list(pas.iter().map(|pa| format!("{pa:#x}"))),
            },
        };
        format!("vcpu{v} {step} {read}")
    }))
}

fn check_cper(m: &mut Vec<Mismatch>, s: &Scenario, o: &Outcome, want: &CperExpectation) {
    if want == &CperExpectation::All(ExpectedCper::None) {
        if o.exceptions().any(|(_, g)| g.record.is_some()) {
            m.push(mismatch("expect.cper", "no record read", records_read(o)));
        }
        return;
    }
    for (i, f) in s.faults.iter().enumerate() {
        let Some(want_i) = want.for_fault(i) else {
            continue;
        };
        let field = match want {
            CperExpectation::All(_) => format!("expect.cper (faults[{i}])"),
            CperExpectation::PerFault(_) => format!("expect.cper[{i}]"),
        };
        let page = f.gpa();
        // The extent is the one the host reported for the page; a page no signal
        // reported must be named exactly.
        let lsb = o
            .host_signals
            .iter()
            .filter_map(|sig| sig.gpa.map(|gpa| (gpa.0, sig.lsb)))
            .find(|&(gpa, lsb)| same_extent(page, gpa, lsb))
            .map_or(12, |(_, lsb)| lsb);
        let names_page = |g: &ExceptionTaken| {
            g.record.as_ref().is_some_and(|r| {
                r.physical_addresses()
                    .iter()
                    .any(|&pa| same_extent(pa, page, lsb))
            })
        };
        let page_text = format!("{page:#x}/{lsb}");
        match want_i {
            ExpectedCper::None => {
                if o.exceptions().any(|(_, g)| names_page(g)) {
                    m.push(mismatch(
                        field,
                        format!("no record naming {page_text}"),
                        records_read(o),
                    ));
                }
            }
            ExpectedCper::Recorded => {
                if !o.exceptions().any(|(_, g)| names_page(g)) {
                    m.push(mismatch(
                        field,
                        format!("a record naming {page_text}"),
                        records_read(o),
                    ));
                }
            }
            ExpectedCper::Consumed => {
                let step = s.fault_step(i);
                let at_fault = o.exceptions().find(|(v, g)| *v == f.vcpu && g.step == step);
                let step_text = step.map_or("?".to_owned(), |s| s.to_string());
                let expected = format!(
                    "vcpu{} step {step_text} reads a record naming {page_text}{}",
                    f.vcpu,
                    if s.guest.ack { " and acks it" } else { "" }
                );
                match at_fault {
                    None => m.push(mismatch(field, expected, "no exception there")),
                    Some((_, g)) if !names_page(g) => {
                        m.push(mismatch(field, expected, records_read(o)));
                    }
                    Some((_, g)) if s.guest.ack && !g.record.as_ref().is_some_and(|r| r.acked) => {
                        m.push(mismatch(field, expected, "read, not acknowledged"));
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// `expect.isr` and `expect.disr`, on every vCPU that has a fault.
fn check_serror_wait(m: &mut Vec<Mismatch>, s: &Scenario, o: &Outcome) {
    let e = &s.expect;
    if e.isr.is_none() && e.disr.is_none() {
        return;
    }
    let mut vcpus: Vec<u8> = s.faults.iter().map(|f| f.vcpu).collect();
    vcpus.sort_unstable();
    vcpus.dedup();
    for v in vcpus {
        let wait = o
            .guest
            .iter()
            .find(|g| g.vcpu == v)
            .and_then(|g| g.serror_wait.as_ref());
        if let Some(isr) = e.isr {
            let seen = wait.map(|w| w.isr);
            if seen != Some(isr) {
                m.push(mismatch(
                    "expect.isr",
                    isr.to_string(),
                    format!(
                        "vcpu{v} {}",
                        seen.map_or("no masked SError wait".into(), |h| h.to_string())
                    ),
                ));
            }
        }
        if let Some(disr) = e.disr {
            let seen = wait.and_then(|w| w.disr);
            if seen != Some(disr) {
                m.push(mismatch(
                    "expect.disr",
                    disr.to_string(),
                    format!(
                        "vcpu{v} {}",
                        seen.map_or("none (no ESB ran)".into(), |h| h.to_string())
                    ),
                ));
            }
        }
    }
}

fn mismatch(
    field: impl Into<String>,
    expected: impl Into<String>,
    observed: impl Into<String>,
) -> Mismatch {
    Mismatch {
        field: field.into(),
        expected: expected.into(),
        observed: observed.into(),
    }
}

/// Comma-separated, or "none" for nothing.
fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    //! One tampered observation per kind of expectation: each must fail, naming the field.
    use std::path::Path;

    use super::*;
    use crate::fault::SigbusCode;
    use crate::formats::cper::{memory_error_record, Profile, Severity};
    use crate::scenario::{load, GuestReport, Hex, RecordRead, SerrorWait};

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
            record,
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
        };
        assert_eq!(judge(&s, &o), Verdict::Pass, "the file's own expectation");
        s.expect.cper = Some(CperExpectation::All(ExpectedCper::Recorded));
        assert_eq!(
            reasons(judge(&s, &o)),
            [
                "expect.cper (faults[1]): expected a record naming 0x80001000/12, observed \
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
                "expect.cper[1]: expected no record naming 0x80001000/12, observed \
              vcpu0 step 0 0x80000000, vcpu1 step 0 0x80001000"
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
        };
        assert_eq!(judge(&s, &o), Verdict::Pass);
        o.guest[0].exceptions[1].record = Some(record(p0, true));
        assert_eq!(
            reasons(judge(&s, &o)),
            [
                "expect.cper (faults[1]): expected vcpu0 step 1 reads a record naming \
              0x80001000/12 and acks it, observed vcpu0 step 0 0x80000000, vcpu0 step 1 0x80000000"
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
}
