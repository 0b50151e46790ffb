//! ESR_ELx, the Exception Syndrome Register: encode, decode and describe the syndromes a
//! memory error produces (data and instruction aborts, SErrors).
//!
//! Layout from the Arm ARM (DDI 0487) D24.2.45 ESR_EL1: EC \[31:26\], IL \[25\], ISS \[24:0\],
//! ISS2 \[55:32\]. The ISS layouts are those of "ISS encoding for an exception from a Data
//! Abort", "... from an Instruction Abort" and "... for an SError exception", one module
//! each; the exception classes are `ras_guest_abi::arch`'s, which the guest tests too.
//!
//! Descriptions are written for ESR_EL1, the register a guest reads: an exception "from a
//! lower EL" is from EL0 and one "from the same EL" is from EL1.
//!
//! ```
//! use ras_harness::formats::esr::{Esr, Decoded};
//! let esr = Esr::from_raw(0x9600_0410);
//! assert!(matches!(esr.decode(), Decoded::DataAbort(d) if d.fnv));
//! assert_eq!(esr.to_string(), "DABT from EL1, synchronous external abort, FnV=1");
//! ```

// EC and FSC constants keep the Arm ARM / Linux spelling `ESR_ELx_*` so that they grep.
#![allow(non_upper_case_globals)]

mod data_abort;
mod describe;
mod ec;
mod instruction_abort;
mod serror;

use std::fmt;

use ras_guest_abi::arch::ESR_ELx_EC_SHIFT;
use serde::Serialize;

pub use data_abort::{AccessSyndrome, DataAbort};
pub use describe::{ec_name, set_name};
pub use ec::{
    ESR_ELx_EC_DABT_CUR, ESR_ELx_EC_DABT_LOW, ESR_ELx_EC_IABT_CUR, ESR_ELx_EC_IABT_LOW,
    ESR_ELx_EC_SERROR, ESR_ELx_EC_SVC64,
};
pub use instruction_abort::InstructionAbort;
pub use ras_guest_abi::arch::ESR_ELx_FSC_EXTABT;
pub use serror::{Aet, ESR_ELx_FSC_SERROR, ESR_ELx_FSC_UNCATEGORIZED, SError, SErrorIss};

// Fields of ESR_ELx and those the ISS layouts share (Arm ARM D24.2.45 ESR_EL1).
const IL: u32 = 1 << 25;
const ISS_MASK: u32 = (1 << 25) - 1;
/// SET \[12:11\] of a Data or Instruction Abort.
const SET_SHIFT: u32 = 11;
/// FnV \[10\] of a Data or Instruction Abort.
const FNV: u32 = 1 << 10;
/// EA \[9\], in all three layouts.
const EA: u32 = 1 << 9;
/// S1PTW \[7\] of a Data or Instruction Abort.
const S1PTW: u32 = 1 << 7;
/// DFSC / IFSC \[5:0\], in all three layouts.
const FSC_MASK: u32 = 0x3F;

/// Where the exception came from, as the EC encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// From a lower Exception level (EL0 for ESR_EL1).
    LowerEl,
    /// Without a change in Exception level (EL1 for ESR_EL1).
    SameEl,
}

/// The raw value of an ESR_ELx register (64 bits as KVM and the guest report it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Esr(u64);

/// A decoded syndrome: the classes a memory error produces, anything else as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Decoded {
    /// EC 0x24 / 0x25.
    DataAbort(DataAbort),
    /// EC 0x20 / 0x21.
    InstructionAbort(InstructionAbort),
    /// EC 0x2F.
    #[serde(rename = "serror")]
    SError(SError),
    /// Any other exception class, undecoded.
    Other {
        /// EC \[31:26\].
        #[serde(serialize_with = "hex")]
        ec: u8,
        /// IL \[25\].
        il: bool,
        /// ISS \[24:0\].
        #[serde(serialize_with = "hex")]
        iss: u32,
    },
}

impl Esr {
    /// Wraps a raw register value.
    pub const fn from_raw(raw: u64) -> Self {
        Esr(raw)
    }

    /// The raw 64-bit value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits \[31:0\]: EC, IL and ISS, the part every kernel reports the same way.
    pub const fn low32(self) -> u32 {
        self.0 as u32
    }

    /// Bits \[63:32\] (ISS2 and RES0, or the sign extension of kernel 6.1).
    pub const fn high32(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// True when bits \[63:32\] are a sign extension of bit 31, as Linux 6.1 reports an
    /// injected ESR (docs/ras-facts.md §3: 0xffffffff96000010 for 0x96000010).
    pub const fn is_sign_extended(self) -> bool {
        self.high32() == u32::MAX && self.low32() & (1 << 31) != 0
    }

    /// The value with bits \[63:32\] cleared: compare syndromes with this.
    pub const fn canonical(self) -> Esr {
        Esr(self.low32() as u64)
    }

    /// True when both values agree in bits \[31:0\], ignoring a kernel's sign extension.
    pub const fn same_syndrome(self, other: Esr) -> bool {
        self.low32() == other.low32()
    }

    /// EC \[31:26\].
    pub const fn ec(self) -> u8 {
        (self.low32() >> ESR_ELx_EC_SHIFT) as u8
    }

    /// IL \[25\].
    pub const fn il(self) -> bool {
        self.low32() & IL != 0
    }

    /// ISS \[24:0\].
    pub const fn iss(self) -> u32 {
        self.low32() & ISS_MASK
    }

    /// Builds a value from its three fields; bits outside each field are dropped.
    pub const fn new(ec: u8, il: bool, iss: u32) -> Self {
        let v =
            ((ec as u32 & 0x3F) << ESR_ELx_EC_SHIFT) | if il { IL } else { 0 } | (iss & ISS_MASK);
        Esr(v as u64)
    }

    /// The syndrome of a Data Abort.
    pub const fn data_abort(d: DataAbort) -> Self {
        Esr::new(d.from.data_abort_ec(), d.il, d.iss())
    }

    /// The syndrome of an Instruction Abort.
    pub const fn instruction_abort(i: InstructionAbort) -> Self {
        Esr::new(i.from.instruction_abort_ec(), i.il, i.iss())
    }

    /// The syndrome of an SError.
    pub const fn serror(s: SError) -> Self {
        Esr::new(ESR_ELx_EC_SERROR, s.il, s.iss_bits())
    }

    /// Decodes bits \[31:0\]; bits \[63:32\] are left to [`Esr::high32`]. Never fails: an
    /// unknown class is [`Decoded::Other`].
    pub fn decode(self) -> Decoded {
        let (il, iss) = (self.il(), self.iss());
        let dabt = |from| Decoded::DataAbort(DataAbort::decode(from, il, iss));
        let iabt = |from| Decoded::InstructionAbort(InstructionAbort::decode(from, il, iss));
        match self.ec() {
            ESR_ELx_EC_DABT_LOW => dabt(Origin::LowerEl),
            ESR_ELx_EC_DABT_CUR => dabt(Origin::SameEl),
            ESR_ELx_EC_IABT_LOW => iabt(Origin::LowerEl),
            ESR_ELx_EC_IABT_CUR => iabt(Origin::SameEl),
            ESR_ELx_EC_SERROR => Decoded::SError(SError::decode(il, iss)),
            ec => Decoded::Other { ec, il, iss },
        }
    }

    /// A serializable report: the value, its fields, the decode and the description.
    pub fn report(self) -> EsrReport {
        EsrReport {
            raw: self,
            low32: self.canonical(),
            sign_extended: self.is_sign_extended(),
            ec: self.ec(),
            ec_name: ec_name(self.ec()),
            il: self.il(),
            iss: self.iss(),
            decoded: self.decode(),
            description: self.to_string(),
        }
    }
}

impl From<Decoded> for Esr {
    fn from(d: Decoded) -> Self {
        d.encode()
    }
}

impl Decoded {
    /// The 32-bit syndrome this decodes from.
    pub const fn encode(self) -> Esr {
        match self {
            Decoded::DataAbort(d) => Esr::data_abort(d),
            Decoded::InstructionAbort(i) => Esr::instruction_abort(i),
            Decoded::SError(s) => Esr::serror(s),
            Decoded::Other { ec, il, iss } => Esr::new(ec, il, iss),
        }
    }
}

/// What `Esr::report` returns, for JSON reports and `ras-harness esr decode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EsrReport {
    /// The value as given (64 bits).
    pub raw: Esr,
    /// Bits \[31:0\].
    pub low32: Esr,
    /// Bits \[63:32\] are a sign extension (Linux 6.1's injected ESR).
    pub sign_extended: bool,
    /// EC \[31:26\].
    #[serde(serialize_with = "hex")]
    pub ec: u8,
    /// The Arm ARM name of the class, when this codec knows it.
    pub ec_name: Option<&'static str>,
    /// IL \[25\].
    pub il: bool,
    /// ISS \[24:0\].
    #[serde(serialize_with = "hex")]
    pub iss: u32,
    /// The typed decode of bits \[31:0\].
    pub decoded: Decoded,
    /// The one-line description (`Display`).
    pub description: String,
}

/// Parses "0x96000410" (hex, with or without 0x, underscores allowed) or a decimal value,
/// for `ras-harness esr decode VALUE`.
impl std::str::FromStr for Esr {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().replace('_', "");
        let raw = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16)?,
            None if s.bytes().all(|b| b.is_ascii_digit()) => s.parse()?,
            None => u64::from_str_radix(&s, 16)?,
        };
        Ok(Esr(raw))
    }
}

/// Serializes as a "0x..." string.
impl Serialize for Esr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hex(&self.0, s)
    }
}

/// Serializes a number as a "0x..." string, the report convention for register values.
fn hex<T: fmt::LowerHex, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Either origin, for the abort strategies of the layout modules.
    pub(super) fn origin() -> impl Strategy<Value = Origin> {
        prop_oneof![Just(Origin::LowerEl), Just(Origin::SameEl)]
    }

    proptest! {
        /// Decoding never panics and loses nothing: every 32-bit value comes back.
        #[test]
        fn decode_is_total_and_exact(raw: u64) {
            let esr = Esr::from_raw(raw);
            prop_assert_eq!(esr.decode().encode(), esr.canonical());
            prop_assert!(!esr.to_string().is_empty());
            prop_assert!(serde_json::to_string(&esr.report()).is_ok());
        }
    }

    #[test]
    fn parses_cli_values() {
        assert_eq!("0x96000410".parse(), Ok(Esr::from_raw(0x9600_0410)));
        assert_eq!(
            "0xffff_ffff_9600_0010".parse(),
            Ok(Esr::from_raw(0xffff_ffff_9600_0010))
        );
        assert_eq!("BE000811".parse(), Ok(Esr::from_raw(0xBE00_0811)));
        assert_eq!("16".parse(), Ok(Esr::from_raw(16)));
        assert!("0x1_0000_0000_0000_0000".parse::<Esr>().is_err());
        assert!("zz".parse::<Esr>().is_err());
    }

    #[test]
    fn linux_6_1_sign_extension_compares_equal_on_32_bits() {
        let seen = Esr::from_raw(0xffff_ffff_9600_0010);
        assert!(seen.is_sign_extended());
        assert!(seen.same_syndrome(Esr::from_raw(0x9600_0010)));
        assert_eq!(seen.canonical().raw(), 0x9600_0010);
        assert_ne!(seen, Esr::from_raw(0x9600_0010));
        assert!(!Esr::from_raw(0x1_9600_0010).is_sign_extended());
    }

    #[test]
    fn report_serializes_values_as_hex_strings() {
        let json = serde_json::to_value(Esr::from_raw(0xBE00_0811).report()).unwrap();
        assert_eq!(json["raw"], "0xbe000811");
        assert_eq!(json["ec"], "0x2f");
        assert_eq!(json["decoded"]["class"], "serror");
        assert_eq!(json["decoded"]["iss"]["ids"], "architected");
        assert_eq!(json["decoded"]["iss"]["dfsc"], "0x11");
        assert_eq!(
            json["description"],
            "SError, IDS=0, AET=UEO, DFSC=async SError"
        );
    }
}
