//! Byte-exact encoders and decoders for what a VMM hands a guest about a memory error.
//!
//! Nothing here touches KVM: every codec builds and is tested on any host.

pub mod acpi;
pub mod cper;
pub mod esr;
pub mod fdt;
