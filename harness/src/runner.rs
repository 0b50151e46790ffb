//! Running one scenario in its own process. Poison is permanent and a SIGBUS can kill, so
//! each scenario runs in a child (`ras-harness __exec FILE`, [`exec_line`]) that prints one
//! JSON line; [`run_isolated`] enforces a timeout, turns a crash, a signal or garbage into
//! [`Verdict::Error`] with the tail of the child's stderr, and judges the outcome.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::report::ScenarioResult;
use crate::scenario::{self, judge, Outcome, Scenario, Verdict};

/// Bytes of the child's stderr kept in an error verdict.
const STDERR_TAIL: usize = 2000;
/// How often the parent checks whether the child has ended.
const POLL: Duration = Duration::from_millis(20);

/// The one line `ras-harness __exec` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecLine {
    /// The run produced an outcome (judged by the parent).
    Outcome(Outcome),
    /// The host cannot run the scenario, and why.
    Skip(String),
    /// The harness failed, and how.
    Error(String),
}

/// Runs the scenario at `path` in this process: what `__exec` prints.
pub fn exec_line(path: &Path) -> ExecLine {
    let s = match scenario::load(path) {
        Ok(s) => s,
        Err(e) => return ExecLine::Error(e.to_string()),
    };
    let host = crate::host::probe();
    let unmet = scenario::requirements(&s).unmet(&host.support);
    if !unmet.is_empty() {
        return ExecLine::Skip(unmet.join("; "));
    }
    execute(&s)
}

#[cfg(target_arch = "aarch64")]
fn execute(s: &Scenario) -> ExecLine {
    use crate::vmm::{execute, ExecError, Options};
    match execute(s, &Options::default()) {
        Ok(outcome) => ExecLine::Outcome(outcome),
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
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs `exe __exec path` and judges what comes back; never panics.
pub fn run_isolated(exe: &Path, path: &Path, timeout: Duration) -> ScenarioResult {
    let start = Instant::now();
    let (name, verdict, observed) = match scenario::load(path) {
        Err(e) => (stem(path), Verdict::Error(e.to_string()), None),
        Ok(s) => {
            let (verdict, observed) = match spawn(exe, path, timeout) {
                Ok(end) => interpret(&s, &end),
                Err(e) => (
                    Verdict::Error(format!("cannot run {}: {e}", exe.display())),
                    None,
                ),
            };
            (s.name, verdict, observed)
        }
    };
    ScenarioResult {
        scenario: name,
        verdict,
        observed,
        duration: start.elapsed(),
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

fn spawn(exe: &Path, path: &Path, timeout: Duration) -> std::io::Result<ChildEnd> {
    let mut child = Command::new(exe)
        .arg("__exec")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
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
    Ok(ChildEnd {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// The verdict on what a child left behind.
pub fn interpret(s: &Scenario, end: &ChildEnd) -> (Verdict, Option<Outcome>) {
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
        return (
            Verdict::Error(format!("timed out after {} s; {}", t.as_secs(), tail())),
            None,
        );
    }
    if let Some(sig) = end.signal {
        return (
            Verdict::Error(format!("__exec was killed by signal {sig}; {}", tail())),
            None,
        );
    }
    let line = end.stdout.lines().rev().find(|l| !l.trim().is_empty());
    match line.map(serde_json::from_str::<ExecLine>) {
        Some(Ok(ExecLine::Outcome(o))) => (judge(s, &o), Some(o)),
        Some(Ok(ExecLine::Skip(why))) => (Verdict::Skip(why), None),
        Some(Ok(ExecLine::Error(why))) => (Verdict::Error(why), None),
        Some(Err(e)) => (
            Verdict::Error(format!(
                "__exec printed no result line ({e}), exit status {:?}; {}",
                end.code,
                tail()
            )),
            None,
        ),
        None => (
            Verdict::Error(format!(
                "__exec printed nothing, exit status {:?}; {}",
                end.code,
                tail()
            )),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{parse, Exit};

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
            stdout: stdout.into(),
            stderr: "line 1\nthe last words\n".into(),
        }
    }

    #[test]
    fn an_outcome_line_is_judged_and_skip_and_error_pass_through() {
        let o = Outcome {
            exit: Exit::Completed,
            host_signals: vec![],
            injection: vec![],
            cper: vec![],
            guest: vec![],
        };
        let line = serde_json::to_string(&ExecLine::Outcome(o.clone())).unwrap();
        assert!(line.starts_with(r#"{"outcome":{"#), "{line}");
        let (v, observed) = interpret(&scenario(), &end(&format!("noise\n{line}\n")));
        assert_eq!((v, observed), (Verdict::Pass, Some(o)));
        let (v, _) = interpret(&scenario(), &end(r#"{"skip":"no /dev/kvm"}"#));
        assert_eq!(v, Verdict::Skip("no /dev/kvm".into()));
        let (v, _) = interpret(&scenario(), &end(r#"{"error":"mmap failed"}"#));
        assert_eq!(v, Verdict::Error("mmap failed".into()));
    }

    #[test]
    fn garbage_signals_and_timeouts_are_errors_with_the_stderr_tail() {
        let (v, o) = interpret(&scenario(), &end("not json"));
        assert!(o.is_none());
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
        let (v, _) = interpret(&scenario(), &panicked);
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("panicked at src/x.rs:1:1: attempt to subtract")),
            "{v:?}"
        );
        let mut killed = end("");
        killed.signal = Some(7);
        killed.code = None;
        let (v, _) = interpret(&scenario(), &killed);
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains("signal 7")),
            "{v:?}"
        );
        let mut slow = end("");
        slow.timed_out = Some(Duration::from_secs(3));
        let (v, _) = interpret(&scenario(), &slow);
        assert!(
            matches!(&v, Verdict::Error(r) if r.starts_with("timed out after 3 s")),
            "{v:?}"
        );
        let (v, _) = interpret(&scenario(), &end(""));
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
        );
        assert!(
            matches!(&r.verdict, Verdict::Error(m) if m.contains("cannot run")),
            "{r:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
