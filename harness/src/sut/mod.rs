//! Systems under test: the VMM a scenario is run against. The reference VMM runs in the
//! harness's own process; any other is a process of its own, started with the payload as
//! its kernel and driven from outside ([`driver`]): its guest RAM found by the payload's
//! handshake, the target poisoned by frame, its end and the guest's report observed.
//!
//! `--vmm` names one: `reference` (default), `qemu` (Debian trixie's), `qemu:SUITE`,
//! `qemu=PATH` (a binary of one's own), `libkrun`, or `exec=TEMPLATE` (any VMM that boots an
//! arm64 Image with a device tree; see [`command`] for the placeholders).

#[cfg(target_os = "linux")]
pub mod driver;
#[cfg(target_os = "linux")]
pub mod remote;

pub mod command;

use std::fmt;
use std::path::PathBuf;

use crate::scenario::{Firmware, Scenario, When};

/// Debian suites whose arm64 `qemu-system-arm` the harness fetches.
pub const QEMU_SUITES: [&str; 4] = ["bookworm", "bookworm-backports", "trixie", "sid"];
/// The suite plain `qemu` means.
pub const QEMU_DEFAULT_SUITE: &str = "trixie";

/// A VMM under test, as `--vmm` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sut {
    /// The harness's own VMM, in process.
    Reference,
    /// Debian's arm64 QEMU of a suite (one of [`QEMU_SUITES`]).
    QemuDebian(String),
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
            "qemu" => Self::QemuDebian(QEMU_DEFAULT_SUITE.into()),
            "libkrun" => Self::Libkrun,
            _ => {
                if let Some(suite) = s.strip_prefix("qemu:") {
                    if !QEMU_SUITES.contains(&suite) {
                        return Err(format!("--vmm {s}: no such suite; {allowed}"));
                    }
                    Self::QemuDebian(suite.into())
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

    /// The name reports and baselines use: `reference`, `qemu-trixie`, `qemu` (a binary of
    /// one's own), `libkrun`, `exec`.
    pub fn name(&self) -> String {
        match self {
            Self::Reference => "reference".into(),
            Self::QemuDebian(suite) => format!("qemu-{suite}"),
            Self::QemuPath(_) => "qemu".into(),
            Self::Libkrun => "libkrun".into(),
            Self::Exec(_) => "exec".into(),
        }
    }

    /// Why this VMM cannot run `s`, if it cannot: what the scenario asks for that the VMM
    /// has no way to be told, or that the payload does only under the reference VMM.
    pub fn cannot_express(&self, s: &Scenario) -> Option<String> {
        if *self == Self::Reference {
            return None;
        }
        let why = if s.firmware == Firmware::Acpi {
            "ACPI tables come from UEFI firmware for this VMM; not run yet"
        } else if s.guest.vcpus > 1 {
            "the payload starts secondary vCPUs only under the reference VMM"
        } else if !s.vmm.mask_caps.is_empty() {
            "a KVM capability to mask: only the reference VMM can be told to"
        } else if !s.guest.ras {
            "hiding FEAT_RAS from the guest: only the reference VMM can be told to"
        } else if s.guest.backing != crate::scenario::Backing::Anonymous {
            "a target backing other than anonymous memory: not wired for this VMM yet"
        } else if s
            .faults
            .iter()
            .any(|f| !matches!(f.when, When::AtReady | When::BeforeBoot))
        {
            "a fault timed against the guest's acknowledgement of a record (ACPI)"
        } else {
            return None;
        };
        Some(why.into())
    }
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
}
