//! The three writers on one fixed, made-up run: a pass, a failure, a skip and a harness
//! error, with text that needs escaping.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::*;
use crate::formats::cper::{memory_error_record, Profile, Severity};
use crate::scenario::{
    CperObserved, Exit, GuestException, GuestObservation, Hex, HostSignal, Injection,
    InjectionKind, InjectionVia, Mismatch,
};
use crate::testutil::snapshot_settings;

fn observed(esr: u64, vector: u64) -> Outcome {
    Outcome {
        exit: Exit::Completed,
        host_signals: vec![HostSignal {
            code: 4,
            lsb: 12,
            gpa: Some(Hex(0x4010_0000)),
            thread: "vcpu0".into(),
        }],
        injection: vec![Injection {
            vcpu: 0,
            kind: InjectionKind::Sea,
            via: InjectionVia::Emulated,
            esr: Some(Hex(esr)),
        }],
        cper: vec![CperObserved::from_bytes(
            &memory_error_record(0x4010_0000, Severity::Recoverable, Profile::Qemu).encode(),
        )],
        guest: vec![GuestObservation {
            vcpu: 0,
            exception: GuestException::from_esr(esr),
            vector_offset: Some(Hex(vector)),
            esr: Some(Hex(esr)),
            far: Some(Hex(0)),
            elr: Some(Hex(0x4008_0124)),
            elr_at: None,
            isr: None,
            disr: None,
            cper_seen: true,
            acked: true,
        }],
    }
}

/// Made-up results: the writers' test, not a claim about any VMM.
fn report() -> Report {
    Report {
        host: serde_json::json!({
            "kernel": "6.12.48+deb13-arm64",
            "page_size": 4096,
            "caps": { "41": true, "158": true, "178": true, "245": false },
        }),
        results: vec![
            ScenarioResult {
                scenario: "acpi-el1-load-emulated".into(),
                verdict: Verdict::Pass,
                observed: Some(observed(0x9600_0410, 0x200)),
                duration: Duration::from_millis(1234),
            },
            ScenarioResult {
                scenario: "acpi-ifetch".into(),
                verdict: Verdict::Fail(vec![
                    Mismatch {
                        field: "expect.guest_exception".into(),
                        expected: "iabt".into(),
                        observed: "vcpu0 sea".into(),
                    },
                    Mismatch {
                        field: "expect.esr".into(),
                        expected: "0x86000410".into(),
                        observed: "vcpu0 0x96000410".into(),
                    },
                ]),
                observed: Some(observed(0x9600_0410, 0x200)),
                duration: Duration::from_millis(987),
            },
            ScenarioResult {
                scenario: "hugetlb-1g".into(),
                verdict: Verdict::Skip("needs 1 free 1 GiB hugetlb pages, the host has 0".into()),
                observed: None,
                duration: Duration::from_millis(0),
            },
            ScenarioResult {
                scenario: "dtb-serror-0811".into(),
                verdict: Verdict::Error(
                    "report page <vcpu0> & \"magic\" 'bad'\nsecond line\u{1}".into(),
                ),
                observed: None,
                duration: Duration::from_millis(30_002),
            },
        ],
    }
}

#[test]
fn summary_and_exit_code() {
    let r = report();
    assert_eq!(
        r.summary(),
        Summary {
            pass: 1,
            fail: 1,
            skip: 1,
            error: 1
        }
    );
    assert_eq!(r.summary().exit_code(), 2);
    assert_eq!(
        Summary {
            pass: 3,
            skip: 2,
            ..Summary::default()
        }
        .exit_code(),
        0
    );
    assert_eq!(
        Summary {
            pass: 3,
            fail: 1,
            ..Summary::default()
        }
        .exit_code(),
        1
    );
}

#[test]
fn json_report() {
    let text = report().to_json();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The DESIGN.md keys, with hex strings.
    assert_eq!(
        v["summary"],
        serde_json::json!({"pass": 1, "fail": 1, "skip": 1, "error": 1})
    );
    assert_eq!(v["results"][0]["observed"]["guest"][0]["esr"], "0x96000410");
    assert_eq!(v["results"][0]["reason"], serde_json::Value::Null);
    // CPER `decoded` keys come out sorted: serde_json::Value keeps objects in a BTreeMap.
    // The observed outcome reads back as it was.
    let back: Outcome = serde_json::from_value(v["results"][1]["observed"].clone()).unwrap();
    assert_eq!(back, observed(0x9600_0410, 0x200));
    snapshot_settings("report").bind(|| insta::assert_snapshot!("report_json", text));
}

#[test]
fn table_report() {
    let text = report().to_table();
    // Every row has its VERDICT column at the same offset.
    let col = text.lines().next().unwrap().find("VERDICT").unwrap();
    for line in text.lines().take(5) {
        assert!(
            line[col..].starts_with(|c: char| c.is_ascii_uppercase()),
            "{line}"
        );
    }
    snapshot_settings("report").bind(|| insta::assert_snapshot!("report_table", text));
}

#[test]
fn junit_report_parses_and_keeps_the_text() {
    let text = report().to_junit();
    let mut reader = Reader::from_str(&text);
    let mut testcases = 0;
    let mut children = Vec::new();
    let mut messages = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let name = e.name().as_ref().to_owned();
                if name == "testcase" {
                    testcases += 1;
                }
                if ["failure", "skipped", "error"].contains(&name.as_str()) {
                    children.push(name);
                    let msg = e
                        .try_get_attribute("message")
                        .unwrap()
                        .unwrap()
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .unwrap()
                        .into_owned();
                    messages.push(msg);
                }
            }
            Ok(_) => {}
            Err(e) => panic!("invalid XML at {}: {e}\n{text}", reader.buffer_position()),
        }
    }
    assert_eq!(testcases, 4);
    assert_eq!(children, ["failure", "skipped", "error"]);
    // Quotes, markup and line breaks survive; the control character XML cannot carry is
    // replaced.
    assert_eq!(
        messages[2],
        "report page <vcpu0> & \"magic\" 'bad'\nsecond line\u{FFFD}"
    );
    assert!(!text.contains('\u{1}'));
    snapshot_settings("report").bind(|| insta::assert_snapshot!("report_junit", text));
}
