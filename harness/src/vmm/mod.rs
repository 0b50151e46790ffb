//! The reference VMM: what it does with a memory error is the system under test.
//!
//! [`execute`] (arm64 only) builds the VM a scenario asks for ([`plan`]), runs one thread per
//! vCPU under a watchdog, poisons the target pages at the scenario's `when` through
//! [`crate::fault`] (which refuses anything outside the registered guest RAM), turns each
//! SIGBUS into a guest physical range, asks [`policy::decide`] what to do, records the CPER
//! record behind GHESv2 ([`ghes`]) and injects through KVM or by writing the exception entry
//! itself ([`entry`]), and returns an [`Outcome`](crate::scenario::Outcome) built, as for any
//! VMM, from the guest's reports and the host's signals, with its own account beside it
//! ([`log::VmmLog`], never judged). The part from
//! the SIGBUS to the injection runs on the vCPU thread that took it (`handler`, arm64 only,
//! which the latency bench calls too).
//!
//! Everything but the machine itself is pure and tested on every host.

pub mod entry;
pub mod ghes;
#[cfg(target_arch = "aarch64")]
pub mod handler;
pub mod log;
#[cfg(target_arch = "aarch64")]
mod machine;
pub mod order;
pub mod plan;
pub mod policy;
#[cfg(target_arch = "aarch64")]
mod vcpu_thread;

#[cfg(target_arch = "aarch64")]
pub use machine::execute;

use std::time::Duration;

/// How [`execute`] runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest a vCPU may run before the watchdog kicks it (the run is then a timeout).
    pub vcpu_timeout: Duration,
}

impl Default for Options {
    /// 60 s: a nested KVM_RUN round trip under TCG takes about 9 ms, a scenario a few
    /// hundred of them.
    fn default() -> Self {
        Self {
            vcpu_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a scenario produced no outcome.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The host cannot run it (no KVM, no root, no memory-failure support, no free huge
    /// pages, ...): a skip, with the reason.
    #[error("{0}")]
    Unsupported(String),
    /// The harness failed: the run says nothing about the VMM.
    #[error("{0}")]
    Failed(String),
}
