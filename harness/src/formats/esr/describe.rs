//! What a syndrome says in words: the one-line `Display` of [`Esr`] and [`Decoded`], and the
//! name tables behind it (Arm ARM D24.2.45 ESR_EL1: EC, DFSC/IFSC, SET, AET).

use std::fmt;

use super::{
    Aet, Decoded, ESR_ELx_EC_DABT_CUR, ESR_ELx_EC_DABT_LOW, ESR_ELx_EC_IABT_CUR,
    ESR_ELx_EC_IABT_LOW, ESR_ELx_EC_SERROR, ESR_ELx_EC_SVC64, ESR_ELx_FSC_EXTABT,
    ESR_ELx_FSC_SERROR, ESR_ELx_FSC_UNCATEGORIZED, Esr, Origin, SErrorIss,
};

impl Origin {
    fn el_name(self) -> &'static str {
        match self {
            Origin::LowerEl => "EL0",
            Origin::SameEl => "EL1",
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

/// The Arm ARM name of an exception class (a few besides the aborts, for readable reports).
pub const fn ec_name(ec: u8) -> Option<&'static str> {
    Some(match ec {
        0x00 => "Unknown reason",
        0x01 => "Trapped WFI/WFE",
        0x07 => "Access to SIMD/FP",
        ESR_ELx_EC_SVC64 => "SVC (AArch64)",
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

/// A Data/Instruction Abort fault status code in words (DFSC/IFSC).
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

/// SError DFSC in words.
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

    /// Every encoding of docs/ras-facts.md §6, described. The 0x2F SErrors show why a Linux
    /// guest survives only 0x0811/0x1811 (IDS=0, AET UEO/CE, DFSC async SError): ISS 0x11 has
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
