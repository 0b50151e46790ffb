//! JUnit XML, the dialect Jenkins, GitLab and GitHub test reporters read: a testsuite per
//! run (one, or one per kernel or VMM), a testcase per scenario with a `failure`, `skipped`
//! or `error` child, the observed outcome as `system-out`, and the VMM and the host as suite
//! properties.

use std::fmt::Write;

use super::{seconds, Report, Summary};
use crate::scenario::Verdict;

pub(super) fn write(report: &Report) -> String {
    document(&[("ras-harness".into(), "scenarios", report)])
}

/// The document: per (suite name, test case class name, report) a testsuite.
pub(super) fn document(suites: &[(String, &str, &Report)]) -> String {
    let summary = suites.iter().map(|(_, _, r)| r.summary()).sum();
    let all = suites.iter().flat_map(|(_, _, r)| &r.results);
    let time = seconds(all.clone().map(|r| r.duration).sum());
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"ras-harness\" {}>",
        counts(all.count(), summary, &time)
    );
    for (name, class, report) in suites {
        suite(&mut out, name, class, report);
    }
    out.push_str("</testsuites>\n");
    out
}

/// `tests`, `failures`, `errors`, `skipped` and `time` attributes.
fn counts(tests: usize, s: Summary, time: &str) -> String {
    format!(
        "tests=\"{tests}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time}\"",
        s.fail, s.error, s.skip
    )
}

fn suite(out: &mut String, name: &str, class: &str, report: &Report) {
    let time = seconds(report.results.iter().map(|r| r.duration).sum());
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" {}>",
        escape(name),
        counts(report.results.len(), report.summary(), &time)
    );
    out.push_str("    <properties>\n");
    let vmm = [
        ("vmm.name", Some(&report.vmm.name)),
        ("vmm.version", report.vmm.version.as_ref()),
    ];
    for (key, value) in vmm {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "      <property name=\"{key}\" value=\"{}\"/>",
                escape(value)
            );
        }
    }
    if let Some(host) = report.host.as_object() {
        for (key, value) in host {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(
                out,
                "      <property name=\"host.{}\" value=\"{}\"/>",
                escape(key),
                escape(&value)
            );
        }
    }
    out.push_str("    </properties>\n");
    for r in &report.results {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
            escape(&r.scenario),
            escape(class),
            seconds(r.duration)
        );
        let observed = r
            .observed
            .as_ref()
            .and_then(|o| serde_json::to_string_pretty(o).ok());
        if r.verdict == Verdict::Pass && observed.is_none() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        match &r.verdict {
            Verdict::Pass => {}
            Verdict::Fail(mismatches) => {
                let message = r.verdict.reason().unwrap_or_default();
                let body: Vec<String> = mismatches.iter().map(|m| m.to_string()).collect();
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\" type=\"mismatch\">{}</failure>",
                    escape(&message),
                    escape_text(&body.join("\n"))
                );
            }
            Verdict::Skip(reason) => {
                let _ = writeln!(out, "      <skipped message=\"{}\"/>", escape(reason));
            }
            Verdict::Error(reason) => {
                let _ = writeln!(
                    out,
                    "      <error message=\"{}\" type=\"harness\"/>",
                    escape(reason)
                );
            }
        }
        if let Some(observed) = observed {
            let _ = writeln!(
                out,
                "      <system-out>{}</system-out>",
                escape_text(&observed)
            );
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n");
}

/// Escapes a double-quoted attribute value. Line breaks and tabs become character
/// references, because attribute-value normalisation would turn them into spaces
/// (XML 1.0 section 3.3.3).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => push_text_char(&mut out, c),
        }
    }
    out
}

/// Escapes element content: markup characters only, line breaks kept as they are.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_text_char(&mut out, c);
    }
    out
}

/// Pushes `c` escaped for content. Characters XML 1.0 forbids (C0 controls other than tab,
/// LF and CR; U+FFFE, U+FFFF) become U+FFFD, since no escape can carry them (XML 1.0
/// section 2.2, production Char).
fn push_text_char(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '\t' | '\n' | '\r' => out.push(c),
        c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
        c => out.push(c),
    }
}
