//! ESR_ELx, the Exception Syndrome Register: encode, decode and describe the syndromes a
//! memory error produces (data and instruction aborts, SErrors).
//!
//! Layout from the Arm ARM (DDI 0487), D24.2.45 ESR_EL1: EC \[31:26\], IL \[25\], ISS \[24:0\],
//! ISS2 \[55:32\]. The ISS layouts are those of "ISS encoding for an exception from a Data
//! Abort", "... from an Instruction Abort" and "... for an SError exception".
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

use std::fmt;

use serde::Serialize;

// Exception classes, ESR_ELx.EC (Arm ARM D24.2.45, table "ESR_EL1.EC"). The names are the
// Linux spelling (arch/arm64/include/asm/esr.h) so that they grep across both.
/// EC 0x20: Instruction Abort from a lower Exception level.
pub const ESR_ELx_EC_IABT_LOW: u8 = 0x20;
/// EC 0x21: Instruction Abort taken without a change in Exception level.
pub const ESR_ELx_EC_IABT_CUR: u8 = 0x21;
/// EC 0x24: Data Abort from a lower Exception level.
pub const ESR_ELx_EC_DABT_LOW: u8 = 0x24;
/// EC 0x25: Data Abort taken without a change in Exception level.
pub const ESR_ELx_EC_DABT_CUR: u8 = 0x25;
/// EC 0x2F: SError exception.
pub const ESR_ELx_EC_SERROR: u8 = 0x2F;

// Fault status codes, ISS.DFSC / ISS.IFSC (Arm ARM D24.2.45, Data Abort ISS, DFSC).
/// FSC 0b010000: synchronous External abort, not on a translation table walk.
pub const ESR_ELx_FSC_EXTABT: u8 = 0x10;
/// SError DFSC 0b010001: asynchronous SError interrupt (Arm ARM, SError ISS, DFSC).
/// For a Data Abort the same value means a synchronous Tag Check Fault.
pub const ESR_ELx_FSC_SERROR: u8 = 0x11;
/// SError DFSC 0b000000: uncategorized error.
pub const ESR_ELx_FSC_UNCATEGORIZED: u8 = 0x00;

// Field positions (Arm ARM D24.2.45).
const EC_SHIFT: u32 = 26;
const IL: u32 = 1 << 25;
const ISS_MASK: u32 = (1 << 25) - 1;
const ISV: u32 = 1 << 24;
const SAS_SHIFT: u32 = 22;
const SSE: u32 = 1 << 21;
const SRT_SHIFT: u32 = 16;
const SF: u32 = 1 << 15;
const AR: u32 = 1 << 14;
const VNCR: u32 = 1 << 13;
const SET_SHIFT: u32 = 11;
const FNV: u32 = 1 << 10;
const EA: u32 = 1 << 9;
const CM: u32 = 1 << 8;
const S1PTW: u32 = 1 << 7;
const WNR: u32 = 1 << 6;
const FSC_MASK: u32 = 0x3F;
/// SError ISS.IDS \[24\]: the rest of the ISS is IMPLEMENTATION DEFINED.
const IDS: u32 = 1 << 24;
const IESB: u32 = 1 << 13;
const AET_SHIFT: u32 = 10;

/// Data Abort ISS bits this codec names; the rest is RES0 (or a feature it does not model).
const DABT_NAMED: u32 = ISV | VNCR | (3 << SET_SHIFT) | FNV | EA | CM | S1PTW | WNR | FSC_MASK;
/// Bits named only when ISV=1: SAS, SSE, SRT, SF, AR.
const DABT_ISV_FIELDS: u32 = (3 << SAS_SHIFT) | SSE | (0x1F << SRT_SHIFT) | SF | AR;
const IABT_NAMED: u32 = (3 << SET_SHIFT) | FNV | EA | S1PTW | FSC_MASK;
const SERROR_NAMED: u32 = IDS | IESB | (7 << AET_SHIFT) | EA | FSC_MASK;

/// Where the exception came from, as the EC encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// From a lower Exception level (EL0 for ESR_EL1).
    LowerEl,
    /// Without a change in Exception level (EL1 for ESR_EL1).
    SameEl,
}

impl Origin {
    fn el_name(self) -> &'static str {
        match self {
            Origin::LowerEl => "EL0",
            Origin::SameEl => "EL1",
        }
    }
}

/// The raw value of an ESR_ELx register (64 bits as KVM and the guest report it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Esr(u64);

/// Access syndrome of a Data Abort, valid when ISS.ISV is 1 (Arm ARM D24.2.45, ISS \[23:14\]).
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
    /// SET \[12:11\]: synchronous error type (FEAT_RAS), see [`set_name`].
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
    /// DFSC \[5:0\]: data fault status code, e.g. [`ESR_ELx_FSC_EXTABT`].
    #[serde(serialize_with = "hex")]
    pub dfsc: u8,
    /// ISS bits this codec does not name (RES0, or ISS \[23:14\] when ISV=0), kept so that
    /// decoding loses nothing.
    #[serde(serialize_with = "hex")]
    pub other_iss: u32,
}

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

impl fmt::Display for Aet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aet::Uc => f.write_str("UC"),
            Aet::Ueu => f.write_str("UEU"),
            Aet::Ueo => f.write_str("UEO"),
            Aet::Uer => f.write_str("UER"),
            Aet::Ce => f.write_str("CE"),
            Aet::Reserved(b) => write!(f, "reserved {b:#05b}"),
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
                (other_iss & !SERROR_NAMED & ISS_MASK)
                    | if iesb { IESB } else { 0 }
                    | ((aet.bits() as u32) << AET_SHIFT)
                    | if ea { EA } else { 0 }
                    | (dfsc as u32 & FSC_MASK)
            }
            SErrorIss::ImplementationDefined { syndrome } => IDS | (syndrome & (IDS - 1)),
        }
    }
}

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
        (self.low32() >> EC_SHIFT) as u8
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
        let v = ((ec as u32 & 0x3F) << EC_SHIFT) | if il { IL } else { 0 } | (iss & ISS_MASK);
        Esr(v as u64)
    }

    /// The syndrome of a Data Abort.
    pub const fn data_abort(d: DataAbort) -> Self {
        let ec = match d.from {
            Origin::LowerEl => ESR_ELx_EC_DABT_LOW,
            Origin::SameEl => ESR_ELx_EC_DABT_CUR,
        };
        let access = match d.access {
            Some(a) => {
                ISV | ((a.sas as u32 & 3) << SAS_SHIFT)
                    | if a.sse { SSE } else { 0 }
                    | ((a.srt as u32 & 0x1F) << SRT_SHIFT)
                    | if a.sf { SF } else { 0 }
                    | if a.ar { AR } else { 0 }
            }
            None => 0,
        };
        let unnamed = if d.access.is_some() {
            DABT_NAMED | DABT_ISV_FIELDS
        } else {
            DABT_NAMED
        };
        let iss = (d.other_iss & !unnamed)
            | access
            | if d.vncr { VNCR } else { 0 }
            | ((d.set as u32 & 3) << SET_SHIFT)
            | if d.fnv { FNV } else { 0 }
            | if d.ea { EA } else { 0 }
            | if d.cm { CM } else { 0 }
            | if d.s1ptw { S1PTW } else { 0 }
            | if d.wnr { WNR } else { 0 }
            | (d.dfsc as u32 & FSC_MASK);
        Esr::new(ec, d.il, iss)
    }

    /// The syndrome of an Instruction Abort.
    pub const fn instruction_abort(i: InstructionAbort) -> Self {
        let ec = match i.from {
            Origin::LowerEl => ESR_ELx_EC_IABT_LOW,
            Origin::SameEl => ESR_ELx_EC_IABT_CUR,
        };
        let iss = (i.other_iss & !IABT_NAMED)
            | ((i.set as u32 & 3) << SET_SHIFT)
            | if i.fnv { FNV } else { 0 }
            | if i.ea { EA } else { 0 }
            | if i.s1ptw { S1PTW } else { 0 }
            | (i.ifsc as u32 & FSC_MASK);
        Esr::new(ec, i.il, iss)
    }

    /// The syndrome of an SError.
    pub const fn serror(s: SError) -> Self {
        Esr::new(ESR_ELx_EC_SERROR, s.il, s.iss_bits())
    }

    /// Decodes bits \[31:0\]; bits \[63:32\] are left to [`Esr::high32`]. Never fails: an
    /// unknown class is [`Decoded::Other`].
    pub fn decode(self) -> Decoded {
        let iss = self.iss();
        let il = self.il();
        let bit = |m: u32| iss & m != 0;
        let set = ((iss >> SET_SHIFT) & 3) as u8;
        let fsc = (iss & FSC_MASK) as u8;
        match self.ec() {
            ESR_ELx_EC_DABT_LOW | ESR_ELx_EC_DABT_CUR => {
                let access = if bit(ISV) {
                    Some(AccessSyndrome {
                        sas: ((iss >> SAS_SHIFT) & 3) as u8,
                        sse: bit(SSE),
                        srt: ((iss >> SRT_SHIFT) & 0x1F) as u8,
                        sf: bit(SF),
                        ar: bit(AR),
                    })
                } else {
                    None
                };
                let named = if access.is_some() {
                    DABT_NAMED | DABT_ISV_FIELDS
                } else {
                    DABT_NAMED
                };
                Decoded::DataAbort(DataAbort {
                    from: if self.ec() == ESR_ELx_EC_DABT_LOW {
                        Origin::LowerEl
                    } else {
                        Origin::SameEl
                    },
                    il,
                    access,
                    vncr: bit(VNCR),
                    set,
                    fnv: bit(FNV),
                    ea: bit(EA),
                    cm: bit(CM),
                    s1ptw: bit(S1PTW),
                    wnr: bit(WNR),
                    dfsc: fsc,
                    other_iss: iss & !named,
                })
            }
            ESR_ELx_EC_IABT_LOW | ESR_ELx_EC_IABT_CUR => {
                Decoded::InstructionAbort(InstructionAbort {
                    from: if self.ec() == ESR_ELx_EC_IABT_LOW {
                        Origin::LowerEl
                    } else {
                        Origin::SameEl
                    },
                    il,
                    set,
                    fnv: bit(FNV),
                    ea: bit(EA),
                    s1ptw: bit(S1PTW),
                    ifsc: fsc,
                    other_iss: iss & !IABT_NAMED,
                })
            }
            ESR_ELx_EC_SERROR => Decoded::SError(SError {
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
                        dfsc: fsc,
                        other_iss: iss & !SERROR_NAMED,
                    }
                },
            }),
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

/// The Arm ARM name of an exception class (a few besides the aborts, for readable reports).
pub const fn ec_name(ec: u8) -> Option<&'static str> {
    Some(match ec {
        0x00 => "Unknown reason",
        0x01 => "Trapped WFI/WFE",
        0x07 => "Access to SIMD/FP",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "Trapped MSR/MRS/system instruction",
        ESR_ELx_EC_IABT_LOW => "Instruction Abort from a lower EL",
        ESR_ELx_EC_IABT_CUR => "Instruction Abort from the same EL",
        0x22 => "PC alignment fault",
        ESR_ELx_EC_DABT_LOW => "Data Abort from a lower EL",
        ESR_ELx_EC_DABT_CUR => "Data Abort from the same EL",
        0x26 => "SP alignment fault",
        ESR_ELx_EC_SERROR => "SError",
        0x3C => "BRK (AArch64)",
        _ => return None,
    })
}

/// A Data/Instruction Abort fault status code in words (Arm ARM D24.2.45, DFSC/IFSC).
fn abort_fsc_name(fsc: u8) -> Option<&'static str> {
    Some(match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x08..=0x0B => "access flag fault",
        0x0C..=0x0F => "permission fault",
        ESR_ELx_FSC_EXTABT => "synchronous external abort",
        0x11 => "tag check fault",
        0x13..=0x17 => "synchronous external abort on table walk",
        0x18 => "synchronous parity/ECC error",
        0x1B..=0x1F => "synchronous parity/ECC error on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => return None,
    })
}

/// SError DFSC in words (Arm ARM D24.2.45, SError ISS).
fn serror_dfsc_name(dfsc: u8) -> Option<&'static str> {
    match dfsc {
        ESR_ELx_FSC_UNCATEGORIZED => Some("uncategorized"),
        ESR_ELx_FSC_SERROR => Some("async SError"),
        _ => None,
    }
}

/// SET \[12:11\] in words (FEAT_RAS): 0b00 UER, 0b10 UC, 0b11 UEO, 0b01 reserved.
pub const fn set_name(set: u8) -> &'static str {
    match set & 3 {
        0b00 => "UER",
        0b10 => "UC",
        0b11 => "UEO",
        _ => "reserved",
    }
}

/// Writes ", NAME=1" for each set flag.
fn flags(f: &mut fmt::Formatter<'_>, list: &[(&str, bool)]) -> fmt::Result {
    for (name, on) in list {
        if *on {
            write!(f, ", {name}=1")?;
        }
    }
    Ok(())
}

fn fsc_text(f: &mut fmt::Formatter<'_>, fsc: u8) -> fmt::Result {
    match abort_fsc_name(fsc) {
        Some(name) => f.write_str(name),
        None => write!(f, "FSC {fsc:#04x}"),
    }
}

impl fmt::Display for Decoded {
    /// One line: class, origin, fault, then only the fields that are not zero (FnV always,
    /// since FAR's validity is what a reader asks first).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Decoded::DataAbort(d) => {
                write!(f, "DABT from {}, ", d.from.el_name())?;
                fsc_text(f, d.dfsc)?;
                write!(f, ", FnV={}", u8::from(d.fnv))?;
                if let Some(a) = d.access {
                    write!(
                        f,
                        ", ISV=1 (SAS={}, SSE={}, SRT=x{}, SF={}, AR={})",
                        a.sas,
                        u8::from(a.sse),
                        a.srt,
                        u8::from(a.sf),
                        u8::from(a.ar)
                    )?;
                }
                if d.set != 0 {
                    write!(f, ", SET={}", set_name(d.set))?;
                }
                flags(
                    f,
                    &[
                        ("EA", d.ea),
                        ("CM", d.cm),
                        ("S1PTW", d.s1ptw),
                        ("WnR", d.wnr),
                        ("VNCR", d.vncr),
                    ],
                )?;
                tail(f, d.il, d.other_iss)
            }
            Decoded::InstructionAbort(i) => {
                write!(f, "IABT from {}, ", i.from.el_name())?;
                fsc_text(f, i.ifsc)?;
                write!(f, ", FnV={}", u8::from(i.fnv))?;
                if i.set != 0 {
                    write!(f, ", SET={}", set_name(i.set))?;
                }
                flags(f, &[("EA", i.ea), ("S1PTW", i.s1ptw)])?;
                tail(f, i.il, i.other_iss)
            }
            Decoded::SError(s) => match s.iss {
                SErrorIss::ImplementationDefined { syndrome } => {
                    write!(
                        f,
                        "SError, IDS=1, IMPLEMENTATION DEFINED syndrome {syndrome:#08x}"
                    )?;
                    tail(f, s.il, 0)
                }
                SErrorIss::Architected {
                    iesb,
                    aet,
                    ea,
                    dfsc,
                    other_iss,
                } => {
                    write!(f, "SError, IDS=0, AET={aet}, DFSC=")?;
                    match serror_dfsc_name(dfsc) {
                        Some(name) => f.write_str(name)?,
                        None => write!(f, "{dfsc:#04x}")?,
                    }
                    flags(f, &[("IESB", iesb), ("EA", ea)])?;
                    tail(f, s.il, other_iss)
                }
            },
            Decoded::Other { ec, il, iss } => {
                write!(f, "EC {ec:#04x}")?;
                if let Some(name) = ec_name(ec) {
                    write!(f, " ({name})")?;
                }
                write!(f, ", IL={}, ISS {iss:#08x}", u8::from(il))
            }
        }
    }
}

/// The uncommon parts every class shares: a 16-bit instruction, bits we do not name.
fn tail(f: &mut fmt::Formatter<'_>, il: bool, other_iss: u32) -> fmt::Result {
    if !il {
        f.write_str(", IL=0")?;
    }
    if other_iss != 0 {
        write!(f, ", other ISS bits {other_iss:#08x}")?;
    }
    Ok(())
}

impl fmt::Display for Esr {
    /// The decode of bits \[31:0\], then what bits \[63:32\] hold if anything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.decode())?;
        if self.is_sign_extended() {
            f.write_str(" [bits 63:32 sign-extended, as Linux 6.1 reports it]")
        } else if self.high32() != 0 {
            write!(f, " [bits 63:32 = {:#x}]", self.high32())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::snapshot_settings;
    use proptest::prelude::*;

    fn origin() -> impl Strategy<Value = Origin> {
        prop_oneof![Just(Origin::LowerEl), Just(Origin::SameEl)]
    }

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

    prop_compose! {
        fn instruction_abort()(from in origin(), il: bool, set in 0u8..4, fnv: bool, ea: bool,
                               s1ptw: bool, ifsc in 0u8..64) -> InstructionAbort {
            InstructionAbort { from, il, set, fnv, ea, s1ptw, ifsc, other_iss: 0 }
        }
    }

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
        fn data_abort_round_trips(d in data_abort()) {
            prop_assert_eq!(Esr::data_abort(d).decode(), Decoded::DataAbort(d));
        }

        #[test]
        fn instruction_abort_round_trips(i in instruction_abort()) {
            prop_assert_eq!(Esr::instruction_abort(i).decode(), Decoded::InstructionAbort(i));
        }

        #[test]
        fn serror_round_trips(s in serror()) {
            let esr = Esr::serror(s);
            prop_assert_eq!(esr.decode(), Decoded::SError(s));
            prop_assert_eq!(esr.iss(), s.iss_bits());
        }

        /// Decoding never panics and loses nothing: every 32-bit value comes back.
        #[test]
        fn decode_is_total_and_exact(raw: u64) {
            let esr = Esr::from_raw(raw);
            prop_assert_eq!(esr.decode().encode(), esr.canonical());
            prop_assert!(!esr.to_string().is_empty());
            prop_assert!(serde_json::to_string(&esr.report()).is_ok());
        }
    }

    /// The values of docs/ras-facts.md §6 built from typed fields give the seen raw values.
    #[test]
    fn builders_give_the_values_kvm_and_qemu_inject() {
        let sea = |from, fnv| {
            Esr::data_abort(DataAbort {
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
            })
        };
        // QEMU's emulated SEA (FnV=1) and KVM's ext_dabt (FnV=0).
        assert_eq!(sea(Origin::SameEl, true).raw(), 0x9600_0410);
        assert_eq!(sea(Origin::LowerEl, true).raw(), 0x9200_0410);
        assert_eq!(sea(Origin::SameEl, false).raw(), 0x9600_0010);
        assert_eq!(sea(Origin::LowerEl, false).raw(), 0x9200_0010);
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

    /// Every encoding of docs/ras-facts.md §6, described. The 0x2F SErrors show why a Linux guest
    /// survives only 0x0811/0x1811 (IDS=0, AET UEO/CE, DFSC async SError): ISS 0x11 has
    /// AET=0b000, which is UC (uncontainable), and IDS=1 says nothing it can act on.
    #[test]
    fn descriptions_of_the_injected_syndromes() {
        let values: &[(&str, u64)] = &[
            ("QEMU emulated SEA from EL1", 0x9600_0410),
            ("QEMU emulated SEA from EL0", 0x9200_0410),
            ("KVM ext_dabt from EL1", 0x9600_0010),
            ("KVM ext_dabt from EL0", 0x9200_0010),
            ("instruction fetch SEA from EL1, FnV=0", 0x8600_0010),
            ("instruction fetch SEA from EL1, FnV=1", 0x8600_0410),
            ("instruction fetch SEA from EL0, FnV=0", 0x8200_0010),
            ("instruction fetch SEA from EL0, FnV=1", 0x8200_0410),
            ("KVM default SError (IDS=1)", 0xBF00_0000),
            ("SError ESR ISS 0x11 as seen", 0xBE00_0011),
            ("SError ESR ISS 0x100abcd as seen", 0xBF00_ABCD),
            ("survivable SError, AET=UEO", 0xBE00_0811),
            ("survivable SError, AET=CE", 0xBE00_1811),
            ("Linux 6.1 sign-extended ext_dabt", 0xffff_ffff_9600_0010),
        ];
        let text: String = values
            .iter()
            .map(|(what, raw)| format!("{raw:#018x}  {what}\n    {}\n", Esr::from_raw(*raw)))
            .collect();
        snapshot_settings("esr").bind(|| insta::assert_snapshot!("descriptions", text));
    }
}
