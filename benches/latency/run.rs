//! The bench run on an arm64 KVM host: criterion set up from the command line, the floor
//! group, the sigbus group, the summary, then every poisoned page given back.

use crate::floor::{NullExit, SignalTarget, ThreadHop, Waiting};
use crate::results::{median, Results};
use crate::sigbus::{Delivery, Firmware, Path};
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use ras_harness::fault::unpoison::{self, hardware_corrupted_kib};
use ras_harness::kvm::Vm;
use std::cell::RefCell;
use std::process::ExitCode;
use std::time::Duration;

/// Samples per bench in the sigbus group, one iteration each at least: every iteration
/// costs a poisoned page and, every MAX_TARGETS, a VM. With criterion's minimum (10), an
/// emulated run's medians moved by 20% from run to run.
const SIGBUS_SAMPLES: usize = 30;
/// The sigbus group's measurement time in null exits: about two iterations per sample
/// at a path of 1.5 floors, whatever the host's speed (emulated or native).
const SIGBUS_MEASURE_FLOORS: u32 = 30;
/// Null exits timed before the groups when the floor group is filtered out.
const CALIBRATION_EXITS: usize = 20;

pub fn main() -> ExitCode {
    let mut c = Criterion::default().without_plots().configure_from_args();
    if std::env::var_os("CRITERION_HOME").is_none() {
        if let Some(dir) = std::env::var_os(crate::OUTPUT_VAR) {
            c = c.output_directory(std::path::Path::new(&dir));
        }
    }
    let results = RefCell::new(Results::default());
    if let Err(e) = floor(&mut c, &results) {
        eprintln!("latency: the floor cannot be measured: {e}");
        return ExitCode::FAILURE;
    }
    let poisoned = match sigbus(&mut c, &results) {
        Ok(pages) => pages,
        Err(e) => {
            eprintln!("latency: {e}");
            return ExitCode::FAILURE;
        }
    };
    c.final_summary();

    let results = results.into_inner();
    print!("{}", results.table());
    if let Some(dir) = std::env::var_os(crate::OUTPUT_VAR) {
        let path = std::path::Path::new(&dir).join("latency-summary.json");
        let text = serde_json::to_string_pretty(&results.json()).unwrap_or_default();
        match std::fs::write(&path, text) {
            Ok(()) => println!("latency: summary in {}", path.display()),
            Err(e) => eprintln!("latency: {}: {e}", path.display()),
        }
    }
    give_back(&poisoned);
    ExitCode::SUCCESS
}

/// The floor group: null exit, signal to a blocked and to a spinning thread, the hop to
/// another thread and back.
fn floor(c: &mut Criterion, results: &RefCell<Results>) -> Result<(), String> {
    let mut g = c.benchmark_group("floor");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut null: Option<NullExit> = None;
    g.bench_function("null_mmio_exit", |b| {
        b.iter_custom(|iters| {
            let ne = null.get_or_insert_with(|| NullExit::boot().unwrap_or_else(|e| panic!("{e}")));
            let mut total = 0;
            for _ in 0..iters {
                let rt = ne.round_trip().unwrap_or_else(|e| panic!("{e}"));
                total += rt.host_ns;
                results.borrow_mut().push_null_exit(rt);
            }
            Duration::from_nanos(total)
        })
    });
    drop(null);
    for (waiting, name) in [
        (Waiting::Blocked, "blocked"),
        (Waiting::Spinning, "spinning"),
    ] {
        let mut target: Option<SignalTarget> = None;
        g.bench_function(format!("signal_to_{name}_thread"), |b| {
            b.iter_custom(|iters| {
                let t = target.get_or_insert_with(|| {
                    SignalTarget::start(waiting).unwrap_or_else(|e| panic!("{e}"))
                });
                let mut total = 0;
                for _ in 0..iters {
                    let ns = t.deliver().unwrap_or_else(|e| panic!("{e}"));
                    total += ns;
                    results.borrow_mut().push_signal(name, ns as i64);
                }
                Duration::from_nanos(total)
            })
        });
    }
    let mut hop: Option<ThreadHop> = None;
    g.bench_function("thread_hop", |b| {
        b.iter_custom(|iters| {
            let h = hop.get_or_insert_with(|| ThreadHop::start().unwrap_or_else(|e| panic!("{e}")));
            let mut total = 0;
            for _ in 0..iters {
                let ns = h.round_trip().unwrap_or_else(|e| panic!("{e}"));
                total += ns;
                results.borrow_mut().push_signal("thread hop", ns as i64);
            }
            Duration::from_nanos(total)
        })
    });
    drop(hop);
    g.finish();
    if results.borrow().null_exit.is_empty() {
        let mut ne = NullExit::boot()?;
        let mut v = Vec::new();
        for _ in 0..CALIBRATION_EXITS {
            v.push(ne.round_trip()?.host_ns as i64);
        }
        results.borrow_mut().calibration_ns = median(v.into_iter());
    }
    Ok(())
}

/// The sigbus group, one bench per (delivery, firmware); returns the pages it poisoned.
fn sigbus(
    c: &mut Criterion,
    results: &RefCell<Results>,
) -> Result<Vec<ras_harness::fault::PoisonedPage>, String> {
    if !emuhost::is_root() {
        println!("latency: sigbus_to_injection skipped: poisoning memory needs root");
        return Ok(Vec::new());
    }
    let caps = Vm::new().map_err(|e| e.to_string())?.caps();
    let floor = results.borrow().floor_ns().unwrap_or(1_000_000).max(1) as u64;
    let mut g: BenchmarkGroup<'_, _> = c.benchmark_group("sigbus_to_injection");
    g.sample_size(SIGBUS_SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_nanos(floor * 2))
        .measurement_time(Duration::from_nanos(floor) * SIGBUS_MEASURE_FLOORS);
    let mut poisoned = Vec::new();
    for delivery in Delivery::ALL {
        if let Some(cap) = delivery.cap().filter(|&cap| !caps.has(cap)) {
            println!(
                "latency: {} skipped: the host has no {cap:?}",
                delivery.name()
            );
            continue;
        }
        for firmware in Firmware::ALL {
            let id = format!("{}/{}", delivery.name(), firmware.name());
            let mut path = Path::new(delivery, firmware)?;
            g.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let mut total = 0i64;
                    for _ in 0..iters {
                        let parts = path.iteration().unwrap_or_else(|e| panic!("{id}: {e}"));
                        total += parts.to_vector().max(0);
                        results
                            .borrow_mut()
                            .paths
                            .entry(id.clone())
                            .or_default()
                            .push(parts);
                    }
                    Duration::from_nanos(total as u64)
                })
            });
            poisoned.extend(path.finish());
        }
    }
    g.finish();
    Ok(poisoned)
}

/// Unpoisons every page the run poisoned and says what stayed poisoned.
fn give_back(pages: &[ras_harness::fault::PoisonedPage]) {
    if pages.is_empty() {
        return;
    }
    let before = hardware_corrupted_kib().ok();
    let report = unpoison::unpoison(pages);
    let after = hardware_corrupted_kib().ok();
    println!(
        "latency: {} pages poisoned, {} given back, {} kept; HardwareCorrupted {:?} kB -> {:?} kB",
        pages.len(),
        report.given_back.len(),
        report.kept.len(),
        before,
        after
    );
    for kept in report.kept.iter().take(5) {
        println!("latency: kept {:#x}: {:?}", kept.page.hva, kept.why);
    }
}
