//! Comparing a scenario's `expect` with an [`Outcome`]: every unmet expectation is listed,
//! not just the first, so one run explains itself.

use super::json_name;
use super::outcome::{Exit, GuestObservation, Mismatch, Outcome, Verdict};
use super::spec::{ExpectedCper, ExpectedOutcome, GuestException, Scenario};

/// Judges `outcome` against `scenario.expect`. Never returns Skip or Error: those come from
/// the runner, before or instead of an outcome.
pub fn judge(scenario: &Scenario, outcome: &Outcome) -> Verdict {
    let e = &scenario.expect;
    let mut m = Vec::new();
    let events: Vec<&GuestObservation> = outcome
        .guest
        .iter()
        .filter(|g| g.exception != GuestException::None)
        .collect();

    let observed = observed_outcome(outcome.exit, !events.is_empty());
    if observed != Some(e.outcome) {
        m.push(mismatch(
            "expect.outcome",
            json_name(&e.outcome),
            observed.map_or_else(|| json_name(&outcome.exit), |o| json_name(&o)),
        ));
    }

    for (i, want) in e.host_signals.iter().enumerate() {
        let found = outcome
            .host_signals
            .iter()
            .any(|s| s.code == want.code.si_code() && want.lsb.is_none_or(|lsb| lsb == s.lsb));
        if !found {
            let expected = match want.lsb {
                Some(lsb) => format!("{} lsb {lsb}", json_name(&want.code)),
                None => json_name(&want.code),
            };
            m.push(mismatch(
                format!("expect.host_signals[{i}]"),
                expected,
                list(outcome.host_signals.iter().map(|s| {
                    let code = match s.code {
                        4 => "ar".to_owned(),
                        5 => "ao".to_owned(),
                        c => format!("si_code {c}"),
                    };
                    format!("{code} lsb {} on {}", s.lsb, s.thread)
                })),
            ));
        }
    }

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
                    .map(|g| format!("vcpu{} {}", g.vcpu, json_name(&g.exception))),
            ),
        )),
        Some(kind) => {
            let wrong: Vec<_> = events.iter().filter(|g| g.exception != kind).collect();
            if !wrong.is_empty() {
                m.push(mismatch(
                    "expect.guest_exception",
                    json_name(&kind),
                    list(
                        wrong
                            .iter()
                            .map(|g| format!("vcpu{} {}", g.vcpu, json_name(&g.exception))),
                    ),
                ));
            }
        }
        None => {}
    }

    if let Some(esr) = e.esr {
        check_each(
            &mut m,
            "expect.esr",
            &events,
            esr.to_string(),
            |g| g.esr.filter(|v| v.low32() == esr.low32()).is_some(),
            |g| {
                g.esr
                    .map_or("none".to_owned(), |v| format!("{:#x}", v.low32()))
            },
        );
    }
    if let Some(offset) = e.vector_offset {
        check_each(
            &mut m,
            "expect.vector_offset",
            &events,
            offset.to_string(),
            |g| g.vector_offset == Some(offset),
            |g| g.vector_offset.map_or("none".to_owned(), |v| v.to_string()),
        );
    }

    if let Some(cper) = e.cper {
        check_cper(&mut m, scenario, outcome, &events, cper);
    }

    if m.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(m)
    }
}

/// The scenario-level outcome an exit and the guest's exceptions amount to; `None` for a
/// timeout, which no scenario can expect.
fn observed_outcome(exit: Exit, took_exception: bool) -> Option<ExpectedOutcome> {
    match exit {
        Exit::Completed if took_exception => Some(ExpectedOutcome::GuestNotified),
        Exit::Completed => Some(ExpectedOutcome::GuestUnaffected),
        Exit::VmStopped => Some(ExpectedOutcome::VmStopped),
        Exit::VmmCrashed => Some(ExpectedOutcome::VmmCrashed),
        Exit::Timeout => None,
    }
}

/// One mismatch listing every guest exception for which `ok` fails.
fn check_each(
    m: &mut Vec<Mismatch>,
    field: &str,
    events: &[&GuestObservation],
    expected: String,
    ok: impl Fn(&GuestObservation) -> bool,
    show: impl Fn(&GuestObservation) -> String,
) {
    let wrong: Vec<String> = events
        .iter()
        .filter(|g| !ok(g))
        .map(|g| format!("vcpu{} {}", g.vcpu, show(g)))
        .collect();
    if !wrong.is_empty() {
        m.push(mismatch(field, expected, wrong.join(", ")));
    }
}

fn check_cper(
    m: &mut Vec<Mismatch>,
    scenario: &Scenario,
    outcome: &Outcome,
    events: &[&GuestObservation],
    want: ExpectedCper,
) {
    let records = &outcome.cper;
    if want == ExpectedCper::None {
        if !records.is_empty() {
            m.push(mismatch(
                "expect.cper",
                "none",
                format!("{} record(s)", records.len()),
            ));
        }
        return;
    }
    if records.is_empty() {
        m.push(mismatch("expect.cper", json_name(&want), "no record"));
        return;
    }
    // Each record must name a page some host signal reported: the same extent, by the
    // signal's own si_addr_lsb.
    let pages: Vec<(u64, u8)> = outcome
        .host_signals
        .iter()
        .filter_map(|s| s.gpa.map(|gpa| (gpa.0, s.lsb)))
        .collect();
    for (i, record) in records.iter().enumerate() {
        let addresses = record.physical_addresses();
        let field = format!("cper[{i}].physical_address");
        match addresses.as_slice() {
            [] => m.push(mismatch(field, "a memory error section", "none decoded")),
            _ if pages.is_empty() => m.push(mismatch(
                field,
                "an address a host signal reported",
                "no host signal with a GPA",
            )),
            _ => {
                for pa in addresses {
                    let covered = pages.iter().any(|&(gpa, lsb)| {
                        let mask = !1u64.checked_shl(u32::from(lsb)).map_or(0, |v| v - 1);
                        pa & mask == gpa & mask
                    });
                    if !covered {
                        m.push(mismatch(
                            field.clone(),
                            list(pages.iter().map(|(gpa, lsb)| format!("{gpa:#x}/{lsb}"))),
                            format!("{pa:#x}"),
                        ));
                    }
                }
            }
        }
    }
    if want == ExpectedCper::Consumed {
        check_each(
            m,
            "expect.cper",
            events,
            "consumed: cper_seen".into(),
            |g| g.cper_seen,
            |_| "cper_seen false".to_owned(),
        );
        if scenario.guest.ack {
            check_each(
                m,
                "expect.cper",
                events,
                "consumed: acked".into(),
                |g| g.acked,
                |_| "acked false".to_owned(),
            );
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
    use std::path::Path;

    use super::*;
    use crate::formats::cper::{memory_error_record, Profile, Severity};
    use crate::scenario::{load, CperObserved, Hex, HostSignal};

    fn scenario(name: &str) -> Scenario {
        load(&Path::new("../scenarios").join(format!("{name}.json"))).unwrap()
    }

    const GPA: u64 = 0x4010_3000;

    /// What a correct reference VMM run of acpi-el1-load-emulated looks like.
    fn emulated_el1() -> Outcome {
        Outcome {
            exit: Exit::Completed,
            host_signals: vec![HostSignal {
                code: 4,
                lsb: 12,
                gpa: Some(Hex(GPA)),
                thread: "vcpu0".into(),
            }],
            injection: vec![],
            cper: vec![CperObserved::from_bytes(
                &memory_error_record(GPA, Severity::Recoverable, Profile::Qemu).encode(),
            )],
            guest: vec![GuestObservation {
                vcpu: 0,
                exception: GuestException::Sea,
                vector_offset: Some(Hex(0x200)),
                // As Linux 6.1 reports it, sign-extended: judged on 32 bits.
                esr: Some(Hex(0xffff_ffff_9600_0410)),
                far: Some(Hex(0)),
                elr: Some(Hex(0x8_0000)),
                elr_at: None,
                isr: None,
                disr: None,
                cper_seen: true,
                acked: true,
            }],
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
        assert_eq!(
            judge(&scenario("acpi-el1-load-emulated"), &emulated_el1()),
            Verdict::Pass
        );
    }

    #[test]
    fn ext_dabt_syndrome_against_emulated_expectation_lists_each_field() {
        let mut o = emulated_el1();
        o.guest[0].esr = Some(Hex(0x9600_0010));
        o.guest[0].vector_offset = Some(Hex(0x400));
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
        o.exit = Exit::VmStopped;
        o.guest.clear();
        o.cper.clear();
        assert_eq!(
            reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
            [
                "expect.outcome: expected guest-notified, observed vm-stopped",
                "expect.notifications: expected 1, observed 0",
                "expect.cper: expected consumed, observed no record",
            ]
        );
        assert_eq!(judge(&scenario("dtb-stop"), &o), Verdict::Pass);
    }

    #[test]
    fn a_timeout_is_named() {
        let mut o = emulated_el1();
        o.exit = Exit::Timeout;
        assert_eq!(
            reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
            ["expect.outcome: expected guest-notified, observed timeout"]
        );
    }

    #[test]
    fn missing_signal_wrong_kind_and_unread_record() {
        let mut o = emulated_el1();
        o.host_signals[0].code = 5;
        o.guest[0].exception = GuestException::Serror;
        o.guest[0].cper_seen = false;
        o.guest[0].acked = false;
        assert_eq!(
            reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
            [
                "expect.host_signals[0]: expected ar, observed ao lsb 12 on vcpu0",
                "expect.guest_exception: expected sea, observed vcpu0 serror",
                "expect.cper: expected consumed: cper_seen, observed vcpu0 cper_seen false",
                "expect.cper: expected consumed: acked, observed vcpu0 acked false",
            ]
        );
    }

    #[test]
    fn a_record_for_another_page_fails() {
        let mut o = emulated_el1();
        o.cper = vec![CperObserved::from_bytes(
            &memory_error_record(GPA + 0x1000, Severity::Recoverable, Profile::Qemu).encode(),
        )];
        assert_eq!(
            reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
            ["cper[0].physical_address: expected 0x40103000/12, observed 0x40104000"]
        );
        // The same record is inside a 2 MiB hugetlb page's extent (lsb 21).
        o.host_signals[0].lsb = 21;
        assert_eq!(
            judge(&scenario("acpi-el1-load-emulated"), &o),
            Verdict::Pass
        );
    }

    #[test]
    fn garbage_in_the_status_block_is_not_a_record() {
        let mut o = emulated_el1();
        o.cper = vec![CperObserved::from_bytes(&[1, 2, 3])];
        assert!(o.cper[0].decoded.get("error").is_some());
        assert_eq!(
            reasons(judge(&scenario("acpi-el1-load-emulated"), &o)),
            ["cper[0].physical_address: expected a memory error section, observed none decoded"]
        );
    }

    #[test]
    fn a_record_on_dtb_fails_cper_none() {
        let mut o = emulated_el1();
        o.guest[0].cper_seen = false;
        assert_eq!(
            reasons(judge(&scenario("dtb-sea"), &o)),
            ["expect.cper: expected none, observed 1 record(s)"]
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
        let mut o = emulated_el1();
        assert_eq!(
            reasons(judge(&s, &o)),
            ["expect.notifications: expected 2, observed 1"]
        );
        let mut second = o.guest[0].clone();
        second.vcpu = 1;
        o.guest.push(second);
        assert_eq!(judge(&s, &o), Verdict::Pass);
    }
}
