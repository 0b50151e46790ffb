//! Where the tables and the GHES registers live in guest memory, the bytes to put there,
//! and the walk a guest OS does to find them again.

use serde::Serialize;

use super::hest::{
    ErrorSource, Gas, Ghes, Hest, Notification, ReadAck, NOTIFY_GPIO, NOTIFY_SEA, NOTIFY_SEI,
    READ_ACK_INITIAL, READ_ACK_PRESERVE, READ_ACK_WRITE,
};
use super::rsdp::{Rsdp, RSDP_LEN};
use super::sdt::{DecodeError, SDT_HEADER_LEN};
use super::xsdt::Xsdt;

/// QEMU's Error Status Block length and Max Raw Data Length, 1 KiB each
/// (hw/acpi/ghes.c ACPI_GHES_MAX_RAW_DATA_LENGTH).
const QEMU_STATUS_BLOCK_LEN: u32 = 1024;
/// A Generic Error Status Block header is 20 bytes (ACPI 6.5 Table 18.11).
const STATUS_BLOCK_HEADER_LEN: u32 = 20;
/// Tables longer than this are refused by [`discover`] rather than read.
const MAX_TABLE_LEN: u32 = 1 << 20;

/// How a GHESv2 source tells the OS a record is there (ACPI 6.5 Table 18.14, Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// Type 8, ARMv8 SEA: the record goes with a synchronous external abort.
    Sea,
    /// Type 7, GPIO-Signal: an interrupt-driven source (QEMU's second, QMP source).
    Gpio,
    /// Type 9, ARMv8 SEI: the record goes with an SError.
    Sei,
}

impl Notify {
    /// The notification type code.
    pub const fn code(self) -> u8 {
        match self {
            Notify::Sea => NOTIFY_SEA,
            Notify::Gpio => NOTIFY_GPIO,
            Notify::Sei => NOTIFY_SEI,
        }
    }

    /// The variant for a notification type code, if it is one of these.
    pub const fn from_code(code: u8) -> Option<Notify> {
        match code {
            NOTIFY_SEA => Some(Notify::Sea),
            NOTIFY_GPIO => Some(Notify::Gpio),
            NOTIFY_SEI => Some(Notify::Sei),
            _ => None,
        }
    }
}

/// One GHESv2 error source and the guest physical addresses behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GhesSource {
    /// HEST Source Id.
    pub source_id: u16,
    /// Notification type.
    pub notify: Notify,
    /// GPA of the 64-bit Error Status Address register. Its content is `status_block`.
    pub error_status_address: u64,
    /// GPA of the Generic Error Status Block: where the VMM writes the CPER record.
    pub status_block: u64,
    /// Error Status Block Length, also used as Max Raw Data Length (as QEMU does).
    pub status_block_length: u32,
    /// GPA of the 64-bit Read Ack register (starts at [`READ_ACK_INITIAL`]).
    pub read_ack: u64,
}

impl GhesSource {
    /// The HEST structure for this source, with QEMU's values (hw/acpi/ghes.c
    /// build_ghes_v2_entry): related source 0xFFFF, enabled, 1 record to pre-allocate,
    /// 1 section per record, QWORD system-memory registers, preserve ~1, write 1.
    pub fn ghes(&self) -> Ghes {
        Ghes {
            source_id: self.source_id,
            related_source_id: 0xFFFF,
            flags: 0,
            enabled: 1,
            records_to_preallocate: 1,
            max_sections_per_record: 1,
            max_raw_data_length: self.status_block_length,
            error_status_address: Gas::system_memory_u64(self.error_status_address),
            notification: Notification::of_kind(self.notify.code()),
            error_status_block_length: self.status_block_length,
            read_ack: Some(ReadAck {
                register: Gas::system_memory_u64(self.read_ack),
                preserve: READ_ACK_PRESERVE,
                write: READ_ACK_WRITE,
            }),
        }
    }
}

/// The caller's choice of addresses and identifiers for the tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcpiLayout {
    /// GPA of the RSDP (handed to the guest out of band).
    pub rsdp: u64,
    /// GPA of the XSDT.
    pub xsdt: u64,
    /// GPA of the HEST.
    pub hest: u64,
    /// OEMID in the RSDP, XSDT and HEST.
    pub oem_id: [u8; 6],
    /// OEM Table ID in the XSDT and HEST.
    pub oem_table_id: [u8; 8],
    /// OEM Revision in the XSDT and HEST.
    pub oem_revision: u32,
    /// The GHESv2 sources, in HEST order.
    pub sources: Vec<GhesSource>,
}

impl AcpiLayout {
    /// QEMU's arrangement (hw/acpi/ghes.c, docs/specs/acpi_hest_ghes.rst): source 0
    /// notified by SEA for synchronous errors, source 1 by GPIO; at `errors`, the two
    /// Error Status Address registers, then the two Read Ack registers, then two 1 KiB
    /// status blocks. XSDT at `tables`, HEST at `tables + 0x40`. OEM ids as QEMU's
    /// ("BOCHS ", "BXPC    ").
    pub fn qemu_like(rsdp: u64, tables: u64, errors: u64) -> AcpiLayout {
        let len = u64::from(QEMU_STATUS_BLOCK_LEN);
        let source = |i: u16, notify| GhesSource {
            source_id: i,
            notify,
            error_status_address: errors + 8 * u64::from(i),
            read_ack: errors + 0x10 + 8 * u64::from(i),
            status_block: errors + 0x20 + len * u64::from(i),
            status_block_length: QEMU_STATUS_BLOCK_LEN,
        };
        AcpiLayout {
            rsdp,
            xsdt: tables,
            hest: tables + 0x40,
            oem_id: *b"BOCHS ",
            oem_table_id: *b"BXPC    ",
            oem_revision: 1,
            sources: vec![source(0, Notify::Sea), source(1, Notify::Gpio)],
        }
    }

    /// The source with HEST Source Id `id`.
    pub fn source(&self, id: u16) -> Option<&GhesSource> {
        self.sources.iter().find(|s| s.source_id == id)
    }

    /// The first source notified by `notify` (e.g. [`Notify::Sea`] for a guest SEA).
    pub fn source_for(&self, notify: Notify) -> Option<&GhesSource> {
        self.sources.iter().find(|s| s.notify == notify)
    }
}

/// Bytes to copy to one guest physical address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// What this is ("RSDP", "HEST", "GHES 0 read ack", ...).
    pub name: String,
    /// Where it goes.
    pub gpa: u64,
    /// What goes there.
    pub bytes: Vec<u8>,
}

/// Why a layout cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Two blobs share guest memory.
    #[error("{a} [{a_start:#x}, {a_end:#x}) overlaps {b} [{b_start:#x}, {b_end:#x})")]
    Overlap {
        /// First blob.
        a: String,
        /// Its start.
        a_start: u64,
        /// Its end (exclusive).
        a_end: u64,
        /// Second blob.
        b: String,
        /// Its start.
        b_start: u64,
        /// Its end.
        b_end: u64,
    },
    /// A blob runs past the top of the address space.
    #[error("{name} at {gpa:#x} ({len} bytes) runs past 2^64")]
    Overflow {
        /// Blob.
        name: String,
        /// Its GPA.
        gpa: u64,
        /// Its length.
        len: usize,
    },
    /// A 64-bit register is not 8-byte aligned.
    #[error("{name} at {gpa:#x} is not 8-byte aligned")]
    Misaligned {
        /// Register.
        name: String,
        /// Its GPA.
        gpa: u64,
    },
    /// Two sources share a Source Id.
    #[error("source id {0} is used twice")]
    DuplicateSourceId(u16),
    /// A status block cannot hold even its 20-byte header.
    #[error("source {source_id}: status block length {length} is below the 20-byte header")]
    StatusBlockTooShort {
        /// Source.
        source_id: u16,
        /// Its length.
        length: u32,
    },
    /// More sources than the HEST builder handles (255).
    #[error("{0} sources: at most 255 are supported")]
    TooManySources(usize),
}

/// Everything a VMM copies into guest memory for the tables, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    blobs: Vec<Blob>,
}

impl AcpiTables {
    /// Builds the RSDP, XSDT (listing the HEST), HEST, and for each source its Error
    /// Status Address register (holding the status block's GPA), its Read Ack register
    /// (initially 1) and its zeroed status block.
    ///
    /// # Errors
    /// [`LayoutError`] when blobs overlap, overflow, registers are misaligned, source ids
    /// repeat, or a status block is shorter than its header.
    pub fn build(layout: &AcpiLayout) -> Result<AcpiTables, LayoutError> {
        let ghes = layout
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if layout.sources[..i]
                    .iter()
                    .any(|t| t.source_id == s.source_id)
                {
                    return Err(LayoutError::DuplicateSourceId(s.source_id));
                }
                if s.status_block_length < STATUS_BLOCK_HEADER_LEN {
                    return Err(LayoutError::StatusBlockTooShort {
                        source_id: s.source_id,
                        length: s.status_block_length,
                    });
                }
                Ok(s.ghes())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hest = Hest::encode(
            layout.oem_id,
            layout.oem_table_id,
            layout.oem_revision,
            &ghes,
        )
        .ok_or(LayoutError::TooManySources(ghes.len()))?;
        let mut blobs = vec![
            Blob {
                name: "RSDP".into(),
                gpa: layout.rsdp,
                bytes: Rsdp::encode(layout.oem_id, layout.xsdt),
            },
            Blob {
                name: "XSDT".into(),
                gpa: layout.xsdt,
                bytes: Xsdt::encode(
                    layout.oem_id,
                    layout.oem_table_id,
                    layout.oem_revision,
                    &[layout.hest],
                ),
            },
            Blob {
                name: "HEST".into(),
                gpa: layout.hest,
                bytes: hest,
            },
        ];
        for s in &layout.sources {
            let id = s.source_id;
            for (name, gpa) in [
                (
                    format!("GHES {id} error status address"),
                    s.error_status_address,
                ),
                (format!("GHES {id} read ack"), s.read_ack),
            ] {
                if !gpa.is_multiple_of(8) {
                    return Err(LayoutError::Misaligned { name, gpa });
                }
            }
            blobs.push(Blob {
                name: format!("GHES {id} error status address"),
                gpa: s.error_status_address,
                bytes: s.status_block.to_le_bytes().to_vec(),
            });
            blobs.push(Blob {
                name: format!("GHES {id} read ack"),
                gpa: s.read_ack,
                bytes: READ_ACK_INITIAL.to_le_bytes().to_vec(),
            });
            blobs.push(Blob {
                name: format!("GHES {id} error status block"),
                gpa: s.status_block,
                bytes: vec![0; s.status_block_length as usize],
            });
        }
        check_disjoint(&blobs)?;
        Ok(AcpiTables { blobs })
    }

    /// The blobs: RSDP, XSDT, HEST, then three per source.
    pub fn blobs(&self) -> &[Blob] {
        &self.blobs
    }

    /// The blob called `name`.
    pub fn blob(&self, name: &str) -> Option<&Blob> {
        self.blobs.iter().find(|b| b.name == name)
    }
}

/// Checks that no blob wraps around the address space and no two share a byte.
fn check_disjoint(blobs: &[Blob]) -> Result<(), LayoutError> {
    let mut spans = Vec::with_capacity(blobs.len());
    for b in blobs {
        let end = u64::try_from(b.bytes.len())
            .ok()
            .and_then(|len| b.gpa.checked_add(len))
            .ok_or_else(|| LayoutError::Overflow {
                name: b.name.clone(),
                gpa: b.gpa,
                len: b.bytes.len(),
            })?;
        spans.push((b.gpa, end, &b.name));
    }
    spans.sort();
    for pair in spans.windows(2) {
        let [(a_start, a_end, a), (b_start, b_end, b)] = pair else {
            continue;
        };
        if b_start < a_end {
            return Err(LayoutError::Overlap {
                a: (*a).clone(),
                a_start: *a_start,
                a_end: *a_end,
                b: (*b).clone(),
                b_start: *b_start,
                b_end: *b_end,
            });
        }
    }
    Ok(())
}

/// Why the walk from the RSDP to the status blocks stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// Guest memory could not be read there.
    #[error("cannot read {len} bytes of {what} at {gpa:#x}")]
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// How much.
        len: usize,
    },
    /// A table did not decode.
    #[error("table at {gpa:#x}: {source}")]
    Decode {
        /// Where the table is.
        gpa: u64,
        /// Why.
        source: DecodeError,
    },
    /// A table's length is beyond what this walk reads.
    #[error("{what} at {gpa:#x} claims {length} bytes (limit {MAX_TABLE_LEN})")]
    TooLong {
        /// Which table.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// Its length field.
        length: u32,
    },
    /// The XSDT lists no HEST.
    #[error("the XSDT lists no HEST")]
    NoHest,
    /// A HEST source is not a GHESv2 with a notification type this harness knows.
    #[error("HEST source {index} is not a GHESv2 source with SEA/GPIO/SEI notification")]
    UnsupportedSource {
        /// Index in the HEST.
        index: usize,
    },
}

/// Walks the tables from `rsdp` the way an OS does (RSDP, XSDT, HEST, each GHESv2
/// source's Error Status Address register) and returns the layout it finds. `read`
/// returns `len` bytes of guest memory at a GPA, or `None` outside guest memory.
///
/// # Errors
/// [`WalkError`] at the first table or register that cannot be read or decoded.
pub fn discover<F>(read: F, rsdp: u64) -> Result<AcpiLayout, WalkError>
where
    F: Fn(u64, usize) -> Option<Vec<u8>>,
{
    let get = |what, gpa, len| read(gpa, len).ok_or(WalkError::Unreadable { what, gpa, len });
    let decode_err = |gpa| move |source| WalkError::Decode { gpa, source };
    // A table's length field sits at offset 4 (SDT) or 20 (RSDP); read it, then the table.
    let table = |what, gpa, length_at: usize, min: usize| -> Result<Vec<u8>, WalkError> {
        let head = get(what, gpa, min)?;
        let length = head
            .get(length_at..length_at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes);
        if length > MAX_TABLE_LEN {
            return Err(WalkError::TooLong { what, gpa, length });
        }
        get(what, gpa, (length as usize).max(min))
    };
    let root = Rsdp::decode(&table("RSDP", rsdp, 20, RSDP_LEN)?).map_err(decode_err(rsdp))?;
    let xsdt_gpa = root.xsdt_address;
    let xsdt =
        Xsdt::decode(&table("XSDT", xsdt_gpa, 4, SDT_HEADER_LEN)?).map_err(decode_err(xsdt_gpa))?;
    let mut found = None;
    for &gpa in &xsdt.entries {
        if get("table header", gpa, 4)? == b"HEST" {
            found = Some(gpa);
            break;
        }
    }
    let hest_gpa = found.ok_or(WalkError::NoHest)?;
    let hest =
        Hest::decode(&table("HEST", hest_gpa, 4, SDT_HEADER_LEN)?).map_err(decode_err(hest_gpa))?;
    let mut sources = Vec::with_capacity(hest.sources.len());
    for (index, source) in hest.sources.iter().enumerate() {
        let unsupported = WalkError::UnsupportedSource { index };
        let ErrorSource::Ghes(g) = source else {
            return Err(unsupported);
        };
        let (Some(ack), Some(notify)) = (g.read_ack, Notify::from_code(g.notification.kind)) else {
            return Err(unsupported);
        };
        let esa = g.error_status_address.address;
        let word = get("Error Status Address register", esa, 8)?;
        let status_block = word
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        sources.push(GhesSource {
            source_id: g.source_id,
            notify,
            error_status_address: esa,
            status_block,
            status_block_length: g.error_status_block_length,
            read_ack: ack.register.address,
        });
    }
    Ok(AcpiLayout {
        rsdp,
        xsdt: xsdt_gpa,
        hest: hest_gpa,
        oem_id: hest.header.oem_id,
        oem_table_id: hest.header.oem_table_id,
        oem_revision: hest.header.oem_revision,
        sources,
    })
}
