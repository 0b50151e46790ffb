//! SIGBUS-to-injection latency against the null-exit floor (`cargo bench --bench latency`).
//!
//! Two criterion groups, measured in the same run (docs/benchmarks.md):
//!
//! - `floor`: a null MMIO exit round trip (guest doorbell store -> KVM_EXIT_MMIO -> VMM ->
//!   KVM_RUN -> guest), and a bare signal delivery to a thread, blocked or spinning
//!   (tgkill -> the handler's first clock read).
//! - `sigbus_to_injection`: from the SIGBUS handler on the vCPU thread to the guest's
//!   first instruction in its vector, through the reference VMM's own handler
//!   (`ras_harness::vmm::handler`), per delivery path (KVM's ext_dabt, the emulated
//!   exception entry, SError with an ESR) and firmware (ACPI: a CPER record is written
//!   behind GHESv2 first; DTB: none). Every iteration consumes a freshly poisoned page.
//!
//! Criterion times what it is given (iter_custom); every iteration's parts (signal, HVA
//! to GPA, decide, CPER, each ioctl, re-entry) are also kept, and a table of medians
//! with each path as a ratio to the null exit ends the run. Benches never assert times.
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
    let target = emuhost::CrossTarget {
        manifest_dir: env!("CARGO_MANIFEST_DIR").into(),
        package: env!("CARGO_PKG_NAME").into(),
        kind: emuhost::TargetKind::Bench,
        name: "latency".into(),
        features: Vec::new(),
        release: !cfg!(debug_assertions),
    };
    target.relaunch_self("latency")
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
