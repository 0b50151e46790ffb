//! An error before the firmware ran: QEMU with UEFI firmware and `ras=on`, a guest page
//! poisoned while the VM is still paused, before edk2's first instruction. The page is the
//! first of RAM, where QEMU's virt puts the device tree for the firmware
//! (hw/arm/boot.c, `arm_load_dtb` at the RAM base when booting firmware), which edk2 reads
//! first of all (ArmVirtPkg: the memory nodes). No ACPI table is loaded yet, so QEMU has
//! nowhere to record the error: what it does then is the outcome.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::command::{qemu_firmware_paused, with_qmp, Launch};
use super::driver::{end_of, Process};
use super::qmp::Qmp;
use super::remote::Remote;
use crate::scenario::VmmEnd;
use ras_guest_abi::{fdt, map::RAM_BASE};

/// How QEMU took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BeforeFirmware {
    /// How QEMU ended.
    pub vmm_end: VmmEnd,
    /// Its own lines on stderr.
    pub stderr: Vec<String>,
    /// When it did not end: where vCPU 0 was by then (HMP `info registers`: PC, PSTATE and
    /// the mode, e.g. `EL1h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck_at: Option<String>,
}

/// Starts QEMU (`prefix`, `firmware`) paused, poisons the device tree's page, lets the VM
/// run and waits up to `limit` for QEMU to end.
///
/// # Errors
///
/// The harness's own failures: QEMU not starting, its RAM or the device tree not found,
/// the poison refused.
pub fn run(
    prefix: Launch,
    firmware: &Path,
    dir: &Path,
    limit: Duration,
) -> Result<BeforeFirmware, String> {
    let socket = dir.join("qmp.sock");
    let l = qemu_firmware_paused(prefix, firmware, &dir.join("console"));
    let mut vmm = Process::start(&with_qmp(l, &socket))?;
    let mut poisoned = Vec::new();
    // Whatever fails, QEMU is ended and the page given back before the error is returned.
    let waited = poison_and_run(&mut vmm, &socket, &mut poisoned)
        .and_then(|mut qmp| wait_or_look(&mut vmm, &mut qmp, limit));
    let (status, _, stderr) = vmm.end(&poisoned)?;
    let stuck_at = waited?;
    let vmm_end = if stuck_at.is_some() {
        VmmEnd::TimedOut
    } else {
        end_of(status, &stderr)
    };
    Ok(BeforeFirmware {
        vmm_end,
        stderr: stderr
            .lines()
            .filter(|l| l.starts_with("qemu-system-aarch64:"))
            .map(str::to_owned)
            .collect(),
        stuck_at,
    })
}

/// Waits up to `limit` for QEMU to end: None if it did, else where vCPU 0 is.
fn wait_or_look(
    vmm: &mut Process,
    qmp: &mut Qmp,
    limit: Duration,
) -> Result<Option<String>, String> {
    let start = Instant::now();
    while vmm.child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > limit {
            let info = json!({ "command-line": "info registers" });
            let said = qmp.execute("human-monitor-command", info)?;
            return Ok(Some(said.map_or_else(|e| e, |v| where_stuck(&v))));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// `PC=… PSTATE=… EL1h` from HMP `info registers` (target/arm/cpu.c
/// `aarch64_cpu_dump_state`).
fn where_stuck(info: &serde_json::Value) -> String {
    let text = info.as_str().unwrap_or_default();
    text.split_whitespace()
        .filter(|w| w.starts_with("PC=") || w.starts_with("PSTATE=") || w.starts_with("EL"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn poison_and_run(
    vmm: &mut Process,
    socket: &Path,
    poisoned: &mut Vec<crate::fault::PoisonedPage>,
) -> Result<Qmp, String> {
    let mut qmp = Qmp::connect(socket, Duration::from_secs(30))?;
    let remote = Remote::open(vmm.child.id()).map_err(|e| e.to_string())?;
    let ram = remote
        .ram_holding(RAM_BASE, RAM_BASE, &fdt::MAGIC.to_be_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("no mapping of QEMU starts with a device tree")?;
    let page = crate::fault::host_page_size() as u64;
    let p = remote
        .poison(&ram, RAM_BASE, page, RAM_BASE..RAM_BASE + page)
        .map_err(|e| format!("poison the device tree's page: {e}"))?;
    poisoned.push(p);
    qmp.execute("cont", json!({}))?
        .map_err(|e| format!("cont: {e}"))?;
    Ok(qmp)
}
