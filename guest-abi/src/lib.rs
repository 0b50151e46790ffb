//! The contract between the ras-harness VMM and its guest payloads.
//!
//! Both sides compile this crate: the harness (any host) and the bare-metal payload
//! (`aarch64-unknown-none`). It holds no code that touches hardware, only
//!
//! - [`arch`]: the architectural numbers both sides test and build with (ESR_ELx exception
//!   classes and fault status codes, vector offsets from VBAR_EL1, PSTATE mode and mask
//!   bits), each from the Arm ARM;
//! - [`map`]: the guest physical memory map (RAM slot, per-vCPU mailboxes, firmware area,
//!   the MMIO doorbell, the target slot that is the only memory ever poisoned);
//! - [`bootargs`]: the parameters as `/chosen/bootargs` words;
//! - [`fdt`]: what the payload reads from the device tree; [`acpi`]: what it reads from
//!   ACPI tables instead when UEFI firmware booted it without one;
//! - [`mailbox`]: the `#[repr(C)]` records in a vCPU's mailbox: [`Params`] (what the
//!   guest understood), [`Handshake`] and [`Report`], their layout pinned by const
//!   assertions;
//! - [`doorbell`]: the event codes a guest writes to the doorbell, one 8-byte store per
//!   event, each store one `KVM_EXIT_MMIO`;
//! - [`linux`]: the two words the harness and the Linux guest's init share.
//!
//! The protocol, from a vCPU's point of view:
//!
//! 1. Any VMM boots the payload as it boots Linux (Documentation/arch/arm64/booting.rst):
//!    the image, which starts with an arm64 Image header, at a 2 MiB-aligned base, entered
//!    at its first byte with the MMU off and x0 = a device tree. The payload applies its
//!    own relocations, takes its vCPU index from MPIDR_EL1 (Aff0 + 16 * Aff1, KVM's and
//!    QEMU's numbering) and its mailbox from [`map::mailbox_at`].
//! 2. It reads the device tree ([`fdt`]) and its [`bootargs`] (the parameters, written
//!    back as [`Params`] into its mailbox), turns the MMU on, and announces
//!    [`doorbell::Event::Ready`]. vCPU 0 then starts vCPUs 1 to `ras.vcpus - 1` with PSCI
//!    CPU_ON at the image's first byte, x0 = the device tree, as an OS does (a VMM that
//!    started them itself, like the reference VMM, answers ALREADY_ON).
//! 3. For each target address: it announces [`doorbell::Event::ReadyForFault`] (the VMM or
//!    the harness may poison or inject now), performs the access, records any exception
//!    (with ACPI, the handler first walks the tables to the error status block and copies
//!    the record it finds, as an OS does when notified;
//!    [`doorbell::Event::ExceptionRecorded`]), and announces
//!    [`doorbell::Event::StepDone`]. A faulting access is never re-executed.
//! 4. Optionally the masked SError wait, then [`doorbell::Event::Done`], then
//!    `Report::state` = Done. Anything unexpected ends in [`doorbell::Event::Fatal`] and
//!    PSCI SYSTEM_OFF.
//! 5. An announcement is one store to the MMIO doorbell when bootargs name one (the
//!    reference VMM's fast path: each store is one `KVM_EXIT_MMIO`), otherwise the
//!    mailbox's [`Handshake`]: the guest waits until the host acknowledges, so a harness
//!    outside the VMM reads the report and poisons at the right moment. With a console in
//!    `/chosen/stdout-path`, each announcement is also a `ras: ...` line.
//! 6. How a vCPU ends. A SYSTEM_OFF from any vCPU stops the whole VM: KVM marks every vCPU
//!    stopped and the others sleep inside `KVM_RUN` (arch/arm64/kvm/psci.c,
//!    kvm_prepare_system_event). So only vCPU 0 powers the VM off, and only once the other
//!    `ras.vcpus - 1` mailboxes report Done or Fatal; the other vCPUs end with PSCI
//!    CPU_OFF, which never exits to the VMM: their threads stay in `KVM_RUN` until the VMM
//!    signals them (as the watchdog does).
//!
//! The guest observes and reports; the host judges.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acpi;
pub mod arch;
pub mod bootargs;
pub mod doorbell;
pub mod fdt;
pub mod linux;
pub mod mailbox;
pub mod map;

pub use mailbox::{
    AcpiObservation, DtbObservation, ExceptionRecord, Handshake, Params, RecordRead, Report,
    SerrorObservation, StepAddresses,
};

/// First field of a valid [`Params`]: "RASPARAM" in ASCII, little-endian.
pub const PARAMS_MAGIC: u64 = u64::from_le_bytes(*b"RASPARAM");
/// First field of a [`Report`] the guest has started writing: "RASREPRT".
pub const REPORT_MAGIC: u64 = u64::from_le_bytes(*b"RASREPRT");
/// First field of a [`Handshake`] the guest has initialised: "RASHANDS".
pub const HANDSHAKE_MAGIC: u64 = u64::from_le_bytes(*b"RASHANDS");
/// Bumped whenever a layout or the bootargs change; the guest refuses other versions.
pub const ABI_VERSION: u32 = 4;
