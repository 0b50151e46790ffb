//! The three writers on one fixed, made-up run: a pass, a failure, a skip and a harness
//! error, with text that needs escaping.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::*;
use crate::conformance::Finding;
use crate::fault::SigbusCode;
use crate::formats::cper::{memory_error_record, Profile, Severity};
use crate::scenario::{
    ExceptionTaken, GuestException, GuestReport, GuestState, Hex, HostSignal, Mismatch, RecordRead,
    VmmEnd,
};
use crate::testutil::snapshot_settings;
use crate::vmm::log::{Injection, InjectionKind, InjectionVia, VmmLog};

fn observed(esr: u64, vector: u64) -> Outcome {
    let record = memory_error_record(0x8010_0000, Severity::Recoverable, Profile::Qemu).encode();
    Outcome {
        vmm_end: VmmEnd::Completed,
        host_signals: vec![HostSignal {
            code: SigbusCode::MceerrAr,
            lsb: 12,
            gpa: Some(Hex(0x8010_0000)),
            thread: "vcpu0".into(),
        }],
        guest: vec![GuestReport {
            vcpu: 0,
            state: GuestState::Done,
            exceptions: vec![ExceptionTaken {
                kind: GuestException::from_esr(esr),
                vector_offset: Hex(vector),
                esr: Hex(esr),
                far: Hex(0),
                elr: Hex(0x4000_0124),
                elr_at: Some("access".into()),
                spsr: Hex(0x3c5),
                isr: Hex(0),
                step: Some(0),
                unfinished: false,
                record: Some(RecordRead::new(&record, record.len() as u32, true)),
                access_to_vector_ns: None,
            }],
            serror_wait: None,
        }],
        console: Vec::new(),
    }
}

fn vmm_log(esr: u64) -> Option<VmmLog> {
    Some(VmmLog {
        injections: vec![Injection {
            vcpu: 0,
            kind: InjectionKind::Sea,
            via: InjectionVia::Emulated,
            esr: Some(Hex(esr)),
        }],
        records: vec![],
    })
}

/// Made-up results: the writers' test, not a claim about any VMM.
fn report() -> Report {
    Report {
        vmm: VmmId {
            name: "reference".into(),
            version: Some("ras-harness 0.1.0".into()),
        },
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
                vmm_log: vmm_log(0x9600_0410),
                conformance: vec![Finding {
                    rule: "no-crash".into(),
                    result: crate::conformance::Judged::Pass,
                    reason: None,
                }],
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
                vmm_log: vmm_log(0x9600_0410),
                conformance: Vec::new(),
                duration: Duration::from_millis(987),
            },
            ScenarioResult {
                scenario: "hugetlb-1g".into(),
                verdict: Verdict::Skip("needs 1 free 1 GiB hugetlb pages, the host has 0".into()),
                observed: None,
                vmm_log: None,
                conformance: Vec::new(),
                duration: Duration::from_millis(0),
            },
            ScenarioResult {
                scenario: "dtb-serror-0811".into(),
                verdict: Verdict::Error(
                    "report page <vcpu0> & \"magic\" 'bad'\nsecond line\u{1}".into(),
                ),
                observed: None,
                vmm_log: None,
                conformance: Vec::new(),
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
    // Nothing passed: every scenario skipped, or none at all.
    let skipped = Summary {
        skip: 2,
        ..Summary::default()
    };
    assert_eq!(skipped.exit_code(), EXIT_NOTHING_TESTED);
    assert_eq!(Summary::default().exit_code(), EXIT_NOTHING_TESTED);
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
    let guest = &v["results"][0]["observed"]["guest"][0];
    assert_eq!(guest["exceptions"][0]["esr"], "0x96000410");
    assert_eq!(guest["exceptions"][0]["record"]["acked"], true);
    assert_eq!(v["results"][0]["observed"]["vmm_end"]["how"], "completed");
    // The VMM's own account sits beside what was observed, not inside it.
    assert_eq!(
        v["results"][0]["vmm_log"]["injections"][0]["via"],
        "emulated"
    );
    assert!(v["results"][0]["observed"].get("injection").is_none());
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

/// A Linux guest reports no exceptions: the table says what its console showed.
#[test]
fn a_linux_guests_console_is_summed_up_in_the_table() {
    let mut r = report();
    r.results.truncate(1);
    let console = [
        "{1}[Hardware Error]:   physical_address: TARGET_PA",
        "Memory failure: TARGET_PFN: recovery action for dirty LRU page: Recovered",
        "ras-linux: sigbus code=4 addr=TARGET_VA lsb=12",
    ];
    r.results[0].observed = Some(Outcome {
        vmm_end: VmmEnd::Completed,
        host_signals: vec![],
        guest: vec![],
        console: console.map(String::from).to_vec(),
    });
    let text = r.to_table();
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("completed  record,recovered,sigbus "),
        "{text}"
    );
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

#[test]
fn json_reads_back_as_the_same_report() {
    let r = report();
    assert_eq!(Report::from_json(&r.to_json()), Ok(r));
    // A failure must say what was not met.
    let mut v: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
    v["results"][1]["mismatches"] = serde_json::json!([]);
    let err = Report::from_json(&v.to_string()).unwrap_err();
    assert!(
        err.contains("acpi-ifetch: a failure without mismatches"),
        "{err}"
    );
    assert!(Report::from_json("{}").is_err());
}

/// The made-up run on three kernels: the same on two, and on "bookworm" the pass is a
/// different syndrome and the failure a skip.
fn kernel_reports() -> SideBySide {
    let mut old = report();
    old.host["kernel"] = "6.1.0-50-arm64".into();
    old.results[0].observed = Some(observed(0x9600_0010, 0x200));
    old.results[1].verdict = Verdict::Skip("needs cap 178".into());
    SideBySide {
        axis: Axis::Kernel,
        runs: vec![
            ("bookworm".into(), old),
            ("stable".into(), report()),
            ("sid".into(), report()),
        ],
    }
}

#[test]
fn kernel_table_marks_the_rows_that_differ() {
    let text = kernel_reports().to_table();
    let marked: Vec<&str> = text
        .lines()
        .skip(1)
        .take(4)
        .filter(|l| l.starts_with('*'))
        .collect();
    assert_eq!(marked.len(), 2, "{text}");
    assert!(marked[0].contains("acpi-el1-load-emulated"), "{text}");
    assert!(marked[1].contains("acpi-ifetch"), "{text}");
    snapshot_settings("report").bind(|| insta::assert_snapshot!("kernels_table", text));
}

/// The same made-up run on two VMMs, the second one slower and killed by the poison.
#[test]
fn vmms_side_by_side_show_each_ones_time_and_version() {
    let mut other = report();
    other.vmm = VmmId {
        name: "libkrun".into(),
        version: Some("libkrun 1.19.7".into()),
    };
    other.results[0].duration = Duration::from_millis(2345);
    if let Some(o) = other.results[0].observed.as_mut() {
        o.vmm_end = VmmEnd::Killed { signal: 7 };
    }
    let side = SideBySide {
        axis: Axis::Vmm,
        runs: vec![("reference".into(), report()), ("libkrun".into(), other)],
    };
    let text = side.to_table();
    assert!(
        text.contains("* acpi-el1-load-emulated  PASS 1.234s    PASS 2.345s"),
        "{text}"
    );
    assert!(text.contains("* differs between VMMs:"), "{text}");
    assert!(
        text.contains("libkrun    libkrun (libkrun 1.19.7): 1 passed, 1 failed"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&side.to_json()).unwrap();
    assert_eq!(v["vmms"][1]["vmm"]["name"], "libkrun");
    assert!(v["vmms"][1].get("kernel").is_none() && v.get("kernels").is_none());
    assert_eq!(v["matrix"][0]["times_ms"]["libkrun"], 2345);
    assert_eq!(v["matrix"][0]["times_ms"]["reference"], 1234);
}

#[test]
fn kernel_json_and_junit() {
    let k = kernel_reports();
    let v: serde_json::Value = serde_json::from_str(&k.to_json()).unwrap();
    assert_eq!(v["kernels"][0]["kernel"], "bookworm");
    assert_eq!(v["kernels"][0]["host"]["kernel"], "6.1.0-50-arm64");
    assert_eq!(v["matrix"][0]["differs"], true);
    assert_eq!(v["matrix"][2]["differs"], false);
    assert_eq!(v["matrix"][1]["verdicts"]["bookworm"], "skip");
    assert_eq!(
        v["summary"],
        serde_json::json!({"pass": 3, "fail": 2, "skip": 4, "error": 3})
    );
    // Each kernel's part reads back as that kernel's report.
    let mut stable = v["kernels"][1].clone();
    assert_eq!(
        stable.as_object_mut().unwrap().remove("kernel"),
        Some("stable".into())
    );
    assert_eq!(Report::from_json(&stable.to_string()), Ok(report()));

    let xml = k.to_junit();
    let mut reader = Reader::from_str(&xml);
    let mut suites = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) if e.name().as_ref() == "testsuite" => {
                let name = e.try_get_attribute("name").unwrap().unwrap();
                let name = name.normalized_value(quick_xml::XmlVersion::Implicit1_0);
                suites.push(name.unwrap().into_owned());
            }
            Ok(_) => {}
            Err(e) => panic!("invalid XML: {e}\n{xml}"),
        }
    }
    assert_eq!(suites.len(), 3);
    assert!(
        suites[0].starts_with("bookworm: Linux 6.1.0-50-arm64"),
        "{suites:?}"
    );
    assert_eq!(xml.matches("classname=\"sid\"").count(), 4);
}
