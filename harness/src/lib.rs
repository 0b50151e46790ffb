//! ras-harness: a fault-injection and RAS conformance harness for arm64 KVM.
//!
//! The harness boots tiny bare-metal aarch64 payloads under KVM, poisons their pages for
//! real, captures the host's SIGBUS, lets a reference VMM report the error to the guest
//! (a CPER record behind ACPI HEST/GHESv2, then an SEA or an SError) and asserts what came
//! out, byte for byte.
//!
//! The crate is a map of small modules, one concept each:
//! - [`formats`]: byte-exact encoders and decoders (CPER, ESR, ACPI tables, FDT). Pure code,
//!   no KVM: it builds and tests on any host.
//! - [`payload`]: the guest payload image (built from guest-payloads/), for every host.
//! - [`kvm`]: the reference VMM's thin KVM layer: VM, memory, vCPU, caps, run loop (the
//!   ioctl parts on aarch64 only; exit handling and cap masking everywhere).
//! - [`scenario`]: the scenario files (schema, loading, validation), the outcome of a run
//!   and the verdict on it.
//! - [`report`]: the run report as JSON, JUnit XML and a table.
//! - [`fault`]: poisoning guest pages for real, the SIGBUS that follows, and which guest
//!   physical addresses it covers (Linux only; what a SIGBUS's si_code says, everywhere).

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod fault;
pub mod formats;
pub mod host;
pub mod kvm;
pub mod payload;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod vmm;

#[cfg(test)]
pub(crate) mod testutil;
