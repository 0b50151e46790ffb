//! What the host kernel said about a child that a signal killed. A crashed `__exec` prints
//! no result line, and a SIGSEGV the kernel forces (when it cannot deliver a signal to the
//! thread's handler) leaves no word of the child's own. With `print-fatal-signals=1` (the
//! emulated host boots with it) the kernel logs the thread and registers of any task a
//! fatal signal ends (kernel/signal.c, `print_fatal_signal`; arm64's `__show_regs`).
//!
//! [`KernelLog`] reads the records written after a point (`/dev/kmsg`, root only), and
//! [`Image`] names the addresses of the child's own code in them from its executable's
//! symbol table.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectKind, ObjectSegment, ObjectSymbol, SymbolKind};

/// Records kept: a fatal signal's register dump is about 20.
const KEEP: usize = 40;
/// A read of /dev/kmsg returns one record and fails with EINVAL if it does not fit;
/// records are at most 1 KiB of text (kernel/printk, `PRINTKRB_RECORD_MAX`) plus their
/// prefix and escapes.
const RECORD_BUF: usize = 8192;

/// The kernel log from the moment [`KernelLog::from_now`] was called.
pub struct KernelLog(File);

impl KernelLog {
    /// Reads from the log's current end on; `None` where the log cannot be read (not
    /// root, or `kernel.dmesg_restrict`).
    pub fn from_now() -> Option<Self> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()?;
        // Documentation/ABI/testing/dev-kmsg: SEEK_END moves past the last record.
        f.seek(SeekFrom::End(0)).ok()?;
        Some(Self(f))
    }

    /// The text of every record written since, the last [`KEEP`] of them.
    pub fn read(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut buf = vec![0; RECORD_BUF];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => lines.extend(record_text(&buf[..n])),
                // Overwritten before it was read: the reader moves on to the next one.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        let cut = lines.len().saturating_sub(KEEP);
        lines.split_off(cut)
    }
}

/// A record is `PRIORITY,SEQUENCE,MICROSECONDS,FLAGS[,...];TEXT\n`, then dictionary lines
/// that start with a space (Documentation/ABI/testing/dev-kmsg).
fn record_text(record: &[u8]) -> Option<String> {
    let record = String::from_utf8_lossy(record);
    let (_, rest) = record.split_once(';')?;
    Some(rest.lines().next().unwrap_or_default().to_owned())
}

/// A process's executable and, if it could be read, where it was loaded, so that its code
/// addresses can be named.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    /// Where the executable's file offset 0 is mapped.
    offset_zero_at: Option<u64>,
}

impl Image {
    /// Process `pid`, started from `exe`. Where it was loaded is read now: a child that
    /// already died (a crash in its first milliseconds) has no mappings left, and then
    /// only a fixed-address executable's addresses can be named.
    pub fn of(exe: &Path, pid: u32) -> Self {
        let path = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_owned());
        let offset_zero_at = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .ok()
            .and_then(|maps| offset_zero(&maps, path.to_str()?));
        Self {
            path,
            offset_zero_at,
        }
    }

    /// `lines` with each `pc : ADDRESS` and `lr : ADDRESS` that falls in the executable's
    /// code followed by the function's name, as `name+0xoffset`.
    pub fn name_addresses(&self, lines: Vec<String>) -> Vec<String> {
        let Ok(data) = std::fs::read(&self.path) else {
            return lines;
        };
        let Ok(elf) = object::File::parse(&*data) else {
            return lines;
        };
        let Some(symbols) = Symbols::new(&elf, self.offset_zero_at) else {
            return lines;
        };
        lines
            .into_iter()
            .map(
                |line| match register_address(&line).and_then(|a| symbols.name(a)) {
                    Some(name) => format!("{line} {name}"),
                    None => line,
                },
            )
            .collect()
    }
}

/// The start of the line of `maps` (/proc/PID/maps) that maps `path` from offset 0.
fn offset_zero(maps: &str, path: &str) -> Option<u64> {
    maps.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (range, offset, file) = (f.first()?, f.get(2)?, f.get(5)?);
        if *file != path || u64::from_str_radix(offset, 16).ok()? != 0 {
            return None;
        }
        u64::from_str_radix(range.split('-').next()?, 16).ok()
    })
}

/// The address in a register line of arm64's `__show_regs` for a user task
/// (`pc : 0000aaaad5a0b1c4`).
fn register_address(line: &str) -> Option<u64> {
    let hex = line
        .strip_prefix("pc : ")
        .or_else(|| line.strip_prefix("lr : "))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// An executable's functions at their addresses in one process.
struct Symbols {
    /// Run-time address minus link-time address.
    bias: u64,
    /// (link-time address, size, demangled name), by address.
    functions: Vec<(u64, u64, String)>,
}

impl Symbols {
    fn new(elf: &object::File<'_>, offset_zero_at: Option<u64>) -> Option<Self> {
        // A fixed-address executable (ET_EXEC, as the musl builds are) runs at its link
        // addresses. A position-independent one is biased by where it was loaded: the
        // segment holding file offset 0 is mapped at `offset_zero_at`.
        let bias = if elf.kind() == ObjectKind::Executable {
            0
        } else {
            let first = elf.segments().find(|s| s.file_range().0 == 0)?;
            offset_zero_at?.wrapping_sub(first.address())
        };
        let mut functions: Vec<_> = elf
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some((s.address(), s.size(), name))
            })
            .collect();
        functions.sort_by_key(|f| f.0);
        Some(Self { bias, functions })
    }

    /// `name+0xoffset` for the function holding run-time address `at`.
    fn name(&self, at: u64) -> Option<String> {
        let at = at.wrapping_sub(self.bias);
        let i = self
            .functions
            .partition_point(|f| f.0 <= at)
            .checked_sub(1)?;
        let (start, size, name) = &self.functions[i];
        (at - start < (*size).max(1)).then(|| format!("{name}+{:#x}", at - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_its_text_without_prefix_or_dictionary() {
        let r =
            b"6,1402,90512345,-;vcpu0[213]: unhandled exception: DABT (lower EL)\n SUBSYSTEM=cpu\n";
        assert_eq!(
            record_text(r).as_deref(),
            Some("vcpu0[213]: unhandled exception: DABT (lower EL)")
        );
        assert_eq!(record_text(b"no separator"), None);
    }

    #[test]
    fn the_mapping_of_offset_zero_is_found_by_path() {
        let maps = "\
00200000-00343000 r--p 00001000 fd:01 77 /x/ras-harness
00400000-00543000 r--p 00000000 fd:01 77 /x/other
00600000-00743000 r--p 00000000 fd:01 77 /x/ras-harness
00743000-00943000 r-xp 00142000 fd:01 77 /x/ras-harness
";
        assert_eq!(offset_zero(maps, "/x/ras-harness"), Some(0x60_0000));
        assert_eq!(offset_zero(maps, "/x/absent"), None);
    }

    #[test]
    fn only_pc_and_lr_lines_carry_an_address() {
        assert_eq!(register_address("pc : 00000000003f4084"), Some(0x3f_4084));
        assert_eq!(
            register_address("lr : 0000aaaad5a0b1c4"),
            Some(0xaaaa_d5a0_b1c4)
        );
        assert_eq!(register_address("sp : 0000ffffe1d0c9a0"), None);
        assert_eq!(register_address("x29: 0000ffffe1d0c9a0 x28: 0"), None);
    }

    #[inline(never)]
    fn a_function_of_this_binary() -> u64 {
        a_function_of_this_binary as *const () as usize as u64
    }

    /// This test binary names its own function from its own mapping: the bias is right
    /// (PIE or not) and the name demangled.
    #[test]
    fn an_address_in_this_process_is_named() {
        let exe = std::env::current_exe().unwrap();
        let image = Image::of(&exe, std::process::id());
        let at = a_function_of_this_binary() + 4;
        let lines = image.name_addresses(vec![
            format!("pc : {at:016x}"),
            "sp : 0000ffffe1d0c9a0".into(),
            "lr : 0000000000000010".into(),
        ]);
        assert_eq!(
            lines[0],
            format!("pc : {at:016x} ras_harness::crash::tests::a_function_of_this_binary+0x4")
        );
        assert_eq!(
            lines[1..],
            ["sp : 0000ffffe1d0c9a0", "lr : 0000000000000010"]
        );
        // Without the mapping only a fixed-address executable is named (the musl builds
        // are; a glibc build is position-independent).
        let fixed = object::File::parse(&*std::fs::read(&exe).unwrap())
            .unwrap()
            .kind()
            == ObjectKind::Executable;
        let blind = Image {
            path: exe,
            offset_zero_at: None,
        };
        let pc = format!("pc : {at:016x}");
        assert_eq!(blind.name_addresses(vec![pc.clone()])[0] != pc, fixed);
    }
}
