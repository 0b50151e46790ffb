//! Comparing a scenario's `expect` with an [`Outcome`]: every unmet expectation is listed,
//! not just the first, so one run explains itself.

use super::outcome::{Exit, GuestObservation, Mismatch, Outcome, Verdict};
use super::json_name;
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
        let found = outcome.host_signals.iter().any(|s| {
            s.code == want.code.si_code() && want.lsb.is_none_or(|lsb| lsb == s.lsb)
        });
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
            list(events.iter().map(|g| format!("vcpu{} {}", g.vcpu, json_name(&g.exception)))),
        )),
        Some(kind) => {
            let wrong: Vec<_> = events.iter().filter(|g| g.exception != kind).collect();
            if !wrong.is_empty() {
                m.push(mismatch(
                    "expect.guest_exception",
                    json_name(&kind),
                    list(wrong.iter().map(|g| format!("vcpu{} {}", g.vcpu, json_name(&g.exception)))),
                ));
            }
        }
        None => {}
    }

    if let Some(esr) = e.esr {
        check_each(&mut m, "expect.esr", &events, esr.to_string(), |g| {
            g.esr.filter(|v| v.low32() == esr.low32()).is_some()
        }, |g| g.esr.map_or("none".to_owned(), |v| format!("{:#x}", v.low32())));
    }
    if let Some(offset) = e.vector_offset {
        check_each(&mut m, "expect.vector_offset", &events, offset.to_string(), |g| {
            g.vector_offset == Some(offset)
        }, |g| g.vector_offset.map_or("none".to_owned(), |v| v.to_string()));
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
        check_each(m, "expect.cper", events, "consumed: cper_seen".into(), |g| {
            g.cper_seen
        }, |_| "cper_seen false".to_owned());
        if scenario.guest.ack {
            check_each(m, "expect.cper", events, "consumed: acked".into(), |g| g.acked, |_| {
                "acked false".to_owned()
            });
        }
    }
}

fn mismatch(field: impl Into<String>, expected: impl Into<String>, observed: impl Into<String>) -> Mismatch {
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
