//! ACPI tables a VMM gives an arm64 guest so that it can find memory-error records:
//! RSDP, XSDT and HEST with GHESv2 error sources (ACPI 6.5 §5.2 and §18.3.2).
//!
//! Building goes through rust-vmm `acpi_tables` (RSDP, XSDT, HEST, GHESv2, GAS and their
//! checksums, checked against the spec tables cited in each module); the plan of where
//! everything lives in guest memory, the GHES indirection words and the decoders are ours.
//!
//! ```
//! use ras_harness::formats::acpi::{AcpiLayout, AcpiTables};
//! let layout = AcpiLayout::qemu_like(0x4000_0000, 0x4000_1000, 0x4001_0000);
//! let tables = AcpiTables::build(&layout).unwrap();
//! for blob in tables.blobs() {
//!     // copy blob.bytes to guest physical address blob.gpa
//!     assert!(!blob.bytes.is_empty());
//! }
//! let sea = layout.source(0).unwrap();
//! assert_eq!(sea.status_block, 0x4001_0020);
//! ```

mod hest;
mod layout;
mod rsdp;
mod sdt;
mod xsdt;

pub use hest::{
    acknowledge, ErrorSource, Gas, Ghes, Hest, Notification, ReadAck, HEST_GHES_V2_LEN,
    NOTIFY_GPIO, NOTIFY_SEA, NOTIFY_SEI, READ_ACK_INITIAL, READ_ACK_PRESERVE, READ_ACK_WRITE,
};
pub use layout::{
    discover, AcpiLayout, AcpiTables, Blob, GhesSource, LayoutError, Notify, WalkError,
};
pub use rsdp::{Rsdp, RSDP_LEN};
pub use sdt::{DecodeError, SdtHeader, SDT_HEADER_LEN};
pub use xsdt::Xsdt;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::snapshot_settings;
    use proptest::prelude::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Guest memory holding exactly the built blobs; anything else is unreadable.
    fn memory(tables: &AcpiTables) -> impl Fn(u64, usize) -> Option<Vec<u8>> + '_ {
        move |gpa, len| {
            tables.blobs().iter().find_map(|b| {
                let start = usize::try_from(gpa.checked_sub(b.gpa)?).ok()?;
                b.bytes
                    .get(start..start.checked_add(len)?)
                    .map(<[u8]>::to_vec)
            })
        }
    }

    fn qemu_layout() -> AcpiLayout {
        AcpiLayout::qemu_like(0x4000_0000, 0x4000_1000, 0x4001_0000)
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn checksums_and_lengths_are_right() {
        let tables = AcpiTables::build(&qemu_layout()).unwrap();
        let rsdp = &tables.blob("RSDP").unwrap().bytes;
        assert_eq!(rsdp.len(), RSDP_LEN);
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u64_at(rsdp, 24), 0x4000_1000, "XsdtAddress");
        let xsdt = &tables.blob("XSDT").unwrap().bytes;
        assert_eq!((xsdt.len(), sum(xsdt)), (44, 0));
        let hest = &tables.blob("HEST").unwrap().bytes;
        assert_eq!(hest.len(), 36 + 4 + 2 * HEST_GHES_V2_LEN);
        assert_eq!(sum(hest), 0);
    }

    /// The GHESv2 bytes at the offsets of ACPI 6.5 Table 18.15, with QEMU's values.
    #[test]
    fn ghes_v2_fields_sit_at_their_spec_offsets() {
        let tables = AcpiTables::build(&qemu_layout()).unwrap();
        let hest = &tables.blob("HEST").unwrap().bytes;
        assert_eq!(&hest[36..40], &2u32.to_le_bytes(), "Error Source Count");
        let sea = &hest[40..40 + HEST_GHES_V2_LEN];
        assert_eq!(
            &sea[0..8],
            &[10, 0, 0, 0, 0xFF, 0xFF, 0, 1],
            "type, id, related, flags, enabled"
        );
        assert_eq!(
            &sea[8..20],
            &[1, 0, 0, 0, 1, 0, 0, 0, 0, 4, 0, 0],
            "records, sections, raw 1K"
        );
        assert_eq!(
            &sea[20..24],
            &[0, 64, 0, 4],
            "Error Status Address GAS: memory, 64 bits, QWORD"
        );
        assert_eq!(u64_at(sea, 24), 0x4001_0000);
        assert_eq!(&sea[32..34], &[NOTIFY_SEA, 28]);
        assert!(
            sea[34..60].iter().all(|b| *b == 0),
            "notification fields zero, as QEMU"
        );
        assert_eq!(
            &sea[60..64],
            &1024u32.to_le_bytes(),
            "Error Status Block Length"
        );
        assert_eq!(&sea[64..68], &[0, 64, 0, 4], "Read Ack GAS");
        assert_eq!(u64_at(sea, 68), 0x4001_0010);
        assert_eq!(u64_at(sea, 76), 0xFFFF_FFFF_FFFF_FFFE);
        assert_eq!(u64_at(sea, 84), 1);
        let gpio = &hest[40 + HEST_GHES_V2_LEN..];
        assert_eq!((gpio[2], gpio[32]), (1, NOTIFY_GPIO));
    }

    /// The indirection words: the register holds the block's GPA; read ack starts at 1.
    #[test]
    fn registers_hold_the_block_address_and_the_initial_ack() {
        let layout = qemu_layout();
        let tables = AcpiTables::build(&layout).unwrap();
        let sea = layout.source_for(Notify::Sea).unwrap();
        let esa = tables.blob("GHES 0 error status address").unwrap();
        assert_eq!((esa.gpa, u64_at(&esa.bytes, 0)), (0x4001_0000, 0x4001_0020));
        let ack = tables.blob("GHES 0 read ack").unwrap();
        assert_eq!((ack.gpa, u64_at(&ack.bytes, 0)), (sea.read_ack, 1));
        let block = tables.blob("GHES 1 error status block").unwrap();
        assert_eq!((block.gpa, block.bytes.len()), (0x4001_0420, 1024));
        assert_eq!(acknowledge(0, READ_ACK_PRESERVE, READ_ACK_WRITE), 1);
        assert_eq!(acknowledge(0xF0, READ_ACK_PRESERVE, READ_ACK_WRITE), 0xF1);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let mut l = qemu_layout();
        l.hest = l.xsdt + 8;
        assert!(matches!(
            AcpiTables::build(&l),
            Err(LayoutError::Overlap { ref a, ref b, .. }) if a == "XSDT" && b == "HEST"
        ));
        let mut l = qemu_layout();
        l.sources[1].read_ack += 4;
        assert!(matches!(
            AcpiTables::build(&l),
            Err(LayoutError::Misaligned {
                gpa: 0x4001_001c,
                ..
            })
        ));
        let mut l = qemu_layout();
        l.sources[1].source_id = 0;
        assert_eq!(
            AcpiTables::build(&l),
            Err(LayoutError::DuplicateSourceId(0))
        );
        let mut l = qemu_layout();
        l.sources[0].status_block = u64::MAX - 8;
        assert!(matches!(
            AcpiTables::build(&l),
            Err(LayoutError::Overflow { .. })
        ));
    }

    #[test]
    fn decoders_name_table_field_and_offset() {
        let tables = AcpiTables::build(&qemu_layout()).unwrap();
        let mut hest = tables.blob("HEST").unwrap().bytes.clone();
        hest[100] ^= 1;
        assert_eq!(
            Hest::decode(&hest),
            Err(DecodeError::BadChecksum {
                table: "HEST",
                field: "Checksum",
                offset: 9,
                covered: 224,
                sum: 1
            })
        );
        let mut rsdp = tables.blob("RSDP").unwrap().bytes.clone();
        // Revision 2 -> 0 with the first checksum fixed up, so the revision check is reached.
        rsdp[15] = 0;
        rsdp[8] = rsdp[8].wrapping_add(2);
        assert!(matches!(
            Rsdp::decode(&rsdp),
            Err(DecodeError::BadField {
                table: "RSDP",
                field: "Revision",
                offset: 15,
                value: 0,
                ..
            })
        ));
        let xsdt = &tables.blob("XSDT").unwrap().bytes;
        assert!(matches!(
            Xsdt::decode(&xsdt[..40]),
            Err(DecodeError::Truncated {
                table: "XSDT",
                field: "Length",
                need: 44,
                len: 40,
                ..
            })
        ));
        assert!(matches!(
            Hest::decode(xsdt),
            Err(DecodeError::BadSignature { table: "HEST", .. })
        ));
    }

    prop_compose! {
        /// Layouts in three disjoint regions: RSDP below 1 GiB, tables at 1-2 GiB, the
        /// registers and blocks above 4 GiB, with up to 4 sources of any notification.
        fn layout()(rsdp in 0u64..0x400_0000, tables in 0x400_0000u64..0x800_0000,
                    errors in 0x1000_0000u64..0x2000_0000,
                    kinds in prop::collection::vec(0usize..3, 0..5),
                    ids: u16,
                    len in 20u32..4096, oem: [u8; 6], oem_table_id: [u8; 8],
                    oem_revision: u32) -> AcpiLayout {
            let n = kinds.len() as u64;
            let block_len = u64::from(len).next_multiple_of(8);
            AcpiLayout {
                rsdp: rsdp * 16, xsdt: tables * 16, hest: tables * 16 + 0x40,
                oem_id: oem, oem_table_id, oem_revision,
                sources: kinds.iter().enumerate().map(|(i, k)| {
                    let i = i as u64;
                    let base = errors * 8;
                    GhesSource {
                        source_id: ids.wrapping_add(i as u16),
                        notify: [Notify::Sea, Notify::Gpio, Notify::Sei][*k],
                        error_status_address: base + 8 * i,
                        read_ack: base + 8 * (n + i),
                        status_block: base + 16 * n + block_len * i,
                        status_block_length: len,
                    }
                }).collect(),
            }
        }
    }

    proptest! {
        /// decode(build(x)) == x: the guest's walk finds the layout the VMM chose, and the
        /// HEST decodes to the structures it was built from.
        #[test]
        fn walk_finds_the_built_layout(l in layout()) {
            let tables = AcpiTables::build(&l).unwrap();
            prop_assert_eq!(discover(memory(&tables), l.rsdp), Ok(l.clone()));
            let hest = Hest::decode(&tables.blob("HEST").unwrap().bytes).unwrap();
            let built: Vec<_> = l.sources.iter().map(|s| ErrorSource::Ghes(s.ghes())).collect();
            prop_assert_eq!(hest.sources, built);
            prop_assert_eq!(&hest.header.creator_id, b"RVAT");
        }

        #[test]
        fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Rsdp::decode(&bytes);
            let _ = Xsdt::decode(&bytes);
            let _ = Hest::decode(&bytes);
        }

        /// Corrupt a real HEST anywhere, fix the checksum so decoding goes past it, and
        /// the decoder still returns a value or an error.
        #[test]
        fn decoders_never_panic_on_corrupted_tables(at in 0usize..224, value: u8,
                                                     cut in 0usize..=224) {
            let tables = AcpiTables::build(&qemu_layout()).unwrap();
            let mut hest = tables.blob("HEST").unwrap().bytes.clone();
            hest[at] = value;
            hest[9] = hest[9].wrapping_sub(sum(&hest));
            let _ = Hest::decode(&hest[..cut]);
            let _ = Hest::decode(&hest);
            let mem = memory(&tables);
            let patched = |gpa: u64, len: usize| {
                if gpa == 0x4000_1040 { hest.get(..len).map(<[u8]>::to_vec) } else { mem(gpa, len) }
            };
            let _ = discover(patched, 0x4000_0000);
        }
    }

    /// The HEST at QEMU's layout, as bytes and decoded: the reference a reviewer checks
    /// against ACPI 6.5 Table 18.15. Creator ID "RVAT" is acpi_tables' (QEMU writes
    /// "BXPC"), and its creator revision bytes 00 00 00 01 read as 0x1000000; everything
    /// else matches QEMU's build_ghes_v2_entry.
    #[test]
    fn hest_snapshot() {
        let tables = AcpiTables::build(&qemu_layout()).unwrap();
        let hest = &tables.blob("HEST").unwrap();
        let mut text = format!("HEST at {:#x}, {} bytes\n", hest.gpa, hest.bytes.len());
        for (i, row) in hest.bytes.chunks(16).enumerate() {
            let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
            text += &format!("{:04x}: {}\n", i * 16, hex.join(" "));
        }
        let decoded = Hest::decode(&hest.bytes).unwrap();
        let h = &decoded.header;
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        text += &format!(
            "\n{:?} length {:#x} revision {} checksum {:#04x} OEM {:?} {:?} rev {} creator {:?} rev {:#x}\n",
            s(&h.signature), h.length, h.revision, h.checksum, s(&h.oem_id),
            s(&h.oem_table_id), h.oem_revision, s(&h.creator_id), h.creator_revision,
        );
        text += &format!("{:#x?}\n", decoded.sources);
        snapshot_settings("acpi").bind(|| insta::assert_snapshot!("hest_qemu_like", text));
    }
}
