//! `emuhost`: runs an aarch64 Linux executable as root on an arm64 KVM host, this one or an
//! emulated one; usable as cargo's runner for aarch64-unknown-linux-musl.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use emuhost::{Error, KernelChoice, QemuSuite, RunOptions};

const USAGE: &str = "\
usage: emuhost [--kernel NAME] [--timeout SECS] [--emulate] [--verbose] [--] EXECUTABLE [ARGS...]
       emuhost setup [--kernel NAME] [--refresh]
       emuhost setup-qemu [--suite SUITE] [--refresh]

Runs EXECUTABLE (aarch64 Linux) with ARGS as root: directly on an arm64 host with /dev/kvm,
otherwise in an emulated arm64 KVM host (QEMU TCG), and exits with its exit status.
`setup` installs QEMU and fetches the kernel ahead (--refresh: fetch the newest again).
`setup-qemu` unpacks Debian's arm64 QEMU of SUITE (bookworm, bookworm-backports, trixie
(default), sid) with its libraries, to run inside the emulated host, and prints the command
prefix that runs it there (first line; from the share, slow to start), its version, and an
initramfs part with the prefix that runs QEMU from it (`staged`, fast).

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
    let mut setup_qemu = false;
    let mut suite = QemuSuite::Trixie;
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
            Some("--suite") => suite = QemuSuite::parse(&value("--suite")?)?,
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
            Some("setup") if !setup && !setup_qemu && exe.is_none() => setup = true,
            Some("setup-qemu") if !setup && !setup_qemu && exe.is_none() => setup_qemu = true,
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
    if setup_qemu {
        let install = emuhost::vmm_qemu::ensure(suite, &opts.cache_dir, refresh)?;
        println!("{}", shell_words(&install.prefix()));
        println!("version {}", install.version);
        println!("suite {}", install.suite.name());
        println!("packages {}", install.packages.len());
        println!("initramfs {}", install.initramfs.display());
        println!("staged {}", shell_words(&install.staged().prefix()));
        return Ok(0);
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

/// `words` as one line a POSIX shell reads back as them: each quoted unless it is plainly
/// safe.
fn shell_words(words: &[OsString]) -> String {
    let quote = |w: &OsString| {
        let w = w.to_string_lossy();
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c));
        if plain {
            w.into_owned()
        } else {
            format!("'{}'", w.replace('\'', "'\\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_a_shell_when_needed() {
        let words = ["/r/ld.so", "--library-path", "/a b:/c", "it's", ""].map(OsString::from);
        assert_eq!(
            shell_words(&words),
            "/r/ld.so --library-path '/a b:/c' 'it'\\''s' ''"
        );
    }
}
