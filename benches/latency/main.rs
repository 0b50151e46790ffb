//! SIGBUS-to-injection latency against the null-exit floor (`cargo bench --bench latency`).
//!
//! Two criterion groups, measured in the same run (docs/benchmarks.md):
//!
//! - `floor`: a null MMIO exit round trip (guest doorbell store -> KVM_EXIT_MMIO -> VMM ->
//!   KVM_RUN -> guest), and a bare signal delivery to a thread, blocked or spinning
//!   (tgkill -> the handler's first clock read).
//! - `sigbus_to_injection`: from the SIGBUS handler on the vCPU thread to the guest's
//!   first instruction in its vector, per delivery path (KVM's ext_dabt, the emulated
//!   exception entry, SError with an ESR) and firmware (ACPI: a CPER record is written
//!   behind GHESv2 first; DTB: none). Every iteration consumes a freshly poisoned page.
//!
//! Criterion times what it is given (iter_custom); every iteration's parts (signal, HVA
//! to GPA, CPER, each ioctl, re-entry) are also kept, and a table of medians with each
//! path as a ratio to the null exit ends the run. Benches never assert times.
//!
//! On an arm64 host with /dev/kvm (as root: poisoning needs CAP_SYS_ADMIN) the benches run
//! here; anywhere else this binary relaunches itself in the emulated arm64 KVM host
//! (emuhost), with the same arguments, like the hwpoison test.

use std::process::ExitCode;

/// Where the relaunched bench writes criterion's output: the outer run's target dir,
/// which the emulated host shares (criterion would otherwise ask `cargo metadata`, which
/// does not exist in there).
const OUTPUT_VAR: &str = "RAS_BENCH_OUTPUT";

fn main() -> ExitCode {
    #[cfg(target_arch = "aarch64")]
    if emuhost::kvm_available() || emuhost::in_emulated_host() {
        return run::main();
    }
    relaunch()
}

/// Reruns this bench in the emulated arm64 KVM host and exits with its status.
fn relaunch() -> ExitCode {
    if std::env::var_os(OUTPUT_VAR).is_none() {
        let dir = std::env::var_os("CRITERION_HOME").map_or_else(
            || {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map_or_else(|| emuhost::workspace_root().join("target"), Into::into)
                    .join("criterion")
            },
            Into::into,
        );
        // Read by emuhost's RunOptions::from_env below, which forwards RAS_* variables.
        std::env::set_var(OUTPUT_VAR, dir);
    }
    cross_c_compiler();
    let target = emuhost::CrossTarget {
        manifest_dir: env!("CARGO_MANIFEST_DIR").into(),
        package: env!("CARGO_PKG_NAME").into(),
        kind: emuhost::TargetKind::Bench,
        name: "latency".into(),
        features: Vec::new(),
        release: !cfg!(debug_assertions),
    };
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match target.relaunch(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("latency: cannot run in the emulated arm64 KVM host: {e}");
            ExitCode::FAILURE
        }
    }
}

/// criterion 0.8 depends on the `alloca` crate, whose build script compiles C (cc-rs) for
/// the target: the aarch64 build needs a C cross compiler, which cc-rs looks for as
/// `aarch64-linux-musl-gcc`. Unless the user chose one (CC_/AR_ for the target), use the
/// first of these found on PATH (Debian's gcc-aarch64-linux-gnu is the second), compiling
/// freestanding: alloca.c needs only stddef.h and stdint.h, which the compiler itself has
/// then, and no libc headers.
fn cross_c_compiler() {
    const CC_VAR: &str = "CC_aarch64_unknown_linux_musl";
    const AR_VAR: &str = "AR_aarch64_unknown_linux_musl";
    const CFLAGS_VAR: &str = "CFLAGS_aarch64_unknown_linux_musl";
    const CANDIDATES: [(&str, &str); 2] = [
        ("aarch64-linux-musl-gcc", "aarch64-linux-musl-ar"),
        ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-ar"),
    ];
    if std::env::var_os(CC_VAR).is_some() {
        return;
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if let Some((cc, ar)) = CANDIDATES.into_iter().find(|(cc, _)| on_path(cc)) {
        // Read by the nested cargo that emuhost runs, which inherits this environment.
        std::env::set_var(CC_VAR, cc);
        if std::env::var_os(CFLAGS_VAR).is_none() {
            std::env::set_var(CFLAGS_VAR, "-ffreestanding");
        }
        if std::env::var_os(AR_VAR).is_none() && on_path(ar) {
            std::env::set_var(AR_VAR, ar);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod clock;
#[cfg(target_arch = "aarch64")]
mod floor;
#[cfg(target_arch = "aarch64")]
mod guest;
#[cfg(target_arch = "aarch64")]
mod results;
#[cfg(target_arch = "aarch64")]
mod run;
#[cfg(target_arch = "aarch64")]
mod sigbus;
