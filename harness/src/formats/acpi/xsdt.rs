//! The Extended System Description Table (ACPI 6.5 §5.2.8, Table 5.6).

use serde::Serialize;

use super::sdt::{DecodeError, Reader, SdtHeader, SDT_HEADER_LEN};

/// A decoded XSDT: the header and the 64-bit table addresses after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Xsdt {
    /// Header, signature "XSDT".
    pub header: SdtHeader,
    /// Entry \[36..\]: guest physical addresses of the other tables.
    pub entries: Vec<u64>,
}

impl Xsdt {
    /// The bytes of an XSDT listing `entries`, revision 1, checksum set
    /// (through `acpi_tables::xsdt::XSDT`).
    pub fn encode(
        oem_id: [u8; 6],
        oem_table_id: [u8; 8],
        oem_revision: u32,
        entries: &[u64],
    ) -> Vec<u8> {
        use acpi_tables::Aml;
        let mut xsdt = acpi_tables::xsdt::XSDT::new(oem_id, oem_table_id, oem_revision);
        for entry in entries {
            xsdt.add_entry(*entry);
        }
        let mut bytes = Vec::new();
        xsdt.to_aml_bytes(&mut bytes);
        bytes
    }

    /// Decodes and checks an XSDT (signature, length, checksum, whole 8-byte entries).
    ///
    /// # Errors
    /// [`DecodeError`] naming the field and offset that failed.
    pub fn decode(bytes: &[u8]) -> Result<Xsdt, DecodeError> {
        let (header, table) = SdtHeader::decode("XSDT", b"XSDT", bytes)?;
        let r = Reader::new("XSDT", table);
        let body = table.len() - SDT_HEADER_LEN;
        if !body.is_multiple_of(8) {
            return Err(r.bad(
                "Length",
                4,
                header.length.into(),
                "entries are not a whole number of 8-byte addresses",
            ));
        }
        let entries = (SDT_HEADER_LEN..table.len())
            .step_by(8)
            .map(|offset| r.u64("Entry", offset))
            .collect::<Result<_, _>>()?;
        Ok(Xsdt { header, entries })
    }
}
