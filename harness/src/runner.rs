//! Running one scenario in its own process. Poison is permanent and a SIGBUS can kill, so
//! each scenario runs in a child (`ras-harness __exec FILE --vmm NAME`, [`exec_line`]) that
//! prints one JSON line; [`run_isolated`] enforces a timeout, turns a crash, a signal or
//! garbage into [`Verdict::Error`] with the tail of the child's stderr, and judges the
//! outcome: the reference VMM by the scenario's `expect`, any other VMM by the
//! [conformance rules](crate::conformance), which every payload's outcome is also checked
//! against; a Linux guest's by the scenario's `expect` on any VMM.
//!
//! The reference VMM runs in that child together with the harness code that reads the
//! guest's report, so a crash of the child leaves no observation: it is an error, not an
//! outcome. A VMM driven as a process of its own ends with a
//! [`VmmEnd`](crate::scenario::VmmEnd) (`killed`, `timed-out`) that is judged.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::conformance::{self, Finding};
use crate::crash::{Image, KernelLog};
use crate::report::ScenarioResult;
use crate::scenario::{self, judge, Mismatch, Os, Outcome, Scenario, Verdict};
use crate::sut::Sut;
use crate::vmm::log::VmmLog;

/// Bytes of the child's stderr kept in an error verdict.
const STDERR_TAIL: usize = 2000;
/// How often the parent checks whether the child has ended.
const POLL: Duration = Duration::from_millis(20);
/// Where a killed child's registers can come from when the kernel logged none.
const FATAL_SIGNALS_HINT: &str =
    "with `sysctl kernel.print-fatal-signals=1` it logs the registers of a thread a fatal signal ends";

/// The one line `ras-harness __exec` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecLine {
    /// The run produced an outcome (judged by the parent), and the VMM's own log (not).
    Outcome {
        /// What the guest and the host saw, and how the VMM ended.
        observed: Outcome,
        /// What the reference VMM says it did (other VMMs say nothing the harness reads).
        #[serde(default)]
        vmm_log: Option<VmmLog>,
    },
    /// The host cannot run the scenario, and why.
    Skip(String),
    /// The harness failed, and how.
    Error(String),
}

/// Runs the scenario at `path` on `sut` from this process: what `__exec` prints.
pub fn exec_line(path: &Path, sut: &Sut) -> ExecLine {
    let s = match scenario::load(path) {
        Ok(s) => s,
        Err(e) => return ExecLine::Error(e.to_string()),
    };
    if let Some(why) = sut.cannot_express(&s) {
        return ExecLine::Skip(format!("{sut}: {why}"));
    }
    let host = crate::host::probe();
    let unmet = scenario::requirements(&s).unmet(&host.support);
    if !unmet.is_empty() {
        return ExecLine::Skip(unmet.join("; "));
    }
    match sut {
        Sut::Reference => execute(&s),
        outside => crate::sut::run_outside(&s, outside),
    }
}

#[cfg(target_arch = "aarch64")]
fn execute(s: &Scenario) -> ExecLine {
    use crate::vmm::{execute, ExecError, Options};
    match execute(s, &Options::default()) {
        Ok((observed, vmm_log)) => ExecLine::Outcome {
            observed,
            vmm_log: Some(vmm_log),
        },
        Err(ExecError::Unsupported(why)) => ExecLine::Skip(why),
        Err(ExecError::Failed(why)) => ExecLine::Error(why),
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn execute(_: &Scenario) -> ExecLine {
    ExecLine::Skip(format!(
        "the reference VMM needs an arm64 host with KVM (this is {})",
        std::env::consts::ARCH
    ))
}

/// How the child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildEnd {
    /// Exit status, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// The parent killed it at the timeout.
    pub timed_out: Option<Duration>,
    /// When a signal killed it: what the host kernel logged while it ran, if the log can
    /// be read ([`crate::crash`]).
    pub kernel_log: Option<Vec<String>>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs `exe __exec path --vmm sut` and judges what comes back; never panics.
pub fn run_isolated(exe: &Path, path: &Path, timeout: Duration, sut: &Sut) -> ScenarioResult {
    let start = Instant::now();
    let (name, run) = match scenario::load(path) {
        Err(e) => (stem(path), Interpreted::error(e.to_string())),
        Ok(s) => {
            let run = match spawn(exe, path, timeout, sut) {
                Ok(end) => interpret(&s, &end, sut),
                Err(e) => Interpreted::error(format!("cannot run {}: {e}", exe.display())),
            };
            (s.name, run)
        }
    };
    ScenarioResult {
        scenario: name,
        verdict: run.verdict,
        observed: run.observed,
        vmm_log: run.vmm_log,
        conformance: run.conformance,
        duration: start.elapsed(),
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

fn spawn(exe: &Path, path: &Path, timeout: Duration, sut: &Sut) -> std::io::Result<ChildEnd> {
    let mut kernel_log = KernelLog::from_now();
    let mut child = Command::new(exe)
        .arg("__exec")
        .arg(path)
        .arg("--vmm")
        .arg(sut.arg())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read now: once a signal has killed the child its mappings are gone.
    let image = Image::of(exe, child.id());
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let mut timed_out = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            // Our own child, by its handle: nothing else is signalled.
            let _ = child.kill();
            timed_out = Some(timeout);
            break child.wait()?;
        }
        std::thread::sleep(POLL);
    };
    use std::os::unix::process::ExitStatusExt;
    let kernel_log = match (status.signal(), timed_out, kernel_log.as_mut()) {
        (Some(_), None, Some(log)) => Some(image.name_addresses(log.read())),
        _ => None,
    };
    Ok(ChildEnd {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        kernel_log,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// What a child's run amounts to.
#[derive(Clone, Debug, PartialEq)]
pub struct Interpreted {
    /// The verdict.
    pub verdict: Verdict,
    /// The outcome it was judged on, when there was one.
    pub observed: Option<Outcome>,
    /// The VMM's own log, when there was one.
    pub vmm_log: Option<VmmLog>,
    /// Every conformance rule's finding on the outcome.
    pub conformance: Vec<Finding>,
}

impl Interpreted {
    fn error(why: String) -> Self {
        Self::without_outcome(Verdict::Error(why))
    }

    fn without_outcome(verdict: Verdict) -> Self {
        Self {
            verdict,
            observed: None,
            vmm_log: None,
            conformance: Vec::new(),
        }
    }
}

/// The verdict on what a child left behind: for the reference VMM, `s.expect`; for any
/// other, the conformance rules.
pub fn interpret(s: &Scenario, end: &ChildEnd, sut: &Sut) -> Interpreted {
    let tail = || {
        let e = end.stderr.trim_end();
        let cut = e.len().saturating_sub(STDERR_TAIL);
        let cut = (cut..=e.len())
            .find(|&i| e.is_char_boundary(i))
            .unwrap_or(e.len());
        // A panic's message is at the top, a backtrace may follow: keep both ends.
        let panic = e
            .lines()
            .position(|l| l.contains("panicked at"))
            .filter(|_| cut > 0)
            .map(|at| e.lines().skip(at).take(2).collect::<Vec<_>>().join(" "));
        match panic {
            _ if e.is_empty() => String::from("(no stderr)"),
            Some(p) => format!("stderr: {p} ... {}", &e[cut..]),
            None => format!("stderr: {}", &e[cut..]),
        }
    };
    if let Some(t) = end.timed_out {
        return Interpreted::error(format!("timed out after {} s; {}", t.as_secs(), tail()));
    }
    let line = end.stdout.lines().rev().find(|l| !l.trim().is_empty());
    if let Some(sig) = end.signal {
        // Whether it died before or after its work: the result line is not judged either way.
        let when = match line.map(serde_json::from_str::<ExecLine>) {
            Some(Ok(_)) => " after printing its result line",
            _ => "",
        };
        let kernel = match end.kernel_log.as_deref() {
            None => String::new(),
            Some([]) => format!("; the host kernel logged nothing ({FATAL_SIGNALS_HINT})"),
            Some(lines) => format!("; the host kernel logged:\n  {}", lines.join("\n  ")),
        };
        return Interpreted::error(format!(
            "__exec was killed by signal {sig}{when}; {}{kernel}",
            tail()
        ));
    }
    match line.map(serde_json::from_str::<ExecLine>) {
        Some(Ok(ExecLine::Outcome { observed, vmm_log })) => {
            // The rules judge what the payload reports; a Linux guest's console is judged
            // by the scenario's expect, on whichever VMM ran it.
            let linux = s.guest.os == Os::Linux;
            let findings = if linux {
                Vec::new()
            } else {
                conformance::check(s, &observed)
            };
            let verdict = match conformance::failures(&findings) {
                _ if linux || *sut == Sut::Reference => judge(s, &observed),
                None => Verdict::Pass,
                Some(_) => Verdict::Fail(
                    findings
                        .iter()
                        .filter(|f| f.result == conformance::Judged::Fail)
                        .map(|f| Mismatch {
                            field: format!("conformance.{}", f.rule),
                            expected: "pass".into(),
                            observed: f.reason.clone().unwrap_or_default(),
                        })
                        .collect(),
                ),
            };
            Interpreted {
                verdict,
                observed: Some(observed),
                vmm_log,
                conformance: findings,
            }
        }
        Some(Ok(ExecLine::Skip(why))) => Interpreted::without_outcome(Verdict::Skip(why)),
        Some(Ok(ExecLine::Error(why))) => Interpreted::error(why),
        Some(Err(e)) => Interpreted::error(format!(
            "__exec printed no result line ({e}), exit status {:?}; {}",
            end.code,
            tail()
        )),
        None => Interpreted::error(format!(
            "__exec printed nothing, exit status {:?}; {}",
            end.code,
            tail()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{parse, VmmEnd};

    fn scenario() -> Scenario {
        parse(
            Path::new("t.json"),
            r#"{"firmware":"dtb","faults":[],"expect":{"outcome":"guest-unaffected"}}"#,
            "t",
        )
        .unwrap()
    }

    fn end(stdout: &str) -> ChildEnd {
        ChildEnd {
            code: Some(0),
            signal: None,
            timed_out: None,
            kernel_log: None,
            stdout: stdout.into(),
            stderr: "line 1\nthe last words\n".into(),
        }
    }

    #[test]
    fn an_outcome_line_is_judged_and_skip_and_error_pass_through() {
        let o = Outcome {
            vmm_end: VmmEnd::Completed,
            host_signals: vec![],
            guest: vec![],
            console: Vec::new(),
        };
        let line = serde_json::to_string(&ExecLine::Outcome {
            observed: o.clone(),
            vmm_log: Some(VmmLog::default()),
        })
        .unwrap();
        assert!(line.starts_with(r#"{"outcome":{"observed":{"#), "{line}");
        let r = interpret(
            &scenario(),
            &end(&format!("noise\n{line}\n")),
            &Sut::Reference,
        );
        assert_eq!((r.verdict, r.observed), (Verdict::Pass, Some(o)));
        assert_eq!(r.vmm_log, Some(VmmLog::default()));
        let r = interpret(
            &scenario(),
            &end(r#"{"skip":"no /dev/kvm"}"#),
            &Sut::Reference,
        );
        assert_eq!(r.verdict, Verdict::Skip("no /dev/kvm".into()));
        let r = interpret(
            &scenario(),
            &end(r#"{"error":"mmap failed"}"#),
            &Sut::Reference,
        );
        assert_eq!(r.verdict, Verdict::Error("mmap failed".into()));
    }

    /// A Linux guest's run is judged by its scenario's `expect` on any VMM; the conformance
    /// rules, about the payload's reports, say nothing of it.
    #[test]
    fn a_linux_guest_is_judged_by_its_expect_on_any_vmm() {
        let s = scenario::load(Path::new("../scenarios/linux/el0-load-dtb.json")).unwrap();
        let line = |vmm_end: VmmEnd| {
            serde_json::to_string(&ExecLine::Outcome {
                observed: Outcome {
                    vmm_end,
                    host_signals: vec![],
                    guest: vec![],
                    console: vec!["ras-linux: ready access=load".into()],
                },
                vmm_log: None,
            })
            .unwrap()
        };
        let qemu = Sut::QemuDebian(emuhost::QemuSuite::Sid);
        let stopped = VmmEnd::Stopped {
            message: "Hardware memory error!".into(),
        };
        let r = interpret(&s, &end(&line(stopped)), &qemu);
        assert_eq!((r.verdict, r.conformance), (Verdict::Pass, vec![]));
        let r = interpret(&s, &end(&line(VmmEnd::Completed)), &qemu);
        assert!(
            matches!(&r.verdict, Verdict::Fail(m) if m[0].field == "expect.outcome"),
            "{:?}",
            r.verdict
        );
    }

    #[test]
    fn garbage_signals_and_timeouts_are_errors_with_the_stderr_tail() {
        let r = interpret(&scenario(), &end("not json"), &Sut::Reference);
        assert!(r.observed.is_none());
        let v = r.verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("no result line") && r.contains("the last words")),
            "{v:?}"
        );
        let mut panicked = end("");
        panicked.code = Some(101);
        panicked.stderr = format!(
            "thread 'main' panicked at src/x.rs:1:1:\nattempt to subtract with overflow\n{}",
            "  frame\n".repeat(1000)
        );
        let v = interpret(&scenario(), &panicked, &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("panicked at src/x.rs:1:1: attempt to subtract")),
            "{v:?}"
        );
        let mut killed = end("");
        killed.signal = Some(7);
        killed.code = None;
        let v = interpret(&scenario(), &killed, &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("signal 7") && !r.contains("kernel")),
            "{v:?}"
        );
        killed.stdout = serde_json::to_string(&ExecLine::Skip("x".into())).unwrap();
        let v = interpret(&scenario(), &killed, &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("signal 7 after printing its result line")),
            "{v:?}"
        );
        killed.kernel_log = Some(Vec::new());
        let v = interpret(&scenario(), &killed, &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.ends_with(&format!("logged nothing ({FATAL_SIGNALS_HINT})"))),
            "{v:?}"
        );
        killed.kernel_log = Some(vec![
            "CPU: 1 PID: 9 Comm: vcpu0".into(),
            "pc : 0 f+0x4".into(),
        ]);
        let v = interpret(&scenario(), &killed, &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.ends_with("logged:\n  CPU: 1 PID: 9 Comm: vcpu0\n  pc : 0 f+0x4")),
            "{v:?}"
        );
        let mut slow = end("");
        slow.timed_out = Some(Duration::from_secs(3));
        let v = interpret(&scenario(), &slow, &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.starts_with("timed out after 3 s")),
            "{v:?}"
        );
        let v = interpret(&scenario(), &end(""), &Sut::Reference).verdict;
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("printed nothing")),
            "{v:?}"
        );
    }

    #[test]
    fn a_missing_executable_or_file_is_an_error_not_a_panic() {
        let r = run_isolated(
            Path::new("/nonexistent/ras-harness"),
            Path::new("/nonexistent/x.json"),
            Duration::from_secs(1),
            &Sut::Reference,
        );
        assert_eq!(r.scenario, "x");
        assert!(matches!(r.verdict, Verdict::Error(_)));
        let dir = std::env::temp_dir().join(format!("ras-runner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ok.json");
        std::fs::write(
            &file,
            r#"{"firmware":"dtb","faults":[],"expect":{"outcome":"guest-unaffected"}}"#,
        )
        .unwrap();
        let r = run_isolated(
            Path::new("/nonexistent/ras-harness"),
            &file,
            Duration::from_secs(1),
            &Sut::Reference,
        );
        assert!(
            matches!(&r.verdict, Verdict::Error(m) if m.contains("cannot run")),
            "{r:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
