//! What a Linux guest does when an exception tells it about an error and its firmware-first
//! error source (a HEST GHES/GHESv2 entry with notification type SEA) holds a record, so
//! that a harness can compare the prediction with what a real guest did.
//!
//! The path, in the kernel's order, each step citing the function it models:
//! - arch/arm64/mm/fault.c `do_sea`: only an SEA taken from EL0 is offered to APEI
//!   (`apei_claim_sea`, arch/arm64/kernel/acpi.c); one taken at EL1 goes to
//!   `arm64_notify_die` -> `die()` whatever the record says.
//! - arch/arm64/kernel/traps.c `do_serror`: an SError never reaches GHES; the ESR alone
//!   decides. Mainline has no SEI path either: `ghes_probe` rejects a HEST source of type
//!   SEI (9) as an "Unknown notification type".
//! - drivers/acpi/apei/ghes.c `ghes_notify_sea` -> `ghes_in_nmi_queue_one_entry`
//!   (`__ghes_peek_estatus`, `__ghes_check_estatus`, `__ghes_read_estatus`, then the panic
//!   on a fatal block), drivers/firmware/efi/cper.c `cper_estatus_check_header` and
//!   `cper_estatus_check`, with the kernel's u32, int and pointer arithmetic;
//! - then `ghes_proc_in_irq` -> `ghes_do_proc`, `ghes_handle_memory_failure`,
//!   `ghes_handle_arm_hw_error`, `ghes_do_memory_failure`.
//! - A GPIO-signal, GSIV or SCI source instead (QEMU's QMP source is GPIO): the ACPI
//!   Hardware Error Device's notification, `ghes_notify_hed` -> `ghes_proc`, in process
//!   context: the same checks and walk, but a rejected record is only warned about, a
//!   cached one is handled again (the cache only stops the printing), and nothing is
//!   synchronous: no MF_ACTION_REQUIRED, no forced SIGBUS.
//!
//! Read in v6.1 and v6.18.2; [`Kernel`] names the three changes between them a record can
//! show. What one record cannot show, and the model therefore assumes:
//! - CONFIG_ACPI_APEI_GHES, _SEA and _MEMORY_FAILURE are set and this is the only SEA
//!   source (`ghes_notify_sea` claims the SEA if any source read a record);
//! - every address passes `pfn_valid()` (`ghes_do_memory_failure` otherwise logs "Invalid
//!   address in generic error data" and queues nothing);
//! - no byte-identical record came in the last 10 s: `ghes_estatus_cached` then drops an
//!   SEA's record after the read, so the SEA is claimed and nothing is done (no
//!   memory_failure(), no kill). Two QEMU records for one page are byte-identical;
//! - the estatus pool has room for the copy (`-ENOMEM`: not claimed, not acknowledged);
//! - what memory_failure() then makes of the page, which depends on the page;
//! - `panic_on_oops` and the task's early-kill policy, which only change what follows.
//!
//! Where the kernel reads outside its copy of the record the answer is
//! [`LinuxResponse::Unpredictable`]: that is estatus pool memory the model does not have.
//! One such read is ignored: the revision of a final entry of fewer than 64 bytes, up to
//! 22 bytes past the copy, since either value rejects the entry.

mod ghes;

use serde::Serialize;

use super::wire::hex;
use super::Severity;
use crate::formats::esr::{Aet, ESR_ELx_FSC_SERROR, Origin, SErrorIss};
use ghes::ghes_notify;

/// The exception that notifies the guest, as the guest takes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notification {
    /// A synchronous external abort (data or instruction abort), from EL0
    /// ([`Origin::LowerEl`]) or EL1 ([`Origin::SameEl`]).
    Sea {
        /// Where the guest was.
        from: Origin,
    },
    /// An SError with this ISS.
    #[serde(rename = "serror")]
    SError {
        /// ESR_EL1.ISS as the guest reads it.
        iss: SErrorIss,
        /// The vCPU has FEAT_RAS (`ARM64_HAS_RAS_EXTN`, ID_AA64PFR0_EL1.RAS): without it
        /// `arm64_is_ras_serror` is false and every SError panics.
        ras: bool,
    },
    /// The ACPI Hardware Error Device's notification (PNP0C33, `ghes_notify_hed`), for a
    /// source of notification type GPIO-signal, GSIV or SCI. No exception: the record alone
    /// decides.
    Hed,
}

/// The guest kernel: the three changes between v6.1 and v6.18.2 that decide what a record
/// leads to. Stable branches carry some of them, so a kernel is named by what it has.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct Kernel {
    /// `ghes_do_proc` ends with `if (sync && !queued) force_sig(SIGBUS)`: "synchronous
    /// unrecoverable error". Upstream 79a5ae3c4c5e (v6.17 merge window); queued for 6.15.y
    /// in August 2025 and proposed for 6.6.y and 6.1.y; not in v6.12.19 or v6.13.7.
    pub sync_force_kill: bool,
    /// `ghes_handle_memory_failure` and `ghes_handle_arm_hw_error` pass MF_ACTION_REQUIRED
    /// for an SEA source (`flags = sync ? MF_ACTION_REQUIRED : 0`). Upstream a70297d22132
    /// (v6.8 merge window), in v6.12.19; backported to 5.15.149.
    pub sync_action_required: bool,
    /// `ghes_handle_arm_hw_error` reads the ARM error information Type as bits
    /// (`type & CPER_ARM_CACHE_ERROR`, BIT(1)) instead of comparing it with 0. Upstream
    /// 96b010536ee0 (v6.19 merge window), in v6.18.2; queued for 6.6.y and 6.1.y in
    /// January 2026; Debian's 6.12.117 has it (seen: docs/linux-guest.md).
    pub arm_type_bitmask: bool,
}

impl Kernel {
    /// v6.1 as tagged: none of the three.
    pub const V6_1: Self = Self {
        sync_force_kill: false,
        sync_action_required: false,
        arm_type_bitmask: false,
    };
    /// v6.18.2: all three.
    pub const V6_18_2: Self = Self {
        sync_force_kill: true,
        sync_action_required: true,
        arm_type_bitmask: true,
    };
}

/// How the guest learns of the error, and which kernel it runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct LinuxContext {
    /// The exception.
    pub notification: Notification,
    /// The kernel.
    pub kernel: Kernel,
}

/// What a Linux guest does with a record: each variant is something a harness can watch
/// for on the guest's console, in its task's signals, or in the GHESv2 Read Ack register.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum LinuxResponse {
    /// An SEA at EL1: `do_sea` -> `arm64_notify_die` -> `die()`, "Internal error:
    /// synchronous external abort". The record is never read or acknowledged. `die()`
    /// panics in interrupt context or with `panic_on_oops`, else kills the current task.
    Oops,
    /// The guest panics.
    Panic {
        /// Why.
        cause: PanicCause,
    },
    /// The vCPU never leaves `cper_estatus_check`: the entry at `at` (from the block's
    /// start) has a record size that wraps to 0, so the walk stays on it, in NMI context
    /// with the SEA lock held. The record is not acknowledged.
    Hang {
        /// Offset of the entry.
        at: i64,
    },
    /// `ghes_proc` (the [`Notification::Hed`] path) rejected the record with a warning
    /// and acknowledged it, except where [`Rejection`] says otherwise. Nothing else.
    Rejected {
        /// Why.
        reason: Rejection,
    },
    /// APEI did not claim the SEA, so `do_sea` goes on to `arm64_notify_die` with the
    /// abort's fault_info: SIGBUS with BUS_OBJERR and `si_addr` = FAR (0 with FnV), or
    /// SIGKILL for an abort on a translation table walk.
    Unclaimed {
        /// Why not.
        reason: Rejection,
    },
    /// APEI read and acknowledged the record (`ghes_clear_estatus`) and `ghes_do_proc`
    /// handled it. The task then returns to user space: after its memory_failure() calls
    /// (see [`MemoryFailure`]), with SIGBUS pending if `force_sigbus`, else with nothing
    /// pending, to run the faulting instruction again.
    Handled {
        /// The memory_failure() calls, in order.
        memory_failure: Vec<MemoryFailure>,
        /// `force_sig(SIGBUS)` (SI_KERNEL) in `ghes_do_proc`: an SEA whose last memory or
        /// ARM section queued nothing, on a kernel with [`Kernel::sync_force_kill`].
        force_sigbus: bool,
    },
    /// An SError the CPU can make progress from (AET CE or UEO): `do_serror` returns and
    /// the guest goes on. No record is read.
    SErrorIgnored,
    /// The kernel reads outside its copy of the record (the first `copied` bytes) at `at`
    /// (from the block's start), and what it does next depends on what is there.
    Unpredictable {
        /// Offset of the read.
        at: i64,
        /// Bytes `__ghes_read_estatus` copied: `cper_estatus_len`.
        copied: u32,
    },
}

impl LinuxResponse {
    /// Whether the kernel acknowledges the record: writes Read Ack (GHESv2) and zeroes
    /// Block Status (`ghes_clear_estatus`). None where the model cannot say.
    pub fn acknowledged(&self) -> Option<bool> {
        match self {
            Self::Handled { .. } => Some(true),
            Self::Panic { cause } => Some(matches!(cause, PanicCause::Ghes { .. })),
            Self::Rejected { reason } | Self::Unclaimed { reason } => Some(reason.acknowledged()),
            Self::Oops | Self::Hang { .. } | Self::SErrorIgnored => Some(false),
            Self::Unpredictable { .. } => None,
        }
    }

    /// The SIGBUS the task that took the SEA sees first (a [`Notification::Hed`]
    /// interrupts no task), assuming the abort was not on a
    /// translation table walk and memory_failure() recovers a page the task maps (as for
    /// the harness's guest payload).
    pub fn sigbus(&self) -> Option<SigbusCode> {
        match self {
            Self::Unclaimed { .. } => Some(SigbusCode::BusObjerr),
            // SIGBUS is not queued twice: memory_failure()'s later BUS_MCEERR_AR is dropped.
            Self::Handled {
                force_sigbus: true, ..
            } => Some(SigbusCode::SiKernel),
            Self::Handled { memory_failure, .. }
                if memory_failure
                    .iter()
                    .any(|m| m.flags != MfFlags::SoftOffline) =>
            {
                Some(SigbusCode::BusMceerrAr)
            }
            _ => None,
        }
    }
}

/// The si_code of a SIGBUS the task receives.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SigbusCode {
    /// BUS_OBJERR: `do_sea`'s fault_info for "synchronous external abort".
    BusObjerr,
    /// BUS_MCEERR_AR: memory_failure() with MF_ACTION_REQUIRED kills the task that consumed
    /// the poison (`kill_proc`), or, without it, the task's retry of the access faults on
    /// the unmapped page (`do_page_fault`, VM_FAULT_HWPOISON). An early-kill task gets
    /// BUS_MCEERR_AO first in the second case.
    BusMceerrAr,
    /// SI_KERNEL: `force_sig(SIGBUS)` in `ghes_do_proc`.
    SiKernel,
}

/// Why the guest panics.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum PanicCause {
    /// `ghes_in_nmi_queue_one_entry`: the block severity maps to GHES_SEV_PANIC (fatal, or
    /// a reserved value: `ghes_severity` "Unknown, go panic"), so `__ghes_panic`
    /// acknowledges the record and panics: v6.1 with "Fatal hardware error!", setting an
    /// unset `panic_timeout` to 30 s (the guest reboots), v6.18.2 with "GHES: Fatal
    /// hardware error", leaving it.
    Ghes {
        /// The block's Error Severity.
        severity: Severity,
    },
    /// `do_serror` -> `arm64_serror_panic`, "Asynchronous SError Interrupt".
    #[serde(rename = "serror")]
    SError {
        /// The severity `arm64_ras_serror_get_severity` reads: [`Aet::Uc`] also for a
        /// non-RAS SError (IDS set, or no FEAT_RAS) and for a DFSC other than
        /// `ESR_ELx_FSC_SERROR`.
        aet: Aet,
    },
}

/// One memory_failure() call GHES arranges.
///
/// With [`Kernel::sync_action_required`] the action-required call runs as task work before
/// the task returns to user space. Without it the call goes through memory_failure_queue();
/// `ghes_proc_in_irq` makes the task run the queue before it returns only when
/// `ghes_do_proc` reports something queued (its last memory or ARM section did), else a
/// workqueue runs it, racing the task.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct MemoryFailure {
    /// The section's Physical Address (or an ARM cache error's Physical Fault Address),
    /// whole: the page is `address >> PAGE_SHIFT` and the address mask is ignored.
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// The flags.
    pub flags: MfFlags,
}

/// The memory_failure() flags GHES passes (include/linux/mm.h MF_*).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MfFlags {
    /// MF_ACTION_REQUIRED: block and section recoverable, on [`Kernel::sync_action_required`].
    ActionRequired,
    /// 0: block and section recoverable, a [`Notification::Hed`] source or an older kernel.
    ActionOptional,
    /// MF_SOFT_OFFLINE: a corrected section with Error Threshold Exceeded. No signal.
    SoftOffline,
}

/// Why APEI rejects a record: `ghes_notify_sea` returns an error, `ghes_proc` warns. Except
/// where said, the block is acknowledged (`ghes_clear_estatus` zeroes Block Status and
/// writes Read Ack). Each variant names the warning the kernel prints, ratelimited.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, thiserror::Error)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Rejection {
    /// `ghes_probe`: an Error Status Block Length below the 20-byte status block, "Invalid
    /// error block length": there is no source. Nothing is read or acknowledged.
    #[error("error status block length {error_block_length} is below 20: no GHES source")]
    SourceNotProbed {
        /// The HEST entry's Error Status Block Length.
        error_block_length: u32,
    },
    /// `__ghes_peek_estatus`: Block Status 0 means no error (-ENOENT). No warning, not
    /// acknowledged.
    #[error("block status is 0: no error pending")]
    ZeroBlockStatus,
    /// `__ghes_check_estatus`: `cper_estatus_len` below 20, "Truncated error status
    /// block!". The length is a u32 sum, so only a wrapped one gets there.
    #[error("error status length {len} (u32, wrapped) is below 20: truncated block")]
    TruncatedBlock {
        /// `cper_estatus_len`.
        len: u32,
    },
    /// `__ghes_check_estatus`: `cper_estatus_len` (20 + Data Length, or Raw Data Offset +
    /// Raw Data Length with raw data, in u32) exceeds the Error Status Block Length,
    /// "Invalid error status block length!".
    #[error("error status length {len} exceeds the {error_block_length}-byte error status block")]
    BlockOverflow {
        /// `cper_estatus_len`.
        len: u32,
        /// The HEST entry's Error Status Block Length.
        error_block_length: u32,
    },
    /// `cper_estatus_check_header`: a non-zero Data Length below one 64-byte entry header,
    /// "Invalid CPER header!".
    #[error("data length {data_length} is below one 64-byte entry header")]
    DataLengthTooShort {
        /// Data Length.
        data_length: u32,
    },
    /// `cper_estatus_check_header`: raw data starts inside the entries (compared in
    /// size_t, so 20 + Data Length does not wrap).
    #[error("raw data offset {raw_data_offset} is inside the entries, which end at {data_end}")]
    RawDataOverlapsEntries {
        /// Raw Data Offset.
        raw_data_offset: u32,
        /// 20 + Data Length.
        data_end: u64,
    },
    /// `cper_estatus_check`: the entry at `at` needs a `header_len`-byte header
    /// (`acpi_hest_get_size`: 72 from revision 0x300, else 64) but only `remaining` bytes
    /// of Data Length are left. "Failed to read error status block!"
    #[error("entry at {at}: {header_len}-byte header, {remaining} bytes of data length left")]
    EntryHeaderOverrun {
        /// Offset of the entry from the block's start.
        at: i64,
        /// `acpi_hest_get_size`.
        header_len: u32,
        /// Data Length not yet walked.
        remaining: u32,
    },
    /// `cper_estatus_check`: header plus Error Data Length exceeds the Data Length left.
    /// `acpi_hest_get_record_size` adds them as int, so `record_size` is that sum wrapped,
    /// as the unsigned int the check compares.
    #[error("entry at {at}: record size {record_size}, {remaining} bytes of data length left")]
    EntryOverrun {
        /// Offset of the entry from the block's start.
        at: i64,
        /// `acpi_hest_get_record_size`, as unsigned int.
        record_size: u32,
        /// Data Length not yet walked.
        remaining: u32,
    },
}

impl Rejection {
    /// Every warning [`warning`](Self::warning) names.
    pub const WARNINGS: [&'static str; 5] = [
        "Invalid error block length",
        "Truncated error status block!",
        "Invalid error status block length!",
        "Invalid CPER header!",
        "Failed to read error status block!",
    ];

    /// The warning the kernel prints for it (after `[Firmware Warn]: GHES: `): in
    /// `__ghes_check_estatus`, `__ghes_read_estatus`, or once at probe for
    /// [`SourceNotProbed`](Self::SourceNotProbed). None for a zero Block Status.
    pub fn warning(&self) -> Option<&'static str> {
        let [probe, truncated, overflow, header, read] = Self::WARNINGS;
        match self {
            Self::SourceNotProbed { .. } => Some(probe),
            Self::ZeroBlockStatus => None,
            Self::TruncatedBlock { .. } => Some(truncated),
            Self::BlockOverflow { .. } => Some(overflow),
            Self::DataLengthTooShort { .. } | Self::RawDataOverlapsEntries { .. } => Some(header),
            Self::EntryHeaderOverrun { .. } | Self::EntryOverrun { .. } => Some(read),
        }
    }

    /// Whether `ghes_clear_estatus` acknowledges the block: it does once
    /// `__ghes_peek_estatus` found a Block Status.
    fn acknowledged(&self) -> bool {
        !matches!(self, Self::SourceNotProbed { .. } | Self::ZeroBlockStatus)
    }
}

/// Not a kernel behaviour: the caller gave fewer bytes than the kernel copies, so the model
/// cannot say what the rest holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("record is {available} bytes, the guest copies {needed}")]
pub struct Incomplete {
    /// Bytes the kernel copies: the status block, then `cper_estatus_len`.
    pub needed: u32,
    /// Bytes given.
    pub available: usize,
}

/// Predicts what a Linux guest does when `context.notification` tells it about an error
/// while its error source of that notification type, whose HEST entry gives an Error
/// Status Block Length of `error_block_length`, holds `record` (the bytes at the error
/// status address).
///
/// The module documentation lists what the prediction assumes.
///
/// # Errors
/// [`Incomplete`] when the kernel would copy more bytes than `record` has.
pub fn linux_response(
    record: &[u8],
    error_block_length: u32,
    context: LinuxContext,
) -> Result<LinuxResponse, Incomplete> {
    match context.notification {
        Notification::SError { iss, ras } => Ok(do_serror(iss, ras)),
        Notification::Sea {
            from: Origin::SameEl,
        } => Ok(LinuxResponse::Oops),
        Notification::Sea {
            from: Origin::LowerEl,
        } => ghes_notify(record, error_block_length, true, context.kernel),
        Notification::Hed => ghes_notify(record, error_block_length, false, context.kernel),
    }
}

/// arch/arm64/kernel/traps.c `do_serror`, `arm64_is_fatal_ras_serror`.
fn do_serror(iss: SErrorIss, ras: bool) -> LinuxResponse {
    // arm64_ras_serror_get_severity: anything but a RAS SError (IDS clear, FEAT_RAS) with
    // DFSC ESR_ELx_FSC_SERROR reads as uncontainable.
    let aet = match iss {
        SErrorIss::Architected { aet, dfsc, .. } if ras && dfsc == ESR_ELx_FSC_SERROR => aet,
        _ => Aet::Uc,
    };
    match aet {
        Aet::Ce | Aet::Ueo => LinuxResponse::SErrorIgnored,
        aet => LinuxResponse::Panic {
            cause: PanicCause::SError { aet },
        },
    }
}

#[cfg(test)]
mod tests;
