//! Exception classes, ESR_ELx.EC \[31:26\] (Arm ARM D24.2.45 ESR_EL1, EC). The numbers are
//! `ras_guest_abi::arch`'s, the one home the guest payload reads them from too.

pub use ras_guest_abi::arch::{
    ESR_ELx_EC_DABT_CUR, ESR_ELx_EC_DABT_LOW, ESR_ELx_EC_IABT_CUR, ESR_ELx_EC_IABT_LOW,
    ESR_ELx_EC_SERROR, ESR_ELx_EC_SVC64,
};

use super::Origin;

impl Origin {
    /// The EC of a Data Abort taken from here: 0x24 from a lower EL, 0x25 from the same.
    pub const fn data_abort_ec(self) -> u8 {
        match self {
            Origin::LowerEl => ESR_ELx_EC_DABT_LOW,
            Origin::SameEl => ESR_ELx_EC_DABT_CUR,
        }
    }

    /// The EC of an Instruction Abort taken from here: 0x20 from a lower EL, 0x21 from the
    /// same.
    pub const fn instruction_abort_ec(self) -> u8 {
        match self {
            Origin::LowerEl => ESR_ELx_EC_IABT_LOW,
            Origin::SameEl => ESR_ELx_EC_IABT_CUR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::esr::{Decoded, Esr};

    /// Each origin's EC decodes back to that origin.
    #[test]
    fn abort_classes_decode_to_their_origin() {
        for from in [Origin::LowerEl, Origin::SameEl] {
            let dabt = Esr::new(from.data_abort_ec(), true, 0).decode();
            assert!(matches!(dabt, Decoded::DataAbort(d) if d.from == from));
            let iabt = Esr::new(from.instruction_abort_ec(), true, 0).decode();
            assert!(matches!(iabt, Decoded::InstructionAbort(i) if i.from == from));
        }
    }
}
