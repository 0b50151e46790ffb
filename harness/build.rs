//! Builds the guest payload (guest-payloads/, aarch64-unknown-none) with a nested cargo,
//! flattens its ELF into the image the VMM copies to guest RAM, and hands both to
//! src/payload.rs: `$OUT_DIR/ras-guest.bin` and the ELF entry point in
//! `RAS_GUEST_ENTRY`. Runs on every host: the image is data to an x86 build too.

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

    let elf = build_guest(&guest, &out.join("guest-target"));
    let entry = elf_entry(&elf);
    let bin = out.join("ras-guest.bin");
    flatten(&elf, &bin);
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

/// e_entry: the u64 at offset 24 of an ELF64 header (System V gABI, "ELF Header").
fn elf_entry(elf: &Path) -> u64 {
    let bytes = std::fs::read(elf).expect("read the payload ELF");
    assert!(
        bytes.len() >= 32 && bytes[..4] == *b"\x7fELF",
        "not an ELF file"
    );
    u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"))
}

/// `llvm-objcopy -O binary` from the toolchain's llvm-tools (rust-toolchain.toml lists
/// the component): the loadable sections, from the lowest address, gaps zero-filled.
fn flatten(elf: &Path, bin: &Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = String::from_utf8(sysroot.stdout).expect("UTF-8 sysroot path");
    let host = env::var("HOST").expect("set by cargo");
    let objcopy: PathBuf = [
        sysroot.trim(),
        "lib",
        "rustlib",
        &host,
        "bin",
        "llvm-objcopy",
    ]
    .iter()
    .collect();
    let status = Command::new(&objcopy)
        .args(["-O", "binary"])
        .arg(elf)
        .arg(bin)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (rustup component llvm-tools): {e}",
                objcopy.display()
            )
        });
    assert!(status.success(), "llvm-objcopy failed: {status}");
}
