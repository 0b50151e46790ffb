//! Other VMMs as systems under test, driven as processes (`ras_harness::sut`).
//!
//! - `vmm::<name>::<scenario>`: every scenario a baselined VMM can be told to run, on the
//!   real VMM binary, judged by the conformance rules, its outcome and findings kept as that
//!   VMM's baseline (snapshots/vmm/<name>/<scenario>.snap): a change of the VMM's behaviour
//!   is a snapshot diff, whatever the rules say of it. On a Debian QEMU, every record the
//!   guest read must also be, byte for byte, the harness's `qemu` CPER profile for the page
//!   it names: the profile is a measured fact, not a transcription.
//! - `vmm::driver::*`: the driver on VMMs that misbehave before the guest runs (one that
//!   never boots it, one that aborts), and the page a crashing VMM leaves poisoned.
//! - `vmm::qemu-<suite>::error-before-firmware`: a Debian QEMU with its edk2, the device
//!   tree's page poisoned before the firmware's first instruction
//!   (`ras_harness::sut::before_firmware`); how QEMU ends is its baseline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use emuhost::QemuSuite;
use libtest_mimic::{Completion, Failed, Trial};
use ras_harness::fault::unpoison::hardware_corrupted_kib;
use ras_harness::formats::cper::{memory_error_record, Profile, Severity};
use ras_harness::runner::run_isolated;
use ras_harness::scenario::{self, normalise, GuestState, Outcome, VmmEnd};
use ras_harness::sut::command::{Guest, Launch};
use ras_harness::sut::{driver, Sut};

/// Per scenario, as for the reference VMM's trials.
const TIMEOUT: Duration = Duration::from_secs(60);
/// QEMU ends within seconds of the firmware meeting the poisoned page, or never.
const BEFORE_FIRMWARE: Duration = Duration::from_secs(20);
/// What the driver trials allow a VMM that never shows the guest.
const SHORT: driver::Limits = driver::Limits {
    boot: Duration::from_secs(2),
    total: Duration::from_secs(4),
};
/// What the console trials allow a real VMM.
const BOOTED: driver::Limits = driver::Limits {
    boot: Duration::from_secs(30),
    total: Duration::from_secs(45),
};

use super::FAKE_VMM;

pub fn trials() -> Vec<Trial> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scenarios"]
        .iter()
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let mut trials = Vec::new();
    for sut in super::baselined() {
        for path in &files {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let (sut, path) = (sut.clone(), path.clone());
            trials.push(Trial::ignorable_test(
                format!("vmm::{}::{stem}", sut.name()),
                move || baseline(&sut, &path),
            ));
        }
    }
    for suite in [QemuSuite::Bookworm, QemuSuite::Trixie, QemuSuite::Sid] {
        trials.push(Trial::ignorable_test(
            format!("vmm::qemu-{}::error-before-firmware", suite.name()),
            move || error_before_firmware(suite),
        ));
    }
    trials.push(Trial::ignorable_test(
        "vmm::driver::a_vmm_that_never_shows_the_guest_times_out",
        || misbehaving("hang", VmmEnd::TimedOut),
    ));
    trials.push(Trial::ignorable_test(
        "vmm::driver::a_vmm_that_aborts_is_killed_by_its_signal",
        || misbehaving("abort", VmmEnd::Killed { signal: 6 }),
    ));
    trials.push(Trial::ignorable_test(
        "vmm::driver::a_vmm_killed_by_the_poison_leaves_no_page_poisoned",
        killed_vmm_gives_the_page_back,
    ));
    for (sut, stream) in [
        (Sut::QemuDebian(emuhost::QemuSuite::Trixie), "console"),
        (Sut::Libkrun, "stdout"),
    ] {
        trials.push(Trial::ignorable_test(
            format!("vmm::driver::console::{}", sut.name()),
            move || console_lines(&sut, stream),
        ));
    }
    trials
}

/// With no ACPI table loaded yet QEMU has nowhere to record the error: it must end, or, if
/// it hangs the VM, show where the vCPU is stuck; which way, and what it says, is the
/// baseline.
fn error_before_firmware(suite: QemuSuite) -> Result<Completion, Failed> {
    let (prefix, firmware) = ras_harness::sut::qemu_debian(suite)?;
    let dir = std::env::temp_dir().join(format!("ras-before-fw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let run = ras_harness::sut::before_firmware::run(prefix, &firmware, &dir, BEFORE_FIRMWARE);
    let _ = std::fs::remove_dir_all(&dir);
    let seen = run?;
    match (&seen.vmm_end, &seen.stuck_at) {
        (VmmEnd::Completed, _) => return Err("QEMU completed: the firmware ran on".into()),
        (VmmEnd::TimedOut, stuck) if !stuck.as_ref().is_some_and(|s| s.contains("PC=")) => {
            return Err(format!("QEMU hung and its registers say nothing: {stuck:?}").into())
        }
        _ => {}
    }
    let text = serde_json::to_string_pretty(&seen).map_err(|e| e.to_string())?;
    let sut = Sut::QemuDebian(suite);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(baseline_dir(&sut));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!(
        "error-before-firmware on {}: the device tree's page poisoned before edk2 ran",
        sut.name()
    ));
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!("error-before-firmware", text));
    Ok(Completion::Completed)
}

/// Where `sut`'s baselines live: snapshots/vmm/<name>/.
fn baseline_dir(sut: &Sut) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "snapshots",
        "vmm",
        &sut.name(),
    ]
    .iter()
    .collect()
}

/// Runs `path` on `sut` and compares the outcome and findings with its baseline.
fn baseline(sut: &Sut, path: &Path) -> Result<Completion, Failed> {
    let s = scenario::load(path).map_err(|e| Failed::from(e.to_string()))?;
    let exe = Path::new(env!("CARGO_BIN_EXE_ras-harness"));
    let r = run_isolated(exe, path, ras_harness::sut::time_allowed(&s), sut);
    let observed = match (&r.verdict, r.observed) {
        (scenario::Verdict::Skip(why), _) => return Ok(Completion::ignored_with(why.clone())),
        (_, Some(o)) => o,
        (v, None) => {
            return Err(format!("{:?}: {}", v.kind(), v.reason().unwrap_or_default()).into())
        }
    };
    if matches!(sut, Sut::QemuDebian(_)) {
        records_are_the_qemu_profile(&s, &observed)?;
    }
    let snapshot = normalise::vmm_baseline(&observed, &r.conformance)?;
    let text = serde_json::to_string_pretty(&snapshot).map_err(|e| e.to_string())?;
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(baseline_dir(sut));
    settings.set_prepend_module_to_snapshot(false);
    // The scenario's own description is about the reference VMM's configuration.
    settings.set_description(format!("{} on {}", s.name, sut.name()));
    settings.set_omit_expression(true);
    let name = s.name.clone();
    settings.bind(|| insta::assert_snapshot!(name, text));
    Ok(Completion::Completed)
}

/// Every record the guest read is [`Profile::Qemu`]'s for the scenario page it names.
fn records_are_the_qemu_profile(s: &scenario::Scenario, o: &Outcome) -> Result<(), Failed> {
    let pages: Vec<u64> = s.faults.iter().map(|f| f.gpa()).collect();
    let records = o
        .guest
        .iter()
        .flat_map(|g| &g.exceptions)
        .filter_map(|e| e.record.as_ref());
    for record in records {
        let address = match record.physical_addresses()[..] {
            [address] => address,
            ref other => return Err(format!("a record naming {other:#x?}").into()),
        };
        if !pages.contains(&address) {
            return Err(format!("the record names {address:#x}, not a page of {pages:#x?}").into());
        }
        let profile = memory_error_record(address, Severity::Recoverable, Profile::Qemu).encode();
        if record.hex.0 != profile || record.length as usize != profile.len() {
            return Err(format!(
                "the record read ({} bytes of {}) is not the qemu profile's ({} bytes):\n  \
                 read    {:02x?}\n  profile {profile:02x?}",
                record.hex.0.len(),
                record.length,
                profile.len(),
                record.hex.0
            )
            .into());
        }
    }
    Ok(())
}

/// This test binary started as a VMM that `behaviour`s: its outcome is `expected`, and its
/// process is gone afterwards.
fn misbehaving(behaviour: &str, expected: VmmEnd) -> Result<Completion, Failed> {
    let s = scenario::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/dtb-sea.json"
    )))
    .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("ras-fake-vmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    // The trials run one at a time (main.rs), so no other thread reads the environment.
    std::env::set_var(FAKE_VMM, behaviour);
    let launch = |_: &Guest| Launch {
        program: me,
        args: Vec::new(),
    };
    let run = driver::run(&s, launch, &dir, SHORT);
    std::env::remove_var(FAKE_VMM);
    let _ = std::fs::remove_dir_all(&dir);
    let (outcome, _) = run?;
    assert_eq!(outcome.vmm_end, expected);
    assert_eq!(
        outcome.guest[0].state,
        GuestState::NotStarted,
        "no guest ran"
    );
    Ok(Completion::Completed)
}

/// A VMM that dies of the guest's memory error (libkrun has no SIGBUS handler) leaves the
/// host with no more corrupted memory than before: the driver gives the page back.
fn killed_vmm_gives_the_page_back() -> Result<Completion, Failed> {
    let Ok(before) = hardware_corrupted_kib() else {
        return Ok(Completion::ignored_with(
            "no HardwareCorrupted in /proc/meminfo",
        ));
    };
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/dtb-sea.json"
    ));
    let exe = Path::new(env!("CARGO_BIN_EXE_ras-harness"));
    let r = run_isolated(exe, path, TIMEOUT, &Sut::Libkrun);
    let outcome = r.observed.ok_or_else(|| format!("{:?}", r.verdict))?;
    assert_eq!(outcome.vmm_end, VmmEnd::Killed { signal: 7 });
    assert_eq!(hardware_corrupted_kib().map_err(|e| e.to_string())?, before);
    Ok(Completion::Completed)
}

/// The payload found the console in `sut`'s device tree (`/chosen/stdout-path`, a PL011 on
/// both) and printed its `ras:` lines there, which `sut` writes to `stream`.
fn console_lines(sut: &Sut, stream: &str) -> Result<Completion, Failed> {
    let s = scenario::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/dtb-sea.json"
    )))
    .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("ras-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let launch = ras_harness::sut::launcher(sut)?;
    let run = driver::run(&s, launch, &dir, BOOTED);
    let _ = std::fs::remove_dir_all(&dir);
    let (outcome, transcript) = run?;
    let text = match stream {
        "console" => &transcript.console,
        _ => &transcript.stdout,
    };
    for line in [
        "ras: ready cpu=0 mailbox=0x",
        "ras: ready-for-fault cpu=0 step=0",
    ] {
        assert!(text.contains(line), "{line:?} not in {text:?}");
    }
    assert!(
        !text.contains("ras: step-done"),
        "the access never completed: {text:?}"
    );
    assert_ne!(outcome.vmm_end, VmmEnd::TimedOut);
    Ok(Completion::Completed)
}

/// What this binary does when started as a fake VMM: hang (never boot a guest), abort, or
/// die of a segmentation fault on a thread named `vcpu0`.
pub fn fake_vmm(behaviour: &str) -> ! {
    match behaviour {
        "abort" => std::process::abort(),
        "segfault" => {
            // Long enough for the parent to read where a position-independent build of
            // this binary was loaded (ras_harness::crash::Image).
            std::thread::sleep(Duration::from_millis(200));
            let _ = std::thread::Builder::new()
                .name("vcpu0".into())
                .spawn(segfault_here)
                .map(std::thread::JoinHandle::join);
            std::process::abort()
        }
        _ => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

/// Stores to a page mapped with no access: SIGSEGV, SEGV_ACCERR, at an instruction of this
/// function (written out, so that no callee holds the store in a debug build).
#[inline(never)]
fn segfault_here() {
    // SAFETY: a fresh anonymous mapping of one page; the store to it faults, which is the
    // point, and nothing else refers to it.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        std::arch::asm!("str xzr, [{page}]", page = in(reg) page);
    }
}
