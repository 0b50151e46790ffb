//! Another process's guest RAM, reached from outside: found by the payload's handshake in
//! `/proc/PID/maps` and `/proc/PID/mem`, read and written through `/proc/PID/mem`, and
//! poisoned by frame (`/proc/PID/pagemap`, then `hard_offline_page`). Root only
//! (Documentation/admin-guide/mm/pagemap.rst: PFNs are zero without CAP_SYS_ADMIN).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use ras_guest_abi::map::{mailbox_offset, MAILBOXES_OFFSET, MAILBOX_SIZE};
use ras_guest_abi::{Handshake, Report, HANDSHAKE_MAGIC};

use crate::fault::pagemap::{entry_offset, PagemapEntry};
use crate::fault::poison::HARD_OFFLINE_PAGE;
use crate::fault::{Method, PoisonedPage};

/// How far into a mapping the handshake is looked for: the payload's image lies in the
/// first GiB of RAM (QEMU loads it 2 MiB in, libkrun at the start, and under UEFI firmware
/// the payload moves itself below the first GiB boundary).
const SCAN_LIMIT: u64 = 1 << 30;
/// An arm64 Image's base alignment (Documentation/arch/arm64/booting.rst).
const IMAGE_ALIGN: u64 = 2 << 20;
/// Smallest mapping that can be guest RAM here (the payload needs 1 GiB + its target).
const MIN_RAM_MAPPING: u64 = 64 << 20;

/// A running VMM's memory.
pub struct Remote {
    pid: u32,
    mem: File,
    pagemap: File,
}

/// Where the guest's RAM is in the VMM: one mapping, and the guest physical address of its
/// first byte (found from the mailbox's own `mailbox_gpa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRam {
    /// Host virtual address of the mapping.
    pub start: u64,
    /// Its length.
    pub len: u64,
    /// The guest physical address at `start`.
    pub gpa: u64,
    /// Guest physical address of vCPU 0's mailbox (the others follow it).
    pub mailbox: u64,
}

impl GuestRam {
    /// The host virtual address of `gpa`, if this mapping holds it.
    pub fn hva(&self, gpa: u64) -> Option<u64> {
        let offset = gpa.checked_sub(self.gpa)?;
        (offset < self.len).then_some(self.start + offset)
    }
}

impl Remote {
    /// Opens `pid`'s memory and page map.
    pub fn open(pid: u32) -> io::Result<Self> {
        let open = |what: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(what == "mem")
                .open(format!("/proc/{pid}/{what}"))
        };
        Ok(Self {
            pid,
            mem: open("mem")?,
            pagemap: open("pagemap")?,
        })
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads `buf.len()` bytes at `hva`.
    pub fn read(&self, hva: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem.read_exact_at(buf, hva)
    }

    /// Writes `bytes` at `hva` (the kernel faults the page in for the VMM).
    pub fn write(&self, hva: u64, bytes: &[u8]) -> io::Result<()> {
        self.mem.write_all_at(bytes, hva)
    }

    /// Looks for vCPU 0's handshake (the first one opened: a VMM starts vCPU 0, which
    /// starts the others) at each 2 MiB-aligned image base in the first GiB of each large
    /// writable mapping; `None` until the guest has opened it.
    pub fn find_guest_ram(&self) -> io::Result<Option<GuestRam>> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))?;
        for (start, end) in writable_mappings(&maps) {
            if end - start < MIN_RAM_MAPPING {
                continue;
            }
            let mut base = 0;
            while base < (end - start).min(SCAN_LIMIT) {
                let at = base + MAILBOXES_OFFSET;
                let mut hs = [0u8; std::mem::size_of::<Handshake>()];
                if self
                    .read(start + at + mailbox_offset::HANDSHAKE, &mut hs)
                    .is_ok()
                {
                    let hs = Handshake::from_bytes(&hs).expect("sized above");
                    // Its own address names the guest physical address of the mapping.
                    if hs.magic == HANDSHAKE_MAGIC && hs.mailbox_gpa >= at {
                        return Ok(Some(GuestRam {
                            start,
                            len: end - start,
                            gpa: hs.mailbox_gpa - at,
                            mailbox: hs.mailbox_gpa,
                        }));
                    }
                }
                base += IMAGE_ALIGN;
            }
        }
        Ok(None)
    }

    /// The writable mapping that, taken as guest RAM starting at guest physical `base`,
    /// holds `bytes` at guest physical `gpa`: how a guest that is not the payload (a
    /// device tree before the firmware ran, the Linux init's flag page) is found.
    pub fn ram_holding(&self, base: u64, gpa: u64, bytes: &[u8]) -> io::Result<Option<GuestRam>> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))?;
        let offset = gpa - base;
        for (start, end) in writable_mappings(&maps) {
            if end - start < offset + bytes.len() as u64 {
                continue;
            }
            let mut found = vec![0u8; bytes.len()];
            if self.read(start + offset, &mut found).is_ok() && found == bytes {
                return Ok(Some(GuestRam {
                    start,
                    len: end - start,
                    gpa: base,
                    mailbox: 0,
                }));
            }
        }
        Ok(None)
    }

    /// vCPU `vcpu`'s handshake.
    pub fn handshake(&self, ram: &GuestRam, vcpu: usize) -> io::Result<Handshake> {
        let mut bytes = [0u8; std::mem::size_of::<Handshake>()];
        let hva = self.mailbox_hva(ram, vcpu, mailbox_offset::HANDSHAKE)?;
        self.read(hva, &mut bytes)?;
        Ok(Handshake::from_bytes(&bytes).expect("sized above"))
    }

    /// Acknowledges vCPU `vcpu`'s event `seq`: it goes on.
    pub fn ack(&self, ram: &GuestRam, vcpu: usize, seq: u64) -> io::Result<()> {
        let field = std::mem::offset_of!(Handshake, ack) as u64;
        let hva = self.mailbox_hva(ram, vcpu, mailbox_offset::HANDSHAKE + field)?;
        self.write(hva, &seq.to_le_bytes())
    }

    /// vCPU `vcpu`'s report.
    pub fn report(&self, ram: &GuestRam, vcpu: usize) -> io::Result<Report> {
        let mut bytes = vec![0u8; std::mem::size_of::<Report>()];
        let hva = self.mailbox_hva(ram, vcpu, mailbox_offset::REPORT)?;
        self.read(hva, &mut bytes)?;
        Ok(Report::from_bytes(&bytes).expect("sized above"))
    }

    /// Where `offset` into vCPU `vcpu`'s mailbox is (the mailboxes follow vCPU 0's).
    fn mailbox_hva(&self, ram: &GuestRam, vcpu: usize, offset: u64) -> io::Result<u64> {
        ram.hva(ram.mailbox + vcpu as u64 * MAILBOX_SIZE + offset)
            .ok_or_else(|| io::Error::other("the mailbox is outside the guest RAM mapping"))
    }

    /// Poisons the `page_size` host page holding guest physical `gpa`, which must lie in
    /// `ram` and in `allowed` (the scenario's target pages): the page is written (so it is
    /// the VMM's own frame, never the shared zero page), its frame read from the page map,
    /// checked again right before the call, and its physical address written to
    /// `hard_offline_page` (memory_failure() as a machine check would call it). Returns the
    /// page, for unpoisoning.
    pub fn poison(
        &self,
        ram: &GuestRam,
        gpa: u64,
        page_size: u64,
        allowed: std::ops::Range<u64>,
    ) -> io::Result<PoisonedPage> {
        let page_gpa = gpa - gpa % page_size;
        if !(allowed.start <= page_gpa && page_gpa + page_size <= allowed.end) {
            return Err(io::Error::other(format!(
                "{gpa:#x} is outside the target pages {allowed:#x?}"
            )));
        }
        let hva = ram
            .hva(page_gpa)
            .filter(|&h| ram.hva(page_gpa + page_size - 1) == Some(h + page_size - 1))
            .ok_or_else(|| io::Error::other(format!("{gpa:#x} is not in the guest RAM mapping")))?;
        let mut word = [0u8; 8];
        self.read(hva, &mut word)?;
        self.write(hva, &word)?;
        let pfn = self.pfn(hva, page_size)?;
        // The guard once more, right before the call: still this mapping, still this frame.
        if self.pfn(hva, page_size)? != pfn || self.find_mapping(hva)? != Some(ram.start) {
            return Err(io::Error::other(format!(
                "{gpa:#x} moved before it could be poisoned"
            )));
        }
        std::fs::write(HARD_OFFLINE_PAGE, format!("{:#x}\n", pfn * page_size))?;
        Ok(PoisonedPage {
            hva: hva as usize,
            pfn: Some(pfn),
            method: Method::HardOffline,
            page_size: page_size as usize,
        })
    }

    fn pfn(&self, hva: u64, page_size: u64) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        self.pagemap
            .read_exact_at(&mut bytes, entry_offset(hva as usize, page_size as usize))?;
        PagemapEntry::from_bytes(bytes)
            .pfn(hva as usize)
            .map_err(io::Error::other)
    }

    /// The start of the writable mapping holding `hva`.
    fn find_mapping(&self, hva: u64) -> io::Result<Option<u64>> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))?;
        let start = writable_mappings(&maps)
            .find(|&(s, e)| (s..e).contains(&hva))
            .map(|(s, _)| s);
        Ok(start)
    }
}

/// (start, end) of each read-write mapping in /proc/PID/maps text
/// (Documentation/filesystems/proc.rst, "/proc/PID/maps": `start-end perms offset dev inode path`).
pub fn writable_mappings(maps: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        if !perms.starts_with("rw") {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        Some((
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_mappings_are_read_from_maps_lines() {
        let maps = "\
aaaad0000000-aaaad0100000 r-xp 00000000 00:1a 12 /usr/bin/qemu-system-aarch64
ffff40000000-ffff80200000 rw-p 00000000 00:00 0 
ffff90000000-ffff90001000 rw-s 00000000 00:01 99 /memfd:ram (deleted)
ffffa0000000-ffffa0001000 ---p 00000000 00:00 0 ";
        let found: Vec<_> = writable_mappings(maps).collect();
        assert_eq!(
            found,
            [
                (0xffff_4000_0000, 0xffff_8020_0000),
                (0xffff_9000_0000, 0xffff_9000_1000)
            ]
        );
    }

    #[test]
    fn guest_ram_maps_only_its_own_addresses() {
        let ram = GuestRam {
            start: 0xffff_0000_0000,
            len: 1 << 30,
            gpa: 0x4000_0000,
            mailbox: 0x4030_0000,
        };
        assert_eq!(ram.hva(0x4030_0000), Some(0xffff_0030_0000));
        assert_eq!(ram.hva(0x3fff_ffff), None);
        assert_eq!(ram.hva(0x8000_0000), None);
    }
}
