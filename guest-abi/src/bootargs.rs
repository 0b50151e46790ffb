//! The payload's parameters as `/chosen/bootargs` words, the one way every VMM passes them
//! (a VMM passes a kernel command line; it knows nothing of this harness).
//!
//! ```text
//! ras.abi=4 ras.access=load ras.el=1 ras.flags=walk-acpi,ack ras.vcpus=2
//! ras.vcpu0=0x0,0x4000 ras.vcpu1=0x8000 ras.rsdp=0x40200000 ras.doorbell=0xa000000
//! ```
//!
//! - `ras.abi` must equal [`crate::ABI_VERSION`]; `ras.access` is `none`, `load`, `store` or
//!   `ifetch` and `ras.el` 0 or 1 (required);
//! - `ras.flags`: comma-separated names from [`FLAG_NAMES`] (default none);
//! - `ras.vcpus`: how many vCPUs run the payload (default 1); vCPU 0 powers the VM off once
//!   the others are done;
//! - `ras.vcpuN`: vCPU N's targets, one step each, as offsets into the target window
//!   ([`crate::map::target_window`]), comma-separated, at most [`MAX_TARGETS`] (default none);
//!   `ras.vcpuN.access` and `ras.vcpuN.el` override the access and EL for vCPU N alone;
//! - `ras.rsdp`: the ACPI RSDP's address, as Linux's `acpi_rsdp=` (default none);
//! - `ras.doorbell`: the MMIO doorbell's address (the reference VMM's fast path); without it
//!   the payload hand-shakes through its mailbox ([`crate::mailbox::Handshake`]).
//!
//! Numbers are decimal or `0x` hex. Words that do not start with `ras.` are ignored, so
//! the line can carry a VMM's own arguments too.

use crate::mailbox::{flags, Access, MAX_TARGETS};
use crate::map::MAX_VCPUS;

/// `ras.flags` names and the [`flags`] bit each sets.
pub const FLAG_NAMES: [(&str, u32); 6] = [
    ("serror-wait", flags::SERROR_WAIT),
    ("serror-esb", flags::SERROR_ESB),
    ("walk-acpi", flags::WALK_ACPI),
    ("ack", flags::ACK),
    ("hang", flags::HANG),
    ("doorbell-loop", flags::DOORBELL_LOOP),
];

/// `ras.access` names, by [`Access`] code.
const ACCESS_NAMES: [(&str, Access); 4] = [
    ("none", Access::None),
    ("load", Access::Load),
    ("store", Access::Store),
    ("ifetch", Access::Ifetch),
];

/// One vCPU's parameters, as read from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bootargs {
    /// `ras.access`.
    pub access: Access,
    /// `ras.el`.
    pub el: u32,
    /// `ras.flags` bits.
    pub flags: u32,
    /// `ras.vcpus`.
    pub vcpus: u32,
    /// This vCPU's `ras.vcpuN` offsets; the first `target_count` are used.
    pub targets: [u64; MAX_TARGETS],
    /// How many targets.
    pub target_count: u32,
    /// `ras.rsdp`, or 0.
    pub rsdp: u64,
    /// `ras.doorbell`, or 0.
    pub doorbell: u64,
}

/// What is wrong with a line: the word's key, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootargsError<'a> {
    /// The key (`ras.el`, ...) or, for an unknown key, the whole word.
    pub key: &'a [u8],
    /// Why.
    pub problem: Problem,
}

/// Why a `ras.` word was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A required key is absent.
    Missing,
    /// The value is not one the key allows.
    Invalid,
    /// No such `ras.` key.
    Unknown,
    /// `ras.abi` names another version of this contract.
    WrongAbi,
}

impl Problem {
    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid value",
            Self::Unknown => "unknown key",
            Self::WrongAbi => "other ABI version",
        }
    }
}

/// How much of the target window the line's targets reach into, over all its vCPUs, in
/// whole 2 MiB blocks (what a loader must leave free there); 0 for no targets or a line
/// [`parse`] refuses.
pub fn target_span(line: &[u8]) -> u64 {
    const BLOCK: u64 = 2 << 20;
    let vcpus = parse(line, 0).map_or(0, |b| b.vcpus as usize);
    let end = (0..vcpus.min(MAX_VCPUS))
        .filter_map(|v| parse(line, v).ok())
        .flat_map(|b| b.targets.into_iter().take(b.target_count as usize))
        .map(|offset| offset.saturating_add(8))
        .max();
    end.map_or(0, |e| e.next_multiple_of(BLOCK))
}

/// Reads vCPU `vcpu`'s parameters from `line`.
pub fn parse(line: &[u8], vcpu: usize) -> Result<Bootargs, BootargsError<'_>> {
    let err = |key: &'static str, problem| BootargsError {
        key: key.as_bytes(),
        problem,
    };
    let mut b = Bootargs {
        access: Access::None,
        el: 0,
        flags: 0,
        vcpus: 1,
        targets: [0; MAX_TARGETS],
        target_count: 0,
        rsdp: 0,
        doorbell: 0,
    };
    let (mut abi, mut access, mut el) = (false, false, false);
    let (mut own_access, mut own_el) = (None, None);
    for word in line.split(|c| c.is_ascii_whitespace()) {
        let Some(rest) = word.strip_prefix(b"ras.") else {
            continue;
        };
        let mut kv = rest.splitn(2, |&c| c == b'=');
        let (key, value) = (kv.next().unwrap_or(&[]), kv.next().unwrap_or(&[]));
        if let Some((n, field)) = vcpu_key(key) {
            let mine = n == vcpu;
            match field {
                b"" if mine => {
                    b.target_count = targets(value, &mut b.targets).ok_or(BootargsError {
                        key: word,
                        problem: Problem::Invalid,
                    })?
                }
                b".access" => {
                    let a = access_named(value).ok_or(BootargsError {
                        key: word,
                        problem: Problem::Invalid,
                    })?;
                    own_access = own_access.or(mine.then_some(a));
                }
                b".el" => {
                    let e = el_named(value).ok_or(BootargsError {
                        key: word,
                        problem: Problem::Invalid,
                    })?;
                    own_el = own_el.or(mine.then_some(e));
                }
                b"" => {}
                _ => {
                    return Err(BootargsError {
                        key: word,
                        problem: Problem::Unknown,
                    })
                }
            }
            continue;
        }
        match key {
            b"abi" => {
                if number(value) != Some(u64::from(crate::ABI_VERSION)) {
                    return Err(err("ras.abi", Problem::WrongAbi));
                }
                abi = true;
            }
            b"access" => {
                b.access = access_named(value).ok_or(err("ras.access", Problem::Invalid))?;
                access = true;
            }
            b"el" => {
                b.el = el_named(value).ok_or(err("ras.el", Problem::Invalid))?;
                el = true;
            }
            b"flags" => {
                for name in value.split(|&c| c == b',').filter(|n| !n.is_empty()) {
                    let bit = FLAG_NAMES
                        .iter()
                        .find(|(n, _)| n.as_bytes() == name)
                        .ok_or(err("ras.flags", Problem::Invalid))?
                        .1;
                    b.flags |= bit;
                }
            }
            b"vcpus" => {
                b.vcpus = number(value)
                    .filter(|n| (1..=MAX_VCPUS as u64).contains(n))
                    .ok_or(err("ras.vcpus", Problem::Invalid))? as u32;
            }
            b"rsdp" => b.rsdp = number(value).ok_or(err("ras.rsdp", Problem::Invalid))?,
            b"doorbell" => {
                b.doorbell = number(value).ok_or(err("ras.doorbell", Problem::Invalid))?
            }
            _ => {
                return Err(BootargsError {
                    key: word,
                    problem: Problem::Unknown,
                })
            }
        }
    }
    for (seen, key) in [(abi, "ras.abi"), (access, "ras.access"), (el, "ras.el")] {
        if !seen {
            return Err(err(key, Problem::Missing));
        }
    }
    b.access = own_access.unwrap_or(b.access);
    b.el = own_el.unwrap_or(b.el);
    Ok(b)
}

/// Only `ras.doorbell` (0 without one): where to announce that the rest of a line was
/// refused.
pub fn doorbell(line: &[u8]) -> u64 {
    line.split(|c| c.is_ascii_whitespace())
        .find_map(|w| w.strip_prefix(b"ras.doorbell=").and_then(number))
        .unwrap_or(0)
}

/// `vcpuN` or `vcpuN.field` as (N, ".field"), for N below [`MAX_VCPUS`].
fn vcpu_key(key: &[u8]) -> Option<(usize, &[u8])> {
    let rest = key.strip_prefix(b"vcpu")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = number(&rest[..digits]).filter(|&n| n < MAX_VCPUS as u64)?;
    Some((n as usize, &rest[digits..]))
}

/// Comma-separated numbers into `slots`; their count, or `None` for a bad number or too
/// many.
fn targets(value: &[u8], slots: &mut [u64; MAX_TARGETS]) -> Option<u32> {
    let mut count = 0;
    for t in value.split(|&c| c == b',').filter(|t| !t.is_empty()) {
        *slots.get_mut(count)? = number(t)?;
        count += 1;
    }
    Some(count as u32)
}

fn access_named(value: &[u8]) -> Option<Access> {
    ACCESS_NAMES
        .iter()
        .find(|(n, _)| n.as_bytes() == value)
        .map(|&(_, a)| a)
}

fn el_named(value: &[u8]) -> Option<u32> {
    match value {
        b"0" => Some(0),
        b"1" => Some(1),
        _ => None,
    }
}

/// One vCPU's part of a line: its targets (offsets into the target window) and, where it
/// differs from the line's, its access and EL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuArgs<'a> {
    /// Targets, one step each.
    pub targets: &'a [u64],
    /// Access.
    pub access: Access,
    /// Exception level.
    pub el: u32,
}

/// Writes the line for a VM whose vCPU `i` runs `vcpus[i]`; `b`'s own targets and vCPU
/// count are not used.
pub fn write(
    out: &mut impl core::fmt::Write,
    b: &Bootargs,
    vcpus: &[VcpuArgs<'_>],
) -> core::fmt::Result {
    let access = access_name(b.access);
    write!(
        out,
        "ras.abi={} ras.access={access} ras.el={}",
        crate::ABI_VERSION,
        b.el
    )?;
    let mut sep = " ras.flags=";
    for (name, bit) in FLAG_NAMES {
        if b.flags & bit != 0 {
            write!(out, "{sep}{name}")?;
            sep = ",";
        }
    }
    write!(out, " ras.vcpus={}", vcpus.len())?;
    for (i, v) in vcpus.iter().enumerate() {
        write!(out, " ras.vcpu{i}=")?;
        for (j, t) in v.targets.iter().enumerate() {
            write!(out, "{}{t:#x}", if j == 0 { "" } else { "," })?;
        }
        if v.access != b.access {
            write!(out, " ras.vcpu{i}.access={}", access_name(v.access))?;
        }
        if v.el != b.el {
            write!(out, " ras.vcpu{i}.el={}", v.el)?;
        }
    }
    if b.rsdp != 0 {
        write!(out, " ras.rsdp={:#x}", b.rsdp)?;
    }
    if b.doorbell != 0 {
        write!(out, " ras.doorbell={:#x}", b.doorbell)?;
    }
    Ok(())
}

fn access_name(access: Access) -> &'static str {
    ACCESS_NAMES
        .iter()
        .find(|(_, a)| *a == access)
        .map_or("none", |(n, _)| n)
}

/// A decimal or `0x` hex number.
fn number(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        let d = (c as char).to_digit(radix)?;
        n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    fn line(b: &Bootargs, targets: &[&[u64]]) -> String {
        let vcpus: std::vec::Vec<VcpuArgs> = targets
            .iter()
            .map(|&targets| VcpuArgs {
                targets,
                access: b.access,
                el: b.el,
            })
            .collect();
        let mut s = String::new();
        write(&mut s, b, &vcpus).unwrap();
        s
    }

    fn sample() -> Bootargs {
        Bootargs {
            access: Access::Load,
            el: 1,
            flags: flags::WALK_ACPI | flags::ACK,
            vcpus: 2,
            targets: [0; MAX_TARGETS],
            target_count: 0,
            rsdp: 0x4020_0000,
            doorbell: 0xa00_0000,
        }
    }

    #[test]
    fn written_lines_read_back_per_vcpu() {
        let s = line(&sample(), &[&[0, 0x4000], &[0x8000]]);
        assert_eq!(
            s,
            "ras.abi=4 ras.access=load ras.el=1 ras.flags=walk-acpi,ack ras.vcpus=2 \
             ras.vcpu0=0x0,0x4000 ras.vcpu1=0x8000 ras.rsdp=0x40200000 ras.doorbell=0xa000000"
        );
        let v0 = parse(s.as_bytes(), 0).unwrap();
        assert_eq!((v0.target_count, &v0.targets[..2]), (2, &[0, 0x4000][..]));
        let v1 = parse(s.as_bytes(), 1).unwrap();
        assert_eq!((v1.target_count, v1.targets[0]), (1, 0x8000));
        assert_eq!(
            Bootargs {
                targets: [0; MAX_TARGETS],
                target_count: 0,
                ..v1
            },
            sample()
        );
    }

    #[test]
    fn a_vcpu_may_have_its_own_access_and_el() {
        let vcpus = [
            VcpuArgs {
                targets: &[0],
                access: Access::Load,
                el: 1,
            },
            VcpuArgs {
                targets: &[0x1000],
                access: Access::Store,
                el: 0,
            },
        ];
        let mut s = String::new();
        write(&mut s, &sample(), &vcpus).unwrap();
        assert!(
            s.contains("ras.vcpu1=0x1000 ras.vcpu1.access=store ras.vcpu1.el=0"),
            "{s}"
        );
        let (v0, v1) = (
            parse(s.as_bytes(), 0).unwrap(),
            parse(s.as_bytes(), 1).unwrap(),
        );
        assert_eq!((v0.access, v0.el), (Access::Load, 1));
        assert_eq!(
            (v1.access, v1.el, v1.targets[0]),
            (Access::Store, 0, 0x1000)
        );
    }

    #[test]
    fn other_words_are_ignored_and_defaults_hold() {
        let b = parse(
            b"console=ttyAMA0 ras.abi=4  ras.access=none ras.el=0 quiet",
            0,
        )
        .unwrap();
        assert_eq!(
            (b.access, b.flags, b.vcpus, b.target_count),
            (Access::None, 0, 1, 0)
        );
        assert_eq!((b.rsdp, b.doorbell), (0, 0));
        assert_eq!(doorbell(b"ras.el=7 ras.doorbell=0xa000000"), 0xa00_0000);
    }

    #[test]
    fn bad_words_name_their_key() {
        let base = "ras.abi=4 ras.access=load ras.el=1";
        let cases: [(&str, &str, Problem); 10] = [
            ("ras.access=load ras.el=1", "ras.abi", Problem::Missing),
            (
                "ras.abi=3 ras.access=load ras.el=1",
                "ras.abi",
                Problem::WrongAbi,
            ),
            (
                "ras.abi=4 ras.access=lod ras.el=1",
                "ras.access",
                Problem::Invalid,
            ),
            (
                "ras.abi=4 ras.access=load ras.el=2",
                "ras.el",
                Problem::Invalid,
            ),
            (" ras.flags=ack,nope", "ras.flags", Problem::Invalid),
            (" ras.vcpus=9", "ras.vcpus", Problem::Invalid),
            (
                " ras.vcpu0=0x0,0x1,0x2,0x3,0x4",
                "ras.vcpu0=0x0,0x1,0x2,0x3,0x4",
                Problem::Invalid,
            ),
            (" ras.speed=1", "ras.speed=1", Problem::Unknown),
            (" ras.vcpu9=0x0", "ras.vcpu9=0x0", Problem::Unknown),
            (" ras.vcpu1.el=3", "ras.vcpu1.el=3", Problem::Invalid),
        ];
        for (text, key, problem) in cases {
            let text = if text.starts_with(' ') {
                std::format!("{base}{text}")
            } else {
                text.into()
            };
            let e = parse(text.as_bytes(), 0).unwrap_err();
            assert_eq!((e.key, e.problem), (key.as_bytes(), problem), "{text}");
            assert_eq!(doorbell(text.as_bytes()), 0);
        }
    }

    #[test]
    fn numbers_are_decimal_or_hex_and_never_overflow() {
        assert_eq!(number(b"4096"), Some(4096));
        assert_eq!(number(b"0x1000"), Some(4096));
        assert_eq!(number(b"0x"), None);
        assert_eq!(number(b"12a"), None);
        assert_eq!(number(b"0x1_0000_0000_0000_0000"), None);
        assert_eq!(number(b"0x10000000000000000"), None);
    }

    #[test]
    fn the_target_span_covers_every_vcpus_targets_in_2_mib_blocks() {
        let s = line(&sample(), &[&[0, 0x4000], &[0x20_0000]]);
        assert_eq!(target_span(s.as_bytes()), 4 << 20);
        let s = line(&sample(), &[&[0x1000], &[]]);
        assert_eq!(target_span(s.as_bytes()), 2 << 20);
        assert_eq!(target_span(b"ras.abi=4 ras.access=none ras.el=1"), 0);
        assert_eq!(target_span(b"ras.bogus=1 ras.vcpu0=0x1000"), 0);
    }
}
