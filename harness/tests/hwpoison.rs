//! End-to-end tests that need an arm64 KVM host as root (`cargo test --features hwpoison`).
//!
//! On an arm64 host with /dev/kvm (or inside the emulated host) the trials run here. On any
//! other machine this binary relaunches itself: emuhost builds this same test target for
//! aarch64-unknown-linux-musl and runs it, with the same arguments (filters, --list,
//! --nocapture, --exact, --ignored), in the emulated arm64 KVM host; the exit status is its.
//!
//! The trials so far prove the environment the scenarios rely on: KVM with the RAS
//! injection capabilities, and MADV_HWPOISON delivering an action-required SIGBUS.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(target_arch = "aarch64")]
    if emuhost::kvm_available() || emuhost::in_emulated_host() {
        let mut args = libtest_mimic::Arguments::from_args();
        // The trials share the process's SIGBUS disposition: run them one at a time.
        args.test_threads = Some(1);
        let trials = environment::trials().into_iter().chain(fault::trials());
        return libtest_mimic::run(&args, trials.collect()).exit_code();
    }
    relaunch()
}

/// Reruns this test target in the emulated arm64 KVM host and exits with its status.
fn relaunch() -> ExitCode {
    let target = emuhost::CrossTarget {
        manifest_dir: env!("CARGO_MANIFEST_DIR").into(),
        package: env!("CARGO_PKG_NAME").into(),
        kind: emuhost::TargetKind::Test,
        name: "hwpoison".into(),
        features: vec!["hwpoison".into()],
        release: !cfg!(debug_assertions),
    };
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match target.relaunch(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("hwpoison: cannot run in the emulated arm64 KVM host: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_arch = "aarch64")]
#[path = "hwpoison/fault.rs"]
mod fault;

#[cfg(target_arch = "aarch64")]
mod environment {
    use std::io::ErrorKind;
    use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

    use kvm_ioctls::Kvm;
    use libtest_mimic::{Completion, Failed, Trial};

    /// KVM_API_VERSION, include/uapi/linux/kvm.h.
    const KVM_API_VERSION: i32 = 12;
    /// KVM_CAP_ARM_INJECT_SERROR_ESR, include/uapi/linux/kvm.h.
    const KVM_CAP_ARM_INJECT_SERROR_ESR: u64 = 158;
    /// KVM_CAP_ARM_INJECT_EXT_DABT, include/uapi/linux/kvm.h.
    const KVM_CAP_ARM_INJECT_EXT_DABT: u64 = 178;
    /// MADV_HWPOISON, include/uapi/asm-generic/mman-common.h.
    const MADV_HWPOISON: libc::c_int = 100;
    /// BUS_MCEERR_AR and BUS_MCEERR_AO, include/uapi/asm-generic/siginfo.h.
    const BUS_MCEERR_AR: i32 = 4;
    const BUS_MCEERR_AO: i32 = 5;

    pub fn trials() -> Vec<Trial> {
        vec![
            Trial::ignorable_test("kvm::device_opens", || {
                let Ok(_kvm) = open_kvm_or_skip()? else {
                    return Ok(skipped_no_access());
                };
                println!("opened /dev/kvm");
                Ok(Completion::Completed)
            }),
            Trial::ignorable_test("kvm::api_version_is_12", || {
                let Ok(kvm) = open_kvm_or_skip()? else {
                    return Ok(skipped_no_access());
                };
                let v = kvm.get_api_version();
                println!("KVM_GET_API_VERSION = {v}");
                check(
                    v == KVM_API_VERSION,
                    format!("API version {v}, expected {KVM_API_VERSION}"),
                )
            }),
            cap_trial(
                "kvm::cap_arm_inject_serror_esr",
                KVM_CAP_ARM_INJECT_SERROR_ESR,
            ),
            cap_trial("kvm::cap_arm_inject_ext_dabt", KVM_CAP_ARM_INJECT_EXT_DABT),
            Trial::ignorable_test(
                "memory_failure::madvise_hwpoison_read_gets_bus_mceerr_ar",
                hwpoison_read,
            ),
        ]
    }

    fn check(ok: bool, why: String) -> Result<Completion, Failed> {
        if ok {
            Ok(Completion::Completed)
        } else {
            Err(why.into())
        }
    }

    fn skipped_no_access() -> Completion {
        Completion::ignored_with("no access to /dev/kvm (not root)")
    }

    /// Ok(Err(())) when /dev/kvm is there but closed to this user: a skip, not a failure.
    fn open_kvm_or_skip() -> Result<Result<Kvm, ()>, Failed> {
        match Kvm::new() {
            Ok(kvm) => Ok(Ok(kvm)),
            Err(e) if e.errno() == libc::EACCES && !emuhost::is_root() => Ok(Err(())),
            Err(e) => Err(format!("opening /dev/kvm: {e}").into()),
        }
    }

    fn cap_trial(name: &str, cap: u64) -> Trial {
        Trial::ignorable_test(name, move || {
            let Ok(kvm) = open_kvm_or_skip()? else {
                return Ok(skipped_no_access());
            };
            let v = kvm.check_extension_raw(cap);
            println!("KVM_CHECK_EXTENSION({cap}) = {v}");
            check(v > 0, format!("capability {cap} absent ({v})"))
        })
    }

    // What the SIGBUS handler saw, written from signal context (atomics only).
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    static PAGE_LEN: AtomicUsize = AtomicUsize::new(0);
    /// 0 while madvise runs, 1 during the read.
    static PHASE: AtomicUsize = AtomicUsize::new(0);
    static AR_COUNT: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    static AO_COUNT: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    static OTHER_COUNT: AtomicUsize = AtomicUsize::new(0);
    static AR_ADDR: AtomicUsize = AtomicUsize::new(0);
    static AR_LSB: AtomicI32 = AtomicI32::new(-1);
    static REMAP_FAILED: AtomicUsize = AtomicUsize::new(0);

    /// Records the signal and, for a memory error on our page, maps a fresh zero page over
    /// the poisoned one so the interrupted access succeeds when retried. Only atomics and
    /// the mmap system call: async-signal-safe.
    extern "C" fn on_sigbus(
        _sig: libc::c_int,
        info: *mut libc::siginfo_t,
        _ctx: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; for
        // SIGBUS the address and address-LSB fields are the valid union members.
        let (code, addr, lsb) = unsafe {
            (
                (*info).si_code,
                (*info).si_addr() as usize,
                (*info).si_addr_lsb(),
            )
        };
        let phase = PHASE.load(Ordering::SeqCst).min(1);
        match code {
            BUS_MCEERR_AR => {
                AR_COUNT[phase].fetch_add(1, Ordering::SeqCst);
                AR_ADDR.store(addr, Ordering::SeqCst);
                AR_LSB.store(i32::from(lsb), Ordering::SeqCst);
            }
            BUS_MCEERR_AO => {
                AO_COUNT[phase].fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                OTHER_COUNT.fetch_add(1, Ordering::SeqCst);
            }
        }
        let page = PAGE.load(Ordering::SeqCst);
        let len = PAGE_LEN.load(Ordering::SeqCst);
        if page != 0 && (page..page + len).contains(&addr) {
            // SAFETY: replaces exactly the test's own private anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                REMAP_FAILED.fetch_add(1, Ordering::SeqCst);
            }
        } else if code != BUS_MCEERR_AO {
            // A SIGBUS we cannot repair would fault again forever: end the process.
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(70) };
        }
    }

    fn hwpoison_read() -> Result<Completion, Failed> {
        if !emuhost::is_root() {
            return Ok(Completion::ignored_with(
                "MADV_HWPOISON needs root (CAP_SYS_ADMIN)",
            ));
        }
        // SAFETY: sysconf has no memory-safety preconditions.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| "no page size")?;
        let page_shift = len.trailing_zeros();
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()).into());
        }
        let addr = page as usize;
        // SAFETY: the page is mapped read-write; touching it gives it a physical frame.
        unsafe { std::ptr::write_volatile(page.cast::<u8>(), 0xa5) };
        PAGE_LEN.store(len, Ordering::SeqCst);
        PAGE.store(addr, Ordering::SeqCst);
        PHASE.store(0, Ordering::SeqCst);

        // SAFETY: sigaction is plain data; all-zero is a valid (default, empty-mask) value.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the handler and SA_SIGINFO are filled in next, and the old
        // action is restored below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        // SAFETY: both structs are valid for the call.
        if unsafe { libc::sigaction(libc::SIGBUS, &act, &mut old) } != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()).into());
        }

        // SAFETY: madvise on our own mapping; MADV_HWPOISON poisons its frame.
        let rc = unsafe { libc::madvise(page, len, MADV_HWPOISON) };
        let madvise_err = (rc != 0).then(std::io::Error::last_os_error);
        let mut value = None;
        if madvise_err.is_none() {
            PHASE.store(1, Ordering::SeqCst);
            // SAFETY: the page stays mapped (the handler maps a fresh one over a poisoned one).
            value = Some(unsafe { std::ptr::read_volatile(page.cast::<u8>()) });
        }
        PAGE.store(0, Ordering::SeqCst);
        // SAFETY: restores the previous action; unmaps our mapping.
        unsafe {
            libc::sigaction(libc::SIGBUS, &old, std::ptr::null_mut());
            libc::munmap(page, len);
        }

        if let Some(e) = madvise_err {
            return match e.kind() {
                ErrorKind::PermissionDenied => Ok(Completion::ignored_with(format!(
                    "madvise(MADV_HWPOISON): {e}"
                ))),
                _ if e.raw_os_error() == Some(libc::EINVAL) => {
                    Ok(Completion::ignored_with(format!(
                    "madvise(MADV_HWPOISON): {e}: no memory-failure support (CONFIG_MEMORY_FAILURE)"
                )))
                }
                _ => Err(format!("madvise(MADV_HWPOISON): {e}").into()),
            };
        }
        let seen = |c: &[AtomicUsize; 2], i: usize| c[i].swap(0, Ordering::SeqCst);
        let (ar0, ar1, ao0, ao1) = (
            seen(&AR_COUNT, 0),
            seen(&AR_COUNT, 1),
            seen(&AO_COUNT, 0),
            seen(&AO_COUNT, 1),
        );
        let ar_addr = AR_ADDR.swap(0, Ordering::SeqCst);
        let ar_lsb = AR_LSB.swap(-1, Ordering::SeqCst);
        let other = OTHER_COUNT.swap(0, Ordering::SeqCst);
        let remap_failed = REMAP_FAILED.swap(0, Ordering::SeqCst);
        println!(
            "page {addr:#x} ({len} bytes): at madvise {ar0} BUS_MCEERR_AR, {ao0} BUS_MCEERR_AO; \
             at the read {ar1} BUS_MCEERR_AR, {ao1} BUS_MCEERR_AO; other SIGBUS {other}; \
             last AR si_addr {ar_addr:#x} si_addr_lsb {ar_lsb}; value read after repair {value:?}"
        );
        check(
            remap_failed == 0,
            "the handler could not map a fresh page".into(),
        )?;
        check(other == 0, format!("{other} SIGBUS with another si_code"))?;
        check(ar0 + ar1 > 0, "no BUS_MCEERR_AR SIGBUS".into())?;
        check(
            ar_addr == addr,
            format!("si_addr {ar_addr:#x}, expected the page {addr:#x}"),
        )?;
        check(
            i64::from(ar_lsb) == i64::from(page_shift),
            format!("si_addr_lsb {ar_lsb}, expected {page_shift} (PAGE_SHIFT)"),
        )?;
        // The retried read sees the fresh zero page, not the poisoned frame's 0xa5.
        check(
            value == Some(0),
            format!("read {value:?} after the repair, expected 0"),
        )
    }
}
