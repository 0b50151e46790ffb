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
//! - [`mailbox`]: the `#[repr(C)]` records exchanged through a vCPU's mailbox:
//!   [`Params`] (VMM to guest) and [`Report`] (guest to VMM), their layout pinned by
//!   const assertions;
//! - [`doorbell`]: the event codes a guest writes to the doorbell, one 8-byte store per
//!   event, each store one `KVM_EXIT_MMIO`.
//!
//! The protocol, from a vCPU's point of view:
//!
//! 1. The VMM copies the payload image to [`map::RAM_BASE`], writes a [`Params`] into
//!    the vCPU's mailbox and starts the vCPU at [`map::RAM_BASE`] with `x0` = the mailbox
//!    address ([`map::mailbox_base`]).
//! 2. The guest checks [`PARAMS_MAGIC`], turns the MMU on, rings [`doorbell::Event::Ready`].
//! 3. For each target address: it rings [`doorbell::Event::ReadyForFault`] (the VMM may
//!    poison or inject now), performs the access, records any exception (with ACPI, the
//!    handler first walks the tables to the error status block and copies the record it
//!    finds, as an OS does when notified; [`doorbell::Event::ExceptionRecorded`]), and
//!    rings [`doorbell::Event::StepDone`]. A faulting access is never re-executed.
//! 4. Optionally the masked SError wait, then [`doorbell::Event::Done`], then
//!    `Report::state` = Done. Anything unexpected ends in [`doorbell::Event::Fatal`] and
//!    PSCI SYSTEM_OFF.
//! 5. How a vCPU ends. A SYSTEM_OFF from any vCPU stops the whole VM: KVM marks every vCPU
//!    stopped and the others sleep inside `KVM_RUN` (arch/arm64/kvm/psci.c,
//!    kvm_prepare_system_event). So only vCPU 0 (the one with mailbox
//!    [`map::mailbox_base`]`(0)`) powers the VM off, and only once every other mailbox
//!    holding valid-magic params reports Done or Fatal; the other vCPUs end with PSCI
//!    CPU_OFF, which never exits to the VMM: their threads stay in `KVM_RUN` until the VMM
//!    signals them (as the watchdog does). The VMM writes params only for vCPUs it runs,
//!    or vCPU 0 waits for ever.
//!
//! The guest observes and reports; the host judges.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod doorbell;
pub mod mailbox;
pub mod map;

pub use mailbox::{
    AcpiObservation, DtbObservation, ExceptionRecord, Params, RecordRead, Report,
    SerrorObservation, StepAddresses,
};

/// First field of a valid [`Params`]: "RASPARAM" in ASCII, little-endian.
pub const PARAMS_MAGIC: u64 = u64::from_le_bytes(*b"RASPARAM");
/// First field of a [`Report`] the guest has started writing: "RASREPRT".
pub const REPORT_MAGIC: u64 = u64::from_le_bytes(*b"RASREPRT");
/// Bumped whenever a layout below changes; the guest refuses other versions.
pub const ABI_VERSION: u32 = 3;
