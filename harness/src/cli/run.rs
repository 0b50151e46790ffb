//! `ras-harness run`: the conformance gate.
//!
//! Every given file is parsed and validated before any scenario runs, on any host. Each
//! scenario then runs in its own child process (`ras-harness __exec FILE`), so one that
//! crashes or hangs is an error verdict and the rest still run. Off arm64 KVM, the whole run
//! moves once into the emulated arm64 KVM host (emuhost/README.md). With `--kernel`, it
//! moves there once per kernel and the reports come back as JSON to make one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use emuhost::KernelChoice;
use ras_harness::report::{Axis, Report, ScenarioResult, SideBySide, VmmId};
use ras_harness::scenario::Verdict;
use ras_harness::sut::Sut;
use ras_harness::{host, runner, scenario};

/// Seconds an emulated run may take per scenario with the payload, on top of 120 s for
/// set-up and boot, unless RAS_EMU_TIMEOUT says otherwise; a Linux guest's may take its
/// whole limit.
const EMULATED_SECONDS_PER_SCENARIO: u64 = 30;

/// Seconds an emulated run of `scenarios`, `runs` times over, may take besides set-up.
pub(super) fn emulated_seconds(scenarios: &[(PathBuf, scenario::Scenario)], runs: usize) -> u64 {
    let each: u64 = scenarios
        .iter()
        .map(|(_, s)| match s.guest.os {
            scenario::Os::Linux => ras_harness::sut::time_allowed(s).as_secs(),
            scenario::Os::Payload => EMULATED_SECONDS_PER_SCENARIO,
        })
        .sum();
    each * runs as u64
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario files or directories (searched recursively for *.json, in sorted order).
    #[arg(default_value = "scenarios")]
    paths: Vec<PathBuf>,
    /// The report printed on standard output.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    report: ReportFormat,
    /// Also write the report, in the `--report` format, to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Validate the scenarios and list what would run, then stop.
    #[arg(long)]
    list: bool,
    /// Seconds one scenario may take before it is killed and counted as an error.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    timeout: u64,
    /// Run on each of these host kernels in the emulated arm64 KVM host, one after the
    /// other, and report them side by side (a row whose outcome differs between kernels is
    /// marked): a comma-separated list of bookworm (Linux 6.1), stable (6.12), sid (7.x),
    /// sid-16k (7.x with 16 KiB pages), or `all` for those four. Without it, the kernel of
    /// this arm64 KVM host, else the emulated host's RAS_HOST_KERNEL (default stable).
    #[arg(long, value_name = "LIST", value_parser = parse_kernels)]
    kernel: Option<Kernels>,
    /// Print no report on standard output, only the progress on standard error (use with
    /// --out).
    #[arg(long)]
    quiet: bool,
    /// The VMM under test: `reference` (the harness's own, judged by each scenario's
    /// `expect`), or a VMM process judged by the conformance rules (docs/conformance.md):
    /// `qemu` (Debian trixie's arm64 QEMU, fetched on first use), `qemu:SUITE` (bookworm,
    /// bookworm-backports, trixie, sid), `qemu=PATH` (a qemu-system-aarch64 of your own),
    /// `libkrun` (built on first use), or `exec='COMMAND TEMPLATE'` for any VMM that boots
    /// an arm64 Image with a device tree: {image}, {bootargs}, {ram_mib}, {vcpus} and
    /// {console} are filled in. ACPI scenarios run on a Debian QEMU through its suite's UEFI
    /// firmware (edk2), which starts the payload as an EFI application. A Linux guest's
    /// scenarios (scenarios/linux/) run only there too, and are judged by their `expect`
    /// on the guest kernel's console. Scenarios a VMM cannot be told to run are skipped
    /// with the reason.
    /// Given more than once, every scenario runs on each VMM in turn and the report shows
    /// them side by side, with each one's wall time per scenario and the guest's own time
    /// from its access to the vector of its first exception (e.g. `PASS 0.12s 1802us`).
    #[arg(long, default_value = "reference", value_name = "VMM", value_parser = Sut::parse,
          action = clap::ArgAction::Append)]
    vmm: Vec<Sut>,
}

/// The kernels of `--kernel`, in the order given.
#[derive(Clone, Debug)]
struct Kernels(Vec<KernelChoice>);

fn parse_kernels(list: &str) -> Result<Kernels, String> {
    if list.trim() == "all" {
        use KernelChoice::*;
        return Ok(Kernels(vec![Bookworm, Stable, Sid, Sid16k]));
    }
    let mut kernels = Vec::new();
    for name in list.split(',') {
        let k = KernelChoice::parse(name).map_err(|e| format!("{e}, or all"))?;
        if name.trim().is_empty() || kernels.contains(&k) {
            return Err(format!("{list:?}: each kernel once, comma-separated"));
        }
        kernels.push(k);
    }
    Ok(Kernels(kernels))
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ReportFormat {
    /// Aligned columns for people.
    Table,
    /// The report JSON (README.md, "Report JSON").
    Json,
    /// JUnit XML, for CI dashboards.
    Junit,
}

pub fn run(args: RunArgs) -> Result<u8, String> {
    let scenarios = load_all(&args.paths)?;
    if args.list {
        for (path, s) in &scenarios {
            println!("{:<40} {}", s.name, path.display());
        }
        eprintln!("{} scenarios", scenarios.len());
        return Ok(0);
    }
    if args.kernel.is_some() && args.vmm.len() > 1 {
        return Err("--kernel runs one VMM on several kernels: give one --vmm with it".into());
    }
    let mut parts = Vec::new();
    if !emuhost::in_emulated_host() {
        for vmm in &args.vmm {
            ras_harness::sut::prepare(vmm)?;
            parts.extend(ras_harness::sut::initramfs_parts(vmm));
        }
        parts.extend(linux_guest(&scenarios, &args.vmm)?);
    }
    if let Some(Kernels(kernels)) = &args.kernel {
        return run_kernels(&args, &scenarios, kernels, &parts);
    }
    if !(emuhost::kvm_available() || emuhost::in_emulated_host()) {
        let mut dirs: Vec<PathBuf> = args.paths.clone();
        if let Some(out) = &args.out {
            // The report is written in the guest: its directory must be shared, so it must
            // exist before the guest boots.
            let dir = report_dir(out);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            dirs.push(dir);
        }
        return relaunch(emulated_seconds(&scenarios, args.vmm.len()), &dirs, &parts);
    }

    let host = serde_json::to_value(host::probe()).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    for vmm in &args.vmm {
        let label = if args.vmm.len() > 1 {
            format!("{vmm} ")
        } else {
            String::new()
        };
        let report = Report {
            host: host.clone(),
            vmm: VmmId {
                name: vmm.name(),
                version: ras_harness::sut::version(vmm),
            },
            results: run_each(&scenarios, vmm, &label, Duration::from_secs(args.timeout))?,
        };
        runs.push((vmm.name(), report));
    }
    let (text, exit) = match <[_; 1]>::try_from(runs) {
        Ok([(_, report)]) => {
            let text = match args.report {
                ReportFormat::Table => report.to_table(),
                ReportFormat::Json => report.to_json(),
                ReportFormat::Junit => report.to_junit(),
            };
            (text, report.summary().exit_code())
        }
        Err(runs) => {
            let side = SideBySide {
                axis: Axis::Vmm,
                runs,
            };
            let text = match args.report {
                ReportFormat::Table => side.to_table(),
                ReportFormat::Json => side.to_json(),
                ReportFormat::Junit => side.to_junit(),
            };
            (text, side.summary().exit_code())
        }
    };
    emit(&args, &text)?;
    Ok(u8::try_from(exit).unwrap_or(2))
}

/// Runs each scenario on `vmm` in a child of its own, with a progress line per scenario.
fn run_each(
    scenarios: &[(PathBuf, scenario::Scenario)],
    vmm: &Sut,
    label: &str,
    timeout: Duration,
) -> Result<Vec<ScenarioResult>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let total = scenarios.len();
    let mut results = Vec::with_capacity(total);
    for (i, (path, s)) in scenarios.iter().enumerate() {
        eprint!("{label}[{:>3}/{total}] {:<40} ", i + 1, s.name);
        let allowed = match vmm {
            Sut::Reference => timeout,
            _ => timeout.max(ras_harness::sut::time_allowed(s)),
        };
        let result = runner::run_isolated(&exe, path, allowed, vmm);
        eprintln!(
            "{:<5} {:>6.2} s",
            result.verdict.kind(),
            result.duration.as_secs_f64()
        );
        if let Some(reason) = result.verdict.reason() {
            eprintln!("        {reason}");
        }
        results.push(result);
    }
    Ok(results)
}

/// The report on stdout unless `--quiet`, and into `--out`.
fn emit(args: &RunArgs, text: &str) -> Result<(), String> {
    if !args.quiet {
        print!("{text}");
    }
    match &args.out {
        Some(out) => write_report(out, text),
        None => Ok(()),
    }
}

/// `run --kernel`: the same scenarios in the emulated host once per kernel, each run
/// writing its JSON report into a directory shared with it, then one report of them all.
/// A kernel whose run leaves no report (its set-up failed, its host did not boot or timed
/// out) counts every scenario as an error with the reason, and the next kernel still runs.
fn run_kernels(
    args: &RunArgs,
    scenarios: &[(PathBuf, scenario::Scenario)],
    kernels: &[KernelChoice],
    parts: &[PathBuf],
) -> Result<u8, String> {
    let dir = std::env::temp_dir().join(format!("ras-harness-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut shares = args.paths.clone();
    shares.push(dir.clone());
    let mut runs = Vec::new();
    for (i, &kernel) in kernels.iter().enumerate() {
        eprintln!(
            "ras-harness: kernel {} ({}/{}), in the emulated arm64 KVM host",
            kernel.name(),
            i + 1,
            kernels.len()
        );
        let out = dir.join(format!("{}.json", kernel.name()));
        let mut argv: Vec<OsString> = vec!["run".into()];
        argv.extend(args.paths.iter().map(|p| p.as_os_str().to_owned()));
        argv.extend(["--report", "json", "--quiet", "--timeout"].map(OsString::from));
        argv.push(args.timeout.to_string().into());
        argv.push("--out".into());
        argv.push(out.clone().into());
        argv.push("--vmm".into());
        argv.push(args.vmm[0].arg().into());
        let ended = match in_emulated_host(
            Some(kernel),
            emulated_seconds(scenarios, 1),
            &shares,
            &argv,
            parts,
        ) {
            Ok(status) => format!("ended with status {status}"),
            Err(e) => e,
        };
        let report = std::fs::read_to_string(&out)
            .map_err(|e| e.to_string())
            .and_then(|text| Report::from_json(&text))
            .unwrap_or_else(|e| {
                let why = format!("kernel {}: {ended}, and no report ({e})", kernel.name());
                eprintln!("ras-harness: {why}");
                broken_run(scenarios, &args.vmm[0], &why)
            });
        runs.push((kernel.name().to_owned(), report));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let reports = SideBySide {
        axis: Axis::Kernel,
        runs,
    };
    let text = match args.report {
        ReportFormat::Table => reports.to_table(),
        ReportFormat::Json => reports.to_json(),
        ReportFormat::Junit => reports.to_junit(),
    };
    emit(args, &text)?;
    Ok(u8::try_from(reports.summary().exit_code()).unwrap_or(2))
}

/// The Linux guest, fetched and built when a Linux scenario is to run on a Debian QEMU: the
/// part that puts it in the emulated host's RAM.
fn linux_guest(
    scenarios: &[(PathBuf, scenario::Scenario)],
    vmms: &[Sut],
) -> Result<Option<PathBuf>, String> {
    let needed = scenarios
        .iter()
        .any(|(_, s)| s.guest.os == scenario::Os::Linux)
        && vmms.iter().any(|v| matches!(v, Sut::QemuDebian(_)));
    if !needed {
        return Ok(None);
    }
    let cache = ras_harness::sut::cache_dir()?;
    emuhost::linux_guest::ensure(&cache)
        .map(|g| Some(g.initramfs))
        .map_err(|e| format!("the Linux guest: {e}"))
}

/// A report of `vmm` with every scenario an error for `why`.
fn broken_run(scenarios: &[(PathBuf, scenario::Scenario)], vmm: &Sut, why: &str) -> Report {
    Report {
        host: serde_json::Value::Null,
        vmm: VmmId {
            name: vmm.name(),
            version: None,
        },
        results: scenarios
            .iter()
            .map(|(_, s)| ScenarioResult {
                scenario: s.name.clone(),
                verdict: Verdict::Error(why.to_owned()),
                observed: None,
                vmm_log: None,
                conformance: Vec::new(),
                duration: Duration::ZERO,
            })
            .collect(),
    }
}

/// Loads and validates every scenario under `paths`, or names every problem in one message:
/// nothing runs unless all of them are valid.
pub(super) fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, scenario::Scenario)>, String> {
    scenario::load_all(paths).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{}\n{} problem(s) in the scenario files; nothing was run",
            lines.join("\n"),
            errors.len()
        )
    })
}

fn write_report(out: &Path, text: &str) -> Result<(), String> {
    let dir = report_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))
}

/// The directory `--out FILE` writes into.
fn report_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Runs this same command in the emulated arm64 KVM host (or natively, where it can) and
/// returns its status, its output on stdout; the timeout allows `seconds` for the
/// scenarios ([`emulated_seconds`]). `paths` (files or directories the command reads or writes) are shared into the
/// guest at their host paths; `parts` go into its RAM ([`ras_harness::sut::initramfs_parts`]).
pub(super) fn relaunch(seconds: u64, paths: &[PathBuf], parts: &[PathBuf]) -> Result<u8, String> {
    eprintln!(
        "ras-harness: no arm64 KVM on this host; running in the emulated arm64 KVM host \
         (emuhost/README.md)"
    );
    let (exe, opts) = emulated_host(None, seconds, paths, parts)?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let code = emuhost::run(&exe, &args, &opts).map_err(cannot)?;
    Ok(u8::try_from(code).unwrap_or(2))
}

/// Runs `ras-harness ARGS` in the emulated host with `kernel`, its output on stderr, and
/// returns its status.
fn in_emulated_host(
    kernel: Option<KernelChoice>,
    seconds: u64,
    paths: &[PathBuf],
    args: &[OsString],
    parts: &[PathBuf],
) -> Result<i32, String> {
    let (exe, opts) = emulated_host(kernel, seconds, paths, parts)?;
    emuhost::run_emulated(&exe, args, &opts, &mut std::io::stderr()).map_err(cannot)
}

/// This binary built for the emulated host, and the options to run it there with `kernel`
/// (else RAS_HOST_KERNEL's): `paths` shared, `parts` in its RAM, a timeout of `seconds`
/// besides set-up and boot unless RAS_EMU_TIMEOUT says otherwise.
fn emulated_host(
    kernel: Option<KernelChoice>,
    seconds: u64,
    paths: &[PathBuf],
    parts: &[PathBuf],
) -> Result<(PathBuf, emuhost::RunOptions), String> {
    let target = emuhost::CrossTarget {
        manifest_dir: env!("CARGO_MANIFEST_DIR").into(),
        package: env!("CARGO_PKG_NAME").into(),
        kind: emuhost::TargetKind::Bin,
        name: "ras-harness".into(),
        features: Vec::new(),
        release: !cfg!(debug_assertions),
    };
    let mut opts = emuhost::RunOptions::from_env().map_err(cannot)?;
    if let Some(kernel) = kernel {
        opts.kernel = kernel;
        opts.emulate = true;
    }
    opts.initramfs_parts.extend_from_slice(parts);
    opts.extra_shares = paths
        .iter()
        .map(|p| if p.is_dir() { p.clone() } else { report_dir(p) })
        .collect();
    for dir in &opts.extra_shares {
        // Before the build: a path that cannot be shared is bad input, told at once.
        emuhost::shareable(&dir.canonicalize().unwrap_or_else(|_| dir.clone())).map_err(cannot)?;
    }
    if std::env::var_os(emuhost::TIMEOUT_VAR).is_none() {
        opts.timeout = Duration::from_secs(120 + seconds);
    }
    let exe = target.build(&opts.cache_dir).map_err(cannot)?;
    Ok((exe, opts))
}

fn cannot(e: emuhost::Error) -> String {
    format!("cannot run in the emulated arm64 KVM host: {e}")
}
