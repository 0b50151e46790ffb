//! What came out of a run, whichever VMM produced it, judged as a black box: what the guest
//! reported, what the host kernel signalled and how the VMM process ended. Nothing in an
//! [`Outcome`] comes from the VMM's own account of what it did (that is
//! [`crate::vmm::log::VmmLog`], reported beside it and never judged), so the same shape
//! serves any VMM under test.

use serde::{Deserialize, Serialize};

use super::hex::{Hex, HexBytes};
use super::spec::GuestException;
use crate::fault::SigbusCode;
use crate::formats::cper::Record;

/// Everything observed in one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// How the VMM ended.
    pub vmm_end: VmmEnd,
    /// SIGBUS signals the host kernel sent the VMM's threads, in arrival order.
    pub host_signals: Vec<HostSignal>,
    /// What the guest reported, one entry per vCPU (the payload's reports).
    pub guest: Vec<GuestReport>,
    /// What a Linux guest told on its console of the error: the kernel's RAS lines, its
    /// oops or panic, the init's own lines (sut::linux). Empty for the payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console: Vec<String>,
}

impl Outcome {
    /// Every exception the guest took, with the vCPU that took it, vCPU by vCPU.
    pub fn exceptions(&self) -> impl Iterator<Item = (u8, &ExceptionTaken)> {
        self.guest
            .iter()
            .flat_map(|g| g.exceptions.iter().map(move |e| (g.vcpu, e)))
    }
}

/// How the VMM ended: what its process end says (the reference VMM runs in the harness's
/// child process, and returns the same facts).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case", deny_unknown_fields)]
pub enum VmmEnd {
    /// The guest powered the VM off (PSCI SYSTEM_OFF) and the VMM ended normally.
    Completed,
    /// The VMM stopped the VM on purpose because of the error, saying why (QEMU without
    /// GHES: "Hardware memory error!", exit status 1).
    Stopped {
        /// What it said.
        message: String,
    },
    /// The VMM process was killed by a signal (SIGBUS with no handler, an abort()).
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// The run did not end in time.
    TimedOut,
}

impl std::fmt::Display for VmmEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Completed => f.pad("completed"),
            Self::Stopped { .. } => f.pad("stopped"),
            Self::Killed { signal } => f.pad(&format!("killed by signal {signal}")),
            Self::TimedOut => f.pad("timed out"),
        }
    }
}

/// One SIGBUS as the host kernel delivered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSignal {
    /// `si_code`, written as the kernel's number.
    pub code: SigbusCode,
    /// `si_addr_lsb`: log2 of the poisoned extent.
    pub lsb: u8,
    /// The guest physical address `si_addr` maps to, when it is guest memory.
    pub gpa: Option<Hex>,
    /// Which thread got it (`vcpu0`, `vmm`, ...).
    pub thread: String,
}

/// What one vCPU of the guest reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestReport {
    /// The vCPU.
    pub vcpu: u8,
    /// How far the guest got.
    pub state: GuestState,
    /// Every exception it took, in order.
    pub exceptions: Vec<ExceptionTaken>,
    /// The masked SError wait, when it ran.
    pub serror_wait: Option<SerrorWait>,
}

/// How far a vCPU's payload got (its report's state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestState {
    /// It never wrote its report (or the report is not the payload's).
    NotStarted,
    /// It started and did not finish.
    Running,
    /// It ran every step.
    Done,
    /// It stopped on a fatal condition of its own (bad parameters, an unexpected exception).
    Fatal,
}

/// One exception as the guest saw it on entry to its vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionTaken {
    /// Classified from `esr` ([`GuestException::from_esr`]).
    pub kind: GuestException,
    /// The vector taken, as an offset from VBAR_EL1.
    pub vector_offset: Hex,
    /// ESR_EL1.
    pub esr: Hex,
    /// FAR_EL1 (UNKNOWN when ESR.FnV is 1).
    pub far: Hex,
    /// ELR_EL1.
    pub elr: Hex,
    /// `elr` named after the addresses the guest reported for the exception's step
    /// ([`code_address_name`]), when it is one of them: what a snapshot shows, since the
    /// raw value moves whenever the payload's code changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elr_at: Option<String>,
    /// SPSR_EL1.
    pub spsr: Hex,
    /// ISR_EL1 in the handler.
    pub isr: Hex,
    /// The payload step it was taken in, `None` outside every step.
    pub step: Option<u32>,
    /// The VM ended while the guest was still handling this exception, before it looked
    /// for a record (an outside VMM died while the handshake held the guest there):
    /// `record` says nothing of what the VMM wrote.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unfinished: bool,
    /// The record the guest's ACPI walk read at this exception (none without ACPI, or when
    /// block status was 0).
    pub record: Option<RecordRead>,
    /// Guest time from its step's access to this vector, in ns (CNTVCT_EL0 just before
    /// the access and in the handler, at CNTFRQ_EL0): the host kernel's fault and signal
    /// and the VMM's whole path to the injection. A measurement, in no baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_to_vector_ns: Option<u64>,
}

/// A CPER record as the guest read it from the error status block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRead {
    /// The guest acknowledged it (block status cleared, read-ack register written).
    pub acked: bool,
    /// 20 + the block's data length; more than `hex` holds when the guest cut it.
    pub length: u32,
    /// The bytes read, as "0x..." pairs.
    pub hex: HexBytes,
    /// [`Record`] as JSON, or `{"error": "..."}` when the bytes do not decode.
    pub decoded: serde_json::Value,
}

impl RecordRead {
    /// A record of `length` bytes whose first `bytes.len()` were read, decoded with
    /// [`Record::decode`].
    pub fn new(bytes: &[u8], length: u32, acked: bool) -> Self {
        let decoded = match Record::decode(bytes) {
            Ok(record) => serde_json::to_value(&record)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        Self {
            acked,
            length,
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

/// What the masked SError wait saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerrorWait {
    /// ISR_EL1 with PSTATE.A masked, after the doorbell (bit 8, A: an SError is pending).
    pub isr: Hex,
    /// DISR_EL1 after ESB (bit 31, A: a deferred SError was recorded); `None` when ESB was
    /// not executed (not asked for, or the guest has no FEAT_RAS).
    pub disr: Option<Hex>,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
