//! What backs a guest memory region on the host. It decides `si_addr_lsb` and what one
//! poisoned page takes down; a scenario's `guest.backing` names it in JSON.

use serde::{Deserialize, Serialize};

/// A 2 MiB huge page (a PMD with the 4 KiB granule).
pub const SIZE_2M: u64 = 2 << 20;
/// A 1 GiB huge page (a PUD with the 4 KiB granule).
pub const SIZE_1G: u64 = 1 << 30;

/// How a guest memory region is backed on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backing {
    /// Private anonymous memory, base pages (`si_addr_lsb` = PAGE_SHIFT).
    #[serde(rename = "anon")]
    Anonymous,
    /// Private anonymous memory, 2 MiB aligned, with madvise(MADV_HUGEPAGE); poison
    /// splits the huge page.
    #[serde(rename = "thp")]
    Thp,
    /// MAP_HUGETLB with 2 MiB pages (`si_addr_lsb` 21 when the slot is aligned; needs
    /// /proc/sys/vm/nr_hugepages).
    #[serde(rename = "hugetlb-2m")]
    Hugetlb2M,
    /// MAP_HUGETLB with 1 GiB pages (`si_addr_lsb` 30).
    #[serde(rename = "hugetlb-1g")]
    Hugetlb1G,
    /// A shared mapping of a memfd, as QEMU's memory-backend-memfd uses (another process
    /// can open and poison it).
    #[serde(rename = "memfd")]
    Memfd,
}

impl Backing {
    /// The size of the pages it maps with, in bytes: a mapping is a multiple of it. Base
    /// pages are the host's (4, 16 or 64 KiB on arm64), never assumed.
    pub fn page_size(self) -> u64 {
        match self {
            Self::Anonymous | Self::Memfd => crate::host::page_size(),
            Self::Thp | Self::Hugetlb2M => SIZE_2M,
            Self::Hugetlb1G => SIZE_1G,
        }
    }

    /// The huge page size in MiB for hugetlb backings (guest RAM must be a multiple of it
    /// and the host must have that many free).
    pub fn hugetlb_mib(self) -> Option<u32> {
        match self {
            Self::Hugetlb2M => Some(2),
            Self::Hugetlb1G => Some(1024),
            Self::Anonymous | Self::Thp | Self::Memfd => None,
        }
    }
}
