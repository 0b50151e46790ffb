//! What the harness promises the host, each as a trial that fails if it is broken
//! (docs/safety.md names them): nothing outside guest RAM is ever poisoned, a run without
//! root says so before it does anything, the runner writes only `--out`, one scenario
//! cannot change another's result, a hugetlb run gives its huge page back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use libtest_mimic::{Completion, Failed, Trial};
use ras_guest_abi::map;
use ras_harness::fault::unpoison::hardware_corrupted_kib;
use ras_harness::fault::{GuestRanges, Method, PoisonError, Poisoner};
use ras_harness::kvm::{Backing, Mapping};
use ras_harness::runner::ExecLine;
use ras_harness::scenario::{self, When};
use ras_harness::vmm::{self, ExecError, Options};

pub fn trials() -> Vec<Trial> {
    let t = |name: &str, f: fn() -> Result<Completion, Failed>| {
        Trial::ignorable_test(format!("safety::{name}"), f)
    };
    vec![
        t(
            "poisoner_refuses_every_address_outside_guest_ram",
            poisoner_refuses_every_address_outside_guest_ram,
        ),
        t(
            "vmm_refuses_a_fault_page_past_the_target_slot",
            vmm_refuses_a_fault_page_past_the_target_slot,
        ),
        t(
            "run_refuses_an_out_of_range_page_before_running_anything",
            run_refuses_an_out_of_range_page_before_running_anything,
        ),
        t(
            "without_root_a_poisoning_scenario_skips_with_the_reason",
            without_root_a_poisoning_scenario_skips_with_the_reason,
        ),
        t("run_writes_only_its_out_file", run_writes_only_its_out_file),
        t(
            "a_poisoning_scenario_does_not_change_the_next_ones_result",
            a_poisoning_scenario_does_not_change_the_next_ones_result,
        ),
        t(
            "a_hugetlb_run_gives_the_huge_page_back",
            a_hugetlb_run_gives_the_huge_page_back,
        ),
    ]
}

fn scenarios() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "scenarios"]
        .iter()
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ras-safety-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// HardwareCorrupted in kB, or a skip on a kernel without CONFIG_MEMORY_FAILURE.
fn corrupted() -> Result<u64, Completion> {
    hardware_corrupted_kib()
        .map_err(|e| Completion::ignored_with(format!("no HardwareCorrupted figure: {e}")))
}

/// Every address the harness did not register as guest RAM is refused before any system
/// call: its stack, its heap, a mapping of its own that is not guest RAM, the page just
/// past a registered range and the one just before it. HardwareCorrupted does not move and
/// every one of those pages is still readable.
fn poisoner_refuses_every_address_outside_guest_ram() -> Result<Completion, Failed> {
    let before = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    let page = ras_harness::fault::host_page_size();
    let guest = Mapping::new(Backing::Anonymous, 4 * page)?;
    let other = Mapping::new(Backing::Anonymous, 4 * page)?;
    let mut ranges = GuestRanges::new();
    // SAFETY: `guest` is a live mapping made as guest RAM; locals drop in reverse order,
    // so `ranges` (declared after it) is gone before the mapping is.
    unsafe { ranges.add(guest.as_ptr() as usize, guest.len()) }?;
    let stack = [0u8; 64];
    let heap = vec![0u8; 3 * page];
    let align = |a: usize| a / page * page;
    let outside = [
        ("stack", align(stack.as_ptr() as usize)),
        ("heap", align(heap.as_ptr() as usize + page)),
        ("unregistered mapping", other.as_ptr() as usize),
        ("page past guest RAM", guest.as_ptr() as usize + guest.len()),
        ("page before guest RAM", guest.as_ptr() as usize - page),
    ];
    let poisoner = Poisoner::new(&ranges);
    for (what, hva) in outside {
        for method in [
            Method::MadviseHwpoison,
            Method::HardOffline,
            Method::SoftOffline,
        ] {
            match poisoner.poison(hva, method) {
                Err(PoisonError::OutsideGuestRam { .. }) => {}
                other => return Err(format!("{what} {hva:#x} {method:?}: {other:?}").into()),
            }
        }
    }
    // Still mapped and unpoisoned: reading them would SIGBUS otherwise.
    assert_eq!(std::hint::black_box(&stack).iter().sum::<u8>(), 0);
    assert_eq!(
        std::hint::black_box(&heap)
            .iter()
            .map(|&b| b as u32)
            .sum::<u32>(),
        0
    );
    let mut buf = vec![0u8; other.len()];
    other.read(0, &mut buf)?;
    let after = hardware_corrupted_kib()?;
    assert_eq!(after, before, "HardwareCorrupted moved");
    println!(
        "{} addresses x 3 methods refused; HardwareCorrupted {after} kB",
        outside.len()
    );
    Ok(Completion::Completed)
}

/// The VMM computes the HVA of a fault from its page number. With validation bypassed and
/// a page one past the target slot, the run is refused at the poison call with a clear
/// error, and nothing is poisoned.
fn vmm_refuses_a_fault_page_past_the_target_slot() -> Result<Completion, Failed> {
    if !Path::new("/dev/kvm").exists() {
        return Ok(Completion::ignored_with("no /dev/kvm"));
    }
    let before = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    let mut s = scenario::load(&scenarios().join("acpi-store.json"))?;
    let slot = u64::from(s.guest.memory_mib) << 20;
    let page = u32::try_from(slot / scenario::TARGET_PAGE_SIZE)?;
    s.faults[0].page = page;
    assert_eq!(s.faults[0].gpa() - map::TARGET_BASE, slot);
    s.faults[0].when = When::BeforeBoot;
    match vmm::execute(&s, &Options::default()) {
        Err(ExecError::Failed(why)) if why.contains("refusing to poison") => {
            println!("refused: {why}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(hardware_corrupted_kib()?, before, "HardwareCorrupted moved");
    Ok(Completion::Completed)
}

/// Through the CLI, the same page is a validation error: exit 2, nothing run.
fn run_refuses_an_out_of_range_page_before_running_anything() -> Result<Completion, Failed> {
    let dir = scratch("range");
    let text = std::fs::read_to_string(scenarios().join("acpi-store.json"))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)?;
    json["faults"][0]["page"] = 1_000_000.into();
    let file = dir.join("far.json");
    std::fs::write(&file, json.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("run")
        .arg(&file)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("faults[0].page") && stderr.contains("nothing was run"),
        "{stderr}"
    );
    Ok(Completion::Completed)
}

/// `__exec` as an unprivileged user (uid/gid 65534): the scenario is a skip whose reason
/// names root, decided before any VM or poison call; HardwareCorrupted does not move.
fn without_root_a_poisoning_scenario_skips_with_the_reason() -> Result<Completion, Failed> {
    if !emuhost::is_root() {
        return Ok(Completion::ignored_with(
            "needs root to drop to another user",
        ));
    }
    let before = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    // A world-readable copy of the binary and the scenario: the originals may sit in a
    // directory only root can enter.
    let dir = scratch("nobody");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.join("ras-harness");
    std::fs::copy(env!("CARGO_BIN_EXE_ras-harness"), &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let file = dir.join("acpi-store.json");
    std::fs::copy(scenarios().join("acpi-store.json"), &file)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;

    use std::os::unix::process::CommandExt;
    let out = Command::new(&exe)
        .arg("__exec")
        .arg(&file)
        .current_dir(&dir)
        .uid(65534)
        .gid(65534)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: ExecLine = serde_json::from_str(stdout.trim())?;
    match line {
        ExecLine::Skip(why) if why.contains("root") => println!("skip: {why}"),
        other => return Err(format!("expected a skip naming root, got {other:?}").into()),
    }
    assert_eq!(hardware_corrupted_kib()?, before, "HardwareCorrupted moved");
    Ok(Completion::Completed)
}

/// Every file under `dir`, with its length and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.insert(e.path(), (meta.len(), mtime));
            }
        }
    }
    files
}

/// A run from a fresh working directory, on copies of two scenario files (one poisons):
/// afterwards the working directory, the scenario directory and the output directory hold
/// exactly what they held before, plus the `--out` file. (Scenario files cannot name a
/// path: the schema denies unknown fields and has no path-valued one; see
/// scenario::tests' property section.)
fn run_writes_only_its_out_file() -> Result<Completion, Failed> {
    let root = scratch("paths");
    let (cwd, input, output) = (root.join("cwd"), root.join("in"), root.join("out"));
    for d in [&cwd, &input, &output] {
        std::fs::create_dir_all(d)?;
    }
    for name in ["acpi-store.json", "dtb-stop.json"] {
        std::fs::copy(scenarios().join(name), input.join(name))?;
    }
    let before = tree(&root);
    let report = output.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .args(["run", "in", "--report", "json", "--out"])
        .arg(&report)
        .current_dir(&root)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut after = tree(&root);
    assert!(after.remove(&report).is_some(), "no report written");
    assert_eq!(after, before, "the run changed files besides --out");
    Ok(Completion::Completed)
}

fn run_json(args: &[&std::ffi::OsStr]) -> Result<serde_json::Value, Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("run")
        .args(args)
        .args(["--report", "json"])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ras-harness run exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// One `ras-harness run` of a scenario that poisons (and gets a SIGBUS) then one that
/// does not: both pass, and the second observes exactly what it observes alone.
fn a_poisoning_scenario_does_not_change_the_next_ones_result() -> Result<Completion, Failed> {
    let dir = scenarios();
    let (poisons, clean) = (dir.join("acpi-store.json"), dir.join("dtb-stop.json"));
    let both = run_json(&[poisons.as_os_str(), clean.as_os_str()])?;
    let alone = run_json(&[clean.as_os_str()])?;
    let results = both["results"].as_array().ok_or("no results")?;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["verdict"], "pass", "{:#}", results[0]);
    assert!(
        !results[0]["observed"]["host_signals"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the first scenario must really poison: {:#}",
        results[0]
    );
    assert_eq!(results[1]["verdict"], "pass", "{:#}", results[1]);
    assert_eq!(
        results[1]["observed"], alone["results"][0]["observed"],
        "the second scenario saw something else after the first"
    );
    Ok(Completion::Completed)
}

/// The size of the 2 MiB hugetlb pool, which hugetlb-2m.json uses (not /proc/meminfo's
/// default size: 32 MiB on a 16 KiB host).
fn huge_pages_total() -> Option<u64> {
    let pool = ras_harness::fault::hugetlb_pool::HUGEPAGES;
    std::fs::read_to_string(format!("{pool}/hugepages-2048kB/nr_hugepages"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A run of the hugetlb scenario leaves the host's hugetlb pool as it found it: poisoning
/// dissolves the huge page, and the child grows the pool back after unpoisoning.
fn a_hugetlb_run_gives_the_huge_page_back() -> Result<Completion, Failed> {
    let Some(before) = huge_pages_total().filter(|&n| n > 0) else {
        return Ok(Completion::ignored_with("no 2 MiB hugetlb pool"));
    };
    let corrupted = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    let report = run_json(&[scenarios().join("hugetlb-2m.json").as_os_str()])?;
    let verdict = &report["results"][0]["verdict"];
    assert!(verdict == "pass" || verdict == "skip", "{report:#}");
    assert_eq!(huge_pages_total(), Some(before), "the 2 MiB pool moved");
    assert_eq!(
        hardware_corrupted_kib()?,
        corrupted,
        "HardwareCorrupted moved"
    );
    Ok(Completion::Completed)
}
