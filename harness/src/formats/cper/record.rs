//! A whole error status block as a guest reads it: the Generic Error Status Block, its
//! Generic Error Data Entries with their sections, and the raw data after them.

use serde::Serialize;

use super::arm_processor::ArmProcessorSection;
use super::data_entry::{header_len, DataEntryHeader, DATA_ENTRY_LEN_OLD};
use super::guid::{Guid, SectionType};
use super::memory::{MemoryErrorSection, MEMORY_SECTION_LEN};
use super::status_block::{BlockStatus, ErrorStatusBlock, STATUS_BLOCK_LEN};
use super::wire::{hex_bytes, Error, Reader, Result};
use super::Severity;

/// The body of one data entry, chosen by the entry's section type.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Section {
    /// CPER_SEC_PLATFORM_MEM.
    PlatformMemory(MemoryErrorSection),
    /// CPER_SEC_PROC_ARM.
    ArmProcessor(ArmProcessorSection),
    /// Any other section type, kept as bytes.
    Other {
        /// The section type GUID.
        section_type: Guid,
        /// The section's bytes.
        #[serde(serialize_with = "hex_bytes")]
        bytes: Vec<u8>,
    },
}

impl Section {
    /// The section type that goes into the entry header.
    pub fn section_type(&self) -> SectionType {
        match self {
            Self::PlatformMemory(_) => SectionType::PlatformMemory,
            Self::ArmProcessor(_) => SectionType::ArmProcessor,
            Self::Other { section_type, .. } => SectionType::from(*section_type),
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::PlatformMemory(s) => s.encode().to_vec(),
            Self::ArmProcessor(s) => s.encode(),
            Self::Other { bytes, .. } => bytes.clone(),
        }
    }

    /// Size on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::PlatformMemory(_) => MEMORY_SECTION_LEN,
            Self::ArmProcessor(s) => s.encoded_len(),
            Self::Other { bytes, .. } => bytes.len(),
        }
    }
}

/// One Generic Error Data Entry with its section.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Entry {
    /// The entry header, as on the wire.
    pub header: DataEntryHeader,
    /// The section it describes.
    pub section: Section,
}

impl Entry {
    /// A revision 0x300 entry for `section`, its type and Error Data Length filled in.
    pub fn new(section: Section, error_severity: Severity, flags: u8) -> Self {
        let len = u32::try_from(section.encoded_len()).unwrap_or(u32::MAX);
        Self {
            header: DataEntryHeader::new(section.section_type(), error_severity, flags, len),
            section,
        }
    }

    /// Header plus section, in bytes.
    pub fn encoded_len(&self) -> usize {
        self.header.encoded_len() + self.section.encoded_len()
    }
}

/// A whole error status block.
///
/// [`Record::encode`] writes every header field as stored, lengths included, so a record
/// can be made inconsistent on purpose; [`Record::new`] and [`Entry::new`] compute them,
/// and [`Record::decode`] only returns records whose lengths agree with their bytes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Record {
    /// The Generic Error Status Block.
    pub status: ErrorStatusBlock,
    /// The entries, in order; together they are `status.data_length` bytes.
    pub entries: Vec<Entry>,
    /// Raw data (`status.raw_data_length` bytes), which this crate places right after the
    /// entries.
    #[serde(serialize_with = "hex_bytes")]
    pub raw_data: Vec<u8>,
}

impl Record {
    const DATA: &'static str = "Generic Error Status Block data";
    const RAW: &'static str = "Generic Error Status Block raw data";

    /// A record with these entries, no raw data, and Data Length computed.
    pub fn new(block_status: BlockStatus, error_severity: Severity, entries: Vec<Entry>) -> Self {
        let data_length: usize = entries.iter().map(Entry::encoded_len).sum();
        Self {
            status: ErrorStatusBlock {
                block_status,
                raw_data_offset: 0,
                raw_data_length: 0,
                data_length: u32::try_from(data_length).unwrap_or(u32::MAX),
                error_severity,
            },
            entries,
            raw_data: Vec::new(),
        }
    }

    /// Size on the wire.
    pub fn encoded_len(&self) -> usize {
        STATUS_BLOCK_LEN
            + self.entries.iter().map(Entry::encoded_len).sum::<usize>()
            + self.raw_data.len()
    }

    /// The wire bytes: status block, each entry header and section, raw data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.status.encode());
        for entry in &self.entries {
            out.extend_from_slice(&entry.header.encode());
            out.extend_from_slice(&entry.section.encode());
        }
        out.extend_from_slice(&self.raw_data);
        out
    }

    /// Decodes a record that fills `bytes` exactly.
    ///
    /// # Errors
    /// Everything [`Record::decode_prefix`] reports, and [`Error::TrailingBytes`] when
    /// bytes follow the record.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (record, used) = Self::decode_prefix(bytes)?;
        match bytes.len() - used {
            0 => Ok(record),
            count => Err(Error::TrailingBytes {
                structure: ErrorStatusBlock::NAME,
                offset: used,
                count,
            }),
        }
    }

    /// Decodes the record at the start of `bytes` (say, a whole error status block buffer
    /// whose tail is unused) and returns it with the number of bytes it spans.
    ///
    /// # Errors
    /// - [`Error::Truncated`] when the input ends before the lengths say the record does;
    /// - [`Error::BadDataLength`] when the entries do not fill Data Length exactly, or a
    ///   section's size disagrees with its Error Data Length;
    /// - [`Error::BadFieldValue`] when raw data does not start right after the entries;
    /// - the section decoders' errors, with offsets from the start of `bytes`.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize)> {
        let mut r = Reader::new(bytes);
        let status = ErrorStatusBlock::read(&mut r)?;
        let data_length = usize::try_from(status.data_length).unwrap_or(usize::MAX);
        let data = r.bytes(Self::DATA, data_length)?;
        let entries = decode_entries(data, &status)?;
        let raw_data = if status.raw_data_length == 0 {
            Vec::new()
        } else {
            let expected = STATUS_BLOCK_LEN + data_length;
            if usize::try_from(status.raw_data_offset).ok() != Some(expected) {
                return Err(Error::BadFieldValue {
                    structure: ErrorStatusBlock::NAME,
                    field: "raw_data_offset",
                    offset: 4,
                    value: status.raw_data_offset.into(),
                    expected: expected as u64,
                });
            }
            let len = usize::try_from(status.raw_data_length).unwrap_or(usize::MAX);
            r.bytes(Self::RAW, len)?.to_vec()
        };
        let record = Self {
            status,
            entries,
            raw_data,
        };
        Ok((record, r.pos()))
    }
}

/// Walks the data region the way Linux's cper_estatus_check does, decoding as it goes.
fn decode_entries(data: &[u8], status: &ErrorStatusBlock) -> Result<Vec<Entry>> {
    let overrun = |needed: usize| Error::BadDataLength {
        structure: ErrorStatusBlock::NAME,
        field: "data_length",
        offset: 12,
        declared: status.data_length.into(),
        actual: needed as u64,
    };
    let mut entries = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        // The revision at offset 20 of the header decides whether it is 64 or 72 bytes.
        let needed = match rest.get(20..22) {
            Some(&[lo, hi]) => header_len(u16::from_le_bytes([lo, hi])),
            _ => DATA_ENTRY_LEN_OLD,
        };
        if rest.len() < needed {
            return Err(overrun(at + needed));
        }
        let base = STATUS_BLOCK_LEN + at;
        let mut r = Reader::with_base(rest, base);
        let header = DataEntryHeader::read(&mut r)?;
        let declared = usize::try_from(header.error_data_length).unwrap_or(usize::MAX);
        let section_at = base + header.encoded_len();
        if r.remaining() < declared {
            return Err(overrun(at + header.encoded_len() + declared));
        }
        let bytes = r.bytes(DataEntryHeader::NAME, declared)?;
        let section = match header.section_type {
            SectionType::PlatformMemory => {
                if declared != MEMORY_SECTION_LEN {
                    return Err(Error::BadDataLength {
                        structure: DataEntryHeader::NAME,
                        field: "error_data_length",
                        offset: base + 24,
                        declared: header.error_data_length.into(),
                        actual: MEMORY_SECTION_LEN as u64,
                    });
                }
                let mut sr = Reader::with_base(bytes, section_at);
                Section::PlatformMemory(MemoryErrorSection::read(&mut sr)?)
            }
            SectionType::ArmProcessor => {
                Section::ArmProcessor(ArmProcessorSection::decode_at(bytes, section_at)?)
            }
            SectionType::Other(guid) => Section::Other {
                section_type: guid,
                bytes: bytes.to_vec(),
            },
        };
        at += header.encoded_len() + declared;
        entries.push(Entry { header, section });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cper::arm_processor::cache_error_section;
    use crate::formats::cper::arm_processor::tests::any_arm_section;
    use crate::formats::cper::data_entry::tests::any_header;
    use crate::formats::cper::data_entry::FLAG_PRIMARY;
    use crate::formats::cper::guid::{CPER_SEC_PLATFORM_MEM, CPER_SEC_PROC_ARM};
    use crate::formats::cper::memory::tests::any_memory_section;
    use crate::formats::cper::profile::{memory_error_record, Profile};
    use crate::formats::cper::testing::roundtrip_exact;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const ADDRESS: u64 = 0x4001_0000;

    #[test]
    fn json_prints_wide_values_as_hex_strings() {
        let record = memory_error_record(ADDRESS, Severity::Recoverable, Profile::Qemu);
        let json = serde_json::to_value(&record).expect("records serialise");
        let section = &json["entries"][0]["section"];
        assert_eq!(section["kind"], "platform_memory");
        assert_eq!(section["physical_address"], "0x0000000040010000");
        assert_eq!(section["validation_bits"], "0x0000000000004002");
        assert_eq!(section["error_type"], "unknown");
        assert_eq!(json["status"]["block_status"]["raw"], "0x00000001");
        assert_eq!(json["status"]["error_severity"], "recoverable");
        assert_eq!(
            json["entries"][0]["header"]["section_type"]["guid"],
            "A5BC1114-6F64-4EDE-B863-3E83ED7C83B1"
        );
    }

    #[test]
    fn decode_prefix_stops_at_the_record_end() {
        let mut block = memory_error_record(ADDRESS, Severity::Recoverable, Profile::Qemu).encode();
        block.resize(1024, 0); // QEMU's ACPI_GHES_MAX_RAW_DATA_LENGTH buffer
        let (record, used) = Record::decode_prefix(&block).expect("decodes");
        assert_eq!(used, 172);
        assert_eq!(record.entries.len(), 1);
        assert_eq!(
            Record::decode(&block),
            Err(Error::TrailingBytes {
                structure: "Generic Error Status Block",
                offset: 172,
                count: 852
            })
        );
    }

    #[test]
    fn decode_names_the_bad_length() {
        let good = memory_error_record(ADDRESS, Severity::Recoverable, Profile::Qemu).encode();

        // Data length one byte short of the memory section.
        let mut short = good.clone();
        short[12..16].copy_from_slice(&151u32.to_le_bytes());
        assert_eq!(
            Record::decode(&short[..171]),
            Err(Error::BadDataLength {
                structure: "Generic Error Status Block",
                field: "data_length",
                offset: 12,
                declared: 151,
                actual: 152,
            })
        );

        // A 73-byte (UEFI 2.1) memory section.
        let mut old = good.clone();
        old[12..16].copy_from_slice(&145u32.to_le_bytes());
        old[20 + 24..20 + 28].copy_from_slice(&73u32.to_le_bytes());
        assert_eq!(
            Record::decode(&old[..165]),
            Err(Error::BadDataLength {
                structure: "Generic Error Data Entry",
                field: "error_data_length",
                offset: 44,
                declared: 73,
                actual: 80,
            })
        );

        // Data length past the end of the input.
        assert_eq!(
            Record::decode(&good[..100]),
            Err(Error::Truncated {
                structure: "Generic Error Status Block data",
                offset: 20,
                needed: 152,
                available: 80,
            })
        );

        // Raw data that does not start right after the entries.
        let mut raw = good;
        raw[4..8].copy_from_slice(&200u32.to_le_bytes());
        raw[8..12].copy_from_slice(&4u32.to_le_bytes());
        raw.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            Record::decode(&raw),
            Err(Error::BadFieldValue {
                structure: "Generic Error Status Block",
                field: "raw_data_offset",
                offset: 4,
                value: 200,
                expected: 172,
            })
        );
        raw[4..8].copy_from_slice(&172u32.to_le_bytes());
        let record = roundtrip_exact(&raw, Record::decode, Record::encode);
        assert_eq!(record.raw_data, [1, 2, 3, 4]);
    }

    #[test]
    fn decodes_an_old_revision_entry_and_an_arm_section() {
        let arm = Section::ArmProcessor(cache_error_section(ADDRESS));
        let mut entry = Entry::new(arm, Severity::Recoverable, FLAG_PRIMARY);
        entry.header.revision = 0x0201;
        entry.header.timestamp = None;
        let other = Entry::new(
            Section::Other {
                section_type: Guid::new(0x1234_5678, 1, 2, [3; 8]),
                bytes: vec![9; 5],
            },
            Severity::Corrected,
            0,
        );
        let record = Record::new(BlockStatus(0x21), Severity::Recoverable, vec![entry, other]);
        assert_eq!(record.status.data_length, 64 + 99 + 72 + 5);
        let bytes = record.encode();
        assert_eq!(bytes[20..36], CPER_SEC_PROC_ARM.to_bytes());
        assert_eq!(
            roundtrip_exact(&bytes, Record::decode, Record::encode),
            record
        );
    }

    fn any_section() -> impl Strategy<Value = Section> {
        prop_oneof![
            any_memory_section().prop_map(Section::PlatformMemory),
            any_arm_section().prop_map(Section::ArmProcessor),
            (any::<[u8; 16]>(), vec(any::<u8>(), 0..40)).prop_filter_map(
                "known section type",
                |(g, bytes)| {
                    let guid = Guid::from_bytes(g);
                    (guid != CPER_SEC_PLATFORM_MEM && guid != CPER_SEC_PROC_ARM).then_some(
                        Section::Other {
                            section_type: guid,
                            bytes,
                        },
                    )
                }
            ),
        ]
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        (any_header(), any_section()).prop_map(|(mut header, section)| {
            header.section_type = section.section_type();
            header.error_data_length = u32::try_from(section.encoded_len()).unwrap_or(0);
            Entry { header, section }
        })
    }

    fn any_record() -> impl Strategy<Value = Record> {
        (
            any::<u32>(),
            any::<u32>(),
            vec(any_entry(), 0..4),
            vec(any::<u8>(), 0..16),
            any::<u32>(),
        )
            .prop_map(|(status, sev, entries, raw, stale_offset)| {
                let mut record = Record::new(BlockStatus(status), Severity::from(sev), entries);
                if raw.is_empty() {
                    // Without raw data the offset is not used and any value survives.
                    record.status.raw_data_offset = stale_offset;
                } else {
                    record.status.raw_data_offset = 20 + record.status.data_length;
                    record.status.raw_data_length = raw.len() as u32;
                    record.raw_data = raw;
                }
                record
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(record in any_record()) {
            let bytes = record.encode();
            prop_assert_eq!(bytes.len(), record.encoded_len());
            prop_assert_eq!(Record::decode(&bytes), Ok(record));
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..400)) {
            if let Ok(record) = Record::decode(&bytes) {
                prop_assert_eq!(record.encode(), bytes);
            }
        }

        /// Arbitrary bytes rarely get past the status block; damaging a valid record
        /// reaches the entry and section decoders too.
        #[test]
        fn decode_never_panics_on_damaged_records(
            record in any_record(),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = record.encode();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            match Record::decode(&bytes) {
                Ok(decoded) => prop_assert_eq!(decoded.encode(), bytes),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
