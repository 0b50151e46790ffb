//! One trial per scenarios/**/*.json with the payload, run by the reference VMM in a child process
//! (`ras-harness __exec`, through `runner::run_isolated`). Each must pass; a scenario the host
//! cannot run is ignored with the reason. The outcome is snapshotted under
//! snapshots/scenarios/<name>.snap with only what varies between runs and kernels normalised,
//! each rule checked first (`ras_harness::scenario::normalise`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::{Completion, Failed, Trial};
use ras_harness::fault::host_page_size;
use ras_harness::runner::run_isolated;
use ras_harness::scenario::{self, normalise, Outcome, Verdict};
use ras_harness::sut::Sut;
use ras_harness::vmm::log::VmmLog;

/// Per scenario, boot to power-off included; a run takes a few seconds under TCG.
const TIMEOUT: Duration = Duration::from_secs(120);
/// A scenario that poisons, for the trials of the runner itself.
const DTB_SEA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/dtb-sea.json");

pub fn trials() -> Vec<Trial> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scenarios"]
        .iter()
        .collect();
    let mut files = Vec::new();
    collect_json(&dir, &mut files);
    // A Linux guest runs on QEMU only: its rows are linux.rs's.
    files.retain(|p| scenario::load(p).map_or(true, |s| s.guest.os != scenario::Os::Linux));
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::ignorable_test(format!("scenario::{name}"), move || run(&path))
        })
        .chain(bad_input())
        .collect()
}

/// Bad input never crashes the child and never poisons anything: a file validation rejects
/// is an error naming the field, and a host without root is a skip with the reason.
fn bad_input() -> Vec<Trial> {
    let bad: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "bad-scenarios"]
        .iter()
        .collect();
    let cases = [
        // A poison target outside the target region (and so outside guest RAM).
        (
            "page-beyond-region",
            "faults[0].page: page 4 is beyond the target region",
        ),
        // An unknown mode of the guest.
        (
            "unknown-enum",
            "guest.backing: unknown variant `hugetlb-4m`",
        ),
    ];
    let mut trials: Vec<Trial> = cases
        .into_iter()
        .map(|(file, want)| {
            let path = bad.join(format!("{file}.json"));
            Trial::test(format!("scenario::bad-input::{file}"), move || {
                let exe = Path::new(env!("CARGO_BIN_EXE_ras-harness"));
                let r = run_isolated(exe, &path, TIMEOUT, &Sut::Reference);
                match &r.verdict {
                    Verdict::Error(why) if why.contains(want) => Ok(()),
                    other => Err(format!("expected an error with {want:?}, got {other:?}").into()),
                }
            })
        })
        .collect();
    trials.push(Trial::test("scenario::bad-input::not-root", not_root));
    trials.push(Trial::test("scenario::crashed-child", crashed_child));
    trials
}

/// A child that a signal kills is an error carrying the host kernel's account of it: the
/// signal, the thread (`Comm:`) and the function it died in, named from the executable.
/// The child is this test binary as a fake VMM that faults on a thread named vcpu0.
fn crashed_child() -> Result<(), Failed> {
    let path = Path::new(DTB_SEA);
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    // The trials run one at a time (main.rs), so no other thread reads the environment.
    std::env::set_var(super::FAKE_VMM, "segfault");
    let r = run_isolated(&me, path, TIMEOUT, &Sut::Reference);
    std::env::remove_var(super::FAKE_VMM);
    let Verdict::Error(why) = &r.verdict else {
        return Err(format!("expected an error, got {:?}", r.verdict).into());
    };
    for want in [
        "killed by signal 11",
        "Comm: vcpu0",
        "vmms::segfault_here+0x",
    ] {
        if !why.contains(want) {
            return Err(format!("{want:?} not in: {why}").into());
        }
    }
    Ok(())
}

/// `__exec` as an unprivileged user (nobody, 65534) skips a scenario that poisons, saying
/// why, before it maps anything.
fn not_root() -> Result<(), Failed> {
    use std::os::unix::process::CommandExt;
    let path = Path::new(DTB_SEA);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("__exec")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .map_err(|e| format!("spawn as nobody: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{e}: {stdout:?} {:?}", String::from_utf8_lossy(&out.stderr)))?;
    let skip = line["skip"].as_str().unwrap_or_default();
    if out.status.success() && skip.contains("poisoning needs root (CAP_SYS_ADMIN)") {
        Ok(())
    } else {
        Err(format!("{:?}: {line}", out.status).into())
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_json(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn run(path: &Path) -> Result<Completion, Failed> {
    let s = scenario::load(path).map_err(|e| Failed::from(e.to_string()))?;
    let exe = Path::new(env!("CARGO_BIN_EXE_ras-harness"));
    let result = run_isolated(exe, path, TIMEOUT, &Sut::Reference);
    let pretty = |o: &Option<Outcome>| {
        o.as_ref()
            .and_then(|o| serde_json::to_string_pretty(o).ok())
            .unwrap_or_default()
    };
    match &result.verdict {
        Verdict::Pass => {}
        Verdict::Skip(why) => return Ok(Completion::ignored_with(why.clone())),
        other => {
            return Err(format!(
                "{:?}: {}\n{}",
                other.kind(),
                other.reason().unwrap_or_default(),
                pretty(&result.observed)
            )
            .into())
        }
    }
    let (Some(outcome), Some(log)) = (result.observed, result.vmm_log) else {
        return Err("a pass without an outcome".into());
    };
    check_records_read_were_written(&outcome, &log)?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // The records the VMM wrote are the ones the guest read (checked above): the
    // snapshot shows the guest's copies, decoded, and only how many were written.
    let snapshot = normalise::snapshot(&s, &outcome, &log, &release, host_page_size())?;
    let text = serde_json::to_string_pretty(&snapshot).map_err(|e| e.to_string())?;
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshot_dir(&s.name));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(s.description.clone());
    settings.set_omit_expression(true);
    let name = s.name.clone();
    // insta panics on a mismatch; libtest-mimic turns that into a failed trial.
    settings.bind(|| insta::assert_snapshot!(name, text));
    Ok(Completion::Completed)
}

/// Where `name`'s baseline lives: snapshots/scenarios/, one for every kernel, unless this
/// host's pages are not 4 KiB and snapshots/scenarios/page-<KiB>k/ holds one of its own.
/// That is for what truly differs there: KVM signals the whole host page, so a 16 KiB host
/// reports another si_addr_lsb and a 16 KiB-aligned address, and the VMM's record names
/// that address (a new one is reviewed from the .snap.new insta writes beside the shared
/// baseline, and moved there).
fn snapshot_dir(name: &str) -> PathBuf {
    let shared: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "snapshots", "scenarios"]
        .iter()
        .collect();
    let page = host_page_size();
    let own = shared.join(format!("page-{}k", page / 1024));
    if page != 4096 && own.join(format!("{name}.snap")).exists() {
        own
    } else {
        shared
    }
}

/// Every record the guest read is, byte for byte, one the VMM wrote: the guest's walk
/// reads what is there, and nothing else writes the status block.
fn check_records_read_were_written(o: &Outcome, log: &VmmLog) -> Result<(), Failed> {
    for (v, e) in o.exceptions() {
        if let Some(read) = &e.record {
            if !log.records.iter().any(|w| w.0 == read.hex.0) {
                return Err(format!(
                    "vcpu{v} read a record the VMM never wrote: {}\nwritten: {:?}",
                    read.hex,
                    log.records
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                )
                .into());
            }
        }
    }
    Ok(())
}
