//! Comparing a scenario's `expect` with an [`Outcome`]: every unmet expectation is listed,
//! not just the first, so one run explains itself. Only what the guest reported, what the
//! host kernel signalled and how the VMM ended is judged, so any VMM can be.

use super::json_name;
use super::outcome::{ExceptionTaken, GuestState, HostSignal, Mismatch, Outcome, Verdict, VmmEnd};
use super::page_size::lsb_on_host;
use super::spec::{
    ConsoleExpectation, CperExpectation, ExpectedCper, ExpectedOutcome, ExpectedSignal,
    GuestException, Os, Scenario, SignalCode,
};
use crate::formats::esr::Esr;

/// Judges `outcome` against `scenario.expect`, of a run on this host. Never returns Skip or
/// Error: those come from the runner, before or instead of an outcome.
pub fn judge(scenario: &Scenario, outcome: &Outcome) -> Verdict {
    judge_on(scenario, outcome, crate::host::page_size() as usize)
}

/// [`judge`] for a run on a host with `page_size` pages: `expect.host_signals[].lsb` is
/// written as on a 4 KiB host ([`super::page_size`]).
pub fn judge_on(scenario: &Scenario, outcome: &Outcome, page_size: usize) -> Verdict {
    let e = &scenario.expect;
    let mut m = Vec::new();
    let events: Vec<(u8, &ExceptionTaken)> = outcome.exceptions().collect();
    let linux = scenario.guest.os == Os::Linux;
    let took_the_error = if linux {
        outcome
            .console
            .iter()
            .any(|l| LINUX_TOOK_THE_ERROR.iter().any(|mark| l.contains(mark)))
    } else {
        !events.is_empty()
    };

    match observed_outcome(outcome, took_the_error) {
        Ok(o) if o == e.outcome => {}
        Ok(o) => m.push(mismatch(
            "expect.outcome",
            json_name(&e.outcome),
            json_name(&o),
        )),
        Err(what) => m.push(mismatch("expect.outcome", json_name(&e.outcome), what)),
    }

    check_signals(&mut m, scenario, &outcome.host_signals, page_size);

    if let Some(console) = &e.console {
        check_console(&mut m, console, &outcome.console);
    }

    if e.outcome == ExpectedOutcome::GuestNotified && !linux {
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
            |g| Esr::from_raw(g.esr.0).same_syndrome(Esr::from_raw(esr.0)),
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

/// What a Linux guest's console holds when its kernel took the error: APEI's account of
/// a record (drivers/firmware/efi/cper.c prints under `[Hardware Error]`), or arm64's of a
/// synchronous external abort it did not hand to APEI (arch/arm64/mm/fault.c: do_sea ->
/// arm64_notify_die with fault_info's name, an oops).
const LINUX_TOOK_THE_ERROR: [&str; 2] = ["[Hardware Error]", "synchronous external abort"];

/// `expect.console`: each `contains` entry is part of some line, no `excludes` entry of any.
fn check_console(m: &mut Vec<Mismatch>, want: &ConsoleExpectation, lines: &[String]) {
    for (i, text) in want.contains.iter().enumerate() {
        if !lines.iter().any(|l| l.contains(text.as_str())) {
            m.push(mismatch(
                format!("expect.console.contains[{i}]"),
                format!("a line with {text:?}"),
                "none",
            ));
        }
    }
    for (i, text) in want.excludes.iter().enumerate() {
        if let Some(l) = lines.iter().find(|l| l.contains(text.as_str())) {
            m.push(mismatch(
                format!("expect.console.excludes[{i}]"),
                format!("no line with {text:?}"),
                format!("{l:?}"),
            ));
        }
    }
}

/// The scenario-level outcome the VMM's end and the guest's reports amount to, or what was
/// seen instead when it is none of them (a timeout, a guest that did not finish).
fn observed_outcome(o: &Outcome, took_the_error: bool) -> Result<ExpectedOutcome, String> {
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
            } else if took_the_error {
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
/// entries that name an lsb first (they match fewer signals), that lsb as the host reports
/// it. Signals left over are allowed.
fn check_signals(m: &mut Vec<Mismatch>, s: &Scenario, observed: &[HostSignal], page_size: usize) {
    let wanted: Vec<ExpectedSignal> = s
        .expect
        .host_signals
        .iter()
        .map(|w| ExpectedSignal {
            lsb: w.lsb.map(|lsb| lsb_on_host(lsb, page_size)),
            ..*w
        })
        .collect();
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
mod tests;
