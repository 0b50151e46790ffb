//! The process-wide SIGBUS recorder: every SIGBUS, which thread, which page, in order.
//!
//! The handler reads the siginfo, asks the kernel for the thread id and the monotonic
//! clock, stores them in a fixed ring of atomics, bumps an eventfd so that a thread
//! waiting for an event ([`wait_for_event`]) wakes, and returns. Whoever runs the vCPU (or
//! the test) drains the ring with [`take_events`] (or, allocating nothing,
//! [`take_events_into`]) and decides there.
//!
//! Returning from a SIGBUS re-executes the access that raised it: on a BUS_MCEERR_AR the
//! handler first repairs host memory registered with
//! [`repair_on_ar`](super::repair::repair_on_ar). A fault SIGBUS that is not a memory error
//! (misaligned or truncated mapping) resets the default action, so the retry ends the
//! process as it would have without the handler, instead of looping.
//!
//! The handler is async-signal-safe with glibc and musl alike. It calls `gettid`, `write`
//! (the eventfd) and, for a repair, `mmap` as raw system calls (`syscall()` takes no lock;
//! musl's `mmap` wrapper does); `clock_gettime` and `sigaction`, both on POSIX's list and lock-free in musl for
//! SIGBUS (src/time/clock_gettime.c calls the vDSO or traps, src/signal/sigaction.c locks
//! only for SIGABRT); and saves errno first, restores it last.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::repair::{self, REPAIR_SLOTS};
use super::SigbusCode;

/// Events kept before the oldest unread one is overwritten (and counted in [`lost_events`]).
pub const RING_LEN: usize = 256;

/// One SIGBUS as the handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigbusEvent {
    /// Order of arrival, from 0, over the life of the process.
    pub seq: u64,
    /// `si_code`, decoded.
    pub si_code: SigbusCode,
    /// `si_addr`: the host virtual address reported.
    pub si_addr: u64,
    /// `si_addr_lsb`: log2 of the size of the poisoned host page.
    pub si_addr_lsb: i16,
    /// Kernel thread id (gettid) of the thread that received the signal.
    pub tid: i32,
    /// CLOCK_MONOTONIC at the start of the handler, in nanoseconds.
    pub monotonic_ns: u64,
    /// True when the handler mapped a fresh page over a range registered with
    /// [`repair_on_ar`](super::repair::repair_on_ar).
    pub repaired: bool,
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
/// The eventfd the handler bumps after each event (-1 until [`install`] made it).
static EVENTS: AtomicI32 = AtomicI32::new(-1);

/// Why setting up SIGBUS handling failed: the recorder, a thread's kill policy
/// ([`mce_kill`](super::mce_kill)) or a repair range ([`repair`]). One type,
/// since callers chain these steps.
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

/// The handler: atomics, pure code and the async-signal-safe calls of the module docs.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot (a thread-pointer read in
    // glibc and musl), valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; for SIGBUS the
    // fault fields (si_addr, si_addr_lsb) are the union members the kernel filled in.
    let (code, addr, lsb) = unsafe {
        let info = &*info;
        (info.si_code, info.si_addr() as u64, info.si_addr_lsb())
    };
    let code = SigbusCode::from_raw(code);
    let ns = monotonic_ns();
    let tid = gettid();

    let repaired = code == SigbusCode::MceerrAr && repair::repair(addr, lsb);
    record(code, addr, lsb, tid, ns, repaired);
    notify();

    if matches!(code, SigbusCode::Fault(_) | SigbusCode::Unknown(_)) {
        // A fault that is not a memory error repeats forever if we return: restore the
        // default action so the retried access ends the process as it would have.
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask; sigaction is
        // async-signal-safe (POSIX; musl's takes its lock only for SIGABRT).
        unsafe {
            let dfl: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists;
    // clock_gettime is async-signal-safe (POSIX; musl's calls the vDSO or traps).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Appends one event to the ring (lock-free, from signal context).
fn record(code: SigbusCode, addr: u64, lsb: i16, tid: i32, ns: u64, repaired: bool) {
    let seq = NEXT.fetch_add(1, Ordering::AcqRel);
    write_slot(seq, code, addr, lsb, tid, ns, repaired);
}

/// Writes event `seq` into its slot: atomic stores only, nothing that can block, so a
/// reader can wait for a slot whose number is taken ([`take_events_into`]).
fn write_slot(seq: u64, code: SigbusCode, addr: u64, lsb: i16, tid: i32, ns: u64, repaired: bool) {
    let slot = &RING[(seq % RING_LEN as u64) as usize];
    slot.stamp.store(2 * seq + 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    slot.code.store(code.raw(), Ordering::Relaxed);
    slot.addr.store(addr, Ordering::Relaxed);
    slot.lsb.store(i32::from(lsb), Ordering::Relaxed);
    slot.tid.store(tid, Ordering::Relaxed);
    slot.ns.store(ns, Ordering::Relaxed);
    slot.repaired.store(repaired, Ordering::Relaxed);
    slot.stamp.store(2 * seq + 2, Ordering::Release);
}

/// Adds 1 to the eventfd, if there is one: a raw write(2) of 8 bytes (eventfd(2)); a full
/// counter (EAGAIN, non-blocking) is fine, the waiter is awake anyway.
fn notify() {
    let fd = EVENTS.load(Ordering::Acquire);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our own eventfd; a raw system call
        // takes no lock.
        unsafe {
            libc::syscall(
                libc::SYS_write,
                libc::c_long::from(fd),
                &one as *const u64,
                8,
            )
        };
    }
}

/// Waits up to `timeout` for the handler to record an event, and clears the wake-up; true
/// when one came (the events are then in the ring). Without [`install`], or if the eventfd
/// could not be made, it only sleeps.
pub fn wait_for_event(timeout: std::time::Duration) -> bool {
    let fd = EVENTS.load(Ordering::Acquire);
    if fd < 0 {
        std::thread::sleep(timeout);
        return false;
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for our own eventfd.
    if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
        return false;
    }
    let mut count = 0u64;
    // SAFETY: reads the 8-byte counter into a live local (non-blocking: it was readable).
    unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
    true
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
        if rc != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // SAFETY: eventfd with no pointer arguments; -1 on failure leaves waiters sleeping.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        EVENTS.store(fd, Ordering::Release);
        Ok(())
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
    let mut out = Vec::new();
    take_events_into(&mut out);
    out
}

/// As [`take_events`], appending to `out`: with room for [`RING_LEN`] events it allocates
/// nothing, for the memory-error path.
pub fn take_events_into(out: &mut Vec<SigbusEvent>) {
    let mut read = READ.lock().unwrap_or_else(|e| e.into_inner());
    let next = NEXT.load(Ordering::Acquire);
    while *read < next {
        let seq = *read;
        let slot = &RING[(seq % RING_LEN as u64) as usize];
        let want = 2 * seq + 2;
        let mut before = slot.stamp.load(Ordering::Acquire);
        // A handler on another thread took this number and is still writing the slot.
        // Waiting is bounded (write_slot cannot block); stopping here instead would hide
        // the later, complete events, and a vCPU whose own SIGBUS is among them would take
        // its EINTR for a stray signal and run the poisoned access again.
        while before < want {
            std::thread::yield_now();
            before = slot.stamp.load(Ordering::Acquire);
        }
        let event = SigbusEvent {
            seq,
            si_code: SigbusCode::from_raw(slot.code.load(Ordering::Relaxed)),
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
}

/// How many events were overwritten before [`take_events`] could return them.
pub fn lost_events() -> u64 {
    LOST.load(Ordering::Relaxed)
}

/// The calling thread's kernel thread id, to compare with [`SigbusEvent::tid`]. The raw
/// system call, so the handler can use it too.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail; syscall() only traps.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The ring is process-wide: tests that raise or record events hold this.
    static SERIAL: Mutex<()> = Mutex::new(());

    pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn ring_returns_events_in_order_and_counts_overwrites() {
        let _s = serial();
        let _ = take_events();
        let lost_before = lost_events();
        for i in 0..3 {
            record(SigbusCode::MceerrAr, 0x1000 * i, 12, 42, i, false);
        }
        let events = take_events();
        assert_eq!(events.len(), 3);
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(events[2].si_addr, 0x2000);
        assert_eq!(events[2].si_code, SigbusCode::MceerrAr);
        assert!(take_events().is_empty());

        // RING_LEN + 5 unread events: the 5 oldest are gone, the rest come back in order.
        for i in 0..RING_LEN as u64 + 5 {
            record(SigbusCode::MceerrAo, i, 21, 7, i, true);
        }
        let events = take_events();
        assert_eq!(events.len(), RING_LEN);
        assert_eq!(lost_events() - lost_before, 5);
        assert_eq!(events[0].si_addr, 5);
        assert_eq!(events[0].si_addr_lsb, 21);
        assert!(events[0].repaired);
    }

    #[test]
    fn a_drain_waits_for_an_event_still_being_written() {
        use std::time::Duration;
        let _s = serial();
        let _ = take_events();
        // One handler has taken its number but not written its slot yet; a later one has.
        let first = NEXT.fetch_add(1, Ordering::AcqRel);
        record(SigbusCode::MceerrAr, 0x2000, 12, 2, 0, false);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            write_slot(first, SigbusCode::MceerrAr, 0x1000, 12, 1, 0, false);
        });
        let tids: Vec<i32> = take_events().iter().map(|e| e.tid).collect();
        writer.join().unwrap();
        assert_eq!(tids, [1, 2]);
    }

    #[test]
    fn a_waiter_wakes_on_an_event_and_times_out_without_one() {
        use std::time::{Duration, Instant};
        let _s = serial();
        install().unwrap();
        let _ = take_events();
        // Nothing pending: a clear wake-up, then a wait that times out.
        wait_for_event(Duration::ZERO);
        let start = Instant::now();
        assert!(!wait_for_event(Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(40));
        // SAFETY: as in handler_records_a_sent_sigbus_with_this_thread.
        assert_eq!(unsafe { libc::raise(libc::SIGBUS) }, 0);
        let start = Instant::now();
        assert!(wait_for_event(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(1), "woken at once");
        let mut events = Vec::with_capacity(RING_LEN);
        take_events_into(&mut events);
        assert_eq!(events.len(), 1, "{events:?}");
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
            matches!(events[0].si_code, SigbusCode::Sent(_)),
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
}
