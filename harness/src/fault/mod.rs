//! Real memory errors on guest RAM: poison a page, catch the SIGBUS, find the guest address.
//! All of it is Linux only but [`SigbusCode`], which scenario outcomes carry on every host.
//!
//! The order a scenario follows:
//! 1. [`sigbus::install`] the process-wide SIGBUS recorder *before* poisoning: since Linux
//!    6.11 the poisoning thread itself gets `BUS_MCEERR_AR`, and an unhandled (or blocked)
//!    SIGBUS kills the process. [`mce_kill::set_mce_kill`] chooses whether a thread hears of
//!    poison it has not touched yet.
//! 2. Register guest RAM in [`GuestRanges`] and poison one page of it with a [`Poisoner`]
//!    (`MADV_HWPOISON`, `hard_offline_page` or `MADV_SOFT_OFFLINE`). The poisoner refuses any
//!    address the harness did not allocate as guest RAM, before any system call.
//! 3. Run the guest; [`sigbus::take_events`] returns what the handler recorded and
//!    [`translate::translate`] turns `si_addr`/`si_addr_lsb` into guest physical ranges.
//!    Host memory the harness itself reads after poisoning it is registered with
//!    [`repair::repair_on_ar`] first.
//! 4. [`unpoison::unpoison`] gives the pages back where the host allows it and reports the
//!    ones it could not; [`hugetlb_pool::Snapshot::restore`] grows back the hugetlb pools
//!    that poisoning shrank.

#[cfg(target_os = "linux")]
pub mod hugetlb_pool;
#[cfg(target_os = "linux")]
pub mod mce_kill;
#[cfg(target_os = "linux")]
pub mod pagemap;
#[cfg(target_os = "linux")]
pub mod poison;
#[cfg(target_os = "linux")]
pub mod ranges;
#[cfg(target_os = "linux")]
pub mod repair;
#[cfg(target_os = "linux")]
pub mod sigbus;
mod sigbus_code;
#[cfg(target_os = "linux")]
pub mod translate;
#[cfg(target_os = "linux")]
pub mod unpoison;

#[cfg(target_os = "linux")]
pub use poison::{Method, PoisonError, PoisonedPage, Poisoner};
#[cfg(target_os = "linux")]
pub use ranges::{GuestRanges, RangeError};
pub use sigbus_code::SigbusCode;

/// The host's base page size in bytes (4 KiB, 16 KiB or 64 KiB on arm64), from
/// `sysconf(_SC_PAGESIZE)`.
#[cfg(target_os = "linux")]
pub fn host_page_size() -> usize {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // sysconf cannot fail for _SC_PAGESIZE on Linux; 4 KiB is the smallest page there is.
    usize::try_from(size).unwrap_or(4096)
}
