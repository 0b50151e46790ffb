//! `ras-harness soak`: the scenario matrix N times on one host, checking after every round
//! that the host got its poisoned pages back and that the parent leaks nothing.
//!
//! Each scenario runs in its own child, as in `run`, and the child unpoisons the pages it
//! poisoned when it ends (vmm::execute). What this command measures is the result:
//! `HardwareCorrupted` in /proc/meminfo before and after each round (a page not given back
//! stays counted there), and this process's open descriptors (/proc/self/fd) and resident
//! set (VmRSS), which must not grow from round to round.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use ras_harness::fault::unpoison::hardware_corrupted_kib;
use ras_harness::runner;
use ras_harness::scenario::VerdictKind;
use ras_harness::sut::Sut;

/// RSS growth allowed between the end of round 1 and the end of the last round: allocator
/// noise, not a leak per scenario (a leak of one report per scenario would exceed it).
const RSS_SLACK_KIB: u64 = 4096;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Scenario files or directories (searched recursively for *.json, in sorted order).
    #[arg(default_value = "scenarios")]
    paths: Vec<PathBuf>,
    /// How many times the whole matrix runs.
    #[arg(long, default_value_t = 10, value_name = "N")]
    rounds: u32,
    /// Seconds one scenario may take before it is killed and counted as an error.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    timeout: u64,
}

/// The figures of one round.
#[derive(Clone, Debug, PartialEq)]
struct Round {
    /// Verdicts by kind: pass, skip, fail, error.
    pass: usize,
    skip: usize,
    fail: usize,
    error: usize,
    /// HardwareCorrupted (kB) before and after the round, when the host reports it.
    corrupted: Option<(u64, u64)>,
    /// HugePages_Total before and after the round: memory_failure() dissolves a poisoned
    /// huge page, and unpoisoning gives back its base pages, not the huge page.
    huge_pages: Option<(u64, u64)>,
    /// Open descriptors and VmRSS (kB) of this process after the round.
    fds: usize,
    rss_kib: u64,
    seconds: f64,
}

pub fn run(args: SoakArgs) -> Result<u8, String> {
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let scenarios = super::run::load_all(&args.paths)?;
    if !(emuhost::kvm_available() || emuhost::in_emulated_host()) {
        return super::run::relaunch(
            super::run::emulated_seconds(&scenarios, args.rounds as usize),
            &args.paths,
            &[],
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let timeout = Duration::from_secs(args.timeout);
    println!(
        "{:>5} {:>4} {:>4} {:>4} {:>5} {:>24} {:>10} {:>4} {:>9} {:>8}",
        "round",
        "pass",
        "skip",
        "fail",
        "error",
        "HardwareCorrupted kB",
        "huge pages",
        "fds",
        "RSS kB",
        "s"
    );
    let mut rounds = Vec::new();
    for r in 1..=args.rounds {
        let started = Instant::now();
        let before = hardware_corrupted_kib().ok();
        let huge_before = meminfo("HugePages_Total");
        let mut round = Round {
            pass: 0,
            skip: 0,
            fail: 0,
            error: 0,
            corrupted: None,
            huge_pages: None,
            fds: 0,
            rss_kib: 0,
            seconds: 0.0,
        };
        for (path, s) in &scenarios {
            let result = runner::run_isolated(&exe, path, timeout, &Sut::Reference);
            let kind = result.verdict.kind();
            match kind {
                VerdictKind::Pass => round.pass += 1,
                VerdictKind::Skip => round.skip += 1,
                VerdictKind::Fail => round.fail += 1,
                VerdictKind::Error => round.error += 1,
            }
            if let (VerdictKind::Fail | VerdictKind::Error | VerdictKind::Skip, Some(reason)) =
                (kind, result.verdict.reason())
            {
                eprintln!("round {r}: {} {kind}: {reason}", s.name);
            }
        }
        round.corrupted = before.zip(hardware_corrupted_kib().ok());
        round.huge_pages = huge_before.zip(meminfo("HugePages_Total"));
        round.fds = open_fds();
        round.rss_kib = rss_kib();
        round.seconds = started.elapsed().as_secs_f64();
        let span = |v: Option<(u64, u64)>| {
            v.map_or_else(|| "unknown".to_owned(), |(b, a)| format!("{b} -> {a}"))
        };
        let (corrupted, huge) = (span(round.corrupted), span(round.huge_pages));
        println!(
            "{r:>5} {:>4} {:>4} {:>4} {:>5} {corrupted:>24} {huge:>10} {:>4} {:>9} {:>8.2}",
            round.pass,
            round.skip,
            round.fail,
            round.error,
            round.fds,
            round.rss_kib,
            round.seconds
        );
        rounds.push(round);
    }
    let problems = problems(&rounds);
    if problems.is_empty() {
        println!("soak: PASS: {} rounds, nothing leaked", rounds.len());
        Ok(0)
    } else {
        for p in &problems {
            println!("soak: {p}");
        }
        println!("soak: FAIL: {} problem(s)", problems.len());
        Ok(1)
    }
}

/// Everything wrong with a soak: failed or errored scenarios, poisoned pages the host did
/// not get back, descriptors or RSS that grew after round 1.
fn problems(rounds: &[Round]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        let n = i + 1;
        if r.fail + r.error > 0 {
            out.push(format!("round {n}: {} failed, {} errors", r.fail, r.error));
        }
        if let Some((before, after)) = r.corrupted.filter(|(b, a)| a > b) {
            out.push(format!(
                "round {n}: {} kB of poisoned memory not given back (HardwareCorrupted {before} -> {after} kB)",
                after - before
            ));
        }
        if let Some((before, after)) = r.huge_pages.filter(|(b, a)| a < b) {
            out.push(format!(
                "round {n}: the hugetlb pool lost {} page(s) (HugePages_Total {before} -> {after})",
                before - after
            ));
        }
    }
    if let (Some(first), Some(last)) = (rounds.first(), rounds.last()) {
        if let Some(r) = rounds.iter().position(|r| r.fds > first.fds) {
            out.push(format!(
                "open descriptors grew: {} after round 1, {} after round {}",
                first.fds,
                rounds[r].fds,
                r + 1
            ));
        }
        if last.rss_kib > first.rss_kib + RSS_SLACK_KIB {
            out.push(format!(
                "RSS grew by {} kB from round 1 to round {} (allowed {RSS_SLACK_KIB} kB)",
                last.rss_kib - first.rss_kib,
                rounds.len()
            ));
        }
    }
    out
}

/// A count from /proc/meminfo (`HugePages_Total:   16`), when present.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Entries of /proc/self/fd (the directory's own descriptor included: a constant).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// VmRSS from /proc/self/status, in kB (0 when absent).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(corrupted: (u64, u64), fds: usize, rss_kib: u64) -> Round {
        Round {
            pass: 16,
            skip: 0,
            fail: 0,
            error: 0,
            corrupted: Some(corrupted),
            huge_pages: Some((16, 16)),
            fds,
            rss_kib,
            seconds: 1.0,
        }
    }

    #[test]
    fn a_clean_soak_has_no_problems() {
        let rounds = [
            round((0, 0), 5, 9000),
            round((0, 0), 5, 9100),
            round((0, 0), 4, 9000),
        ];
        assert!(problems(&rounds).is_empty());
    }

    #[test]
    fn leaks_growth_and_failures_are_each_reported() {
        let mut bad = round((16, 32), 6, 9000 + RSS_SLACK_KIB + 1);
        bad.error = 1;
        bad.huge_pages = Some((16, 15));
        let rounds = [round((0, 16), 5, 9000), bad];
        assert_eq!(
            problems(&rounds),
            [
                "round 1: 16 kB of poisoned memory not given back (HardwareCorrupted 0 -> 16 kB)",
                "round 2: 0 failed, 1 errors",
                "round 2: 16 kB of poisoned memory not given back (HardwareCorrupted 16 -> 32 kB)",
                "round 2: the hugetlb pool lost 1 page(s) (HugePages_Total 16 -> 15)",
                "open descriptors grew: 5 after round 1, 6 after round 2",
                "RSS grew by 4097 kB from round 1 to round 2 (allowed 4096 kB)",
            ]
        );
    }

    #[test]
    fn this_process_has_descriptors_and_a_resident_set() {
        assert!(open_fds() >= 3, "stdin, stdout, stderr at least");
        assert!(rss_kib() > 0);
        assert!(meminfo("MemTotal").is_some_and(|kib| kib > 0));
        assert_eq!(meminfo("NoSuchField"), None);
    }
}
