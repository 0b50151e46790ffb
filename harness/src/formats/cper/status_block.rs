//! Generic Error Status Block: the 20-byte header the guest finds at the error status
//! address (ACPI 6.5 section 18.3.2.7.1, table 18.11; Linux `struct
//! acpi_hest_generic_status`).

use serde::{Serialize, Serializer};

use super::wire::{Reader, Result};
use super::Severity;

/// Size of the Generic Error Status Block (ACPI 6.5 table 18.11; QEMU
/// `ACPI_GHES_GESB_SIZE`).
pub const STATUS_BLOCK_LEN: usize = 20;
const _: () = assert!(STATUS_BLOCK_LEN == 5 * 4);

/// The Block Status bit field (ACPI 6.5 table 18.11, "Block Status").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct BlockStatus(pub u32);

impl BlockStatus {
    /// Bit 0: Uncorrectable Error Valid.
    pub const UNCORRECTABLE_VALID: u32 = 1 << 0;
    /// Bit 1: Correctable Error Valid.
    pub const CORRECTABLE_VALID: u32 = 1 << 1;
    /// Bit 2: Multiple Uncorrectable Errors.
    pub const MULTIPLE_UNCORRECTABLE: u32 = 1 << 2;
    /// Bit 3: Multiple Correctable Errors.
    pub const MULTIPLE_CORRECTABLE: u32 = 1 << 3;
    /// Bits 13:4: Error Data Entry Count.
    pub const ENTRY_COUNT_SHIFT: u32 = 4;
    /// Mask of the Error Data Entry Count after shifting (10 bits).
    pub const ENTRY_COUNT_MASK: u32 = 0x3ff;

    /// The flag bits with an entry count in bits 13:4 (counts above 1023 are cut to 10 bits).
    pub fn with_entry_count(flags: u32, count: u32) -> Self {
        let field = (count & Self::ENTRY_COUNT_MASK) << Self::ENTRY_COUNT_SHIFT;
        Self((flags & !(Self::ENTRY_COUNT_MASK << Self::ENTRY_COUNT_SHIFT)) | field)
    }

    /// Bits 13:4.
    pub fn entry_count(self) -> u32 {
        (self.0 >> Self::ENTRY_COUNT_SHIFT) & Self::ENTRY_COUNT_MASK
    }

    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

impl Serialize for BlockStatus {
    /// The raw value plus each field decoded, so a reader need not know the bit layout.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("BlockStatus", 6)?;
        s.serialize_field("raw", &format!("{:#010x}", self.0))?;
        s.serialize_field("uncorrectable_valid", &self.has(Self::UNCORRECTABLE_VALID))?;
        s.serialize_field("correctable_valid", &self.has(Self::CORRECTABLE_VALID))?;
        s.serialize_field(
            "multiple_uncorrectable",
            &self.has(Self::MULTIPLE_UNCORRECTABLE),
        )?;
        s.serialize_field(
            "multiple_correctable",
            &self.has(Self::MULTIPLE_CORRECTABLE),
        )?;
        s.serialize_field("entry_count", &self.entry_count())?;
        s.end()
    }
}

/// The Generic Error Status Block, every field as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct ErrorStatusBlock {
    /// Offset 0: Block Status.
    pub block_status: BlockStatus,
    /// Offset 4: Raw Data Offset, from the start of this block.
    pub raw_data_offset: u32,
    /// Offset 8: Raw Data Length.
    pub raw_data_length: u32,
    /// Offset 12: Data Length, the bytes of Generic Error Data Entries that follow.
    pub data_length: u32,
    /// Offset 16: Error Severity.
    pub error_severity: Severity,
}

impl ErrorStatusBlock {
    pub(crate) const NAME: &'static str = "Generic Error Status Block";

    /// The 20 wire bytes.
    pub fn encode(&self) -> [u8; STATUS_BLOCK_LEN] {
        let mut out = [0u8; STATUS_BLOCK_LEN];
        let fields = [
            self.block_status.0,
            self.raw_data_offset,
            self.raw_data_length,
            self.data_length,
            self.error_severity.code(),
        ];
        for (chunk, value) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// Decodes exactly [`STATUS_BLOCK_LEN`] bytes.
    ///
    /// # Errors
    /// [`Error::Truncated`](super::Error::Truncated) when shorter,
    /// [`Error::TrailingBytes`](super::Error::TrailingBytes) when longer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let block = Self::read(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(block)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut f = r.take(Self::NAME, STATUS_BLOCK_LEN)?;
        Ok(Self {
            block_status: BlockStatus(f.u32()),
            raw_data_offset: f.u32(),
            raw_data_length: f.u32(),
            data_length: f.u32(),
            error_severity: Severity::from(f.u32()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::cper::testing::roundtrip_exact;
    use proptest::prelude::*;

    pub(crate) fn any_status_block() -> impl Strategy<Value = ErrorStatusBlock> {
        (any::<[u32; 5]>()).prop_map(|[s, ro, rl, dl, sev]| ErrorStatusBlock {
            block_status: BlockStatus(s),
            raw_data_offset: ro,
            raw_data_length: rl,
            data_length: dl,
            error_severity: Severity::from(sev),
        })
    }

    #[test]
    fn entry_count_lives_in_bits_13_to_4() {
        let s = BlockStatus::with_entry_count(BlockStatus::UNCORRECTABLE_VALID, 1);
        assert_eq!(s.0, 0x11);
        assert_eq!(s.entry_count(), 1);
        assert_eq!(BlockStatus::with_entry_count(0, 1023).0, 0x3ff0);
        assert_eq!(BlockStatus(0x3ff1).entry_count(), 1023);
        assert_eq!(BlockStatus(0x1).entry_count(), 0);
    }

    #[test]
    fn field_offsets() {
        let block = ErrorStatusBlock {
            block_status: BlockStatus(0x11),
            raw_data_offset: 0x2233_4455,
            raw_data_length: 0x6677_8899,
            data_length: 152,
            error_severity: Severity::Corrected,
        };
        #[rustfmt::skip]
        let expected = [
            0x11, 0, 0, 0,              // block status
            0x55, 0x44, 0x33, 0x22,     // raw data offset
            0x99, 0x88, 0x77, 0x66,     // raw data length
            152, 0, 0, 0,               // data length
            2, 0, 0, 0,                 // error severity
        ];
        assert_eq!(block.encode(), expected);
        roundtrip_exact(&expected, ErrorStatusBlock::decode, |b| b.encode().to_vec());
    }

    proptest! {
        #[test]
        fn round_trips(block in any_status_block()) {
            prop_assert_eq!(ErrorStatusBlock::decode(&block.encode()), Ok(block));
        }

        #[test]
        fn decode_accepts_exactly_20_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(ErrorStatusBlock::decode(&bytes).is_ok(), bytes.len() == STATUS_BLOCK_LEN);
        }
    }
}
