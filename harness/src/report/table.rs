//! The table people read at the end of a run: one aligned row per scenario, then the reason
//! for every verdict that is not a pass, then the counts.

use std::fmt::Write;

use super::{seconds, Report};
use crate::scenario::json_name;

const HEADER: [&str; 5] = ["SCENARIO", "VERDICT", "VMM END", "GUEST SAW", "TIME"];

pub(super) fn write(report: &Report) -> String {
    let rows: Vec<[String; 5]> = report
        .results
        .iter()
        .map(|r| {
            // Per exception its ESR, "+record" when the guest read one there.
            let (end, saw) = match &r.observed {
                Some(o) => (
                    o.vmm_end.to_string(),
                    dash(o.exceptions().map(|(_, g)| {
                        let record = if g.record.is_some() { "+record" } else { "" };
                        format!("{:#010x}{record}", g.esr.low32())
                    })),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            [
                r.scenario.clone(),
                json_name(&r.verdict.kind()).to_uppercase(),
                end,
                saw,
                format!("{}s", seconds(r.duration)),
            ]
        })
        .collect();

    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == cells.len() - 1 {
                // Right-align the time, the one numeric column.
                let _ = write!(text, "{cell:>w$}");
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(HEADER);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }

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
        "\n{} passed, {} failed, {} skipped, {} errored",
        s.pass, s.fail, s.skip, s.error
    );
    out
}

/// Comma-joined, or "-" for nothing.
fn dash(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(",")
    }
}

/// A reason made safe for a terminal: continuation lines indented under their verdict,
/// other control characters replaced with U+FFFD.
fn printable(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            '\n' => "\n    ".to_owned(),
            c if c.is_control() => '\u{FFFD}'.to_string(),
            c => c.to_string(),
        })
        .collect()
}
