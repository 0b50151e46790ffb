//! The runner against the real emulated host, with the probe program (emuhost/init's
//! emuhost-probe). Each test boots once (a few seconds); boots are serialised so that the
//! timings, and the timeout test, do not depend on how many run at once.

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use emuhost::{Error, RunOptions};

static BOOTS: Mutex<()> = Mutex::new(());

const PROBE: &str = env!("EMUHOST_PROBE");

fn boot(args: &[&str], tune: impl FnOnce(&mut RunOptions)) -> (Result<i32, Error>, String) {
    let _one_at_a_time = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = RunOptions::from_env().expect("options from the environment");
    opts.emulate = true;
    opts.env.clear();
    tune(&mut opts);
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let mut out = Vec::new();
    let result = emuhost::run_emulated(PROBE.as_ref(), &args, &opts, &mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    print!("{out}");
    (result, out)
}

#[test]
fn arguments_environment_and_cwd_arrive_intact_and_the_status_comes_back() {
    let cwd = emuhost::workspace_root().join("emuhost");
    let (result, out) = boot(
        &["show", "a b", "it's \"quoted\"", "", "$HOME *", "exit", "3"],
        |o| {
            o.cwd = cwd.clone();
            o.env.push(("PROBE_SPACES".into(), " x  y 'z' ".into()));
            o.env.push(("RAS_SOMETHING".into(), "1".into()));
        },
    );
    assert_eq!(result.expect("a run"), 3);
    let expected = format!(
        "arg \"show\"\narg \"a b\"\narg \"it's \\\"quoted\\\"\"\narg \"\"\narg \"$HOME *\"\narg \"exit\"\narg \"3\"\n\
         cwd {}\nuid 0\nenv PROBE_SPACES=\" x  y 'z' \"\nenv RAS_EMU_GUEST=\"1\"\nenv RAS_SOMETHING=\"1\"\n",
        cwd.canonicalize().unwrap().display()
    );
    assert_eq!(out, expected);
}

#[test]
fn a_successful_binary_gives_zero() {
    let (result, out) = boot(&["exit", "0"], |_| {});
    assert_eq!(result.expect("a run"), 0);
    assert_eq!(out, "", "no kernel or init noise in the output");
}

#[test]
fn a_failing_binary_fails_the_run() {
    // A panic is how a failing Rust test ends: exit status 101.
    let (result, out) = boot(&["panic"], |_| {});
    assert_eq!(result.expect("a run"), 101);
    assert!(out.contains("probe asked to panic"), "{out}");
}

#[test]
fn a_hang_is_reported_as_a_timeout() {
    let (result, _) = boot(&["show", "sleep", "600"], |o| {
        o.timeout = Duration::from_secs(30)
    });
    match result {
        Err(Error::Timeout { secs, cpus, tail }) => {
            assert_eq!(secs, 30);
            // QEMU's monitor was read before the guest was stopped: both CPUs, idle in the
            // kernel (at EL2 under VHE), named from the symbols the boot cached if need be.
            let lines: Vec<&str> = cpus.lines().collect();
            assert_eq!(lines.len(), 2, "{cpus}");
            for (cpu, line) in lines.iter().enumerate() {
                assert!(
                    line.starts_with(&format!("CPU {cpu}: EL2h pc ffff")),
                    "{cpus}"
                );
                assert!(line.contains("+0x"), "{cpus}");
            }
            // The binary had started: its output is in the tail of the message.
            assert!(tail.contains("arg \"sleep\""), "{tail}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn silence_after_a_lockup_report_is_a_hang() {
    // The line the kernel prints (kernel/watchdog.c), here from the probe: what follows it
    // is what the runner judges.
    let (result, _) = boot(
        &[
            "show",
            "Watchdog detected hard LOCKUP on cpu 0",
            "sleep",
            "600",
        ],
        |o| {
            o.timeout = Duration::from_secs(300);
            o.after_lockup = Duration::from_secs(5);
        },
    );
    match result {
        Err(Error::Hung {
            lockup, secs, cpus, ..
        }) => {
            // From the report to the line's end: `show` prints `arg "..."`.
            assert_eq!(lockup, "Watchdog detected hard LOCKUP on cpu 0\"");
            assert_eq!(secs, 5);
            assert!(cpus.contains("\nCPU 1: EL"), "{cpus}");
        }
        other => panic!("expected a hang, got {other:?}"),
    }
}

#[test]
fn output_after_a_lockup_report_keeps_the_run_going() {
    // 9 s of run after the report, never 5 s without output.
    let (result, _) = boot(
        &[
            "show",
            "Watchdog detected hard LOCKUP on cpu 0",
            "sleep",
            "3",
            "show",
            "sleep",
            "3",
            "show",
            "sleep",
            "3",
            "exit",
            "4",
        ],
        |o| o.after_lockup = Duration::from_secs(5),
    );
    assert_eq!(result.expect("a run"), 4);
}
