//! The table people read at the end of a run: one aligned row per scenario, then the reason
//! for every verdict that is not a pass, then the counts.

use std::fmt::Write;

use super::{seconds, Report, ScenarioResult};
use crate::scenario::json_name;

const HEADER: [&str; 5] = ["SCENARIO", "VERDICT", "VMM END", "GUEST SAW", "TIME"];

pub(super) fn write(report: &Report) -> String {
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            let (end, saw) = vmm_end_and_guest_saw(r);
            vec![
                r.scenario.clone(),
                json_name(&r.verdict.kind()).to_uppercase(),
                end,
                saw,
                format!("{}s", seconds(r.duration)),
            ]
        })
        .collect();
    let mut out = columns(&HEADER, &rows, true);

    let reasons: Vec<_> = report
        .results
        .iter()
        .filter_map(|r| r.verdict.reason().map(|reason| (r, reason)))
        .collect();
    if !reasons.is_empty() {
        out.push('\n');
        for (r, reason) in reasons {
            let _ = writeln!(
                out,
                "{} {}: {}",
                json_name(&r.verdict.kind()).to_uppercase(),
                r.scenario,
                printable(&reason)
            );
        }
    }
    let s = report.summary();
    let _ = writeln!(
        out,
        "\n{} passed, {} failed, {} skipped, {} errored on {}",
        s.pass, s.fail, s.skip, s.error, report.vmm
    );
    out
}

/// How the VMM ended, and per exception the guest took its ESR, "+record" when the guest
/// read one there; "-" for none.
pub(super) fn vmm_end_and_guest_saw(r: &ScenarioResult) -> (String, String) {
    match &r.observed {
        Some(o) if !o.console.is_empty() => (o.vmm_end.to_string(), linux_saw(&o.console)),
        Some(o) => (
            o.vmm_end.to_string(),
            dash(o.exceptions().map(|(_, g)| {
                let record = if g.record.is_some() { "+record" } else { "" };
                format!("{:#010x}{record}", g.esr.low32())
            })),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    }
}

/// A Linux guest's console in a word per event, in the order the kernel goes: `record`
/// (GHES printed one), `recovered` (memory_failure() recovered the page), `sigbus` (the
/// process got one), `oops`, `panic`; `-` for none.
fn linux_saw(console: &[String]) -> String {
    const EVENTS: [(&str, &str); 5] = [
        ("[Hardware Error]", "record"),
        ("Recovered", "recovered"),
        ("ras-linux: sigbus", "sigbus"),
        ("Internal error", "oops"),
        ("Kernel panic", "panic"),
    ];
    dash(
        EVENTS
            .iter()
            .filter(|(mark, _)| console.iter().any(|l| l.contains(mark)))
            .map(|(_, word)| (*word).to_owned()),
    )
}

/// `header` and `rows` in columns as wide as their widest cell, two spaces apart; the last
/// column right-aligned when `numeric_last` (a time).
pub(super) fn columns(header: &[&str], rows: &[Vec<String>], numeric_last: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut text = String::new();
        for (i, (cell, &w)) in row.iter().zip(&widths).enumerate() {
            if numeric_last && i == row.len() - 1 {
                let _ = write!(text, "{cell:>w$}");
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Comma-joined, a run of equal items once with its count ("0x96000010 x4"), or "-" for
/// nothing.
fn dash(items: impl Iterator<Item = String>) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for item in items {
        match runs.last_mut() {
            Some((last, n)) if *last == item => *n += 1,
            _ => runs.push((item, 1)),
        }
    }
    if runs.is_empty() {
        return "-".to_owned();
    }
    let shown: Vec<String> = runs
        .into_iter()
        .map(|(item, n)| if n == 1 { item } else { format!("{item} x{n}") })
        .collect();
    shown.join(",")
}

/// A reason made safe for a terminal: continuation lines indented under their verdict,
/// other control characters replaced with U+FFFD.
pub(super) fn printable(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            '\n' => "\n    ".to_owned(),
            c if c.is_control() => '\u{FFFD}'.to_string(),
            c => c.to_string(),
        })
        .collect()
}
