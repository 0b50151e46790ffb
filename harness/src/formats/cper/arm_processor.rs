//! ARM Processor Error section (UEFI 2.10 N.2.4.4: the section header, N.2.4.4.1 ARM
//! Processor Error Information, N.2.4.4.2 ARM Processor Error Context Information; Linux
//! `struct cper_sec_proc_arm`, `cper_arm_err_info`, `cper_arm_ctx_info`).

use serde::Serialize;

use super::wire::{hex, hex_bytes, Error, Reader, Result};

/// Size of the section header before the error information entries.
pub const ARM_SECTION_HEADER_LEN: usize = 40;
const _: () = assert!(ARM_SECTION_HEADER_LEN == 4 + 2 + 2 + 4 + 1 + 3 + 8 + 8 + 4 + 4);
/// Size of one ARM Processor Error Information structure (its Length field holds 32).
pub const ARM_ERROR_INFO_LEN: usize = 32;
const _: () = assert!(ARM_ERROR_INFO_LEN == 1 + 1 + 2 + 1 + 2 + 1 + 3 * 8);
/// Size of the fixed part of an ARM Processor Error Context Information structure.
pub const ARM_CONTEXT_HEADER_LEN: usize = 8;

/// Section Validation Bits (`CPER_ARM_VALID_*`).
pub mod valid {
    /// Bit 0: MPIDR valid.
    pub const MPIDR: u32 = 1 << 0;
    /// Bit 1: Error affinity level valid.
    pub const AFFINITY_LEVEL: u32 = 1 << 1;
    /// Bit 2: Running state valid.
    pub const RUNNING_STATE: u32 = 1 << 2;
    /// Bit 3: Vendor specific information valid.
    pub const VENDOR_INFO: u32 = 1 << 3;
}

/// Error Information Validation Bits (`CPER_ARM_INFO_VALID_*`).
pub mod info_valid {
    /// Bit 0: Multiple error count valid.
    pub const MULTIPLE_ERROR: u16 = 1 << 0;
    /// Bit 1: Flags valid.
    pub const FLAGS: u16 = 1 << 1;
    /// Bit 2: Error information valid.
    pub const ERROR_INFORMATION: u16 = 1 << 2;
    /// Bit 3: Virtual fault address valid.
    pub const VIRTUAL_FAULT_ADDRESS: u16 = 1 << 3;
    /// Bit 4: Physical fault address valid. Linux hands a cache error's page to
    /// memory_failure() only with this bit (ghes_handle_arm_hw_error).
    pub const PHYSICAL_FAULT_ADDRESS: u16 = 1 << 4;
}

/// Error Information Flags (`CPER_ARM_INFO_FLAGS_*`).
pub mod info_flags {
    /// Bit 0: First error captured.
    pub const FIRST: u8 = 1 << 0;
    /// Bit 1: Last error captured.
    pub const LAST: u8 = 1 << 1;
    /// Bit 2: Propagated.
    pub const PROPAGATED: u8 = 1 << 2;
    /// Bit 3: Overflow.
    pub const OVERFLOW: u8 = 1 << 3;
}

/// One ARM Processor Error Information structure (32 bytes).
///
/// `error_type` stays a number: the kernel's `CPER_ARM_*_ERROR` (UEFI 2.6-2.9) give it
/// values (0 cache, 1 TLB, 2 bus, 3 micro-architectural), while later UEFI errata are
/// reported to redefine it as a bit mask (not checked against the spec text here).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct ArmErrorInfo {
    /// Offset 0: Version.
    pub version: u8,
    /// Offset 2: Validation Bits ([`info_valid`]). (Offset 1, Length, is always 32.)
    #[serde(serialize_with = "hex")]
    pub validation_bits: u16,
    /// Offset 4: Type.
    pub error_type: u8,
    /// Offset 5: Multiple Error count.
    pub multiple_error: u16,
    /// Offset 7: Flags ([`info_flags`]).
    #[serde(serialize_with = "hex")]
    pub flags: u8,
    /// Offset 8: Error Information (cache/TLB/bus fields, N.2.4.4.1.1-3).
    #[serde(serialize_with = "hex")]
    pub error_information: u64,
    /// Offset 16: Virtual Fault Address.
    #[serde(serialize_with = "hex")]
    pub virtual_fault_address: u64,
    /// Offset 24: Physical Fault Address.
    #[serde(serialize_with = "hex")]
    pub physical_fault_address: u64,
}

impl ArmErrorInfo {
    const NAME: &'static str = "ARM Processor Error Information";

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        // Offset 1, Length: the structure's fixed size.
        out.push(ARM_ERROR_INFO_LEN as u8);
        out.extend_from_slice(&self.validation_bits.to_le_bytes());
        out.push(self.error_type);
        out.extend_from_slice(&self.multiple_error.to_le_bytes());
        out.push(self.flags);
        out.extend_from_slice(&self.error_information.to_le_bytes());
        out.extend_from_slice(&self.virtual_fault_address.to_le_bytes());
        out.extend_from_slice(&self.physical_fault_address.to_le_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut f = r.take(Self::NAME, ARM_ERROR_INFO_LEN)?;
        let version = f.u8();
        let length_at = f.offset();
        let length = f.u8();
        if usize::from(length) != ARM_ERROR_INFO_LEN {
            return Err(Error::BadFieldValue {
                structure: Self::NAME,
                field: "length",
                offset: length_at,
                value: length.into(),
                expected: ARM_ERROR_INFO_LEN as u64,
            });
        }
        Ok(Self {
            version,
            validation_bits: f.u16(),
            error_type: f.u8(),
            multiple_error: f.u16(),
            flags: f.u8(),
            error_information: f.u64(),
            virtual_fault_address: f.u64(),
            physical_fault_address: f.u64(),
        })
    }
}

/// One ARM Processor Error Context Information structure: a register dump.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ArmContextInfo {
    /// Offset 0: Version.
    pub version: u16,
    /// Offset 2: Register Context Type (0-3 AArch32 GPR/EL1/EL2/secure, 4-7 AArch64
    /// GPR/EL1/EL2/EL3, 8 misc; the kernel's `arm_reg_ctx_strs`).
    pub register_context_type: u16,
    /// Offset 8: Register Array, as many bytes as the Register Array Size at offset 4.
    #[serde(serialize_with = "hex_bytes")]
    pub register_array: Vec<u8>,
}

impl ArmContextInfo {
    const NAME: &'static str = "ARM Processor Error Context Information";

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.register_context_type.to_le_bytes());
        out.extend_from_slice(&len_u32(self.register_array.len()).to_le_bytes());
        out.extend_from_slice(&self.register_array);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut f = r.take(Self::NAME, ARM_CONTEXT_HEADER_LEN)?;
        let version = f.u16();
        let register_context_type = f.u16();
        let size = f.u32();
        let register_array = r
            .bytes(Self::NAME, usize::try_from(size).unwrap_or(usize::MAX))?
            .to_vec();
        Ok(Self {
            version,
            register_context_type,
            register_array,
        })
    }
}

/// The ARM Processor Error section.
///
/// The counts (ERR_INFO_NUM, CONTEXT_INFO_NUM) and the Section Length are not stored:
/// the encoder derives them from the vectors, and the decoder checks them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ArmProcessorSection {
    /// Offset 0: Validation Bits ([`valid`]).
    #[serde(serialize_with = "hex")]
    pub validation_bits: u32,
    /// Offset 12: Error affinity level.
    pub error_affinity_level: u8,
    /// Offset 13: Reserved, must be zero; kept so that any input re-encodes exactly.
    #[serde(serialize_with = "hex_bytes")]
    pub reserved: [u8; 3],
    /// Offset 16: MPIDR_EL1.
    #[serde(serialize_with = "hex")]
    pub mpidr: u64,
    /// Offset 24: MIDR_EL1.
    #[serde(serialize_with = "hex")]
    pub midr: u64,
    /// Offset 32: Running State (bit 0: processor running).
    #[serde(serialize_with = "hex")]
    pub running_state: u32,
    /// Offset 36: PSCI State, meaningful when the processor is not running.
    #[serde(serialize_with = "hex")]
    pub psci_state: u32,
    /// From offset 40: ERR_INFO_NUM error information structures.
    pub error_info: Vec<ArmErrorInfo>,
    /// Then CONTEXT_INFO_NUM context information structures.
    pub context_info: Vec<ArmContextInfo>,
    /// Then vendor specific bytes, up to Section Length.
    #[serde(serialize_with = "hex_bytes")]
    pub vendor_specific: Vec<u8>,
}

/// A length as the u32 the wire holds; lengths past 4 GiB are not CPER and saturate.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl ArmProcessorSection {
    pub(crate) const NAME: &'static str = "ARM Processor Error section";

    /// The section's size on the wire.
    pub fn encoded_len(&self) -> usize {
        ARM_SECTION_HEADER_LEN
            + self.error_info.len() * ARM_ERROR_INFO_LEN
            + self
                .context_info
                .iter()
                .map(|c| ARM_CONTEXT_HEADER_LEN + c.register_array.len())
                .sum::<usize>()
            + self.vendor_specific.len()
    }

    /// The wire bytes. More than 65535 error or context structures do not fit the u16
    /// counts and saturate (the result then does not decode).
    pub fn encode(&self) -> Vec<u8> {
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.validation_bits.to_le_bytes());
        out.extend_from_slice(&count(self.error_info.len()).to_le_bytes());
        out.extend_from_slice(&count(self.context_info.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(self.encoded_len()).to_le_bytes());
        out.push(self.error_affinity_level);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.mpidr.to_le_bytes());
        out.extend_from_slice(&self.midr.to_le_bytes());
        out.extend_from_slice(&self.running_state.to_le_bytes());
        out.extend_from_slice(&self.psci_state.to_le_bytes());
        for info in &self.error_info {
            info.write(&mut out);
        }
        for ctx in &self.context_info {
            ctx.write(&mut out);
        }
        out.extend_from_slice(&self.vendor_specific);
        out
    }

    /// Decodes one whole section: `bytes` is the section as its data entry bounds it.
    ///
    /// # Errors
    /// [`Error::BadDataLength`] when Section Length differs from `bytes.len()`,
    /// [`Error::BadFieldValue`] when an error information Length is not 32,
    /// [`Error::Truncated`] when the structures the counts announce do not fit.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_at(bytes, 0)
    }

    /// [`Self::decode`] for a section found at offset `base` of a larger input.
    pub(crate) fn decode_at(bytes: &[u8], base: usize) -> Result<Self> {
        let mut r = Reader::with_base(bytes, base);
        let mut f = r.take(Self::NAME, ARM_SECTION_HEADER_LEN)?;
        let validation_bits = f.u32();
        let err_info_num = f.u16();
        let context_info_num = f.u16();
        let length_at = f.offset();
        let section_length = f.u32();
        if usize::try_from(section_length).ok() != Some(bytes.len()) {
            return Err(Error::BadDataLength {
                structure: Self::NAME,
                field: "section_length",
                offset: length_at,
                declared: section_length.into(),
                actual: bytes.len() as u64,
            });
        }
        let error_affinity_level = f.u8();
        let reserved = f.array();
        let mpidr = f.u64();
        let midr = f.u64();
        let running_state = f.u32();
        let psci_state = f.u32();
        let error_info = (0..err_info_num)
            .map(|_| ArmErrorInfo::read(&mut r))
            .collect::<Result<_>>()?;
        let context_info = (0..context_info_num)
            .map(|_| ArmContextInfo::read(&mut r))
            .collect::<Result<_>>()?;
        let vendor_specific = r.bytes(Self::NAME, r.remaining())?.to_vec();
        Ok(Self {
            validation_bits,
            error_affinity_level,
            reserved,
            mpidr,
            midr,
            running_state,
            psci_state,
            error_info,
            context_info,
            vendor_specific,
        })
    }
}

/// One cache error at physical address `pa`, with the fields a processor fills: MPIDR and
/// running state, one error information (type 0, the physical fault address valid), one
/// AArch64 EL1 register context and three vendor bytes.
pub fn cache_error_section(pa: u64) -> ArmProcessorSection {
    ArmProcessorSection {
        validation_bits: valid::MPIDR | valid::RUNNING_STATE,
        error_affinity_level: 0,
        reserved: [0; 3],
        mpidr: 0x8000_0000,
        midr: 0x410f_d0c0,
        running_state: 1,
        psci_state: 0,
        error_info: vec![ArmErrorInfo {
            version: 0,
            validation_bits: info_valid::PHYSICAL_FAULT_ADDRESS,
            error_type: 0,
            multiple_error: 0,
            flags: info_flags::FIRST,
            error_information: 0,
            virtual_fault_address: 0,
            physical_fault_address: pa,
        }],
        context_info: vec![ArmContextInfo {
            version: 0,
            register_context_type: 4,
            register_array: vec![0xab; 16],
        }],
        vendor_specific: vec![1, 2, 3],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::cper::testing::roundtrip_exact;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn any_error_info() -> impl Strategy<Value = ArmErrorInfo> {
        (any::<(u8, u16, u8, u16, u8)>(), any::<[u64; 3]>()).prop_map(
            |((version, vb, ty, multi, flags), [info, va, pa])| ArmErrorInfo {
                version,
                validation_bits: vb,
                error_type: ty,
                multiple_error: multi,
                flags,
                error_information: info,
                virtual_fault_address: va,
                physical_fault_address: pa,
            },
        )
    }

    fn any_context_info() -> impl Strategy<Value = ArmContextInfo> {
        (any::<u16>(), any::<u16>(), vec(any::<u8>(), 0..64)).prop_map(|(v, t, regs)| {
            ArmContextInfo {
                version: v,
                register_context_type: t,
                register_array: regs,
            }
        })
    }

    pub(crate) fn any_arm_section() -> impl Strategy<Value = ArmProcessorSection> {
        (
            any::<(u32, u8, [u8; 3], u64, u64, u32, u32)>(),
            vec(any_error_info(), 0..4),
            vec(any_context_info(), 0..3),
            vec(any::<u8>(), 0..32),
        )
            .prop_map(
                |((vb, level, reserved, mpidr, midr, rs, psci), info, ctx, vendor)| {
                    ArmProcessorSection {
                        validation_bits: vb,
                        error_affinity_level: level,
                        reserved,
                        mpidr,
                        midr,
                        running_state: rs,
                        psci_state: psci,
                        error_info: info,
                        context_info: ctx,
                        vendor_specific: vendor,
                    }
                },
            )
    }

    #[test]
    fn layout_matches_cper_sec_proc_arm() {
        let s = cache_error_section(0x4001_0000);
        let bytes = s.encode();
        assert_eq!(bytes.len(), 40 + 32 + 8 + 16 + 3);
        assert_eq!(bytes[0..4], 0x5u32.to_le_bytes()); // validation bits
        assert_eq!(bytes[4..6], 1u16.to_le_bytes()); // err_info_num
        assert_eq!(bytes[6..8], 1u16.to_le_bytes()); // context_info_num
        assert_eq!(bytes[8..12], 99u32.to_le_bytes()); // section_length
        assert_eq!(bytes[16..24], 0x8000_0000u64.to_le_bytes()); // mpidr
        assert_eq!(bytes[24..32], 0x410f_d0c0u64.to_le_bytes()); // midr
        assert_eq!(bytes[32..36], 1u32.to_le_bytes()); // running state
        assert_eq!(bytes[40], 0); // info version
        assert_eq!(bytes[41], 32); // info length
        assert_eq!(bytes[42..44], 0x10u16.to_le_bytes()); // info validation bits
        assert_eq!(bytes[47], 1); // info flags
        assert_eq!(bytes[64..72], 0x4001_0000u64.to_le_bytes()); // physical fault address
        assert_eq!(bytes[72..80], [0, 0, 4, 0, 16, 0, 0, 0]); // context header
        assert_eq!(bytes[96..], [1, 2, 3]); // vendor specific
        roundtrip_exact(
            &bytes,
            ArmProcessorSection::decode,
            ArmProcessorSection::encode,
        );
    }

    #[test]
    fn decode_reports_bad_lengths() {
        let bytes = cache_error_section(0).encode();
        assert_eq!(
            ArmProcessorSection::decode(&bytes[..98]),
            Err(Error::BadDataLength {
                structure: "ARM Processor Error section",
                field: "section_length",
                offset: 8,
                declared: 99,
                actual: 98,
            })
        );
        let mut bad = bytes.clone();
        bad[41] = 40;
        assert_eq!(
            ArmProcessorSection::decode(&bad),
            Err(Error::BadFieldValue {
                structure: "ARM Processor Error Information",
                field: "length",
                offset: 41,
                value: 40,
                expected: 32,
            })
        );
        let mut many = bytes;
        many[4] = 3; // three error infos announced, one present plus 27 more bytes
                     // The second one would start at 72, where only 27 bytes of the section are left.
        assert_eq!(
            ArmProcessorSection::decode(&many),
            Err(Error::Truncated {
                structure: "ARM Processor Error Information",
                offset: 72,
                needed: 32,
                available: 27,
            })
        );
    }

    proptest! {
        #[test]
        fn round_trips(s in any_arm_section()) {
            let bytes = s.encode();
            prop_assert_eq!(bytes.len(), s.encoded_len());
            prop_assert_eq!(ArmProcessorSection::decode(&bytes), Ok(s));
        }

        #[test]
        fn decode_never_panics(bytes in vec(any::<u8>(), 0..200)) {
            if let Ok(s) = ArmProcessorSection::decode(&bytes) {
                prop_assert_eq!(s.encode(), bytes);
            }
        }
    }
}
