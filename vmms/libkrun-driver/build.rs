//! libloading (a libkrun dependency, there to find libkrunfw at run time) declares
//! `#[link(name = "dl")]` on Linux. musl has dlopen in libc itself and its static build
//! ships no libdl.a, so the link fails for aarch64-unknown-linux-musl. An empty archive
//! named libdl.a on the search path satisfies `-ldl` without adding anything.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib = out.join("libdl.a");
    // An ar archive with no members is its global header alone.
    std::fs::write(&lib, b"!<arch>\n")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", lib.display()));
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
}
