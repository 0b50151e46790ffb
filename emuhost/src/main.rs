//! `emuhost`: runs an aarch64 Linux executable as root on an arm64 KVM host, this one or an
//! emulated one; usable as cargo's runner for aarch64-unknown-linux-musl.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use emuhost::{Error, KernelChoice, RunOptions};

const USAGE: &str = "\
usage: emuhost [--kernel NAME] [--timeout SECS] [--emulate] [--verbose] [--] EXECUTABLE [ARGS...]
       emuhost setup [--kernel NAME] [--refresh]

Runs EXECUTABLE (aarch64 Linux) with ARGS as root: directly on an arm64 host with /dev/kvm,
otherwise in an emulated arm64 KVM host (QEMU TCG), and exits with its exit status.
`setup` installs QEMU and fetches the kernel ahead (--refresh: fetch the newest again).

  --kernel NAME   stable (default; Debian trixie, 6.12), bookworm (6.1), sid, sid-16k
                  (also RAS_HOST_KERNEL)
  --timeout SECS  for the whole emulated run (also RAS_EMU_TIMEOUT; default 600)
  --emulate       emulate even on an arm64 host with /dev/kvm (also RAS_EMU_FORCE=1)
  --verbose       report set-up and boot timings (also RAS_EMU_VERBOSE=1)";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("emuhost: {e}");
            ExitCode::from(125)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<i32, Error> {
    let mut opts = RunOptions::from_env()?;
    let mut it = args.into_iter();
    let mut setup = false;
    let mut refresh = false;
    let mut exe = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| v.into_string().ok())
                .ok_or(Error::Config(format!("{name} needs a value\n{USAGE}")))
        };
        match arg.to_str() {
            Some("--kernel") => opts.kernel = KernelChoice::parse(&value("--kernel")?)?,
            Some("--timeout") => {
                let v = value("--timeout")?;
                let secs = v
                    .parse::<u64>()
                    .map_err(|_| Error::Config(format!("--timeout {v:?}")))?;
                opts.timeout = Duration::from_secs(secs);
            }
            Some("--emulate") => opts.emulate = true,
            Some("--verbose") => opts.verbose = true,
            Some("--refresh") => refresh = true,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(0);
            }
            Some("setup") if !setup && exe.is_none() => setup = true,
            Some("--") => {
                exe = it.next();
                break;
            }
            Some(s) if s.starts_with('-') => {
                return Err(Error::Config(format!("unknown option {s}\n{USAGE}")))
            }
            _ => {
                exe = Some(arg);
                break;
            }
        }
    }
    if setup {
        let (qemu, kernel) = emuhost::setup(opts.kernel, &opts.cache_dir, refresh)?;
        println!("qemu {}", qemu.display());
        println!("kernel {} {}", kernel.choice.name(), kernel.release);
        println!("image {}", kernel.image.display());
        println!("page-size {}", kernel.page_size);
        println!("packages {}", kernel.packages.join(" "));
        return Ok(0);
    }
    let exe = exe.ok_or(Error::Config(format!("no executable given\n{USAGE}")))?;
    let rest: Vec<OsString> = it.collect();
    emuhost::run(exe.as_ref(), &rest, &opts)
}
