//! The same scenarios run on several host kernels (`ras-harness run --kernel`) or several
//! VMMs (`--vmm A --vmm B`): the scenario table with a column per run (verdict and wall
//! time), where a row whose outcome is not the same in every run stands out, the JSON of
//! every run's report plus that matrix, and JUnit with a test suite per run.

use std::fmt::Write;

use serde::Serialize;

use super::json::JsonReport;
use super::table::{columns, printable, vmm_end_and_guest_saw};
use super::{junit, seconds, Report, ScenarioResult, Summary};
use crate::scenario::{json_name, VerdictKind};

/// What differs between the runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// The host kernel (`--kernel`).
    Kernel,
    /// The VMM under test (`--vmm`, more than once).
    Vmm,
}

impl Axis {
    fn plural(self) -> &'static str {
        match self {
            Self::Kernel => "kernels",
            Self::Vmm => "VMMs",
        }
    }
}

/// The reports of one set of scenarios, one per kernel or VMM, in the order they ran.
#[derive(Clone, Debug, PartialEq)]
pub struct SideBySide {
    /// What the runs differ in.
    pub axis: Axis,
    /// (the run's name: the kernel as given to `--kernel`, or the VMM's name; its report).
    pub runs: Vec<(String, Report)>,
}

/// One scenario across the kernels.
struct Row<'a> {
    scenario: &'a str,
    /// Per run, in run order; `None` where that run's report lacks the scenario.
    cells: Vec<Option<&'a ScenarioResult>>,
}

impl Row<'_> {
    /// What a run's cell shows to compare: the verdict, how the VMM ended, what the guest
    /// saw. Times are not compared.
    fn seen(cell: Option<&ScenarioResult>) -> Option<(VerdictKind, String, String)> {
        cell.map(|r| {
            let (end, saw) = vmm_end_and_guest_saw(r);
            (r.verdict.kind(), end, saw)
        })
    }

    /// Whether the outcome is not the same in every run.
    fn differs(&self) -> bool {
        let first = Self::seen(self.cells[0]);
        self.cells.iter().any(|&c| Self::seen(c) != first)
    }
}

impl SideBySide {
    /// Verdict counts over every run.
    pub fn summary(&self) -> Summary {
        self.runs.iter().map(|(_, r)| r.summary()).sum()
    }

    /// Every scenario of any run's report, in first-seen order.
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

    /// Scenario rows with a column per run (its verdict, wall time and, when the guest took
    /// an exception in a step, the guest's time from that access to the vector) and what
    /// the guest saw; a row whose outcome differs between runs is marked `*` and spelled
    /// out per run below, then every reason, what each run was (its Linux and page size,
    /// or its VMM), and the counts.
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
                    Some(r) => format!(
                        "{} {}s{}",
                        json_name(&r.verdict.kind()).to_uppercase(),
                        seconds(r.duration),
                        first_exception_time(r)
                    ),
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
            let _ = writeln!(out, "\n* differs between {}:", self.axis.plural());
            for row in differing {
                let _ = writeln!(out, "  {}", row.scenario);
                for ((run, _), cell) in self.runs.iter().zip(&row.cells) {
                    let text = match Row::seen(*cell) {
                        Some((verdict, end, saw)) => format!("{verdict} {end} {saw}"),
                        None => "not run".to_owned(),
                    };
                    let _ = writeln!(out, "    {run:<10} {text}");
                }
            }
        }

        let mut reasons = String::new();
        for (run, report) in &self.runs {
            for r in &report.results {
                if let Some(reason) = r.verdict.reason() {
                    let verdict = json_name(&r.verdict.kind()).to_uppercase();
                    let _ = writeln!(
                        reasons,
                        "{verdict} {run} {}: {}",
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
        for (run, report) in &self.runs {
            let s = report.summary();
            let _ = writeln!(
                out,
                "{run:<10} {}: {} passed, {} failed, {} skipped, {} errored",
                self.describe(report),
                s.pass,
                s.fail,
                s.skip,
                s.error
            );
        }
        out
    }

    /// What run `report` was: its Linux and page size, or its VMM.
    fn describe(&self, report: &Report) -> String {
        match self.axis {
            Axis::Kernel => linux(report),
            Axis::Vmm => report.vmm.to_string(),
        }
    }

    /// `{ "kernels": [ { "kernel", <the report JSON's keys> } ], "matrix": [ { "scenario",
    /// "differs", "verdicts": { RUN: VERDICT }, "times_ms": { RUN: MS } } ], "summary" }`;
    /// for VMMs `"vmms": [ <the report JSON> ]` (each names its `vmm`).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            kernels: Option<Vec<RunJson<'a>>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            vmms: Option<Vec<RunJson<'a>>>,
            matrix: Vec<MatrixRow<'a>>,
            summary: Summary,
        }
        #[derive(Serialize)]
        struct RunJson<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            kernel: Option<&'a str>,
            #[serde(flatten)]
            report: JsonReport,
        }
        #[derive(Serialize)]
        struct MatrixRow<'a> {
            scenario: &'a str,
            differs: bool,
            verdicts: serde_json::Map<String, serde_json::Value>,
            times_ms: serde_json::Map<String, serde_json::Value>,
        }
        let runs: Vec<RunJson> = self
            .runs
            .iter()
            .map(|(name, report)| RunJson {
                kernel: (self.axis == Axis::Kernel).then_some(name.as_str()),
                report: JsonReport::from(report),
            })
            .collect();
        let (kernels, vmms) = match self.axis {
            Axis::Kernel => (Some(runs), None),
            Axis::Vmm => (None, Some(runs)),
        };
        let per_run = |row: &Row, value: &dyn Fn(&ScenarioResult) -> serde_json::Value| {
            self.runs
                .iter()
                .zip(&row.cells)
                .map(|((name, _), cell)| {
                    (name.clone(), cell.map_or(serde_json::Value::Null, value))
                })
                .collect()
        };
        let doc = Doc {
            kernels,
            vmms,
            matrix: self
                .rows()
                .iter()
                .map(|row| MatrixRow {
                    scenario: row.scenario,
                    differs: row.differs(),
                    verdicts: per_run(row, &|r| json_name(&r.verdict.kind()).into()),
                    times_ms: per_run(row, &|r| {
                        u64::try_from(r.duration.as_millis())
                            .unwrap_or(u64::MAX)
                            .into()
                    }),
                })
                .collect(),
            summary: self.summary(),
        };
        serde_json::to_string_pretty(&doc)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// JUnit XML with one test suite per run, its test cases' class name the run's name.
    pub fn to_junit(&self) -> String {
        let suites: Vec<(String, &str, &Report)> = self
            .runs
            .iter()
            .map(|(run, report)| {
                (
                    format!("{run}: {}", self.describe(report)),
                    run.as_str(),
                    report,
                )
            })
            .collect();
        junit::document(&suites)
    }
}

/// ` <µs>us` from the access to the vector of the first exception the guest timed, or
/// nothing.
fn first_exception_time(r: &ScenarioResult) -> String {
    r.observed
        .as_ref()
        .and_then(|o| o.exceptions().find_map(|(_, e)| e.access_to_vector_ns))
        .map_or(String::new(), |ns| format!(" {}us", ns / 1000))
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
