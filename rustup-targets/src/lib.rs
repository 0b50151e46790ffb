//! Adds a missing Rust target to the toolchain that is building, for the build scripts
//! that cross-build for aarch64 (harness/build.rs, emuhost/build.rs).
//!
//! rustup installs the `targets` of rust-toolchain.toml only when it installs the
//! toolchain itself: a machine that already had the pinned version lacks them, and the
//! README's two commands must still work there with nothing else typed. Cargo runs build
//! scripts in parallel, so the check and the install happen under a lock file.

use std::path::PathBuf;
use std::process::Command;

/// Makes sure the compiler cargo gave this build script (`RUSTC`) has the standard library
/// for `target`, adding it with `rustup target add --toolchain $RUSTUP_TOOLCHAIN` (the
/// toolchain rustup chose for this build) when it is missing, and saying so in a
/// `cargo:warning` line (cargo shows build scripts' other output only when they fail).
pub fn ensure(target: &str) -> Result<(), String> {
    if installed(target)? {
        return Ok(());
    }
    let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") else {
        return Err(format!(
            "the Rust standard library for {target} is missing and this toolchain is not \
             run through rustup: install the {target} target for it"
        ));
    };
    let lock_path = std::env::temp_dir().join("rustup-targets.lock");
    let lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // Another build script may have added it while this one waited.
    if installed(target)? {
        return Ok(());
    }
    let out = Command::new("rustup")
        .args(["target", "add", "--toolchain"])
        .arg(&toolchain)
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run rustup to add the {target} target: {e}"))?;
    drop(lock);
    if !out.status.success() {
        return Err(format!(
            "`rustup target add --toolchain {} {target}` failed ({}):\n{}",
            toolchain.to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!(
        "cargo:warning=added the Rust target {target} to toolchain {} (rustup target add)",
        toolchain.to_string_lossy()
    );
    Ok(())
}

/// Whether `rustc --print target-libdir --target TARGET` exists: rustc prints the path
/// whether or not the target is installed.
fn installed(target: &str) -> Result<bool, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rustc.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "{} does not know the target {target}: {}",
            rustc.to_string_lossy(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(dir.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_target_is_installed() {
        let out = Command::new("rustc").arg("-vV").output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let host = text.lines().find_map(|l| l.strip_prefix("host: ")).unwrap();
        assert_eq!(installed(host), Ok(true));
    }

    #[test]
    fn an_unknown_target_is_an_error_naming_it() {
        let err = ensure("no-such-arch-unknown-none").unwrap_err();
        assert!(err.contains("no-such-arch-unknown-none"), "{err}");
    }
}
