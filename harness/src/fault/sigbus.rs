//! The process-wide SIGBUS recorder: every SIGBUS, which thread, which page, in order.
//!
//! The handler is async-signal-safe: it reads the siginfo, asks the kernel for the thread id
//! (`gettid`) and the monotonic clock (`clock_gettime`, async-signal-safe per POSIX), stores
//! them in a fixed ring of atomics and returns. Whoever runs the vCPU (or the test) drains
//! the ring with [`take_events`] and decides there.
//!
//! Returning from a SIGBUS re-executes the access that raised it. For a vCPU that is fine:
//! KVM sends the signal and `KVM_RUN` returns EINTR. For a *host* access to a poisoned page
//! the kernel forces SIGBUS again on every retry. Register such memory with [`repair_on_ar`]:
//! the handler then maps a fresh zero page (`MAP_FIXED` anonymous) over the signalled part
//! and the retried access succeeds. A fault SIGBUS that is not a memory error (misaligned or
//! truncated mapping) resets the default action, so the retry ends the process as it would
//! have without the handler, instead of looping.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// `BUS_MCEERR_AR`: hardware memory error consumed, action required
/// (include/uapi/asm-generic/siginfo.h).
pub const BUS_MCEERR_AR: i32 = 4;
/// `BUS_MCEERR_AO`: hardware memory error detected in the process but not consumed, action
/// optional (include/uapi/asm-generic/siginfo.h).
pub const BUS_MCEERR_AO: i32 = 5;
/// `BUS_ADRALN`, `BUS_ADRERR`, `BUS_OBJERR` (include/uapi/asm-generic/siginfo.h).
pub const BUS_ADRALN: i32 = 1;
pub const BUS_ADRERR: i32 = 2;
pub const BUS_OBJERR: i32 = 3;

/// `PR_MCE_KILL` and its arguments, include/uapi/linux/prctl.h.
const PR_MCE_KILL: libc::c_int = 33;
const PR_MCE_KILL_CLEAR: libc::c_ulong = 0;
const PR_MCE_KILL_SET: libc::c_ulong = 1;
const PR_MCE_KILL_LATE: libc::c_ulong = 0;
const PR_MCE_KILL_EARLY: libc::c_ulong = 1;
const PR_MCE_KILL_DEFAULT: libc::c_ulong = 2;
/// `PR_MCE_KILL_GET`, include/uapi/linux/prctl.h.
const PR_MCE_KILL_GET: libc::c_int = 34;

/// Events kept before the oldest unread one is overwritten (and counted in [`lost_events`]).
pub const RING_LEN: usize = 256;
/// Ranges [`repair_on_ar`] can hold at once.
pub const REPAIR_SLOTS: usize = 16;

/// What `si_code` says about a SIGBUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigbusCode {
    /// BUS_MCEERR_AR (4): the thread consumed poison.
    MceerrAr,
    /// BUS_MCEERR_AO (5): poison found in the process's memory, not yet consumed.
    MceerrAo,
    /// BUS_ADRALN (1), BUS_ADRERR (2), BUS_OBJERR (3): not a memory error.
    Fault(i32),
    /// `si_code <= 0`: sent by a process (kill, tgkill, sigqueue), not by a fault.
    Sent(i32),
    /// Anything else the kernel may add.
    Unknown(i32),
}

impl From<i32> for SigbusCode {
    fn from(code: i32) -> Self {
        match code {
            BUS_MCEERR_AR => SigbusCode::MceerrAr,
            BUS_MCEERR_AO => SigbusCode::MceerrAo,
            BUS_ADRALN | BUS_ADRERR | BUS_OBJERR => SigbusCode::Fault(code),
            c if c <= 0 => SigbusCode::Sent(c),
            c => SigbusCode::Unknown(c),
        }
    }
}

/// One SIGBUS as the handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigbusEvent {
    /// Order of arrival, from 0, over the life of the process.
    pub seq: u64,
    /// `si_code`; see [`SigbusEvent::code`].
    pub si_code: i32,
    /// `si_addr`: the host virtual address reported.
    pub si_addr: u64,
    /// `si_addr_lsb`: log2 of the size of the poisoned host page.
    pub si_addr_lsb: i16,
    /// Kernel thread id (gettid) of the thread that received the signal.
    pub tid: i32,
    /// CLOCK_MONOTONIC at the start of the handler, in nanoseconds.
    pub monotonic_ns: u64,
    /// True when the handler mapped a fresh page over a range registered with
    /// [`repair_on_ar`].
    pub repaired: bool,
}

impl SigbusEvent {
    /// `si_code` decoded.
    pub fn code(&self) -> SigbusCode {
        SigbusCode::from(self.si_code)
    }
}

/// One ring slot. `stamp` is 0 when never written, `2 * seq + 1` while the handler writes
/// event `seq`, `2 * seq + 2` once it is complete.
struct Slot {
    stamp: AtomicU64,
    code: AtomicI32,
    addr: AtomicU64,
    lsb: AtomicI32,
    tid: AtomicI32,
    ns: AtomicU64,
    repaired: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to initialise the array below
const EMPTY_SLOT: Slot = Slot {
    stamp: AtomicU64::new(0),
    code: AtomicI32::new(0),
    addr: AtomicU64::new(0),
    lsb: AtomicI32::new(0),
    tid: AtomicI32::new(0),
    ns: AtomicU64::new(0),
    repaired: AtomicBool::new(false),
};

static RING: [Slot; RING_LEN] = [EMPTY_SLOT; RING_LEN];
/// Sequence number of the next event.
static NEXT: AtomicU64 = AtomicU64::new(0);
/// First sequence number [`take_events`] has not returned yet.
static READ: Mutex<u64> = Mutex::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
/// Host page size, cached at install for the handler (sysconf is not async-signal-safe).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// A range the handler repairs: `start` 0 means free. `claimed` reserves the slot while
/// [`repair_on_ar`] fills it.
struct RepairSlot {
    claimed: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to initialise the array below
const FREE_REPAIR: RepairSlot = RepairSlot {
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};

static REPAIRS: [RepairSlot; REPAIR_SLOTS] = [FREE_REPAIR; REPAIR_SLOTS];

/// Why the recorder could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SigbusError {
    #[error("sigaction(SIGBUS): {0}")]
    Sigaction(#[source] io::Error),
    #[error("pthread_sigmask(SIG_UNBLOCK, SIGBUS): {0}")]
    Unblock(#[source] io::Error),
    #[error("prctl(PR_MCE_KILL): {0}")]
    Prctl(#[source] io::Error),
    #[error("all {REPAIR_SLOTS} repair slots are in use")]
    RepairSlotsFull,
    #[error("repair range {start:#x}+{len:#x} is empty, unaligned or overflows")]
    BadRepairRange { start: usize, len: usize },
}

unsafe extern "C" {
    /// The calling thread's errno (glibc and musl both export it).
    fn __errno_location() -> *mut libc::c_int;
}

/// The handler. Only atomics and async-signal-safe system calls (gettid, clock_gettime,
/// mmap, sigaction); errno is restored before returning.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    let errno = unsafe { *__errno_location() };
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; for SIGBUS the
    // fault fields (si_addr, si_addr_lsb) are the union members the kernel filled in.
    let (code, addr, lsb) = unsafe {
        let info = &*info;
        (info.si_code, info.si_addr() as u64, info.si_addr_lsb())
    };
    let ns = monotonic_ns();
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;

    let repaired = code == BUS_MCEERR_AR && repair(addr, lsb);
    record(code, addr, lsb, tid, ns, repaired);

    if code > 0 && code != BUS_MCEERR_AR && code != BUS_MCEERR_AO {
        // A fault that is not a memory error repeats forever if we return: restore the
        // default action so the retried access ends the process as it would have.
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask; sigaction is
        // async-signal-safe.
        unsafe {
            let dfl: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
        }
    }
    // SAFETY: as above.
    unsafe { *__errno_location() = errno };
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Appends one event to the ring (lock-free, from signal context).
fn record(code: i32, addr: u64, lsb: i16, tid: i32, ns: u64, repaired: bool) {
    let seq = NEXT.fetch_add(1, Ordering::AcqRel);
    let slot = &RING[(seq % RING_LEN as u64) as usize];
    slot.stamp.store(2 * seq + 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    slot.code.store(code, Ordering::Relaxed);
    slot.addr.store(addr, Ordering::Relaxed);
    slot.lsb.store(i32::from(lsb), Ordering::Relaxed);
    slot.tid.store(tid, Ordering::Relaxed);
    slot.ns.store(ns, Ordering::Relaxed);
    slot.repaired.store(repaired, Ordering::Relaxed);
    slot.stamp.store(2 * seq + 2, Ordering::Release);
}

/// The part of the signalled page `[addr & !(2^lsb - 1), + 2^lsb)` inside `[start, start+len)`,
/// widened to whole host pages; `None` when they do not meet. Pure, for the handler.
fn repair_span(
    addr: u64,
    lsb: i16,
    page_size: usize,
    start: usize,
    len: usize,
) -> Option<(usize, usize)> {
    let addr = usize::try_from(addr).ok()?;
    let end = start.checked_add(len)?;
    if !(start..end).contains(&addr) {
        return None;
    }
    // An absurd lsb still repairs the one host page that holds addr.
    let shift = u32::try_from(lsb)
        .ok()
        .filter(|&l| l < usize::BITS)
        .unwrap_or(page_size.trailing_zeros())
        .max(page_size.trailing_zeros());
    let size = 1usize << shift;
    let lo = (addr & !(size - 1)).max(start);
    let hi = (addr & !(size - 1)).saturating_add(size).min(end);
    Some((lo, hi - lo))
}

/// Maps a fresh zero page over the registered part of the signalled page. Signal context.
fn repair(addr: u64, lsb: i16) -> bool {
    let page_size = PAGE_SIZE.load(Ordering::Relaxed);
    for r in &REPAIRS {
        let start = r.start.load(Ordering::Acquire);
        if start == 0 {
            continue;
        }
        let len = r.len.load(Ordering::Acquire);
        let Some((lo, n)) = repair_span(addr, lsb, page_size, start, len) else {
            continue;
        };
        // SAFETY: [lo, lo + n) lies inside a range whose owner registered it for exactly
        // this replacement (repair_on_ar's contract); mmap is async-signal-safe.
        let p = unsafe {
            libc::mmap(
                lo as *mut libc::c_void,
                n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        return p != libc::MAP_FAILED;
    }
    false
}

static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// Installs the recorder for SIGBUS, once per process, and unblocks SIGBUS on the calling
/// thread. Flags: SA_SIGINFO (the handler needs siginfo), SA_ONSTACK (a thread with an
/// alternate signal stack uses it), SA_RESTART (other threads' system calls are not cut
/// short by an AO signal; `KVM_RUN` still returns EINTR, it is not restartable).
///
/// Threads inherit their creator's signal mask: a thread started with SIGBUS blocked must
/// call [`unblock_sigbus`], or a forced SIGBUS kills the process.
///
/// # Errors
///
/// [`SigbusError::Sigaction`] or [`SigbusError::Unblock`].
pub fn install() -> Result<(), SigbusError> {
    let result = INSTALLED.get_or_init(|| {
        PAGE_SIZE.store(super::host_page_size(), Ordering::Relaxed);
        // SAFETY: an all-zero sigaction is a valid value; handler, flags and an empty mask
        // are filled in before use.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        // SAFETY: act is a valid sigaction; on_sigbus has the SA_SIGINFO signature.
        let rc = unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    if let Err(errno) = result {
        return Err(SigbusError::Sigaction(io::Error::from_raw_os_error(*errno)));
    }
    unblock_sigbus()
}

/// Unblocks SIGBUS on the calling thread (a blocked forced SIGBUS kills the process).
///
/// # Errors
///
/// [`SigbusError::Unblock`].
pub fn unblock_sigbus() -> Result<(), SigbusError> {
    // SAFETY: set is a local sigset_t initialised by sigemptyset before use.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGBUS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SigbusError::Unblock(io::Error::from_raw_os_error(rc)))
    }
}

/// True when SIGBUS is blocked on the calling thread.
pub fn sigbus_blocked() -> bool {
    // SAFETY: old is a local sigset_t the call fills in; a null new set only queries.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        libc::sigismember(&old, libc::SIGBUS) == 1
    }
}

/// Every event recorded since the last call, oldest first. Events overwritten before they
/// were taken (more than [`RING_LEN`] unread) are counted in [`lost_events`].
pub fn take_events() -> Vec<SigbusEvent> {
    let mut read = READ.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    let next = NEXT.load(Ordering::Acquire);
    while *read < next {
        let seq = *read;
        let slot = &RING[(seq % RING_LEN as u64) as usize];
        let want = 2 * seq + 2;
        let before = slot.stamp.load(Ordering::Acquire);
        if before < want {
            break; // still being written: leave it for the next call
        }
        let event = SigbusEvent {
            seq,
            si_code: slot.code.load(Ordering::Relaxed),
            si_addr: slot.addr.load(Ordering::Relaxed),
            si_addr_lsb: slot.lsb.load(Ordering::Relaxed) as i16,
            tid: slot.tid.load(Ordering::Relaxed),
            monotonic_ns: slot.ns.load(Ordering::Relaxed),
            repaired: slot.repaired.load(Ordering::Relaxed),
        };
        std::sync::atomic::fence(Ordering::Acquire);
        if before == want && slot.stamp.load(Ordering::Relaxed) == want {
            out.push(event);
        } else {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
        *read += 1;
    }
    out
}

/// How many events were overwritten before [`take_events`] could return them.
pub fn lost_events() -> u64 {
    LOST.load(Ordering::Relaxed)
}

/// The calling thread's kernel thread id, to compare with [`SigbusEvent::tid`].
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Keeps a range registered with [`repair_on_ar`]; dropping it unregisters the range.
#[derive(Debug)]
pub struct RepairGuard {
    slot: usize,
}

impl Drop for RepairGuard {
    fn drop(&mut self) {
        let r = &REPAIRS[self.slot];
        r.start.store(0, Ordering::Release);
        r.len.store(0, Ordering::Release);
        r.claimed.store(false, Ordering::Release);
    }
}

/// Asks the handler to repair `[start, start + len)`: on a BUS_MCEERR_AR inside it, map a
/// fresh zero page over the signalled part so that the interrupted access, retried, reads
/// zeros instead of faulting forever. This applies to a vCPU's SIGBUS too: register only
/// memory the host itself will touch after poisoning it.
///
/// # Safety
///
/// The range is a private or shared mapping of this process that the caller owns and whose
/// content may be replaced by zero pages at any time while the guard lives; nothing else
/// (a KVM memslot the test still relies on, a hugetlbfs file it reads back) depends on the
/// pages staying the same mapping.
///
/// # Errors
///
/// [`SigbusError::BadRepairRange`] or [`SigbusError::RepairSlotsFull`].
pub unsafe fn repair_on_ar(start: usize, len: usize) -> Result<RepairGuard, SigbusError> {
    let page = super::host_page_size();
    if start == 0 || len == 0 || !start.is_multiple_of(page) || start.checked_add(len).is_none() {
        return Err(SigbusError::BadRepairRange { start, len });
    }
    for (slot, r) in REPAIRS.iter().enumerate() {
        if r.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            r.len.store(len, Ordering::Release);
            r.start.store(start, Ordering::Release);
            return Ok(RepairGuard { slot });
        }
    }
    Err(SigbusError::RepairSlotsFull)
}

/// Which process gets told about poison found in memory it maps but has not touched
/// (`PR_MCE_KILL`, include/uapi/linux/prctl.h; the policy is per thread: it sets
/// PF_MCE_PROCESS/PF_MCE_EARLY on the calling thread, and memory_failure() sends the AO
/// signal to a thread that has both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MceKill {
    /// `PR_MCE_KILL_EARLY`: SIGBUS BUS_MCEERR_AO as soon as the poison is found.
    Early,
    /// `PR_MCE_KILL_LATE`: no signal until the page is touched (then BUS_MCEERR_AR).
    Late,
    /// `PR_MCE_KILL_DEFAULT`: follow the vm.memory_failure_early_kill sysctl.
    Default,
}

/// Sets the calling thread's memory-error kill policy.
///
/// # Errors
///
/// [`SigbusError::Prctl`].
pub fn set_mce_kill(policy: MceKill) -> Result<(), SigbusError> {
    let (op, arg) = match policy {
        MceKill::Early => (PR_MCE_KILL_SET, PR_MCE_KILL_EARLY),
        MceKill::Late => (PR_MCE_KILL_SET, PR_MCE_KILL_LATE),
        MceKill::Default => (PR_MCE_KILL_CLEAR, 0),
    };
    // SAFETY: prctl with integer arguments only; arg4 and arg5 must be 0.
    let rc = unsafe { libc::prctl(PR_MCE_KILL, op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SigbusError::Prctl(io::Error::last_os_error()))
    }
}

/// The calling thread's memory-error kill policy (`PR_MCE_KILL_GET`).
///
/// # Errors
///
/// [`SigbusError::Prctl`], also for a value this code does not know.
pub fn mce_kill() -> Result<MceKill, SigbusError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            PR_MCE_KILL_GET,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match u64::try_from(rc).map(|v| v as libc::c_ulong) {
        Ok(PR_MCE_KILL_EARLY) => Ok(MceKill::Early),
        Ok(PR_MCE_KILL_LATE) => Ok(MceKill::Late),
        Ok(PR_MCE_KILL_DEFAULT) => Ok(MceKill::Default),
        Ok(other) => Err(SigbusError::Prctl(io::Error::other(format!(
            "PR_MCE_KILL_GET returned {other}"
        )))),
        Err(_) => Err(SigbusError::Prctl(io::Error::last_os_error())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring is process-wide: tests that raise or record events hold this.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn codes_decode_with_catch_alls() {
        assert_eq!(SigbusCode::from(4), SigbusCode::MceerrAr);
        assert_eq!(SigbusCode::from(5), SigbusCode::MceerrAo);
        assert_eq!(SigbusCode::from(2), SigbusCode::Fault(2));
        assert_eq!(SigbusCode::from(0), SigbusCode::Sent(0)); // SI_USER
        assert_eq!(SigbusCode::from(-6), SigbusCode::Sent(-6)); // SI_TKILL
        assert_eq!(SigbusCode::from(9), SigbusCode::Unknown(9));
    }

    #[test]
    fn repair_span_clips_to_the_registered_range() {
        // 4 KiB page inside a registered 64 KiB range.
        assert_eq!(
            repair_span(0x1_3010, 12, 4096, 0x1_0000, 0x1_0000),
            Some((0x1_3000, 0x1000))
        );
        // A 2 MiB page over a 64 KiB range: only the range is replaced.
        assert_eq!(
            repair_span(0x21_3000, 21, 4096, 0x21_0000, 0x1_0000),
            Some((0x21_0000, 0x1_0000))
        );
        // Outside: nothing.
        assert_eq!(repair_span(0x2_0000, 12, 4096, 0x1_0000, 0x1_0000), None);
        // lsb below the host page size or absurd: one host page.
        assert_eq!(
            repair_span(0x1_5000, 3, 16384, 0x1_0000, 0x1_0000),
            Some((0x1_4000, 0x4000))
        );
        assert_eq!(
            repair_span(0x1_5000, -1, 4096, 0x1_0000, 0x1_0000),
            Some((0x1_5000, 0x1000))
        );
        assert_eq!(
            repair_span(0x1_5000, 200, 4096, 0x1_0000, 0x1_0000),
            Some((0x1_5000, 0x1000))
        );
    }

    #[test]
    fn ring_returns_events_in_order_and_counts_overwrites() {
        let _s = serial();
        let _ = take_events();
        let lost_before = lost_events();
        for i in 0..3 {
            record(BUS_MCEERR_AR, 0x1000 * i, 12, 42, i, false);
        }
        let events = take_events();
        assert_eq!(events.len(), 3);
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(events[2].si_addr, 0x2000);
        assert_eq!(events[2].code(), SigbusCode::MceerrAr);
        assert!(take_events().is_empty());

        // RING_LEN + 5 unread events: the 5 oldest are gone, the rest come back in order.
        for i in 0..RING_LEN as u64 + 5 {
            record(BUS_MCEERR_AO, i, 21, 7, i, true);
        }
        let events = take_events();
        assert_eq!(events.len(), RING_LEN);
        assert_eq!(lost_events() - lost_before, 5);
        assert_eq!(events[0].si_addr, 5);
        assert_eq!(events[0].si_addr_lsb, 21);
        assert!(events[0].repaired);
    }

    #[test]
    fn handler_records_a_sent_sigbus_with_this_thread() {
        let _s = serial();
        install().unwrap();
        let _ = take_events();
        assert!(!sigbus_blocked());
        let me = gettid();
        // SAFETY: raise sends SIGBUS (SI_TKILL) to this thread; our handler is installed and
        // returns normally for a sent signal.
        assert_eq!(unsafe { libc::raise(libc::SIGBUS) }, 0);
        let events = take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].tid, me);
        assert!(
            matches!(events[0].code(), SigbusCode::Sent(_)),
            "{events:?}"
        );
        assert!(events[0].monotonic_ns > 0);
        assert!(!events[0].repaired);
    }

    #[test]
    fn handler_records_each_receiving_thread() {
        let _s = serial();
        install().unwrap();
        let _ = take_events();
        let tids: Vec<i32> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    unblock_sigbus().unwrap();
                    // SAFETY: as above, a sent SIGBUS to this thread.
                    unsafe { libc::raise(libc::SIGBUS) };
                    gettid()
                })
                .join()
                .unwrap()
            })
            .collect();
        let seen: Vec<i32> = take_events().iter().map(|e| e.tid).collect();
        assert_eq!(seen, tids);
    }

    #[test]
    fn bad_repair_ranges_are_refused() {
        // SAFETY: the calls fail before anything is registered.
        unsafe {
            assert!(matches!(
                repair_on_ar(0, 4096),
                Err(SigbusError::BadRepairRange { .. })
            ));
            assert!(matches!(
                repair_on_ar(0x1001, 4096),
                Err(SigbusError::BadRepairRange { .. })
            ));
            assert!(matches!(
                repair_on_ar(0x1000, 0),
                Err(SigbusError::BadRepairRange { .. })
            ));
        }
    }

    #[test]
    fn repair_slots_are_reused_after_drop() {
        let _s = serial();
        // SAFETY: nothing raises a memory-error SIGBUS in unit tests, so nothing is remapped.
        let guards: Vec<_> = (0..REPAIR_SLOTS)
            .map(|i| unsafe { repair_on_ar(0x1000_0000 + i * 0x1000, 0x1000) }.unwrap())
            .collect();
        // SAFETY: as above.
        let full = unsafe { repair_on_ar(0x2000_0000, 0x1000) };
        assert!(matches!(full, Err(SigbusError::RepairSlotsFull)));
        drop(guards);
        // SAFETY: as above.
        assert!(unsafe { repair_on_ar(0x2000_0000, 0x1000) }.is_ok());
    }

    #[test]
    fn mce_kill_policy_round_trips_on_this_thread() {
        // A fresh thread so the test runner's thread keeps its policy.
        std::thread::spawn(|| {
            set_mce_kill(MceKill::Early).unwrap();
            assert_eq!(mce_kill().unwrap(), MceKill::Early);
            set_mce_kill(MceKill::Late).unwrap();
            assert_eq!(mce_kill().unwrap(), MceKill::Late);
            set_mce_kill(MceKill::Default).unwrap();
            assert_eq!(mce_kill().unwrap(), MceKill::Default);
        })
        .join()
        .unwrap();
    }
}
