//! The direct path: on an arm64 host with /dev/kvm the binary simply runs here.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use crate::error::Error;
use crate::progress;

/// Whether binaries built for aarch64 can run here against a real KVM.
pub fn kvm_available() -> bool {
    cfg!(target_arch = "aarch64") && Path::new("/dev/kvm").exists()
}

/// Whether this process runs inside the emulated host (emuhost-init sets RAS_EMU_GUEST=1).
pub fn in_emulated_host() -> bool {
    std::env::var_os("RAS_EMU_GUEST").is_some_and(|v| v == "1")
}

/// Whether the effective uid is 0, read from /proc/self/status (std has no geteuid).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            // Uid: real effective saved filesystem
            uids.split_whitespace().nth(2).map(|e| e == "0")
        })
        .unwrap_or(false)
}

/// Runs `exe` with `args` and this process's stdio; returns its exit status (128 + signal
/// number when a signal ended it).
pub fn run(exe: &Path, args: &[OsString]) -> Result<i32, Error> {
    if !is_root() {
        progress!(
            "warning: not root; tests that poison memory or need /dev/kvm access will be \
             skipped or fail (run as root, or without KVM access through the emulated host)"
        );
    }
    let status = Command::new(exe)
        .args(args)
        .status()
        .map_err(|e| Error::Config(format!("cannot run {}: {e}", exe.display())))?;
    Ok(status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}
