//! The ISS of an SError, EC 0x2F (Arm ARM D24.2.45 ESR_EL1, "ISS encoding for an SError
//! exception"), with the FEAT_RAS fields a Linux guest acts on.

use serde::Serialize;

pub use ras_guest_abi::arch::ESR_ELx_FSC_SERROR;

use super::{hex, EA, FSC_MASK, ISS_MASK};

/// SError DFSC 0b000000: uncategorized error.
pub const ESR_ELx_FSC_UNCATEGORIZED: u8 = 0x00;

/// IDS \[24\]: the rest of the ISS is IMPLEMENTATION DEFINED.
const IDS: u32 = 1 << 24;
const IESB: u32 = 1 << 13;
const AET_SHIFT: u32 = 10;
/// SError ISS bits this codec names; the rest is RES0.
const NAMED: u32 = IDS | IESB | (7 << AET_SHIFT) | EA | FSC_MASK;

/// Asynchronous Error Type, SError ISS.AET \[12:10\] (FEAT_RAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Aet {
    /// 0b000 Uncontainable.
    Uc,
    /// 0b001 Unrecoverable state.
    Ueu,
    /// 0b010 Restartable state.
    Ueo,
    /// 0b011 Recoverable state.
    Uer,
    /// 0b110 Corrected.
    Ce,
    /// A reserved encoding, kept as data.
    Reserved(u8),
}

impl Aet {
    /// The 3-bit field value.
    pub const fn bits(self) -> u8 {
        match self {
            Aet::Uc => 0b000,
            Aet::Ueu => 0b001,
            Aet::Ueo => 0b010,
            Aet::Uer => 0b011,
            Aet::Ce => 0b110,
            Aet::Reserved(b) => b & 7,
        }
    }

    /// The value for a 3-bit field.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0b000 => Aet::Uc,
            0b001 => Aet::Ueu,
            0b010 => Aet::Ueo,
            0b011 => Aet::Uer,
            0b110 => Aet::Ce,
            b => Aet::Reserved(b),
        }
    }
}

/// The ISS of an SError (EC 0x2F).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "ids", rename_all = "snake_case")]
pub enum SErrorIss {
    /// IDS=0: the architected RAS syndrome.
    Architected {
        /// IESB \[13\]: synchronized by an implicit error synchronization barrier.
        iesb: bool,
        /// AET \[12:10\].
        aet: Aet,
        /// EA \[9\].
        ea: bool,
        /// DFSC \[5:0\]: [`ESR_ELx_FSC_SERROR`] or [`ESR_ELx_FSC_UNCATEGORIZED`].
        #[serde(serialize_with = "hex")]
        dfsc: u8,
        /// RES0 bits \[23:14\], \[8:6\] as found.
        #[serde(serialize_with = "hex")]
        other_iss: u32,
    },
    /// IDS=1: ISS \[23:0\] is an IMPLEMENTATION DEFINED syndrome (what KVM injects when the
    /// VMM gives no ESR: 0xBF000000).
    ImplementationDefined {
        /// ISS \[23:0\].
        #[serde(serialize_with = "hex")]
        syndrome: u32,
    },
}

/// An SError syndrome (EC 0x2F).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SError {
    /// IL \[25\]: reported as 1 by KVM and by hardware.
    pub il: bool,
    /// ISS \[24:0\].
    pub iss: SErrorIss,
}

impl SError {
    /// The ISS alone: the value for `kvm_vcpu_events.exception.serror_esr`, which KVM
    /// rejects with bits above 24 (arch/arm64/kvm/guest.c).
    pub const fn iss_bits(&self) -> u32 {
        match self.iss {
            SErrorIss::Architected {
                iesb,
                aet,
                ea,
                dfsc,
                other_iss,
            } => {
                (other_iss & !NAMED & ISS_MASK)
                    | if iesb { IESB } else { 0 }
                    | ((aet.bits() as u32) << AET_SHIFT)
                    | if ea { EA } else { 0 }
                    | (dfsc as u32 & FSC_MASK)
            }
            SErrorIss::ImplementationDefined { syndrome } => IDS | (syndrome & (IDS - 1)),
        }
    }

    /// The fields of `iss`.
    pub(super) fn decode(il: bool, iss: u32) -> Self {
        let bit = |m: u32| iss & m != 0;
        SError {
            il,
            iss: if bit(IDS) {
                SErrorIss::ImplementationDefined {
                    syndrome: iss & (IDS - 1),
                }
            } else {
                SErrorIss::Architected {
                    iesb: bit(IESB),
                    aet: Aet::from_bits(((iss >> AET_SHIFT) & 7) as u8),
                    ea: bit(EA),
                    dfsc: (iss & FSC_MASK) as u8,
                    other_iss: iss & !NAMED,
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::esr::{Decoded, Esr};
    use proptest::prelude::*;

    fn serror() -> impl Strategy<Value = SError> {
        let architected =
            (any::<bool>(), 0u8..8, any::<bool>(), 0u8..64).prop_map(|(iesb, aet, ea, dfsc)| {
                SErrorIss::Architected {
                    iesb,
                    aet: Aet::from_bits(aet),
                    ea,
                    dfsc,
                    other_iss: 0,
                }
            });
        let impdef =
            (0u32..(1 << 24)).prop_map(|syndrome| SErrorIss::ImplementationDefined { syndrome });
        (any::<bool>(), prop_oneof![architected, impdef]).prop_map(|(il, iss)| SError { il, iss })
    }

    proptest! {
        #[test]
        fn serror_round_trips(s in serror()) {
            let esr = Esr::serror(s);
            prop_assert_eq!(esr.decode(), Decoded::SError(s));
            prop_assert_eq!(esr.iss(), s.iss_bits());
        }
    }

    /// The SError values of docs/ras-facts.md §6 built from typed fields give the seen raw
    /// values.
    #[test]
    fn builders_give_the_values_kvm_and_qemu_inject() {
        let ueo = SError {
            il: true,
            iss: SErrorIss::Architected {
                iesb: false,
                aet: Aet::Ueo,
                ea: false,
                dfsc: ESR_ELx_FSC_SERROR,
                other_iss: 0,
            },
        };
        assert_eq!(ueo.iss_bits(), 0x0811);
        assert_eq!(Esr::serror(ueo).raw(), 0xBE00_0811);
        let kvm_default = SError {
            il: true,
            iss: SErrorIss::ImplementationDefined { syndrome: 0 },
        };
        assert_eq!(Esr::serror(kvm_default).raw(), 0xBF00_0000);
    }
}
