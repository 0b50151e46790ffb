//! Poisoning one page of guest RAM, three ways, never outside guest RAM.
//!
//! Every method needs CAP_SYS_ADMIN and a kernel with CONFIG_MEMORY_FAILURE
//! (mm/madvise.c `madvise_inject_error`, drivers/base/memory.c `hard_offline_page_store`).
//! The page is touched first: an untouched anonymous page has no frame yet (a read would map
//! the shared zero page), so the poisoner writes to it without changing its content.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use super::pagemap::{self, PagemapEntry, PagemapError};
use super::ranges::GuestRanges;

/// `MADV_HWPOISON`, include/uapi/asm-generic/mman-common.h.
pub const MADV_HWPOISON: libc::c_int = 100;
/// `MADV_SOFT_OFFLINE`, include/uapi/asm-generic/mman-common.h.
pub const MADV_SOFT_OFFLINE: libc::c_int = 101;
/// `EHWPOISON` ("Memory page has hardware error"), include/uapi/asm-generic/errno.h.
pub const EHWPOISON: i32 = 133;
/// Takes a *physical address* (not a PFN): the store handler shifts it right by PAGE_SHIFT
/// (drivers/base/memory.c `hard_offline_page_store`).
pub const HARD_OFFLINE_PAGE: &str = "/sys/devices/system/memory/hard_offline_page";

/// How a page is poisoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `madvise(MADV_HWPOISON)`: memory_failure() on the frame with MF_ACTION_REQUIRED; the
    /// mapping is torn down at once and, on 6.11+, the calling thread gets BUS_MCEERR_AR.
    MadviseHwpoison,
    /// The frame's physical address written to `hard_offline_page`: memory_failure() without
    /// MF_ACTION_REQUIRED, as a machine-check report would do it; needs the PFN.
    HardOffline,
    /// `madvise(MADV_SOFT_OFFLINE)`: the content migrates to a new frame and the old frame is
    /// taken out of use; no signal, the mapping keeps working.
    SoftOffline,
}

impl Method {
    /// The name used in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::MadviseHwpoison => "madvise-hwpoison",
            Method::HardOffline => "hard-offline",
            Method::SoftOffline => "soft-offline",
        }
    }
}

/// A page the harness poisoned: what [`super::unpoison::unpoison`] needs to give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoisonedPage {
    /// Host virtual address of the page (aligned to `page_size`).
    pub hva: usize,
    /// The frame that was poisoned, read before poisoning; `None` when the PFN could not be
    /// read (then the page cannot be unpoisoned). For soft offline this is the old frame:
    /// the mapping now points at a new one.
    pub pfn: Option<u64>,
    /// How it was poisoned.
    pub method: Method,
    /// The host base page size used for the call (a hugetlb page is poisoned whole).
    pub page_size: usize,
}

/// Why a page was not poisoned, in the words a user acts on.
#[derive(Debug, thiserror::Error)]
pub enum PoisonError {
    /// The guard: the address is not inside guest RAM the harness allocated. Nothing ran.
    #[error("refusing to poison {hva:#x}+{len:#x}: not inside guest RAM allocated by the harness")]
    OutsideGuestRam { hva: usize, len: usize },
    /// madvise works on whole host pages (16 KiB on a 16K-page kernel, 64 KiB on 64K).
    #[error("{hva:#x} is not aligned to the host page size {page_size:#x}")]
    Misaligned { hva: usize, page_size: usize },
    /// EPERM or EACCES.
    #[error("{}: permission denied: poisoning memory needs root (CAP_SYS_ADMIN)", .method.name())]
    NeedsRoot { method: Method },
    /// EINVAL from madvise on an aligned address, or no `hard_offline_page` file.
    #[error("{}: the kernel has no memory-failure support (CONFIG_MEMORY_FAILURE){}", .method.name(), .detail)]
    NoMemoryFailure {
        method: Method,
        detail: &'static str,
    },
    /// EHWPOISON: the frame is poisoned already.
    #[error("{}: the page at {hva:#x} is poisoned already", .method.name())]
    AlreadyPoisoned { method: Method, hva: usize },
    /// EBUSY: the kernel could not isolate or migrate the page (pinned, or in use by the
    /// kernel); soft offline reports this when migration fails.
    #[error("{}: the kernel could not take the page at {hva:#x} (EBUSY: pinned or not migratable)", .method.name())]
    Busy { method: Method, hva: usize },
    /// EFAULT or ENOMEM: nothing is mapped there any more.
    #[error("{}: nothing is mapped at {hva:#x}", .method.name())]
    NotMapped { method: Method, hva: usize },
    /// The PFN (needed for hard offline) could not be read.
    #[error("hard-offline needs the page's PFN: {0}")]
    Pfn(#[from] PagemapError),
    /// Any other error from the kernel.
    #[error("{}: {source}", .method.name())]
    Os {
        method: Method,
        #[source]
        source: io::Error,
    },
}

/// Maps the error of a poisoning call to the reason a user understands. `hva` is known
/// aligned and inside guest RAM by then, so EINVAL means no memory-failure support.
pub fn classify(method: Method, hva: usize, source: io::Error) -> PoisonError {
    match source.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => PoisonError::NeedsRoot { method },
        Some(libc::EINVAL) if method != Method::HardOffline => PoisonError::NoMemoryFailure {
            method,
            detail: " (madvise returned EINVAL for an aligned address)",
        },
        Some(libc::ENOENT) if method == Method::HardOffline => PoisonError::NoMemoryFailure {
            method,
            detail: " (no /sys/devices/system/memory/hard_offline_page)",
        },
        Some(EHWPOISON) => PoisonError::AlreadyPoisoned { method, hva },
        Some(libc::EBUSY) => PoisonError::Busy { method, hva },
        Some(libc::EFAULT | libc::ENOMEM) => PoisonError::NotMapped { method, hva },
        _ => PoisonError::Os { method, source },
    }
}

/// The system calls the poisoner makes: a seam so tests can prove the guard runs first.
pub(crate) trait PoisonHost {
    /// Writes to the page at `hva` without changing its content.
    ///
    /// # Safety
    ///
    /// `hva` lies in a mapped, writable range registered in a [`GuestRanges`].
    unsafe fn touch(&self, hva: usize);
    /// The pagemap entry for `hva`.
    fn pagemap(&self, hva: usize, page_size: usize) -> Result<PagemapEntry, PagemapError>;
    /// `madvise(hva, len, advice)`.
    ///
    /// # Safety
    ///
    /// `[hva, hva + len)` lies in a range registered in a [`GuestRanges`].
    unsafe fn madvise(&self, hva: usize, len: usize, advice: libc::c_int) -> io::Result<()>;
    /// Writes `phys` to [`HARD_OFFLINE_PAGE`].
    fn hard_offline(&self, phys: u64) -> io::Result<()>;
}

/// The real host.
struct LinuxHost;

impl PoisonHost for LinuxHost {
    unsafe fn touch(&self, hva: usize) {
        // SAFETY: the caller promises a mapped, writable byte at hva. An atomic or-with-zero
        // is a write fault that cannot lose a concurrent vCPU's store to the same byte.
        let byte = unsafe { &*(hva as *const AtomicU8) };
        byte.fetch_or(0, Ordering::SeqCst);
    }

    fn pagemap(&self, hva: usize, page_size: usize) -> Result<PagemapEntry, PagemapError> {
        pagemap::read_entry(hva, page_size)
    }

    unsafe fn madvise(&self, hva: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: the caller promises the range is guest RAM the harness allocated; the
        // poison or migration it asks for does not invalidate any Rust reference.
        let rc = unsafe { libc::madvise(hva as *mut libc::c_void, len, advice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn hard_offline(&self, phys: u64) -> io::Result<()> {
        std::fs::write(HARD_OFFLINE_PAGE, format!("{phys:#x}\n"))
    }
}

/// Poisons pages of registered guest RAM, and nothing else.
#[derive(Debug)]
pub struct Poisoner<'r> {
    ranges: &'r GuestRanges,
    page_size: usize,
}

impl<'r> Poisoner<'r> {
    /// A poisoner limited to `ranges`, using the host page size from sysconf.
    pub fn new(ranges: &'r GuestRanges) -> Self {
        Self {
            ranges,
            page_size: super::host_page_size(),
        }
    }

    /// The host page size each call poisons.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Poisons the host page at `hva` (aligned to [`Poisoner::page_size`]) by `method`.
    ///
    /// Install the SIGBUS recorder first ([`super::sigbus::install`]): on 6.11+ the calling
    /// thread receives BUS_MCEERR_AR for `MadviseHwpoison`, and with early kill a thread of
    /// this process receives BUS_MCEERR_AO.
    ///
    /// # Errors
    ///
    /// [`PoisonError::OutsideGuestRam`] (before any system call),
    /// [`PoisonError::Misaligned`], or the kernel's refusal mapped by [`classify`].
    pub fn poison(&self, hva: usize, method: Method) -> Result<PoisonedPage, PoisonError> {
        self.poison_via(&LinuxHost, hva, method)
    }

    pub(crate) fn poison_via(
        &self,
        host: &impl PoisonHost,
        hva: usize,
        method: Method,
    ) -> Result<PoisonedPage, PoisonError> {
        let len = self.page_size;
        if !self.ranges.contains(hva, len) {
            return Err(PoisonError::OutsideGuestRam { hva, len });
        }
        if !hva.is_multiple_of(len) {
            return Err(PoisonError::Misaligned {
                hva,
                page_size: len,
            });
        }
        // SAFETY: hva is inside registered guest RAM, which the registrant promised is a
        // live writable mapping.
        unsafe { host.touch(hva) };
        let pfn = host.pagemap(hva, len).and_then(|e| e.pfn(hva));
        let page = |pfn| PoisonedPage {
            hva,
            pfn,
            method,
            page_size: len,
        };
        match method {
            Method::MadviseHwpoison | Method::SoftOffline => {
                let advice = if method == Method::SoftOffline {
                    MADV_SOFT_OFFLINE
                } else {
                    MADV_HWPOISON
                };
                // The guard once more, right before the call (issue 7).
                if !self.ranges.contains(hva, len) {
                    return Err(PoisonError::OutsideGuestRam { hva, len });
                }
                // SAFETY: checked just above: one page inside registered guest RAM.
                unsafe { host.madvise(hva, len, advice) }.map_err(|e| classify(method, hva, e))?;
                Ok(page(pfn.ok()))
            }
            Method::HardOffline => {
                let pfn = pfn?;
                let phys = pfn.checked_mul(len as u64).ok_or(PoisonError::Os {
                    method,
                    source: io::Error::other(format!("PFN {pfn:#x} overflows")),
                })?;
                if !self.ranges.contains(hva, len) {
                    return Err(PoisonError::OutsideGuestRam { hva, len });
                }
                host.hard_offline(phys)
                    .map_err(|e| classify(method, hva, e))?;
                Ok(page(Some(pfn)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records every call; answers with what the test set up.
    #[derive(Default)]
    struct FakeHost {
        calls: RefCell<Vec<String>>,
        entry: u64,
        fail_with: Option<i32>,
    }

    impl PoisonHost for FakeHost {
        unsafe fn touch(&self, hva: usize) {
            self.calls.borrow_mut().push(format!("touch {hva:#x}"));
        }
        fn pagemap(&self, hva: usize, _: usize) -> Result<PagemapEntry, PagemapError> {
            self.calls.borrow_mut().push(format!("pagemap {hva:#x}"));
            Ok(PagemapEntry(self.entry))
        }
        unsafe fn madvise(&self, hva: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("madvise {hva:#x} {len:#x} {advice}"));
            self.fail_with
                .map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)))
        }
        fn hard_offline(&self, phys: u64) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("hard_offline {phys:#x}"));
            self.fail_with
                .map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)))
        }
    }

    fn ranges() -> GuestRanges {
        let mut r = GuestRanges::new();
        // SAFETY: the fake host never touches memory.
        unsafe { r.add(0x4000_0000, 0x20_0000) }.unwrap();
        r
    }

    fn poisoner(r: &GuestRanges) -> Poisoner<'_> {
        Poisoner {
            ranges: r,
            page_size: 0x1000,
        }
    }

    const PRESENT_PFN_0X8765: u64 = (1 << 63) | 0x8765;

    #[test]
    fn guard_refuses_outside_guest_ram_without_any_call() {
        let r = ranges();
        let p = poisoner(&r);
        let host = FakeHost::default();
        for hva in [0x3fff_f000, 0x4020_0000, 0, usize::MAX & !0xfff] {
            for method in [
                Method::MadviseHwpoison,
                Method::HardOffline,
                Method::SoftOffline,
            ] {
                let err = p.poison_via(&host, hva, method).unwrap_err();
                assert!(
                    matches!(err, PoisonError::OutsideGuestRam { hva: h, len: 0x1000 } if h == hva),
                    "{err}"
                );
            }
        }
        // A page that starts inside but runs past the end is refused too.
        assert!(p
            .poison_via(&host, 0x401f_f001, Method::MadviseHwpoison)
            .is_err());
        assert_eq!(*host.calls.borrow(), Vec::<String>::new());
    }

    #[test]
    fn misaligned_address_is_refused_before_any_call() {
        let r = ranges();
        let host = FakeHost::default();
        let err = poisoner(&r)
            .poison_via(&host, 0x4000_0800, Method::MadviseHwpoison)
            .unwrap_err();
        assert!(matches!(
            err,
            PoisonError::Misaligned {
                hva: 0x4000_0800,
                page_size: 0x1000
            }
        ));
        assert!(host.calls.borrow().is_empty());
    }

    #[test]
    fn madvise_hwpoison_touches_reads_pfn_then_poisons_one_page() {
        let r = ranges();
        let host = FakeHost {
            entry: PRESENT_PFN_0X8765,
            ..FakeHost::default()
        };
        let page = poisoner(&r)
            .poison_via(&host, 0x4000_3000, Method::MadviseHwpoison)
            .unwrap();
        assert_eq!(
            page,
            PoisonedPage {
                hva: 0x4000_3000,
                pfn: Some(0x8765),
                method: Method::MadviseHwpoison,
                page_size: 0x1000
            }
        );
        assert_eq!(
            *host.calls.borrow(),
            [
                "touch 0x40003000",
                "pagemap 0x40003000",
                "madvise 0x40003000 0x1000 100"
            ]
        );
    }

    #[test]
    fn soft_offline_uses_advice_101_and_keeps_unknown_pfn() {
        let r = ranges();
        // Present but PFN hidden: the poison still goes ahead, unpoison will not be possible.
        let host = FakeHost {
            entry: 1 << 63,
            ..FakeHost::default()
        };
        let page = poisoner(&r)
            .poison_via(&host, 0x401f_f000, Method::SoftOffline)
            .unwrap();
        assert_eq!(page.pfn, None);
        assert_eq!(host.calls.borrow()[2], "madvise 0x401ff000 0x1000 101");
    }

    #[test]
    fn hard_offline_writes_the_physical_address() {
        let r = ranges();
        let host = FakeHost {
            entry: PRESENT_PFN_0X8765,
            ..FakeHost::default()
        };
        let page = poisoner(&r)
            .poison_via(&host, 0x4000_0000, Method::HardOffline)
            .unwrap();
        assert_eq!(page.pfn, Some(0x8765));
        assert_eq!(host.calls.borrow()[2], "hard_offline 0x8765000");
    }

    #[test]
    fn hard_offline_without_pfn_says_cap_sys_admin() {
        let r = ranges();
        let host = FakeHost {
            entry: (1 << 63) | (1 << 56),
            ..FakeHost::default()
        };
        let err = poisoner(&r)
            .poison_via(&host, 0x4000_0000, Method::HardOffline)
            .unwrap_err();
        assert!(matches!(
            err,
            PoisonError::Pfn(PagemapError::PfnHidden { .. })
        ));
        assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
        assert!(!host
            .calls
            .borrow()
            .iter()
            .any(|c| c.starts_with("hard_offline")));
    }

    #[test]
    fn kernel_refusals_become_reasons() {
        let r = ranges();
        let cases: [(Method, i32, &str); 7] = [
            (
                Method::MadviseHwpoison,
                libc::EPERM,
                "needs root (CAP_SYS_ADMIN)",
            ),
            (
                Method::HardOffline,
                libc::EACCES,
                "needs root (CAP_SYS_ADMIN)",
            ),
            (
                Method::MadviseHwpoison,
                libc::EINVAL,
                "CONFIG_MEMORY_FAILURE",
            ),
            (
                Method::HardOffline,
                libc::ENOENT,
                "no /sys/devices/system/memory/hard_offline_page",
            ),
            (Method::MadviseHwpoison, EHWPOISON, "poisoned already"),
            (Method::SoftOffline, libc::EBUSY, "not migratable"),
            (Method::MadviseHwpoison, libc::EFAULT, "nothing is mapped"),
        ];
        for (method, errno, words) in cases {
            let host = FakeHost {
                entry: PRESENT_PFN_0X8765,
                fail_with: Some(errno),
                ..FakeHost::default()
            };
            let err = poisoner(&r)
                .poison_via(&host, 0x4000_1000, method)
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(words), "{method:?} errno {errno}: {text}");
            assert!(text.starts_with(method.name()), "{text}");
        }
    }

    #[test]
    fn unknown_errno_keeps_the_os_error() {
        let err = classify(
            Method::HardOffline,
            0x1000,
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(matches!(
            err,
            PoisonError::Os {
                method: Method::HardOffline,
                ..
            }
        ));
        // EINVAL from hard_offline_page is a bad write, not a missing kernel feature.
        let err = classify(
            Method::HardOffline,
            0x1000,
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert!(matches!(err, PoisonError::Os { .. }));
    }
}
