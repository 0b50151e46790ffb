//! Just enough ELF to list what an aarch64 executable or shared library asks of the dynamic
//! linker: its interpreter (PT_INTERP) and the sonames it needs (DT_NEEDED). Layouts from the
//! System V gABI (ELF-64 header, program header and dynamic section entries; 64-bit
//! little-endian only, as every aarch64 Linux binary is).

/// EM_AARCH64, the gABI's machine number for AArch64.
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// What one ELF file needs from the dynamic linker.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// PT_INTERP, e.g. "/lib/ld-linux-aarch64.so.1" (executables only).
    pub interp: Option<String>,
    /// The DT_NEEDED sonames, in order.
    pub needed: Vec<String>,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

fn c_str(d: &[u8], at: usize) -> Option<String> {
    let rest = d.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// One program header: (p_type, p_offset, p_vaddr, p_filesz).
type Segment = (u32, usize, u64, u64);

/// The interpreter and needed sonames of an ELF-64 little-endian aarch64 file.
pub fn needs(data: &[u8]) -> Result<Needs, String> {
    if data.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let bad = || "truncated ELF headers".to_owned();
    if u16_at(data, 18).ok_or_else(bad)? != EM_AARCH64 {
        return Err("not an aarch64 ELF file".into());
    }
    let phoff = usize::try_from(u64_at(data, 32).ok_or_else(bad)?).map_err(|_| bad())?;
    let phentsize = usize::from(u16_at(data, 54).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(data, 56).ok_or_else(bad)?);
    let mut segments: Vec<Segment> = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let offset = usize::try_from(u64_at(data, at + 8).ok_or_else(bad)?).map_err(|_| bad())?;
        segments.push((
            u32_at(data, at).ok_or_else(bad)?,
            offset,
            u64_at(data, at + 16).ok_or_else(bad)?,
            u64_at(data, at + 32).ok_or_else(bad)?,
        ));
    }
    let mut found = Needs::default();
    if let Some(&(_, offset, _, _)) = segments.iter().find(|s| s.0 == PT_INTERP) {
        found.interp = Some(c_str(data, offset).ok_or_else(bad)?);
    }
    let Some(&(_, dynamic, _, size)) = segments.iter().find(|s| s.0 == PT_DYNAMIC) else {
        // Static: needs nothing.
        return Ok(found);
    };
    // Dynamic entries are (d_tag, d_val) pairs of 8 bytes each, ended by DT_NULL.
    let mut needed_offsets = Vec::new();
    let mut strtab = None;
    for at in (dynamic..dynamic + usize::try_from(size).map_err(|_| bad())?).step_by(16) {
        let tag = u64_at(data, at).ok_or_else(bad)?;
        let value = u64_at(data, at + 8).ok_or_else(bad)?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed_offsets.push(value),
            DT_STRTAB => strtab = Some(value),
            _ => {}
        }
    }
    if needed_offsets.is_empty() {
        return Ok(found);
    }
    // DT_STRTAB is an address: the PT_LOAD segment holding it maps it to a file offset.
    let strtab = strtab.ok_or("DT_NEEDED without DT_STRTAB")?;
    let &(_, load_offset, load_vaddr, _) = segments
        .iter()
        .find(|&&(kind, _, vaddr, filesz)| {
            kind == PT_LOAD && vaddr <= strtab && strtab < vaddr + filesz
        })
        .ok_or("DT_STRTAB lies in no loaded segment")?;
    let strtab = load_offset + usize::try_from(strtab - load_vaddr).map_err(|_| bad())?;
    for name in needed_offsets {
        let name = usize::try_from(name).map_err(|_| bad())?;
        found
            .needed
            .push(c_str(data, strtab + name).ok_or_else(bad)?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal aarch64 executable: ELF header, three program headers (PT_INTERP,
    /// PT_LOAD of the whole file, PT_DYNAMIC) and a dynamic section naming two sonames.
    fn tiny_elf() -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        f[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&3u16.to_le_bytes()); // e_phnum
        let interp_at = 64 + 3 * 56;
        let interp = b"/lib/ld-linux-aarch64.so.1\0";
        let strtab_at = interp_at + interp.len();
        let strings = b"\0libc.so.6\0libz.so.1\0";
        let dynamic_at = strtab_at + strings.len();
        let vaddr = 0x40_0000u64;
        let phdr = |kind: u32, offset: usize, filesz: usize| {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&(offset as u64).to_le_bytes());
            p[16..24].copy_from_slice(&(vaddr + offset as u64).to_le_bytes());
            p[32..40].copy_from_slice(&(filesz as u64).to_le_bytes());
            p
        };
        let total = dynamic_at + 4 * 16;
        f.extend(phdr(PT_INTERP, interp_at, interp.len()));
        f.extend(phdr(PT_LOAD, 0, total));
        f.extend(phdr(PT_DYNAMIC, dynamic_at, 4 * 16));
        f.extend(interp);
        f.extend(strings);
        for (tag, value) in [
            (DT_NEEDED, 1),
            (DT_STRTAB, vaddr + strtab_at as u64),
            (DT_NEEDED, 11),
            (DT_NULL, 0),
        ] {
            f.extend(tag.to_le_bytes());
            f.extend(value.to_le_bytes());
        }
        f
    }

    #[test]
    fn interpreter_and_needed_sonames_are_read() {
        assert_eq!(
            needs(&tiny_elf()).unwrap(),
            Needs {
                interp: Some("/lib/ld-linux-aarch64.so.1".into()),
                needed: vec!["libc.so.6".into(), "libz.so.1".into()],
            }
        );
    }

    #[test]
    fn other_files_are_refused() {
        let mut x86 = tiny_elf();
        x86[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert!(needs(&x86).unwrap_err().contains("aarch64"));
        assert!(needs(b"#!/bin/sh\n").is_err());
        assert!(needs(&tiny_elf()[..100]).is_err());
    }
}
