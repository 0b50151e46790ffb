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

use ras_harness::sut::Sut;

/// Set in a child of this test binary to make it a VMM that misbehaves
/// (vmms::fake_vmm).
#[cfg(target_arch = "aarch64")]
const FAKE_VMM: &str = "RAS_TEST_FAKE_VMM";

/// Seconds the whole emulated run may take: the reference VMM's trials and the other VMMs'
/// take 3 to 5 minutes each on a 2-core x86 machine; room for a loaded one.
const EMULATED_RUN_SECONDS: u64 = 2400;

/// The VMMs besides the reference whose behaviour is kept as baselines (vmms.rs), fetched
/// or built before the trials run.
fn baselined() -> Vec<Sut> {
    use emuhost::QemuSuite::{Bookworm, Sid, Trixie};
    let qemu = [Bookworm, Trixie, Sid].map(Sut::QemuDebian);
    qemu.into_iter().chain([Sut::Libkrun]).collect()
}

fn main() -> ExitCode {
    #[cfg(target_arch = "aarch64")]
    if let Ok(behaviour) = std::env::var(FAKE_VMM) {
        vmms::fake_vmm(&behaviour);
    }
    if !emuhost::in_emulated_host() {
        let mut parts = Vec::new();
        for sut in baselined() {
            if let Err(e) = ras_harness::sut::prepare(&sut) {
                eprintln!("hwpoison: {e}");
                return ExitCode::from(2);
            }
            parts.extend(ras_harness::sut::initramfs_parts(&sut));
        }
        // The Linux guest (linux.rs): its kernel and initrd, also from RAM.
        match ras_harness::sut::cache_dir()
            .and_then(|cache| emuhost::linux_guest::ensure(&cache).map_err(|e| e.to_string()))
        {
            Ok(guest) => parts.push(guest.initramfs),
            Err(e) => {
                eprintln!("hwpoison: the Linux guest: {e}");
                return ExitCode::from(2);
            }
        }
        // The trials of other VMMs take minutes on their own: more than emuhost's default
        // 600 s for a whole run, unless the caller said otherwise.
        if std::env::var_os(emuhost::TIMEOUT_VAR).is_none() {
            std::env::set_var(emuhost::TIMEOUT_VAR, EMULATED_RUN_SECONDS.to_string());
        }
        // The QEMUs start from the emulated host's RAM (emuhost/README.md).
        match std::env::join_paths(parts) {
            Ok(list) => std::env::set_var(emuhost::INITRAMFS_VAR, list),
            Err(e) => {
                eprintln!("hwpoison: {e}");
                return ExitCode::from(2);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if emuhost::kvm_available() || emuhost::in_emulated_host() {
        let mut args = libtest_mimic::Arguments::from_args();
        // The trials share the process's SIGBUS disposition: run them one at a time.
        args.test_threads = Some(1);
        let mut trials = environment::trials();
        trials.extend(fault::trials());
        trials.extend(payload::trials());
        trials.extend(scenarios::trials());
        trials.extend(gate::trials());
        trials.extend(safety::trials());
        trials.extend(guest_control::trials());
        trials.extend(wrong_vmm::trials());
        trials.extend(vmms::trials());
        trials.extend(linux::trials());
        let list = args.list;
        let conclusion = libtest_mimic::run(&args, trials);
        // Everything ignored (no root, say) or filtered away is not a pass.
        if !list && conclusion.num_passed == 0 && !conclusion.has_failed() {
            eprintln!(
                "nothing was tested: {} ignored, {} filtered out",
                conclusion.num_ignored, conclusion.num_filtered_out
            );
            return ExitCode::from(3);
        }
        return conclusion.exit_code();
    }
    relaunch()
}

/// Reruns this test target in the emulated arm64 KVM host and exits with its status.
fn relaunch() -> ExitCode {
    // insta finds the workspace with `cargo metadata`, which the emulated host lacks; name
    // it instead (INSTA_* variables are forwarded into the guest).
    if std::env::var_os("INSTA_WORKSPACE_ROOT").is_none() {
        std::env::set_var(
            "INSTA_WORKSPACE_ROOT",
            concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
        );
    }
    let target = emuhost::CrossTarget {
        manifest_dir: env!("CARGO_MANIFEST_DIR").into(),
        package: env!("CARGO_PKG_NAME").into(),
        kind: emuhost::TargetKind::Test,
        name: "hwpoison".into(),
        features: vec!["hwpoison".into()],
        release: !cfg!(debug_assertions),
    };
    target.relaunch_self("hwpoison")
}

#[cfg(target_arch = "aarch64")]
mod environment;
#[cfg(target_arch = "aarch64")]
mod fault;
#[cfg(target_arch = "aarch64")]
mod gate;
#[cfg(target_arch = "aarch64")]
mod guest_control;
#[cfg(target_arch = "aarch64")]
mod linux;
#[cfg(target_arch = "aarch64")]
mod payload;
#[cfg(target_arch = "aarch64")]
mod safety;
#[cfg(target_arch = "aarch64")]
mod scenarios;
#[cfg(target_arch = "aarch64")]
mod vmms;
#[cfg(target_arch = "aarch64")]
mod wrong_vmm;
