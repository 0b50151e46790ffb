//! Real memory errors on guest RAM: poison a page, catch the SIGBUS, find the guest address.
//!
//! The order a scenario follows:
//! 1. [`sigbus::install`] the process-wide SIGBUS recorder *before* poisoning: since Linux
//!    6.11 the poisoning thread itself gets `BUS_MCEERR_AR`, and an unhandled (or blocked)
//!    SIGBUS kills the process.
//! 2. Register guest RAM in [`GuestRanges`] and poison one page of it with a [`Poisoner`]
//!    (`MADV_HWPOISON`, `hard_offline_page` or `MADV_SOFT_OFFLINE`). The poisoner refuses any
//!    address the harness did not allocate as guest RAM, before any system call.
//! 3. Run the guest; [`sigbus::take_events`] returns what the handler recorded and
//!    [`translate::translate`] turns `si_addr`/`si_addr_lsb` into guest physical ranges.
//! 4. [`unpoison::unpoison`] gives the pages back where the host allows it and reports the
//!    ones it could not; [`hugetlb_pool::Snapshot::restore`] grows back the hugetlb pools
//!    that poisoning shrank.

pub mod hugetlb_pool;
pub mod pagemap;
pub mod poison;
pub mod ranges;
pub mod sigbus;
pub mod translate;
pub mod unpoison;

pub use poison::{Method, PoisonError, PoisonedPage, Poisoner};
pub use ranges::{GuestRanges, RangeError};

/// The host's base page size in bytes (4 KiB, 16 KiB or 64 KiB on arm64), from
/// `sysconf(_SC_PAGESIZE)`.
pub fn host_page_size() -> usize {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // sysconf cannot fail for _SC_PAGESIZE on Linux; 4 KiB is the smallest page there is.
    usize::try_from(size).unwrap_or(4096)
}
