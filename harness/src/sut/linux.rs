//! A real Linux guest as the oracle: QEMU, with or without UEFI firmware, boots Debian's
//! arm64 kernel with guests/linux-init as `/init` (emuhost::linux_guest). The init's child
//! maps a page and prints its frame; the harness poisons that frame from outside, as for
//! the payload (sut::remote), and tells the child to touch the page. The outcome is the
//! guest's own account on its console: the kernel's `[Hardware Error]` and `Memory
//! failure` lines, the SIGBUS the child received, or a panic, and how QEMU ended.

use std::path::Path;
use std::time::{Duration, Instant};

use emuhost::QemuSuite;

use super::command::{qemu_linux, Launch};
use super::driver::{end_of, ended_meanwhile, Process};
use super::remote::{GuestRam, Remote};
use crate::fault::PoisonedPage;
use crate::scenario::{El, Firmware, Outcome, Scenario, VmmEnd};
// QEMU virt's RAM base, where the guest's physical addresses start in QEMU's RAM mapping.
use ras_guest_abi::map::RAM_BASE;
// The flag page's words (guests/linux-init).
use ras_guest_abi::linux::{FLAG_MAGIC, GO};

/// What the init's child prints once its pages are mapped.
const READY: &str = "ras-linux: ready ";
/// How often the console is read.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// The whole run may take: edk2 and a distribution kernel booting under nested KVM in
/// the emulated host take a minute or two.
pub const LIMIT: Duration = Duration::from_secs(240);

/// Runs the Linux scenario `s` (`guest.os` linux) on the Debian QEMU of `suite`: boots the
/// Linux guest through the suite's UEFI firmware for `firmware` acpi, with a device tree
/// for dtb, poisons the child's page and lets it load from it (at `guest.el`). Returns the
/// outcome (its `console` the lines that tell of the error) and the whole console.
///
/// # Errors
///
/// The QEMU or the Linux guest is not installed, or the harness failed: a file it cannot
/// write, a VMM it cannot start or whose memory it cannot read, a guest that never
/// offered its page (nothing was tested).
pub fn run_scenario(
    s: &Scenario,
    suite: QemuSuite,
    dir: &Path,
) -> Result<(Outcome, String), String> {
    let guest = guest_files()?;
    let (prefix, firmware) = super::qemu_debian(suite)?;
    let acpi = s.firmware == Firmware::Acpi;
    run(
        prefix,
        acpi.then_some(firmware.as_path()),
        (&guest.kernel, &guest.initrd),
        s.guest.el,
        dir,
        LIMIT,
    )
}

/// The Linux guest's kernel and initrd, from the emulated host's RAM when staged there.
///
/// # Errors
///
/// It is not installed.
pub fn guest_files() -> Result<emuhost::linux_guest::LinuxGuest, String> {
    let guest = emuhost::linux_guest::installed(&super::cache_dir()?).ok_or(
        "the Linux guest is not installed: `ras-harness run --vmm qemu:SUITE` on a Linux \
         scenario fetches it",
    )?;
    let staged = guest.staged();
    Ok(if staged.kernel.is_file() {
        staged
    } else {
        guest
    })
}

/// Boots `kernel` and `initrd` with `prefix` (QEMU and its leading arguments), through
/// `firmware` (ACPI, GHES) or not (a device tree), poisons the child's page and lets it be
/// loaded from at `el`: by the child (EL0), or by the kernel for the child's write(2)
/// (EL1, copy_from_user); `limit` for the whole run. Returns the outcome and the whole
/// console.
///
/// # Errors
///
/// As [`run_scenario`].
fn run(
    prefix: Launch,
    firmware: Option<&Path>,
    (kernel, initrd): (&Path, &Path),
    el: El,
    dir: &Path,
    limit: Duration,
) -> Result<(Outcome, String), String> {
    let console = dir.join("linux-console");
    // The init's modes (guests/linux-init).
    let arg = match el {
        El::El0 => "load",
        El::El1 => "syscall",
    };
    // An oops is a panic (what a kernel that cannot recover must do), and a panic ends
    // the VM at once (panic=-1 reboots, -no-reboot turns that into QEMU's exit).
    let cmdline = format!("console=ttyAMA0 oops=panic panic=-1 -- {arg}");
    let l = qemu_linux(prefix, firmware, kernel, initrd, &cmdline, &console);
    let mut vmm = Process::start(&l)?;
    let mut poisoned = Vec::new();
    let mut page = None;
    let watched = watch(&mut vmm, &console, limit, &mut poisoned, &mut page)
        .or_else(|e| ended_meanwhile(&mut vmm.child, e));
    let (status, _, stderr) = vmm.end(&poisoned)?;
    let timed_out = watched?;
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let vmm_end = if timed_out {
        VmmEnd::TimedOut
    } else {
        end_of(status, &stderr)
    };
    if poisoned.is_empty() {
        return Err(format!(
            "the guest never offered its page (QEMU {vmm_end}); the console's end:\n{}",
            tail(&text, 30)
        ));
    }
    let outcome = Outcome {
        vmm_end,
        host_signals: Vec::new(),
        guest: Vec::new(),
        console: ras_lines(&text, page.as_ref()),
    };
    Ok((outcome, text))
}

/// The last `lines` lines of `console`, each marked `console| `.
pub(super) fn tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("console| {l}\n"))
        .collect()
}

/// The child's page: its frame's physical address, the flag page's, its virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Page {
    target: u64,
    pub(super) flag: u64,
    va: u64,
}

/// Waits for the child's page, poisons it, gives the go-ahead, and waits for QEMU to end
/// (`Ok(false)`) or `limit` to pass (`Ok(true)`).
fn watch(
    vmm: &mut Process,
    console: &Path,
    limit: Duration,
    poisoned: &mut Vec<PoisonedPage>,
    found: &mut Option<Page>,
) -> Result<bool, String> {
    let start = Instant::now();
    let page_size = crate::fault::host_page_size() as u64;
    loop {
        if vmm.child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(false);
        }
        if start.elapsed() > limit {
            return Ok(true);
        }
        if found.is_none() {
            let text = std::fs::read_to_string(console).unwrap_or_default();
            // Whole lines only: the console file may end mid-line, mid-address.
            let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if let Some(page) = complete.lines().find_map(ready) {
                *found = Some(page);
                let remote = Remote::open(vmm.child.id()).map_err(|e| e.to_string())?;
                let ram = guest_ram(&remote, page.flag)?
                    .ok_or("the guest's flag page is in no mapping of the VMM")?;
                let allowed = page.target..page.target + page_size;
                let page_poisoned = remote
                    .poison(&ram, page.target, page_size, allowed)
                    .map_err(|e| format!("poison {:#x}: {e}", page.target))?;
                poisoned.push(page_poisoned);
                let go = ram.hva(page.flag + 8).ok_or("the flag page moved")?;
                remote
                    .write(go, &GO.to_le_bytes())
                    .map_err(|e| format!("the go-ahead: {e}"))?;
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The child's `ready` line, read.
pub(super) fn ready(line: &str) -> Option<Page> {
    let rest = &line[line.find(READY)? + READY.len()..];
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    };
    Some(Page {
        target: field("target")?,
        flag: field("flag")?,
        va: field("va")?,
    })
}

/// The mapping of guest RAM that holds the flag page (its magic at the page's offset
/// from the RAM base).
pub(super) fn guest_ram(remote: &Remote, flag: u64) -> Result<Option<GuestRam>, String> {
    remote
        .ram_holding(RAM_BASE, flag, &FLAG_MAGIC.to_le_bytes())
        .map_err(|e| e.to_string())
}

/// What in the console tells of the error: the kernel's APEI/GHES and memory-failure lines,
/// its oopses and panics, the init's own lines; timestamps dropped and the page's
/// addresses named, so the lines read the same from run to run.
fn ras_lines(text: &str, page: Option<&Page>) -> Vec<String> {
    const MARKS: [&str; 8] = [
        "Hardware Error",
        "Memory failure",
        "ras-linux:",
        "Kernel panic",
        "Internal error",
        "GHES",
        "APEI",
        "synchronous external abort",
    ];
    let mut names = Vec::new();
    if let Some(p) = page {
        // Longest first: the frame number is a prefix of the address.
        names.push((format!("{:#018x}", p.target), "TARGET_PA".to_owned()));
        names.push((format!("{:#x}", p.target), "TARGET_PA".to_owned()));
        names.push((format!("{:#x}", p.flag), "FLAG_PA".to_owned()));
        names.push((format!("{:#x}", p.va), "TARGET_VA".to_owned()));
        names.push((format!("{:#x}", p.target >> 12), "TARGET_PFN".to_owned()));
    }
    text.lines()
        .flat_map(messages)
        .filter(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| {
            names
                .iter()
                .fold(l.to_owned(), |l, (from, to)| l.replace(from, to))
        })
        .collect()
}

/// The messages in a console line, without printk's `[   12.345678] `: the kernel's
/// output and the init's share the serial port, so one line may hold the end of one and
/// the start of the other.
pub(super) fn messages(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        let stamp = rest.match_indices('[').find_map(|(at, _)| {
            let close = at + rest[at..].find(']')?;
            let inside = rest[at + 1..close].trim_start();
            let is_time = !inside.is_empty()
                && inside.contains('.')
                && inside.chars().all(|c| c.is_ascii_digit() || c == '.');
            is_time.then_some((at, close + 1))
        });
        let (head, next) = match stamp {
            Some((at, end)) => (&rest[..at], Some(&rest[end..])),
            None => (rest, None),
        };
        if !head.trim().is_empty() {
            out.push(head.trim());
        }
        match next {
            Some(next) => rest = next,
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_and_the_ras_lines_are_read() {
        let text = "\
[    3.100000] Run /init as init process
ras-linux: ready access=load target=0x4567f000 flag=0x4567e000 va=0xffff9a001000
[    9.000001] {1}[Hardware Error]: physical_address: 0x000000004567f000
[    9.000002] Memory failure: 0x4567f: recovery action for dirty LRU page: Recovered
ras-linux: sigbus code=4 addr=0xffff9a001000 lsb=12
[    9.1] random line";
        let page = text.lines().find_map(ready).unwrap();
        assert_eq!(
            page,
            Page {
                target: 0x4567_f000,
                flag: 0x4567_e000,
                va: 0xffff_9a00_1000
            }
        );
        assert_eq!(
            ras_lines(text, Some(&page)),
            [
                "ras-linux: ready access=load target=TARGET_PA flag=FLAG_PA va=TARGET_VA",
                "{1}[Hardware Error]: physical_address: TARGET_PA",
                "Memory failure: TARGET_PFN: recovery action for dirty LRU page: Recovered",
                "ras-linux: sigbus code=4 addr=TARGET_VA lsb=12",
            ]
        );
        assert_eq!(ready("ras-linux: ready access=load target=0x1"), None);
    }
}
