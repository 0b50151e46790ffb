//! PID 1 of the emulated arm64 KVM host.
//!
//! The host packs this program as `/init` into an initramfs together with the kernel
//! modules the shared directories need and a run description, `/emuhost/run`. It sets up
//! the minimal system the test binaries expect (proc, sys, devtmpfs, debugfs, hugetlbfs,
//! the shared directories at their host paths), runs the binary as root with the given
//! arguments, environment and working directory, prints the exit status as a marker line
//! on the console, and powers the machine off.
//!
//! The run description is a sequence of NUL-terminated fields: a kind, then its values
//! (`share` and `env` take two values, every other kind one). The host writes it in
//! `emuhost::initramfs`.

use std::ffi::{CString, OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the host puts the run description in the initramfs.
const RUN_FILE: &str = "/emuhost/run";

/// What the host asked for.
#[derive(Default)]
struct Run {
    marker: String,
    modules: Vec<PathBuf>,
    shares: Vec<(String, PathBuf)>,
    env: Vec<(OsString, OsString)>,
    exe: PathBuf,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    hugepages: Option<String>,
    symbols: Option<PathBuf>,
}

fn main() {
    let run = match read_run() {
        Ok(run) => run,
        Err(e) => {
            // Without the marker the host cannot tell this from a crash; it shows the
            // console tail, which carries this message.
            eprintln!("emuhost-init: cannot read {RUN_FILE}: {e}");
            power_off();
        }
    };
    let line = match setup(&run).and_then(|()| run_binary(&run)) {
        Ok(code) => format!("\n{} exit {code}\n", run.marker),
        Err(e) => format!("\n{} error {e}\n", run.marker),
    };
    let mut out = std::io::stdout().lock();
    // Nothing else can report a console write failure: the host times out instead.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    drop(out);
    power_off();
}

fn read_run() -> Result<Run, String> {
    let bytes = std::fs::read(RUN_FILE).map_err(|e| e.to_string())?;
    let mut fields = bytes
        .split(|&b| b == 0)
        .map(|f| OsStr::from_bytes(f).to_owned());
    let mut run = Run::default();
    while let Some(kind) = fields.next() {
        if kind.is_empty() {
            continue;
        }
        let mut value = || fields.next().ok_or(format!("{kind:?} lacks a value"));
        match kind.to_str() {
            Some("marker") => run.marker = value()?.to_string_lossy().into_owned(),
            Some("module") => run.modules.push(value()?.into()),
            Some("share") => {
                let tag = value()?.to_string_lossy().into_owned();
                run.shares.push((tag, value()?.into()));
            }
            Some("env") => {
                let name = value()?;
                run.env.push((name, value()?));
            }
            Some("exe") => run.exe = value()?.into(),
            Some("arg") => run.args.push(value()?),
            Some("cwd") => run.cwd = Some(value()?.into()),
            Some("hugepages") => run.hugepages = Some(value()?.to_string_lossy().into_owned()),
            Some("symbols") => run.symbols = Some(value()?.into()),
            _ => return Err(format!("unknown field {kind:?}")),
        }
    }
    if run.marker.is_empty() || run.exe.as_os_str().is_empty() {
        return Err("no marker or no executable".into());
    }
    Ok(run)
}

fn setup(run: &Run) -> Result<(), String> {
    raw_console_output();
    mount("proc", "/proc", "proc", "")?;
    mount("sysfs", "/sys", "sysfs", "")?;
    // CONFIG_DEVTMPFS_MOUNT is off in Debian's arm64 kernels.
    mount("devtmpfs", "/dev", "devtmpfs", "")?;
    mount("debugfs", "/sys/kernel/debug", "debugfs", "")?;
    mount("hugetlbfs", "/dev/hugepages", "hugetlbfs", "")?;
    mount("tmpfs", "/dev/shm", "tmpfs", "")?;
    if let Some(n) = &run.hugepages {
        // The 2 MiB pool; absent on kernels whose page size has no 2 MiB huge page.
        let pool = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
        if Path::new(pool).exists() {
            std::fs::write(pool, n).map_err(|e| format!("{pool}: {e}"))?;
        }
    }
    for module in &run.modules {
        load_module(module)?;
    }
    for (tag, path) in &run.shares {
        let path = path
            .to_str()
            .ok_or(format!("share path {path:?} is not UTF-8"))?;
        mount(
            tag,
            path,
            "9p",
            "trans=virtio,version=9p2000.L,msize=512000",
        )?;
    }
    if let Some(path) = &run.symbols {
        // Only for naming the PCs of a hang: a failure here must not fail the run.
        let _ = write_symbols(path, &run.marker);
    }
    Ok(())
}

/// The kernel's text symbols ("ADDRESS t|T NAME" lines of /proc/kallsyms, readable with
/// their addresses by root) to `path`, through a file of this run's own (`marker`) so that
/// neither a partial list nor two runs writing at once leave a wrong one.
fn write_symbols(path: &Path, marker: &str) -> std::io::Result<()> {
    let all = std::fs::read_to_string("/proc/kallsyms")?;
    let text: String = all
        .lines()
        .filter(|l| matches!(l.split_whitespace().nth(1), Some("t" | "T")))
        .flat_map(|l| [l, "\n"])
        .collect();
    let partial = path.with_extension(marker);
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}

/// Runs the binary and returns its exit status, 128 + the signal number if a signal ended
/// it (as shells report it).
fn run_binary(run: &Run) -> Result<i32, String> {
    let mut cmd = Command::new(&run.exe);
    cmd.args(&run.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("RAS_EMU_GUEST", "1")
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if let Some(cwd) = &run.cwd {
        cmd.current_dir(cwd);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", run.exe.display()))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => {
            eprintln!("emuhost-init: {} killed by signal {sig}", run.exe.display());
            128 + sig
        }
        (None, None) => 255,
    })
}

fn mount(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    let c = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let (src, tgt, fs, dat) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            0,
            dat.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("mount {fstype} on {target}: {err}"));
    }
    Ok(())
}

fn load_module(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: finit_module(2) reads the open file and an empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0) };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() != Some(libc::EEXIST) {
        return Err(format!("loading {}: {err}", path.display()));
    }
    Ok(())
}

/// Turns off output post-processing on the console, so that the binary's "\n" is not sent
/// as "\r\n" (the host strips carriage returns anyway).
fn raw_console_output() {
    // SAFETY: termios is plain data; tcgetattr fills it, tcsetattr reads it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(1, &mut t) == 0 {
            t.c_oflag &= !libc::OPOST;
            libc::tcsetattr(1, libc::TCSANOW, &t);
        }
    }
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; QEMU's -no-reboot makes power-off (and a
    // failed reboot's panic) end the emulator.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 exiting panics the kernel, which also ends QEMU.
    std::process::exit(1)
}
