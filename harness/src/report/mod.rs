//! The run report: what the host was, each scenario's verdict with what was observed, and
//! a summary; written as JSON (the stable interface, DESIGN.md "Report JSON"), JUnit XML
//! (for CI dashboards) and an aligned table (for people).

mod json;
mod junit;
mod side_by_side;
mod table;

pub use side_by_side::{Axis, SideBySide};

use std::time::Duration;

use crate::conformance::Finding;
use crate::scenario::{Outcome, Verdict, VerdictKind};
use crate::vmm::log::VmmLog;

/// A whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// What the host is (kernel, page size, caps, ...), as the runner's probe reports it.
    pub host: serde_json::Value,
    /// The VMM under test.
    pub vmm: VmmId,
    /// One entry per scenario, in run order.
    pub results: Vec<ScenarioResult>,
}

/// Which VMM a run tested: its `--vmm` name and, where known, its version.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmId {
    /// `reference`, `qemu-trixie`, `libkrun`, ... ([`crate::sut::Sut::name`]).
    pub name: String,
    /// Its version as its package or build says.
    pub version: Option<String>,
}

impl std::fmt::Display for VmmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} ({v})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The verdict on one scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub scenario: String,
    /// Pass, fail (with every mismatch), skip or error, with the reason.
    pub verdict: Verdict,
    /// What the run observed; `None` when it never ran (skip) or broke before an outcome.
    pub observed: Option<Outcome>,
    /// What the VMM says it did, when it says (the reference VMM); never judged.
    pub vmm_log: Option<VmmLog>,
    /// Each conformance rule's finding on `observed` (empty without an outcome).
    pub conformance: Vec<Finding>,
    /// Wall-clock time of the scenario, setup and teardown included.
    pub duration: Duration,
}

/// Verdict counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Scenarios that passed.
    pub pass: usize,
    /// Scenarios whose outcome did not match.
    pub fail: usize,
    /// Scenarios the host could not run.
    pub skip: usize,
    /// Scenarios the harness failed to run.
    pub error: usize,
}

/// `ras-harness run`'s exit status when no scenario failed or erred and none passed either
/// (every one skipped, or none given): nothing was tested, which a CI gate must not take
/// for a pass.
pub const EXIT_NOTHING_TESTED: i32 = 3;

impl Summary {
    /// The process exit status for a run: 2 when the harness itself erred (it says nothing
    /// about the VMM, so it outranks a failure), 1 when a scenario failed,
    /// [`EXIT_NOTHING_TESTED`] when nothing passed, 0 when something passed and the rest
    /// was skipped for a stated reason.
    pub fn exit_code(&self) -> i32 {
        if self.error > 0 {
            2
        } else if self.fail > 0 {
            1
        } else if self.pass == 0 {
            EXIT_NOTHING_TESTED
        } else {
            0
        }
    }
}

impl std::iter::Sum for Summary {
    fn sum<I: Iterator<Item = Summary>>(iter: I) -> Summary {
        iter.fold(Summary::default(), |a, s| Summary {
            pass: a.pass + s.pass,
            fail: a.fail + s.fail,
            skip: a.skip + s.skip,
            error: a.error + s.error,
        })
    }
}

impl Report {
    /// Counts the verdicts.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in &self.results {
            match r.verdict.kind() {
                VerdictKind::Pass => s.pass += 1,
                VerdictKind::Fail => s.fail += 1,
                VerdictKind::Skip => s.skip += 1,
                VerdictKind::Error => s.error += 1,
            }
        }
        s
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        json::write(self)
    }

    /// Reads back what [`to_json`](Self::to_json) wrote.
    pub fn from_json(text: &str) -> Result<Report, String> {
        json::read(text)
    }

    /// The report as a JUnit XML document.
    pub fn to_junit(&self) -> String {
        junit::write(self)
    }

    /// The report as an aligned table with the reasons below it.
    pub fn to_table(&self) -> String {
        table::write(self)
    }
}

/// Seconds with millisecond precision, as JUnit's `time` and the table show them.
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

#[cfg(test)]
mod tests;
