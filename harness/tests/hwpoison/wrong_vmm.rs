//! A wrong VMM fails: for every kind of expectation, a real run of a scenario with the
//! reference VMM configured to do the wrong thing (or a guest that does not acknowledge,
//! or an expectation asking for more than the host does) is judged against the scenario's
//! own `expect` and must fail, on that expectation's field. A pass here would mean the
//! field is not judged. The wrong configuration bypasses validation on purpose (validation
//! refuses an `expect` the configuration cannot meet), so the run is in this process.

use std::path::PathBuf;

use libtest_mimic::{Completion, Failed, Trial};
use ras_harness::host;
use ras_harness::scenario::{
    self, CperExpectation, ExpectedCper, ExpectedSignal, Hex, OnAo, OnMemoryError, Scenario,
    SeaVia, SignalCode, Verdict,
};
use ras_harness::vmm::{self, ExecError, Options};

/// Changes a scenario: the configuration run, or the expectation judged.
type Change = fn(&mut Scenario);

fn unchanged(_: &mut Scenario) {}

/// (trial, base scenario, what the run changes, what the judged `expect` changes, the
/// fields that must fail).
fn cases() -> Vec<(
    &'static str,
    &'static str,
    Change,
    Change,
    &'static [&'static str],
)> {
    vec![
        (
            "stops_instead_of_notifying",
            "acpi-el1-load-emulated",
            |s| s.vmm.on_memory_error = OnMemoryError::Stop,
            unchanged,
            &["expect.outcome", "expect.notifications"],
        ),
        (
            "one_ar_is_not_two",
            "hard-offline",
            unchanged,
            |s| {
                s.expect.host_signals = vec![
                    ExpectedSignal {
                        code: SignalCode::Ar,
                        lsb: None,
                    };
                    2
                ]
            },
            &["expect.host_signals[1]"],
        ),
        (
            "serror_instead_of_sea",
            "acpi-el1-load-emulated",
            |s| {
                s.vmm.on_memory_error = OnMemoryError::Serror;
                s.vmm.serror_esr = Some(Hex(0x811));
            },
            unchanged,
            &[
                "expect.guest_exception",
                "expect.esr",
                "expect.vector_offset",
            ],
        ),
        (
            "ext_dabt_instead_of_the_emulated_entry",
            "acpi-el1-load-emulated",
            |s| s.vmm.sea = SeaVia::KvmExtDabt,
            unchanged,
            &["expect.esr"],
        ),
        (
            "sea_instead_of_serror",
            "dtb-serror-0811",
            |s| {
                s.vmm.on_memory_error = OnMemoryError::Sea;
                s.vmm.serror_esr = None;
            },
            unchanged,
            &[
                "expect.guest_exception",
                "expect.esr",
                "expect.vector_offset",
            ],
        ),
        (
            "ao_ignored_is_no_notification",
            "ao-early-kill-notify",
            |s| s.vmm.on_ao = OnAo::Ignore,
            unchanged,
            &[
                "expect.outcome",
                "expect.notifications",
                "expect.cper (faults[0])",
            ],
        ),
        (
            "a_record_read_but_not_acknowledged",
            "acpi-el1-load-emulated",
            |s| s.guest.ack = false,
            unchanged,
            &["expect.cper (faults[0])"],
        ),
        (
            "a_record_where_none_is_due",
            "ao-early-kill-ignored",
            |s| s.vmm.on_ao = OnAo::Notify,
            unchanged,
            &["expect.outcome", "expect.cper"],
        ),
        (
            "two_errors_one_record_is_not_recorded",
            "acpi-second-before-ack",
            unchanged,
            |s| s.expect.cper = Some(CperExpectation::All(ExpectedCper::Recorded)),
            &["expect.cper (faults[1])"],
        ),
        (
            "ao_ignored_leaves_nothing_for_esb",
            "serror-masked-esb",
            |s| s.vmm.on_ao = OnAo::Ignore,
            unchanged,
            &["expect.isr", "expect.disr"],
        ),
    ]
}

pub fn trials() -> Vec<Trial> {
    cases()
        .into_iter()
        .map(|(name, base, run_as, judge_as, fields)| {
            Trial::ignorable_test(format!("wrong_vmm::{name}"), move || {
                run(base, run_as, judge_as, fields)
            })
        })
        .collect()
}

fn run(
    base: &str,
    run_as: Change,
    judge_as: Change,
    fields: &[&str],
) -> Result<Completion, Failed> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scenarios"]
        .iter()
        .collect::<PathBuf>()
        .join(format!("{base}.json"));
    let s = scenario::load(&path)?;
    let (mut run, mut judged) = (s.clone(), s);
    run_as(&mut run);
    judge_as(&mut judged);
    let unmet = scenario::requirements(&run).unmet(&host::probe().support);
    if !unmet.is_empty() {
        return Ok(Completion::ignored_with(unmet.join("; ")));
    }
    let outcome = match vmm::execute(&run, &Options::default()) {
        Ok((outcome, _)) => outcome,
        Err(ExecError::Unsupported(why)) => return Ok(Completion::ignored_with(why)),
        Err(ExecError::Failed(why)) => return Err(why.into()),
    };
    let verdict = scenario::judge(&judged, &outcome);
    let reason = verdict.reason().unwrap_or_default();
    let Verdict::Fail(mismatches) = &verdict else {
        return Err(format!("{base}: expected a failure, got {verdict:?}").into());
    };
    println!("{base}: {reason}");
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| !mismatches.iter().any(|m| m.field == *f))
        .collect();
    if missing.is_empty() {
        Ok(Completion::Completed)
    } else {
        Err(format!("{base}: {missing:?} did not fail; the failures were: {reason}").into())
    }
}
