//! One test per response and per rejection, with the record that triggers it.

use super::ghes::CPER_ARM_CACHE_ERROR_BIT;
use super::*;
use crate::formats::cper::arm_processor::cache_error_section;
use crate::formats::cper::data_entry::FLAG_ERROR_THRESHOLD_EXCEEDED;
use crate::formats::cper::{
    memory_error_record, BlockStatus, Entry, Profile, Record, Section, FLAG_PRIMARY,
};
use crate::formats::cper::{Guid, CPER_SEC_PLATFORM_MEM};
use crate::testutil::snapshot_settings;
use proptest::prelude::*;

/// QEMU's error status block length (ACPI_GHES_MAX_RAW_DATA_LENGTH).
const BLOCK: u32 = 1024;
const ADDRESS: u64 = 0x4001_0000;
const EL0: Notification = Notification::Sea {
    from: Origin::LowerEl,
};
const EL1: Notification = Notification::Sea {
    from: Origin::SameEl,
};

fn guest(notification: Notification, kernel: Kernel) -> LinuxContext {
    LinuxContext {
        notification,
        kernel,
    }
}

/// The response to an SEA from EL0, which must not need more bytes.
fn sea(bytes: &[u8], block: u32, kernel: Kernel) -> LinuxResponse {
    linux_response(bytes, block, guest(EL0, kernel)).expect("complete record")
}

fn v6_1(bytes: &[u8]) -> LinuxResponse {
    sea(bytes, BLOCK, Kernel::V6_1)
}

fn v6_18(bytes: &[u8]) -> LinuxResponse {
    sea(bytes, BLOCK, Kernel::V6_18_2)
}

/// Asserts both kernels leave the SEA to `do_sea` for `reason`.
fn assert_unclaimed(bytes: &[u8], block: u32, reason: Rejection) {
    for kernel in [Kernel::V6_1, Kernel::V6_18_2] {
        let response = sea(bytes, block, kernel);
        assert_eq!(response, LinuxResponse::Unclaimed { reason }, "{kernel:?}");
        assert_eq!(response.sigbus(), Some(SigbusCode::BusObjerr));
    }
}

fn qemu_at(address: u64, severity: Severity) -> Vec<u8> {
    memory_error_record(address, severity, Profile::Qemu).encode()
}

fn qemu() -> Vec<u8> {
    qemu_at(ADDRESS, Severity::Recoverable)
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn handled(calls: &[(u64, MfFlags)], force_sigbus: bool) -> LinuxResponse {
    LinuxResponse::Handled {
        memory_failure: calls
            .iter()
            .map(|&(address, flags)| MemoryFailure { address, flags })
            .collect(),
        force_sigbus,
    }
}

fn record(entries: Vec<Entry>) -> Vec<u8> {
    Record::new(BlockStatus(0x1), Severity::Recoverable, entries).encode()
}

fn arm_entry(error_type: u8) -> Entry {
    let mut section = cache_error_section(ADDRESS);
    section.error_info[0].error_type = error_type;
    Entry::new(Section::ArmProcessor(section), Severity::Recoverable, 0)
}

fn other_entry() -> Entry {
    let other = Section::Other {
        section_type: Guid::new(1, 2, 3, [4; 8]),
        bytes: vec![0; 8],
    };
    Entry::new(other, Severity::Recoverable, FLAG_PRIMARY)
}

#[test]
fn el0_sea_with_a_good_record_recovers_the_page() {
    for profile in [Profile::Qemu, Profile::Strict] {
        let bytes = memory_error_record(ADDRESS, Severity::Recoverable, profile).encode();
        for block in [BLOCK, 172] {
            let ar = sea(&bytes, block, Kernel::V6_18_2);
            assert_eq!(ar, handled(&[(ADDRESS, MfFlags::ActionRequired)], false));
            assert_eq!(ar.sigbus(), Some(SigbusCode::BusMceerrAr), "{profile}");
            let ao = sea(&bytes, block, Kernel::V6_1);
            assert_eq!(ao, handled(&[(ADDRESS, MfFlags::ActionOptional)], false));
            assert_eq!(ao.sigbus(), Some(SigbusCode::BusMceerrAr), "{profile}");
        }
    }
}

#[test]
fn el1_sea_oopses_whatever_the_record() {
    let fatal = qemu_at(ADDRESS, Severity::Fatal);
    for bytes in [qemu(), fatal, vec![], vec![0xff; 7]] {
        for kernel in [Kernel::V6_1, Kernel::V6_18_2] {
            let response = linux_response(&bytes, BLOCK, guest(EL1, kernel));
            assert_eq!(response, Ok(LinuxResponse::Oops));
            assert_eq!(LinuxResponse::Oops.sigbus(), None);
        }
    }
}

#[test]
fn incomplete_is_the_callers_problem() {
    let context = guest(EL0, Kernel::V6_18_2);
    assert_eq!(
        linux_response(&qemu()[..10], BLOCK, context),
        Err(Incomplete {
            needed: 20,
            available: 10
        })
    );
    assert_eq!(
        linux_response(&qemu()[..100], BLOCK, context),
        Err(Incomplete {
            needed: 172,
            available: 100
        })
    );
}

#[test]
fn source_not_probed() {
    // No SEA source is registered, so nothing is read, not even the status block.
    let reason = Rejection::SourceNotProbed {
        error_block_length: 19,
    };
    assert_unclaimed(&qemu(), 19, reason);
    assert_unclaimed(&[], 19, reason);
}

#[test]
fn zero_block_status() {
    let mut b = qemu();
    put_u32(&mut b, 0, 0);
    assert_unclaimed(&b, BLOCK, Rejection::ZeroBlockStatus);
}

#[test]
fn truncated_block_comes_from_a_wrapped_u32() {
    // 20 + 0xffff_fff0 wraps to 4 in cper_estatus_len.
    let mut b = qemu();
    put_u32(&mut b, 12, 0xffff_fff0);
    assert_unclaimed(&b, BLOCK, Rejection::TruncatedBlock { len: 4 });
}

#[test]
fn block_overflow() {
    let overflow = |len, error_block_length| Rejection::BlockOverflow {
        len,
        error_block_length,
    };
    assert_unclaimed(&qemu(), 171, overflow(172, 171));
    // With raw data the length is raw offset + raw length.
    let mut b = qemu();
    put_u32(&mut b, 4, 172);
    put_u32(&mut b, 8, 900);
    assert_unclaimed(&b, BLOCK, overflow(1072, BLOCK));
}

#[test]
fn wrapped_raw_length_copies_less_than_the_entries() {
    // Raw data at 0xffff_ff00 passes the header check, and offset + length wraps to
    // 100: the kernel copies 100 bytes, then reads the address at 108.
    let mut b = qemu();
    put_u32(&mut b, 4, 0xffff_ff00);
    put_u32(&mut b, 8, 100u32.wrapping_sub(0xffff_ff00));
    let response = LinuxResponse::Unpredictable {
        at: 108,
        copied: 100,
    };
    assert_eq!(v6_1(&b), response);
    assert_eq!(v6_18(&b), response);
    assert_eq!(response.sigbus(), None);
}

#[test]
fn data_length_too_short() {
    let mut b = qemu();
    put_u32(&mut b, 12, 63);
    assert_unclaimed(&b, BLOCK, Rejection::DataLengthTooShort { data_length: 63 });
}

#[test]
fn raw_data_overlaps_entries() {
    let mut b = qemu();
    put_u32(&mut b, 4, 171);
    put_u32(&mut b, 8, 1);
    let reason = Rejection::RawDataOverlapsEntries {
        raw_data_offset: 171,
        data_end: 172,
    };
    assert_unclaimed(&b, BLOCK, reason);
}

#[test]
fn entry_header_overrun() {
    // Data length 152 + 70: a second "entry" of 70 bytes cannot hold a 72-byte header.
    let mut b = qemu();
    put_u32(&mut b, 12, 152 + 70);
    b.resize(172 + 70, 0);
    b[172 + 20..172 + 22].copy_from_slice(&0x300u16.to_le_bytes());
    let reason = Rejection::EntryHeaderOverrun {
        at: 172,
        header_len: 72,
        remaining: 70,
    };
    assert_unclaimed(&b, BLOCK, reason);
}

#[test]
fn entry_overrun() {
    // Error data length 81 in a 152-byte data region: 72 + 81 > 152.
    let mut b = qemu();
    put_u32(&mut b, 20 + 24, 81);
    let reason = Rejection::EntryOverrun {
        at: 20,
        record_size: 153,
        remaining: 152,
    };
    assert_unclaimed(&b, BLOCK, reason);
}

#[test]
fn record_size_wraps_as_int() {
    // Error Data Length 0xffff_fff8 is -8 as int: the entry is 72 - 8 = 64 bytes, so the
    // next one starts at 84, inside this one, and its Error Data Length is the low half
    // of the section's address, 24: 64 + 24 fills the 88 bytes left. The kernel takes
    // the record; a u64 sum would call it an overrun.
    let mut b = qemu_at(24, Severity::Recoverable);
    put_u32(&mut b, 20 + 24, 0xffff_fff8);
    assert_eq!(v6_18(&b), handled(&[(24, MfFlags::ActionRequired)], false));
    assert_eq!(v6_1(&b), handled(&[(24, MfFlags::ActionOptional)], false));
}

#[test]
fn zero_record_size_hangs() {
    // 72 + 0xffff_ffb8 wraps to 0: the walk never moves on.
    let mut b = qemu();
    put_u32(&mut b, 20 + 24, 0xffff_ffb8);
    assert_eq!(v6_1(&b), LinuxResponse::Hang { at: 20 });
    assert_eq!(v6_18(&b), LinuxResponse::Hang { at: 20 });
    assert_eq!(LinuxResponse::Hang { at: 20 }.sigbus(), None);
}

#[test]
fn record_size_from_2_gib_steps_backwards() {
    // Data Length 2^31 with the copy kept at 172 bytes by a wrapping raw length; the
    // entry's record size, 72 + 0x7fff_ffb8, is 2^31 as unsigned and INT_MIN as int, so
    // the next entry lies 2 GiB before the copy.
    let mut b = qemu();
    put_u32(&mut b, 12, 0x8000_0000);
    put_u32(&mut b, 4, 0x8000_0014);
    put_u32(&mut b, 8, 172u32.wrapping_sub(0x8000_0014));
    put_u32(&mut b, 20 + 24, 0x7fff_ffb8);
    let response = LinuxResponse::Unpredictable {
        at: 20 - (1 << 31) + 20,
        copied: 172,
    };
    assert_eq!(v6_18(&b), response);
}

#[test]
fn fatal_or_reserved_block_severity_panics() {
    let fatal = qemu_at(ADDRESS, Severity::Fatal);
    let panic = |severity| LinuxResponse::Panic {
        cause: PanicCause::Ghes { severity },
    };
    assert_eq!(v6_1(&fatal), panic(Severity::Fatal));
    assert_eq!(v6_18(&fatal), panic(Severity::Fatal));
    let mut reserved = qemu();
    put_u32(&mut reserved, 16, 7);
    assert_eq!(v6_18(&reserved), panic(Severity::Unknown(7)));
    assert_eq!(panic(Severity::Fatal).sigbus(), None);
    // The record is checked before the severity is looked at.
    let mut bad = fatal;
    put_u32(&mut bad, 20 + 24, 81);
    let reason = Rejection::EntryOverrun {
        at: 20,
        record_size: 153,
        remaining: 152,
    };
    assert_unclaimed(&bad, BLOCK, reason);
}

#[test]
fn no_memory_section_is_ignored_by_6_1_and_killed_by_6_18() {
    let other = record(vec![other_entry()]);
    let empty = record(vec![]);
    for bytes in [other, empty] {
        let ignored = v6_1(&bytes);
        assert_eq!(ignored, handled(&[], false));
        assert_eq!(ignored.sigbus(), None);
        let killed = v6_18(&bytes);
        assert_eq!(killed, handled(&[], true));
        assert_eq!(killed.sigbus(), Some(SigbusCode::SiKernel));
    }
}

#[test]
fn memory_section_is_read_past_its_length() {
    // An 8-byte section holding only Validation Bits (address valid): the kernel reads
    // the address at 16 all the same.
    let short = || {
        let bytes = vec![2, 0, 0, 0, 0, 0, 0, 0];
        let section = Section::Other {
            section_type: CPER_SEC_PLATFORM_MEM,
            bytes,
        };
        Entry::new(section, Severity::Recoverable, 0)
    };
    // Alone, the address lies past the 100-byte copy.
    let response = LinuxResponse::Unpredictable {
        at: 108,
        copied: 100,
    };
    assert_eq!(v6_18(&record(vec![short()])), response);
    // Followed by another entry, the address is that entry's GUID bytes 8..16.
    let followed = record(vec![short(), other_entry()]);
    let address = 0x0404_0404_0404_0404;
    assert_eq!(
        v6_18(&followed),
        handled(&[(address, MfFlags::ActionRequired)], false)
    );
}

#[test]
fn memory_address_not_valid() {
    // Validation bits 0x4000: error type only, as if the VMM forgot the address bit.
    let mut b = qemu();
    b[20 + 72] = 0x00;
    assert_eq!(v6_1(&b), handled(&[], false));
    assert_eq!(v6_18(&b), handled(&[], true));
}

#[test]
fn memory_error_not_actionable() {
    let corrected = qemu_at(ADDRESS, Severity::Corrected);
    assert_eq!(v6_1(&corrected), handled(&[], false));
    assert_eq!(v6_18(&corrected), handled(&[], true));
    // Corrected with Error Threshold Exceeded is soft-offlined, which counts as queued.
    let mut soft = corrected;
    soft[20 + 23] = FLAG_ERROR_THRESHOLD_EXCEEDED;
    let offlined = v6_18(&soft);
    assert_eq!(offlined, handled(&[(ADDRESS, MfFlags::SoftOffline)], false));
    assert_eq!(offlined.sigbus(), None);
    // A recoverable block with an informational section is only logged.
    let mut mixed = qemu();
    put_u32(&mut mixed, 20 + 16, 3);
    assert_eq!(v6_1(&mixed), handled(&[], false));
    assert_eq!(v6_18(&mixed), handled(&[], true));
}

#[test]
fn arm_cache_error_type_changed_meaning() {
    // Type 0 is a cache error for 6.1 and nothing for 6.18.2; type 2 (bit 1) the reverse.
    let zero = record(vec![arm_entry(0)]);
    assert_eq!(
        v6_1(&zero),
        handled(&[(ADDRESS, MfFlags::ActionOptional)], false)
    );
    assert_eq!(v6_18(&zero), handled(&[], true));
    let bit1 = record(vec![arm_entry(CPER_ARM_CACHE_ERROR_BIT)]);
    assert_eq!(v6_1(&bit1), handled(&[], false));
    assert_eq!(
        v6_18(&bit1),
        handled(&[(ADDRESS, MfFlags::ActionRequired)], false)
    );
}

#[test]
fn last_memory_or_arm_section_decides_the_kill() {
    // The memory section queues its page; the ARM TLB error after it queues nothing and
    // resets `queued`, so 6.18.2 also kills the task, and SI_KERNEL arrives first.
    let memory = Record::decode(&qemu()).expect("decodes").entries;
    let entries = memory.into_iter().chain([arm_entry(1 << 2)]).collect();
    let b = record(entries);
    let both = v6_18(&b);
    assert_eq!(both, handled(&[(ADDRESS, MfFlags::ActionRequired)], true));
    assert_eq!(both.sigbus(), Some(SigbusCode::SiKernel));
    assert_eq!(
        v6_1(&b),
        handled(&[(ADDRESS, MfFlags::ActionOptional)], false)
    );
}

/// The response through a GPIO-signal source (`ghes_notify_hed`).
fn hed(bytes: &[u8], kernel: Kernel) -> LinuxResponse {
    linux_response(bytes, BLOCK, guest(Notification::Hed, kernel)).expect("complete record")
}

#[test]
fn hed_source_handles_a_good_record_as_action_optional() {
    // No SEA, no sync: memory_failure() without MF_ACTION_REQUIRED on every kernel.
    for kernel in [Kernel::V6_1, Kernel::V6_18_2] {
        let response = hed(&qemu(), kernel);
        assert_eq!(
            response,
            handled(&[(ADDRESS, MfFlags::ActionOptional)], false)
        );
        assert_eq!(response.acknowledged(), Some(true));
        // Nothing is forced on anyone, even without a memory section.
        assert_eq!(
            hed(&record(vec![other_entry()]), kernel),
            handled(&[], false)
        );
    }
}

#[test]
fn hed_source_rejects_what_an_sea_leaves_unclaimed() {
    let mut overrun = qemu();
    put_u32(&mut overrun, 20 + 24, 81);
    let mut zero = qemu();
    put_u32(&mut zero, 0, 0);
    let mut short = qemu();
    put_u32(&mut short, 12, 63);
    for (bytes, warning, acknowledged) in [
        (overrun, Some("Failed to read error status block!"), true),
        (zero, None, false),
        (short, Some("Invalid CPER header!"), true),
    ] {
        let LinuxResponse::Unclaimed { reason } = v6_18(&bytes) else {
            panic!("an SEA leaves {bytes:02x?} unclaimed");
        };
        let response = hed(&bytes, Kernel::V6_18_2);
        assert_eq!(response, LinuxResponse::Rejected { reason });
        assert_eq!(reason.warning(), warning);
        assert_eq!(response.acknowledged(), Some(acknowledged));
        assert_eq!(response.sigbus(), None);
    }
    let fatal = qemu_at(ADDRESS, Severity::Fatal);
    let panic = hed(&fatal, Kernel::V6_1);
    assert_eq!(panic, v6_1(&fatal));
    assert_eq!(panic.acknowledged(), Some(true));
}

fn architected(aet: Aet, dfsc: u8) -> SErrorIss {
    SErrorIss::Architected {
        iesb: false,
        aet,
        ea: false,
        dfsc,
        other_iss: 0,
    }
}

#[test]
fn serror_never_reads_the_record() {
    let respond = |iss, ras| {
        let context = guest(Notification::SError { iss, ras }, Kernel::V6_18_2);
        linux_response(&[], BLOCK, context).expect("reads nothing")
    };
    let panic = |aet| LinuxResponse::Panic {
        cause: PanicCause::SError { aet },
    };
    for aet in [Aet::Ce, Aet::Ueo] {
        let iss = architected(aet, ESR_ELx_FSC_SERROR);
        assert_eq!(respond(iss, true), LinuxResponse::SErrorIgnored);
        // Without FEAT_RAS, or without the SError DFSC, nothing is containable.
        assert_eq!(respond(iss, false), panic(Aet::Uc));
        assert_eq!(respond(architected(aet, 0), true), panic(Aet::Uc));
    }
    for aet in [Aet::Ueu, Aet::Uer, Aet::Uc, Aet::Reserved(0b100)] {
        assert_eq!(
            respond(architected(aet, ESR_ELx_FSC_SERROR), true),
            panic(aet)
        );
    }
    // What KVM injects without a VMM-given ESR: IDS set.
    let kvm_default = SErrorIss::ImplementationDefined { syndrome: 0 };
    assert_eq!(respond(kvm_default, true), panic(Aet::Uc));
}

#[test]
fn snapshot_responses() {
    let contexts = [
        ("el0_sea_v6_1", guest(EL0, Kernel::V6_1)),
        ("el0_sea_v6_18_2", guest(EL0, Kernel::V6_18_2)),
        ("el1_sea_v6_18_2", guest(EL1, Kernel::V6_18_2)),
        ("hed_v6_18_2", guest(Notification::Hed, Kernel::V6_18_2)),
    ];
    let records = [
        ("qemu", qemu()),
        (
            "strict",
            memory_error_record(ADDRESS, Severity::Recoverable, Profile::Strict).encode(),
        ),
        ("no_memory_section", record(vec![other_entry()])),
        ("zero_block_status", vec![0; 20]),
    ];
    #[derive(Serialize)]
    struct Row {
        record: &'static str,
        context: &'static str,
        response: LinuxResponse,
        task_sigbus: Option<SigbusCode>,
    }
    let table: Vec<Row> = records
        .iter()
        .flat_map(|&(record, ref bytes)| {
            contexts.iter().map(move |&(context, guest)| {
                let response = linux_response(bytes, BLOCK, guest).expect("complete");
                let task_sigbus = response
                    .sigbus()
                    .filter(|_| guest.notification != Notification::Hed);
                Row {
                    record,
                    context,
                    response,
                    task_sigbus,
                }
            })
        })
        .collect();
    let json = serde_json::to_string_pretty(&table).expect("responses serialise");
    snapshot_settings("cper").bind(|| insta::assert_snapshot!("linux_responses", json));
}

fn any_context() -> impl Strategy<Value = LinuxContext> {
    let kernel = (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c)| Kernel {
        sync_force_kill: a,
        sync_action_required: b,
        arm_type_bitmask: c,
    });
    let sea = prop_oneof![Just(EL0), Just(EL1), Just(Notification::Hed)];
    (kernel, sea).prop_map(|(kernel, notification)| guest(notification, kernel))
}

proptest! {
    #[test]
    fn never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        block in 0u32..2048,
        context in any_context(),
    ) {
        if let Ok(LinuxResponse::Handled { .. }) = linux_response(&bytes, block, context) {
            // Handling needs a source, a status block, a non-zero status and a fit.
            prop_assert!(block >= 20 && bytes.len() >= 20 && bytes[..4] != [0; 4]);
        }
    }

    /// Damaged QEMU records reach the entry walk and the section handlers.
    #[test]
    fn never_panics_on_damaged_records(
        edits in proptest::collection::vec((0usize..172, any::<u8>()), 1..4),
        block in 0u32..400,
        context in any_context(),
    ) {
        let mut b = qemu();
        for (at, value) in edits {
            b[at] = value;
        }
        if let Ok(LinuxResponse::Handled { .. }) = linux_response(&b, block, context) {
            prop_assert!(block >= 20 && b[..4] != [0; 4]);
        }
    }
}
