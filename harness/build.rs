//! Builds the guest payload (guest-payloads/, aarch64-unknown-none) with a nested cargo
//! (adding the target to the toolchain first when it lacks it), checks that every dynamic
//! relocation is one its entry code applies, flattens its ELF into the arm64 Image a VMM
//! loads, and hands both to src/payload.rs: `$OUT_DIR/ras-guest.bin` and the ELF entry
//! point in `RAS_GUEST_ENTRY`. Runs on every host: the image is data to an x86 build too.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "aarch64-unknown-none";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("harness/ sits in the workspace root");
    let guest = root.join("guest-payloads");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for dir in ["guest-payloads/src", "guest-abi/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in [
        "guest-payloads/Cargo.toml",
        "guest-payloads/link.ld",
        "guest-payloads/build.rs",
        "guest-abi/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    if let Err(e) = rustup_targets::ensure(GUEST_TARGET) {
        panic!("{e}");
    }
    let elf = build_guest(&guest, &out.join("guest-target"));
    check_relocations(&elf);
    let bin = out.join("ras-guest.bin");
    let entry = flatten(&elf, &bin);
    println!("cargo:rustc-env=RAS_GUEST_ENTRY={entry:#x}");
}

/// `cargo build --release` of the payload with the outer build's flags and wrappers
/// removed (they target the host, or run clippy), into a target dir of its own.
fn build_guest(guest: &Path, target_dir: &Path) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(guest)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .expect("run cargo for guest-payloads");
    assert!(status.success(), "building guest-payloads failed: {status}");
    target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join("ras-guest")
}

/// Panics unless every dynamic relocation is R_AARCH64_RELATIVE (1027, "ELF for the Arm
/// 64-bit Architecture" §5.7.11): the only kind the payload's `_start` applies.
fn check_relocations(elf: &Path) {
    use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
    const R_AARCH64_RELATIVE: u32 = 1027;
    let bytes = std::fs::read(elf).expect("read the payload ELF");
    let file = ElfFile64::<object::Endianness>::parse(&*bytes).expect("the payload is an ELF64");
    let endian = file.endian();
    let sections = file
        .elf_header()
        .sections(endian, &*bytes)
        .expect("section headers");
    for section in sections.iter() {
        let Some((relas, _)) = section.rela(endian, &*bytes).expect("a RELA section") else {
            continue;
        };
        for r in relas {
            let kind = r.r_type(endian, false);
            assert_eq!(
                kind, R_AARCH64_RELATIVE,
                "the payload has a relocation its _start cannot apply (type {kind}); keep \
                 absolute addresses out of it"
            );
        }
    }
}

/// The ELF's entry point, and its image as a loader sees it (what `objcopy -O binary`
/// writes): every PT_LOAD segment's file bytes at its physical address, from the lowest
/// one, with the gaps and each segment's zero-filled tail (p_memsz past p_filesz) as zeros
/// up to the end of the last file byte (System V gABI, "Program Header"), padded to whole
/// 4 KiB pages.
fn flatten(elf: &Path, bin: &Path) -> u64 {
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    let bytes = std::fs::read(elf).expect("read the payload ELF");
    let file = ElfFile64::<object::Endianness>::parse(&*bytes).expect("the payload is an ELF64");
    let endian = file.endian();
    let loads: Vec<(u64, &[u8])> = file
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(endian) == object::elf::PT_LOAD && p.p_filesz(endian) > 0)
        .map(|p| {
            let data = p.data(endian, &*bytes).expect("segment inside the file");
            (p.p_paddr(endian), data)
        })
        .collect();
    let base = loads
        .iter()
        .map(|&(a, _)| a)
        .min()
        .expect("a loadable segment");
    let end = loads
        .iter()
        .map(|&(a, d)| a + d.len() as u64)
        .max()
        .expect("a loadable segment");
    // Whole pages, as the PE header's raw sizes count them (guest-payloads/link.ld).
    let size = (end - base).next_multiple_of(4096);
    let mut image = vec![0u8; usize::try_from(size).expect("image size")];
    for (addr, data) in loads {
        let at = usize::try_from(addr - base).expect("offset");
        image[at..at + data.len()].copy_from_slice(data);
    }
    std::fs::write(bin, image).expect("write the flat payload image");
    file.elf_header().e_entry(endian)
}
