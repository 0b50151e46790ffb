//! The ISS of a Data Abort, EC 0x24 / 0x25 (Arm ARM D24.2.45 ESR_EL1, "ISS encoding for an
//! exception from a Data Abort").

use serde::Serialize;

use super::{hex, ESR_ELx_FSC_EXTABT, Origin, EA, FNV, FSC_MASK, S1PTW, SET_SHIFT};

const ISV: u32 = 1 << 24;
const SAS_SHIFT: u32 = 22;
const SSE: u32 = 1 << 21;
const SRT_SHIFT: u32 = 16;
const SF: u32 = 1 << 15;
const AR: u32 = 1 << 14;
const VNCR: u32 = 1 << 13;
const CM: u32 = 1 << 8;
const WNR: u32 = 1 << 6;

/// Data Abort ISS bits this codec names; the rest is RES0 (or a feature it does not model).
const NAMED: u32 = ISV | VNCR | (3 << SET_SHIFT) | FNV | EA | CM | S1PTW | WNR | FSC_MASK;
/// Bits named only when ISV=1: SAS, SSE, SRT, SF, AR.
const ISV_FIELDS: u32 = (3 << SAS_SHIFT) | SSE | (0x1F << SRT_SHIFT) | SF | AR;

/// Access syndrome of a Data Abort, valid when ISS.ISV is 1 (ISS \[23:14\]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AccessSyndrome {
    /// SAS \[23:22\]: access size, log2 of bytes (0 byte .. 3 doubleword).
    #[serde(serialize_with = "hex")]
    pub sas: u8,
    /// SSE \[21\]: the load was sign-extended.
    pub sse: bool,
    /// SRT \[20:16\]: the transfer register number.
    #[serde(serialize_with = "hex")]
    pub srt: u8,
    /// SF \[15\]: the register is 64 bits wide.
    pub sf: bool,
    /// AR \[14\]: acquire/release semantics.
    pub ar: bool,
}

/// A Data Abort syndrome (EC 0x24 / 0x25).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct DataAbort {
    /// Selects EC 0x24 (lower EL) or 0x25 (same EL).
    pub from: Origin,
    /// IL \[25\]: 32-bit instruction (1) or 16-bit (0).
    pub il: bool,
    /// ISV \[24\] and ISS \[23:14\]: `Some` when the syndrome describes the access.
    pub access: Option<AccessSyndrome>,
    /// VNCR \[13\]: the fault came from a VNCR_EL2 access (FEAT_NV2).
    pub vncr: bool,
    /// SET \[12:11\]: synchronous error type (FEAT_RAS), see [`super::set_name`].
    #[serde(serialize_with = "hex")]
    pub set: u8,
    /// FnV \[10\]: FAR is not valid.
    pub fnv: bool,
    /// EA \[9\]: External abort type, IMPLEMENTATION DEFINED.
    pub ea: bool,
    /// CM \[8\]: the fault came from a cache maintenance instruction.
    pub cm: bool,
    /// S1PTW \[7\]: the fault was on a stage 2 walk for a stage 1 translation.
    pub s1ptw: bool,
    /// WnR \[6\]: the access was a write.
    pub wnr: bool,
    /// DFSC \[5:0\]: data fault status code, e.g. [`super::ESR_ELx_FSC_EXTABT`].
    #[serde(serialize_with = "hex")]
    pub dfsc: u8,
    /// ISS bits this codec does not name (RES0, or ISS \[23:14\] when ISV=0), kept so that
    /// decoding loses nothing.
    #[serde(serialize_with = "hex")]
    pub other_iss: u32,
}

impl DataAbort {
    /// A synchronous external abort on a data access from `from`, IL 1, DFSC 0x10,
    /// nothing else; FnV says FAR is not valid (QEMU's emulated SEA sets it, KVM's
    /// ext_dabt does not: docs/ras-facts.md §6).
    pub const fn sea(from: Origin, fnv: bool) -> Self {
        Self {
            from,
            il: true,
            access: None,
            vncr: false,
            set: 0,
            fnv,
            ea: false,
            cm: false,
            s1ptw: false,
            wnr: false,
            dfsc: ESR_ELx_FSC_EXTABT,
            other_iss: 0,
        }
    }

    /// ISS \[24:0\].
    pub(super) const fn iss(self) -> u32 {
        let access = match self.access {
            Some(a) => {
                ISV | ((a.sas as u32 & 3) << SAS_SHIFT)
                    | if a.sse { SSE } else { 0 }
                    | ((a.srt as u32 & 0x1F) << SRT_SHIFT)
                    | if a.sf { SF } else { 0 }
                    | if a.ar { AR } else { 0 }
            }
            None => 0,
        };
        let named = if self.access.is_some() {
            NAMED | ISV_FIELDS
        } else {
            NAMED
        };
        (self.other_iss & !named)
            | access
            | if self.vncr { VNCR } else { 0 }
            | ((self.set as u32 & 3) << SET_SHIFT)
            | if self.fnv { FNV } else { 0 }
            | if self.ea { EA } else { 0 }
            | if self.cm { CM } else { 0 }
            | if self.s1ptw { S1PTW } else { 0 }
            | if self.wnr { WNR } else { 0 }
            | (self.dfsc as u32 & FSC_MASK)
    }

    /// The fields of `iss`, for a Data Abort taken `from` there.
    pub(super) fn decode(from: Origin, il: bool, iss: u32) -> Self {
        let bit = |m: u32| iss & m != 0;
        let access = bit(ISV).then(|| AccessSyndrome {
            sas: ((iss >> SAS_SHIFT) & 3) as u8,
            sse: bit(SSE),
            srt: ((iss >> SRT_SHIFT) & 0x1F) as u8,
            sf: bit(SF),
            ar: bit(AR),
        });
        let named = if access.is_some() {
            NAMED | ISV_FIELDS
        } else {
            NAMED
        };
        DataAbort {
            from,
            il,
            access,
            vncr: bit(VNCR),
            set: ((iss >> SET_SHIFT) & 3) as u8,
            fnv: bit(FNV),
            ea: bit(EA),
            cm: bit(CM),
            s1ptw: bit(S1PTW),
            wnr: bit(WNR),
            dfsc: (iss & FSC_MASK) as u8,
            other_iss: iss & !named,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::esr::tests::origin;
    use crate::formats::esr::{Decoded, Esr};
    use proptest::prelude::*;

    prop_compose! {
        fn data_abort()(from in origin(), il: bool, isv: bool, sas in 0u8..4, sse: bool,
                        srt in 0u8..32, sf: bool, ar: bool, vncr: bool, set in 0u8..4,
                        fnv: bool, ea: bool, cm: bool, s1ptw: bool, wnr: bool,
                        dfsc in 0u8..64, res0 in 0u32..(1 << 10)) -> DataAbort {
            DataAbort {
                from, il,
                access: isv.then_some(AccessSyndrome { sas, sse, srt, sf, ar }),
                vncr, set, fnv, ea, cm, s1ptw, wnr, dfsc,
                // Only ISS [23:14] can be unnamed, and only when ISV=0.
                other_iss: if isv { 0 } else { res0 << 14 },
            }
        }
    }

    proptest! {
        #[test]
        fn data_abort_round_trips(d in data_abort()) {
            prop_assert_eq!(Esr::data_abort(d).decode(), Decoded::DataAbort(d));
        }
    }

    /// The SEA values of docs/ras-facts.md §6 built from typed fields give the seen raw values.
    #[test]
    fn builders_give_the_values_kvm_and_qemu_inject() {
        let sea = |from, fnv| Esr::data_abort(DataAbort::sea(from, fnv));
        // QEMU's emulated SEA (FnV=1) and KVM's ext_dabt (FnV=0).
        assert_eq!(sea(Origin::SameEl, true).raw(), 0x9600_0410);
        assert_eq!(sea(Origin::LowerEl, true).raw(), 0x9200_0410);
        assert_eq!(sea(Origin::SameEl, false).raw(), 0x9600_0010);
        assert_eq!(sea(Origin::LowerEl, false).raw(), 0x9200_0010);
    }
}
