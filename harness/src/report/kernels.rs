//! One run of the same scenarios on several host kernels (`ras-harness run --kernel`): the
//! kernel x scenario table, where a row whose outcome is not the same on every kernel
//! stands out, the JSON of every kernel's report plus that matrix, and JUnit with a test
//! suite per kernel.

use std::fmt::Write;

use serde::Serialize;

use super::json::JsonReport;
use super::table::{columns, printable, vmm_end_and_guest_saw};
use super::{junit, Report, ScenarioResult, Summary};
use crate::scenario::{json_name, VerdictKind};

/// The reports of one set of scenarios, one per kernel, in the order the kernels ran.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelReports {
    /// (kernel name as given to `--kernel`, its report).
    pub runs: Vec<(String, Report)>,
}

/// One scenario across the kernels.
struct Row<'a> {
    scenario: &'a str,
    /// Per kernel, in run order; `None` where that kernel's report lacks the scenario.
    cells: Vec<Option<&'a ScenarioResult>>,
}

impl Row<'_> {
    /// What a kernel's cell shows to compare: the verdict, how the VMM ended, what the
    /// guest saw. Times are not compared.
    fn seen(cell: Option<&ScenarioResult>) -> Option<(VerdictKind, String, String)> {
        cell.map(|r| {
            let (end, saw) = vmm_end_and_guest_saw(r);
            (r.verdict.kind(), end, saw)
        })
    }

    /// Whether the outcome is not the same on every kernel.
    fn differs(&self) -> bool {
        let first = Self::seen(self.cells[0]);
        self.cells.iter().any(|&c| Self::seen(c) != first)
    }
}

impl KernelReports {
    /// Verdict counts over every kernel.
    pub fn summary(&self) -> Summary {
        self.runs.iter().map(|(_, r)| r.summary()).sum()
    }

    /// Every scenario of any kernel's report, in first-seen order.
    fn rows(&self) -> Vec<Row<'_>> {
        let mut names: Vec<&str> = Vec::new();
        for (_, report) in &self.runs {
            for r in &report.results {
                if !names.contains(&r.scenario.as_str()) {
                    names.push(&r.scenario);
                }
            }
        }
        names
            .into_iter()
            .map(|scenario| Row {
                scenario,
                cells: self
                    .runs
                    .iter()
                    .map(|(_, report)| report.results.iter().find(|r| r.scenario == scenario))
                    .collect(),
            })
            .collect()
    }

    /// Scenario rows with a verdict column per kernel and what the guest saw; a row whose
    /// outcome differs between kernels is marked `*` and spelled out per kernel below,
    /// then every reason, each kernel's Linux and page size, and the counts.
    pub fn to_table(&self) -> String {
        let rows = self.rows();
        let mut header = vec!["  SCENARIO"];
        header.extend(self.runs.iter().map(|(k, _)| k.as_str()));
        header.push("GUEST SAW");
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                let differs = row.differs();
                let mut cells = vec![format!(
                    "{} {}",
                    if differs { '*' } else { ' ' },
                    row.scenario
                )];
                cells.extend(row.cells.iter().map(|c| match c {
                    Some(r) => json_name(&r.verdict.kind()).to_uppercase(),
                    None => "-".to_owned(),
                }));
                cells.push(if differs {
                    "(differs, below)".to_owned()
                } else {
                    row.cells[0].map_or("-".to_owned(), |r| vmm_end_and_guest_saw(r).1)
                });
                cells
            })
            .collect();
        let mut out = columns(&header, &cells, false);

        let differing: Vec<&Row> = rows.iter().filter(|r| r.differs()).collect();
        if !differing.is_empty() {
            let _ = writeln!(out, "\n* differs between kernels:");
            for row in differing {
                let _ = writeln!(out, "  {}", row.scenario);
                for ((kernel, _), cell) in self.runs.iter().zip(&row.cells) {
                    let text = match Row::seen(*cell) {
                        Some((verdict, end, saw)) => format!("{verdict} {end} {saw}"),
                        None => "not run".to_owned(),
                    };
                    let _ = writeln!(out, "    {kernel:<10} {text}");
                }
            }
        }

        let mut reasons = String::new();
        for (kernel, report) in &self.runs {
            for r in &report.results {
                if let Some(reason) = r.verdict.reason() {
                    let verdict = json_name(&r.verdict.kind()).to_uppercase();
                    let _ = writeln!(
                        reasons,
                        "{verdict} {kernel} {}: {}",
                        r.scenario,
                        printable(&reason)
                    );
                }
            }
        }
        if !reasons.is_empty() {
            out.push('\n');
            out.push_str(&reasons);
        }

        out.push('\n');
        for (kernel, report) in &self.runs {
            let s = report.summary();
            let _ = writeln!(
                out,
                "{kernel:<10} {}: {} passed, {} failed, {} skipped, {} errored",
                linux(report),
                s.pass,
                s.fail,
                s.skip,
                s.error
            );
        }
        out
    }

    /// `{ "kernels": [ { "kernel", <the report JSON's keys> } ], "matrix": [ { "scenario",
    /// "differs", "verdicts": { KERNEL: VERDICT } } ], "summary" }`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            kernels: Vec<KernelJson<'a>>,
            matrix: Vec<MatrixRow<'a>>,
            summary: Summary,
        }
        #[derive(Serialize)]
        struct KernelJson<'a> {
            kernel: &'a str,
            #[serde(flatten)]
            report: JsonReport,
        }
        #[derive(Serialize)]
        struct MatrixRow<'a> {
            scenario: &'a str,
            differs: bool,
            verdicts: serde_json::Map<String, serde_json::Value>,
        }
        let doc = Doc {
            kernels: self
                .runs
                .iter()
                .map(|(kernel, report)| KernelJson {
                    kernel,
                    report: JsonReport::from(report),
                })
                .collect(),
            matrix: self
                .rows()
                .iter()
                .map(|row| MatrixRow {
                    scenario: row.scenario,
                    differs: row.differs(),
                    verdicts: self
                        .runs
                        .iter()
                        .zip(&row.cells)
                        .map(|((kernel, _), cell)| {
                            let verdict = cell.map(|r| json_name(&r.verdict.kind()));
                            (kernel.clone(), verdict.into())
                        })
                        .collect(),
                })
                .collect(),
            summary: self.summary(),
        };
        serde_json::to_string_pretty(&doc)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// JUnit XML with one test suite per kernel, its test cases' class name the kernel.
    pub fn to_junit(&self) -> String {
        let suites: Vec<(String, &str, &Report)> = self
            .runs
            .iter()
            .map(|(kernel, report)| {
                (
                    format!("{kernel}: {}", linux(report)),
                    kernel.as_str(),
                    report,
                )
            })
            .collect();
        junit::document(&suites)
    }
}

/// "Linux RELEASE, N-byte pages" from a report's host, as far as it says.
fn linux(report: &Report) -> String {
    let Some(release) = report.host["kernel"].as_str() else {
        return "Linux release unknown (no host report)".to_owned();
    };
    match report.host["page_size"].as_u64() {
        Some(size) => format!("Linux {release}, {size}-byte pages"),
        None => format!("Linux {release}"),
    }
}
