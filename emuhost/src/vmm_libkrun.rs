//! libkrun as a VMM process: builds `krun-driver` (vmms/libkrun-driver/, libkrun 1.19.7
//! linked in) for aarch64 on demand, and records what a raw image finds in its VM.
//!
//! `krun-driver --kernel IMAGE [--ram-mib N] [--vcpus N] [--cmdline STR]` (its `--help`
//! says more) boots a raw image under KVM and exits with libkrun's status. What the guest
//! and the process look like, from libkrun 1.19.7's source (crates krun-arch, krun-vmm,
//! krun-devices, libkrun; paths below are inside them) and seen in the emulated host:
//!
//! - **RAM**: one region at GPA 0x8000_0000 of exactly `ram_mib` MiB
//!   (rounded up to the host page size) for a kernel boot (krun-arch
//!   `aarch64/layout.rs` DRAM_MEM_START_KERNEL, `aarch64/mod.rs` arch_memory_regions;
//!   RAM starts at 0x4000_0000 only with firmware). Nothing below it but MMIO.
//! - **Image**: a raw image (krun_set_kernel format 0) is read whole and copied to
//!   0x8000_0000, and vCPU 0's PC is set there (krun-vmm `builder.rs`
//!   load_external_kernel: `guest_mem.write(&data, GuestAddress(0x8000_0000)).unwrap()`;
//!   krun-arch `aarch64/linux/regs.rs` setup_regs). It starts at EL1h, DAIF masked, MMU
//!   off (PSTATE_FAULT_BITS_64). vCPUs past the first start powered off
//!   (KVM_ARM_VCPU_POWER_OFF, krun-vmm `linux/vstate.rs` configure_aarch64), for PSCI
//!   CPU_ON.
//! - **x0**: the device tree's GPA: RAM end - 2 MiB (regs.rs setup_regs
//!   sets x0 = fdt_addr; mod.rs: `fdt_addr = ram_last_addr - FDT_MAX_SIZE`). The image
//!   must end below it: the DTB is written after the image and would overwrite it.
//! - **DTB** (krun-devices `fdt/aarch64.rs` create_fdt): root `compatible =
//!   "linux,dummy-virt"`, 2 address and 2 size cells; `/cpus/cpu@N` (`arm,arm-v8`, reg =
//!   MPIDR, `enable-method = "psci"` only when there is more than one); `/memory` reg =
//!   <RAM_BASE, ram_mib MiB>; `/chosen/bootargs` = the command line given, plus what
//!   libkrun adds (`earlycon=pl011,mmio32,0x0a001000` with a serial console; with libkrun's
//!   implicit vsock ` tsi_hijack`; always ` -- `, and spaces for its init's unset
//!   KRUN_* settings; krun-vmm `builder.rs` build_microvm, libkrun `lib.rs`
//!   krun_start_enter); `/chosen/stdout-path =
//!   "/uart@a001000"` only when a serial console was added; `/psci` `arm,psci-0.2`, method
//!   `hvc`; the GICv3 (`/intc`, or GICv2 if v3 fails), `arm,armv8-timer`, an `apb-pclk`
//!   fixed clock, a PL031 RTC and virtio-mmio nodes (balloon and rng always, console and
//!   vsock unless disabled).
//! - **UART**: a PL011 (`arm,pl011`, krun-devices `legacy/aarch64/serial.rs`), only if
//!   krun_add_serial_console_default was called (krun-driver does, unless
//!   `--no-serial`), at the first MMIO slot, 0x0a00_1000 (krun-vmm
//!   `device_manager/kvm/mmio.rs`: MMIO starts at 0x0a00_0000 plus one 4 KiB slot; the
//!   serial devices are registered first, then the RTC). Each byte written to UARTDR
//!   (offset 0) is written and flushed to the output fd: krun-driver's stdout. There is no
//!   16550.
//! - **Console otherwise**: libkrun's implicit virtio-console (hvc0) writes to stdout when
//!   it is a terminal, else to libkrun's log at error level (builder.rs
//!   autoconfigure_console_ports); krun-driver disables it unless `--implicit-devices`.
//! - **Guest RAM in the process**: one anonymous private mapping, `MAP_ANONYMOUS |
//!   MAP_NORESERVE | MAP_PRIVATE`, read-write, exactly the RAM's size (vm-memory 0.17
//!   `mmap/unix.rs` MmapRegion::new via GuestMemoryMmap::from_ranges), registered as one
//!   KVM memslot (krun-vmm `linux/vstate.rs` memory_region_set). Its offset in the
//!   mapping is GPA - 0x8000_0000.
//! - **PSCI SYSTEM_OFF** (and SYSTEM_RESET): KVM exits with KVM_SYSTEM_EVENT_SHUTDOWN
//!   (or RESET); the vCPU thread stops with code 0 and the VMM thread calls `_exit(0)`
//!   (vstate.rs run_emulation and running; krun-vmm `lib.rs` Vmm::stop). A vCPU error
//!   ends the process with `_exit(1)`. krun_start_enter never returns after the VM runs.
//! - **Signals**: libkrun installs no SIGBUS/SIGSEGV handler (krun-vmm
//!   `signal_handler.rs` register_signal_handlers is never called), so a guest access
//!   to a poisoned page kills the process with SIGBUS (7).
//!
//! Seen in the emulated host (Linux 6.12, KVM under QEMU TCG):
//!
//! - x0 = 0x87e0_0000 for 128 MiB; the marker written by the guest at GPA 0x8000_1000 is
//!   at offset 0x1000 of the only mapping of exactly 128 MiB, `rw-p 00000000 00:00 0`
//!   (VmFlags with `nr`); the process has 1 + vCPUs threads.
//! - The DTB (about 1.8 KB) as above; with `--cmdline "ras test"` and the driver's
//!   defaults, bootargs is `"ras test       earlycon=pl011,mmio32,0x0a001000  -- "`;
//!   without `--cmdline` and with `--implicit-devices` it is libkrun's default Linux line
//!   (`reboot=k panic=-1 ... console=hvc0 rootfstype=virtiofs rw quiet no-kvmapf
//!   init=/init.krun`) plus the same earlycon, `tsi_hijack` and ` -- `. The root node is
//!   named `root`, not the empty name. GICv3 distributor at 0x09ff_0000 (64 KiB),
//!   redistributors below it at 0x09fd_0000 (128 KiB per vCPU); RTC at 0x0a00_2000,
//!   virtio-mmio from 0x0a00_3000; device interrupts are SPIs from 32 (INTID 64).
//! - Bytes written to UARTDR arrive on the driver's stdout; SYSTEM_OFF and SYSTEM_RESET
//!   both end the process with status 0 (libkrun logs KVM_SYSTEM_EVENT_SHUTDOWN or
//!   _RESET at info level).
//! - Guest RAM is THP-eligible: the pages touched (the image's, the DTB's) were backed by
//!   2 MiB transparent huge pages (AnonHugePages 2048 to 4096 kB): a poisoned page may
//!   sit in a huge page that the host kernel must split.
//! - Start to exit of a 123-byte image that prints 34 bytes: 0.45 to 2.2 s there.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::{progress, TARGET};

/// The driver's crate, relative to the workspace root.
pub const DRIVER_CRATE: &str = "vmms/libkrun-driver";
/// The libkrun release the driver links (vmms/libkrun-driver/Cargo.toml pins it).
pub const LIBKRUN_VERSION: &str = "1.19.7";

/// The driver's target directory under the cache.
const DRIVER_DIR: &str = "libkrun";

/// Where [`ensure_driver`] puts the executable under `cache_dir`.
pub fn driver_path(cache_dir: &Path) -> PathBuf {
    cache_dir
        .join(DRIVER_DIR)
        .join(TARGET)
        .join("release")
        .join("krun-driver")
}

/// Builds krun-driver for aarch64-unknown-linux-musl (adding the target to the toolchain
/// if missing) into `cache_dir/libkrun` and returns the executable. A nested `cargo build
/// --release --locked` in vmms/libkrun-driver/ (its own workspace and Cargo.lock), with
/// the outer build's target, flags and wrappers removed; cargo's progress goes to stderr.
/// A cold build takes a minute or two; later calls only check that it is up to date.
pub fn ensure_driver(cache_dir: &Path) -> Result<PathBuf, Error> {
    let exe = driver_path(cache_dir);
    progress!("building krun-driver (libkrun) for {TARGET}");
    crate::cross::build_workspace(DRIVER_CRATE, &cache_dir.join(DRIVER_DIR), &exe)?;
    Ok(exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_named_is_the_one_pinned() {
        let manifest = crate::workspace_root()
            .join(DRIVER_CRATE)
            .join("Cargo.toml");
        let text = std::fs::read_to_string(manifest).unwrap();
        let pin = format!("libkrun = {{ version = \"={LIBKRUN_VERSION}\"");
        assert!(text.contains(&pin), "{pin}");
    }
}
