//! A scenario's page-size facts on the host's page size. Scenarios are written as on a
//! 4 KiB host (`"lsb": 12` a base page, 21 a 2 MiB and 30 a 1 GiB hugetlb page); on a
//! 16 KiB or 64 KiB arm64 host the same backing is reported with another `si_addr_lsb`,
//! which [`lsb_on_host`] derives by the kernel's rule, so the same expectation holds there.
//!
//! The signal the judge matches is the one KVM sends the vCPU that touched the poison
//! (`kvm_send_hwpoison_signal(hva, vma_shift)` in arch/arm64/kvm/mmu.c, user_mem_abort):
//! PAGE_SHIFT for anything but hugetlb, and for a hugetlb VMA the size of the stage-2 block
//! KVM would map, which user_mem_abort's `switch (vma_shift)` folds: PUD_SHIFT stays,
//! CONT_PMD_SHIFT becomes PMD_SHIFT, CONT_PTE_SHIFT becomes PAGE_SHIFT. The sizes are those
//! of arch/arm64/include/asm/pgtable-hwdef.h, with CONT_PTE_SHIFT and CONT_PMD_SHIFT from
//! arch/arm64/Kconfig (ARM64_CONT_PTE_SHIFT 4/7/5 and ARM64_CONT_PMD_SHIFT 4/5/5 for
//! 4K/16K/64K pages). So on a 16 KiB host a 2 MiB hugetlb page (a contiguous run of 128
//! PTEs) is signalled with lsb 14 and a 1 GiB one (32 contiguous 32 MiB PMDs) with 25.

use super::spec::Backing;

/// The bytes one poisoning takes down on a host with `page_size` pages: the host page, or
/// the whole hugetlb page. A scenario's 4 KiB target pages are smaller than a 16 KiB host
/// page, so faults on pages 0 and 1 share one there, and the second finds it poisoned.
pub fn poison_unit(backing: Backing, page_size: usize) -> u64 {
    let huge = backing.hugetlb_mib().map_or(0, |mib| u64::from(mib) << 20);
    huge.max(page_size as u64)
}

/// `si_addr_lsb` of a base page on the 4 KiB host scenarios are written for.
pub const LSB_4K: u8 = 12;

/// The `si_addr_lsb` KVM reports on a host with `page_size` pages for what a scenario
/// expects as `lsb` on a 4 KiB host. A size the host has no huge page for stays as written
/// (such a backing cannot be set up there, and the scenario is skipped before it runs).
pub fn lsb_on_host(lsb: u8, page_size: usize) -> u8 {
    let page = page_size.trailing_zeros() as u8;
    if lsb == LSB_4K {
        return page;
    }
    // A table holds page / 8 descriptors: each level adds page - 3 bits.
    let level = page - 3;
    let pmd = page + level;
    let pud = pmd + level;
    let (cont_pte, cont_pmd) = match page {
        14 => (page + 7, pmd + 5),
        16 => (page + 5, pmd + 5),
        _ => (page + 4, pmd + 4),
    };
    match lsb {
        l if l == pud => pud,
        l if l == pmd || l == cont_pmd => pmd,
        l if l == cont_pte => page,
        l => l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoning_takes_the_host_page_or_the_hugetlb_page() {
        assert_eq!(poison_unit(Backing::Anonymous, 4096), 4096);
        assert_eq!(poison_unit(Backing::Memfd, 16384), 16384);
        assert_eq!(poison_unit(Backing::Hugetlb2M, 16384), 2 << 20);
        assert_eq!(poison_unit(Backing::Hugetlb1G, 4096), 1 << 30);
    }

    #[test]
    fn a_4k_host_keeps_what_the_scenario_says() {
        for lsb in [12, 21, 30] {
            assert_eq!(lsb_on_host(lsb, 4096), lsb);
        }
    }

    #[test]
    fn a_16k_host_reports_base_and_contiguous_pages_by_their_stage2_block() {
        assert_eq!(lsb_on_host(12, 16384), 14);
        // 2 MiB is CONT_PTE there: mapped (and signalled) with 16 KiB PTEs.
        assert_eq!(lsb_on_host(21, 16384), 14);
        // 1 GiB is CONT_PMD there: signalled as one 32 MiB PMD.
        assert_eq!(lsb_on_host(30, 16384), 25);
        assert_eq!(lsb_on_host(25, 16384), 25);
    }

    #[test]
    fn a_64k_host_too() {
        assert_eq!(lsb_on_host(12, 65536), 16);
        assert_eq!(lsb_on_host(21, 65536), 16);
        assert_eq!(lsb_on_host(29, 65536), 29);
        // No 1 GiB huge page on 64 KiB (512 MiB PMD, 16 GiB CONT_PMD): unchanged.
        assert_eq!(lsb_on_host(30, 65536), 30);
    }
}
