//! Conformance rules: what any VMM must do with a guest memory error, whatever its
//! configuration, judged on the black-box outcome alone. A scenario's `expect` is exact for
//! the reference VMM's configuration; these rules judge every VMM, each with its source.
//! docs/conformance.md explains them and the table of VMMs against scenarios.

use serde::{Deserialize, Serialize};

use ras_guest_abi::arch::{
    ESR_ELx_EC_SHIFT, ESR_ELx_FSC_EXTABT, VECTOR_CUR_SPX_SYNC, VECTOR_LOWER_A64_SYNC,
};

use crate::scenario::{
    Access, El, ExceptionTaken, Firmware, GuestException, Method, Outcome, Scenario, VmmEnd, When,
};

/// One rule.
pub struct Rule {
    /// Short name, as reports print it.
    pub id: &'static str,
    /// What it requires.
    pub says: &'static str,
    /// Where the requirement comes from.
    pub source: &'static str,
    /// `None` when the rule does not apply to the scenario, else the finding.
    check: fn(&Scenario, &Outcome) -> Option<Result<(), String>>,
}

/// Every rule, in report order.
pub const RULES: [Rule; 5] = [
    Rule {
        id: "no-crash",
        says: "the VMM process is never killed by a guest memory error: the SIGBUS KVM sends \
               is handled",
        source: "arch/arm64/kvm/mmu.c kvm_send_hwpoison_signal (BUS_MCEERR_AR to the vCPU \
                 thread); signal(7): SIGBUS terminates by default",
        check: no_crash,
    },
    Rule {
        id: "no-hang",
        says: "the VMM ends, or the guest finishes, within the run's time",
        source: "a guest stuck on a poisoned page serves nobody; the harness's limit",
        check: no_hang,
    },
    Rule {
        id: "notified-or-stopped",
        says: "a poisoned page the guest touches is either notified to the guest (an \
               exception at that access) or ends the VM with a message saying why",
        source: "ACPI 6.5 §18.3.2.9 (hardware errors are reported to the OS); QEMU \
                 kvm_arch_on_sigbus_vcpu (notify, else 'Hardware memory error!' and exit)",
        check: notified_or_stopped,
    },
    Rule {
        id: "notification-matches-access",
        says: "a synchronous notification is a data abort for a load or store and an \
               instruction abort for a fetch, taken at the vector of the access's EL, with \
               the fault status of a synchronous external abort",
        source: "Arm ARM D24.2.40 ESR_EL1 (EC 0x20/0x21/0x24/0x25, FSC 0b010000), D1.3.1 \
                 vector offsets; Linux arch/arm64/mm/fault.c fault_info[0x10] do_sea",
        check: notification_matches_access,
    },
    Rule {
        id: "record-names-the-page",
        says: "with GHES, the guest finds a record naming the poisoned page when the \
               notification arrives (unless an earlier record still waits for the guest's \
               acknowledgement, which the VMM must not overwrite)",
        source: "ACPI 6.5 §18.3.2.8 GHESv2 (Read Ack); UEFI 2.10 N.2.5 memory error section; \
                 Linux ghes_notify_sea -> ghes_do_proc -> ghes_handle_memory_failure",
        check: record_names_the_page,
    },
];

/// What a rule found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Judged {
    /// The run meets the rule.
    Pass,
    /// It does not.
    Fail,
    /// The rule says nothing of this scenario.
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// How one rule judged one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The rule's id.
    pub rule: String,
    /// What it found.
    pub result: Judged,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every rule's finding on `o`, a run of `s`.
pub fn check(s: &Scenario, o: &Outcome) -> Vec<Finding> {
    RULES
        .iter()
        .map(|r| {
            let (result, reason) = match (r.check)(s, o) {
                None => (Judged::NotApplicable, None),
                Some(Ok(())) => (Judged::Pass, None),
                Some(Err(why)) => (Judged::Fail, Some(why)),
            };
            Finding {
                rule: r.id.into(),
                result,
                reason,
            }
        })
        .collect()
}

/// The failures among `findings`, as one reason; `None` when every rule passed or did not
/// apply.
pub fn failures(findings: &[Finding]) -> Option<String> {
    let failed: Vec<String> = findings
        .iter()
        .filter(|f| f.result == Judged::Fail)
        .map(|f| format!("{}: {}", f.rule, f.reason.as_deref().unwrap_or("")))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// Faults that make the guest's own access meet poison: (vCPU, step, fault index). Soft
/// offline migrates the data and poisons nothing the guest can touch; a step without an
/// access touches nothing.
fn touched(s: &Scenario) -> Vec<(u8, u32, usize)> {
    if s.guest.access == Access::None {
        return Vec::new();
    }
    (0..s.faults.len())
        .filter(|&i| s.faults[i].method != Method::SoftOffline)
        .filter_map(|i| Some((s.faults[i].vcpu, s.fault_step(i)?, i)))
        .collect()
}

/// The notifications vCPU `vcpu` took at `step`.
fn notifications(o: &Outcome, vcpu: u8, step: u32) -> impl Iterator<Item = &ExceptionTaken> {
    o.exceptions()
        .filter(move |(v, e)| {
            *v == vcpu
                && e.step == Some(step)
                && matches!(
                    e.kind,
                    GuestException::Sea | GuestException::Iabt | GuestException::Serror
                )
        })
        .map(|(_, e)| e)
}

fn no_crash(_: &Scenario, o: &Outcome) -> Option<Result<(), String>> {
    Some(match o.vmm_end {
        VmmEnd::Killed { signal } => Err(format!("the VMM was killed by signal {signal}")),
        _ => Ok(()),
    })
}

fn no_hang(_: &Scenario, o: &Outcome) -> Option<Result<(), String>> {
    Some(match o.vmm_end {
        VmmEnd::TimedOut => Err("the run did not end in time".into()),
        _ => Ok(()),
    })
}

fn notified_or_stopped(s: &Scenario, o: &Outcome) -> Option<Result<(), String>> {
    let touched = touched(s);
    if touched.is_empty() {
        return None;
    }
    if let VmmEnd::Stopped { message } = &o.vmm_end {
        return Some(if message.trim().is_empty() {
            Err("the VMM stopped without saying why".into())
        } else {
            Ok(())
        });
    }
    for (vcpu, step, i) in touched {
        if notifications(o, vcpu, step).next().is_none() {
            return Some(Err(format!(
                "vcpu{vcpu} met fault {i} at step {step} with no notification, and the VMM \
                 ended {}",
                o.vmm_end
            )));
        }
    }
    Some(Ok(()))
}

fn notification_matches_access(s: &Scenario, o: &Outcome) -> Option<Result<(), String>> {
    let (kind, vector) = match (s.guest.access, s.guest.el) {
        (Access::None, _) => return None,
        (Access::Ifetch, el) => (GuestException::Iabt, vector_of(el)),
        (_, el) => (GuestException::Sea, vector_of(el)),
    };
    let mut applied = false;
    for (vcpu, step, _) in touched(s) {
        for e in notifications(o, vcpu, step).filter(|e| e.kind != GuestException::Serror) {
            applied = true;
            let ec = (e.esr.0 >> ESR_ELx_EC_SHIFT) as u8 & 0x3f;
            let fsc = (e.esr.0 & 0x3f) as u8;
            let expected_ec = if vector == VECTOR_LOWER_A64_SYNC {
                kind.exception_classes()[0]
            } else {
                kind.exception_classes()[1]
            };
            if e.kind != kind || e.vector_offset.0 != vector || ec != expected_ec {
                return Some(Err(format!(
                    "vcpu{vcpu} step {step}: {:?} at {:#x} (EC {ec:#x}) for a {:?} at {:?}, \
                     expected EC {expected_ec:#x} at {vector:#x}",
                    e.kind, e.vector_offset.0, s.guest.access, s.guest.el
                )));
            }
            if fsc != ESR_ELx_FSC_EXTABT {
                return Some(Err(format!(
                    "vcpu{vcpu} step {step}: fault status {fsc:#x}, not a synchronous external \
                     abort ({ESR_ELx_FSC_EXTABT:#x})"
                )));
            }
        }
    }
    applied.then_some(Ok(()))
}

fn record_names_the_page(s: &Scenario, o: &Outcome) -> Option<Result<(), String>> {
    if s.firmware != Firmware::Acpi {
        return None;
    }
    let mut applied = false;
    // A later fault meets a block whose record is still unacknowledged unless the guest
    // acknowledges, and acknowledged it first.
    let unacked = |i: usize| i > 0 && (!s.guest.ack || s.faults[i].when == When::BeforeAck);
    for (vcpu, step, i) in touched(s).into_iter().filter(|&(_, _, i)| !unacked(i)) {
        let page = s.faults[i].gpa();
        // An exception the guest never got to look for a record at says nothing of it.
        for e in notifications(o, vcpu, step).filter(|e| !e.unfinished) {
            applied = true;
            let named = e.record.as_ref().is_some_and(|r| {
                r.physical_addresses()
                    .iter()
                    .any(|&a| a & !(crate::scenario::TARGET_PAGE_SIZE - 1) == page)
            });
            if !named {
                return Some(Err(format!(
                    "vcpu{vcpu} step {step}: no record naming page {page:#x} at the {:?}",
                    e.kind
                )));
            }
        }
    }
    applied.then_some(Ok(()))
}

fn vector_of(el: El) -> u64 {
    match el {
        El::El0 => VECTOR_LOWER_A64_SYNC,
        El::El1 => VECTOR_CUR_SPX_SYNC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{load, Hex};
    use std::path::Path;

    /// The reference VMM's observed outcome of scenario `name`, from its baseline snapshot
    /// (ELR names put back as a number: no rule reads them).
    fn reference(name: &str) -> (Scenario, Outcome) {
        let s = load(Path::new(&format!("../scenarios/{name}.json"))).unwrap();
        let snap = std::fs::read_to_string(format!("../snapshots/scenarios/{name}.snap")).unwrap();
        let body = snap.splitn(3, "---").nth(2).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
        let mut observed = v["observed"].take();
        for g in observed["guest"].as_array_mut().unwrap() {
            for e in g["exceptions"].as_array_mut().unwrap() {
                e["elr"] = "0x0".into();
            }
        }
        (s, serde_json::from_value(observed).unwrap())
    }

    fn finding(s: &Scenario, o: &Outcome, rule: &str) -> (&'static str, Option<String>) {
        let f = check(s, o).into_iter().find(|f| f.rule == rule).unwrap();
        let result = match f.result {
            Judged::Pass => "pass",
            Judged::Fail => "fail",
            Judged::NotApplicable => "n/a",
        };
        (result, f.reason)
    }

    #[test]
    fn every_reference_baseline_is_judged_and_the_reference_vmm_conforms() {
        let mut applied = std::collections::BTreeMap::<&str, usize>::new();
        for entry in std::fs::read_dir("../scenarios").unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let (s, o) = reference(&name);
            let findings = check(&s, &o);
            assert_eq!(failures(&findings), None, "{name}: {findings:#?}");
            for f in findings.iter().filter(|f| f.result == Judged::Pass) {
                *applied
                    .entry(RULES.iter().find(|r| r.id == f.rule).unwrap().id)
                    .or_default() += 1;
            }
        }
        // Every rule found something to judge among the baselines.
        for r in &RULES {
            assert!(
                applied.get(r.id).copied().unwrap_or(0) > 0,
                "{} never applied",
                r.id
            );
        }
    }

    #[test]
    fn wrong_outcomes_fail_the_rule_they_break() {
        let (s, good) = reference("dtb-sea");
        let mut o = good.clone();
        o.vmm_end = VmmEnd::Killed { signal: 7 };
        assert_eq!(finding(&s, &o, "no-crash").0, "fail");
        assert_eq!(
            finding(&s, &o, "notified-or-stopped").0,
            "pass",
            "notified before"
        );
        o.guest[0].exceptions.clear();
        let (result, reason) = finding(&s, &o, "notified-or-stopped");
        assert_eq!(result, "fail");
        assert!(reason.unwrap().contains("killed by signal 7"));
        o.vmm_end = VmmEnd::TimedOut;
        assert_eq!(finding(&s, &o, "no-hang").0, "fail");
        o.vmm_end = VmmEnd::Stopped {
            message: " ".into(),
        };
        assert_eq!(finding(&s, &o, "notified-or-stopped").0, "fail");
        o.vmm_end = VmmEnd::Stopped {
            message: "Hardware memory error! (exit status 1)".into(),
        };
        assert_eq!(finding(&s, &o, "notified-or-stopped").0, "pass");
        assert_eq!(finding(&s, &o, "notification-matches-access").0, "n/a");

        let mut o = good.clone();
        o.guest[0].exceptions[0].vector_offset = Hex(0x400);
        assert_eq!(finding(&s, &o, "notification-matches-access").0, "fail");
        let mut o = good.clone();
        o.guest[0].exceptions[0].esr = Hex(0x9600_0418);
        let (result, reason) = finding(&s, &o, "notification-matches-access");
        assert_eq!((result, reason.unwrap().contains("0x18")), ("fail", true));
        let mut o = good;
        o.guest[0].exceptions[0].kind = GuestException::Iabt;
        o.guest[0].exceptions[0].esr = Hex(0x8600_0010);
        assert_eq!(finding(&s, &o, "notification-matches-access").0, "fail");

        let (s, good) = reference("acpi-store");
        assert_eq!(finding(&s, &good, "record-names-the-page").0, "pass");
        let mut o = good.clone();
        o.guest[0].exceptions[0].record = None;
        assert_eq!(finding(&s, &o, "record-names-the-page").0, "fail");
        // The VM ended before the guest looked: nothing to judge.
        o.guest[0].exceptions[0].unfinished = true;
        assert_eq!(finding(&s, &o, "record-names-the-page").0, "n/a");
        let (other, _) = reference("dtb-sea");
        assert_eq!(finding(&other, &good, "record-names-the-page").0, "n/a");
    }
}
