//! init of the Linux guest ras-harness uses as its oracle: what a real kernel does with a
//! record and a notification, told by the kernel itself on the console.
//!
//! Started as `/init` of the initrd, with one argument after the kernel command line's
//! `--`: how to touch the page (`load`: a load from user space, EL0; `syscall`: the kernel
//! reads it for a write(2), EL1), or `records` (below). It mounts devtmpfs, proc and
//! sysfs, forks, and the child:
//!
//! 1. maps two private anonymous pages and touches them: a flag page starting with
//!    [`FLAG_MAGIC`] and the target page; reads their frames from /proc/self/pagemap and
//!    prints `ras-linux: ready access=A target=0xPA flag=0xPA va=0xVA`;
//! 2. waits until the harness, having poisoned the target's frame from outside, writes
//!    [`GO`] after the magic;
//! 3. touches the target and prints what happened: `ras-linux: sigbus code=N addr=0xVA
//!    lsb=N` from its SIGBUS handler (BUS_MCEERR_AR is 4, include/uapi/asm-generic/
//!    siginfo.h), or `ras-linux: load returned` / `ras-linux: write returned N errno=E`.
//!
//! With `records` the harness feeds the kernel records instead (through QEMU's QMP) and
//! names these pages in them. The child maps [`RECORD_PAGES`] pages after the flag page,
//! prints `ras-linux: pages 0xPA,...` and `ras-linux: hest <hex>` (the HEST as the kernel
//! has it), then the `ready` line for the first of them, and until [`GO`] prints
//! `ras-linux: hardware-corrupted N kB` whenever /proc/meminfo's count of poisoned pages
//! changes: memory_failure() counts even the pages it takes silently (soft offline).
//!
//! The parent (pid 1, which must not die) prints how the child ended and powers off.

use std::ffi::CString;
use std::io::Write;

use ras_guest_abi::linux::{FLAG_MAGIC, GO};
const PAGE: usize = 4096;
/// Pages the `records` child offers for the harness's records to name.
const RECORD_PAGES: usize = 16;

fn main() {
    mount("devtmpfs", "/dev");
    mount("proc", "/proc");
    mount("sysfs", "/sys");
    console();
    let access = std::env::args().nth(1).unwrap_or_default();
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions until it execs nothing and exits.
    let child = unsafe { libc::fork() };
    match child {
        0 if access == "records" => records(),
        0 => touch(&access),
        -1 => say(&format!("fork failed: {}", std::io::Error::last_os_error())),
        pid => report_end(pid),
    }
    power_off()
}

/// The child: see the module docs. Never returns.
fn touch(access: &str) -> ! {
    on_sigbus();
    let (flag, target) = map(1);
    let target = target[0];
    // SAFETY: the page is this process's, mapped and written by `map`; mlock keeps its
    // frame.
    unsafe { libc::mlock(target.cast(), PAGE) };
    let (Some(flag_pa), Some(target_pa)) = (physical(flag as usize), physical(target as usize))
    else {
        say("no frame in /proc/self/pagemap");
        exit(2);
    };
    say(&format!(
        "ready access={access} target={target_pa:#x} flag={flag_pa:#x} va={:#x}",
        target as usize
    ));
    wait_for_go(flag, || {});
    match access {
        "syscall" => {
            let mut fds = [0; 2];
            // SAFETY: a pipe, then a write of 8 bytes from the target page: the kernel
            // reads them (copy_from_user at EL1).
            let (n, errno) = unsafe {
                libc::pipe(fds.as_mut_ptr());
                let n = libc::write(fds[1], target as *const libc::c_void, 8);
                (n, *libc::__errno_location())
            };
            say(&format!("write returned {n} errno={errno}"));
        }
        _ => {
            // SAFETY: the target page, mapped above.
            let value = unsafe { target.read_volatile() };
            say(&format!("load returned {value:#x}"));
        }
    }
    exit(0)
}

/// The `records` child: see the module docs. Never returns.
fn records() -> ! {
    let (flag, pages) = map(RECORD_PAGES);
    let frames: Option<Vec<u64>> = pages.iter().map(|&p| physical(p as usize)).collect();
    let (Some(frames), Some(flag_pa)) = (frames, physical(flag as usize)) else {
        say("no frame in /proc/self/pagemap");
        exit(2);
    };
    let list: Vec<String> = frames.iter().map(|f| format!("{f:#x}")).collect();
    say(&format!("pages {}", list.join(",")));
    match std::fs::read("/sys/firmware/acpi/tables/HEST") {
        Ok(hest) => {
            let hex: String = hest.iter().map(|b| format!("{b:02x}")).collect();
            say(&format!("hest {hex}"));
        }
        Err(e) => say(&format!("no HEST: {e}")),
    }
    say(&format!(
        "ready access=records target={:#x} flag={flag_pa:#x} va={:#x}",
        frames[0], pages[0] as usize
    ));
    let mut last = None;
    wait_for_go(flag, || {
        let now = hardware_corrupted_kb();
        if now != last {
            say(&format!("hardware-corrupted {} kB", now.unwrap_or(0)));
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    });
    exit(0)
}

/// Maps a flag page starting with [`FLAG_MAGIC`] and `n` pages after it, private, anonymous
/// and written (so each has a frame).
fn map(n: usize) -> (*mut u64, Vec<*mut u64>) {
    // SAFETY: a fresh private anonymous mapping, owned by this process.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            (n + 1) * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        say("mmap failed");
        exit(2);
    }
    let flag = base as *mut u64;
    let pages: Vec<*mut u64> = (1..=n)
        .map(|i| (base as usize + i * PAGE) as *mut u64)
        .collect();
    // SAFETY: every page is this mapping's, writable; the writes fault them in, and the
    // flag page is locked so that the harness finds it where the child said.
    unsafe {
        flag.write_volatile(FLAG_MAGIC);
        flag.add(1).write_volatile(0);
        for p in &pages {
            p.write_volatile(0x5a5a_5a5a_5a5a_5a5a);
        }
        libc::mlock(base, PAGE);
    }
    (flag, pages)
}

/// Runs `meanwhile` until the harness writes [`GO`] after the flag page's magic.
fn wait_for_go(flag: *mut u64, mut meanwhile: impl FnMut()) {
    // SAFETY: the flag page, written from outside (through the VMM's memory) only.
    while unsafe { flag.add(1).read_volatile() } != GO {
        meanwhile();
        std::hint::spin_loop();
    }
}

/// /proc/meminfo's HardwareCorrupted: the kernel's count of poisoned memory.
fn hardware_corrupted_kb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HardwareCorrupted:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The physical address behind `va` (Documentation/admin-guide/mm/pagemap.rst: one u64
/// per page, bit 63 present, bits 0-54 the frame; root sees frames).
fn physical(va: usize) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let map = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut entry = [0u8; 8];
    map.read_exact_at(&mut entry, (va / PAGE * 8) as u64).ok()?;
    let entry = u64::from_le_bytes(entry);
    let frame = entry & ((1 << 55) - 1);
    (entry >> 63 == 1 && frame != 0).then(|| frame * PAGE as u64 + (va % PAGE) as u64)
}

/// SIGBUS prints its code and address and ends the child.
fn on_sigbus() {
    extern "C" fn handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; si_addr and
        // si_addr_lsb are the BUS_MCEERR_* fields (sigaction(2)).
        let (code, addr, lsb) = unsafe {
            let info = &*info;
            let lsb = *(info as *const libc::siginfo_t as *const u8)
                .add(std::mem::size_of::<libc::c_int>() * 4 + std::mem::size_of::<usize>())
                .cast::<i16>();
            (info.si_code, info.si_addr() as usize, lsb)
        };
        // Formatting allocates nothing here: a fixed buffer and write(2) only.
        let mut line = [0u8; 96];
        let mut w = &mut line[..];
        let _ = writeln!(w, "ras-linux: sigbus code={code} addr={addr:#x} lsb={lsb}");
        let len = 96 - w.len();
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(1, line.as_ptr().cast(), len);
            libc::_exit(0);
        }
    }
    // SAFETY: installs a handler for SIGBUS with SA_SIGINFO; the struct is zeroed first.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

/// pid 1: how the child ended.
fn report_end(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        say(&format!("child killed signal={}", libc::WTERMSIG(status)));
    } else {
        say(&format!(
            "child exited status={}",
            libc::WEXITSTATUS(status)
        ));
    }
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ras-linux: {text}");
    let _ = out.flush();
}

fn mount(fs: &str, at: &str) {
    let (fs_c, at_c) = (
        CString::new(fs).unwrap_or_default(),
        CString::new(at).unwrap_or_default(),
    );
    let _ = std::fs::create_dir_all(at);
    // SAFETY: NUL-terminated strings; no data argument.
    unsafe {
        libc::mount(
            fs_c.as_ptr(),
            at_c.as_ptr(),
            fs_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
}

/// stdin, stdout and stderr on /dev/console (the kernel opened it already if the initrd
/// has it; devtmpfs has it in any case).
fn console() {
    let path = CString::new("/dev/console").unwrap_or_default();
    // SAFETY: open and dup2 on our own descriptors.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
        }
    }
}

fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: ends the child.
    unsafe { libc::_exit(code) }
}

fn power_off() -> ! {
    // SAFETY: sync, then power off (reboot(2)); pid 1 may.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
