//! Host virtual to guest physical: which guest addresses a SIGBUS covers.
//!
//! A memory-error SIGBUS names one host page: `si_addr` inside it and `si_addr_lsb`, the log2
//! of its size (include/uapi/asm-generic/siginfo.h: "LSB of the reported address"). The page
//! is `[si_addr & !(2^lsb - 1), + 2^lsb)`; KVM sends lsb 12 for a 4 KiB mapping, 21 for a
//! 2 MiB hugetlb page, 30 for 1 GiB (arch/arm64/kvm/mmu.c, kvm_send_hwpoison_signal). A huge
//! page can back more than the slot that faulted, and two slots may alias one host range,
//! so the answer is one clipped guest range per slot that maps `si_addr`.

/// One KVM memory slot (struct kvm_userspace_memory_region, include/uapi/linux/kvm.h):
/// guest physical `gpa`, host virtual `hva`, `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memslot {
    pub gpa: u64,
    pub hva: u64,
    pub size: u64,
}

/// A half-open guest physical range `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpaRange {
    pub start: u64,
    pub len: u64,
}

/// Where a SIGBUS lands in one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Index of the slot in the slice given to [`translate`].
    pub slot: usize,
    /// The guest physical address of `si_addr` itself.
    pub gpa: u64,
    /// The part of the signalled host page that this slot maps, as guest addresses.
    pub range: GpaRange,
}

/// Why a SIGBUS could not be placed in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// `si_addr_lsb` outside 0..=63 cannot describe a page of a 64-bit address space.
    #[error("si_addr_lsb {lsb} is not a page shift (0..=63)")]
    AbsurdLsb { lsb: i16 },
    /// No slot maps `si_addr`: the error hit host memory that is not guest RAM.
    #[error("si_addr {si_addr:#x} is outside every memory slot")]
    OutsideGuestRam { si_addr: u64 },
    /// A slot whose host or guest end overflows 64 bits.
    #[error("memory slot {slot} overflows: gpa {gpa:#x} hva {hva:#x} size {size:#x}")]
    BadSlot {
        slot: usize,
        gpa: u64,
        hva: u64,
        size: u64,
    },
}

/// The guest ranges covered by a SIGBUS at `si_addr` with `si_addr_lsb`, one per slot that
/// maps `si_addr`, in slot order.
///
/// # Errors
///
/// [`TranslateError::AbsurdLsb`], [`TranslateError::BadSlot`] for a slot that overflows, or
/// [`TranslateError::OutsideGuestRam`] when no slot maps `si_addr`.
pub fn translate(
    slots: &[Memslot],
    si_addr: u64,
    si_addr_lsb: i16,
) -> Result<Vec<Translation>, TranslateError> {
    let out = translations(slots, si_addr, si_addr_lsb)?.collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(TranslateError::OutsideGuestRam { si_addr });
    }
    Ok(out)
}

/// The first of [`translate`]'s ranges, without allocating: what a VMM's memory-error path
/// needs (the slot the vCPU faulted in comes first when slots do not alias).
///
/// # Errors
///
/// As [`translate`], for the slots up to the first that maps `si_addr`.
pub fn translate_first(
    slots: &[Memslot],
    si_addr: u64,
    si_addr_lsb: i16,
) -> Result<Translation, TranslateError> {
    translations(slots, si_addr, si_addr_lsb)?
        .next()
        .unwrap_or(Err(TranslateError::OutsideGuestRam { si_addr }))
}

/// Each slot's translation of the signalled page, lazily.
fn translations(
    slots: &[Memslot],
    si_addr: u64,
    si_addr_lsb: i16,
) -> Result<impl Iterator<Item = Result<Translation, TranslateError>> + '_, TranslateError> {
    let lsb = u32::try_from(si_addr_lsb)
        .ok()
        .filter(|&l| l <= 63)
        .ok_or(TranslateError::AbsurdLsb { lsb: si_addr_lsb })?;
    // Computed in u128 so that lsb 63 and pages at the top of the address space do not wrap.
    let page_len = 1u128 << lsb;
    let page_start = u128::from(si_addr) & !(page_len - 1);
    let page_end = page_start + page_len;
    Ok(slots.iter().enumerate().filter_map(move |(index, s)| {
        if s.hva.checked_add(s.size).is_none() || s.gpa.checked_add(s.size).is_none() {
            return Some(Err(TranslateError::BadSlot {
                slot: index,
                gpa: s.gpa,
                hva: s.hva,
                size: s.size,
            }));
        }
        let (slot_start, slot_end) = (u128::from(s.hva), u128::from(s.hva) + u128::from(s.size));
        if !(slot_start..slot_end).contains(&u128::from(si_addr)) {
            return None;
        }
        let start = page_start.max(slot_start);
        let end = page_end.min(slot_end);
        // Every value below is inside the slot, whose ends fit in u64 (checked above).
        let to_gpa = |hva: u128| s.gpa + (hva - slot_start) as u64;
        Some(Ok(Translation {
            slot: index,
            gpa: to_gpa(u128::from(si_addr)),
            range: GpaRange {
                start: to_gpa(start),
                len: (end - start) as u64,
            },
        }))
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SLOT: Memslot = Memslot {
        gpa: 0x8000_0000,
        hva: 0x7f00_0000_0000,
        size: 0x40_0000,
    };

    #[test]
    fn anon_page_maps_to_one_4k_guest_page() {
        let t = translate(&[SLOT], 0x7f00_0012_3000, 12).unwrap();
        assert_eq!(
            t,
            [Translation {
                slot: 0,
                gpa: 0x8012_3000,
                range: GpaRange {
                    start: 0x8012_3000,
                    len: 0x1000
                }
            }]
        );
    }

    #[test]
    fn huge_page_is_clipped_to_a_misaligned_slot() {
        // The slot starts 1 MiB into a 2 MiB huge page: only its own half is guest RAM.
        let slot = Memslot {
            gpa: 0x4000_0000,
            hva: 0x7f00_0010_0000,
            size: 0x40_0000,
        };
        let t = translate(&[slot], 0x7f00_0012_3000, 21).unwrap();
        assert_eq!(t[0].gpa, 0x4002_3000);
        assert_eq!(
            t[0].range,
            GpaRange {
                start: 0x4000_0000,
                len: 0x10_0000
            }
        );
    }

    #[test]
    fn aliased_slots_each_get_a_range() {
        let alias = Memslot {
            gpa: 0x1_0000_0000,
            ..SLOT
        };
        let t = translate(&[SLOT, alias], 0x7f00_0000_0000, 12).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].slot, t[0].gpa), (0, 0x8000_0000));
        assert_eq!((t[1].slot, t[1].gpa), (1, 0x1_0000_0000));
    }

    #[test]
    fn errors() {
        assert_eq!(
            translate(&[SLOT], 0x7f00_0040_0000, 12),
            Err(TranslateError::OutsideGuestRam {
                si_addr: 0x7f00_0040_0000
            })
        );
        assert_eq!(
            translate(&[], 0x1000, 12),
            Err(TranslateError::OutsideGuestRam { si_addr: 0x1000 })
        );
        for lsb in [64, -1, i16::MAX, i16::MIN] {
            assert_eq!(
                translate(&[SLOT], 0x7f00_0000_0000, lsb),
                Err(TranslateError::AbsurdLsb { lsb })
            );
        }
        let bad = Memslot {
            gpa: u64::MAX - 0xfff,
            hva: 0x1000,
            size: 0x2000,
        };
        assert!(matches!(
            translate(&[bad], 0x1000, 12),
            Err(TranslateError::BadSlot { slot: 0, .. })
        ));
    }

    #[test]
    fn lsb_63_and_the_top_of_the_address_space_do_not_wrap() {
        // The slot ends 64 KiB below 2^64; lsb 63 names the whole upper half.
        let top = Memslot {
            gpa: 0,
            hva: 0xffff_ffff_fffe_0000,
            size: 0x10000,
        };
        let t = translate(&[top], 0xffff_ffff_fffe_f000, 63).unwrap();
        assert_eq!(
            t[0].range,
            GpaRange {
                start: 0,
                len: 0x10000
            }
        );
        assert_eq!(t[0].gpa, 0xf000);
    }

    /// A slot of 1 to 2048 pages of 4 KiB, at a host address aligned to 4 KiB up to 1 GiB,
    /// with a guest base aligned to 4 KiB, and a page-aligned address inside it.
    fn slot_and_addr() -> impl Strategy<Value = (Memslot, u64)> {
        (1u64..=2048, 12u32..=30, 0u64..1 << 20, 0u64..1 << 24).prop_flat_map(
            |(pages, align, hva_n, gpa_n)| {
                let hva = (hva_n << align) & ((1 << 47) - 1) & !0xfff;
                let slot = Memslot {
                    gpa: gpa_n << 12,
                    hva,
                    size: pages << 12,
                };
                (Just(slot), (0..pages).prop_map(move |p| hva + (p << 12)))
            },
        )
    }

    proptest! {
        #[test]
        fn every_lsb_from_12_to_30_covers_the_page_clipped_to_the_slot(
            (slot, addr) in slot_and_addr(),
            lsb in 12i16..=30,
            offset in 0u64..0x1000,
        ) {
            let si_addr = addr + offset;
            let t = translate(&[slot], si_addr, lsb).unwrap();
            prop_assert_eq!(t.len(), 1);
            let t = t[0];
            prop_assert_eq!(translate_first(&[slot], si_addr, lsb), Ok(t));
            let page = 1u64 << lsb;
            let page_start = si_addr & !(page - 1);
            // si_addr keeps its offset within the slot.
            prop_assert_eq!(t.gpa - slot.gpa, si_addr - slot.hva);
            // The range holds si_addr's GPA, lies inside the slot, and is exactly the
            // huge page intersected with the slot.
            prop_assert!(t.range.start <= t.gpa && t.gpa < t.range.start + t.range.len);
            prop_assert!(t.range.start >= slot.gpa);
            prop_assert!(t.range.start + t.range.len <= slot.gpa + slot.size);
            let host_start = page_start.max(slot.hva);
            let host_end = (page_start + page).min(slot.hva + slot.size);
            prop_assert_eq!(t.range.start, slot.gpa + (host_start - slot.hva));
            prop_assert_eq!(t.range.len, host_end - host_start);
            // Never longer than the signalled page; whole when the slot holds the page.
            prop_assert!(t.range.len <= page);
            if slot.hva <= page_start && page_start + page <= slot.hva + slot.size {
                prop_assert_eq!(t.range.len, page);
                prop_assert_eq!(t.range.start % page, slot.gpa.wrapping_sub(slot.hva) % page);
            }
        }

        #[test]
        fn addresses_past_the_slot_are_outside(
            (slot, _) in slot_and_addr(),
            lsb in 12i16..=30,
            past in 0u64..1 << 30,
        ) {
            let si_addr = slot.hva + slot.size + past;
            prop_assert_eq!(
                translate(&[slot], si_addr, lsb),
                Err(TranslateError::OutsideGuestRam { si_addr })
            );
        }
    }
}
