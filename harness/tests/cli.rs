//! The `ras-harness` codec commands as a user runs them: output, round trips, and bad input
//! answered by one line on stderr with exit status 2.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ras_harness(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ras-harness");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// A bad-input run: exit status 2 and exactly one line on stderr that names the problem.
fn assert_rejected(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(mentions),
        "stderr lacks '{mentions}': {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn qemu_record_is_172_bytes_and_decodes_to_its_address() {
    let out = ras_harness(
        &[
            "cper",
            "encode",
            "--address",
            "0x40010000",
            "--profile",
            "qemu",
        ],
        b"",
    );
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap();
    assert_eq!(hex.trim_end().len(), 2 * 172);

    let decoded = json(&ras_harness(&["cper", "decode", "-"], hex.as_bytes()));
    let section = &decoded["entries"][0]["section"];
    assert_eq!(section["physical_address"], "0x0000000040010000");
    assert_eq!(decoded["status"]["data_length"], 152);
}

#[test]
fn binary_output_decodes_like_hex() {
    let args = |format| {
        [
            "cper",
            "encode",
            "--address",
            "4096",
            "--profile",
            "strict",
            "--severity",
            "corrected",
            "--format",
            format,
        ]
    };
    let bin = ras_harness(&args("bin"), b"").stdout;
    let hex = ras_harness(&args("hex"), b"").stdout;
    assert_eq!(bin.len(), 172);
    let from_bin = json(&ras_harness(&["cper", "decode"], &bin));
    assert_eq!(from_bin, json(&ras_harness(&["cper", "decode"], &hex)));
    assert_eq!(from_bin["status"]["error_severity"], "corrected");
    assert_eq!(from_bin["status"]["block_status"]["entry_count"], 1);
}

#[test]
fn esr_decode_describes_the_qemu_sea() {
    let report = json(&ras_harness(&["esr", "decode", "0x96000410"], b""));
    let description = report["description"].as_str().unwrap();
    assert!(description.contains("DABT from EL1"), "{description}");
    assert!(description.contains("FnV=1"), "{description}");
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    assert_rejected(
        &ras_harness(&["cper", "encode", "--address", "0x4g"], b""),
        "'0x4g' is not a number",
    );
    assert_rejected(
        &ras_harness(
            &["cper", "encode", "--address", "1", "--profile", "linux"],
            b"",
        ),
        "possible values: qemu, strict",
    );
    assert_rejected(
        &ras_harness(&["cper", "decode", "-"], b"0011"),
        "standard input:",
    );
    assert_rejected(
        &ras_harness(&["cper", "decode", "/nonexistent/record.bin"], b""),
        "/nonexistent/record.bin",
    );
    assert_rejected(
        &ras_harness(&["esr", "decode", "syndrome"], b""),
        "'syndrome'",
    );
    assert_rejected(
        &ras_harness(&["run", "--list", "--vmm", "kvmtool"], b""),
        "allowed: reference, qemu, qemu:SUITE",
    );
    assert_rejected(
        &ras_harness(&["run", "--list", "--vmm", "exec=myvmm {image}"], b""),
        "the template needs {bootargs}",
    );
    assert_rejected(
        &ras_harness(
            &[
                "run",
                "../scenarios/dtb-sea.json",
                "--kernel",
                "sid",
                "--vmm",
                "reference",
                "--vmm",
                "libkrun",
            ],
            b"",
        ),
        "give one --vmm",
    );
}

#[test]
fn run_list_validates_and_names_every_scenario() {
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
    let out = ras_harness(&["run", "--list", scenarios], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        listed.lines().count(),
        json_files(Path::new(scenarios)),
        "{listed}"
    );
    assert!(listed.contains("acpi-el0-load-ext-dabt"), "{listed}");
    assert!(listed.contains("linux/el0-load-acpi.json"), "{listed}");
}

/// The *.json files under `dir`, its subdirectories' included, as `run` searches.
fn json_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| match p.extension() {
            _ if p.is_dir() => json_files(&p),
            Some(x) if x == "json" => 1,
            _ => 0,
        })
        .sum()
}

#[test]
fn run_rejects_bad_files_before_running_anything() {
    let bad = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad-scenarios");
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/dtb-stop.json");
    // One good file and one bad: nothing runs (no relaunch, no VM), every problem is named.
    let out = ras_harness(&["run", good, &format!("{bad}/unknown-enum.json")], b"");
    assert_rejected(&out, "unknown-enum.json");
    assert_rejected(&out, "guest.backing");
    assert_rejected(&out, "`hugetlb-1g`");
    assert_rejected(&out, "nothing was run");
    assert!(out.stdout.is_empty());

    assert_rejected(
        &ras_harness(&["run", "/nonexistent/scenarios"], b""),
        "/nonexistent/scenarios",
    );
    assert_rejected(&ras_harness(&["run", "--report", "html"], b""), "html");
    assert_rejected(
        &ras_harness(&["run", "--kernel", "lts"], b""),
        "choose one of stable, bookworm, sid, sid-16k, or all",
    );
    assert_rejected(
        &ras_harness(&["run", "--kernel", "sid,stable,sid"], b""),
        "each kernel once",
    );
    if !emuhost::kvm_available() {
        // The report would be written in the emulated host's own root and lost.
        assert_rejected(
            &ras_harness(&["run", good, "--out", "/report.json"], b""),
            "/ cannot be shared into the emulated host",
        );
    }
}

/// `run` as a user on any machine runs it (through the emulated host off arm64 KVM): a
/// scenario file outside the workspace is read, and `--out` outside it is written on this
/// machine, not lost with the guest.
#[test]
fn run_reads_and_writes_outside_the_workspace() {
    let dir = std::env::temp_dir().join(format!("ras-cli-{}", std::process::id()));
    let (inputs, out) = (dir.join("in"), dir.join("reports").join("r.json"));
    std::fs::create_dir_all(&inputs).unwrap();
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/dtb-stop.json");
    std::fs::copy(good, inputs.join("dtb-stop.json")).unwrap();
    let o = ras_harness(
        &[
            "run",
            inputs.to_str().unwrap(),
            "--report",
            "json",
            "--out",
            out.to_str().unwrap(),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}: {stderr}", o.status);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("--out written")).unwrap();
    assert_eq!(report["results"][0]["scenario"], "dtb-stop", "{report:#}");
    assert_eq!(report["results"][0]["verdict"], "pass", "{report:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
