//! The guest console as the host sees it: the binary's output, passed through live, and
//! init's marker line with the exit status, taken out.
//!
//! init prints "\n<marker> exit <status>\n" (or "... error <message>") after the binary
//! ends; the marker carries a per-run random part, so output cannot fake it. Carriage
//! returns are dropped. A partial line is passed on at once unless it may be the start of
//! the marker, so progress without newlines shows live.

use std::collections::VecDeque;
use std::io::Write;

/// How many console lines an error message shows.
const TAIL_LINES: usize = 40;

/// What the guest kernel prints, even at loglevel 1, when a CPU stops taking interrupts or
/// stops scheduling (kernel/watchdog.c, pr_emerg).
const LOCKUPS: &[&str] = &["Watchdog detected hard LOCKUP", "BUG: soft lockup"];

/// What init reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    Exit(i32),
    InitError(String),
}

pub struct Console {
    marker: String,
    /// The current line so far.
    line: Vec<u8>,
    /// How much of it has been passed on already (0: none, so it may still be the marker).
    streamed: usize,
    /// An empty line held back: init's "\n" before the marker is not the binary's.
    blank_held: bool,
    tail: VecDeque<String>,
    report: Option<Report>,
    /// The first lockup the kernel reported.
    lockup: Option<String>,
}

impl Console {
    pub fn new(marker: &str) -> Console {
        Console {
            marker: marker.to_owned(),
            line: Vec::new(),
            streamed: 0,
            blank_held: false,
            tail: VecDeque::new(),
            report: None,
            lockup: None,
        }
    }

    /// Takes console bytes, writing what belongs to the binary to `out`.
    /// After the report only the kernel's power-off message can follow: it goes to the
    /// tail only.
    pub fn feed(&mut self, bytes: &[u8], out: &mut dyn Write) {
        let mut sink = std::io::sink();
        for &b in bytes {
            match b {
                b'\r' => {}
                b'\n' if self.report.is_some() => self.end_line(&mut sink),
                b'\n' => self.end_line(out),
                _ => self.line.push(b),
            }
        }
        let out: &mut dyn Write = if self.report.is_some() {
            &mut sink
        } else {
            out
        };
        if self.line.len() > self.streamed && (self.streamed > 0 || !self.may_be_marker()) {
            if self.streamed == 0 {
                self.release_blank(out);
            }
            let _ = out.write_all(&self.line[self.streamed..]);
            self.streamed = self.line.len();
        }
        let _ = out.flush();
    }

    /// The exit status or init's error, once seen.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    /// The kernel's first lockup report, once seen.
    pub fn lockup(&self) -> Option<&str> {
        self.lockup.as_deref()
    }

    /// The last lines, for error messages.
    pub fn tail(&self) -> String {
        let mut t: Vec<String> = self.tail.iter().cloned().collect();
        if !self.line.is_empty() {
            t.push(String::from_utf8_lossy(&self.line).into_owned());
        }
        t.join("\n")
    }

    fn may_be_marker(&self) -> bool {
        let m = self.marker.as_bytes();
        m.starts_with(&self.line) || self.line.starts_with(m)
    }

    fn end_line(&mut self, out: &mut dyn Write) {
        let line = std::mem::take(&mut self.line);
        let streamed = std::mem::replace(&mut self.streamed, 0);
        let text = String::from_utf8_lossy(&line).into_owned();
        if streamed == 0 {
            if let Some(rest) = text.strip_prefix(self.marker.as_str()) {
                self.blank_held = false;
                self.report = Some(parse_report(rest.trim()));
                return;
            }
            self.release_blank(out);
            if line.is_empty() {
                self.blank_held = true;
                self.push_tail(text);
                return;
            }
        }
        let _ = out.write_all(&line[streamed..]);
        let _ = out.write_all(b"\n");
        self.push_tail(text);
    }

    fn release_blank(&mut self, out: &mut dyn Write) {
        if std::mem::take(&mut self.blank_held) {
            let _ = out.write_all(b"\n");
        }
    }

    fn push_tail(&mut self, line: String) {
        if self.lockup.is_none() {
            self.lockup = LOCKUPS
                .iter()
                .find_map(|l| line.find(l))
                .map(|at| line[at..].trim_end().to_owned());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

fn parse_report(rest: &str) -> Report {
    match rest.split_once(' ') {
        Some(("exit", code)) => match code.trim().parse() {
            Ok(c) => Report::Exit(c),
            Err(_) => Report::InitError(format!("malformed exit status {code:?}")),
        },
        Some(("error", message)) => Report::InitError(message.to_owned()),
        _ => Report::InitError(format!("malformed report {rest:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (String, Console) {
        let mut c = Console::new("EMUHOST-1234");
        let mut out = Vec::new();
        for ch in chunks {
            c.feed(ch, &mut out);
        }
        (String::from_utf8(out).unwrap(), c)
    }

    #[test]
    fn marker_is_taken_out_with_its_blank_line() {
        let (out, c) = run(&[
            b"hello\r\nworld\n",
            b"\nEMUHOST-12",
            b"34 exit 7\n[    3.59] reboot: Power down\n",
        ]);
        assert_eq!(out, "hello\nworld\n");
        assert_eq!(c.report(), Some(&Report::Exit(7)));
    }

    #[test]
    fn partial_lines_stream_and_blank_lines_survive() {
        let mut c = Console::new("EMUHOST-1234");
        let mut out = Vec::new();
        c.feed(b"test a ... ", &mut out);
        assert_eq!(out, b"test a ... ", "a partial line shows at once");
        c.feed(b"ok\n\n\nEMUHOST-1234 exit 0\n", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "test a ... ok\n\n");
        assert_eq!(c.report(), Some(&Report::Exit(0)));
        assert_eq!(c.tail(), "test a ... ok\n\n");
    }

    #[test]
    fn lookalikes_and_errors() {
        let (out, c) = run(&[
            b"EMUHOST-9999 exit 0\n",
            b"EMUHOST-1234 error mount 9p: No such device\n",
        ]);
        assert_eq!(out, "EMUHOST-9999 exit 0\n");
        assert_eq!(
            c.report(),
            Some(&Report::InitError("mount 9p: No such device".into()))
        );
        assert_eq!(c.lockup(), None);
        let (_, c) = run(&[b"Kernel panic - not syncing: x\n", b"---[ end"]);
        assert_eq!(c.report(), None);
        assert_eq!(c.tail(), "Kernel panic - not syncing: x\n---[ end");
    }

    #[test]
    fn the_first_lockup_is_kept() {
        let (out, c) = run(&[
            b"test a ... [   84.212173] watchdog: Watchdog detected hard LOCKUP on cpu 0\n",
            b"[  110.1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [x:1]\n",
        ]);
        assert!(out.contains("hard LOCKUP"), "passed on like any output");
        assert_eq!(c.lockup(), Some("Watchdog detected hard LOCKUP on cpu 0"));
    }
}
