//! Records fed to a real Linux guest, to check the harness's model of Linux
//! (`formats::cper::linux_response`) against the kernel it models.
//!
//! QEMU from 11.1 builds a second GHESv2 source, notified by GPIO-signal through the
//! Generic Event Device, and takes any record for it through QMP `inject-ghes-v2-error`
//! (hw/acpi/ghes_cper.c, hw/acpi/ghes.c `ghes_record_cper_errors`): the bytes, base64,
//! written as they are at the source's error status block once the Read Ack register says
//! the last one was read. The guest is sut::linux's, its init in `records` mode: it offers
//! pages for the records to name, gives the kernel's HEST, and reports the kernel's count of
//! poisoned memory as it changes.
//!
//! What the guest did with a record is read from the guest only: its console (the kernel's
//! GHES warnings, `Memory failure` lines, a panic), the init's `hardware-corrupted` lines,
//! and the Read Ack register the kernel writes in guest memory.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use serde_json::json;

use super::command::{qemu_linux, with_qmp, Launch};
use super::driver::{ended_meanwhile, Process};
use super::linux::{guest_ram, messages, ready, POLL};
use super::qmp::Qmp;
use super::remote::{GuestRam, Remote};
use crate::formats::acpi::{ErrorSource, Hest, NOTIFY_GPIO, READ_ACK_INITIAL};
use crate::formats::cper::{
    cache_error_section, memory_error_record, BlockStatus, Entry, LinuxResponse,
    MemoryErrorSection, MemoryErrorType, MfFlags, PanicCause, Profile, Record, Rejection, Section,
    Severity, FLAG_ERROR_THRESHOLD_EXCEEDED,
};
use ras_guest_abi::linux::GO;

/// How long the kernel may take to read a record and acknowledge it.
const ACK_WAIT: Duration = Duration::from_secs(3);
/// A record's effects are complete once the console has been quiet this long after the
/// acknowledgement: memory_failure() runs from a workqueue after it, and the init looks at
/// /proc/meminfo every 20 ms; generous for a loaded emulated host.
const QUIET: Duration = Duration::from_millis(1500);
/// The guest's page size (Debian's arm64 kernel).
const GUEST_PAGE_SHIFT: u32 = 12;

/// The QMP source as the guest's HEST describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QmpSource {
    /// Error Status Block Length.
    pub error_block_length: u32,
    /// The Read Ack register's guest physical address.
    read_ack: u64,
}

/// What the guest offers the records: its pages, and the source they are fed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Physical addresses of the init's pages, each free to be named by one record.
    pub pages: Vec<u64>,
    /// The source.
    pub source: QmpSource,
}

/// One record to feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// What it is, e.g. `data-length-63`.
    pub name: String,
    /// The bytes written at the error status block.
    pub record: Vec<u8>,
}

/// The records: the harness's encoder output (QEMU's own record, the strict profile, other
/// sections and severities) and that record with one field broken for each check the
/// kernel makes. Each names pages of its own from `offer` (it needs 14), so that every
/// memory_failure() meets a fresh page, but for one repeated record; the one that panics
/// the guest comes last.
/// None holds what the guest cannot show one record at a time (a zero record size that
/// hangs the walk, an address outside the kernel's copy).
pub fn corpus(offer: &Offer) -> Vec<Case> {
    let p = |i: usize| offer.pages.get(i).copied().unwrap_or(0);
    let qemu = |i| memory_error_record(p(i), Severity::Recoverable, Profile::Qemu).encode();
    let with = |mut bytes: Vec<u8>, at: usize, value: u32| {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        bytes
    };
    let memory = |i| {
        let section = MemoryErrorSection::with_address(p(i), MemoryErrorType::Unknown);
        Entry::new(Section::PlatformMemory(section), Severity::Recoverable, 0)
    };
    let recoverable = |entries| Record::new(BlockStatus(1), Severity::Recoverable, entries);
    let arm = |i, error_type| {
        let mut section = cache_error_section(p(i));
        section.error_info[0].error_type = error_type;
        recoverable(vec![Entry::new(
            Section::ArmProcessor(section),
            Severity::Recoverable,
            0,
        )])
        .encode()
    };
    // Offsets in QEMU's 172-byte record: the status block's fields, the entry at 20
    // (severity +16, flags +23, Error Data Length +24), the memory section at 92.
    let (raw_offset, raw_length, data_length, severity) = (4, 8, 12, 16);
    let (entry_flags, entry_length, section_valid) = (20 + 23, 20 + 24, 92);
    let threshold = {
        let mut b = memory_error_record(p(4), Severity::Corrected, Profile::Qemu).encode();
        b[entry_flags] |= FLAG_ERROR_THRESHOLD_EXCEEDED;
        b
    };
    let revision_0x200 = {
        let mut entry = memory(11);
        entry.header.revision = 0x200;
        recoverable(vec![entry]).encode()
    };
    let raw_after = {
        let mut record = recoverable(vec![memory(10)]);
        record.raw_data = vec![0xaa; 16];
        record.status.raw_data_offset = record.encoded_len() as u32 - 16;
        record.status.raw_data_length = 16;
        record.encode()
    };
    let header_overrun = {
        // A second "entry" of 70 bytes, too few for its 72-byte header.
        let mut b = with(qemu(12), data_length, 152 + 70);
        b.resize(172 + 70, 0);
        b[172 + 20..172 + 22].copy_from_slice(&0x300u16.to_le_bytes());
        b
    };
    let mut unknown_type = qemu(12);
    unknown_type[20] ^= 0xff;
    let cases = [
        ("qemu-profile", qemu(0)),
        // Byte for byte the one before, within `ghes_estatus_cached`'s 10 s: a HED source
        // handles it again (the cache only stops the printing), an SEA would drop it.
        ("qemu-profile-again", qemu(0)),
        (
            "strict-profile",
            memory_error_record(p(1), Severity::Recoverable, Profile::Strict).encode(),
        ),
        (
            "two-memory-sections",
            recoverable(vec![memory(2), memory(3)]).encode(),
        ),
        ("corrected-threshold-exceeded", threshold),
        (
            "corrected",
            memory_error_record(p(5), Severity::Corrected, Profile::Qemu).encode(),
        ),
        ("address-not-valid", {
            let mut b = qemu(6);
            b[section_valid + 1] = 0;
            b[section_valid] &= !2;
            b
        }),
        ("block-corrected", with(qemu(7), severity, 2)),
        ("unknown-section-type", unknown_type),
        ("arm-cache-error-type-0", arm(8, 0)),
        ("arm-cache-error-type-bit-1", arm(9, 2)),
        ("raw-data-after-entries", raw_after),
        ("entry-revision-0x200", revision_0x200),
        ("no-entries", recoverable(vec![]).encode()),
        ("data-length-63", with(qemu(12), data_length, 63)),
        (
            "data-length-past-the-block",
            with(qemu(12), data_length, offer.source.error_block_length),
        ),
        (
            "data-length-wraps",
            with(qemu(12), data_length, 0xffff_fff0),
        ),
        ("raw-data-inside-entries", {
            with(with(qemu(12), raw_offset, 171), raw_length, 1)
        }),
        ("entry-header-overrun", header_overrun),
        ("entry-overrun", with(qemu(12), entry_length, 81)),
        ("block-status-zero", with(qemu(12), 0, 0)),
        (
            "fatal",
            memory_error_record(p(13), Severity::Fatal, Profile::Qemu).encode(),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, record)| Case {
            name: name.to_owned(),
            record,
        })
        .collect()
}

/// What the guest did with one record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// QEMU's refusal to write the record, if it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The kernel wrote the Read Ack register.
    pub acknowledged: bool,
    /// The kernel's GHES warnings that name a rejection (`Rejection::WARNINGS`).
    pub warnings: Vec<String>,
    /// The page frames the kernel's `Memory failure:` lines name, in order.
    pub memory_failure: Vec<u64>,
    /// How much /proc/meminfo's HardwareCorrupted grew, in kB.
    pub corrupted_kb: u64,
    /// The kernel panicked.
    pub panicked: bool,
    /// The console's lines meanwhile, timestamps dropped.
    pub lines: Vec<String>,
}

/// What the model's response says the guest must show, given the frames earlier records
/// had poisoned (`poisoned`, which this extends): a page poisoned again adds nothing to
/// HardwareCorrupted. None for a response the guest cannot show one record at a time (a
/// hang, a read outside the copy, an exception).
pub fn expected(response: &LinuxResponse, poisoned: &mut Vec<u64>) -> Option<Seen> {
    let mut seen = Seen::default();
    match response {
        LinuxResponse::Handled { memory_failure, .. } => {
            seen.acknowledged = true;
            for call in memory_failure {
                let pfn = call.address >> GUEST_PAGE_SHIFT;
                // Soft offline says nothing on the console (mm/memory-failure.c
                // soft_offline_page); both count the page once it is poisoned.
                if call.flags != MfFlags::SoftOffline {
                    seen.memory_failure.push(pfn);
                }
                if !poisoned.contains(&pfn) {
                    poisoned.push(pfn);
                    seen.corrupted_kb += (1 << GUEST_PAGE_SHIFT) / 1024;
                }
            }
        }
        LinuxResponse::Rejected { reason } => {
            seen.acknowledged = response.acknowledged()?;
            seen.warnings.extend(reason.warning().map(str::to_owned));
        }
        LinuxResponse::Panic {
            cause: PanicCause::Ghes { .. },
        } => seen.panicked = true,
        _ => return None,
    }
    Some(seen)
}

/// Where `seen` differs from `expected`, in words; empty when they agree. A panic ends
/// the VM before anything else can be read, so only the panic is compared then.
pub fn disagreements(expected: &Seen, seen: &Seen) -> Vec<String> {
    let mut out: Vec<String> = seen
        .refused
        .iter()
        .map(|refusal| format!("QEMU refused the record: {refusal}"))
        .collect();
    let mut compared = vec![(
        "panicked",
        expected.panicked.to_string(),
        seen.panicked.to_string(),
    )];
    if !expected.panicked {
        compared.extend([
            (
                "acknowledged",
                expected.acknowledged.to_string(),
                seen.acknowledged.to_string(),
            ),
            (
                "warnings",
                format!("{:?}", expected.warnings),
                format!("{:?}", seen.warnings),
            ),
            (
                "memory_failure() frames",
                format!("{:#x?}", expected.memory_failure),
                format!("{:#x?}", seen.memory_failure),
            ),
            (
                "HardwareCorrupted growth in kB",
                expected.corrupted_kb.to_string(),
                seen.corrupted_kb.to_string(),
            ),
        ]);
    }
    out.extend(
        compared
            .into_iter()
            .filter(|(_, e, s)| e != s)
            .map(|(what, e, s)| format!("{what}: expected {e}, seen {s}")),
    );
    out
}

/// Boots the Linux guest (`kernel`, `initrd`) under `prefix` with `firmware`, feeds it the
/// records `cases` makes of what it offers, one at a time, and powers it off; `limit` for
/// the whole run. A record after which the VM ended is the last one fed. Returns what the
/// guest offered and each record with what the guest did.
///
/// # Errors
///
/// The harness's own failures, a guest that never offered its pages or has no QMP
/// source, a QMP session that broke.
pub fn feed(
    prefix: Launch,
    firmware: &Path,
    (kernel, initrd): (&Path, &Path),
    cases: impl FnOnce(&Offer) -> Vec<Case>,
    dir: &Path,
    limit: Duration,
) -> Result<(Offer, Vec<(Case, Seen)>), String> {
    let console = dir.join("linux-console");
    let socket = dir.join("qmp.sock");
    let l = qemu_linux(
        prefix,
        Some(firmware),
        kernel,
        initrd,
        "console=ttyAMA0 oops=panic panic=-1 -- records",
        &console,
    );
    let mut vmm = Process::start(&with_qmp(l, &socket))?;
    let fed = feed_all(&mut vmm, &console, &socket, cases, limit);
    let _ = vmm.end(&[])?;
    fed.map_err(|e| {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{e}; console tail:\n{}", tail.join("\n"))
    })
}

fn feed_all(
    vmm: &mut Process,
    console: &Path,
    socket: &Path,
    cases: impl FnOnce(&Offer) -> Vec<Case>,
    limit: Duration,
) -> Result<(Offer, Vec<(Case, Seen)>), String> {
    let start = Instant::now();
    let (page, offer) = loop {
        if vmm.child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Err("QEMU ended before the guest offered its pages".into());
        }
        if start.elapsed() > limit {
            return Err("the guest never offered its pages".into());
        }
        let text = std::fs::read_to_string(console).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        if let Some(page) = complete.lines().find_map(ready) {
            break (page, offer(complete)?);
        }
        std::thread::sleep(POLL);
    };
    let remote = Remote::open(vmm.child.id()).map_err(|e| e.to_string())?;
    let ram = guest_ram(&remote, page.flag)?.ok_or("the guest's flag page is in no mapping")?;
    let mut qmp = Qmp::connect(socket, Duration::from_secs(10))?;
    let mut fed = Vec::new();
    for case in cases(&offer) {
        if start.elapsed() > limit {
            return Err(format!("out of time before {}", case.name));
        }
        let seen = feed_one(vmm, console, &remote, &ram, &mut qmp, &offer.source, &case)?;
        let ended = seen.panicked || vmm.child.try_wait().map_err(|e| e.to_string())?.is_some();
        fed.push((case, seen));
        if ended {
            return Ok((offer, fed));
        }
    }
    let go = ram.hva(page.flag + 8).ok_or("the flag page moved")?;
    remote
        .write(go, &GO.to_le_bytes())
        .map_err(|e| format!("the go-ahead: {e}"))?;
    // The guest powers off.
    while start.elapsed() < limit {
        if vmm.child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        std::thread::sleep(POLL);
    }
    Ok((offer, fed))
}

/// Feeds one record and reads what the guest did.
fn feed_one(
    vmm: &mut Process,
    console: &Path,
    remote: &Remote,
    ram: &GuestRam,
    qmp: &mut Qmp,
    source: &QmpSource,
    case: &Case,
) -> Result<Seen, String> {
    let read_ack = ram
        .hva(source.read_ack)
        .ok_or("the Read Ack register is outside guest RAM")?;
    let ack = || -> Result<u64, String> {
        let mut word = [0u8; 8];
        remote
            .read(read_ack, &mut word)
            .map_err(|e| format!("read Read Ack: {e}"))?;
        Ok(u64::from_le_bytes(word))
    };
    // A record the kernel left unacknowledged keeps QEMU from writing the next one: set
    // Read Ack again, as a reboot of the guest would.
    if ack()? == 0 {
        remote
            .write(read_ack, &READ_ACK_INITIAL.to_le_bytes())
            .map_err(|e| format!("re-arm Read Ack: {e}"))?;
    }
    let before = std::fs::read_to_string(console).unwrap_or_default();
    let cper = base64::engine::general_purpose::STANDARD.encode(&case.record);
    let answer = qmp.execute("inject-ghes-v2-error", json!({ "cper": cper }))?;
    let mut seen = Seen {
        refused: answer.err(),
        ..Seen::default()
    };
    let start = Instant::now();
    let (mut text, mut changed) = (before.clone(), Instant::now());
    loop {
        let mut ended = vmm.child.try_wait().map_err(|e| e.to_string())?.is_some();
        let now = std::fs::read_to_string(console).unwrap_or_default();
        if now.len() != text.len() {
            (text, changed) = (now, Instant::now());
        }
        if !ended {
            // The VM may end between the two looks (a panic): then its memory is gone.
            match ack() {
                Ok(value) => seen.acknowledged = value != 0,
                Err(e) => ended = !ended_meanwhile(&mut vmm.child, e)?,
            }
        }
        let waited = seen.acknowledged || start.elapsed() > ACK_WAIT;
        if ended || (waited && changed.elapsed() > QUIET) {
            break;
        }
        std::thread::sleep(POLL);
    }
    let text = std::fs::read_to_string(console).unwrap_or(text);
    read_console(&before, &text, &mut seen);
    Ok(seen)
}

/// Fills in `seen` from what the console gained: `before` then `after`.
fn read_console(before: &str, after: &str, seen: &mut Seen) {
    let corrupted = |text: &str| {
        text.lines()
            .rev()
            .flat_map(messages)
            .filter_map(|m| m.strip_prefix("ras-linux: hardware-corrupted "))
            .find_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let new = after.get(before.len()..).unwrap_or("");
    seen.corrupted_kb = corrupted(after).saturating_sub(corrupted(before));
    for message in new.lines().flat_map(messages) {
        if let Some(rest) = message.split("GHES: ").nth(1) {
            if let Some(w) = Rejection::WARNINGS.iter().find(|w| rest.starts_with(**w)) {
                seen.warnings.push((*w).to_owned());
            }
        }
        if let Some(pfn) = message
            .strip_prefix("Memory failure: 0x")
            .and_then(|rest| rest.split(':').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        {
            seen.memory_failure.push(pfn);
        }
        seen.panicked |= message.starts_with("Kernel panic");
        seen.lines.push(message.to_owned());
    }
}

/// The init's `pages` and `hest` lines, read.
fn offer(text: &str) -> Result<Offer, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.split(&format!("ras-linux: {name} ")).nth(1))
            .map(str::trim)
            .ok_or(format!("the guest printed no {name} line"))
    };
    let pages = field("pages")?
        .split(',')
        .map(|p| u64::from_str_radix(p.trim_start_matches("0x"), 16))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| format!("pages: {e}"))?;
    let hex = field("hest")?;
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|e| format!("hest: {e}"))?;
    let hest = Hest::decode(&bytes).map_err(|e| format!("the guest's HEST: {e}"))?;
    let source = hest
        .sources
        .iter()
        .find_map(|s| match s {
            ErrorSource::Ghes(g) if g.notification.kind == NOTIFY_GPIO => {
                Some(g.read_ack.as_ref().map(|r| QmpSource {
                    error_block_length: g.error_status_block_length,
                    read_ack: r.register.address,
                }))
            }
            _ => None,
        })
        .flatten()
        .ok_or("the guest's HEST has no GHESv2 source notified by GPIO-signal (QEMU 11.1's QMP source)")?;
    Ok(Offer { pages, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cper::MemoryFailure;

    #[test]
    fn the_console_tells_what_the_kernel_did() {
        let before = "ras-linux: hardware-corrupted 4 kB\n";
        // The init's line and the kernel's share the serial port.
        let after = format!(
            "{before}[   40.1] {{3}}[Hardware Error]: event severity: recoverable\n\
             ras-linux: hardware-corrupted 8 kB[   40.2] Memory failure: 0x4567f: \
             recovery action for dirty LRU page: Recovered\n\
             [   41.0] [Firmware Warn]: GHES: Invalid CPER header!\n"
        );
        let mut seen = Seen::default();
        read_console(before, &after, &mut seen);
        assert_eq!(seen.memory_failure, [0x4567f]);
        assert_eq!(seen.corrupted_kb, 4);
        assert_eq!(seen.warnings, ["Invalid CPER header!"]);
        assert_eq!(
            seen.lines,
            [
                "{3}[Hardware Error]: event severity: recoverable",
                "ras-linux: hardware-corrupted 8 kB",
                "Memory failure: 0x4567f: recovery action for dirty LRU page: Recovered",
                "[Firmware Warn]: GHES: Invalid CPER header!",
            ]
        );
        assert!(!seen.panicked);
    }

    #[test]
    fn a_wrong_outcome_disagrees() {
        let handled = LinuxResponse::Handled {
            memory_failure: vec![MemoryFailure {
                address: 0x4567_f000,
                flags: MfFlags::ActionOptional,
            }],
            force_sigbus: false,
        };
        let good = expected(&handled, &mut vec![]).expect("comparable");
        assert_eq!(good.memory_failure, [0x4567f]);
        assert_eq!(good.corrupted_kb, 4);
        // The same page again: memory_failure() all the same, nothing more poisoned.
        let again = expected(&handled, &mut vec![0x4567f]).expect("comparable");
        assert_eq!(
            (&again.memory_failure[..], again.corrupted_kb),
            (&[0x4567f][..], 0)
        );
        assert!(disagreements(&good, &good).is_empty());
        let wrong = [
            Seen {
                acknowledged: false,
                ..good.clone()
            },
            Seen {
                memory_failure: vec![],
                ..good.clone()
            },
            Seen {
                corrupted_kb: 0,
                ..good.clone()
            },
            Seen {
                warnings: vec!["Invalid CPER header!".into()],
                ..good.clone()
            },
            Seen {
                panicked: true,
                ..good.clone()
            },
            Seen {
                refused: Some("OSPM does not acknowledge previous error".into()),
                ..good.clone()
            },
        ];
        for seen in wrong {
            assert_eq!(disagreements(&good, &seen).len(), 1, "{seen:?}");
        }
        let rejected = LinuxResponse::Rejected {
            reason: Rejection::ZeroBlockStatus,
        };
        let quiet = expected(&rejected, &mut vec![]).expect("comparable");
        assert!(!quiet.acknowledged && quiet.warnings.is_empty());
        assert_eq!(disagreements(&quiet, &good).len(), 3);
        assert_eq!(expected(&LinuxResponse::Hang { at: 20 }, &mut vec![]), None);
    }
}
