//! QEMU's human monitor on a Unix socket: where the emulated host's CPUs are when its kernel
//! stops answering. A CPU locked with interrupts masked cannot print its own backtrace (the
//! kernel's hard-lockup report comes from the CPU watching it), but QEMU still holds its
//! registers.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// HMP's prompt, printed when it is ready for a command.
const PROMPT: &str = "(qemu) ";
/// How long a monitor that does not answer is waited for.
const PATIENCE: Duration = Duration::from_secs(10);

/// The monitor socket of one boot; removed on drop.
pub struct Monitor {
    path: PathBuf,
}

impl Monitor {
    pub fn new(path: PathBuf) -> Monitor {
        let _ = std::fs::remove_file(&path);
        Monitor { path }
    }

    /// QEMU's `-monitor` value: listen at the path, do not wait for a client.
    pub fn arg(&self) -> String {
        // QEMU's option parser reads ',' as a separator; ",," is a literal comma.
        let path = self.path.to_string_lossy().replace(',', ",,");
        format!("unix:{path},server=on,wait=off")
    }

    /// `info registers -a`: every CPU's registers as QEMU prints them.
    pub fn registers(&self) -> Result<String, String> {
        let fail = |e: std::io::Error| format!("QEMU monitor {}: {e}", self.path.display());
        let mut s = UnixStream::connect(&self.path).map_err(fail)?;
        s.set_read_timeout(Some(PATIENCE)).map_err(fail)?;
        read_to_prompt(&mut s).map_err(fail)?;
        s.write_all(b"info registers -a\n").map_err(fail)?;
        read_to_prompt(&mut s).map_err(fail)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_to_prompt(s: &mut UnixStream) -> std::io::Result<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(PROMPT.as_bytes()) {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The kernel's text symbols, "ADDRESS TYPE NAME" lines as /proc/kallsyms prints them, for
/// naming the PCs of a kernel booted with `nokaslr`, which runs at its link addresses.
pub struct Symbols {
    /// By address.
    text: Vec<(u64, String)>,
}

impl Symbols {
    pub fn read(path: &Path) -> Option<Symbols> {
        Some(Symbols::parse(&std::fs::read_to_string(path).ok()?)).filter(|s| !s.text.is_empty())
    }

    fn parse(list: &str) -> Symbols {
        let mut text: Vec<(u64, String)> = list
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                kind.eq_ignore_ascii_case("t")
                    .then(|| (addr, name.to_owned()))
            })
            .collect();
        text.sort();
        Symbols { text }
    }

    /// "name+0xoff" for an address from the first symbol to the last one (`_etext` or a
    /// module's last function), None outside.
    pub fn name(&self, addr: u64) -> Option<String> {
        let (last, _) = self.text.last()?;
        let i = self
            .text
            .partition_point(|(a, _)| *a <= addr)
            .checked_sub(1)?;
        let (start, name) = &self.text[i];
        (addr < *last || addr == *start).then(|| format!("{name}+{:#x}", addr - start))
    }
}

/// One line per CPU from `info registers -a`: its exception level, PC and link register,
/// named from `symbols` where they fall among them, then every other general register that
/// holds a named code address: an exception handler keeps the faulting PC in one (Debian's
/// 6.12 build of KVM's `kvm_unexpected_el2_exception` holds ELR_EL2 in X3).
pub fn summary(registers: &str, symbols: Option<&Symbols>) -> String {
    let named = |value: String| {
        let name = u64::from_str_radix(&value, 16)
            .ok()
            .and_then(|a| symbols?.name(a));
        match name {
            Some(name) => format!("{value} {name}"),
            None => value,
        }
    };
    let field = |cpu: &str, key: &str| {
        cpu.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    registers
        .split("CPU#")
        .skip(1)
        .filter_map(|cpu| {
            let index = cpu.split_whitespace().next()?;
            let pc = field(cpu, "PC=")?;
            let lr = field(cpu, "X30=").unwrap_or_default();
            // "PSTATE=600003c9 -ZC- EL2h": the word after the flags.
            let el = cpu
                .split_whitespace()
                .find(|w| w.starts_with("EL"))
                .unwrap_or("EL?");
            let code: Vec<String> = cpu
                .split_whitespace()
                .filter_map(|w| {
                    let (reg, value) = w.split_once('=')?;
                    let x = reg.strip_prefix('X')?;
                    if x == "30" || x.len() != 2 {
                        return None;
                    }
                    let name = symbols?.name(u64::from_str_radix(value, 16).ok()?)?;
                    Some(format!("{reg} {name}"))
                })
                .collect();
            let also = if code.is_empty() {
                String::new()
            } else {
                format!("; code addresses in {}", code.join(", "))
            };
            Some(format!(
                "CPU {index}: {el} pc {} lr {}{also}",
                named(pc),
                named(lr)
            ))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As QEMU 7.2's aarch64_cpu_dump_state prints it (target/arm/cpu.c), shortened.
    const REGISTERS: &str = "info registers -a\r\n\r\nCPU#0\r\n \
        PC=ffff800080123458 X00=0000000000000001 X01=0000000000000000\r\n\
        X03=ffff800080123504 X28=0000000000000000 X29=ffff800083f0fd90\r\n\
        X30=ffff800080200010  SP=ffff800083f0fd90\r\n\
        PSTATE=200003c9 --C- EL2h    BTYPE=0\r\n\r\nCPU#1\r\n \
        PC=0000000040001234 X00=0000000000000000\r\n\
        X30=0000000040001000  SP=0000000040100000\r\n\
        PSTATE=600003c5 -ZC- EL1h\r\n(qemu) ";

    /// As /proc/kallsyms prints them, data and a module's symbol included.
    const KALLSYMS: &str = "ffff800080000000 T _text\n\
        ffff800080123400 T queued_spin_lock_slowpath\n\
        ffff800080123500 t helper\n\
        ffff800080150000 D some_data\n\
        ffff800080200000 T memory_failure\n\
        ffff800080300000 T _etext\n";

    #[test]
    fn each_cpu_is_one_line_named_where_the_kernel_is() {
        let symbols = Symbols::parse(KALLSYMS);
        assert_eq!(
            summary(REGISTERS, Some(&symbols)),
            "CPU 0: EL2h pc ffff800080123458 queued_spin_lock_slowpath+0x58 \
             lr ffff800080200010 memory_failure+0x10; code addresses in X03 helper+0x4\n\
             CPU 1: EL1h pc 0000000040001234 lr 0000000040001000"
        );
        assert_eq!(
            summary(REGISTERS, None),
            "CPU 0: EL2h pc ffff800080123458 lr ffff800080200010\n\
             CPU 1: EL1h pc 0000000040001234 lr 0000000040001000"
        );
        assert_eq!(summary("info registers -a\r\n(qemu) ", None), "");
    }

    #[test]
    fn only_addresses_among_the_symbols_are_named() {
        let symbols = Symbols::parse(KALLSYMS);
        assert_eq!(
            symbols.name(0xffff800080123510).as_deref(),
            Some("helper+0x10")
        );
        assert_eq!(
            symbols.name(0xffff800080300000).as_deref(),
            Some("_etext+0x0")
        );
        assert_eq!(symbols.name(0xffff800080300040), None);
        assert_eq!(symbols.name(0x40001234), None);
    }
}
