//! The reference VMM's thin KVM layer, rust-vmm style: one file per object. The ioctl
//! wrappers build on arm64 only; the exit decisions ([`exit`]) and the capability mask
//! ([`caps`]) are pure and build and test on every host.
//!
//! [`boot`] puts the guest payload in a VM, the one way the VMM, tests and benches do it:
//!
//! 1. [`Vm::new`] creates the VM; [`Vm::add_memory`] plugs a [`Mapping`] in as a memslot
//!    (anonymous, THP, hugetlb 2M/1G or memfd: [`Backing`]).
//! 2. [`Vm::create_vcpu`] makes and initialises a vCPU (preferred target + PSCI 0.2);
//!    [`Vm::create_gic_v3`] adds the interrupt controller once all vCPUs exist.
//! 3. [`Vcpu::set_reg`] / [`Vcpu::get_reg`] take ids from [`regs`], the one table of
//!    register ids ([`core_reg`], [`sys_reg`] and the named system registers).
//! 4. [`Vcpu::run_until_stop`] runs until something the caller must decide on: a
//!    `ReadyForFault` doorbell, a foreign MMIO access, a system event, EINTR (the hwpoison
//!    SIGBUS, or the [`Watchdog`] kicking a stuck vCPU). The decisions are the pure
//!    [`exit::handle_exit`].
//!
//! [`caps`] probes the injection capabilities and lets the VMM pretend one is absent.

pub mod backing;
#[cfg(target_arch = "aarch64")]
pub mod boot;
pub mod caps;
pub mod exit;
#[cfg(target_arch = "aarch64")]
mod kick;
#[cfg(target_arch = "aarch64")]
mod memory;
#[cfg(target_arch = "aarch64")]
pub mod regs;
#[cfg(target_arch = "aarch64")]
mod vcpu;
#[cfg(target_arch = "aarch64")]
mod vm;
#[cfg(target_arch = "aarch64")]
mod watchdog;

pub use backing::Backing;
pub use caps::{Cap, CapSet};
pub use exit::{handle_exit, Action, Exit, RunState, Stop};
#[cfg(target_arch = "aarch64")]
pub use kick::Kicker;
#[cfg(target_arch = "aarch64")]
pub use memory::Mapping;
#[cfg(target_arch = "aarch64")]
pub use regs::{core_reg, sys_reg, CoreReg};
#[cfg(target_arch = "aarch64")]
pub use vcpu::Vcpu;
#[cfg(target_arch = "aarch64")]
pub use vm::Vm;
#[cfg(target_arch = "aarch64")]
pub use watchdog::Watchdog;

/// Guest physical memory as the VMM reads and writes it: [`Vm`] on arm64, a plain buffer in
/// the tests of the code above it (the GHESv2 protocol).
pub trait GuestMemory {
    /// Copies `buf.len()` bytes from `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> std::result::Result<(), String>;
    /// Copies `bytes` to `gpa`.
    fn write(&self, gpa: u64, bytes: &[u8]) -> std::result::Result<(), String>;
}

/// Errors from the KVM layer: the failing operation and the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An ioctl or syscall failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The errno.
        source: std::io::Error,
    },
    /// A request the layer refuses before asking the kernel.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(target_arch = "aarch64")]
impl Error {
    fn sys(op: &'static str, e: impl Into<std::io::Error>) -> Self {
        Self::Sys {
            op,
            source: e.into(),
        }
    }

    fn last(op: &'static str) -> Self {
        Self::sys(op, std::io::Error::last_os_error())
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;
