//! Runs aarch64 Linux binaries as root on an arm64 KVM host: this machine when it is one
//! (arm64 with /dev/kvm), otherwise an emulated one.
//!
//! The emulated host is QEMU's `virt` machine under TCG with EL2 and FEAT_RAS emulated,
//! booting a Debian arm64 kernel (KVM in VHE mode, memory-failure handling built in) with a
//! small initramfs whose init mounts the workspace at its host path, runs the binary as
//! root and reports its exit status. First use installs QEMU (Debian's qemu-system-arm) if
//! missing and fetches the kernel through a private apt state; both are cached under
//! target/emuhost/, so later runs only boot.
//!
//! Entry points: [`run`] for a built binary (the `emuhost` binary, a cargo runner, uses
//! it), [`CrossTarget::relaunch`] for a test or bench that builds itself for aarch64 and
//! reruns there, [`setup`] to prepare everything ahead. The VMMs to test run there too:
//! [`vmm_qemu`] unpacks Debian's arm64 QEMU of a chosen suite, [`vmm_libkrun`] builds a
//! libkrun VMM binary.

mod apt;
mod console;
mod cpio;
mod cross;
mod elf;
mod error;
mod initramfs;
mod kernel;
pub mod linux_guest;
mod modules;
mod monitor;
mod native;
mod qemu;
pub mod vmm_libkrun;
pub mod vmm_qemu;

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cross::{CrossTarget, TargetKind, TARGET};
pub use error::Error;
pub use kernel::{Kernel, KernelChoice, KERNEL_VAR, MIRROR_VAR};
pub use native::{in_emulated_host, is_root, kvm_available};
pub use qemu::QEMU_VAR;
pub use vmm_qemu::{QemuInstall, QemuSuite};

/// A progress or warning line on stderr.
macro_rules! progress {
    ($($t:tt)*) => { eprintln!("emuhost: {}", format_args!($($t)*)) };
}
pub(crate) use progress;

/// Seconds a whole emulated run (boot included) may take.
pub const TIMEOUT_VAR: &str = "RAS_EMU_TIMEOUT";
/// 2 MiB huge pages reserved in the emulated host.
pub const HUGEPAGES_VAR: &str = "RAS_EMU_HUGEPAGES";
/// 1 GiB huge pages reserved at the emulated host's boot (`hugepagesz=1G hugepages=N`, the
/// only time a gigantic page is sure to be found); each adds 1 GiB to its RAM. Default 1:
/// QEMU backs guest RAM lazily, so an unused reserved page costs this machine nothing, and
/// the boot takes no longer.
pub const GIGANTIC_VAR: &str = "RAS_EMU_GIGANTIC";
/// Where QEMU's kernels and the aarch64 builds are cached (default target/emuhost).
pub const CACHE_VAR: &str = "RAS_EMU_CACHE";
/// More initramfs parts ([`RunOptions::initramfs_parts`]), as a path list.
pub const INITRAMFS_VAR: &str = "RAS_EMU_INITRAMFS";
/// "1": emulate even on an arm64 host with /dev/kvm.
pub const EMULATE_VAR: &str = "RAS_EMU_FORCE";
/// "1": report set-up and boot timings on stderr.
pub const VERBOSE_VAR: &str = "RAS_EMU_VERBOSE";

const DEFAULT_TIMEOUT_SECS: u64 = 600;
/// A kernel that reported a lockup and then printed nothing for this long is taken as hung
/// (the observed case: a hard lockup on one CPU, then silence until the run's timeout).
const AFTER_LOCKUP: Duration = Duration::from_secs(120);
const DEFAULT_HUGEPAGES: u32 = 16;
const DEFAULT_GIGANTIC: u32 = 1;
/// Most 1 GiB pages: each is 1 GiB more of the emulated host's RAM, taken from this machine.
const MAX_GIGANTIC: u32 = 4;

/// The variables passed into the emulated host: the ones tests and their tools read.
const FORWARDED: &[&str] = &[
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
    "CI",
    "NO_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "TERM",
    "CARGO_TARGET_TMPDIR",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];
const FORWARDED_PREFIXES: &[&str] = &[
    "INSTA_",
    "RAS_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_BIN_EXE_",
];

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub kernel: KernelChoice,
    /// For the whole emulated run, boot included.
    pub timeout: Duration,
    /// How long the console may stay silent after the kernel reported a lockup.
    pub after_lockup: Duration,
    /// Emulate even where the binary could run natively.
    pub emulate: bool,
    /// Shared into the guest at its own path, with the binary's directory and the working
    /// directory when they lie outside it.
    pub workspace: PathBuf,
    /// The binary's working directory.
    pub cwd: PathBuf,
    /// More directories to share at their host paths: what the binary's arguments name
    /// outside the workspace (input files, where a report goes), so nothing it reads is
    /// missing and nothing it writes is lost with the guest.
    pub extra_shares: Vec<PathBuf>,
    /// The binary's environment (besides PATH, HOME and RAS_EMU_GUEST=1 set by init).
    pub env: Vec<(OsString, OsString)>,
    pub hugepages: u32,
    /// More newc archives appended to the emulated host's initramfs, so that what they hold
    /// is in its RAM rather than read over the share (e.g. [`QemuInstall::initramfs`]);
    /// from [`INITRAMFS_VAR`].
    pub initramfs_parts: Vec<PathBuf>,
    /// 1 GiB huge pages reserved at boot ([`GIGANTIC_VAR`]).
    pub gigantic: u32,
    pub cache_dir: PathBuf,
    pub verbose: bool,
}

impl RunOptions {
    /// Options from this process: RAS_HOST_KERNEL, RAS_EMU_* and the forwarded variables,
    /// the current directory, this workspace.
    pub fn from_env() -> Result<RunOptions, Error> {
        let timeout = match std::env::var(TIMEOUT_VAR) {
            Ok(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or(Error::Config(format!(
                    "{TIMEOUT_VAR}={s:?} is not a positive number of seconds"
                )))?,
            Err(_) => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        };
        let hugepages = match std::env::var(HUGEPAGES_VAR) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("{HUGEPAGES_VAR}={s:?} is not a count")))?,
            Err(_) => DEFAULT_HUGEPAGES,
        };
        let gigantic = match std::env::var(GIGANTIC_VAR) {
            Ok(s) => s
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u32| n <= MAX_GIGANTIC)
                .ok_or(Error::Config(format!(
                    "{GIGANTIC_VAR}={s:?} is not a count from 0 to {MAX_GIGANTIC}"
                )))?,
            Err(_) => DEFAULT_GIGANTIC,
        };
        let workspace = workspace_root();
        let mut env = forwarded_env(std::env::vars_os());
        // The guest's console is a terminal; output going to a file or pipe here should not
        // carry colour codes.
        let colour_set = ["NO_COLOR", "CLICOLOR_FORCE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !colour_set && !std::io::stdout().is_terminal() {
            env.push(("NO_COLOR".into(), "1".into()));
        }
        let flag = |var: &str| std::env::var_os(var).is_some_and(|v| v == "1");
        Ok(RunOptions {
            kernel: KernelChoice::from_env()?,
            timeout,
            after_lockup: AFTER_LOCKUP,
            emulate: flag(EMULATE_VAR),
            cache_dir: default_cache_dir(&workspace),
            cwd: std::env::current_dir()
                .map_err(|e| Error::Config(format!("no current directory: {e}")))?,
            extra_shares: Vec::new(),
            workspace,
            env,
            hugepages,
            initramfs_parts: std::env::var_os(INITRAMFS_VAR)
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
            gigantic,
            verbose: flag(VERBOSE_VAR),
        })
    }
}

/// The workspace emuhost was built in (emuhost/ is one of its members).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// RAS_EMU_CACHE, else `<target dir>/emuhost` (CARGO_TARGET_DIR or the workspace's target).
fn default_cache_dir(workspace: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_VAR) {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    target.join("emuhost")
}

/// The subset of `vars` the guest binary gets.
pub fn forwarded_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            FORWARDED.contains(&k.as_ref()) || FORWARDED_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .collect()
}

/// Makes sure QEMU and the kernel are there (installing and fetching on first use, or
/// again if `refresh`); returns QEMU's path and the kernel. Concurrent callers wait for
/// each other on a lock file in `cache_dir`.
pub fn setup(
    choice: KernelChoice,
    cache_dir: &Path,
    refresh: bool,
) -> Result<(PathBuf, Kernel), Error> {
    let _lock = lock_cache(cache_dir)?;
    let qemu = qemu::find_or_install()?;
    let kernel = kernel::ensure(choice, cache_dir, refresh)?;
    Ok((qemu, kernel))
}

/// Takes `cache_dir`'s set-up lock (setup.lock, created with the directory if need be):
/// concurrent set-ups wait for each other until the returned file is dropped.
pub(crate) fn lock_cache(cache_dir: &Path) -> Result<std::fs::File, Error> {
    std::fs::create_dir_all(cache_dir).map_err(error::setup_io(cache_dir.display()))?;
    let lock_path = cache_dir.join("setup.lock");
    let lock = std::fs::File::create(&lock_path).map_err(error::setup_io(lock_path.display()))?;
    lock.lock().map_err(error::setup_io(lock_path.display()))?;
    Ok(lock)
}

/// Runs `exe` with `args` as root on an arm64 KVM host and returns its exit status: here
/// if this is one (and `opts.emulate` is off), else in the emulated host, with the
/// binary's output on stdout.
pub fn run(exe: &Path, args: &[OsString], opts: &RunOptions) -> Result<i32, Error> {
    if kvm_available() && !opts.emulate {
        return native::run(exe, args);
    }
    run_emulated(exe, args, opts, &mut std::io::stdout())
}

/// Runs `exe` in the emulated host, the console's output (the binary's stdout and stderr,
/// interleaved) going to `out`.
pub fn run_emulated(
    exe: &Path,
    args: &[OsString],
    opts: &RunOptions,
    out: &mut dyn Write,
) -> Result<i32, Error> {
    let started = Instant::now();
    let exe = exe
        .canonicalize()
        .map_err(|e| Error::Config(format!("{}: {e}", exe.display())))?;
    let (qemu_path, kernel) = setup(opts.kernel, &opts.cache_dir, false)?;
    let set_up = started.elapsed();

    let cwd = opts.cwd.canonicalize().unwrap_or_else(|_| opts.cwd.clone());
    let mut dirs = vec![
        opts.workspace
            .canonicalize()
            .unwrap_or_else(|_| opts.workspace.clone()),
        cwd.clone(),
    ];
    dirs.extend(exe.parent().map(Path::to_owned));
    for dir in &opts.extra_shares {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        shareable(&dir)?;
        dirs.push(dir);
    }
    let shares: Vec<(String, PathBuf)> = outermost(dirs)
        .into_iter()
        .enumerate()
        .map(|(i, d)| (format!("emu{i}"), d))
        .collect();

    let marker = format!("EMUHOST-{:016x}", nonce());
    // The kernel's symbols are written by its first boot that shares their directory.
    let symbols = kernel
        .symbols
        .parent()
        .and_then(|d| d.canonicalize().ok())
        .map(|d| d.join("symbols"));
    let write_symbols = symbols
        .as_deref()
        .filter(|s| !s.exists() && shares.iter().any(|(_, d)| s.starts_with(d)));
    let spec = initramfs::RunSpec {
        marker: &marker,
        modules: &kernel.module_paths,
        shares: &shares,
        env: &opts.env,
        exe: exe.as_os_str(),
        args,
        cwd: cwd.as_os_str(),
        hugepages: opts.hugepages,
        symbols: write_symbols.map(Path::as_os_str),
    };
    let run_dir = opts.cache_dir.join("runs");
    std::fs::create_dir_all(&run_dir).map_err(error::setup_io(run_dir.display()))?;
    let initrd = run_dir.join(format!("{marker}.cpio"));
    let mut image = spec.archive();
    image.extend(
        std::fs::read(&kernel.modules_cpio)
            .map_err(error::setup_io(kernel.modules_cpio.display()))?,
    );
    for part in &opts.initramfs_parts {
        image.extend(std::fs::read(part).map_err(error::setup_io(part.display()))?);
    }
    std::fs::write(&initrd, image).map_err(error::setup_io(initrd.display()))?;

    // In the temporary directory: a socket's path must fit in 108 bytes.
    let monitor = monitor::Monitor::new(std::env::temp_dir().join(format!("{marker}.monitor")));
    let boot = qemu::Boot {
        qemu: &qemu_path,
        image: &kernel.image,
        initrd: &initrd,
        shares: &shares,
        marker: &marker,
        timeout: opts.timeout,
        after_lockup: opts.after_lockup,
        monitor: &monitor,
        symbols: &kernel.symbols,
        release: &kernel.release,
        gigantic: opts.gigantic,
    };
    let result = boot.run(out);
    let _ = std::fs::remove_file(&initrd);
    if opts.verbose {
        progress!(
            "kernel {} ({}): set-up {:.2} s, boot and run {:.2} s",
            kernel.release,
            kernel.choice.name(),
            set_up.as_secs_f64(),
            (started.elapsed() - set_up).as_secs_f64()
        );
    }
    result
}

/// The guest's own directories, which a share mounted at the same path would hide: its
/// root, and what its init mounts (emuhost/init).
const GUEST_OWN: &[&str] = &["/", "/proc", "/sys", "/dev"];

/// Whether `dir` can be shared at its own path: not one of [`GUEST_OWN`] or inside one
/// (but the root), where what the binary reads would not be there and what it writes would
/// be lost with the guest.
pub fn shareable(dir: &Path) -> Result<(), Error> {
    let own = GUEST_OWN
        .iter()
        .map(Path::new)
        .find(|own| dir == *own || (own.parent().is_some() && dir.starts_with(own)));
    match own {
        Some(own) => Err(Error::Config(format!(
            "{} cannot be shared into the emulated host, whose own {} is there; use a \
             directory elsewhere",
            dir.display(),
            own.display()
        ))),
        None => Ok(()),
    }
}

/// The directories of `dirs` not inside another one of them, sorted.
fn outermost(mut dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    dirs.sort();
    dirs.dedup();
    let all = dirs.clone();
    dirs.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    dirs
}

/// A per-run random number, so that output cannot fake init's marker line.
fn nonce() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_own_directories_are_not_shared() {
        for dir in ["/", "/proc", "/sys/kernel", "/dev/shm"] {
            let err = shareable(Path::new(dir)).unwrap_err().to_string();
            assert!(err.contains(dir), "{err}");
        }
        for dir in ["/tmp", "/work/main", "/devices", "/home/x"] {
            assert!(shareable(Path::new(dir)).is_ok(), "{dir}");
        }
    }

    #[test]
    fn nested_directories_share_once() {
        let dirs = ["/w/target/debug/deps", "/w", "/elsewhere/bin", "/w"]
            .map(PathBuf::from)
            .to_vec();
        assert_eq!(outermost(dirs), ["/elsewhere/bin", "/w"].map(PathBuf::from));
    }

    #[test]
    fn only_the_listed_variables_pass() {
        let vars = [
            "RUST_BACKTRACE",
            "INSTA_UPDATE",
            "RAS_HOST_KERNEL",
            "HOME",
            "CARGO_HOME",
            "CARGO_MANIFEST_DIR",
            "PATH",
        ]
        .map(|k| (OsString::from(k), OsString::from("x")));
        let kept: Vec<String> = forwarded_env(vars)
            .into_iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            kept,
            [
                "RUST_BACKTRACE",
                "INSTA_UPDATE",
                "RAS_HOST_KERNEL",
                "CARGO_MANIFEST_DIR"
            ]
        );
    }
}
