//! Driving a VMM process as a black box: start it with the payload, find the guest's
//! mailbox in its memory, answer the payload's handshake, poison each fault's page when the
//! guest is ready to touch it, in the scenario's order against the guest's notifications
//! and acknowledgements (`vmm::order`, as for the reference VMM: a notification is the
//! guest's `ExceptionTaken`, an acknowledgement its `ExceptionRecorded` with `ack`), and
//! observe how the process ends. A crash or a hang of the
//! VMM is an outcome; only a failure of the harness itself is an error. Every page
//! poisoned is given back once the VMM is gone, where the host allows it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ras_guest_abi::doorbell::{Doorbell, Event};
use ras_guest_abi::map::{target_window, MAILBOXES_OFFSET, TARGET_BASE};
use ras_guest_abi::Report;

use super::command::{Guest, Launch};
use super::remote::{GuestRam, Remote};
use crate::fault::PoisonedPage;
use crate::scenario::{GuestReport, Outcome, Scenario, VmmEnd};
use crate::vmm::order::{AtReady, Order, Until};
use crate::vmm::plan::plan;
use ras_guest_abi::Params;

/// Bytes kept of each of the VMM's output streams.
const OUTPUT_TAIL: usize = 16 << 10;
/// How long the driver sleeps between two looks at the guest.
const POLL: Duration = Duration::from_millis(1);
/// How long a VMM whose memory the driver failed to reach may take to end.
const ENDING: Duration = Duration::from_secs(2);

/// How long a run may take: `boot` until the guest's mailbox is found, `total` in all.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Until the payload has opened its handshake.
    pub boot: Duration,
    /// The whole run.
    pub total: Duration,
}

/// What the run left besides the outcome: the VMM's output, for people.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// The tail of its standard error.
    pub stderr: String,
    /// The tail of its standard output.
    pub stdout: String,
    /// The guest console, when the VMM wrote it to the console file.
    pub console: String,
}

impl Transcript {
    /// The last `lines` lines of the console, standard output and standard error, labelled.
    pub fn tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, text) in [
            ("console", &self.console),
            ("stdout", &self.stdout),
            ("stderr", &self.stderr),
        ] {
            let kept: Vec<&str> = text.lines().rev().take(lines).collect();
            for line in kept.into_iter().rev() {
                out.push_str(&format!("{name}| {line}\n"));
            }
        }
        out
    }
}

/// Runs `s` on the VMM `launch` starts, in `dir` (the image and console files).
///
/// # Errors
///
/// Only the harness's own failures (cannot write the image, cannot start the program,
/// cannot read the VMM's memory): what the VMM does is the outcome.
pub fn run(
    s: &Scenario,
    launch: impl FnOnce(&Guest) -> Launch,
    dir: &Path,
    limits: Limits,
) -> Result<(Outcome, Transcript), String> {
    let plan = plan(s).map_err(|e| e.to_string())?;
    // No doorbell (the handshake instead) and no tables of the harness's.
    let params: Vec<_> = plan
        .vcpus
        .iter()
        .map(|v| Params {
            doorbell_gpa: 0,
            rsdp_gpa: 0,
            ..v.params
        })
        .collect();
    let acpi = s.firmware == crate::scenario::Firmware::Acpi;
    let guest = Guest {
        image: dir.join("ras-guest.img"),
        bootargs: crate::payload::bootargs(&params),
        ram_mib: Guest::ram_mib(s.guest.memory_mib, acpi),
        vcpus: s.guest.vcpus,
        console: dir.join("console"),
        acpi,
    };
    std::fs::write(&guest.image, crate::payload::IMAGE)
        .map_err(|e| format!("write {}: {e}", guest.image.display()))?;
    let mut vmm = Process::start(&launch(&guest))?;
    let steps = plan.vcpus.iter().map(|v| v.step_faults.clone()).collect();
    let mut session = Session {
        s,
        target_size: plan.target_size,
        page_size: crate::fault::host_page_size() as u64,
        poisoned: Vec::new(),
        reports: vec![None; plan.vcpus.len()],
        order: Order::new(s, steps),
        recorded: vec![false; s.faults.len()],
    };
    let watched = session
        .watch(&mut vmm.child, limits)
        .or_else(|e| ended_meanwhile(&mut vmm.child, e));
    let (status, stdout, stderr) = vmm.end(&session.poisoned)?;
    let timed_out = watched?;
    let transcript = Transcript {
        stderr,
        stdout,
        console: std::fs::read_to_string(&guest.console).unwrap_or_default(),
    };
    let vmm_end = if timed_out {
        VmmEnd::TimedOut
    } else {
        end_of(status, &transcript.stderr)
    };
    let guest = (0..)
        .zip(&session.reports)
        .map(|(v, r)| GuestReport::from_report(v, r.as_ref().unwrap_or(&Report::default())))
        .collect();
    Ok((
        Outcome {
            vmm_end,
            host_signals: Vec::new(),
            guest,
            console: Vec::new(),
        },
        transcript,
    ))
}

/// One run's state on the harness's side.
struct Session<'a> {
    s: &'a Scenario,
    target_size: u64,
    page_size: u64,
    poisoned: Vec<PoisonedPage>,
    /// Each vCPU's report as last read.
    reports: Vec<Option<Report>>,
    /// When each fault may be poisoned and who waits for whom (as the reference VMM).
    order: Order<'a>,
    /// Per fault: the guest read (and, if it acknowledges, acknowledged) its record.
    recorded: Vec<bool>,
}

/// A vCPU's announcement the driver has read and not yet answered.
#[derive(Clone, Copy, Debug)]
enum Held {
    /// Poison `fault`'s page once `after` holds, then answer.
    Poison { fault: usize, after: Until },
    /// Answer once `until` holds.
    Wait(Until),
}

impl Session<'_> {
    /// Answers the guest until the VMM ends (`Ok(false)`) or a limit passes (`Ok(true)`).
    fn watch(&mut self, child: &mut Child, limits: Limits) -> Result<bool, String> {
        let start = Instant::now();
        let (mut remote, mut ram): (Option<Remote>, Option<GuestRam>) = (None, None);
        let vcpus = self.reports.len();
        // Per vCPU: the last announcement answered, and the one read but held.
        let mut acked = vec![0u64; vcpus];
        let mut held: Vec<Option<(u64, Held)>> = vec![None; vcpus];
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(false);
            }
            // Opened once the process is known to be running (it may end at once).
            let remote = match &remote {
                Some(r) => r,
                None => {
                    let opened = Remote::open(child.id()).map_err(|e| match child.try_wait() {
                        Ok(Some(_)) => None,
                        _ => Some(format!("open the VMM's memory: {e}")),
                    });
                    match opened {
                        Ok(r) => remote.insert(r),
                        Err(None) => return Ok(false),
                        Err(Some(why)) => return Err(why),
                    }
                }
            };
            let limit = if ram.is_some() {
                limits.total
            } else {
                limits.boot
            };
            if start.elapsed() > limit {
                return Ok(true);
            }
            let Some(found) = ram.or_else(|| remote.find_guest_ram().ok().flatten()) else {
                std::thread::sleep(POLL);
                continue;
            };
            ram = Some(found);
            let mut answered = false;
            for vcpu in 0..vcpus {
                let pending = match held[vcpu] {
                    Some(h) => Some(h),
                    None => {
                        // A read that fails means the VMM is going: the next round sees it
                        // ended.
                        let Ok(hs) = remote.handshake(&found, vcpu) else {
                            continue;
                        };
                        if hs.seq == acked[vcpu] {
                            continue;
                        }
                        if let Ok(r) = remote.report(&found, vcpu) {
                            self.reports[vcpu] = Some(r);
                        }
                        let event = Doorbell::decode(hs.event);
                        self.announced(remote, &found, vcpu, event)?
                            .map(|h| (hs.seq, h))
                            .or(Some((hs.seq, Held::Wait(Until::Now))))
                    }
                };
                let Some((seq, h)) = pending else { continue };
                if !self.release(remote, &found, h)? {
                    held[vcpu] = Some((seq, h));
                    continue;
                }
                held[vcpu] = None;
                if remote.ack(&found, vcpu, seq).is_ok() {
                    acked[vcpu] = seq;
                    answered = true;
                }
            }
            if !answered {
                std::thread::sleep(POLL);
            }
        }
    }

    /// What vCPU `vcpu`'s announcement `event` asks of the driver before it is answered.
    fn announced(
        &mut self,
        remote: &Remote,
        ram: &GuestRam,
        vcpu: usize,
        event: Doorbell,
    ) -> Result<Option<Held>, String> {
        let v = vcpu as u8;
        Ok(match event.kind() {
            Some(Event::Ready) if vcpu == 0 => {
                let due: Vec<usize> = self.order.before_boot().collect();
                for fault in due {
                    self.poison(remote, ram, fault)?;
                    self.order.poisoned(fault);
                }
                None
            }
            Some(Event::ReadyForFault) => match self.order.at_ready(v, event.step) {
                AtReady::Resume => None,
                AtReady::Poison { fault, after } => Some(Held::Poison { fault, after }),
            },
            Some(Event::ExceptionTaken) => {
                self.order.notified(v);
                self.order.hold_after_notify(v).map(Held::Wait)
            }
            Some(Event::ExceptionRecorded) => {
                if let Some(fault) = self.order.current(v) {
                    self.recorded[fault] = true;
                }
                None
            }
            _ => None,
        })
    }

    /// Whether `h` may be answered now, poisoning first what it says to.
    fn release(&mut self, remote: &Remote, ram: &GuestRam, h: Held) -> Result<bool, String> {
        let until = match h {
            Held::Poison { after, .. } => after,
            Held::Wait(until) => until,
        };
        // The guest acknowledged fault i's record once it read it, asked to acknowledge.
        let acked = |i: usize| self.s.guest.ack && self.recorded.get(i) == Some(&true);
        let acked_now = match until {
            Until::Acked(i) => acked(i),
            _ => false,
        };
        if !self.order.satisfied(until, || acked_now) {
            return Ok(false);
        }
        if let Held::Poison { fault, .. } = h {
            self.poison(remote, ram, fault)?;
            self.order.poisoned(fault);
        }
        Ok(true)
    }

    /// Poisons fault `fault`'s page, once per host page.
    fn poison(&mut self, remote: &Remote, ram: &GuestRam, fault: usize) -> Result<(), String> {
        // The guest's own target window: the scenario's pages are offsets from TARGET_BASE.
        let window = target_window(ram.mailbox - MAILBOXES_OFFSET);
        let gpa = window + (self.s.faults[fault].gpa() - TARGET_BASE);
        // An earlier fault on the same host page poisoned it already.
        let page = ram.hva(gpa - gpa % self.page_size);
        if self.poisoned.iter().any(|p| Some(p.hva as u64) == page) {
            return Ok(());
        }
        let poisoned = remote
            .poison(ram, gpa, self.page_size, window..window + self.target_size)
            .map_err(|e| format!("poison {gpa:#x} in the VMM: {e}"))?;
        self.poisoned.push(poisoned);
        Ok(())
    }
}

/// A VMM process: its own process group, dying with this one, its output kept.
pub struct Process {
    /// The process.
    pub child: Child,
    stdout: Tail,
    stderr: Tail,
}

impl Process {
    /// Starts `l` in a process group of its own that dies with this process.
    ///
    /// # Errors
    ///
    /// The program cannot be started.
    pub fn start(l: &Launch) -> Result<Self, String> {
        let mut command = Command::new(&l.program);
        command
            .args(&l.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: between fork and exec only prctl, which is async-signal-safe, runs:
        // should this harness process die (its parent's timeout), the VMM dies with it.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", l.program.display()))?;
        let stdout = tail_of(child.stdout.take());
        let stderr = tail_of(child.stderr.take());
        Ok(Self {
            child,
            stdout,
            stderr,
        })
    }

    /// Kills what is left of the group, then gives `poisoned` back (the process is gone
    /// first); returns the exit status and the tails of stdout and stderr.
    ///
    /// # Errors
    ///
    /// The process cannot be waited for.
    pub fn end(
        mut self,
        poisoned: &[PoisonedPage],
    ) -> Result<(ExitStatus, String, String), String> {
        let _ = kill_group(&self.child);
        let status = self
            .child
            .wait()
            .map_err(|e| format!("wait for the VMM: {e}"))?;
        let given_back = crate::fault::unpoison::unpoison(poisoned);
        for kept in &given_back.kept {
            eprintln!(
                "ras-harness: page {:#x?} stays poisoned: {:?}",
                kept.page.pfn, kept.why
            );
        }
        Ok((status, joined(self.stdout), joined(self.stderr)))
    }
}

/// A failure to reach the VMM's memory while the VMM was ending (one vCPU's error stops
/// it while another's page is being poisoned) is its end, not the harness's failure.
pub fn ended_meanwhile(child: &mut Child, e: String) -> Result<bool, String> {
    let start = Instant::now();
    while start.elapsed() < ENDING {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
    Err(e)
}

/// How the VMM's exit status reads: exit 0 completed; another status a stop, with the last
/// line it wrote on stderr; a signal a kill.
pub fn end_of(status: ExitStatus, stderr: &str) -> VmmEnd {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        return VmmEnd::Killed { signal };
    }
    match status.code() {
        Some(0) => VmmEnd::Completed,
        code => {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            VmmEnd::Stopped {
                message: format!(
                    "{} (exit status {})",
                    last.unwrap_or("no message").trim(),
                    code.map_or("?".into(), |c| c.to_string())
                ),
            }
        }
    }
}

fn kill_group(child: &Child) -> std::io::Result<()> {
    let pgid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    // SAFETY: signals the process group the child leads (process_group(0) at spawn); no
    // memory is passed.
    if unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

type Tail = (Arc<Mutex<Vec<u8>>>, Option<JoinHandle<()>>);

/// Reads `stream` to its end in a thread, keeping the last [`OUTPUT_TAIL`] bytes.
fn tail_of(stream: Option<impl Read + Send + 'static>) -> Tail {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let handle = stream.map(|mut stream| {
        let kept = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                k.extend_from_slice(&buf[..n]);
                let excess = k.len().saturating_sub(OUTPUT_TAIL);
                k.drain(..excess);
            }
        })
    });
    (kept, handle)
}

fn joined((kept, handle): Tail) -> String {
    if let Some(h) = handle {
        let _ = h.join();
    }
    let k = kept.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&k).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_statuses_read_as_vmm_ends() {
        assert_eq!(end_of(ExitStatus::from_raw(0), ""), VmmEnd::Completed);
        assert_eq!(
            end_of(
                ExitStatus::from_raw(1 << 8),
                "warning\nqemu-system-aarch64: Hardware memory error!\n\n"
            ),
            VmmEnd::Stopped {
                message: "qemu-system-aarch64: Hardware memory error! (exit status 1)".into()
            }
        );
        assert_eq!(
            end_of(ExitStatus::from_raw(7), "anything"),
            VmmEnd::Killed { signal: 7 }
        );
    }
}
