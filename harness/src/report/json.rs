//! The JSON report: per result the verdict, `observed` (what was judged: the guest's
//! report, the host's signals, how the VMM ended) and `vmm_log` (what the VMM says it did,
//! not judged), plus `time_ms`.

use serde::Serialize;

use super::{Report, Summary};
use crate::scenario::{Outcome, VerdictKind};
use crate::vmm::log::VmmLog;

#[derive(Serialize)]
struct JsonReport<'a> {
    host: &'a serde_json::Value,
    results: Vec<JsonResult<'a>>,
    summary: Summary,
}

#[derive(Serialize)]
struct JsonResult<'a> {
    scenario: &'a str,
    verdict: VerdictKind,
    reason: Option<String>,
    time_ms: u128,
    observed: Option<&'a Outcome>,
    vmm_log: Option<&'a VmmLog>,
}

pub(super) fn write(report: &Report) -> String {
    let doc = JsonReport {
        host: &report.host,
        results: report
            .results
            .iter()
            .map(|r| JsonResult {
                scenario: &r.scenario,
                verdict: r.verdict.kind(),
                reason: r.verdict.reason(),
                time_ms: r.duration.as_millis(),
                observed: r.observed.as_ref(),
                vmm_log: r.vmm_log.as_ref(),
            })
            .collect(),
        summary: report.summary(),
    };
    // Serializing plain data with string keys cannot fail; keep the error visible anyway.
    serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}
