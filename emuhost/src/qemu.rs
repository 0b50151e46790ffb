//! QEMU: found or installed, and the emulated arm64 KVM host booted with it.
//!
//! The machine: `-M virt,virtualization=on,gic-version=3 -cpu max` (TCG, EL2 and FEAT_RAS
//! emulated, so the guest kernel runs KVM in VHE mode), 2 vCPUs, 2 GiB, no NIC (QEMU 7.2
//! would look for efi-virtio.rom), the shared directories as virtio-9p-pci devices.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::console::{Console, Report};
use crate::error::Error;
use crate::monitor::{self, Monitor, Symbols};
use crate::progress;

/// Overrides the QEMU binary.
pub const QEMU_VAR: &str = "RAS_EMU_QEMU";
const QEMU: &str = "qemu-system-aarch64";

/// The QEMU to use: RAS_EMU_QEMU, else qemu-system-aarch64 on PATH, else Debian's
/// qemu-system-arm installed with apt-get (as root).
pub fn find_or_install() -> Result<PathBuf, Error> {
    if let Some(q) = std::env::var_os(QEMU_VAR) {
        return Ok(q.into());
    }
    if let Some(q) = on_path(QEMU) {
        return Ok(q);
    }
    if !crate::native::is_root() || on_path("apt-get").is_none() {
        return Err(Error::Setup(format!(
            "{QEMU} not found; install it (Debian: apt-get install --no-install-recommends \
             qemu-system-arm) or point {QEMU_VAR} at it"
        )));
    }
    progress!("installing qemu-system-arm with apt-get (once)");
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "qemu-system-arm",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        progress!("apt-get install failed; running apt-get update and trying again");
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        if !install() {
            return Err(Error::Setup(
                "apt-get install qemu-system-arm failed".into(),
            ));
        }
    }
    on_path(QEMU).ok_or(Error::Setup(format!(
        "qemu-system-arm installed but {QEMU} is not on PATH"
    )))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// QEMU's (major, minor) version from `--version`.
pub fn version(qemu: &Path) -> Option<(u32, u32)> {
    let out = Command::new(qemu).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// One boot.
pub struct Boot<'a> {
    pub qemu: &'a Path,
    pub image: &'a Path,
    pub initrd: &'a Path,
    /// (mount tag, host directory).
    pub shares: &'a [(String, PathBuf)],
    pub marker: &'a str,
    pub timeout: Duration,
    /// How long the console may stay silent after the kernel reported a lockup.
    pub after_lockup: Duration,
    /// Where QEMU's monitor listens, to read the CPUs' registers when the guest hangs.
    pub monitor: &'a Monitor,
    /// The kernel's text symbols ([`crate::Kernel::symbols`]), to name a hang's PCs.
    pub symbols: &'a Path,
    /// The kernel's `uname -r`, for naming them elsewhere when there are none.
    pub release: &'a str,
    /// 1 GiB huge pages to reserve at boot, on top of the 2 GiB of RAM.
    pub gigantic: u32,
}

impl Boot<'_> {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.qemu);
        // pauth-impdef (QEMU >= 6.0) swaps QARMA for a cheap pointer-authentication hash:
        // about half the boot time under TCG, invisible to what the tests observe.
        let cpu = match version(self.qemu) {
            Some(v) if v >= (6, 0) => "max,pauth-impdef=on",
            _ => "max",
        };
        // thread=single: both vCPUs on one host thread, taking turns. With a thread each
        // (MTTCG) QEMU 7.2 failed about one run in 2,000 scenarios: a vCPU thread back from
        // KVM_RUN with the guest's TPIDR_EL0, or a CPU looping on an exception at EL2
        // (docs/ras-facts.md §10). Taking turns costs about 1.2x in wall time.
        cmd.args(["-M", "virt,virtualization=on,gic-version=3", "-cpu", cpu])
            .args(["-smp", "2", "-accel", "tcg,thread=single"])
            .arg("-m")
            .arg(format!("{}G", 2 + self.gigantic))
            .args(["-nographic", "-nic", "none", "-no-reboot"])
            .arg("-monitor")
            .arg(self.monitor.arg())
            .arg("-kernel")
            .arg(self.image)
            .arg("-initrd")
            .arg(self.initrd)
            // panic=-1: reboot at once on a panic, which -no-reboot turns into QEMU's exit.
            // loglevel=1: only emergencies (panics, lockups) reach the console among the
            // output. nokaslr: the kernel at the same addresses in every boot, so that the
            // symbols one boot cached name another's PCs. print-fatal-signals=1: a process a
            // fatal signal ends leaves its registers in the kernel log, where the harness
            // reads a crashed child's (ras_harness::crash).
            .arg("-append")
            .arg(self.append());
        for (i, (tag, dir)) in self.shares.iter().enumerate() {
            let mut fsdev = std::ffi::OsString::from(format!(
                "local,id=fs{i},security_model=none,multidevs=remap,path="
            ));
            // QEMU's option parser reads ',' as a separator; ",," is a literal comma.
            fsdev.push(dir.to_string_lossy().replace(',', ",,"));
            cmd.arg("-fsdev").arg(fsdev);
            cmd.arg("-device")
                .arg(format!("virtio-9p-pci,fsdev=fs{i},mount_tag={tag}"));
        }
        cmd
    }

    /// The kernel command line. Gigantic pages can only be relied on when reserved at boot
    /// (Documentation/admin-guide/kernel-parameters.txt, `hugepagesz=` then `hugepages=`).
    fn append(&self) -> String {
        let mut line =
            "console=ttyAMA0 panic=-1 quiet loglevel=1 nokaslr print-fatal-signals=1".to_owned();
        if self.gigantic > 0 {
            line.push_str(&format!(" hugepagesz=1G hugepages={}", self.gigantic));
        }
        line
    }

    /// Boots, streams the console to `out` and returns the binary's exit status.
    pub fn run(&self, out: &mut dyn Write) -> Result<i32, Error> {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Qemu {
                message: format!("cannot start {}: {e}", self.qemu.display()),
                tail: String::new(),
            })?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut stdout = child
            .stdout
            .take()
            .ok_or(Error::Setup("no QEMU stdout".into()))?;
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child
            .stderr
            .take()
            .ok_or(Error::Setup("no QEMU stderr".into()))?;
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });

        let mut console = Console::new(self.marker);
        let deadline = Instant::now() + self.timeout;
        // After the report, power-off should follow promptly.
        let mut grace: Option<Instant> = None;
        let mut last_output = Instant::now();
        let end = loop {
            let now = Instant::now();
            let hung_at = console
                .lockup()
                .filter(|_| grace.is_none())
                .map(|_| last_output + self.after_lockup);
            let until = match grace {
                Some(g) if now >= g => break End::Reported,
                Some(g) => g,
                None if now >= deadline => break End::TimedOut,
                None if hung_at.is_some_and(|h| now >= h) => break End::Hung,
                None => hung_at.map_or(deadline, |h| h.min(deadline)),
            };
            match rx.recv_timeout(until - now) {
                Ok(bytes) => {
                    last_output = Instant::now();
                    let seen = console.lockup().is_some();
                    console.feed(&bytes, out);
                    if console.report().is_some() && grace.is_none() {
                        grace = Some(Instant::now() + Duration::from_secs(10));
                    }
                    if let Some(lockup) = console.lockup().filter(|_| !seen) {
                        progress!(
                            "the emulated host's kernel reported \"{lockup}\"; its CPUs \
                             then:\n{}",
                            self.cpus()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break End::Exited,
            }
        };
        // Read before QEMU is killed: where a hung guest's CPUs are.
        let cpus = match end {
            End::TimedOut | End::Hung => self.cpus(),
            End::Exited | End::Reported => String::new(),
        };
        let status = finish(&mut child, !matches!(end, End::Exited) || grace.is_some());
        let _ = reader.join();
        let stderr = errors.join().unwrap_or_default();
        let tail = console.tail();
        match end {
            End::TimedOut => {
                return Err(Error::Timeout {
                    secs: self.timeout.as_secs(),
                    cpus,
                    tail,
                })
            }
            End::Hung => {
                return Err(Error::Hung {
                    lockup: console.lockup().unwrap_or_default().to_owned(),
                    secs: self.after_lockup.as_secs(),
                    cpus,
                    tail,
                })
            }
            End::Exited | End::Reported => {}
        }
        match console.report() {
            Some(Report::Exit(code)) => Ok(*code),
            Some(Report::InitError(message)) => Err(Error::Init {
                message: message.clone(),
                tail,
            }),
            None if tail.contains("Kernel panic") => Err(Error::KernelPanic { tail }),
            None => match status {
                Some(s) if !s.success() => Err(Error::Qemu {
                    message: format!("exited with {s}: {}", stderr.trim()),
                    tail,
                }),
                _ => Err(Error::NoStatus { tail }),
            },
        }
    }

    /// One line per CPU from QEMU's monitor, or why it could not be read.
    fn cpus(&self) -> String {
        let registers = match self.monitor.registers() {
            Ok(r) => r,
            Err(e) => return e,
        };
        match Symbols::read(self.symbols) {
            Some(symbols) => monitor::summary(&registers, Some(&symbols)),
            // Debian's kernel packages hold a placeholder System.map; the real one is in
            // the -dbg package.
            None => format!(
                "{}\n(no symbols cached: System.map in Debian's linux-image-{}-dbg names \
                 these addresses, the kernel's link addresses)",
                monitor::summary(&registers, None),
                self.release
            ),
        }
    }
}

/// How the wait for the guest ended.
enum End {
    /// QEMU closed its output.
    Exited,
    /// Init reported and the grace for the power-off passed.
    Reported,
    TimedOut,
    /// The kernel reported a lockup and the console then stayed silent.
    Hung,
}

/// Waits for QEMU to end, killing it first if `kill`; None if it could not be waited for.
fn finish(child: &mut Child, kill: bool) -> Option<std::process::ExitStatus> {
    if kill {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        let _ = child.kill();
    }
    child.wait().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let text = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright";
        assert_eq!(parse_version(text), Some((7, 2)));
        assert_eq!(parse_version("QEMU emulator version 10.0.2"), Some((10, 0)));
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn gigantic_pages_add_ram_and_boot_parameters() {
        let path = Path::new("x");
        let monitor = Monitor::new("/nonexistent/monitor".into());
        let boot = |gigantic| Boot {
            qemu: path,
            image: path,
            initrd: path,
            shares: &[],
            marker: "",
            timeout: Duration::from_secs(1),
            after_lockup: Duration::from_secs(1),
            monitor: &monitor,
            symbols: path,
            release: "x",
            gigantic,
        };
        let args = |b: &Boot| -> Vec<String> {
            b.command()
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let plain = args(&boot(0));
        assert!(plain.windows(2).any(|w| w == ["-m", "2G"]));
        assert!(!boot(0).append().contains("hugepagesz"));
        let one = args(&boot(1));
        assert!(one.windows(2).any(|w| w == ["-m", "3G"]));
        assert!(boot(1).append().ends_with(" hugepagesz=1G hugepages=1"));
    }
}
