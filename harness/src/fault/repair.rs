//! Host memory the SIGBUS handler repairs on an action-required memory error.
//!
//! Returning from a SIGBUS re-executes the access that raised it. For a vCPU that is fine:
//! KVM sends the signal and `KVM_RUN` returns EINTR. For a *host* access to a poisoned page
//! the kernel forces SIGBUS again on every retry. Register such memory with
//! [`repair_on_ar`]: the handler then maps a fresh zero page (`MAP_FIXED` anonymous) over
//! the signalled part and the retried access succeeds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::sigbus::SigbusError;

/// Ranges [`repair_on_ar`] can hold at once.
pub const REPAIR_SLOTS: usize = 16;

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
/// Host page size for the handler (sysconf is not async-signal-safe), stored by
/// [`repair_on_ar`] before it publishes a range.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

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

/// Maps a fresh zero page over the registered part of the signalled page. Signal context:
/// atomics and one raw system call only.
pub(super) fn repair(addr: u64, lsb: i16) -> bool {
    for r in &REPAIRS {
        let start = r.start.load(Ordering::Acquire);
        if start == 0 {
            continue;
        }
        let len = r.len.load(Ordering::Acquire);
        let page_size = PAGE_SIZE.load(Ordering::Relaxed);
        let Some((lo, n)) = repair_span(addr, lsb, page_size, start, len) else {
            continue;
        };
        // SAFETY: [lo, lo + n) lies inside a range whose owner registered it for exactly
        // this replacement (repair_on_ar's contract). The raw system call, not libc's mmap:
        // for MAP_FIXED musl's wrapper first waits for its internal vm lock (__vm_wait,
        // src/mman/mmap.c), which the interrupted thread may hold, so it is not
        // async-signal-safe; syscall() only passes the arguments through (each as a long,
        // as it reads them) and sets errno on failure, which the handler restores.
        let p = unsafe {
            libc::syscall(
                libc::SYS_mmap,
                lo as libc::c_long,
                n as libc::c_long,
                libc::c_long::from(libc::PROT_READ | libc::PROT_WRITE),
                libc::c_long::from(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED),
                -1 as libc::c_long,
                0 as libc::c_long,
            )
        };
        return p != -1;
    }
    false
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
    PAGE_SIZE.store(page, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::sigbus::tests::serial;

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
}
