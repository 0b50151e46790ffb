//! `ras-harness run` as a CI gate uses it, natively on this (real or emulated) arm64 KVM
//! host: the whole matrix passes, the JSON report has the documented shape, the JUnit
//! report parses as XML with one test case per scenario, and a run in which everything
//! skipped does not exit 0.

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Failed, Trial};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("gate::run_matrix_json_report", run_matrix_json_report),
        Trial::test("gate::run_junit_report_parses", run_junit_report_parses),
        Trial::test(
            "gate::nothing_tested_is_exit_status_3",
            nothing_tested_is_exit_status_3,
        ),
    ]
}

fn scenarios() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "scenarios"]
        .iter()
        .collect()
}

fn out_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ras-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `ras-harness run ARGS` and returns its stdout after checking it exited 0.
fn ras_harness_run(args: &[&std::ffi::OsStr]) -> Result<String, Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("run")
        .args(args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("ras-harness run exited {}: {stderr}", out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn run_matrix_json_report() -> Result<(), Failed> {
    let out = out_file("report.json");
    let stdout = ras_harness_run(&[
        scenarios().as_os_str(),
        "--report".as_ref(),
        "json".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ])?;
    assert_eq!(
        std::fs::read_to_string(&out)?,
        stdout,
        "--out holds the same report"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    let results = report["results"].as_array().ok_or("no results array")?;
    let files = ras_harness::scenario::load_all(&[scenarios()])
        .map_err(|e| format!("{e:?}"))?
        .len();
    assert_eq!(results.len(), files);
    for r in results {
        assert!(
            ["pass", "skip"].contains(&r["verdict"].as_str().unwrap_or("")),
            "{r:#}"
        );
        assert!(
            r["scenario"].is_string() && r.get("observed").is_some(),
            "{r:#}"
        );
    }
    assert_eq!(report["host"]["arch"], "aarch64");
    let summary = &report["summary"];
    let count = |k: &str| summary[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(count("pass") + count("skip"), files as u64, "{summary}");
    assert_eq!((count("fail"), count("error")), (0, 0), "{summary}");
    assert!(
        count("pass") > 0,
        "exit 0 means something was tested: {summary}"
    );
    Ok(())
}

/// The whole matrix run by an unprivileged user (nobody, 65534), who may neither poison nor
/// open /dev/kvm: every scenario skips, saying which, and the run exits 3, not 0.
fn nothing_tested_is_exit_status_3() -> Result<(), Failed> {
    use std::os::unix::process::CommandExt;
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("run")
        .arg(scenarios())
        .args(["--report", "json"])
        .uid(65534)
        .gid(65534)
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{e}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let summary = &report["summary"];
    assert_eq!(summary["pass"], 0, "{summary}");
    assert_eq!(summary["fail"], 0, "{summary}");
    assert!(summary["skip"].as_u64().is_some_and(|n| n > 0), "{summary}");
    let reasons: Vec<&str> = report["results"]
        .as_array()
        .ok_or("no results")?
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("needs root")
            || r.contains("/dev/kvm")
            || r.contains("a Linux guest: only a Debian QEMU")),
        "every skip says why: {reasons:?}"
    );
    assert_eq!(out.status.code(), Some(3), "{summary}");
    Ok(())
}

fn run_junit_report_parses() -> Result<(), Failed> {
    let dir = scenarios();
    let stdout = ras_harness_run(&[
        dir.join("dtb-stop.json").as_os_str(),
        dir.join("acpi-el0-load-ext-dabt.json").as_os_str(),
        "--report".as_ref(),
        "junit".as_ref(),
    ])?;
    let mut reader = quick_xml::Reader::from_str(&stdout);
    let mut cases = Vec::new();
    loop {
        match reader.read_event()? {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)
                if e.name().as_ref() == "testcase" =>
            {
                let name = e
                    .try_get_attribute("name")?
                    .ok_or("testcase without a name")?;
                cases.push(
                    name.normalized_value(quick_xml::XmlVersion::Implicit1_0)?
                        .into_owned(),
                );
            }
            _ => {}
        }
    }
    assert_eq!(cases, ["dtb-stop", "acpi-el0-load-ext-dabt"], "{stdout}");
    Ok(())
}
