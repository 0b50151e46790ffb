//! The JSON report, in DESIGN.md's shape plus `time_ms` per result.

use serde::Serialize;

use super::{Report, Summary};
use crate::scenario::{Outcome, VerdictKind};

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
            })
            .collect(),
        summary: report.summary(),
    };
    // Serializing plain data with string keys cannot fail; keep the error visible anyway.
    serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}
