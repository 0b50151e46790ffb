//! A real Linux guest as the oracle (`ras_harness::sut::linux`): each scenario under
//! scenarios/linux/ runs on each Debian QEMU, which boots Debian's arm64 kernel with its
//! UEFI firmware (ACPI, GHES) or a device tree; a page of the guest's is poisoned from
//! outside and touched. `linux::<vmm>::<scenario>` must pass the scenario's `expect` and
//! keeps the guest's own lines as a snapshot (snapshots/linux/<vmm>/<scenario>.snap).
//! `linux::qemu-sid::records-vs-model` feeds the kernel records through QEMU 11.1's QMP and
//! compares what it did with the harness's model of it (`ras_harness::sut::linux_records`).

use std::path::{Path, PathBuf};

use emuhost::QemuSuite;
use libtest_mimic::{Completion, Failed, Trial};
use ras_harness::formats::cper::{linux_response, Kernel, LinuxContext, Notification};
use ras_harness::runner::run_isolated;
use ras_harness::scenario::{self, Verdict};
use ras_harness::sut::linux::{guest_files, LIMIT};
use ras_harness::sut::linux_records::{self, corpus, disagreements, expected};
use ras_harness::sut::{time_allowed, Sut};

pub fn trials() -> Vec<Trial> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scenarios", "linux"]
        .iter()
        .collect();
    let mut trials = Vec::new();
    let rows = match scenario::load_all(&[dir]) {
        Ok(rows) => rows,
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            trials.push(Trial::test("linux::scenarios", move || {
                Err(text.join("\n").into())
            }));
            Vec::new()
        }
    };
    for suite in [QemuSuite::Bookworm, QemuSuite::Trixie, QemuSuite::Sid] {
        for (path, s) in &rows {
            let path = path.clone();
            trials.push(Trial::test(
                format!("linux::qemu-{}::{}", suite.name(), s.name),
                move || row(suite, &path),
            ));
        }
    }
    trials.push(Trial::ignorable_test(
        "linux::qemu-sid::records-vs-model",
        records_vs_model,
    ));
    trials
}

/// Runs the scenario at `path` on the Debian QEMU of `suite` as `ras-harness run` does (in
/// a child, `__exec`), which must pass it; snapshots how QEMU ended and the guest's lines.
fn row(suite: QemuSuite, path: &Path) -> Result<(), Failed> {
    let s = scenario::load(path).map_err(|e| e.to_string())?;
    let exe = Path::new(env!("CARGO_BIN_EXE_ras-harness"));
    let result = run_isolated(exe, path, time_allowed(&s), &Sut::QemuDebian(suite));
    let observed = result.observed.as_ref();
    if result.verdict != Verdict::Pass {
        return Err(format!(
            "{}: {}\n{:#?}",
            result.verdict.kind(),
            result.verdict.reason().unwrap_or_default(),
            observed.map(|o| (&o.vmm_end, &o.console))
        )
        .into());
    }
    let observed = observed.ok_or("a pass without an outcome")?;
    let mut settings = snapshot_settings(suite);
    settings.set_description(format!(
        "Linux {} on qemu-{}, {}",
        guest_files()?.release,
        suite.name(),
        s.name
    ));
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "vmm_end": observed.vmm_end,
        "console": observed.console,
    }))
    .map_err(|e| e.to_string())?;
    settings.bind(|| insta::assert_snapshot!(s.name.clone(), text));
    Ok(())
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
    let guest = guest_files()?;
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
