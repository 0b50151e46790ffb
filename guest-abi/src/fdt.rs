//! Reading a flattened device tree: what the payload learns from the DTB a VMM passes in
//! x0 (the arm64 boot protocol, Linux Documentation/arch/arm64/booting.rst), the way an OS
//! does: RAM from `/memory` nodes, its parameters from `/chosen/bootargs`, its console from
//! `/chosen/stdout-path`, the PSCI conduit from `/psci`'s `method`.
//!
//! Pure code over a byte slice, so the host tests it against the DTBs it builds. The
//! payload runs it with the MMU off, where memory is Device-nGnRnE: the target is built
//! with `+strict-align`, so no access here is unaligned.
//!
//! Format: Devicetree Specification v0.4, chapter 5 (header, structure block tokens,
//! strings block); properties: §2.3 (`#address-cells`, `reg`), §3.3 (`/aliases`), §3.4
//! (`/memory`), §3.6 (`/chosen`); UART properties from the Linux bindings
//! (serial/pl011.yaml, serial/8250.yaml: `reg-shift`, `reg-io-width`).

/// FDT header magic (big-endian), Devicetree spec §5.2.
pub const MAGIC: u32 = 0xd00d_feed;
/// Size of the header fields this reader uses (up to `size_dt_struct`).
pub const HEADER_SIZE: usize = 40;
/// Largest DTB the reader accepts (a guard against a garbage `totalsize`).
pub const MAX_SIZE: usize = 2 << 20;
/// Most `/memory` ranges kept.
pub const MAX_MEMORY: usize = 4;
/// Deepest node nesting the reader follows.
const MAX_DEPTH: usize = 8;

// Structure block tokens (Devicetree spec §5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// A UART programming model the payload can print on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PrimeCell PL011 ("arm,pl011").
    Pl011,
    /// 16550-compatible ("ns16550a", "ns16550", "snps,dw-apb-uart").
    Ns16550,
}

/// The console `/chosen/stdout-path` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Programming model.
    pub kind: UartKind,
    /// Physical base of its registers (the first `reg` entry).
    pub base: u64,
    /// `reg-shift`: log2 of the register stride (16550; 0 by default).
    pub reg_shift: u32,
    /// `reg-io-width`: 1 or 4 bytes per register access (16550; 1 by default).
    pub io_width: u32,
}

/// One RAM range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// Physical base.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Range {
    /// Whether `[addr, addr + len)` lies inside this range.
    pub const fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && len <= self.size && addr - self.base <= self.size - len
    }
}

/// Everything the payload takes from the DTB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo<'a> {
    /// `/memory` ranges, in tree order (the first [`MAX_MEMORY`]).
    pub memory: [Range; MAX_MEMORY],
    /// How many of `memory` are used.
    pub memory_count: usize,
    /// `/chosen/bootargs` without its terminating NUL (empty when absent).
    pub bootargs: &'a [u8],
    /// The console, when stdout-path names a UART this reader knows.
    pub uart: Option<Uart>,
    /// `/psci` `method = "smc"`: PSCI calls use SMC rather than HVC.
    pub psci_smc: bool,
}

impl BootInfo<'_> {
    /// Whether `[addr, addr + len)` is RAM.
    pub fn is_ram(&self, addr: u64, len: u64) -> bool {
        self.memory[..self.memory_count]
            .iter()
            .any(|r| r.contains(addr, len))
    }
}

/// Why a blob is not a device tree this reader can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// No FDT magic at the address.
    BadMagic,
    /// `totalsize`, the block offsets or a token run past the blob.
    Truncated,
    /// An unknown token in the structure block.
    BadToken,
    /// Nodes nested deeper than this reader follows.
    TooDeep,
}

/// The blob's `totalsize`, from its header; checks the magic.
pub fn total_size(header: &[u8]) -> Result<usize, FdtError> {
    if header.len() < HEADER_SIZE || be32(header, 0) != Some(MAGIC) {
        return Err(FdtError::BadMagic);
    }
    let size = be32(header, 4).ok_or(FdtError::Truncated)? as usize;
    if !(HEADER_SIZE..=MAX_SIZE).contains(&size) {
        return Err(FdtError::Truncated);
    }
    Ok(size)
}

/// Reads what the payload needs from the whole blob `dtb`.
pub fn boot_info(dtb: &[u8]) -> Result<BootInfo<'_>, FdtError> {
    let fdt = Fdt::new(dtb)?;
    let mut info = BootInfo {
        memory: [Range::default(); MAX_MEMORY],
        memory_count: 0,
        bootargs: &[],
        uart: None,
        psci_smc: false,
    };
    let (mut cells, mut stdout): ((u32, u32), &[u8]) = ((2, 1), &[]);
    fdt.walk(|path, name, value| {
        match (path, name) {
            (b"/", b"#address-cells") => cells.0 = be32(value, 0).unwrap_or(2),
            (b"/", b"#size-cells") => cells.1 = be32(value, 0).unwrap_or(1),
            (b"/chosen", b"bootargs") => info.bootargs = cstr(value),
            (b"/chosen", b"stdout-path") => stdout = cstr(value),
            (b"/psci", b"method") => info.psci_smc = cstr(value) == b"smc",
            _ => {}
        }
        // Root-level nodes "memory" or "memory@..." (spec §3.4); parents precede children,
        // so the root's cells are known by now.
        let is_memory = path == b"/memory" || path.starts_with(b"/memory@");
        if is_memory && name == b"reg" {
            for (base, size) in RegIter::new(value, cells) {
                if info.memory_count < MAX_MEMORY && size != 0 {
                    info.memory[info.memory_count] = Range { base, size };
                    info.memory_count += 1;
                }
            }
        }
    })?;
    info.uart = fdt.uart(stdout, cells)?;
    Ok(info)
}

/// The structure and strings blocks of one blob.
struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Fdt<'a> {
    fn new(dtb: &'a [u8]) -> Result<Self, FdtError> {
        let size = total_size(dtb)?;
        let blob = dtb.get(..size).ok_or(FdtError::Truncated)?;
        let field = |at| {
            be32(blob, at)
                .map(|v| v as usize)
                .ok_or(FdtError::Truncated)
        };
        let (off_struct, off_strings) = (field(8)?, field(12)?);
        let (size_strings, size_struct) = (field(32)?, field(36)?);
        let block = |off: usize, len: usize| {
            off.checked_add(len)
                .and_then(|end| blob.get(off..end))
                .ok_or(FdtError::Truncated)
        };
        Ok(Self {
            structs: block(off_struct, size_struct)?,
            strings: block(off_strings, size_strings)?,
        })
    }

    /// Calls `f(node path, property name, value)` for every property, in tree order. The
    /// path is the node's full path ("/" for the root) with unit addresses.
    fn walk(&self, mut f: impl FnMut(&[u8], &[u8], &'a [u8])) -> Result<(), FdtError> {
        let mut path = [0u8; 256];
        let mut ends = [0usize; MAX_DEPTH + 1]; // path length at each depth
        let mut depth = 0usize;
        let mut at = 0usize;
        loop {
            let token = be32(self.structs, at).ok_or(FdtError::Truncated)?;
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let name = cstr(self.structs.get(at..).ok_or(FdtError::Truncated)?);
                    at = align4(at + name.len() + 1);
                    if depth == MAX_DEPTH {
                        return Err(FdtError::TooDeep);
                    }
                    // The root's name is empty: its path is "/"; a child's is parent + "/" + name.
                    let mut len = ends[depth];
                    if depth > 0 {
                        if len > 1 {
                            *path.get_mut(len).ok_or(FdtError::TooDeep)? = b'/';
                            len += 1;
                        }
                        path.get_mut(len..len + name.len())
                            .ok_or(FdtError::TooDeep)?
                            .copy_from_slice(name);
                        len += name.len();
                    } else {
                        path[0] = b'/';
                        len = 1;
                    }
                    depth += 1;
                    ends[depth] = len;
                }
                FDT_END_NODE => depth = depth.checked_sub(1).ok_or(FdtError::BadToken)?,
                FDT_PROP => {
                    let len = be32(self.structs, at).ok_or(FdtError::Truncated)? as usize;
                    let name_off = be32(self.structs, at + 4).ok_or(FdtError::Truncated)?;
                    let value = self
                        .structs
                        .get(at + 8..at + 8 + len)
                        .ok_or(FdtError::Truncated)?;
                    let name = cstr(self.strings.get(name_off as usize..).unwrap_or(&[]));
                    at = align4(at + 8 + len);
                    f(&path[..ends[depth]], name, value);
                }
                FDT_NOP => {}
                FDT_END => return Ok(()),
                _ => return Err(FdtError::BadToken),
            }
        }
    }

    /// The UART at `stdout` (a path, or an alias in `/aliases`, either with ":options").
    fn uart(&self, stdout: &[u8], cells: (u32, u32)) -> Result<Option<Uart>, FdtError> {
        let stdout = stdout.split(|&b| b == b':').next().unwrap_or(&[]);
        if stdout.is_empty() {
            return Ok(None);
        }
        let mut target = stdout;
        if stdout[0] != b'/' {
            let mut alias: &[u8] = &[];
            self.walk(|path, name, value| {
                if path == b"/aliases" && name == stdout {
                    alias = cstr(value);
                }
            })?;
            target = alias;
        }
        if target.is_empty() {
            return Ok(None);
        }
        let (mut kind, mut base, mut reg_shift, mut io_width) = (None, None, 0, 1);
        self.walk(|path, name, value| {
            if !names_node(path, target) {
                return;
            }
            match name {
                b"compatible" => kind = kind.or(uart_kind(value)),
                b"reg" => base = RegIter::new(value, cells).next().map(|(b, _)| b),
                b"reg-shift" => reg_shift = be32(value, 0).unwrap_or(0),
                b"reg-io-width" => io_width = be32(value, 0).unwrap_or(1),
                _ => {}
            }
        })?;
        Ok(kind.zip(base).map(|(kind, base)| Uart {
            kind,
            base,
            reg_shift,
            io_width,
        }))
    }
}

/// Whether `path` is the node `wanted` names: equal, or equal but for a unit address the
/// wanted path leaves out (spec §2.2.1: "/serial" names "/serial@9000000" when unique).
fn names_node(path: &[u8], wanted: &[u8]) -> bool {
    path == wanted
        || (path.len() > wanted.len()
            && path.starts_with(wanted)
            && path[wanted.len()] == b'@'
            && !path[wanted.len()..].contains(&b'/'))
}

/// The UART model a `compatible` string list names, if any.
fn uart_kind(list: &[u8]) -> Option<UartKind> {
    list.split(|&b| b == 0).find_map(|c| match c {
        b"arm,pl011" => Some(UartKind::Pl011),
        b"ns16550a" | b"ns16550" | b"snps,dw-apb-uart" => Some(UartKind::Ns16550),
        _ => None,
    })
}

/// (address, size) pairs of a `reg` value with the parent's cell counts.
struct RegIter<'a> {
    value: &'a [u8],
    cells: (u32, u32),
}

impl<'a> RegIter<'a> {
    fn new(value: &'a [u8], cells: (u32, u32)) -> Self {
        Self { value, cells }
    }
}

impl Iterator for RegIter<'_> {
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        let (a, s) = (self.cells.0 as usize * 4, self.cells.1 as usize * 4);
        if a == 0 || a > 8 || s > 8 || self.value.len() < a + s {
            return None;
        }
        let number = |bytes: &[u8]| {
            bytes
                .chunks(4)
                .fold(0u64, |n, c| n << 32 | u64::from(be32(c, 0).unwrap_or(0)))
        };
        let item = (number(&self.value[..a]), number(&self.value[a..a + s]));
        self.value = &self.value[a + s..];
        Some(item)
    }
}

/// The big-endian u32 at `at`, if in bounds.
fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `bytes` up to (without) its first NUL.
fn cstr(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}
