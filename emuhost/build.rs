//! Builds the guest side (emuhost-init, PID 1 of the initramfs, and emuhost-probe, the
//! test probe) as static aarch64 musl binaries, for the library to embed and the tests to run.
//!
//! The target is added to the toolchain first when it lacks it. A nested cargo with its
//! own target directory under OUT_DIR, so that it never waits on the outer build's lock,
//! and without the outer build's target and flags in its environment.

use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "aarch64-unknown-linux-musl";

fn main() -> Result<(), String> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("emuhost has no parent directory")?;
    let target_dir = out_dir.join("guest-target");
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("init").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join(".cargo/config.toml").display()
    );

    rustup_targets::ensure(TARGET)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--bins",
            "-p",
            "emuhost-init",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building emuhost-init for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let bin_dir = target_dir.join(TARGET).join("release");
    println!(
        "cargo:rustc-env=EMUHOST_INIT={}",
        bin_dir.join("emuhost-init").display()
    );
    println!(
        "cargo:rustc-env=EMUHOST_PROBE={}",
        bin_dir.join("emuhost-probe").display()
    );
    Ok(())
}
