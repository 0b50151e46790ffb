//! `ras-harness run`: the conformance gate.
//!
//! Every given file is parsed and validated before any scenario runs, on any host. Each
//! scenario then runs in its own child process (`ras-harness __exec FILE`), so one that
//! crashes or hangs is an error verdict and the rest still run. Off arm64 KVM, the whole run
//! moves once into the emulated arm64 KVM host (emuhost/README.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use ras_harness::report::Report;
use ras_harness::{host, runner, scenario};

/// Seconds an emulated run may take per scenario, on top of 120 s for set-up and boot,
/// unless RAS_EMU_TIMEOUT says otherwise.
const EMULATED_SECONDS_PER_SCENARIO: u64 = 30;

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
    if !(emuhost::kvm_available() || emuhost::in_emulated_host()) {
        let mut dirs: Vec<PathBuf> = args.paths.clone();
        if let Some(out) = &args.out {
            // The report is written in the guest: its directory must be shared, so it must
            // exist before the guest boots.
            let dir = report_dir(out);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            dirs.push(dir);
        }
        return relaunch(scenarios.len(), &dirs);
    }

    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let host = host::probe();
    let timeout = Duration::from_secs(args.timeout);
    let total = scenarios.len();
    let mut results = Vec::with_capacity(total);
    for (i, (path, s)) in scenarios.iter().enumerate() {
        eprint!("[{:>3}/{total}] {:<40} ", i + 1, s.name);
        let result = runner::run_isolated(&exe, path, timeout);
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
    let report = Report {
        host: serde_json::to_value(&host).map_err(|e| e.to_string())?,
        results,
    };
    let text = match args.report {
        ReportFormat::Table => report.to_table(),
        ReportFormat::Json => report.to_json(),
        ReportFormat::Junit => report.to_junit(),
    };
    print!("{text}");
    if let Some(out) = &args.out {
        write_report(out, &text)?;
    }
    Ok(u8::try_from(report.summary().exit_code()).unwrap_or(2))
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

/// Runs this same command in the emulated arm64 KVM host and returns its status; the
/// timeout allows for `scenarios` scenario runs. `paths` (files or directories the command
/// reads or writes) are shared into the guest at their host paths.
pub(super) fn relaunch(scenarios: usize, paths: &[PathBuf]) -> Result<u8, String> {
    eprintln!(
        "ras-harness: no arm64 KVM on this host; running in the emulated arm64 KVM host \
         (emuhost/README.md)"
    );
    let target = emuhost::CrossTarget {
        manifest_dir: env!("CARGO_MANIFEST_DIR").into(),
        package: env!("CARGO_PKG_NAME").into(),
        kind: emuhost::TargetKind::Bin,
        name: "ras-harness".into(),
        features: Vec::new(),
        release: !cfg!(debug_assertions),
    };
    let fail = |e: emuhost::Error| format!("cannot run in the emulated arm64 KVM host: {e}");
    let mut opts = emuhost::RunOptions::from_env().map_err(fail)?;
    opts.extra_shares = paths
        .iter()
        .map(|p| if p.is_dir() { p.clone() } else { report_dir(p) })
        .collect();
    if std::env::var_os("RAS_EMU_TIMEOUT").is_none() {
        opts.timeout = Duration::from_secs(120 + EMULATED_SECONDS_PER_SCENARIO * scenarios as u64);
    }
    let exe = target.build(&opts.cache_dir).map_err(fail)?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let code = emuhost::run(&exe, &args, &opts).map_err(fail)?;
    Ok(u8::try_from(code).unwrap_or(2))
}
