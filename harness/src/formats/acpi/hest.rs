//! The Hardware Error Source Table (ACPI 6.5 §18.3.2) with Generic Hardware Error Sources
//! (GHES, type 9, §18.3.2.7) and version 2 (GHESv2, type 10, §18.3.2.8).
//!
//! The GHES indirection: the Error Status Address GAS names a 64-bit register; the
//! *content* of that register is the address of the Generic Error Status Block where the
//! CPER record goes. GHESv2 adds a Read Ack register the OS writes after reading a record.

use serde::Serialize;

use super::sdt::{DecodeError, Reader, SdtHeader, SDT_HEADER_LEN};

/// Length of a GHESv2 structure (ACPI 6.5 Table 18.15).
pub const HEST_GHES_V2_LEN: usize = 92;
/// Length of a GHES structure (ACPI 6.5 Table 18.13).
const HEST_GHES_LEN: usize = 64;
/// Hardware Error Notification Structure length (ACPI 6.5 Table 18.14).
const NOTIFICATION_LEN: u8 = 28;

/// Notification type 7: GPIO-Signal (ACPI 6.5 Table 18.14, "Type").
pub const NOTIFY_GPIO: u8 = 7;
/// Notification type 8: ARMv8 Synchronous External Abort.
pub const NOTIFY_SEA: u8 = 8;
/// Notification type 9: ARMv8 SError Interrupt.
pub const NOTIFY_SEI: u8 = 9;

/// Initial Read Ack register value: non-zero means the OS has consumed the last record, so
/// the VMM may write the next (QEMU hw/acpi/ghes.c build_ghes_error_table).
pub const READ_ACK_INITIAL: u64 = 1;
/// Read Ack Preserve: the OS keeps every bit but bit 0 (QEMU build_ghes_v2_entry, ~0x1).
pub const READ_ACK_PRESERVE: u64 = !1;
/// Read Ack Write: the OS sets bit 0 (QEMU build_ghes_v2_entry).
pub const READ_ACK_WRITE: u64 = 1;

/// The Read Ack register value after the OS acknowledges: `(value & preserve) | write`
/// (ACPI 6.5 §18.3.2.8, Read Ack Preserve / Read Ack Write).
pub const fn acknowledge(value: u64, preserve: u64, write: u64) -> u64 {
    (value & preserve) | write
}

/// A Generic Address Structure (ACPI 6.5 §5.2.3.2, Table 5.1), 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Gas {
    /// Address Space ID \[0\]: 0 is system memory.
    pub address_space: u8,
    /// Register Bit Width \[1\].
    pub bit_width: u8,
    /// Register Bit Offset \[2\].
    pub bit_offset: u8,
    /// Access Size \[3\]: 4 is QWORD.
    pub access_size: u8,
    /// Address \[4..12\].
    pub address: u64,
}

impl Gas {
    /// A 64-bit system-memory register at `address`, QWORD access: what QEMU uses for
    /// both GHESv2 registers (space 0, width 0x40, offset 0, access size 4).
    pub const fn system_memory_u64(address: u64) -> Gas {
        Gas {
            address_space: 0,
            bit_width: 64,
            bit_offset: 0,
            access_size: 4,
            address,
        }
    }

    fn to_acpi_tables(self) -> Option<acpi_tables::gas::GAS> {
        use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
        // Only the system-memory QWORD registers this harness builds are mapped.
        (self.address_space == 0 && self.access_size == 4).then(|| {
            GAS::new(
                AddressSpace::SystemMemory,
                self.bit_width,
                self.bit_offset,
                AccessSize::QwordAccess,
                self.address,
            )
        })
    }

    fn decode(r: &Reader<'_>, field: &'static str, at: usize) -> Result<Gas, DecodeError> {
        Ok(Gas {
            address_space: r.u8(field, at)?,
            bit_width: r.u8(field, at + 1)?,
            bit_offset: r.u8(field, at + 2)?,
            access_size: r.u8(field, at + 3)?,
            address: r.u64(field, at + 4)?,
        })
    }
}

/// The Hardware Error Notification Structure (ACPI 6.5 Table 18.14), 28 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Type \[0\]: [`NOTIFY_SEA`], [`NOTIFY_GPIO`], ...
    pub kind: u8,
    /// Length \[1\]: 28.
    pub length: u8,
    /// Configuration Write Enable \[2..4\].
    pub config_write_enable: u16,
    /// Poll Interval \[4..8\], ms.
    pub poll_interval: u32,
    /// Vector \[8..12\].
    pub vector: u32,
    /// Switch To Polling Threshold Value \[12..16\].
    pub polling_threshold_value: u32,
    /// Switch To Polling Threshold Window \[16..20\], ms.
    pub polling_threshold_window: u32,
    /// Error Threshold Value \[20..24\].
    pub error_threshold_value: u32,
    /// Error Threshold Window \[24..28\], ms.
    pub error_threshold_window: u32,
}

impl Notification {
    /// A notification of `kind` with every other field zero, as QEMU writes it
    /// (hw/acpi/ghes.c build_ghes_hw_error_notification).
    pub const fn of_kind(kind: u8) -> Notification {
        Notification {
            kind,
            length: NOTIFICATION_LEN,
            config_write_enable: 0,
            poll_interval: 0,
            vector: 0,
            polling_threshold_value: 0,
            polling_threshold_window: 0,
            error_threshold_value: 0,
            error_threshold_window: 0,
        }
    }

    fn decode(r: &Reader<'_>, at: usize) -> Result<Notification, DecodeError> {
        let n = Notification {
            kind: r.u8("Notification Structure.Type", at)?,
            length: r.u8("Notification Structure.Length", at + 1)?,
            config_write_enable: r
                .u16("Notification Structure.Configuration Write Enable", at + 2)?,
            poll_interval: r.u32("Notification Structure.Poll Interval", at + 4)?,
            vector: r.u32("Notification Structure.Vector", at + 8)?,
            polling_threshold_value: r.u32(
                "Notification Structure.Switch To Polling Threshold Value",
                at + 12,
            )?,
            polling_threshold_window: r.u32(
                "Notification Structure.Switch To Polling Threshold Window",
                at + 16,
            )?,
            error_threshold_value: r
                .u32("Notification Structure.Error Threshold Value", at + 20)?,
            error_threshold_window: r
                .u32("Notification Structure.Error Threshold Window", at + 24)?,
        };
        if n.length != NOTIFICATION_LEN {
            return Err(r.bad(
                "Notification Structure.Length",
                at + 1,
                n.length.into(),
                "must be 28",
            ));
        }
        Ok(n)
    }
}

/// The GHESv2 Read Ack fields (ACPI 6.5 Table 18.15, offsets 64..92).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReadAck {
    /// Read Ack Register \[64..76\].
    pub register: Gas,
    /// Read Ack Preserve \[76..84\].
    pub preserve: u64,
    /// Read Ack Write \[84..92\].
    pub write: u64,
}

/// A Generic Hardware Error Source, version 1 (type 9) or 2 (type 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ghes {
    /// Source Id \[2..4\].
    pub source_id: u16,
    /// Related Source Id \[4..6\]: 0xFFFF for none.
    pub related_source_id: u16,
    /// Flags \[6\]: reserved, 0.
    pub flags: u8,
    /// Enabled \[7\].
    pub enabled: u8,
    /// Number of Records To Pre-allocate \[8..12\].
    pub records_to_preallocate: u32,
    /// Max Sections Per Record \[12..16\].
    pub max_sections_per_record: u32,
    /// Max Raw Data Length \[16..20\].
    pub max_raw_data_length: u32,
    /// Error Status Address \[20..32\]: the register holding the status block's address.
    pub error_status_address: Gas,
    /// Notification Structure \[32..60\].
    pub notification: Notification,
    /// Error Status Block Length \[60..64\].
    pub error_status_block_length: u32,
    /// GHESv2 only: the Read Ack fields.
    pub read_ack: Option<ReadAck>,
}

impl Ghes {
    /// The acpi_tables structure for a GHESv2 source, or `None` when a field cannot be
    /// expressed through it (acpi_tables fixes Related Source Id 0xFFFF and Flags 0, and
    /// this harness only maps system-memory QWORD registers).
    fn to_acpi_tables(self) -> Option<acpi_tables::hest::GenericHardwareSourceV2> {
        use acpi_tables::hest::{
            EnabledStatus, GenericHardwareSourceV2, NotificationStructure, NotificationType,
        };
        let ack = self.read_ack?;
        let kind = match self.notification.kind {
            NOTIFY_GPIO => NotificationType::GpioSignal,
            NOTIFY_SEA => NotificationType::Armv8Sea,
            NOTIFY_SEI => NotificationType::Armv8Sei,
            _ => return None,
        };
        let enabled = match self.enabled {
            0 => EnabledStatus::Disabled,
            1 => EnabledStatus::Enabled,
            _ => return None,
        };
        if self.related_source_id != 0xFFFF || self.flags != 0 {
            return None;
        }
        let n = self.notification;
        Some(
            GenericHardwareSourceV2::new(self.source_id, enabled)
                .num_records(self.records_to_preallocate)
                .max_sections(self.max_sections_per_record)
                .max_raw_length(self.max_raw_data_length)
                .error_status_address(self.error_status_address.to_acpi_tables()?)
                .notification(
                    NotificationStructure::new(kind)
                        .conf_write_en(n.config_write_enable)
                        .poll_interval_ms(n.poll_interval)
                        .vector(n.vector)
                        .polling_threshold_value(n.polling_threshold_value)
                        .polling_threshold_window_ms(n.polling_threshold_window)
                        .error_threshold_value(n.error_threshold_value)
                        .error_threshold_window_ms(n.error_threshold_window),
                )
                .error_status_block_len(self.error_status_block_length)
                .read_ack_register(ack.register.to_acpi_tables()?)
                .read_ack_preserve(ack.preserve)
                .read_ack_write(ack.write),
        )
    }

    fn decode(r: &Reader<'_>, at: usize, v2: bool) -> Result<Ghes, DecodeError> {
        let read_ack = if v2 {
            Some(ReadAck {
                register: Gas::decode(r, "Read Ack Register", at + 64)?,
                preserve: r.u64("Read Ack Preserve", at + 76)?,
                write: r.u64("Read Ack Write", at + 84)?,
            })
        } else {
            None
        };
        Ok(Ghes {
            source_id: r.u16("Source Id", at + 2)?,
            related_source_id: r.u16("Related Source Id", at + 4)?,
            flags: r.u8("Flags", at + 6)?,
            enabled: r.u8("Enabled", at + 7)?,
            records_to_preallocate: r.u32("Number of Records To Pre-allocate", at + 8)?,
            max_sections_per_record: r.u32("Max Sections Per Record", at + 12)?,
            max_raw_data_length: r.u32("Max Raw Data Length", at + 16)?,
            error_status_address: Gas::decode(r, "Error Status Address", at + 20)?,
            notification: Notification::decode(r, at + 32)?,
            error_status_block_length: r.u32("Error Status Block Length", at + 60)?,
            read_ack,
        })
    }
}

/// One error source structure of a HEST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ErrorSource {
    /// Type 9 (GHES) or 10 (GHESv2, `read_ack` is `Some`).
    Ghes(Ghes),
    /// A fixed-length type this decoder keeps undecoded: PCIe AER root port (6, 48 bytes),
    /// endpoint (7, 44) or bridge (8, 56), or the IA-32 NMI source (2, 20).
    Other {
        /// Type \[0..2\].
        source_type: u16,
        /// Offset of the structure in the table.
        offset: usize,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// A decoded HEST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hest {
    /// Header, signature "HEST".
    pub header: SdtHeader,
    /// The error sources, in table order (Error Source Count \[36..40\] of them).
    pub sources: Vec<ErrorSource>,
}

impl Hest {
    /// The bytes of a HEST (revision 1, checksum set) holding GHESv2 `sources`, through
    /// `acpi_tables::hest`. `None` when a source cannot be expressed there (see
    /// [`Ghes`]'s fields: GHESv2 only, related source 0xFFFF, flags 0, enabled 0 or 1,
    /// notification GPIO/SEA/SEI, system-memory QWORD registers) or when there are 256
    /// sources or more (acpi_tables updates the checksum for the Error Source Count by
    /// adding 1 per source, which is wrong once the count's low byte wraps).
    pub fn encode(
        oem_id: [u8; 6],
        oem_table_id: [u8; 8],
        oem_revision: u32,
        sources: &[Ghes],
    ) -> Option<Vec<u8>> {
        use acpi_tables::Aml;
        if sources.len() > 255 {
            return None;
        }
        let mut hest = acpi_tables::hest::HEST::new(oem_id, oem_table_id, oem_revision);
        for source in sources {
            hest.add_structure(source.to_acpi_tables()?);
        }
        let mut bytes = Vec::new();
        hest.to_aml_bytes(&mut bytes);
        Some(bytes)
    }

    /// Decodes and checks a HEST: header and checksum, then exactly Error Source Count
    /// structures that end exactly at the table's length.
    ///
    /// # Errors
    /// [`DecodeError`] naming the field and offset that failed, including an unsupported
    /// (variable-length) source type, which stops the walk.
    pub fn decode(bytes: &[u8]) -> Result<Hest, DecodeError> {
        let (header, table) = SdtHeader::decode("HEST", b"HEST", bytes)?;
        let r = Reader::new("HEST", table);
        let count = r.u32("Error Source Count", SDT_HEADER_LEN)?;
        let mut offset = SDT_HEADER_LEN + 4;
        // Each source takes at least 20 bytes: a count beyond that cannot fit.
        if count as usize > table.len() / 20 {
            return Err(r.bad(
                "Error Source Count",
                SDT_HEADER_LEN,
                count.into(),
                "more sources than the table length can hold",
            ));
        }
        let mut sources = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let source_type = r.u16("Type", offset)?;
            let len = match source_type {
                9 => HEST_GHES_LEN,
                10 => HEST_GHES_V2_LEN,
                2 => 20,
                6 => 48,
                7 => 44,
                8 => 56,
                _ => {
                    return Err(r.bad(
                        "Type",
                        offset,
                        source_type.into(),
                        "unknown or variable-length error source type",
                    ))
                }
            };
            let bytes = table
                .get(offset..offset + len)
                .ok_or(DecodeError::Truncated {
                    table: "HEST",
                    field: "error source structure",
                    offset,
                    need: len,
                    len: table.len(),
                })?;
            sources.push(match source_type {
                9 | 10 => ErrorSource::Ghes(Ghes::decode(&r, offset, source_type == 10)?),
                _ => ErrorSource::Other {
                    source_type,
                    offset,
                    bytes: bytes.to_vec(),
                },
            });
            offset += len;
        }
        if offset != table.len() {
            return Err(r.bad(
                "Length",
                4,
                header.length.into(),
                "bytes left after the last error source",
            ));
        }
        Ok(Hest { header, sources })
    }
}
