//! The ISS of an Instruction Abort, EC 0x20 / 0x21 (Arm ARM D24.2.45 ESR_EL1, "ISS encoding
//! for an exception from an Instruction Abort").

use serde::Serialize;

use super::{hex, ESR_ELx_FSC_EXTABT, Origin, EA, FNV, FSC_MASK, S1PTW, SET_SHIFT};

/// Instruction Abort ISS bits this codec names; the rest is RES0.
const NAMED: u32 = (3 << SET_SHIFT) | FNV | EA | S1PTW | FSC_MASK;

/// An Instruction Abort syndrome (EC 0x20 / 0x21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct InstructionAbort {
    /// Selects EC 0x20 (lower EL) or 0x21 (same EL).
    pub from: Origin,
    /// IL \[25\].
    pub il: bool,
    /// SET \[12:11\]: synchronous error type (FEAT_RAS).
    #[serde(serialize_with = "hex")]
    pub set: u8,
    /// FnV \[10\]: FAR is not valid.
    pub fnv: bool,
    /// EA \[9\]: External abort type.
    pub ea: bool,
    /// S1PTW \[7\].
    pub s1ptw: bool,
    /// IFSC \[5:0\]: instruction fault status code.
    #[serde(serialize_with = "hex")]
    pub ifsc: u8,
    /// ISS bits this codec does not name (RES0).
    #[serde(serialize_with = "hex")]
    pub other_iss: u32,
}

impl InstructionAbort {
    /// A synchronous external abort on an instruction fetch from `from`, IL 1, IFSC 0x10,
    /// nothing else; FnV as for [`super::DataAbort::sea`].
    pub const fn sea(from: Origin, fnv: bool) -> Self {
        Self {
            from,
            il: true,
            set: 0,
            fnv,
            ea: false,
            s1ptw: false,
            ifsc: ESR_ELx_FSC_EXTABT,
            other_iss: 0,
        }
    }

    /// ISS \[24:0\].
    pub(super) const fn iss(self) -> u32 {
        (self.other_iss & !NAMED)
            | ((self.set as u32 & 3) << SET_SHIFT)
            | if self.fnv { FNV } else { 0 }
            | if self.ea { EA } else { 0 }
            | if self.s1ptw { S1PTW } else { 0 }
            | (self.ifsc as u32 & FSC_MASK)
    }

    /// The fields of `iss`, for an Instruction Abort taken `from` there.
    pub(super) fn decode(from: Origin, il: bool, iss: u32) -> Self {
        let bit = |m: u32| iss & m != 0;
        InstructionAbort {
            from,
            il,
            set: ((iss >> SET_SHIFT) & 3) as u8,
            fnv: bit(FNV),
            ea: bit(EA),
            s1ptw: bit(S1PTW),
            ifsc: (iss & FSC_MASK) as u8,
            other_iss: iss & !NAMED,
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
        fn instruction_abort()(from in origin(), il: bool, set in 0u8..4, fnv: bool, ea: bool,
                               s1ptw: bool, ifsc in 0u8..64) -> InstructionAbort {
            InstructionAbort { from, il, set, fnv, ea, s1ptw, ifsc, other_iss: 0 }
        }
    }

    proptest! {
        #[test]
        fn instruction_abort_round_trips(i in instruction_abort()) {
            prop_assert_eq!(Esr::instruction_abort(i).decode(), Decoded::InstructionAbort(i));
        }
    }
}
