//! Host mappings that back guest memory. Each owns its mmap and unmaps it on drop.

use super::{Backing, Error, Result};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// MAP_HUGE_SHIFT and the size encodings (include/uapi/asm-generic/hugetlb_encode.h:
/// HUGETLB_FLAG_ENCODE_SHIFT 26, log2 of the page size in the bits above).
const MAP_HUGE_SHIFT: i32 = 26;
const MAP_HUGE_2MB: i32 = 21 << MAP_HUGE_SHIFT;
const MAP_HUGE_1GB: i32 = 30 << MAP_HUGE_SHIFT;
const SIZE_2M: usize = super::backing::SIZE_2M as usize;

/// One host mapping: `len` bytes at `ptr`.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// What munmap must release (THP over-maps to align).
    map_base: NonNull<u8>,
    map_len: usize,
    backing: Backing,
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is plain memory owned by this value; sharing its address between
// threads is what a VMM does (the guest and the host both access it).
unsafe impl Send for Mapping {}
// SAFETY: as above; &Mapping only hands out the address and bounds-checked copies.
unsafe impl Sync for Mapping {}

fn mmap(len: usize, prot: i32, flags: i32, fd: i32) -> Result<NonNull<u8>> {
    // SAFETY: a fresh mapping at an address of the kernel's choosing; no existing memory
    // is affected.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(Error::last("mmap"));
    }
    NonNull::new(p.cast()).ok_or_else(|| Error::Invalid("mmap returned NULL".into()))
}

impl Mapping {
    /// Maps `len` bytes (a multiple of the backing's page size) as `backing`.
    pub fn new(backing: Backing, len: usize) -> Result<Self> {
        let page = backing.page_size() as usize;
        if len == 0 || !len.is_multiple_of(page) {
            return Err(Error::Invalid(format!(
                "{backing:?} mapping of {len:#x} bytes: not a multiple of {page:#x}"
            )));
        }
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let private = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let (map_base, map_len, fd) = match backing {
            Backing::Anonymous => (mmap(len, rw, private, -1)?, len, None),
            Backing::Thp => (mmap(len + SIZE_2M, rw, private, -1)?, len + SIZE_2M, None),
            Backing::Hugetlb2M => (
                mmap(len, rw, private | libc::MAP_HUGETLB | MAP_HUGE_2MB, -1)?,
                len,
                None,
            ),
            Backing::Hugetlb1G => (
                mmap(len, rw, private | libc::MAP_HUGETLB | MAP_HUGE_1GB, -1)?,
                len,
                None,
            ),
            Backing::Memfd => {
                // SAFETY: memfd_create with a NUL-terminated name; the fd is checked.
                let raw = unsafe { libc::memfd_create(c"ras-guest".as_ptr(), libc::MFD_CLOEXEC) };
                if raw < 0 {
                    return Err(Error::last("memfd_create"));
                }
                // SAFETY: `raw` is a fresh fd nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                // SAFETY: ftruncate on our own fd.
                if unsafe { libc::ftruncate(raw, len as libc::off_t) } != 0 {
                    return Err(Error::last("ftruncate memfd"));
                }
                (mmap(len, rw, libc::MAP_SHARED, raw)?, len, Some(fd))
            }
        };
        let mut mapping = Self {
            ptr: map_base,
            len,
            map_base,
            map_len,
            backing,
            fd,
        };
        if backing == Backing::Thp {
            let misalign = map_base.as_ptr().align_offset(SIZE_2M);
            // SAFETY: misalign < 2 MiB and the mapping is len + 2 MiB long.
            mapping.ptr = unsafe { map_base.add(misalign) };
            // SAFETY: advice on a range inside our own mapping.
            if unsafe { libc::madvise(mapping.ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) } != 0
            {
                return Err(Error::last("madvise(MADV_HUGEPAGE)"));
            }
        }
        Ok(mapping)
    }

    /// Host virtual address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How it is backed.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The memfd, for [`Backing::Memfd`].
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Copies `bytes` to `offset`, with volatile stores: a running guest may access the
    /// same memory at any time, so the compiler may neither elide, merge nor reorder the
    /// accesses as it could for memory only Rust touches (vm-memory's reason for
    /// `VolatileSlice`). Aligned words where possible, bytes at the edges.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.check(offset, bytes.len())?;
        // SAFETY: bounds checked; the mapping lives as long as `self`.
        let dst = unsafe { self.as_ptr().add(offset) };
        let head = dst.align_offset(8).min(bytes.len());
        let (edge, rest) = bytes.split_at(head);
        let (words, tail) = rest.split_at(rest.len() / 8 * 8);
        for (i, &b) in edge.iter().enumerate() {
            // SAFETY: inside the checked range.
            unsafe { dst.add(i).write_volatile(b) };
        }
        for (i, w) in words.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            let word = u64::from_ne_bytes(word);
            // SAFETY: inside the checked range, and 8-aligned (`head` aligned it).
            unsafe { dst.add(head + 8 * i).cast::<u64>().write_volatile(word) };
        }
        for (i, &b) in tail.iter().enumerate() {
            // SAFETY: inside the checked range.
            unsafe { dst.add(head + words.len() + i).write_volatile(b) };
        }
        Ok(())
    }

    /// Copies from `offset` into `buf`, with volatile loads (see [`Mapping::write`]).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: bounds checked; the mapping lives as long as `self`.
        let src = unsafe { self.as_ptr().add(offset).cast_const() };
        let head = src.align_offset(8).min(buf.len());
        let (edge, rest) = buf.split_at_mut(head);
        let (words, tail) = rest.split_at_mut(rest.len() / 8 * 8);
        for (i, b) in edge.iter_mut().enumerate() {
            // SAFETY: inside the checked range.
            *b = unsafe { src.add(i).read_volatile() };
        }
        let whole = words.len();
        for (i, w) in words.chunks_exact_mut(8).enumerate() {
            // SAFETY: inside the checked range, and 8-aligned (`head` aligned it).
            let word = unsafe { src.add(head + 8 * i).cast::<u64>().read_volatile() };
            w.copy_from_slice(&word.to_ne_bytes());
        }
        for (i, b) in tail.iter_mut().enumerate() {
            // SAFETY: inside the checked range.
            *b = unsafe { src.add(head + whole + i).read_volatile() };
        }
        Ok(())
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::Invalid(format!(
                "access {offset:#x}+{len:#x} outside a {:#x}-byte mapping",
                self.len
            ))),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference into it outlives self
        // (the VM that used it as a memslot is dropped first, see `Vm`).
        unsafe { libc::munmap(self.map_base.as_ptr().cast(), self.map_len) };
    }
}
