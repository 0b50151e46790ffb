//! End-to-end trials of `ras_harness::fault` on a real kernel, as root: every poisoning
//! method, the SIGBUS each one produces (code, si_addr, si_addr_lsb, receiving thread), and
//! giving the pages back.
//!
//! The SIGBUS handler and the ring are process-wide, so the trials hold one lock. Each
//! prints what it saw, with the kernel release, so a run documents the host it ran on.

use std::sync::Mutex;
use std::time::Duration;

use libtest_mimic::{Completion, Failed, Trial};
use ras_harness::fault::mce_kill::{self, MceKill};
use ras_harness::fault::repair;
use ras_harness::fault::sigbus::{self, SigbusEvent};
use ras_harness::fault::unpoison::{self, hardware_corrupted_kib};
use ras_harness::fault::{host_page_size, pagemap, GuestRanges, Method, Poisoner, SigbusCode};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "fault::madvise_anon_read_gets_ar_with_page_shift",
            madvise_anon_read,
        ),
        trial(
            "fault::hard_offline_early_kill_gets_ao_on_that_thread",
            early_kill_ao,
        ),
        trial("fault::hard_offline_then_read_gets_ar", hard_offline_read),
        trial("fault::soft_offline_migrates_without_signal", soft_offline),
        trial(
            "fault::hugetlb_page_read_gets_ar_with_huge_shift",
            hugetlb_read,
        ),
    ]
}

static SERIAL: Mutex<()> = Mutex::new(());

/// mmap's MAP_HUGE_2MB: log2 of the size above MAP_HUGE_SHIFT 26
/// (include/uapi/asm-generic/hugetlb_encode.h).
const MAP_HUGE_2MB: i32 = 21 << 26;

fn trial(name: &str, f: fn() -> Result<Completion, Failed>) -> Trial {
    Trial::ignorable_test(name, move || {
        let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !emuhost::is_root() {
            return Ok(Completion::ignored_with(
                "poisoning needs root (CAP_SYS_ADMIN)",
            ));
        }
        sigbus::install().map_err(|e| e.to_string())?;
        let _ = sigbus::take_events();
        f()
    })
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok {
        Ok(())
    } else {
        Err(why().into())
    }
}

/// (major, minor) of the running kernel.
fn kernel() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut n = r.split(['.', '-']).map(|x| x.trim().parse().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A private mapping owned by a trial, unmapped on drop.
struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    fn new(len: usize, extra_flags: libc::c_int) -> Result<Self, Failed> {
        // SAFETY: a fresh mapping chosen by the kernel; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {len:#x}: {}", std::io::Error::last_os_error()).into());
        }
        Ok(Self {
            addr: p as usize,
            len,
        })
    }

    /// Guest RAM made of this mapping.
    fn as_guest_ram(&self) -> GuestRanges {
        let mut r = GuestRanges::new();
        // SAFETY: the mapping is read-write, owned by the trial, and outlives the registry
        // (each trial drops the registry first).
        unsafe { r.add(self.addr, self.len) }.expect("a fresh mapping registers");
        r
    }

    fn read(&self, offset: usize) -> u8 {
        // SAFETY: offset < len in every trial; the mapping is readable. A poisoned page
        // raises SIGBUS, which the registered repair turns into a fresh zero page.
        unsafe { std::ptr::read_volatile((self.addr + offset) as *const u8) }
    }

    fn write(&self, offset: usize, value: u8) {
        // SAFETY: as for read; the mapping is writable.
        unsafe { std::ptr::write_volatile((self.addr + offset) as *mut u8, value) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the trial's own mapping.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

fn show(events: &[SigbusEvent], me: i32) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "[{:?} si_addr {:#x} lsb {} tid {}{}{}]",
                e.si_code,
                e.si_addr,
                e.si_addr_lsb,
                e.tid,
                if e.tid == me { " (this thread)" } else { "" },
                if e.repaired { " repaired" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unpoisons, then checks HardwareCorrupted, raised by the poison, is back to `start_kib`.
fn give_back(pages: &[ras_harness::fault::PoisonedPage], start_kib: u64) -> Result<(), Failed> {
    let poisoned_kib = hardware_corrupted_kib()?;
    let report = unpoison::unpoison(pages);
    let now = hardware_corrupted_kib()?;
    println!(
        "unpoison: {} given back, kept {:?}; HardwareCorrupted {start_kib} kB at start, \
         {poisoned_kib} kB poisoned, {now} kB after",
        report.given_back.len(),
        report
            .kept
            .iter()
            .map(|k| format!("{:#x}: {}", k.page.hva, k.why))
            .collect::<Vec<_>>()
    );
    check(report.kept.is_empty(), || {
        format!("pages kept: {:?}", report.kept)
    })?;
    check(now == start_kib, || {
        format!("HardwareCorrupted {now} kB, started at {start_kib} kB")
    })
}

/// MADV_HWPOISON on a touched anonymous page, then a read: BUS_MCEERR_AR for the page with
/// si_addr_lsb = PAGE_SHIFT on the reading thread; on 6.11+ also one for the poisoning
/// thread at injection time.
fn madvise_anon_read() -> Result<Completion, Failed> {
    let page = host_page_size();
    let start_kib = hardware_corrupted_kib()?;
    let map = Mapping::new(4 * page, 0)?;
    let ram = map.as_guest_ram();
    let target = map.addr + page;
    map.write(page, 0xa5);
    let me = sigbus::gettid();

    let poisoned = Poisoner::new(&ram)
        .poison(target, Method::MadviseHwpoison)
        .map_err(|e| e.to_string())?;
    let at_poison = sigbus::take_events();
    // SAFETY: the trial's own mapping; it may become zero pages.
    let _repair = unsafe { repair::repair_on_ar(map.addr, map.len) }?;
    let value = map.read(page);
    let at_read = sigbus::take_events();
    println!(
        "kernel {}: page {target:#x} pfn {:x?}; at madvise: {}; at read: {}; read {value:#x}",
        release(),
        poisoned.pfn,
        show(&at_poison, me),
        show(&at_read, me)
    );

    let shift = page.trailing_zeros() as i16;
    let ar_here = |e: &SigbusEvent| {
        e.si_code == SigbusCode::MceerrAr
            && e.si_addr == target as u64
            && e.si_addr_lsb == shift
            && e.tid == me
    };
    check(
        at_read.len() == 1 && ar_here(&at_read[0]) && at_read[0].repaired,
        || format!("expected one repaired AR at {target:#x} lsb {shift} on this thread"),
    )?;
    check(value == 0, || {
        format!("read {value:#x} after repair, expected 0")
    })?;
    let (major, minor) = kernel();
    if (major, minor) >= (6, 12) {
        check(at_poison.len() == 1 && ar_here(&at_poison[0]), || {
            "6.12+: the poisoning thread should get its own AR at madvise".into()
        })?;
    } else if (major, minor) < (6, 11) {
        check(at_poison.is_empty(), || {
            "before 6.11 madvise raises no signal".into()
        })?;
    }
    drop(ram);
    give_back(&[poisoned], start_kib)?;
    Ok(Completion::Completed)
}

/// hard_offline_page (no MF_ACTION_REQUIRED) with PR_MCE_KILL_EARLY set on a helper thread:
/// BUS_MCEERR_AO at injection, delivered to that thread, not to the poisoning one.
fn early_kill_ao() -> Result<Completion, Failed> {
    let page = host_page_size();
    let start_kib = hardware_corrupted_kib()?;
    let map = Mapping::new(2 * page, 0)?;
    let ram = map.as_guest_ram();
    map.write(0, 1);
    let me = sigbus::gettid();

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let r = sigbus::unblock_sigbus().and_then(|()| mce_kill::set_mce_kill(MceKill::Early));
        let _ = ready_tx.send(r.map(|()| sigbus::gettid()).map_err(|e| e.to_string()));
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    });
    let helper_tid = ready_rx.recv().map_err(|e| e.to_string())??;

    let poisoned = Poisoner::new(&ram).poison(map.addr, Method::HardOffline);
    // The AO is sent before the write returns; give the helper a moment to run its handler.
    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(sigbus::take_events());
        if !events.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = done_tx.send(());
    let _ = helper.join();
    let poisoned = poisoned.map_err(|e| e.to_string())?;
    println!(
        "kernel {}: early-kill helper tid {helper_tid}, poisoner tid {me}: {}",
        release(),
        show(&events, me)
    );
    check(events.len() == 1, || {
        format!("expected one event, got {}", events.len())
    })?;
    let e = events[0];
    check(e.si_code == SigbusCode::MceerrAo, || {
        format!("si_code {}", e.si_code)
    })?;
    check(e.tid == helper_tid, || format!("AO went to tid {}", e.tid))?;
    check(e.si_addr == map.addr as u64, || {
        format!("si_addr {:#x}", e.si_addr)
    })?;
    check(e.si_addr_lsb == page.trailing_zeros() as i16, || {
        format!("si_addr_lsb {}", e.si_addr_lsb)
    })?;
    drop(ram);
    drop(map);
    give_back(&[poisoned], start_kib)?;
    Ok(Completion::Completed)
}

/// hard_offline_page with the default (late) policy: no signal at injection; the next read
/// gets BUS_MCEERR_AR.
fn hard_offline_read() -> Result<Completion, Failed> {
    let page = host_page_size();
    let start_kib = hardware_corrupted_kib()?;
    let map = Mapping::new(page, 0)?;
    let ram = map.as_guest_ram();
    let me = sigbus::gettid();
    let poisoned = Poisoner::new(&ram)
        .poison(map.addr, Method::HardOffline)
        .map_err(|e| e.to_string())?;
    let at_poison = sigbus::take_events();
    // SAFETY: the trial's own mapping; it may become a zero page.
    let _repair = unsafe { repair::repair_on_ar(map.addr, map.len) }?;
    let value = map.read(0);
    let at_read = sigbus::take_events();
    println!(
        "kernel {}: pfn {:x?}; at hard offline: {}; at read: {}",
        release(),
        poisoned.pfn,
        show(&at_poison, me),
        show(&at_read, me)
    );
    check(at_poison.is_empty(), || {
        "no signal expected at injection".into()
    })?;
    check(
        at_read.len() == 1
            && at_read[0].si_code == SigbusCode::MceerrAr
            && at_read[0].tid == me
            && at_read[0].si_addr == map.addr as u64
            && at_read[0].si_addr_lsb == page.trailing_zeros() as i16,
        || "expected one AR for the page on this thread".into(),
    )?;
    check(value == 0, || format!("read {value:#x}"))?;
    drop(ram);
    give_back(&[poisoned], start_kib)?;
    Ok(Completion::Completed)
}

/// MADV_SOFT_OFFLINE: the content moves to a new frame, no signal, the old frame counts as
/// corrupted until given back.
fn soft_offline() -> Result<Completion, Failed> {
    let page = host_page_size();
    let start_kib = hardware_corrupted_kib()?;
    let map = Mapping::new(page, 0)?;
    let ram = map.as_guest_ram();
    for i in 0..page {
        map.write(i, (i % 251) as u8);
    }
    let poisoned = Poisoner::new(&ram)
        .poison(map.addr, Method::SoftOffline)
        .map_err(|e| e.to_string())?;
    let events = sigbus::take_events();
    let new_pfn = pagemap::read_entry(map.addr, page)?.pfn(map.addr)?;
    let during_kib = hardware_corrupted_kib()?;
    let intact = (0..page).all(|i| map.read(i) == (i % 251) as u8);
    println!(
        "kernel {}: pfn {:x?} -> {new_pfn:#x}; signals {}; content intact {intact}; \
         HardwareCorrupted {start_kib} -> {during_kib} kB",
        release(),
        poisoned.pfn,
        events.len()
    );
    check(events.is_empty(), || format!("{} signals", events.len()))?;
    check(intact, || "content changed".into())?;
    check(poisoned.pfn.is_some_and(|old| old != new_pfn), || {
        "the page did not move to a new frame".into()
    })?;
    check(during_kib == start_kib + page as u64 / 1024, || {
        format!(
            "HardwareCorrupted {during_kib} kB, expected +{} kB",
            page / 1024
        )
    })?;
    drop(ram);
    give_back(&[poisoned], start_kib)?;
    Ok(Completion::Completed)
}

/// MADV_HWPOISON on one base page inside a 2 MiB hugetlb page, then a read: AR with
/// si_addr_lsb 21 and si_addr inside the huge page. The 2 MiB pool, not the default size
/// of /proc/meminfo: that is 32 MiB on a 16 KiB host, where 2 MiB is a contiguous-PTE
/// huge page (Documentation/arch/arm64/hugetlbpage.rst); the host's own fault path
/// signals the hstate's shift either way (arch/arm64/mm/fault.c, VM_FAULT_HWPOISON_LARGE).
fn hugetlb_read() -> Result<Completion, Failed> {
    // The 2 MiB pool exists with 4 KiB pages (a PMD) and 16 KiB pages (128 contiguous
    // PTEs) alike.
    if ras_harness::host::probe().support.hugetlb_2m_free == 0 {
        return Ok(Completion::ignored_with(
            "no free 2 MiB huge pages reserved",
        ));
    }
    let huge: usize = 2 << 20;
    let page = host_page_size();
    let start_kib = hardware_corrupted_kib()?;
    let map = Mapping::new(huge, libc::MAP_HUGETLB | MAP_HUGE_2MB)?;
    let ram = map.as_guest_ram();
    let offset = 3 * page;
    map.write(offset, 0x5a);
    let me = sigbus::gettid();
    let poisoned = Poisoner::new(&ram)
        .poison(map.addr + offset, Method::MadviseHwpoison)
        .map_err(|e| e.to_string())?;
    let at_poison = sigbus::take_events();
    // SAFETY: the trial's own mapping; it may become zero pages.
    let _repair = unsafe { repair::repair_on_ar(map.addr, map.len) }?;
    let value = map.read(offset);
    let at_read = sigbus::take_events();
    println!(
        "kernel {}: hugetlb {huge:#x} at {:#x}, poisoned +{offset:#x} pfn {:x?}; at madvise: {}; at read: {}",
        release(),
        map.addr,
        poisoned.pfn,
        show(&at_poison, me),
        show(&at_read, me)
    );
    let shift = huge.trailing_zeros() as i16;
    check(
        at_read.len() == 1
            && at_read[0].si_code == SigbusCode::MceerrAr
            && at_read[0].tid == me
            && at_read[0].si_addr_lsb == shift
            && (map.addr..map.addr + huge).contains(&(at_read[0].si_addr as usize)),
        || format!("expected one AR with lsb {shift} inside the huge page"),
    )?;
    check(value == 0, || format!("read {value:#x}"))?;
    drop(ram);
    drop(map);
    give_back(&[poisoned], start_kib)?;
    Ok(Completion::Completed)
}
