//! Page frame numbers from `/proc/self/pagemap` (Documentation/admin-guide/mm/pagemap.rst).
//!
//! One 64-bit entry per virtual page, at offset `(vaddr / PAGE_SIZE) * 8`:
//! bit 63 page present, bit 62 swapped, bit 61 file-page or shared-anon, bit 57 uffd-wp,
//! bit 56 exclusively mapped, bit 55 soft-dirty, bits 54:0 the PFN when present.
//! Since Linux 4.2 the PFN reads as zero without CAP_SYS_ADMIN.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bit 63: page present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// Bit 62: page swapped.
const PM_SWAPPED: u64 = 1 << 62;
/// Bits 54:0: page frame number when present.
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// Why no PFN could be read for an address.
#[derive(Debug, thiserror::Error)]
pub enum PagemapError {
    /// The page is not in RAM (never touched, swapped, or already unmapped by poisoning).
    #[error("page at {hva:#x} is not present (pagemap entry {entry:#018x})")]
    NotPresent { hva: usize, entry: u64 },
    /// Present, but the kernel hid the PFN: reading PFNs needs CAP_SYS_ADMIN.
    #[error("page at {hva:#x} is present but its PFN reads 0: reading PFNs from /proc/self/pagemap needs CAP_SYS_ADMIN (run as root)")]
    PfnHidden { hva: usize },
    /// Opening or reading /proc/self/pagemap failed.
    #[error("reading /proc/self/pagemap at {hva:#x}: {source}")]
    Io {
        hva: usize,
        #[source]
        source: std::io::Error,
    },
}

/// One decoded pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    /// An entry from the 8 bytes the kernel wrote (native byte order, a `u64` in memory).
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_ne_bytes(bytes))
    }

    /// Bit 63.
    pub fn present(self) -> bool {
        self.0 & PM_PRESENT != 0
    }

    /// Bit 62.
    pub fn swapped(self) -> bool {
        self.0 & PM_SWAPPED != 0
    }

    /// The PFN of a present page; for a swapped page bits 54:0 hold the swap entry instead.
    ///
    /// # Errors
    ///
    /// [`PagemapError::NotPresent`], or [`PagemapError::PfnHidden`] when the kernel zeroed
    /// the PFN for lack of CAP_SYS_ADMIN (`hva` only labels the error).
    pub fn pfn(self, hva: usize) -> Result<u64, PagemapError> {
        if !self.present() {
            return Err(PagemapError::NotPresent { hva, entry: self.0 });
        }
        match self.0 & PM_PFN_MASK {
            0 => Err(PagemapError::PfnHidden { hva }),
            pfn => Ok(pfn),
        }
    }
}

/// Byte offset of the entry for `hva` in the pagemap file.
pub fn entry_offset(hva: usize, page_size: usize) -> u64 {
    (hva / page_size.max(1)) as u64 * 8
}

/// Reads the pagemap entry of this process for `hva`.
///
/// # Errors
///
/// [`PagemapError::Io`] when /proc/self/pagemap cannot be opened or read.
pub fn read_entry(hva: usize, page_size: usize) -> Result<PagemapEntry, PagemapError> {
    let io = |source| PagemapError::Io { hva, source };
    let file = File::open("/proc/self/pagemap").map_err(io)?;
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, entry_offset(hva, page_size))
        .map_err(io)?;
    Ok(PagemapEntry::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_entry_gives_its_pfn() {
        // Present, exclusively mapped (bit 56), soft-dirty (bit 55), PFN 0x4_1234.
        let raw: u64 = (1 << 63) | (1 << 56) | (1 << 55) | 0x4_1234;
        let e = PagemapEntry::from_bytes(raw.to_ne_bytes());
        assert!(e.present());
        assert!(!e.swapped());
        assert_eq!(e.pfn(0x1000).unwrap(), 0x4_1234);
    }

    #[test]
    fn widest_pfn_uses_bits_54_to_0() {
        let raw: u64 = (1 << 63) | (1 << 55) | ((1 << 55) - 1);
        let e = PagemapEntry(raw);
        assert_eq!(e.pfn(0).unwrap(), (1 << 55) - 1);
    }

    #[test]
    fn absent_entry_is_not_present() {
        let e = PagemapEntry::from_bytes([0; 8]);
        assert!(matches!(
            e.pfn(0x7000),
            Err(PagemapError::NotPresent {
                hva: 0x7000,
                entry: 0
            })
        ));
        // Swapped: bit 62 without bit 63; the low bits are a swap entry, not a PFN.
        let swapped = PagemapEntry((1 << 62) | 0x55);
        assert!(swapped.swapped());
        assert!(matches!(
            swapped.pfn(0),
            Err(PagemapError::NotPresent { .. })
        ));
    }

    #[test]
    fn zero_pfn_of_present_page_means_no_cap_sys_admin() {
        let e = PagemapEntry((1 << 63) | (1 << 56));
        let err = e.pfn(0x2000).unwrap_err();
        assert!(matches!(err, PagemapError::PfnHidden { hva: 0x2000 }));
        assert!(err.to_string().contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn entry_offsets_per_page_size() {
        assert_eq!(entry_offset(0x7f00_0000_3000, 4096), 0x7_f000_0003 * 8);
        assert_eq!(entry_offset(0x4000, 16384), 8);
        assert_eq!(entry_offset(0x1_0000, 65536), 8);
        assert_eq!(entry_offset(0xffff, 65536), 0);
    }

    #[test]
    fn reads_a_touched_page_of_this_process() {
        // Runs unprivileged too: the entry is present; the PFN is visible only to root.
        let page_size = crate::fault::host_page_size();
        let mut buf = vec![0u8; 2 * page_size];
        let base = buf.as_ptr() as usize;
        let hva = base.next_multiple_of(page_size);
        buf[hva - base] = 1;
        let e = read_entry(hva, page_size).unwrap();
        assert!(e.present(), "touched heap page not present: {:#x}", e.0);
        match e.pfn(hva) {
            Ok(pfn) => assert_ne!(pfn, 0),
            Err(PagemapError::PfnHidden { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
}
