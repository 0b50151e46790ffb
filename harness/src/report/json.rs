//! The JSON report: per result the verdict, `observed` (what was judged: the guest's
//! report, the host's signals, how the VMM ended) and `vmm_log` (what the VMM says it did,
//! not judged), plus `time_ms`; a failure's mismatches also one by one. It reads back into
//! the same [`Report`], which is how a run in each emulated host kernel comes home.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Report, ScenarioResult, Summary, VmmId};
use crate::conformance::Finding;
use crate::scenario::{Mismatch, Outcome, Verdict, VerdictKind};
use crate::vmm::log::VmmLog;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JsonReport {
    host: serde_json::Value,
    #[serde(default)]
    vmm: VmmId,
    results: Vec<JsonResult>,
    /// Written for readers; recounted from `results` when read back.
    summary: Summary,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonResult {
    scenario: String,
    verdict: VerdictKind,
    reason: Option<String>,
    /// A failure's unmet expectations (its `reason` joins them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mismatches: Vec<Mismatch>,
    time_ms: u64,
    observed: Option<Outcome>,
    vmm_log: Option<VmmLog>,
    /// Each conformance rule's finding on `observed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    conformance: Vec<Finding>,
}

impl From<&Report> for JsonReport {
    fn from(report: &Report) -> JsonReport {
        JsonReport {
            host: report.host.clone(),
            vmm: report.vmm.clone(),
            results: report.results.iter().map(JsonResult::from).collect(),
            summary: report.summary(),
        }
    }
}

impl From<&ScenarioResult> for JsonResult {
    fn from(r: &ScenarioResult) -> JsonResult {
        JsonResult {
            scenario: r.scenario.clone(),
            verdict: r.verdict.kind(),
            reason: r.verdict.reason(),
            mismatches: match &r.verdict {
                Verdict::Fail(m) => m.clone(),
                _ => Vec::new(),
            },
            time_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            observed: r.observed.clone(),
            vmm_log: r.vmm_log.clone(),
            conformance: r.conformance.clone(),
        }
    }
}

impl TryFrom<JsonResult> for ScenarioResult {
    type Error = String;

    fn try_from(r: JsonResult) -> Result<ScenarioResult, String> {
        let reason = || {
            r.reason
                .clone()
                .ok_or(format!("{}: a {} without a reason", r.scenario, r.verdict))
        };
        let verdict = match r.verdict {
            VerdictKind::Pass => Verdict::Pass,
            VerdictKind::Fail if r.mismatches.is_empty() => {
                return Err(format!("{}: a failure without mismatches", r.scenario))
            }
            VerdictKind::Fail => Verdict::Fail(r.mismatches),
            VerdictKind::Skip => Verdict::Skip(reason()?),
            VerdictKind::Error => Verdict::Error(reason()?),
        };
        Ok(ScenarioResult {
            scenario: r.scenario,
            verdict,
            observed: r.observed,
            vmm_log: r.vmm_log,
            conformance: r.conformance,
            duration: Duration::from_millis(r.time_ms),
        })
    }
}

pub(super) fn write(report: &Report) -> String {
    // Serializing plain data with string keys cannot fail; keep the error visible anyway.
    serde_json::to_string_pretty(&JsonReport::from(report))
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

pub(super) fn read(text: &str) -> Result<Report, String> {
    let doc: JsonReport = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(Report {
        host: doc.host,
        vmm: doc.vmm,
        results: doc
            .results
            .into_iter()
            .map(ScenarioResult::try_from)
            .collect::<Result<_, _>>()?,
    })
}
