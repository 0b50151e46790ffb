//! The System Description Table header (ACPI 6.5 §5.2.6, Table 5.4), checksums, and the
//! bounds-checked reader every decoder here uses, so that no input can make one panic.

use serde::Serialize;

/// Length of the SDT header (ACPI 6.5 Table 5.4).
pub const SDT_HEADER_LEN: usize = 36;

/// Why bytes do not decode as the table they claim to be. Each variant names the table,
/// the field and its byte offset in that table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before a field does.
    #[error("{table}: {field} at offset {offset} needs {need} bytes, only {len} available")]
    Truncated {
        /// Table being decoded ("RSDP", "XSDT", "HEST").
        table: &'static str,
        /// Field being read.
        field: &'static str,
        /// Offset of the field in the table.
        offset: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes the table has.
        len: usize,
    },
    /// The signature is not the expected one.
    #[error("{table}: signature {found:?} at offset 0, expected {expected:?}")]
    BadSignature {
        /// Table being decoded.
        table: &'static str,
        /// Expected signature.
        expected: &'static str,
        /// Signature found, lossily as text.
        found: String,
    },
    /// The bytes covered by a checksum do not sum to zero.
    #[error("{table}: bytes 0..{covered} sum to {sum:#04x}, not 0 ({field} at offset {offset})")]
    BadChecksum {
        /// Table being decoded.
        table: &'static str,
        /// The checksum field.
        field: &'static str,
        /// Its offset.
        offset: usize,
        /// Number of bytes it covers.
        covered: usize,
        /// Their sum.
        sum: u8,
    },
    /// A field holds a value this decoder cannot accept.
    #[error("{table}: {field} at offset {offset} is {value:#x}: {why}")]
    BadField {
        /// Table being decoded.
        table: &'static str,
        /// Field.
        field: &'static str,
        /// Its offset.
        offset: usize,
        /// The value found.
        value: u64,
        /// Why it is rejected.
        why: &'static str,
    },
}

/// A System Description Table header (ACPI 6.5 Table 5.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SdtHeader {
    /// Signature \[0..4\].
    pub signature: [u8; 4],
    /// Length of the whole table \[4..8\].
    pub length: u32,
    /// Revision \[8\].
    pub revision: u8,
    /// Checksum \[9\]: the whole table sums to zero.
    pub checksum: u8,
    /// OEM ID \[10..16\].
    pub oem_id: [u8; 6],
    /// OEM Table ID \[16..24\].
    pub oem_table_id: [u8; 8],
    /// OEM Revision \[24..28\].
    pub oem_revision: u32,
    /// Creator ID \[28..32\].
    pub creator_id: [u8; 4],
    /// Creator Revision \[32..36\].
    pub creator_revision: u32,
}

impl SdtHeader {
    /// Decodes and checks the header of `table` with signature `signature`: the length
    /// covers at least the header and fits in `bytes`, and the checksum over `length`
    /// bytes is zero. Returns the header and the table's bytes (`length` of them).
    pub(super) fn decode<'a>(
        table: &'static str,
        signature: &'static [u8; 4],
        bytes: &'a [u8],
    ) -> Result<(SdtHeader, &'a [u8]), DecodeError> {
        let r = Reader::new(table, bytes);
        let found = r.array::<4>("Signature", 0)?;
        if &found != signature {
            return Err(DecodeError::BadSignature {
                table,
                expected: std::str::from_utf8(signature).unwrap_or("?"),
                found: String::from_utf8_lossy(&found).into_owned(),
            });
        }
        let length = r.u32("Length", 4)?;
        if (length as usize) < SDT_HEADER_LEN {
            return Err(r.bad(
                "Length",
                4,
                length.into(),
                "shorter than the 36-byte header",
            ));
        }
        if length as usize > bytes.len() {
            return Err(DecodeError::Truncated {
                table,
                field: "Length",
                offset: 4,
                need: length as usize,
                len: bytes.len(),
            });
        }
        let bytes = &bytes[..length as usize];
        check_sum(table, "Checksum", 9, bytes)?;
        let header = SdtHeader {
            signature: found,
            length,
            revision: r.u8("Revision", 8)?,
            checksum: r.u8("Checksum", 9)?,
            oem_id: r.array("OEMID", 10)?,
            oem_table_id: r.array("OEM Table ID", 16)?,
            oem_revision: r.u32("OEM Revision", 24)?,
            creator_id: r.array("Creator ID", 28)?,
            creator_revision: r.u32("Creator Revision", 32)?,
        };
        Ok((header, bytes))
    }
}

/// The byte sum of `bytes`: zero for a table with a correct checksum.
pub(super) fn byte_sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Checks that `bytes` (covered by the checksum `field` at `offset`) sum to zero.
pub(super) fn check_sum(
    table: &'static str,
    field: &'static str,
    offset: usize,
    bytes: &[u8],
) -> Result<(), DecodeError> {
    match byte_sum(bytes) {
        0 => Ok(()),
        sum => Err(DecodeError::BadChecksum {
            table,
            field,
            offset,
            covered: bytes.len(),
            sum,
        }),
    }
}

/// Little-endian field reads that fail with `Truncated` instead of panicking.
pub(super) struct Reader<'a> {
    table: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(table: &'static str, bytes: &'a [u8]) -> Self {
        Reader { table, bytes }
    }

    pub(super) fn array<const N: usize>(
        &self,
        field: &'static str,
        offset: usize,
    ) -> Result<[u8; N], DecodeError> {
        self.bytes
            .get(offset..)
            .and_then(|tail| tail.get(..N))
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Truncated {
                table: self.table,
                field,
                offset,
                need: N,
                len: self.bytes.len(),
            })
    }

    pub(super) fn u8(&self, field: &'static str, offset: usize) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field, offset)?[0])
    }

    pub(super) fn u16(&self, field: &'static str, offset: usize) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field, offset)?))
    }

    pub(super) fn u32(&self, field: &'static str, offset: usize) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field, offset)?))
    }

    pub(super) fn u64(&self, field: &'static str, offset: usize) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field, offset)?))
    }

    pub(super) fn bad(
        &self,
        field: &'static str,
        offset: usize,
        value: u64,
        why: &'static str,
    ) -> DecodeError {
        DecodeError::BadField {
            table: self.table,
            field,
            offset,
            value,
            why,
        }
    }
}
