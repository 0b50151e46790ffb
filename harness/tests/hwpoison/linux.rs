//! A real Linux guest as the oracle (`ras_harness::sut::linux`): each Debian QEMU boots
//! Debian's arm64 kernel, with its UEFI firmware (ACPI, GHES) or a device tree, a page of
//! the guest's is poisoned from outside and touched. `linux::<vmm>::<row>` checks what the
//! guest kernel must have done and keeps its own lines as a snapshot
//! (snapshots/linux/<vmm>/<row>.snap). `linux::qemu-sid::records-vs-model` feeds the
//! kernel records through QEMU 11.1's QMP and compares what it did with the harness's
//! model of it (`ras_harness::sut::linux_records`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use emuhost::QemuSuite;
use libtest_mimic::{Completion, Failed, Trial};
use ras_harness::formats::cper::{linux_response, Kernel, LinuxContext, Notification};
use ras_harness::scenario::VmmEnd;
use ras_harness::sut::linux::{self, LinuxOutcome, Touch};
use ras_harness::sut::linux_records::{self, corpus, disagreements, expected};

/// The whole run: edk2 and a distribution kernel booting under nested KVM in the emulated
/// host.
const LIMIT: Duration = Duration::from_secs(240);

/// One row: its name, whether the firmware (ACPI) boots the kernel, the access, and what
/// must hold of the outcome.
type Check = fn(&LinuxOutcome) -> Result<(), String>;

pub fn trials() -> Vec<Trial> {
    let rows: [(&str, bool, Touch, Check); 3] = [
        ("el0-load-acpi", true, Touch::Load, recovered),
        ("el1-syscall-acpi", true, Touch::Syscall, kernel_dies),
        ("el0-load-dtb", false, Touch::Load, no_record),
    ];
    let mut trials = Vec::new();
    for suite in [QemuSuite::Bookworm, QemuSuite::Trixie, QemuSuite::Sid] {
        for (name, acpi, touch, check) in rows {
            trials.push(Trial::ignorable_test(
                format!("linux::qemu-{}::{name}", suite.name()),
                move || row(suite, name, acpi, touch, check),
            ));
        }
    }
    trials.push(Trial::ignorable_test(
        "linux::qemu-sid::records-vs-model",
        records_vs_model,
    ));
    trials.push(Trial::test("linux::checks_refuse_wrong_outcomes", || {
        wrong_outcomes_fail().map_err(Failed::from)
    }));
    trials
}

/// Each row's check refuses the outcomes of the other rows and of a guest that saw
/// nothing.
fn wrong_outcomes_fail() -> Result<(), String> {
    let outcome = |vmm_end: VmmEnd, lines: &[&str]| LinuxOutcome {
        vmm_end,
        lines: lines.iter().map(|l| l.to_string()).collect(),
        poisoned: true,
    };
    let recovered_lines = [
        "{1}[Hardware Error]:   physical_address: TARGET_PA",
        "Memory failure: TARGET_PFN: recovery action for dirty LRU page: Recovered",
        "ras-linux: sigbus code=4 addr=TARGET_VA lsb=12",
    ];
    let good = outcome(VmmEnd::Completed, &recovered_lines);
    let panicked = outcome(
        VmmEnd::Completed,
        &[
            "Internal error: synchronous external abort: 0000000096000410 [#1] SMP",
            "Kernel panic - not syncing: synchronous external abort: Fatal exception",
        ],
    );
    let stopped = outcome(
        VmmEnd::Stopped {
            message: "qemu-system-aarch64: Hardware memory error! (exit status 1)".into(),
        },
        &[],
    );
    let nothing = outcome(
        VmmEnd::Completed,
        &["ras-linux: load returned 0x5a5a5a5a5a5a5a5a"],
    );
    let crashed = outcome(VmmEnd::Killed { signal: 6 }, &recovered_lines);
    let cases: [(Check, &LinuxOutcome, bool); 10] = [
        (recovered, &good, true),
        (recovered, &panicked, false),
        (recovered, &nothing, false),
        (recovered, &crashed, false),
        (kernel_dies, &panicked, true),
        (kernel_dies, &good, false),
        (
            kernel_dies,
            &outcome(VmmEnd::Completed, &["ras-linux: write returned 8 errno=0"]),
            false,
        ),
        (no_record, &stopped, true),
        (no_record, &good, false),
        (no_record, &nothing, false),
    ];
    for (i, (check, o, passes)) in cases.into_iter().enumerate() {
        if check(o).is_ok() != passes {
            return Err(format!(
                "case {i}: {o:?} should {}pass",
                if passes { "" } else { "not " }
            ));
        }
    }
    Ok(())
}

/// An access from user space with GHES: the kernel reads the record naming the page,
/// recovers the page, and the process that touched it gets BUS_MCEERR_AR at its address.
fn recovered(o: &LinuxOutcome) -> Result<(), String> {
    for line in [
        "[Hardware Error]:   physical_address: TARGET_PA",
        "Memory failure: TARGET_PFN: recovery action for dirty LRU page: Recovered",
        "ras-linux: sigbus code=4 addr=TARGET_VA lsb=12",
    ] {
        if !o.lines.iter().any(|l| l.contains(line)) {
            return Err(format!("no line with {line:?}"));
        }
    }
    if o.vmm_end != VmmEnd::Completed {
        return Err(format!(
            "QEMU ended {:?}, not with the guest's power-off",
            o.vmm_end
        ));
    }
    Ok(())
}

/// The kernel itself touches the page (copy_from_user, EL1): do_sea hands an SEA to
/// APEI only from user mode (arch/arm64/mm/fault.c), so the kernel dies of it: an oops,
/// made a panic.
fn kernel_dies(o: &LinuxOutcome) -> Result<(), String> {
    if o.lines
        .iter()
        .any(|l| l.contains("ras-linux: write returned"))
    {
        return Err("the kernel read the poisoned page and went on".into());
    }
    for line in [
        "Internal error: synchronous external abort: 0000000096000410",
        "Kernel panic - not syncing",
    ] {
        if !o.lines.iter().any(|l| l.contains(line)) {
            return Err(format!("no line with {line:?}"));
        }
    }
    Ok(())
}

/// A device tree boot: QEMU has no GHES to record the error in and stops; the guest kernel
/// gets no record.
fn no_record(o: &LinuxOutcome) -> Result<(), String> {
    if o.lines.iter().any(|l| l.contains("[Hardware Error]")) {
        return Err("a DTB guest printed a hardware error record".into());
    }
    match &o.vmm_end {
        VmmEnd::Stopped { message } if message.contains("Hardware memory error!") => Ok(()),
        other => Err(format!("QEMU ended {other:?}")),
    }
}

/// Debian's 6.12 kernel as a HED source can tell it: such a source is never synchronous,
/// so of [`Kernel`]'s three changes only `arm_type_bitmask` shows; the other two are set as
/// in v6.18.2 and not tested here.
const DEBIAN_6_12: Kernel = Kernel {
    arm_type_bitmask: true,
    ..Kernel::V6_18_2
};

/// QEMU 11.1's QMP source feeds the Linux guest every record of `linux_records::corpus`;
/// what the kernel did with each must be what `linux_response` predicts for it.
fn records_vs_model() -> Result<Completion, Failed> {
    let Some(guest) = linux_guest()? else {
        return Ok(Completion::ignored_with("the Linux guest is not set up"));
    };
    let (prefix, firmware) = ras_harness::sut::qemu_debian(QemuSuite::Sid)?;
    let dir = std::env::temp_dir().join(format!("ras-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let run = linux_records::feed(
        prefix,
        &firmware,
        (&guest.kernel, &guest.initrd),
        corpus,
        &dir,
        LIMIT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let (offer, fed) = run?;
    let all = corpus(&offer).len();
    if fed.len() != all {
        return Err(format!("{} of {all} records fed: the VM ended early", fed.len()).into());
    }
    let context = LinuxContext {
        notification: Notification::Hed,
        kernel: DEBIAN_6_12,
    };
    // Each page's address and frame, by the index the corpus gives it.
    let names: Vec<(String, String)> = offer
        .pages
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            [
                (format!("{p:#018x}"), format!("PAGE{i}")),
                (format!("{:#x}:", p >> 12), format!("PFN{i}:")),
            ]
        })
        .collect();
    let name = |text: String| names.iter().fold(text, |t, (from, to)| t.replace(from, to));
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut poisoned = Vec::new();
    for (case, seen) in &fed {
        let response = linux_response(&case.record, offer.source.error_block_length, context)
            .map_err(|e| format!("{}: {e}", case.name))?;
        let expect = expected(&response, &mut poisoned)
            .ok_or_else(|| format!("{}: {response:?} is not comparable", case.name))?;
        for d in disagreements(&expect, seen) {
            failures.push(format!("{}: {d}", case.name));
        }
        let lines: Vec<String> = seen
            .lines
            .iter()
            .filter(|l| {
                ["Memory failure", "GHES:", "Kernel panic"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .map(|l| name(l.clone()))
            .collect();
        rows.push(serde_json::json!({
            "record": case.name,
            "model": serde_json::from_str::<serde_json::Value>(&name(
                serde_json::to_string(&response).map_err(|e| e.to_string())?
            ))
            .map_err(|e| e.to_string())?,
            // A panic ends the VM right after the acknowledgement: not always seen.
            "acknowledged": (!seen.panicked).then_some(seen.acknowledged),
            "corrupted_kb": seen.corrupted_kb,
            "kernel": lines,
        }));
    }
    // The same observations refuse a model of a kernel without 96b010536ee0: the ARM
    // cache error records then disagree.
    let older = LinuxContext {
        kernel: Kernel {
            arm_type_bitmask: false,
            ..DEBIAN_6_12
        },
        ..context
    };
    let mut poisoned = Vec::new();
    let refused = fed.iter().any(|(case, seen)| {
        linux_response(&case.record, offer.source.error_block_length, older)
            .ok()
            .and_then(|r| expected(&r, &mut poisoned))
            .is_some_and(|e| !disagreements(&e, seen).is_empty())
    });
    if !refused {
        failures.push("a kernel without arm_type_bitmask would agree as well".into());
    }
    if !failures.is_empty() {
        return Err(format!(
            "the model and the kernel disagree:\n{}",
            failures.join("\n")
        )
        .into());
    }
    let mut settings = snapshot_settings(QemuSuite::Sid);
    settings.set_description(format!(
        "Linux {} on qemu-sid: records through QMP inject-ghes-v2-error, the model's \
         response and what the kernel did",
        guest.release
    ));
    let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
    settings.bind(|| insta::assert_snapshot!("records-vs-model", text));
    Ok(Completion::Completed)
}

/// The Linux guest's kernel and initrd, staged in the emulated host's RAM when they are.
fn linux_guest() -> Result<Option<emuhost::linux_guest::LinuxGuest>, String> {
    let cache = ras_harness::sut::cache_dir()?;
    let Some(guest) = emuhost::linux_guest::installed(&cache) else {
        return Ok(None);
    };
    let staged = guest.staged();
    Ok(Some(if staged.kernel.is_file() {
        staged
    } else {
        guest
    }))
}

/// Snapshots under snapshots/linux/qemu-<suite>/.
fn snapshot_settings(suite: QemuSuite) -> insta::Settings {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "snapshots",
        "linux",
        &format!("qemu-{}", suite.name()),
    ]
    .iter()
    .collect();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(&dir));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

fn row(
    suite: QemuSuite,
    name: &str,
    acpi: bool,
    touch: Touch,
    check: Check,
) -> Result<Completion, Failed> {
    let Some(guest) = linux_guest()? else {
        return Ok(Completion::ignored_with("the Linux guest is not set up"));
    };
    let (prefix, firmware) = ras_harness::sut::qemu_debian(suite)?;
    let dir = std::env::temp_dir().join(format!("ras-linux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let run = linux::run(
        prefix,
        acpi.then_some(firmware.as_path()),
        (&guest.kernel, &guest.initrd),
        touch,
        &dir,
        LIMIT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let (outcome, console) = run?;
    if !outcome.poisoned {
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        return Err(format!(
            "the guest never reported its page ({:?}); console tail:\n{}",
            outcome.vmm_end,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
        .into());
    }
    check(&outcome).map_err(|e| {
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("{e}\n{:#?}\nconsole tail:\n{tail}", outcome.lines)
    })?;
    let mut settings = snapshot_settings(suite);
    settings.set_description(format!(
        "Linux {} on qemu-{}, {}",
        guest.release,
        suite.name(),
        name
    ));
    let text = serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?;
    settings.bind(|| insta::assert_snapshot!(name.to_owned(), text));
    Ok(Completion::Completed)
}
