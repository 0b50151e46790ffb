//! QEMU's human monitor on a Unix socket: where the emulated host's CPUs are when its kernel
//! stops answering. A CPU locked with interrupts masked cannot print its own backtrace (the
//! kernel's hard-lockup report comes from the CPU watching it), but QEMU still holds its
//! registers.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
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

/// One line per CPU from `info registers -a`: its exception level, PC and link register.
pub fn summary(registers: &str) -> String {
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
            Some(format!("CPU {index}: {el} pc {pc} lr {lr}"))
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
        X28=0000000000000000 X29=ffff80008000fd90 X30=ffff800080200010  SP=ffff80008000fd90\r\n\
        PSTATE=200003c9 --C- EL2h    BTYPE=0\r\n\r\nCPU#1\r\n \
        PC=0000000040001234 X00=0000000000000000\r\n\
        X30=0000000040001000  SP=0000000040100000\r\n\
        PSTATE=600003c5 -ZC- EL1h\r\n(qemu) ";

    #[test]
    fn each_cpu_is_one_line() {
        assert_eq!(
            summary(REGISTERS),
            "CPU 0: EL2h pc ffff800080123458 lr ffff800080200010\n\
             CPU 1: EL1h pc 0000000040001234 lr 0000000040001000"
        );
        assert_eq!(summary("info registers -a\r\n(qemu) "), "");
    }
}
