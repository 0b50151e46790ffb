//! The host ranges the harness allocated as guest RAM: the only memory it may poison.
//!
//! Issue 7: "the harness never poisons an address it did not allocate as guest RAM (checked
//! right before every poison call)". [`GuestRanges::contains`] is that check.

/// Why a range could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// An empty range registers nothing and would make `contains` meaningless.
    #[error("guest RAM range at {hva:#x} has length 0")]
    Empty { hva: usize },
    /// `hva + len` does not fit in the address space.
    #[error("guest RAM range {hva:#x} + {len:#x} overflows the address space")]
    Overflow { hva: usize, len: usize },
    /// The range overlaps one already registered: guest RAM is allocated once.
    #[error("guest RAM range {hva:#x} + {len:#x} overlaps {other_hva:#x} + {other_len:#x}")]
    Overlap {
        hva: usize,
        len: usize,
        other_hva: usize,
        other_len: usize,
    },
}

/// Host virtual ranges allocated as guest RAM, as `(start, len)` pairs that never overlap.
#[derive(Debug, Default, Clone)]
pub struct GuestRanges {
    ranges: Vec<(usize, usize)>,
}

impl GuestRanges {
    /// An empty registry: nothing may be poisoned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `[hva, hva + len)` as guest RAM.
    ///
    /// # Safety
    ///
    /// The poisoner writes to and poisons pages of registered ranges, so the caller promises:
    /// - the range is a readable and writable private or shared mapping the caller allocated
    ///   as guest RAM (anonymous, memfd, hugetlbfs), not the heap, a stack or a library;
    /// - it stays mapped until it is removed with [`GuestRanges::remove`] or this registry
    ///   is dropped.
    ///
    /// # Errors
    ///
    /// [`RangeError::Empty`], [`RangeError::Overflow`] or [`RangeError::Overlap`].
    pub unsafe fn add(&mut self, hva: usize, len: usize) -> Result<(), RangeError> {
        if len == 0 {
            return Err(RangeError::Empty { hva });
        }
        let end = hva
            .checked_add(len)
            .ok_or(RangeError::Overflow { hva, len })?;
        if let Some(&(other_hva, other_len)) =
            self.ranges.iter().find(|&&(s, l)| hva < s + l && s < end)
        {
            return Err(RangeError::Overlap {
                hva,
                len,
                other_hva,
                other_len,
            });
        }
        self.ranges.push((hva, len));
        Ok(())
    }

    /// Forgets the range that starts at `hva` (before it is unmapped); false if none does.
    pub fn remove(&mut self, hva: usize) -> bool {
        let before = self.ranges.len();
        self.ranges.retain(|&(s, _)| s != hva);
        self.ranges.len() != before
    }

    /// True when all of `[hva, hva + len)` lies inside one registered range. An empty or
    /// overflowing query is never contained.
    pub fn contains(&self, hva: usize, len: usize) -> bool {
        let Some(end) = hva.checked_add(len) else {
            return false;
        };
        len != 0 && self.ranges.iter().any(|&(s, l)| s <= hva && end <= s + l)
    }

    /// The registered ranges as `(hva, len)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ranges.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(ranges: &[(usize, usize)]) -> GuestRanges {
        let mut r = GuestRanges::new();
        for &(hva, len) in ranges {
            // SAFETY: nothing is ever touched through this registry in these tests.
            unsafe { r.add(hva, len) }.unwrap();
        }
        r
    }

    #[test]
    fn contains_only_whole_subranges() {
        let r = registry(&[(0x10000, 0x4000), (0x40000, 0x1000)]);
        assert!(r.contains(0x10000, 0x1000));
        assert!(r.contains(0x13000, 0x1000));
        assert!(r.contains(0x10000, 0x4000));
        assert!(r.contains(0x40000, 0x1000));
        // One byte before, one byte past, straddling the end, and the gap between ranges.
        assert!(!r.contains(0xffff, 1));
        assert!(!r.contains(0x14000, 1));
        assert!(!r.contains(0x13000, 0x1001));
        assert!(!r.contains(0x14000, 0x2c000));
        // Two adjacent-looking ranges do not merge into one allowed span.
        assert!(!r.contains(0x10000, 0x31000));
    }

    #[test]
    fn empty_and_overflowing_queries_are_refused() {
        let r = registry(&[(0x1000, 0x1000)]);
        assert!(!r.contains(0x1000, 0));
        assert!(!r.contains(usize::MAX, 2));
        assert!(!GuestRanges::new().contains(0x1000, 1));
    }

    #[test]
    fn add_rejects_bad_ranges() {
        let mut r = registry(&[(0x10000, 0x4000)]);
        // SAFETY: as above, nothing is touched.
        unsafe {
            assert_eq!(r.add(0x20000, 0), Err(RangeError::Empty { hva: 0x20000 }));
            assert_eq!(
                r.add(usize::MAX - 0xfff, 0x2000),
                Err(RangeError::Overflow {
                    hva: usize::MAX - 0xfff,
                    len: 0x2000
                })
            );
            assert_eq!(
                r.add(0xf000, 0x1001),
                Err(RangeError::Overlap {
                    hva: 0xf000,
                    len: 0x1001,
                    other_hva: 0x10000,
                    other_len: 0x4000
                })
            );
            // Touching but not overlapping is fine.
            assert_eq!(r.add(0x14000, 0x1000), Ok(()));
        }
    }

    #[test]
    fn remove_forgets_a_range() {
        let mut r = registry(&[(0x10000, 0x4000)]);
        assert!(r.remove(0x10000));
        assert!(!r.remove(0x10000));
        assert!(!r.contains(0x10000, 1));
    }
}
