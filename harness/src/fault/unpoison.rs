//! Giving poisoned pages back, and counting what stays poisoned.
//!
//! A software-poisoned frame stays out of use until `unpoison-pfn` in debugfs `hwpoison/`
//! (mm/hwpoison-inject.c, module hwpoison_inject) takes it back. The kernel refuses after a
//! real hardware memory error (EOPNOTSUPP, "Once any hardware memory failure happens, this
//! feature is disabled", Documentation/mm/hwpoison.rst) and while the frame is still in use
//! (EBUSY). `HardwareCorrupted` in /proc/meminfo counts the poisoned memory in kB.

use std::io;
use std::path::Path;
use std::process::Command;

use super::poison::PoisonedPage;

/// Takes a PFN (decimal or 0x-hex): mm/hwpoison-inject.c `hwpoison_unpoison`.
pub const UNPOISON_PFN: &str = "/sys/kernel/debug/hwpoison/unpoison-pfn";
const DEBUGFS: &str = "/sys/kernel/debug";

/// Why a page stayed poisoned.
#[derive(Debug, thiserror::Error)]
pub enum UnpoisonFailure {
    /// The PFN was not readable when the page was poisoned (not root).
    #[error("its PFN is unknown (pagemap needs CAP_SYS_ADMIN when it is poisoned)")]
    NoPfn,
    /// No `unpoison-pfn` file; the reason says what is missing.
    #[error("{UNPOISON_PFN} is missing: {0}")]
    NoInterface(String),
    /// EPERM or EACCES.
    #[error("unpoison needs root (CAP_SYS_ADMIN)")]
    NeedsRoot,
    /// EBUSY: still mapped or referenced, or not poisoned any more.
    #[error("the kernel refused (EBUSY): the frame is still in use or no longer poisoned")]
    Busy,
    /// EOPNOTSUPP: the kernel saw a real hardware memory error and disabled unpoison.
    #[error("the kernel disabled unpoison after a real hardware memory error (EOPNOTSUPP)")]
    DisabledAfterHardwareError,
    /// Anything else.
    #[error("{0}")]
    Os(#[source] io::Error),
}

impl UnpoisonFailure {
    /// The reason for an errno from writing `unpoison-pfn`.
    pub fn from_io(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Self::NeedsRoot,
            Some(libc::EBUSY) => Self::Busy,
            Some(libc::EOPNOTSUPP) => Self::DisabledAfterHardwareError,
            _ => Self::Os(e),
        }
    }
}

/// A page that stayed poisoned, and why.
#[derive(Debug)]
pub struct Kept {
    pub page: PoisonedPage,
    pub why: UnpoisonFailure,
}

/// What [`unpoison`] did.
#[derive(Debug, Default)]
pub struct UnpoisonReport {
    /// Pages whose frame the kernel took back.
    pub given_back: Vec<PoisonedPage>,
    /// Pages that stay poisoned until reboot.
    pub kept: Vec<Kept>,
}

/// Makes `unpoison-pfn` available: if it is missing, loads hwpoison_inject with `modprobe`
/// when there is one. Mounting debugfs is the init's job: this only reports it.
///
/// # Errors
///
/// A sentence saying what is missing.
pub fn ensure_interface() -> Result<(), String> {
    if Path::new(UNPOISON_PFN).exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if !debugfs_mounted(&mounts) {
        return Err(format!("debugfs is not mounted on {DEBUGFS}"));
    }
    match Command::new("modprobe").arg("hwpoison_inject").output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("hwpoison_inject is not loaded and there is no modprobe".into())
        }
        Err(e) => return Err(format!("running modprobe hwpoison_inject: {e}")),
        Ok(out) if !out.status.success() => {
            return Err(format!(
                "modprobe hwpoison_inject failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Ok(_) => {}
    }
    if Path::new(UNPOISON_PFN).exists() {
        Ok(())
    } else {
        Err("hwpoison_inject loaded but the file did not appear".into())
    }
}

/// True when /proc/self/mounts text has debugfs on /sys/kernel/debug.
fn debugfs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next(), f.next(), f.next());
        dir == Some(DEBUGFS) && fstype == Some("debugfs")
    })
}

/// Gives `pages` back where the host allows it. Unmap or repair the poisoned mappings first:
/// the kernel refuses a frame that is still in use.
pub fn unpoison(pages: &[PoisonedPage]) -> UnpoisonReport {
    let interface = ensure_interface();
    unpoison_with(pages, interface, |pfn| {
        std::fs::write(UNPOISON_PFN, format!("{pfn}\n"))
    })
}

/// [`unpoison`] with the interface check and the write given: testable without root.
fn unpoison_with(
    pages: &[PoisonedPage],
    interface: Result<(), String>,
    mut write_pfn: impl FnMut(u64) -> io::Result<()>,
) -> UnpoisonReport {
    let mut report = UnpoisonReport::default();
    for &page in pages {
        let outcome = match (page.pfn, &interface) {
            (None, _) => Err(UnpoisonFailure::NoPfn),
            (Some(_), Err(why)) => Err(UnpoisonFailure::NoInterface(why.clone())),
            (Some(pfn), Ok(())) => write_pfn(pfn).map_err(UnpoisonFailure::from_io),
        };
        match outcome {
            Ok(()) => report.given_back.push(page),
            Err(why) => report.kept.push(Kept { page, why }),
        }
    }
    report
}

/// `HardwareCorrupted` from /proc/meminfo text, in kB; `None` when the line is absent
/// (a kernel without CONFIG_MEMORY_FAILURE) or malformed.
pub fn parse_hardware_corrupted_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("HardwareCorrupted:")?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB") && words.next().is_none()).then_some(value)
    })
}

/// The host's `HardwareCorrupted` in kB (issue 7's soak compares it before and after).
///
/// # Errors
///
/// Reading /proc/meminfo failed, or it has no `HardwareCorrupted` line.
pub fn hardware_corrupted_kib() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    parse_hardware_corrupted_kib(&text)
        .ok_or_else(|| io::Error::other("/proc/meminfo has no HardwareCorrupted line"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Method;

    fn page(hva: usize, pfn: Option<u64>) -> PoisonedPage {
        PoisonedPage {
            hva,
            pfn,
            method: Method::MadviseHwpoison,
            page_size: 4096,
        }
    }

    #[test]
    fn meminfo_hardware_corrupted() {
        let text = "MemTotal:        2014668 kB\nHardwareCorrupted:     8 kB\nAnonHugePages:         0 kB\n";
        assert_eq!(parse_hardware_corrupted_kib(text), Some(8));
        assert_eq!(
            parse_hardware_corrupted_kib("HardwareCorrupted:     0 kB"),
            Some(0)
        );
        assert_eq!(parse_hardware_corrupted_kib("MemTotal: 1 kB\n"), None);
        assert_eq!(
            parse_hardware_corrupted_kib("HardwareCorrupted: x kB"),
            None
        );
        assert_eq!(
            parse_hardware_corrupted_kib("HardwareCorrupted: 4 MB"),
            None
        );
    }

    #[test]
    fn this_hosts_meminfo_parses_when_it_has_the_line() {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let has_line = text.contains("HardwareCorrupted:");
        assert_eq!(hardware_corrupted_kib().is_ok(), has_line);
    }

    #[test]
    fn debugfs_mount_detection() {
        assert!(debugfs_mounted(
            "debugfs /sys/kernel/debug debugfs rw,relatime 0 0\n"
        ));
        assert!(!debugfs_mounted("sysfs /sys sysfs rw 0 0\n"));
        assert!(!debugfs_mounted("none /sys/kernel/debug tmpfs rw 0 0\n"));
    }

    #[test]
    fn each_page_is_given_back_or_kept_with_a_reason() {
        let pages = [
            page(0x1000, Some(0x100)),
            page(0x2000, None),
            page(0x3000, Some(0x300)),
            page(0x4000, Some(0x400)),
            page(0x5000, Some(0x500)),
        ];
        let mut written = Vec::new();
        let report = unpoison_with(&pages, Ok(()), |pfn| {
            written.push(pfn);
            match pfn {
                0x300 => Err(io::Error::from_raw_os_error(libc::EBUSY)),
                0x400 => Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
                _ => Ok(()),
            }
        });
        assert_eq!(written, [0x100, 0x300, 0x400, 0x500]);
        let back: Vec<usize> = report.given_back.iter().map(|p| p.hva).collect();
        assert_eq!(back, [0x1000, 0x5000]);
        let kept: Vec<(usize, String)> = report
            .kept
            .iter()
            .map(|k| (k.page.hva, k.why.to_string()))
            .collect();
        assert!(matches!(report.kept[0].why, UnpoisonFailure::NoPfn));
        assert!(matches!(report.kept[1].why, UnpoisonFailure::Busy));
        assert!(matches!(
            report.kept[2].why,
            UnpoisonFailure::DisabledAfterHardwareError
        ));
        assert_eq!(kept.len(), 3);
        assert!(kept[2].1.contains("real hardware memory error"), "{kept:?}");
    }

    #[test]
    fn missing_interface_keeps_every_page_and_says_why() {
        let pages = [page(0x1000, Some(1)), page(0x2000, Some(2))];
        let report = unpoison_with(&pages, Err("debugfs is not mounted".into()), |_| {
            panic!("nothing may be written without the interface")
        });
        assert!(report.given_back.is_empty());
        assert_eq!(report.kept.len(), 2);
        assert!(report.kept[0]
            .why
            .to_string()
            .contains("debugfs is not mounted"));
    }

    #[test]
    fn errno_reasons() {
        let e = |n| UnpoisonFailure::from_io(io::Error::from_raw_os_error(n));
        assert!(matches!(e(libc::EPERM), UnpoisonFailure::NeedsRoot));
        assert!(matches!(e(libc::EACCES), UnpoisonFailure::NeedsRoot));
        assert!(matches!(e(libc::ENXIO), UnpoisonFailure::Os(_)));
    }
}
