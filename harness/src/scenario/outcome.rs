//! What came out of a run, whichever VMM produced it (the reference VMM, or QEMU driven as a
//! process), in the report's JSON shape, and the verdict on it.
//!
//! The shape is DESIGN.md's, with three changes a multi-vCPU, multi-error matrix needs:
//! `injection`, `cper` and `guest` are lists (one entry per injection, per record the VMM
//! wrote, per exception a vCPU took) rather than single objects, `guest` entries carry
//! their `vcpu`, and `exit` describes the whole run so it sits beside them.

use serde::{Deserialize, Serialize};

use super::hex::{Hex, HexBytes};
use super::spec::GuestException;
use crate::formats::cper::Record;

/// Everything observed in one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// How the run ended.
    pub exit: Exit,
    /// SIGBUS signals the VMM's threads received, in arrival order.
    pub host_signals: Vec<HostSignal>,
    /// What the VMM injected, in order. Empty when the VMM is a black box (QEMU).
    pub injection: Vec<Injection>,
    /// The CPER records found in the error status block, one per error it notified.
    pub cper: Vec<CperObserved>,
    /// What the guest reported: one entry per exception taken, or one entry with exception
    /// `none` for a vCPU that took none.
    pub guest: Vec<GuestObservation>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// Every vCPU ran its payload to the end and reported.
    Completed,
    /// The VMM stopped the VM on purpose because of the error.
    VmStopped,
    /// The VMM process died (killed by a signal, or aborted).
    VmmCrashed,
    /// The run did not end in time.
    Timeout,
}

/// One SIGBUS as the handler recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSignal {
    /// `si_code`: 4 is BUS_MCEERR_AR, 5 BUS_MCEERR_AO (include/uapi/asm-generic/siginfo.h).
    pub code: i32,
    /// `si_addr_lsb`: log2 of the poisoned extent.
    pub lsb: u8,
    /// The guest physical address `si_addr` maps to, when it is guest memory.
    pub gpa: Option<Hex>,
    /// Which thread got it (`vcpu0`, `main`, `injector`, ...).
    pub thread: String,
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

/// A CPER record read back from guest memory: its bytes and their decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CperObserved {
    /// The error status block, bytes as "0x..." pairs.
    pub hex: HexBytes,
    /// [`Record`] as JSON, or `{"error": "..."}` when the bytes do not decode.
    pub decoded: serde_json::Value,
}

impl CperObserved {
    /// Records `bytes` and decodes them with [`Record::decode`].
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let decoded = match Record::decode(bytes) {
            Ok(record) => serde_json::to_value(&record)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        Self {
            hex: HexBytes(bytes.to_vec()),
            decoded,
        }
    }

    /// The physical addresses of the record's Platform Memory sections (none when the bytes
    /// do not decode).
    pub fn physical_addresses(&self) -> Vec<u64> {
        use crate::formats::cper::Section;
        Record::decode(&self.hex.0)
            .map(|r| {
                r.entries
                    .iter()
                    .filter_map(|e| match &e.section {
                        Section::PlatformMemory(m) => Some(m.physical_address),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What one vCPU of the guest wrote into its report page about one exception.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestObservation {
    /// The vCPU.
    pub vcpu: u8,
    /// The exception taken, classified from `esr` by the runner
    /// ([`GuestException::from_esr`]).
    pub exception: GuestException,
    /// The vector taken, as an offset from VBAR_EL1.
    pub vector_offset: Option<Hex>,
    /// ESR_EL1 in the handler.
    pub esr: Option<Hex>,
    /// FAR_EL1 in the handler (UNKNOWN when ESR.FnV is 1).
    pub far: Option<Hex>,
    /// ELR_EL1 in the handler.
    pub elr: Option<Hex>,
    /// `elr` named after the addresses the guest reported for the exception's step
    /// ([`code_address_name`]), when it is one of them: what a snapshot shows, since the
    /// raw value moves whenever the payload's code changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elr_at: Option<String>,
    /// ISR_EL1 after the access (bit 8, A: an SError is pending).
    pub isr: Option<Hex>,
    /// DISR_EL1 after an ESB (the deferred SError syndrome).
    pub disr: Option<Hex>,
    /// The guest found a record through RSDP, XSDT, HEST and the GHESv2 status block.
    pub cper_seen: bool,
    /// The guest wrote the read-ack register.
    pub acked: bool,
}

/// The kind of a verdict, as the report writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// Everything expected was observed.
    Pass,
    /// Something expected was not observed.
    Fail,
    /// The host cannot run the scenario.
    Skip,
    /// The harness itself failed: the run says nothing about the VMM.
    Error,
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::Error => "error",
        })
    }
}

/// The judgement on one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything expected was observed.
    Pass,
    /// Each expectation that was not met (never empty).
    Fail(Vec<Mismatch>),
    /// Why the host cannot run the scenario.
    Skip(String),
    /// What went wrong in the harness.
    Error(String),
}

impl Verdict {
    /// The kind, without the reason.
    pub fn kind(&self) -> VerdictKind {
        match self {
            Self::Pass => VerdictKind::Pass,
            Self::Fail(_) => VerdictKind::Fail,
            Self::Skip(_) => VerdictKind::Skip,
            Self::Error(_) => VerdictKind::Error,
        }
    }

    /// The reason, one clause per mismatch joined by "; "; `None` for a pass.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Pass => None,
            Self::Fail(m) => Some(
                m.iter()
                    .map(Mismatch::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Self::Skip(r) | Self::Error(r) => Some(r.clone()),
        }
    }
}

/// One expectation that was not met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The scenario field, e.g. `expect.esr`.
    pub field: String,
    /// What the scenario asked for.
    pub expected: String,
    /// What was seen.
    pub observed: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, observed {}",
            self.field, self.expected, self.observed
        )
    }
}

/// How far past a named instruction an address may be and still be named after it
/// (`"unmask+0x4"`): an asynchronous exception is taken at a later instruction boundary.
const NAME_REACH: u64 = 0x10;

/// Names `addr` after one of a step's addresses, exactly: `"target"`, `"access"`,
/// `"ready"` or `"unmask"` when equal (in that order: an EL0 fetch's access is its
/// target), or `"<name>+0x<n>"` up to [`NAME_REACH`] bytes after one; `None` otherwise.
pub fn code_address_name(addr: u64, at: &ras_guest_abi::StepAddresses) -> Option<String> {
    let named = [
        ("target", at.target),
        ("access", at.access),
        ("ready", at.ready),
        ("unmask", at.unmask),
    ];
    let known = || named.iter().filter(|(_, a)| *a != 0);
    if let Some((name, _)) = known().find(|(_, a)| *a == addr) {
        return Some((*name).to_owned());
    }
    known()
        .filter_map(|(name, a)| {
            let d = addr.checked_sub(*a)?;
            (d <= NAME_REACH).then_some((d, *name))
        })
        .min()
        .map(|(d, name)| format!("{name}+{d:#x}"))
}
