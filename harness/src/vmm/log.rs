//! The reference VMM's own account of a run: what it injected and which records it wrote.
//! It goes into the report beside the observed outcome, for people reading a run, and is
//! never judged: a VMM's word about what it did is not evidence of what the guest got.

use serde::{Deserialize, Serialize};

use crate::scenario::{Hex, HexBytes};

/// What the reference VMM says it did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmLog {
    /// Its injections, in order.
    pub injections: Vec<Injection>,
    /// The CPER records it wrote into the status block, in order (whole status blocks).
    pub records: Vec<HexBytes>,
}

/// One injection the VMM performed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// The vCPU it targeted.
    pub vcpu: u8,
    /// What was injected.
    pub kind: InjectionKind,
    /// Through which interface.
    pub via: InjectionVia,
    /// The syndrome the VMM chose, when it chose one (not for `ext_dabt_pending`, nor for an
    /// SError without `serror_has_esr`).
    pub esr: Option<Hex>,
}

/// What a VMM injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectionKind {
    /// A synchronous external Data Abort.
    Sea,
    /// A synchronous external Instruction Abort.
    Iabt,
    /// An SError.
    Serror,
}

/// The interface an injection went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectionVia {
    /// KVM_SET_VCPU_EVENTS `ext_dabt_pending`.
    KvmExtDabt,
    /// KVM_SET_VCPU_EVENTS `serror_pending` (with `serror_has_esr` when `esr` is set).
    KvmSerror,
    /// The VMM wrote the exception entry's registers itself.
    Emulated,
}
