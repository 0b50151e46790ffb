//! The scenario file: one row of the conformance matrix, as serde types.
//!
//! Every struct denies unknown fields, so a typo is an error rather than a silently
//! ignored setting. Defaults are those of the common case (one vCPU loading from an
//! anonymous page at EL1, the VMM delivering a QEMU-style emulated SEA); scenarios/README.md
//! documents each field. [`super::validate`] checks what the types cannot.

use serde::{Deserialize, Serialize};

use super::hex::Hex;
use crate::fault::SigbusCode;
use crate::formats::cper::Profile;
use crate::formats::esr::{
    ESR_ELx_EC_DABT_CUR, ESR_ELx_EC_DABT_LOW, ESR_ELx_EC_IABT_CUR, ESR_ELx_EC_IABT_LOW,
    ESR_ELx_EC_SERROR, Esr, Origin,
};
pub use crate::kvm::Backing;
use crate::kvm::Cap;

/// A whole scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique across the files of a run; [`super::load`] fills it with the file stem when
    /// the file leaves it out. Lower-case letters, digits, `-`, `_` and `.`, because it
    /// names JUnit test cases and snapshot files.
    #[serde(default)]
    pub name: String,
    /// One line for humans; shown nowhere the verdict depends on.
    #[serde(default)]
    pub description: String,
    /// How the guest learns about its platform, and so whether a CPER record can reach it.
    pub firmware: Firmware,
    /// The guest: its shape and what it does.
    #[serde(default)]
    pub guest: Guest,
    /// The errors to inject, in order. Empty makes a control run with no error.
    pub faults: Vec<Fault>,
    /// What the VMM under test is configured to do.
    #[serde(default)]
    pub vmm: Vmm,
    /// What must come out.
    pub expect: Expect,
}

/// How the guest finds its platform description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// RSDP/XSDT/HEST with a GHESv2 source notified by SEA: CPER records reach the guest.
    Acpi,
    /// A device tree only: there is no upstream transport for CPER (docs/ras-facts.md §9), so
    /// an error can only be signalled, not described.
    Dtb,
}

/// The guest's shape and behaviour (the payload reads these from its report page).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guest {
    /// What the guest runs: the harness's payload, or a Linux kernel whose own account of
    /// the error is the outcome.
    pub os: Os,
    /// vCPUs, 1..=8.
    pub vcpus: u8,
    /// Size of the target slot in MiB, 16..=1024: the guest RAM faults poison, besides
    /// the fixed 16 MiB slot of the payload, mailboxes and firmware. A multiple of the huge
    /// page size for hugetlb backings.
    pub memory_mib: u32,
    /// What backs the target slot in the VMM (the payload's own slot is anonymous).
    pub backing: Backing,
    /// Size of the target region, in 4 KiB pages: the pages faults name by index.
    pub target_pages: u32,
    /// false hides FEAT_RAS from the guest (ID_AA64PFR0_EL1.RAS, bits \[31:28\], set to 0).
    pub ras: bool,
    /// The Exception level the access runs at: 0 (under an identity map) or 1.
    pub el: El,
    /// What each faulting vCPU does with its fault's page.
    pub access: Access,
    /// Run the access with PSTATE.A set, so an SError stays pending (ISR_EL1.A).
    pub serror_masked: bool,
    /// Execute ESB after the access (before unmasking SErrors), deferring a pending
    /// masked SError into DISR_EL1 when the guest has FEAT_RAS.
    pub esb: bool,
    /// Acknowledge a CPER record through the GHESv2 read-ack register after reading it.
    /// Without ACPI there is nothing to acknowledge and this has no effect.
    pub ack: bool,
}

impl Default for Guest {
    fn default() -> Self {
        Self {
            os: Os::Payload,
            vcpus: 1,
            memory_mib: 64,
            backing: Backing::Anonymous,
            target_pages: 16,
            ras: true,
            el: El::El1,
            access: Access::Load,
            serror_masked: false,
            esb: false,
            ack: true,
        }
    }
}

/// What the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Os {
    /// The harness's bare-metal payload (guests/payload), which reports every exception
    /// and record it saw.
    Payload,
    /// Debian's arm64 kernel with guests/linux-init: a process maps a page, which is
    /// poisoned, then loads from it (`el` 0) or has the kernel read it for write(2)
    /// (`el` 1, copy_from_user). Runs on a Debian QEMU; the outcome is the console's lines.
    Linux,
}

/// An Exception level the guest's access runs at. JSON: the number 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum El {
    /// EL0: an SEA is taken from a lower EL (vector +0x400, ESR EC 0x24/0x20).
    El0,
    /// EL1: an SEA is taken from the current EL (vector +0x200, ESR EC 0x25/0x21).
    El1,
}

impl TryFrom<u8> for El {
    type Error = String;

    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(Self::El0),
            1 => Ok(Self::El1),
            _ => Err(format!("invalid value {v}, expected 0 or 1")),
        }
    }
}

impl El {
    /// Where an exception taken to EL1 from this level comes from, as ESR_EL1.EC says it.
    pub fn origin(self) -> Origin {
        match self {
            El::El0 => Origin::LowerEl,
            El::El1 => Origin::SameEl,
        }
    }
}

impl From<El> for u8 {
    fn from(el: El) -> u8 {
        match el {
            El::El0 => 0,
            El::El1 => 1,
        }
    }
}

/// The guest's access to its fault's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// A 64-bit load (LDR): a Data Abort, WnR 0.
    Load,
    /// A 64-bit store (STR): a Data Abort, WnR 1 when the syndrome is precise.
    Store,
    /// A branch into the page: an Instruction Abort.
    Ifetch,
    /// No access: the error is never consumed (only an AO can report it).
    None,
}

/// One error to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// How the page is poisoned.
    #[serde(default)]
    pub method: Method,
    /// Index of the 4 KiB page in the target region, below `guest.target_pages`.
    #[serde(default)]
    pub page: u32,
    /// The vCPU that accesses the page, below `guest.vcpus`.
    #[serde(default)]
    pub vcpu: u8,
    /// When the page is poisoned.
    #[serde(default)]
    pub when: When,
}

impl Fault {
    /// The guest physical address of the fault's page: page `page` of the target region,
    /// which starts at the target slot (guest-abi `map::TARGET_BASE`).
    pub fn gpa(&self) -> u64 {
        ras_guest_abi::map::TARGET_BASE + u64::from(self.page) * super::TARGET_PAGE_SIZE
    }
}

impl Scenario {
    /// The indices in `faults` of vCPU `vcpu`'s faults, in order: its n-th fault is met in
    /// the payload's step n (the n-th target of its params, or the masked SError wait).
    pub fn faults_of(&self, vcpu: u8) -> impl Iterator<Item = usize> + '_ {
        self.faults
            .iter()
            .enumerate()
            .filter(move |(_, f)| f.vcpu == vcpu)
            .map(|(i, _)| i)
    }

    /// The payload step in which fault `i`'s vCPU meets it.
    pub fn fault_step(&self, i: usize) -> Option<u32> {
        let vcpu = self.faults.get(i)?.vcpu;
        let step = self.faults_of(vcpu).position(|j| j == i)?;
        u32::try_from(step).ok()
    }
}

/// How a page is poisoned (docs/ras-facts.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// `madvise(MADV_HWPOISON)` (100) on the VMM's mapping.
    #[default]
    MadviseHwpoison,
    /// The page's physical address (its PFN << PAGE_SHIFT) written to
    /// /sys/devices/system/memory/hard_offline_page (docs/ras-facts.md §1).
    HardOffline,
    /// `madvise(MADV_SOFT_OFFLINE)` (101): the kernel migrates the data away; no signal
    /// is expected.
    SoftOffline,
}

/// When a fault's page is poisoned, relative to the guest and to earlier faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// Before the first KVM_RUN.
    BeforeBoot,
    /// When the fault's vCPU reports it is ready to access the page.
    #[default]
    AtReady,
    /// After the VMM has notified the previous fault, before the guest acknowledges it:
    /// the "second error before the ack" case (QEMU abort()s, docs/ras-facts.md §9).
    BeforeAck,
    /// After the guest has acknowledged the previous fault's record.
    AfterAck,
}

/// The VMM's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Vmm {
    /// KVM capabilities the VMM must treat as absent, whatever the host reports: 41, 158
    /// or 178. Not 245 (KVM_CAP_ARM_SEA_TO_USER): it changes only what happens when the
    /// host takes a real synchronous external abort that APEI does not claim
    /// (`kvm_handle_guest_sea`), which the hwpoison path never reaches, so masking it could
    /// not change any outcome (scenarios/README.md); validation refuses it.
    pub mask_caps: Vec<Cap>,
    /// PR_MCE_KILL policy of the VMM process.
    pub mce_kill: MceKill,
    /// What the VMM does with an action-required memory error (BUS_MCEERR_AR).
    pub on_memory_error: OnMemoryError,
    /// How an SEA is delivered, when `on_memory_error` is `sea`.
    pub sea: SeaVia,
    /// The SError syndrome (ISS, bits \[24:0\]) when `on_memory_error` is `serror`;
    /// absent lets KVM pick its implementation-defined default (0xBF000000).
    pub serror_esr: Option<Hex>,
    /// How CPER records are laid out (ACPI only).
    pub cper_profile: CperProfile,
    /// What the VMM does with an action-optional error (BUS_MCEERR_AO).
    pub on_ao: OnAo,
}

impl Default for Vmm {
    fn default() -> Self {
        Self {
            mask_caps: Vec::new(),
            mce_kill: MceKill::Late,
            on_memory_error: OnMemoryError::Sea,
            sea: SeaVia::Emulated,
            serror_esr: None,
            cper_profile: CperProfile::Qemu,
            on_ao: OnAo::Ignore,
        }
    }
}

/// PR_MCE_KILL policy (prctl(2)): it applies to the whole VMM process, so it lives here
/// rather than on a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MceKill {
    /// PR_MCE_KILL_LATE: a signal (AR) only when a thread consumes the poison.
    Late,
    /// PR_MCE_KILL_EARLY: BUS_MCEERR_AO at poison time to every process mapping the page.
    Early,
}

/// What the VMM does with a BUS_MCEERR_AR on guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMemoryError {
    /// Record CPER (ACPI) and deliver a synchronous external abort, as `vmm.sea` says.
    Sea,
    /// Record CPER (ACPI) and deliver an SError (`vmm.serror_esr`).
    Serror,
    /// Stop the VM with an error, as QEMU does without GHES.
    Stop,
}

/// How the VMM delivers an SEA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeaVia {
    /// KVM_SET_VCPU_EVENTS with `ext_dabt_pending` (cap 178): always a Data Abort,
    /// ESR 0x96000010 / 0x92000010, FnV 0.
    KvmExtDabt,
    /// The VMM writes ESR_EL1, FAR_EL1, ELR_EL1, SPSR_EL1 and PC itself, as QEMU does:
    /// 0x96000410 / 0x92000410 for data, an Instruction Abort for a fetch.
    Emulated,
}

/// CPER layout, mirrored from [`Profile`] so the scenario schema owns its spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CperProfile {
    /// What QEMU writes.
    Qemu,
    /// QEMU's, plus the entry count ACPI requires and the optional Primary flag and
    /// address mask (formats::cper::Profile).
    Strict,
}

impl From<CperProfile> for Profile {
    fn from(p: CperProfile) -> Profile {
        match p {
            CperProfile::Qemu => Profile::Qemu,
            CperProfile::Strict => Profile::Strict,
        }
    }
}

/// What the VMM does with a BUS_MCEERR_AO on guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAo {
    /// Nothing, as QEMU (docs/ras-facts.md §9).
    Ignore,
    /// Treat it like an AR: `on_memory_error` applies at poison time.
    Notify,
}

/// What must come out. Absent optional fields are not judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the run ends.
    pub outcome: ExpectedOutcome,
    /// Signals the VMM's threads must have received, as a multiset: each entry is matched
    /// by a signal of its own. Further signals are allowed (Linux 6.11+ also signals the
    /// thread that poisons, and a kernel may signal more threads than the one that touched
    /// the page).
    #[serde(default)]
    pub host_signals: Vec<ExpectedSignal>,
    /// The exception every notified vCPU must have taken.
    #[serde(default)]
    pub guest_exception: Option<GuestException>,
    /// ESR_EL1 of every guest exception, compared on bits \[31:0\].
    #[serde(default)]
    pub esr: Option<Hex>,
    /// Offset from VBAR_EL1 of the vector every guest exception went to.
    #[serde(default)]
    pub vector_offset: Option<Hex>,
    /// Guest exceptions expected in all (default: one per fault when the outcome is
    /// `guest-notified`).
    #[serde(default)]
    pub notifications: Option<u32>,
    /// What the guest read of CPER records, for every fault or fault by fault.
    #[serde(default)]
    pub cper: Option<CperExpectation>,
    /// ISR_EL1 the masked SError wait read on every vCPU with a fault (bit 8, A: pending).
    #[serde(default)]
    pub isr: Option<Hex>,
    /// DISR_EL1 the masked SError wait read after ESB on every vCPU with a fault.
    #[serde(default)]
    pub disr: Option<Hex>,
    /// What a Linux guest's console must and must not show (`guest.os` linux only).
    #[serde(default)]
    pub console: Option<ConsoleExpectation>,
}

/// Console lines of a Linux guest, as [`Outcome::console`](super::Outcome) keeps them
/// (the page's addresses written `TARGET_PA`, `TARGET_PFN`, `TARGET_VA`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleExpectation {
    /// Each must be part of some line.
    pub contains: Vec<String>,
    /// None may be part of any line.
    pub excludes: Vec<String>,
}

/// The ways a run ends, as far as a scenario cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedOutcome {
    /// The guest ran to completion and took at least one exception for the error.
    GuestNotified,
    /// The guest ran to completion and took no exception.
    GuestUnaffected,
    /// The VMM stopped the VM on purpose (QEMU's "Hardware memory error!", exit 1).
    VmStopped,
    /// The VMM process died: killed by the SIGBUS, or aborted.
    VmmCrashed,
}

/// A host signal that must have been received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSignal {
    /// Its si_code.
    pub code: SignalCode,
    /// Its `si_addr_lsb`; absent matches any (it depends on the host page size).
    #[serde(default)]
    pub lsb: Option<u8>,
}

/// The SIGBUS si_codes of a memory error, as a scenario spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalCode {
    /// BUS_MCEERR_AR: action required, the thread consumed the poison.
    Ar,
    /// BUS_MCEERR_AO: action optional, the poison was found but not consumed.
    Ao,
}

impl SignalCode {
    /// The si_code it stands for.
    pub fn si_code(self) -> SigbusCode {
        match self {
            Self::Ar => SigbusCode::MceerrAr,
            Self::Ao => SigbusCode::MceerrAo,
        }
    }

    /// The one that stands for `code`, if `code` is a memory error's.
    pub fn from_si_code(code: SigbusCode) -> Option<Self> {
        [Self::Ar, Self::Ao]
            .into_iter()
            .find(|c| c.si_code() == code)
    }
}

/// The exception a guest took, classified from its ESR_EL1 EC (Arm ARM D24.2.45).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestException {
    /// A Data Abort (EC 0x24 lower EL / 0x25 same EL).
    Sea,
    /// An Instruction Abort (EC 0x20 lower EL / 0x21 same EL).
    Iabt,
    /// An SError interrupt (EC 0x2F).
    Serror,
    /// No exception.
    None,
    /// Any other exception (a guest bug, or a VMM injecting the wrong thing).
    Other,
}

impl GuestException {
    /// The ESR_EL1 exception classes this kind covers, from a lower EL and from the same EL.
    pub fn exception_classes(self) -> &'static [u8] {
        match self {
            Self::Sea => &[ESR_ELx_EC_DABT_LOW, ESR_ELx_EC_DABT_CUR],
            Self::Iabt => &[ESR_ELx_EC_IABT_LOW, ESR_ELx_EC_IABT_CUR],
            Self::Serror => &[ESR_ELx_EC_SERROR],
            Self::None | Self::Other => &[],
        }
    }

    /// Classifies an ESR_EL1 value by its EC, bits \[31:26\].
    pub fn from_esr(esr: u64) -> Self {
        let ec = Esr::from_raw(esr).ec();
        [Self::Sea, Self::Iabt, Self::Serror]
            .into_iter()
            .find(|k| k.exception_classes().contains(&ec))
            .unwrap_or(Self::Other)
    }
}

/// What the guest must have read of a fault's CPER record, through its own ACPI walk at
/// its exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedCper {
    /// No record the guest read names the fault's page (for the whole scenario: the guest
    /// read no record at all).
    None,
    /// Some record the guest read, at any exception, names the fault's page (within the
    /// extent of the host signal that reported it).
    Recorded,
    /// The exception the fault's vCPU took in the fault's step read a record naming the
    /// fault's page, and acknowledged it when `guest.ack`.
    Consumed,
}

/// `expect.cper`: one [`ExpectedCper`] for every fault (`"consumed"`), or one per fault in
/// `faults` order (`["consumed", "none"]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CperExpectation {
    /// The same for every fault.
    All(ExpectedCper),
    /// Fault by fault.
    PerFault(Vec<ExpectedCper>),
}

impl CperExpectation {
    /// What is expected of fault `i`.
    pub fn for_fault(&self, i: usize) -> Option<ExpectedCper> {
        match self {
            Self::All(e) => Some(*e),
            Self::PerFault(v) => v.get(i).copied(),
        }
    }

    /// Whether any fault expects `want`.
    pub fn any(&self, want: ExpectedCper) -> bool {
        match self {
            Self::All(e) => *e == want,
            Self::PerFault(v) => v.contains(&want),
        }
    }
}

impl<'de> Deserialize<'de> for CperExpectation {
    /// A string or an array of strings, each an [`ExpectedCper`]; the errors are
    /// [`ExpectedCper`]'s own ("unknown variant `x`, expected one of ...").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CperExpectation;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "\"none\", \"recorded\", \"consumed\" or an array of them, one per fault",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let d = serde::de::value::StrDeserializer::<E>::new(v);
                ExpectedCper::deserialize(d).map(CperExpectation::All)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = seq.next_element::<ExpectedCper>()? {
                    v.push(e);
                }
                Ok(CperExpectation::PerFault(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}
