//! The records in a vCPU's mailbox: [`Params`] in, [`Report`] out.
//!
//! Every field is a fixed-width integer, every struct is `#[repr(C)]` with no padding
//! (pinned by the const assertions), so any byte pattern is a valid value and both sides
//! can copy them as bytes ([`Params::as_bytes`], [`Report::from_bytes`]).

use core::mem::{offset_of, size_of};

/// Most target addresses per vCPU (second-error scenarios need two).
pub const MAX_TARGETS: usize = 4;
/// Most exception records a report keeps; `Report::exception_count` keeps counting.
pub const MAX_RECORDS: usize = 8;
/// Most CPER bytes the guest copies out of a status block at one exception (a memory-error
/// record is 172 bytes; a longer one is reported with its full length and cut here).
pub const CPER_COPY_MAX: usize = 512;
/// `ExceptionRecord::step` for an exception taken outside any step.
pub const NO_STEP: u64 = u64::MAX;

/// The access a step performs on its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Access {
    /// No access: the steps only ring the doorbells.
    None = 0,
    /// `ldr x, [target]`.
    Load = 1,
    /// `str x, [target]`.
    Store = 2,
    /// Branch to the target, which the guest first fills with one instruction: `ret` at
    /// EL1, `svc #0` at EL0 (that write is an MMIO exit when the target is unbacked; the
    /// VMM just resumes). KVM answers a fetch from an unbacked target itself with an
    /// external instruction abort (arch/arm64/kvm/mmu.c), never an exit.
    Ifetch = 3,
}

impl Access {
    /// Decodes a wire code.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::None,
            1 => Self::Load,
            2 => Self::Store,
            3 => Self::Ifetch,
            _ => return None,
        })
    }
}

/// Bits of [`Params::flags`].
pub mod flags {
    /// After the access steps, one more step (index `target_count`): mask PSTATE.A, ring
    /// `ReadyForFault`, read ISR_EL1, unmask, and take the SError if one is pending.
    pub const SERROR_WAIT: u32 = 1 << 0;
    /// In the SError wait, execute ESB and read DISR_EL1 before unmasking (only if
    /// ID_AA64PFR0_EL1.RAS says FEAT_RAS; otherwise `SerrorObservation` says it was skipped).
    pub const SERROR_ESB: u32 = 1 << 1;
    /// At each exception, walk RSDP -> XSDT -> HEST -> GHES, as an OS does when notified,
    /// and copy the pending record into that exception's [`super::RecordRead`].
    pub const WALK_ACPI: u32 = 1 << 2;
    /// After copying a record, clear block status and write the read-ack register.
    pub const ACK: u32 = 1 << 3;
    /// After `Ready` (and the DTB check), spin for ever without another exit: a hung guest,
    /// to prove the VMM's watchdog.
    pub const HANG: u32 = 1 << 4;
    /// After `Ready` (and the DTB check), ring `ReadyForFault` for ever and do nothing else:
    /// step = the ring count (wrapping), arg = the low 32 bits of CNTVCT_EL0 read just before
    /// the store. Each ring is one null KVM_EXIT_MMIO round trip: the benches' floor.
    pub const DOORBELL_LOOP: u32 = 1 << 5;
}

/// The parameters as the guest understood them from `/chosen/bootargs`
/// ([`crate::bootargs`]), written by the guest at mailbox offset
/// [`crate::map::mailbox_offset::PARAMS`] before anything else, so the host can read back
/// what the guest was asked to do. Host code describes a vCPU's run with one too, and the
/// reference VMM turns them into the bootargs line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// [`crate::PARAMS_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`].
    pub abi_version: u32,
    /// An [`Access`] code.
    pub access: u32,
    /// Exception level of the access: 0 or 1.
    pub el: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// How many of `targets` are used (each one is one step).
    pub target_count: u32,
    /// How many vCPUs run the payload (`ras.vcpus`).
    pub vcpus: u32,
    /// Guest physical (= virtual, identity-mapped) addresses to access, one per step.
    pub targets: [u64; MAX_TARGETS],
    /// Where the RSDP is, or 0 for none.
    pub rsdp_gpa: u64,
    /// Where the device tree the guest booted with is.
    pub dtb_gpa: u64,
    /// The MMIO doorbell, or 0: events go through the mailbox's [`Handshake`].
    pub doorbell_gpa: u64,
}

impl Params {
    /// Params of this ABI version for the reference VMM (one vCPU, the MMIO doorbell):
    /// `access` at `el` on each of `targets` (at most [`MAX_TARGETS`]; the rest are
    /// ignored), with [`flags`] bits; no tables.
    pub fn new(access: Access, el: u32, flags: u32, targets: &[u64]) -> Self {
        let count = targets.len().min(MAX_TARGETS);
        let mut p = Self {
            magic: crate::PARAMS_MAGIC,
            abi_version: crate::ABI_VERSION,
            access: access as u32,
            el,
            flags,
            target_count: count as u32,
            vcpus: 1,
            doorbell_gpa: crate::map::DOORBELL,
            ..Self::default()
        };
        p.targets[..count].copy_from_slice(&targets[..count]);
        p
    }
}

/// Events without a doorbell: the guest writes `event`, then increments `seq`, and spins
/// until the host writes that `seq` to `ack`. The host finds a mailbox in a VMM's memory by
/// `magic` and `mailbox_gpa` (which also gives the VMM's guest-physical to host-virtual
/// offset). At mailbox offset [`crate::map::mailbox_offset::HANDSHAKE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// [`crate::HANDSHAKE_MAGIC`] once the guest has initialised the mailbox.
    pub magic: u64,
    /// Guest physical address of this mailbox.
    pub mailbox_gpa: u64,
    /// The latest event, a [`crate::doorbell::Doorbell`] encoding.
    pub event: u64,
    /// Events so far; incremented after `event` is written.
    pub seq: u64,
    /// Written by the host: the `seq` it has handled.
    pub ack: u64,
}

/// One exception as the guest saw it on entry to its vector.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExceptionRecord {
    /// Offset of the vector taken from VBAR_EL1 (0x200 current EL sync, 0x380 current EL
    /// SError, 0x400 lower EL sync, 0x580 lower EL SError, ...: [`crate::arch`]).
    pub vector_offset: u64,
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1 (UNKNOWN unless the ESR says it is valid).
    pub far: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// SPSR_EL1.
    pub spsr: u64,
    /// ISR_EL1 in the handler.
    pub isr: u64,
    /// CNTVCT_EL0 in the handler.
    pub cntvct: u64,
    /// Step during which it was taken, or [`NO_STEP`] (unexpected).
    pub step: u64,
    /// The error record the handler's ACPI walk found (with `WALK_ACPI`).
    pub cper: RecordRead,
}

/// What the guest read from the error status block at one exception: the bytes an OS's
/// GHES code would act on, and whether it acknowledged them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRead {
    /// [`acpi_found`] bits of this walk: `RECORD` when block status was non-zero and the
    /// record was copied, `ACKED` when it was then acknowledged.
    pub found: u32,
    /// Block status, as read (before clearing).
    pub block_status: u32,
    /// 20 + the status block's data length: the record's length.
    pub record_len: u32,
    /// Bytes copied into `bytes`: `record_len`, at most [`CPER_COPY_MAX`].
    pub copied_len: u32,
    /// The record, byte for byte, as read.
    pub bytes: [u8; CPER_COPY_MAX],
}

impl Default for RecordRead {
    fn default() -> Self {
        Self {
            found: 0,
            block_status: 0,
            record_len: 0,
            copied_len: 0,
            bytes: [0; CPER_COPY_MAX],
        }
    }
}

/// What the masked SError wait saw.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SerrorObservation {
    /// 1 when the wait ran.
    pub ran: u32,
    /// 1 when ESB was executed and DISR_EL1 read (needs FEAT_RAS and `SERROR_ESB`).
    pub esb_executed: u32,
    /// ISR_EL1 with PSTATE.A masked, after the doorbell (bit 8 = A: SError pending).
    pub isr_masked: u64,
    /// DISR_EL1 after ESB (bit 31 = A: a deferred SError was recorded).
    pub disr: u64,
}

/// Bits of [`AcpiObservation::found`].
pub mod acpi_found {
    /// RSDP signature "RSD PTR " at `Params::rsdp_gpa`.
    pub const RSDP: u32 = 1 << 0;
    /// XSDT signature at the RSDP's XsdtAddress.
    pub const XSDT: u32 = 1 << 1;
    /// A "HEST" table listed in the XSDT.
    pub const HEST: u32 = 1 << 2;
    /// At least one GHES (type 9) or GHESv2 (type 10) entry.
    pub const GHES: u32 = 1 << 3;
    /// A GHES whose status block had non-zero block status; its record was copied.
    pub const RECORD: u32 = 1 << 4;
    /// Block status cleared and the read-ack register written.
    pub const ACKED: u32 = 1 << 5;
    /// The walk stopped at a HEST entry type it cannot size.
    pub const UNKNOWN_ENTRY: u32 = 1 << 6;
}

/// Bits of [`AcpiObservation::checksum_errors`]: tables whose bytes do not sum to 0.
pub mod acpi_checksum {
    /// The first 20 bytes of the RSDP (ACPI 1.0 checksum).
    pub const RSDP: u32 = 1 << 0;
    /// The whole RSDP (extended checksum).
    pub const RSDP_EXTENDED: u32 = 1 << 1;
    /// The XSDT.
    pub const XSDT: u32 = 1 << 2;
    /// The HEST.
    pub const HEST: u32 = 1 << 3;
}

/// What the latest ACPI walk found of the tables, the way an OS finds them (the record
/// itself goes to the exception's [`RecordRead`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcpiObservation {
    /// Walks done (one per exception taken with `WALK_ACPI`).
    pub walks: u32,
    /// [`acpi_found`] bits of the latest walk.
    pub found: u32,
    /// [`acpi_checksum`] bits of the latest walk.
    pub checksum_errors: u32,
    /// GHES + GHESv2 entries in the HEST.
    pub ghes_count: u32,
    /// Source id of the GHES whose record was copied.
    pub source_id: u32,
    /// Its notification type (ACPI 6.5 Table 18.14: 3 SCI, 7 GPIO-Signal, 8 ARMv8 SEA,
    /// 9 ARMv8 SEI, ...).
    pub notification_type: u32,
    /// Type of the GHES entry (9 or 10).
    pub ghes_type: u32,
    /// Must be zero.
    pub reserved: u32,
    /// Its error status address register's address (the GAS address field).
    pub error_status_address: u64,
    /// The status block address read from that register.
    pub block_address: u64,
    /// Read-ack register value before the ack (GHESv2 only).
    pub read_ack_before: u64,
    /// Read-ack register value after the ack.
    pub read_ack_after: u64,
}

/// What the guest found at `Params::dtb_gpa`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtbObservation {
    /// 1 when the FDT magic 0xd00dfeed (big-endian, Devicetree spec 5.2) was there.
    pub recognised: u32,
    /// The FDT header's totalsize (big-endian u32 at offset 4), if recognised.
    pub total_size: u32,
}

/// Where one step's code and data are, so that the host can name ELR_EL1 after them
/// instead of snapshotting raw addresses that move whenever the payload's code changes.
/// Each field is written before the instruction it names runs (an exception there abandons
/// the step); 0 when the step has no such instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepAddresses {
    /// The step's target address (a faulting instruction fetch has ELR = this).
    pub target: u64,
    /// The instruction that performs the access: the `ldr`, `str` or `blr` at EL1, the
    /// `ldr` or `str` EL0 runs, or the target itself for an EL0 fetch.
    pub access: u64,
    /// The instruction after the step's `ReadyForFault` doorbell store: where the vCPU
    /// resumes when the VMM injects at that exit.
    pub ready: u64,
    /// The `msr daifclr` that unmasks SError in the step.
    pub unmask: u64,
}

/// Guest progress, [`Report::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    /// Nothing written yet (the VMM zeroes the report).
    NotStarted = 0,
    /// Params accepted, MMU on.
    Running = 1,
    /// All steps done.
    Done = 2,
    /// Stopped on a fatal condition (see the doorbell's reason).
    Fatal = 3,
}

impl State {
    /// Decodes a wire code.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::NotStarted,
            1 => Self::Running,
            2 => Self::Done,
            3 => Self::Fatal,
            _ => return None,
        })
    }
}

/// Guest -> VMM, at mailbox offset [`crate::map::mailbox_offset::REPORT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// [`crate::REPORT_MAGIC`] once the guest has initialised the report.
    pub magic: u64,
    /// A [`State`] code.
    pub state: u32,
    /// The step in progress (or the number of steps once done).
    pub step: u32,
    /// CNTFRQ_EL0.
    pub cntfrq: u64,
    /// ID_AA64PFR0_EL1 (RAS is bits 31:28).
    pub id_aa64pfr0: u64,
    /// CNTVCT_EL0 just before each step's access, after its ready handshake.
    pub counter_before: [u64; MAX_TARGETS],
    /// Exceptions taken so far (may exceed [`MAX_RECORDS`]; only that many are kept).
    pub exception_count: u32,
    /// Steps completed.
    pub steps_done: u32,
    /// The first [`MAX_RECORDS`] exceptions.
    pub records: [ExceptionRecord; MAX_RECORDS],
    /// The SError wait.
    pub serror: SerrorObservation,
    /// The ACPI walk.
    pub acpi: AcpiObservation,
    /// The DTB check.
    pub dtb: DtbObservation,
    /// Per step (the access steps, then the SError wait), its addresses.
    pub steps: [StepAddresses; MAX_TARGETS + 1],
}

// Layout pins: the offsets are the wire format both sides rely on.
const _: () = assert!(size_of::<Params>() == 88);
const _: () = assert!(size_of::<Handshake>() == 40);
const _: () = assert!(offset_of!(Params, targets) == 32);
const _: () = assert!(offset_of!(Params, rsdp_gpa) == 64);
const _: () = assert!(size_of::<RecordRead>() == 16 + CPER_COPY_MAX);
const _: () = assert!(size_of::<ExceptionRecord>() == 64 + 16 + CPER_COPY_MAX);
const _: () = assert!(offset_of!(ExceptionRecord, cper) == 64);
const _: () = assert!(size_of::<SerrorObservation>() == 24);
const _: () = assert!(size_of::<AcpiObservation>() == 64);
const _: () = assert!(size_of::<DtbObservation>() == 8);
const _: () = assert!(offset_of!(Report, counter_before) == 32);
const _: () = assert!(offset_of!(Report, records) == 72);
const RECORDS_END: usize = 72 + size_of::<ExceptionRecord>() * MAX_RECORDS;
const _: () = assert!(offset_of!(Report, serror) == RECORDS_END);
const _: () = assert!(offset_of!(Report, acpi) == RECORDS_END + 24);
const _: () = assert!(size_of::<StepAddresses>() == 32);
const _: () = assert!(offset_of!(Report, steps) == RECORDS_END + 24 + 64 + 8);
const _: () = assert!(size_of::<Report>() == RECORDS_END + 24 + 64 + 8 + 32 * (MAX_TARGETS + 1));
// The mailbox gives Params one page and Report two.
const _: () = assert!(size_of::<Params>() <= 0x1000 && size_of::<Report>() <= 0x2000);

/// Byte views for the padding-free records above.
macro_rules! plain_bytes {
    ($($t:ty),*) => {$(
        impl $t {
            /// The record's bytes, as they sit in guest memory.
            pub fn as_bytes(&self) -> &[u8] {
                // SAFETY: the type is repr(C), made only of integers and integer arrays,
                // with no padding (its size equals the sum of its fields, asserted above),
                // so all size_of::<Self>() bytes are initialised.
                unsafe {
                    core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
                }
            }

            /// Reads a record from the start of `bytes`; `None` if `bytes` is too short.
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                if bytes.len() < size_of::<Self>() {
                    return None;
                }
                // SAFETY: the length was checked; every bit pattern is a valid value of an
                // all-integer repr(C) type; read_unaligned needs no alignment.
                Some(unsafe { bytes.as_ptr().cast::<Self>().read_unaligned() })
            }
        }
    )*};
}
plain_bytes!(Params, Report, Handshake);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_bytes_round_trip_and_start_with_the_magic() {
        let p = Params::new(Access::Store, 1, 0, &[0x8000_0000]);
        assert_eq!((p.target_count, p.targets), (1, [0x8000_0000, 0, 0, 0]));
        let bytes = p.as_bytes();
        assert_eq!(&bytes[..8], b"RASPARAM");
        assert_eq!(bytes[12], 2, "access is the u32 at offset 12");
        assert_eq!(Params::from_bytes(bytes), Some(p));
        assert_eq!(Params::from_bytes(&bytes[..87]), None);
    }

    #[test]
    fn report_decodes_a_record_at_its_documented_offset() {
        let mut bytes = [0u8; size_of::<Report>()];
        bytes[72..80].copy_from_slice(&0x200u64.to_le_bytes());
        bytes[80..88].copy_from_slice(&0x9600_0010u64.to_le_bytes());
        let r = Report::from_bytes(&bytes).unwrap();
        assert_eq!(r.records[0].vector_offset, 0x200);
        assert_eq!(r.records[0].esr, 0x9600_0010);
    }

    #[test]
    fn codes_decode_and_unknown_codes_are_none() {
        assert_eq!(Access::from_code(3), Some(Access::Ifetch));
        assert_eq!(Access::from_code(4), None);
        assert_eq!(State::from_code(3), Some(State::Fatal));
        assert_eq!(State::from_code(7), None);
    }
}
