//! The SEA and HED paths through drivers/acpi/apei/ghes.c and drivers/firmware/efi/cper.c,
//! with the kernel's u32, int and pointer arithmetic.

use super::super::arm_processor::{info_valid, ARM_SECTION_HEADER_LEN};
use super::super::data_entry::{header_len, DATA_ENTRY_LEN_OLD, FLAG_ERROR_THRESHOLD_EXCEEDED};
use super::super::guid::{Guid, CPER_SEC_PLATFORM_MEM, CPER_SEC_PROC_ARM, GUID_LEN};
use super::super::memory::valid;
use super::super::status_block::STATUS_BLOCK_LEN;
use super::{
    Incomplete, Kernel, LinuxResponse, MemoryFailure, MfFlags, PanicCause, Rejection, Severity,
};

// struct acpi_hest_generic_data (include/acpi/actbl1.h): field offsets.
const ENTRY_SEVERITY: i64 = 16;
const ENTRY_REVISION: i64 = 20;
const ENTRY_FLAGS: i64 = 23;
const ENTRY_DATA_LENGTH: i64 = 24;
// struct cper_sec_mem_err (include/linux/cper.h): physical_addr after validation_bits and
// error_status.
const MEM_PHYSICAL_ADDR: i64 = 16;
// struct cper_sec_proc_arm: err_info_num; struct cper_arm_err_info (packed): length,
// validation_bits, type, physical_fault_addr.
const ARM_ERR_INFO_NUM: i64 = 4;
const ARM_INFO_LENGTH: i64 = 1;
const ARM_INFO_VALID: i64 = 2;
const ARM_INFO_TYPE: i64 = 4;
const ARM_INFO_PHYSICAL_ADDR: i64 = 24;
/// CPER_ARM_CACHE_ERROR as a type value (include/linux/cper.h until 96b010536ee0).
const CPER_ARM_CACHE_ERROR_VALUE: u8 = 0;
/// CPER_ARM_CACHE_ERROR as a type bit, BIT(1) (96b010536ee0, UEFI 2.9A).
pub(super) const CPER_ARM_CACHE_ERROR_BIT: u8 = 1 << 1;

/// GHES_SEV_* (include/acpi/ghes.h).
#[derive(Clone, Copy, PartialEq, Eq)]
enum GhesSev {
    No,
    Corrected,
    Recoverable,
    Panic,
}

/// ghes.c `ghes_severity`: informational, corrected, recoverable, and anything else
/// (fatal, reserved) GHES_SEV_PANIC.
fn ghes_severity(severity: u32) -> GhesSev {
    match Severity::from(severity) {
        Severity::Informational => GhesSev::No,
        Severity::Corrected => GhesSev::Corrected,
        Severity::Recoverable => GhesSev::Recoverable,
        Severity::Fatal | Severity::Unknown(_) => GhesSev::Panic,
    }
}

/// The kernel's copy of the record, read at offsets from its start; a read outside it
/// ends the prediction.
struct Estatus<'a>(&'a [u8]);

impl Estatus<'_> {
    /// Its length: at most `cper_estatus_len`, a u32.
    fn len(&self) -> i64 {
        self.0.len() as i64
    }

    /// The answer for a read at `at` outside the copy.
    fn outside(&self, at: i64) -> LinuxResponse {
        LinuxResponse::Unpredictable {
            at,
            copied: self.0.len() as u32,
        }
    }

    fn bytes<const N: usize>(&self, at: i64) -> Result<[u8; N], LinuxResponse> {
        usize::try_from(at)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(N)?))
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| self.outside(at))
    }

    fn u8(&self, at: i64) -> Result<u8, LinuxResponse> {
        self.bytes::<1>(at).map(|[b]| b)
    }

    fn u16(&self, at: i64) -> Result<u16, LinuxResponse> {
        self.bytes(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: i64) -> Result<u32, LinuxResponse> {
        self.bytes(at).map(u32::from_le_bytes)
    }

    fn u64(&self, at: i64) -> Result<u64, LinuxResponse> {
        self.bytes(at).map(u64::from_le_bytes)
    }
}

/// What a rejected record leads to: an SEA (`sync`) goes on unclaimed, a HED notification
/// only warns.
fn rejection(sync: bool) -> fn(Rejection) -> LinuxResponse {
    if sync {
        |reason| LinuxResponse::Unclaimed { reason }
    } else {
        |reason| LinuxResponse::Rejected { reason }
    }
}

/// One source's record: `sync` for an SEA source, ghes.c `ghes_notify_sea` then
/// `ghes_proc_in_irq`; else a GPIO-signal, GSIV or SCI source, `ghes_notify_hed` then
/// `ghes_proc`.
pub(super) fn ghes_notify(
    record: &[u8],
    error_block_length: u32,
    sync: bool,
    kernel: Kernel,
) -> Result<LinuxResponse, Incomplete> {
    Ok(match ghes_read_estatus(record, error_block_length)? {
        Err(reason) => rejection(sync)(reason),
        Ok(read) => handle(read, sync, kernel),
    })
}

/// The record as `ghes_read_estatus` leaves it: the kernel's copy, Data Length and the
/// block's Error Severity.
struct Read<'a> {
    copy: Estatus<'a>,
    data_length: u32,
    severity: u32,
}

/// ghes.c `ghes_read_estatus`: `__ghes_peek_estatus`, `__ghes_check_estatus` (with
/// cper.c `cper_estatus_check_header`), then the copy `__ghes_read_estatus` makes, before
/// its `cper_estatus_check`.
fn ghes_read_estatus(
    record: &[u8],
    error_block_length: u32,
) -> Result<Result<Read<'_>, Rejection>, Incomplete> {
    if (error_block_length as usize) < STATUS_BLOCK_LEN {
        return Ok(Err(Rejection::SourceNotProbed { error_block_length }));
    }
    let incomplete = |needed: u32| Incomplete {
        needed,
        available: record.len(),
    };
    // __ghes_peek_estatus copies the status block.
    let header = Estatus(
        record
            .get(..STATUS_BLOCK_LEN)
            .ok_or(incomplete(STATUS_BLOCK_LEN as u32))?,
    );
    let field = |at| header.u32(at).unwrap_or_default();
    let (block_status, raw_data_offset, raw_data_length, data_length, severity) =
        (field(0), field(4), field(8), field(12), field(16));
    if block_status == 0 {
        return Ok(Err(Rejection::ZeroBlockStatus));
    }

    // __ghes_check_estatus, with cper_estatus_len's u32 sums.
    let len = if raw_data_length != 0 {
        raw_data_offset.wrapping_add(raw_data_length)
    } else {
        (STATUS_BLOCK_LEN as u32).wrapping_add(data_length)
    };
    let rejection = if (len as usize) < STATUS_BLOCK_LEN {
        Some(Rejection::TruncatedBlock { len })
    } else if len > error_block_length {
        Some(Rejection::BlockOverflow {
            len,
            error_block_length,
        })
    } else if data_length != 0 && (data_length as usize) < DATA_ENTRY_LEN_OLD {
        // cper_estatus_check_header: sizeof(struct acpi_hest_generic_data) is 64.
        Some(Rejection::DataLengthTooShort { data_length })
    } else if raw_data_length != 0
        && u64::from(raw_data_offset) < STATUS_BLOCK_LEN as u64 + u64::from(data_length)
    {
        Some(Rejection::RawDataOverlapsEntries {
            raw_data_offset,
            data_end: STATUS_BLOCK_LEN as u64 + u64::from(data_length),
        })
    } else {
        None
    };
    if let Some(reason) = rejection {
        return Ok(Err(reason));
    }
    // __ghes_read_estatus copies `len` bytes.
    let copy = Estatus(record.get(..len as usize).ok_or(incomplete(len))?);
    Ok(Ok(Read {
        copy,
        data_length,
        severity,
    }))
}

/// A read record: `cper_estatus_check` walks it, a fatal block panics (in
/// `ghes_in_nmi_queue_one_entry` for an SEA, `ghes_proc` otherwise, both once the record
/// is read), else `ghes_do_proc` handles it, `sync` for an SEA source.
fn handle(read: Read, sync: bool, kernel: Kernel) -> LinuxResponse {
    let Read {
        copy,
        data_length,
        severity,
    } = read;
    let verdict = cper_estatus_check(&copy, data_length, rejection(sync)).and_then(|entries| {
        if ghes_severity(severity) == GhesSev::Panic {
            return Ok(LinuxResponse::Panic {
                cause: PanicCause::Ghes {
                    severity: Severity::from(severity),
                },
            });
        }
        ghes_do_proc(&copy, &entries, ghes_severity(severity), sync, kernel)
    });
    verdict.unwrap_or_else(|stop| stop)
}

/// One Generic Error Data Entry the walk found: its offset and header size.
struct EntryAt {
    at: i64,
    header: u32,
}

/// cper.c `cper_estatus_check` (after `cper_estatus_check_header`): walks the entries with
/// `apei_estatus_for_each_section`, returning the entries `ghes_do_proc` will walk again.
/// `reject` makes the response to a failed check.
fn cper_estatus_check(
    copy: &Estatus,
    data_length: u32,
    reject: fn(Rejection) -> LinuxResponse,
) -> Result<Vec<EntryAt>, LinuxResponse> {
    let mut entries = Vec::new();
    // cper_estatus_check's unsigned int data_len.
    let mut data_len = data_length;
    // The loop's `(void *)section - (void *)(estatus + 1)`: a ptrdiff_t, compared with the
    // u32 Data Length as a signed long.
    let mut offset: i64 = 0;
    while offset < i64::from(data_length) {
        let at = STATUS_BLOCK_LEN as i64 + offset;
        // acpi_hest_get_size reads the revision: 72 bytes from 0x300, else 64. Below 64
        // bytes left either size overruns, so the value only matters from 64 on; the read
        // itself, for an entry starting in the copy, stays within 22 bytes past it.
        let header_len = if data_len >= DATA_ENTRY_LEN_OLD as u32 {
            header_len(copy.u16(at + ENTRY_REVISION)?) as u32
        } else if (-ENTRY_REVISION..=copy.len()).contains(&at) {
            DATA_ENTRY_LEN_OLD as u32
        } else {
            return Err(copy.outside(at + ENTRY_REVISION));
        };
        if header_len > data_len {
            return Err(reject(Rejection::EntryHeaderOverrun {
                at,
                header_len,
                remaining: data_len,
            }));
        }
        // acpi_hest_get_record_size: int + int, wrapping (the kernel builds with
        // -fno-strict-overflow); record_size is its unsigned int.
        let record_int = (header_len as i32).wrapping_add(copy.u32(at + ENTRY_DATA_LENGTH)? as i32);
        let record_size = record_int as u32;
        if record_size > data_len {
            return Err(reject(Rejection::EntryOverrun {
                at,
                record_size,
                remaining: data_len,
            }));
        }
        if record_size == 0 {
            return Err(LinuxResponse::Hang { at });
        }
        data_len -= record_size;
        entries.push(EntryAt {
            at,
            header: header_len,
        });
        // acpi_hest_get_next adds the int: from 2^31 on, a step goes backwards.
        offset += i64::from(record_int);
    }
    Ok(entries)
}

/// ghes.c `ghes_do_proc`, `sync` for an SEA source (`is_hest_sync_notify`).
fn ghes_do_proc(
    copy: &Estatus,
    entries: &[EntryAt],
    sev: GhesSev,
    sync: bool,
    kernel: Kernel,
) -> Result<LinuxResponse, LinuxResponse> {
    let mut memory_failure = Vec::new();
    // Each memory or ARM section overwrites `queued`: the last one decides.
    let mut queued = false;
    for entry in entries {
        let section_type = Guid::from_bytes(copy.bytes::<GUID_LEN>(entry.at)?);
        let sec_sev = ghes_severity(copy.u32(entry.at + ENTRY_SEVERITY)?);
        // acpi_hest_get_payload: right after the header.
        let payload = entry.at + i64::from(entry.header);
        if section_type == CPER_SEC_PLATFORM_MEM {
            let flags = copy.u8(entry.at + ENTRY_FLAGS)?;
            let call = memory_section(copy, payload, flags, (sev, sec_sev), sync, kernel)?;
            queued = call.is_some();
            memory_failure.extend(call);
        } else if section_type == CPER_SEC_PROC_ARM {
            let calls = arm_section(copy, payload, (sev, sec_sev), sync, kernel)?;
            queued = !calls.is_empty();
            memory_failure.extend(calls);
        }
        // Other sections (PCIe AER, CXL, vendor) queue no memory_failure().
    }
    Ok(LinuxResponse::Handled {
        memory_failure,
        force_sigbus: sync && kernel.sync_force_kill && !queued,
    })
}

/// The MF flags for a recoverable block and section (`ghes_handle_memory_failure`,
/// `ghes_handle_arm_hw_error`).
fn recoverable_flags(sync: bool, kernel: Kernel) -> MfFlags {
    if sync && kernel.sync_action_required {
        MfFlags::ActionRequired
    } else {
        MfFlags::ActionOptional
    }
}

/// ghes.c `ghes_handle_memory_failure`. It reads Validation Bits and Physical Address at
/// their offsets whatever the section's Error Data Length says.
fn memory_section(
    copy: &Estatus,
    payload: i64,
    entry_flags: u8,
    (sev, sec_sev): (GhesSev, GhesSev),
    sync: bool,
    kernel: Kernel,
) -> Result<Option<MemoryFailure>, LinuxResponse> {
    if copy.u64(payload)? & valid::PHYSICAL_ADDRESS == 0 {
        return Ok(None);
    }
    let flags = if sev == GhesSev::Recoverable && sec_sev == GhesSev::Recoverable {
        recoverable_flags(sync, kernel)
    } else if sec_sev == GhesSev::Corrected && entry_flags & FLAG_ERROR_THRESHOLD_EXCEEDED != 0 {
        MfFlags::SoftOffline
    } else {
        return Ok(None);
    };
    let address = copy.u64(payload + MEM_PHYSICAL_ADDR)?;
    Ok(Some(MemoryFailure { address, flags }))
}

/// ghes.c `ghes_handle_arm_hw_error`: each cache error with a physical address, stepping
/// by each error information's own Length.
fn arm_section(
    copy: &Estatus,
    payload: i64,
    (sev, sec_sev): (GhesSev, GhesSev),
    sync: bool,
    kernel: Kernel,
) -> Result<Vec<MemoryFailure>, LinuxResponse> {
    let mut calls = Vec::new();
    if sev != GhesSev::Recoverable || sec_sev != GhesSev::Recoverable {
        return Ok(calls);
    }
    let mut info = payload + ARM_SECTION_HEADER_LEN as i64;
    for _ in 0..copy.u16(payload + ARM_ERR_INFO_NUM)? {
        let error_type = copy.u8(info + ARM_INFO_TYPE)?;
        let is_cache = if kernel.arm_type_bitmask {
            error_type & CPER_ARM_CACHE_ERROR_BIT != 0
        } else {
            error_type == CPER_ARM_CACHE_ERROR_VALUE
        };
        let has_pa = copy.u16(info + ARM_INFO_VALID)? & info_valid::PHYSICAL_FAULT_ADDRESS != 0;
        if is_cache && has_pa {
            calls.push(MemoryFailure {
                address: copy.u64(info + ARM_INFO_PHYSICAL_ADDR)?,
                flags: recoverable_flags(sync, kernel),
            });
        }
        info += i64::from(copy.u8(info + ARM_INFO_LENGTH)?);
    }
    Ok(calls)
}
