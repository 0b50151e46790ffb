//! The Root System Description Pointer (ACPI 6.5 §5.2.5.3, Table 5.3), revision 2.

use serde::Serialize;

use super::sdt::{check_sum, DecodeError, Reader};

/// Length of a revision 2 RSDP (ACPI 6.5 Table 5.3, "Length").
pub const RSDP_LEN: usize = 36;

/// A decoded RSDP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rsdp {
    /// OEMID \[9..15\].
    pub oem_id: [u8; 6],
    /// Revision \[15\]: 2 for ACPI 2.0 and later (the only kind with an XSDT).
    pub revision: u8,
    /// RsdtAddress \[16..20\]: 0 here, an arm64 guest uses the XSDT.
    pub rsdt_address: u32,
    /// Length \[20..24\].
    pub length: u32,
    /// XsdtAddress \[24..32\].
    pub xsdt_address: u64,
}

impl Rsdp {
    /// The bytes of a revision 2 RSDP pointing at `xsdt_address`, both checksums set
    /// (through `acpi_tables::rsdp::Rsdp`, which matches Table 5.3 field for field).
    pub fn encode(oem_id: [u8; 6], xsdt_address: u64) -> Vec<u8> {
        use acpi_tables::Aml;
        let mut bytes = Vec::with_capacity(RSDP_LEN);
        acpi_tables::rsdp::Rsdp::new(oem_id, xsdt_address).to_aml_bytes(&mut bytes);
        bytes
    }

    /// Decodes and checks an RSDP: signature "RSD PTR ", the checksum over the first 20
    /// bytes, revision >= 2, a length of at least 36 that fits, and the extended checksum
    /// over `length` bytes.
    ///
    /// # Errors
    /// [`DecodeError`] naming the field and offset that failed.
    pub fn decode(bytes: &[u8]) -> Result<Rsdp, DecodeError> {
        const TABLE: &str = "RSDP";
        let r = Reader::new(TABLE, bytes);
        let signature = r.array::<8>("Signature", 0)?;
        if &signature != b"RSD PTR " {
            return Err(DecodeError::BadSignature {
                table: TABLE,
                expected: "RSD PTR ",
                found: String::from_utf8_lossy(&signature).into_owned(),
            });
        }
        let first = bytes.get(..20).ok_or(DecodeError::Truncated {
            table: TABLE,
            field: "Checksum",
            offset: 8,
            need: 20,
            len: bytes.len(),
        })?;
        check_sum(TABLE, "Checksum", 8, first)?;
        let revision = r.u8("Revision", 15)?;
        if revision < 2 {
            return Err(r.bad(
                "Revision",
                15,
                revision.into(),
                "ACPI 1.0 RSDP has no XSDT address",
            ));
        }
        let length = r.u32("Length", 20)?;
        if (length as usize) < RSDP_LEN {
            return Err(r.bad("Length", 20, length.into(), "shorter than 36 bytes"));
        }
        let whole = bytes.get(..length as usize).ok_or(DecodeError::Truncated {
            table: TABLE,
            field: "Length",
            offset: 20,
            need: length as usize,
            len: bytes.len(),
        })?;
        check_sum(TABLE, "Extended Checksum", 32, whole)?;
        Ok(Rsdp {
            oem_id: r.array("OEMID", 9)?,
            revision,
            rsdt_address: r.u32("RsdtAddress", 16)?,
            length,
            xsdt_address: r.u64("XsdtAddress", 24)?,
        })
    }
}
