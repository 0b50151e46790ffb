//! krun-driver: one libkrun microVM as a process, booting a raw arm64 image.
//!
//! libkrun (crates.io `libkrun`, Rust, default features off) is linked in and driven
//! through its C API functions, called from Rust: `krun_create_ctx`, `krun_set_vm_config`,
//! `krun_set_kernel` (format 0, raw), the console calls, then `krun_start_enter`, which
//! runs the VM on this thread and never returns on success: libkrun ends the process
//! itself with `_exit` when the guest powers off (status 0) or a vCPU fails (status 1).
//! See `--help` and emuhost/src/vmm_libkrun.rs for what the guest finds.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for bad arguments (before libkrun is called).
const EXIT_USAGE: u8 = 2;
/// Exit status for a krun_* call that failed, or a failed check before one.
const EXIT_KRUN: u8 = 3;

/// libkrun's guest RAM starts here for a direct kernel boot, and a raw image is copied
/// here and entered here (krun-arch aarch64/layout.rs DRAM_MEM_START_KERNEL; krun-vmm
/// builder.rs load_external_kernel).
const RAM_BASE: u64 = 0x8000_0000;
/// The device tree takes the last 2 MiB of RAM (krun-arch aarch64/mod.rs
/// arch_memory_regions: fdt_addr = ram end - FDT_MAX_SIZE).
const FDT_MAX_SIZE: u64 = 0x20_0000;
/// libkrun clamps RAM silently at DRAM_MEM_END (1022 GiB) - RAM_BASE.
const MAX_RAM_MIB: u64 = (0x00FF_8000_0000 - RAM_BASE) >> 20;
/// arm64's command line limit (krun-arch layout.rs CMDLINE_MAX_SIZE); libkrun appends its
/// own words (earlycon=..., tsi_hijack, " -- ") and panics past the limit, so leave room.
const CMDLINE_MAX: usize = 2048 - 256;

const DEFAULT_RAM_MIB: u32 = 128;
const DEFAULT_VCPUS: u8 = 1;
/// libkrun's log filter: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
const DEFAULT_LOG_LEVEL: u32 = 1;

const HELP: &str = "\
krun-driver: boots a raw arm64 image in a libkrun (1.19.7) microVM under KVM.

USAGE:
    krun-driver --kernel IMAGE [--ram-mib N] [--vcpus N] [--cmdline STR]
                [--log-level N] [--no-serial] [--implicit-devices]

OPTIONS:
    --kernel IMAGE    the raw image: copied to guest physical 0x80000000 and entered
                      there at EL1 with the MMU off, x0 = the device tree's address
    --ram-mib N       guest RAM in MiB (default 128): GPA 0x80000000 up to
                      0x80000000 + N MiB; its last 2 MiB hold the device tree, so the
                      image must fit below them
    --vcpus N         vCPUs (default 1); all but the first start powered off, for PSCI
                      CPU_ON
    --cmdline STR     /chosen/bootargs (printable ASCII); libkrun appends its own words
                      (earlycon=pl011,... with the serial console, ' -- '). Without it,
                      libkrun's default Linux command line is used
    --log-level N     libkrun's log on stderr: 0 off, 1 error (default), 2 warn, 3 info,
                      4 debug, 5 trace
    --no-serial       no PL011 UART (by default one at 0x0a001000, its output on this
                      process's stdout, and /chosen/stdout-path points at it)
    --implicit-devices
                      keep libkrun's implicit virtio-console (hvc0: stdout if a terminal,
                      else libkrun's log) and vsock (TSI) devices, which this driver
                      otherwise disables. virtio-balloon and virtio-rng are always there
    -h, --help        this text

EXIT STATUS:
    0  the guest powered off (PSCI SYSTEM_OFF, or SYSTEM_RESET: libkrun ends either way)
    1  libkrun stopped the VM on a vCPU error (an unhandled exit, a failed KVM_RUN)
    2  bad arguments
    3  a krun_* call failed, or a check before one (message names the call and errno)
    killed by a signal: e.g. SIGBUS (7) when the guest touches a poisoned page: libkrun
       installs no SIGBUS handler
";

#[derive(Debug, PartialEq)]
struct Args {
    kernel: PathBuf,
    ram_mib: u32,
    vcpus: u8,
    cmdline: Option<String>,
    log_level: u32,
    serial: bool,
    implicit_devices: bool,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Args),
    Help,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut kernel = None;
    let mut ram_mib = DEFAULT_RAM_MIB;
    let mut vcpus = DEFAULT_VCPUS;
    let mut cmdline = None;
    let mut log_level = DEFAULT_LOG_LEVEL;
    let mut serial = true;
    let mut implicit_devices = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("unknown argument {a:?}"))?;
        // `--name=value` or `--name value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(OsString::from(v))),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<OsString, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--kernel" => kernel = Some(PathBuf::from(value("an image path")?)),
            "--ram-mib" => {
                let v = value("a size in MiB")?;
                ram_mib = number(&name, &v)?;
                if ram_mib == 0 || u64::from(ram_mib) > MAX_RAM_MIB {
                    return Err(format!(
                        "--ram-mib {ram_mib}: must be from 1 to {MAX_RAM_MIB} (libkrun's RAM \
                         ends at 1022 GiB)"
                    ));
                }
            }
            "--vcpus" => {
                let v = value("a count")?;
                let n: u32 = number(&name, &v)?;
                vcpus = u8::try_from(n).ok().filter(|&n| n > 0).ok_or(format!(
                    "--vcpus {n}: must be from 1 to 255 (libkrun takes a u8)"
                ))?;
            }
            "--cmdline" => {
                let v = value("a string")?;
                let s = v
                    .into_string()
                    .map_err(|v| format!("--cmdline {v:?}: not UTF-8"))?;
                if let Some(c) = s.chars().find(|c| !matches!(c, ' '..='~')) {
                    return Err(format!(
                        "--cmdline: {c:?} is not printable ASCII (libkrun's command line \
                         takes ' ' to '~' only)"
                    ));
                }
                if s.len() > CMDLINE_MAX {
                    return Err(format!(
                        "--cmdline is {} bytes, more than {CMDLINE_MAX} (arm64's limit is \
                         2048 and libkrun appends to it)",
                        s.len()
                    ));
                }
                cmdline = Some(s);
            }
            "--log-level" => {
                let v = value("a level from 0 to 5")?;
                log_level = number(&name, &v)?;
                if log_level > 5 {
                    return Err(format!("--log-level {log_level}: must be from 0 to 5"));
                }
            }
            "--no-serial" => serial = false,
            "--implicit-devices" => implicit_devices = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
        if inline.is_some() && matches!(name.as_str(), "--no-serial" | "--implicit-devices") {
            return Err(format!("{name} takes no value"));
        }
    }
    let kernel = kernel.ok_or("--kernel IMAGE is required")?;
    Ok(Parsed::Run(Args {
        kernel,
        ram_mib,
        vcpus,
        cmdline,
        log_level,
        serial,
        implicit_devices,
    }))
}

fn number<T: std::str::FromStr>(name: &str, v: &OsString) -> Result<T, String> {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{name} {v:?}: not a number"))
}

/// What went wrong, and the status to exit with.
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn check(message: String) -> Failure {
        Failure {
            message,
            status: EXIT_KRUN,
        }
    }
}

/// `Ok(ret)` for a krun_* return value >= 0, else the call named with its errno.
fn krun(call: &str, ret: i32) -> Result<i32, Failure> {
    if ret >= 0 {
        return Ok(ret);
    }
    let errno = ret.checked_neg().unwrap_or(libc::EINVAL);
    Err(Failure::check(format!(
        "{call} failed: {} ({}, errno {errno})",
        errno_name(errno),
        std::io::Error::from_raw_os_error(errno)
    )))
}

/// The symbolic name of the errno values libkrun returns.
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "errno",
    }
}

/// Checks what libkrun would otherwise report late, vaguely, or by panicking: the image
/// (libkrun unwraps its copy into RAM) and /dev/kvm.
fn precheck(args: &Args) -> Result<(), Failure> {
    let meta = std::fs::metadata(&args.kernel)
        .map_err(|e| Failure::check(format!("--kernel {}: {e}", args.kernel.display())))?;
    if !meta.is_file() {
        return Err(Failure::check(format!(
            "--kernel {}: not a regular file",
            args.kernel.display()
        )));
    }
    std::fs::File::open(&args.kernel)
        .map_err(|e| Failure::check(format!("--kernel {}: {e}", args.kernel.display())))?;
    let ram = u64::from(args.ram_mib) << 20;
    if meta.len() == 0 || meta.len() > ram.saturating_sub(FDT_MAX_SIZE) {
        return Err(Failure::check(format!(
            "--kernel {}: {} bytes; with --ram-mib {} the image must be 1 to {} bytes (RAM \
             less the device tree's 2 MiB at its end)",
            args.kernel.display(),
            meta.len(),
            args.ram_mib,
            ram.saturating_sub(FDT_MAX_SIZE)
        )));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| Failure::check(format!("/dev/kvm: {e} (libkrun needs KVM)")))?;
    Ok(())
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, Failure> {
    CString::new(bytes).map_err(|_| Failure::check(format!("{what} contains a NUL byte")))
}

/// Configures the VM and enters it: returns only on failure.
fn run(args: &Args) -> Result<(), Failure> {
    precheck(args)?;

    // SAFETY: fd 2 is this process's stderr, which stays open; libkrun wraps it in its
    // logger's target (Target::Stderr for fd 2, not an owned File).
    krun("krun_init_log", unsafe {
        krun::krun_init_log(2, args.log_level, 0, 1)
    })?;

    let max = krun::krun_get_max_vcpus();
    let max = krun("krun_get_max_vcpus", max)?;
    if i32::from(args.vcpus) > max {
        return Err(Failure::check(format!(
            "--vcpus {}: KVM here allows at most {max}",
            args.vcpus
        )));
    }

    let ctx = krun("krun_create_ctx", krun::krun_create_ctx())?;
    let ctx = u32::try_from(ctx).map_err(|_| Failure::check("krun_create_ctx: bad id".into()))?;
    krun(
        "krun_set_vm_config",
        krun::krun_set_vm_config(ctx, args.vcpus, args.ram_mib),
    )?;

    let kernel = cstring("--kernel", args.kernel.as_os_str().as_bytes())?;
    let cmdline = args
        .cmdline
        .as_deref()
        .map(|c| cstring("--cmdline", c.as_bytes()))
        .transpose()?;
    // SAFETY: both pointers are NUL-terminated strings that outlive the call (libkrun
    // copies them); the initramfs pointer may be NULL (none), as may the command line
    // (libkrun's default). Format 0 is a raw image.
    krun("krun_set_kernel", unsafe {
        krun::krun_set_kernel(
            ctx,
            kernel.as_ptr(),
            0,
            std::ptr::null(),
            cmdline.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        )
    })?;

    if !args.implicit_devices {
        krun(
            "krun_disable_implicit_console",
            krun::krun_disable_implicit_console(ctx),
        )?;
        krun(
            "krun_disable_implicit_vsock",
            krun::krun_disable_implicit_vsock(ctx),
        )?;
    }

    if args.serial {
        // libkrun takes ownership of the output fd (File::from_raw_fd): give it a copy
        // of stdout, not stdout itself.
        // SAFETY: dup of an fd this process owns; the result is checked.
        let out = unsafe { libc::dup(libc::STDOUT_FILENO) };
        if out < 0 {
            return Err(Failure::check(format!(
                "dup(stdout) for the serial console: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: -1 means no input; `out` is an open fd handed over to libkrun.
        krun("krun_add_serial_console_default", unsafe {
            krun::krun_add_serial_console_default(ctx, -1, out)
        })?;
    }

    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let ret = krun::krun_start_enter(ctx);
    krun("krun_start_enter", ret)?;
    Err(Failure::check(format!(
        "krun_start_enter returned {ret} without running the VM"
    )))
}

fn main() -> ExitCode {
    let parsed = match parse(std::env::args_os().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("krun-driver: {e}\nTry 'krun-driver --help'.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let args = match parsed {
        Parsed::Help => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Parsed::Run(a) => a,
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("krun-driver: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            p(&[
                "--kernel",
                "img",
                "--ram-mib=64",
                "--vcpus",
                "2",
                "--cmdline",
                "a b"
            ]),
            Ok(Parsed::Run(Args {
                kernel: "img".into(),
                ram_mib: 64,
                vcpus: 2,
                cmdline: Some("a b".into()),
                log_level: DEFAULT_LOG_LEVEL,
                serial: true,
                implicit_devices: false,
            }))
        );
        assert_eq!(p(&["--help"]), Ok(Parsed::Help));
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, needle) in [
            (&["--ram-mib", "1"][..], "--kernel IMAGE is required"),
            (&["--kernel"], "--kernel needs"),
            (&["--kernel", "i", "--vcpus", "0"], "--vcpus 0"),
            (&["--kernel", "i", "--vcpus", "256"], "--vcpus 256"),
            (&["--kernel", "i", "--ram-mib", "x"], "not a number"),
            (&["--kernel", "i", "--cmdline", "a\tb"], "printable ASCII"),
            (&["--kernel", "i", "--frob"], "unknown argument \"--frob\""),
            (&["--kernel", "i", "--no-serial=1"], "takes no value"),
        ] {
            let err = p(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn errno_is_named() {
        let Err(f) = krun("krun_set_vm_config", -libc::EINVAL) else {
            panic!("a failure")
        };
        assert!(f.message.starts_with("krun_set_vm_config failed: EINVAL ("));
        assert!(krun("x", 4).is_ok());
    }
}
