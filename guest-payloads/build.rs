//! Links the payload as a position-independent executable with `link.ld` (absolute path,
//! so it works from any working directory): `-pie` keeps the relocations `_start` applies
//! at whatever base a VMM loads it.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in ["-pie", "--no-dynamic-linker", "-z", "text", "-z", "norelro"] {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:rustc-link-arg=-T{dir}/link.ld");
    println!("cargo:rerun-if-changed=link.ld");
}
