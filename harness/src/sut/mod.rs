//! Systems under test: the VMM a scenario is run against. The reference VMM runs in the
//! harness's own process; any other is a process of its own, started with the payload as
//! its kernel and driven from outside ([`driver`]): its guest RAM found by the payload's
//! handshake, the target poisoned by frame, its end and the guest's report observed.
//!
//! `--vmm` names one: `reference` (default), `qemu` (Debian trixie's), `qemu:SUITE`,
//! `qemu=PATH` (a binary of one's own), `libkrun`, or `exec=TEMPLATE` (any VMM that boots an
//! arm64 Image with a device tree; see [`command`] for the placeholders).

#[cfg(target_os = "linux")]
pub mod before_firmware;
#[cfg(target_os = "linux")]
pub mod driver;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub mod linux_records;
#[cfg(target_os = "linux")]
pub mod qmp;
#[cfg(target_os = "linux")]
pub mod remote;

pub mod command;

use std::fmt;
use std::path::PathBuf;

use emuhost::QemuSuite;

use crate::scenario::{Firmware, Os, Scenario};

/// The suite plain `qemu` means.
pub const QEMU_DEFAULT_SUITE: QemuSuite = QemuSuite::Trixie;

/// A VMM under test, as `--vmm` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sut {
    /// The harness's own VMM, in process.
    Reference,
    /// Debian's arm64 QEMU of a suite, fetched by emuhost.
    QemuDebian(QemuSuite),
    /// A QEMU binary of one's own.
    QemuPath(PathBuf),
    /// libkrun, through the harness's small driver binary.
    Libkrun,
    /// Any VMM, by command template.
    Exec(String),
}

impl Sut {
    /// Reads a `--vmm` value.
    ///
    /// # Errors
    ///
    /// What is wrong with it, naming the allowed values.
    pub fn parse(s: &str) -> Result<Self, String> {
        let allowed = "allowed: reference, qemu, qemu:SUITE (bookworm, bookworm-backports, \
                       trixie, sid), qemu=PATH, libkrun, exec='COMMAND TEMPLATE'";
        Ok(match s {
            "reference" => Self::Reference,
            "qemu" => Self::QemuDebian(QEMU_DEFAULT_SUITE),
            "libkrun" => Self::Libkrun,
            _ => {
                if let Some(suite) = s.strip_prefix("qemu:") {
                    let suite = QemuSuite::parse(suite)
                        .map_err(|_| format!("--vmm {s}: no such suite; {allowed}"))?;
                    Self::QemuDebian(suite)
                } else if let Some(path) = s.strip_prefix("qemu=").filter(|p| !p.is_empty()) {
                    Self::QemuPath(PathBuf::from(path))
                } else if let Some(t) = s.strip_prefix("exec=").filter(|t| !t.trim().is_empty()) {
                    command::check_template(t).map_err(|e| format!("--vmm exec: {e}"))?;
                    Self::Exec(t.into())
                } else {
                    return Err(format!("--vmm {s:?}: unknown VMM; {allowed}"));
                }
            }
        })
    }

    /// The `--vmm` value that names this VMM again (what `__exec` is given).
    pub fn arg(&self) -> String {
        match self {
            Self::Reference => "reference".into(),
            Self::QemuDebian(suite) => format!("qemu:{}", suite.name()),
            Self::QemuPath(p) => format!("qemu={}", p.display()),
            Self::Libkrun => "libkrun".into(),
            Self::Exec(t) => format!("exec={t}"),
        }
    }

    /// The name reports and baselines use: `reference`, `qemu-trixie`, `qemu` (a binary of
    /// one's own), `libkrun`, `exec`.
    pub fn name(&self) -> String {
        match self {
            Self::Reference => "reference".into(),
            Self::QemuDebian(suite) => format!("qemu-{}", suite.name()),
            Self::QemuPath(_) => "qemu".into(),
            Self::Libkrun => "libkrun".into(),
            Self::Exec(_) => "exec".into(),
        }
    }

    /// Why this VMM cannot run `s`, if it cannot: what the scenario asks for that the VMM
    /// has no way to be told, or that the payload does only under the reference VMM.
    pub fn cannot_express(&self, s: &Scenario) -> Option<String> {
        if s.guest.os == Os::Linux {
            return (!matches!(self, Self::QemuDebian(_))).then(|| {
                "a Linux guest: only a Debian QEMU boots one here (--vmm qemu:SUITE)".into()
            });
        }
        if *self == Self::Reference {
            return None;
        }
        let why = if s.firmware == Firmware::Acpi && !matches!(self, Self::QemuDebian(_)) {
            "ACPI tables come from UEFI firmware: only a Debian QEMU comes with one here"
        } else if !s.vmm.mask_caps.is_empty() {
            "a KVM capability to mask: only the reference VMM can be told to"
        } else if !s.guest.ras {
            "hiding FEAT_RAS from the guest: only the reference VMM can be told to"
        } else if s.guest.backing != crate::scenario::Backing::Anonymous {
            "a target backing other than anonymous memory: not wired for this VMM yet"
        } else {
            return None;
        };
        Some(why.into())
    }
}

/// How long an outside VMM may take to show the payload's handshake, and to run in all,
/// in seconds: UEFI firmware adds its own boot (edk2 took 4.6 to 8 s under nested KVM in
/// a trial, more in the emulated host).
fn limit_secs(s: &Scenario) -> (u64, u64) {
    #[cfg(target_os = "linux")]
    if s.guest.os == Os::Linux {
        return (linux::LIMIT.as_secs(), linux::LIMIT.as_secs());
    }
    let firmware = if s.firmware == Firmware::Acpi { 60 } else { 0 };
    (30 + firmware, 45 + firmware)
}

/// [`limit_secs`] as the driver takes them.
#[cfg(target_os = "linux")]
fn limits(s: &Scenario) -> driver::Limits {
    let (boot, total) = limit_secs(s);
    driver::Limits {
        boot: std::time::Duration::from_secs(boot),
        total: std::time::Duration::from_secs(total),
    }
}

/// How long a child running `s` on an outside VMM may take in all: the driver's limit and
/// time to start and report.
pub fn time_allowed(s: &Scenario) -> std::time::Duration {
    std::time::Duration::from_secs(limit_secs(s).1 + 15)
}

/// Runs `s` on `sut`, a VMM process of its own, and returns what `__exec` prints.
#[cfg(target_os = "linux")]
pub fn run_outside(s: &Scenario, sut: &Sut) -> crate::runner::ExecLine {
    use crate::runner::ExecLine;
    let dir = std::env::temp_dir().join(format!("ras-harness-vmm-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return ExecLine::Error(format!("{}: {e}", dir.display()));
    }
    let run = match sut {
        Sut::QemuDebian(suite) if s.guest.os == Os::Linux => linux::run_scenario(s, *suite, &dir)
            .map(|(observed, console)| (observed, linux::tail(&console, 20))),
        _ => launcher(sut)
            .and_then(|launch| driver::run(s, launch, &dir, limits(s)))
            .map(|(observed, transcript)| (observed, transcript.tail(20))),
    };
    let _ = std::fs::remove_dir_all(&dir);
    match run {
        Ok((observed, tail)) => {
            // Shown with the verdict when the run goes wrong.
            eprint!("{tail}");
            ExecLine::Outcome {
                observed,
                vmm_log: None,
            }
        }
        Err(why) => ExecLine::Error(why),
    }
}

/// Off Linux no VMM process can be driven.
#[cfg(not(target_os = "linux"))]
pub fn run_outside(_: &Scenario, sut: &Sut) -> crate::runner::ExecLine {
    crate::runner::ExecLine::Skip(format!("{sut}: driving a VMM process needs Linux"))
}

/// What starts a VMM for one guest.
#[cfg(target_os = "linux")]
pub type Launcher = Box<dyn FnOnce(&command::Guest) -> command::Launch>;

/// How `sut` is started for a guest.
///
/// # Errors
///
/// The reference VMM (it runs in process), or a VMM that is not installed.
#[cfg(target_os = "linux")]
pub fn launcher(sut: &Sut) -> Result<Launcher, String> {
    match sut.clone() {
        Sut::Exec(template) => Ok(Box::new(move |g| command::exec(&template, g))),
        Sut::QemuPath(program) => Ok(Box::new(move |g| {
            command::qemu(
                command::Launch {
                    program,
                    args: Vec::new(),
                },
                None,
                g,
            )
        })),
        Sut::QemuDebian(suite) => {
            let (prefix, firmware) = qemu_debian(suite)?;
            Ok(Box::new(move |g| command::qemu(prefix, Some(&firmware), g)))
        }
        Sut::Libkrun => {
            let driver = emuhost::vmm_libkrun::driver_path(&cache_dir()?);
            if !driver.is_file() {
                return Err(format!(
                    "{} is missing: `ras-harness run --vmm libkrun` builds it",
                    driver.display()
                ));
            }
            Ok(Box::new(move |g| command::libkrun(&driver, g)))
        }
        Sut::Reference => Err("the reference VMM runs in process".into()),
    }
}

/// How a Debian QEMU of `suite` is started (its loader, libraries and binary, from the
/// emulated host's RAM when staged there, else over the share), and its firmware.
///
/// # Errors
///
/// It is not installed.
#[cfg(target_os = "linux")]
pub fn qemu_debian(suite: emuhost::QemuSuite) -> Result<(command::Launch, PathBuf), String> {
    let install = emuhost::vmm_qemu::installed(suite, &cache_dir()?).ok_or(format!(
        "qemu:{} is not installed: `ras-harness run --vmm qemu:{0}` fetches it",
        suite.name()
    ))?;
    let staged = install.staged();
    let install = if staged.binary.is_file() {
        staged
    } else {
        install
    };
    let mut prefix = install.prefix().into_iter();
    let program = PathBuf::from(prefix.next().unwrap_or_default());
    let args = prefix.collect();
    Ok((command::Launch { program, args }, install.firmware))
}

/// Where the emulated host's cache (and so the VMM binaries) is.
pub fn cache_dir() -> Result<PathBuf, String> {
    emuhost::RunOptions::from_env()
        .map(|o| o.cache_dir)
        .map_err(|e| e.to_string())
}

/// Fetches or builds what `sut` runs, before anything is run (on the machine with the
/// network and the toolchain, outside the emulated host).
///
/// # Errors
///
/// Why it cannot be had.
pub fn prepare(sut: &Sut) -> Result<(), String> {
    match sut {
        Sut::Libkrun => emuhost::vmm_libkrun::ensure_driver(&cache_dir()?)
            .map(drop)
            .map_err(|e| format!("--vmm libkrun: {e}")),
        Sut::QemuDebian(suite) => emuhost::vmm_qemu::ensure(*suite, &cache_dir()?, false)
            .map(drop)
            .map_err(|e| format!("--vmm qemu:{}: {e}", suite.name())),
        Sut::QemuPath(p) if !p.is_file() => {
            Err(format!("--vmm qemu={}: no such file", p.display()))
        }
        _ => Ok(()),
    }
}

/// `sut`'s version, where it can be known: the harness's for the reference VMM, the
/// Debian package's for a fetched QEMU, libkrun's release, the first line of `-version`
/// for a QEMU of one's own.
pub fn version(sut: &Sut) -> Option<String> {
    match sut {
        Sut::Reference => Some(format!("ras-harness {}", env!("CARGO_PKG_VERSION"))),
        Sut::QemuDebian(suite) => emuhost::vmm_qemu::installed(*suite, &cache_dir().ok()?)
            .map(|i| format!("{}, edk2 {}", i.version, i.firmware_version())),
        Sut::Libkrun => Some(format!("libkrun {}", emuhost::vmm_libkrun::LIBKRUN_VERSION)),
        Sut::QemuPath(p) => {
            let out = std::process::Command::new(p)
                .arg("-version")
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().next().map(str::to_owned)
        }
        Sut::Exec(_) => None,
    }
}

/// What to add to the emulated host's initramfs so that `sut` starts from its RAM (a
/// Debian QEMU's binary and libraries: over the share each start takes about 20 s).
pub fn initramfs_parts(sut: &Sut) -> Vec<PathBuf> {
    let Sut::QemuDebian(suite) = sut else {
        return Vec::new();
    };
    let installed = cache_dir()
        .ok()
        .and_then(|cache| emuhost::vmm_qemu::installed(*suite, &cache));
    installed.map(|i| i.initramfs).into_iter().collect()
}

impl fmt::Display for Sut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_names_parse_and_bad_ones_list_the_allowed() {
        assert_eq!(Sut::parse("qemu").unwrap().name(), "qemu-trixie");
        assert_eq!(Sut::parse("qemu:sid").unwrap().name(), "qemu-sid");
        assert_eq!(
            Sut::parse("qemu=/opt/q/qemu-system-aarch64").unwrap(),
            Sut::QemuPath("/opt/q/qemu-system-aarch64".into())
        );
        assert_eq!(Sut::parse("libkrun").unwrap(), Sut::Libkrun);
        for bad in [
            "qemu:buster",
            "qemu=",
            "kvmtool",
            "exec=",
            "exec=vmm --no-image",
        ] {
            let e = Sut::parse(bad).unwrap_err();
            assert!(e.contains("--vmm"), "{bad}: {e}");
        }
        assert!(Sut::parse("qemu:buster").unwrap_err().contains("trixie"));
    }

    #[test]
    fn a_linux_guest_runs_only_on_a_debian_qemu() {
        let s = crate::scenario::load(std::path::Path::new(
            "../scenarios/linux/el0-load-acpi.json",
        ))
        .unwrap();
        for vmm in ["reference", "qemu=/usr/bin/qemu-system-aarch64", "libkrun"] {
            let why = Sut::parse(vmm).unwrap().cannot_express(&s);
            assert!(why.is_some_and(|w| w.contains("Linux guest")), "{vmm}");
        }
        assert_eq!(Sut::parse("qemu:sid").unwrap().cannot_express(&s), None);
    }
}
