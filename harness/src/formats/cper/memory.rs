//! Platform Memory Error section (UEFI 2.10 N.2.5, table N-32 in 2.10 numbering; Linux
//! `struct cper_sec_mem_err`, the UEFI >= 2.3 layout).

use serde::{Serialize, Serializer};

use super::wire::{hex, Reader, Result};

/// Size of the section (UEFI 2.3+; QEMU `ACPI_GHES_MEM_CPER_LENGTH`).
pub const MEMORY_SECTION_LEN: usize = 80;
const _: () = assert!(MEMORY_SECTION_LEN == 4 * 8 + 8 * 2 + 3 * 8 + 1 + 1 + 3 * 2);
/// Where Physical Address sits in the section: after Validation Bits and Error Status, a
/// u64 each (UEFI 2.10 Table N-32).
pub(crate) const PHYSICAL_ADDRESS_AT: usize = 8 + 8;
/// Where Physical Address Mask sits: right after Physical Address (UEFI 2.10 Table N-32).
pub(crate) const PHYSICAL_ADDRESS_MASK_AT: usize = PHYSICAL_ADDRESS_AT + 8;

/// Validation Bits of the section (UEFI N.2.5; `CPER_MEM_VALID_*` in include/linux/cper.h).
pub mod valid {
    /// Bit 0: Error Status.
    pub const ERROR_STATUS: u64 = 1 << 0;
    /// Bit 1: Physical Address. Linux acts on the section only with this bit.
    pub const PHYSICAL_ADDRESS: u64 = 1 << 1;
    /// Bit 2: Physical Address Mask.
    pub const PHYSICAL_ADDRESS_MASK: u64 = 1 << 2;
    /// Bit 3: Node.
    pub const NODE: u64 = 1 << 3;
    /// Bit 4: Card.
    pub const CARD: u64 = 1 << 4;
    /// Bit 5: Module.
    pub const MODULE: u64 = 1 << 5;
    /// Bit 6: Bank.
    pub const BANK: u64 = 1 << 6;
    /// Bit 7: Device.
    pub const DEVICE: u64 = 1 << 7;
    /// Bit 8: Row.
    pub const ROW: u64 = 1 << 8;
    /// Bit 9: Column.
    pub const COLUMN: u64 = 1 << 9;
    /// Bit 10: Bit Position.
    pub const BIT_POSITION: u64 = 1 << 10;
    /// Bit 11: Platform Requestor Id.
    pub const REQUESTOR_ID: u64 = 1 << 11;
    /// Bit 12: Platform Responder Id.
    pub const RESPONDER_ID: u64 = 1 << 12;
    /// Bit 13: Memory Platform Target.
    pub const TARGET_ID: u64 = 1 << 13;
    /// Bit 14: Memory Error Type.
    pub const ERROR_TYPE: u64 = 1 << 14;
    /// Bit 15: Rank Number.
    pub const RANK_NUMBER: u64 = 1 << 15;
    /// Bit 16: Card Handle.
    pub const CARD_HANDLE: u64 = 1 << 16;
    /// Bit 17: Module Handle.
    pub const MODULE_HANDLE: u64 = 1 << 17;
    /// Bit 18: Extended Row bits 16 and 17 (in `extended` bits 1:0).
    pub const EXTENDED_ROW: u64 = 1 << 18;
    /// Bit 19: Bank Group (`bank` bits 15:8).
    pub const BANK_GROUP: u64 = 1 << 19;
    /// Bit 20: Bank Address (`bank` bits 7:0).
    pub const BANK_ADDRESS: u64 = 1 << 20;
    /// Bit 21: Chip Identification (`extended` bits 7:5).
    pub const CHIP_ID: u64 = 1 << 21;
}

/// Memory Error Type (UEFI N.2.5, "Memory Error Type"; the kernel's
/// `cper_mem_err_type_strs`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemoryErrorType {
    /// 0: Unknown. The spec's own word, so the catch-all is [`Self::Reserved`].
    Unknown,
    /// 1: No error.
    NoError,
    /// 2: Single-bit ECC.
    SingleBitEcc,
    /// 3: Multi-bit ECC.
    MultiBitEcc,
    /// 4: Single-symbol ChipKill ECC.
    SingleSymbolChipKillEcc,
    /// 5: Multi-symbol ChipKill ECC.
    MultiSymbolChipKillEcc,
    /// 6: Master abort.
    MasterAbort,
    /// 7: Target abort.
    TargetAbort,
    /// 8: Parity Error.
    ParityError,
    /// 9: Watchdog timeout.
    WatchdogTimeout,
    /// 10: Invalid address.
    InvalidAddress,
    /// 11: Mirror Broken.
    MirrorBroken,
    /// 12: Memory Sparing.
    MemorySparing,
    /// 13: Scrub corrected error.
    ScrubCorrectedError,
    /// 14: Scrub uncorrected error.
    ScrubUncorrectedError,
    /// 15: Physical Memory Map-out event.
    PhysicalMemoryMapOutEvent,
    /// 16-255: reserved, kept as data.
    Reserved(u8),
}

impl MemoryErrorType {
    const NAMED: [(Self, &'static str); 16] = [
        (Self::Unknown, "unknown"),
        (Self::NoError, "no error"),
        (Self::SingleBitEcc, "single-bit ECC"),
        (Self::MultiBitEcc, "multi-bit ECC"),
        (Self::SingleSymbolChipKillEcc, "single-symbol ChipKill ECC"),
        (Self::MultiSymbolChipKillEcc, "multi-symbol ChipKill ECC"),
        (Self::MasterAbort, "master abort"),
        (Self::TargetAbort, "target abort"),
        (Self::ParityError, "parity error"),
        (Self::WatchdogTimeout, "watchdog timeout"),
        (Self::InvalidAddress, "invalid address"),
        (Self::MirrorBroken, "mirror broken"),
        (Self::MemorySparing, "memory sparing"),
        (Self::ScrubCorrectedError, "scrub corrected error"),
        (Self::ScrubUncorrectedError, "scrub uncorrected error"),
        (
            Self::PhysicalMemoryMapOutEvent,
            "physical memory map-out event",
        ),
    ];

    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Self::Reserved(v) => v,
            known => Self::NAMED
                .iter()
                .position(|(t, _)| *t == known)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(0),
        }
    }

    /// The spec's words, `None` when reserved.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, name)| *name)
    }
}

impl From<u8> for MemoryErrorType {
    fn from(v: u8) -> Self {
        Self::NAMED
            .get(usize::from(v))
            .map_or(Self::Reserved(v), |(t, _)| *t)
    }
}

impl Serialize for MemoryErrorType {
    /// The spec words, or `"reserved 0x.."`.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => serializer.serialize_str(name),
            None => serializer.collect_str(&format_args!("reserved {:#04x}", self.code())),
        }
    }
}

/// The Platform Memory Error section, every field, in wire order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct MemoryErrorSection {
    /// Offset 0: Validation Bits ([`valid`]).
    #[serde(serialize_with = "hex")]
    pub validation_bits: u64,
    /// Offset 8: Error Status (UEFI N.2.6 Error Status fields).
    #[serde(serialize_with = "hex")]
    pub error_status: u64,
    /// Offset 16: Physical Address.
    #[serde(serialize_with = "hex")]
    pub physical_address: u64,
    /// Offset 24: Physical Address Mask: which address bits are valid.
    #[serde(serialize_with = "hex")]
    pub physical_address_mask: u64,
    /// Offset 32: Node.
    pub node: u16,
    /// Offset 34: Card.
    pub card: u16,
    /// Offset 36: Module.
    pub module: u16,
    /// Offset 38: Bank (bank group 15:8 and bank address 7:0 when those bits are valid).
    pub bank: u16,
    /// Offset 40: Device.
    pub device: u16,
    /// Offset 42: Row (bits 15:0).
    pub row: u16,
    /// Offset 44: Column.
    pub column: u16,
    /// Offset 46: Bit Position.
    pub bit_position: u16,
    /// Offset 48: Requestor Id.
    #[serde(serialize_with = "hex")]
    pub requestor_id: u64,
    /// Offset 56: Responder Id.
    #[serde(serialize_with = "hex")]
    pub responder_id: u64,
    /// Offset 64: Target Id.
    #[serde(serialize_with = "hex")]
    pub target_id: u64,
    /// Offset 72: Memory Error Type.
    pub error_type: MemoryErrorType,
    /// Offset 73: Extended: row bits 17:16 in bits 1:0, chip id in bits 7:5.
    #[serde(serialize_with = "hex")]
    pub extended: u8,
    /// Offset 74: Rank Number.
    pub rank: u16,
    /// Offset 76: Card Handle (SMBIOS type 16 handle; "mem_array_handle" in Linux).
    pub card_handle: u16,
    /// Offset 78: Module Handle (SMBIOS type 17 handle; "mem_dev_handle" in Linux).
    pub module_handle: u16,
}

impl MemoryErrorSection {
    pub(crate) const NAME: &'static str = "Platform Memory Error section";

    /// A section with only a physical address and an error type, both marked valid, every
    /// other field zero: QEMU's `acpi_ghes_build_append_mem_cper` with `error_type` 0.
    pub fn with_address(physical_address: u64, error_type: MemoryErrorType) -> Self {
        Self {
            validation_bits: valid::PHYSICAL_ADDRESS | valid::ERROR_TYPE,
            error_status: 0,
            physical_address,
            physical_address_mask: 0,
            node: 0,
            card: 0,
            module: 0,
            bank: 0,
            device: 0,
            row: 0,
            column: 0,
            bit_position: 0,
            requestor_id: 0,
            responder_id: 0,
            target_id: 0,
            error_type,
            extended: 0,
            rank: 0,
            card_handle: 0,
            module_handle: 0,
        }
    }

    /// The 80 wire bytes.
    pub fn encode(&self) -> [u8; MEMORY_SECTION_LEN] {
        let mut out = Vec::with_capacity(MEMORY_SECTION_LEN);
        for v in [
            self.validation_bits,
            self.error_status,
            self.physical_address,
            self.physical_address_mask,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.node,
            self.card,
            self.module,
            self.bank,
            self.device,
            self.row,
            self.column,
            self.bit_position,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.requestor_id, self.responder_id, self.target_id] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.error_type.code());
        out.push(self.extended);
        for v in [self.rank, self.card_handle, self.module_handle] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut fixed = [0u8; MEMORY_SECTION_LEN];
        fixed.copy_from_slice(&out);
        fixed
    }

    /// Decodes exactly [`MEMORY_SECTION_LEN`] bytes.
    ///
    /// # Errors
    /// [`Error::Truncated`](super::Error::Truncated) when shorter (the 73-byte UEFI 2.1
    /// layout included), [`Error::TrailingBytes`](super::Error::TrailingBytes) when longer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let section = Self::read(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(section)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut f = r.take(Self::NAME, MEMORY_SECTION_LEN)?;
        Ok(Self {
            validation_bits: f.u64(),
            error_status: f.u64(),
            physical_address: f.u64(),
            physical_address_mask: f.u64(),
            node: f.u16(),
            card: f.u16(),
            module: f.u16(),
            bank: f.u16(),
            device: f.u16(),
            row: f.u16(),
            column: f.u16(),
            bit_position: f.u16(),
            requestor_id: f.u64(),
            responder_id: f.u64(),
            target_id: f.u64(),
            error_type: MemoryErrorType::from(f.u8()),
            extended: f.u8(),
            rank: f.u16(),
            card_handle: f.u16(),
            module_handle: f.u16(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::cper::testing::roundtrip_exact;
    use proptest::prelude::*;

    pub(crate) fn any_memory_section() -> impl Strategy<Value = MemoryErrorSection> {
        any::<[u8; MEMORY_SECTION_LEN]>().prop_map(|b| {
            MemoryErrorSection::decode(&b).unwrap_or(MemoryErrorSection::with_address(
                0,
                MemoryErrorType::Unknown,
            ))
        })
    }

    #[test]
    fn every_field_at_its_offset() {
        // Distinct values per field, so a swapped or misplaced field shows.
        let s = MemoryErrorSection {
            validation_bits: 0x0101_0101_0101_0101,
            error_status: 0x0202_0202_0202_0202,
            physical_address: 0x0303_0303_0303_0303,
            physical_address_mask: 0x0404_0404_0404_0404,
            node: 0x0505,
            card: 0x0606,
            module: 0x0707,
            bank: 0x0808,
            device: 0x0909,
            row: 0x0a0a,
            column: 0x0b0b,
            bit_position: 0x0c0c,
            requestor_id: 0x0d0d_0d0d_0d0d_0d0d,
            responder_id: 0x0e0e_0e0e_0e0e_0e0e,
            target_id: 0x0f0f_0f0f_0f0f_0f0f,
            error_type: MemoryErrorType::from(0x10),
            extended: 0x11,
            rank: 0x1212,
            card_handle: 0x1313,
            module_handle: 0x1414,
        };
        let mut expected = Vec::new();
        for (value, width) in [
            (1u8, 8),
            (2, 8),
            (3, 8),
            (4, 8),
            (5, 2),
            (6, 2),
            (7, 2),
            (8, 2),
            (9, 2),
            (10, 2),
            (11, 2),
            (12, 2),
            (13, 8),
            (14, 8),
            (15, 8),
            (16, 1),
            (17, 1),
            (18, 2),
            (19, 2),
            (20, 2),
        ] {
            expected.extend(std::iter::repeat_n(value, width));
        }
        assert_eq!(s.encode().to_vec(), expected);
        assert_eq!(
            expected[PHYSICAL_ADDRESS_AT..PHYSICAL_ADDRESS_AT + 8],
            s.physical_address.to_le_bytes()
        );
        assert_eq!(
            expected[PHYSICAL_ADDRESS_MASK_AT..PHYSICAL_ADDRESS_MASK_AT + 8],
            s.physical_address_mask.to_le_bytes()
        );
        assert_eq!(s.error_type, MemoryErrorType::Reserved(0x10));
        roundtrip_exact(&expected, MemoryErrorSection::decode, |s| {
            s.encode().to_vec()
        });
    }

    #[test]
    fn error_type_codes() {
        assert_eq!(MemoryErrorType::from(0), MemoryErrorType::Unknown);
        assert_eq!(MemoryErrorType::from(3), MemoryErrorType::MultiBitEcc);
        assert_eq!(
            MemoryErrorType::from(14),
            MemoryErrorType::ScrubUncorrectedError
        );
        assert_eq!(
            MemoryErrorType::from(15),
            MemoryErrorType::PhysicalMemoryMapOutEvent
        );
        assert_eq!(MemoryErrorType::from(16), MemoryErrorType::Reserved(16));
        for v in 0..=u8::MAX {
            assert_eq!(MemoryErrorType::from(v).code(), v);
        }
    }

    proptest! {
        #[test]
        fn round_trips(s in any_memory_section()) {
            prop_assert_eq!(MemoryErrorSection::decode(&s.encode()), Ok(s));
        }

        #[test]
        fn decode_accepts_exactly_80_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            prop_assert_eq!(MemoryErrorSection::decode(&bytes).is_ok(), bytes.len() == MEMORY_SECTION_LEN);
        }
    }
}
