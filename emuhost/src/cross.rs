//! Building a target of this workspace for aarch64 and running it in the emulated host:
//! how a test (or bench, or the harness) compiled for the machine at hand relaunches itself
//! where KVM and root are.
//!
//! The build is a nested cargo with its own target directory (target/emuhost/cross), so it
//! never waits on the outer build's lock, and without the outer build's target and flag
//! variables, so the workspace's .cargo/config.toml settings for the musl target apply.

use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;
use crate::{progress, RunOptions};

/// The static target every relaunched binary is built for.
pub const TARGET: &str = "aarch64-unknown-linux-musl";

/// A cargo target kind, as `cargo build` selects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Test,
    Bench,
    Bin,
    Example,
}

impl TargetKind {
    fn flag(self) -> &'static str {
        match self {
            TargetKind::Test => "--test",
            TargetKind::Bench => "--bench",
            TargetKind::Bin => "--bin",
            TargetKind::Example => "--example",
        }
    }

    /// The kind in cargo's JSON artifact messages.
    fn json_kind(self) -> &'static str {
        match self {
            TargetKind::Test => "test",
            TargetKind::Bench => "bench",
            TargetKind::Bin => "bin",
            TargetKind::Example => "example",
        }
    }
}

/// One target of one package, e.g. the `hwpoison` test of ras-harness.
#[derive(Clone, Debug)]
pub struct CrossTarget {
    /// The package's directory (its `env!("CARGO_MANIFEST_DIR")`).
    pub manifest_dir: PathBuf,
    pub package: String,
    pub kind: TargetKind,
    pub name: String,
    pub features: Vec<String>,
    pub release: bool,
}

impl CrossTarget {
    /// Builds the target for aarch64 (cargo's progress on stderr) and returns the executable.
    pub fn build(&self, cache_dir: &Path) -> Result<PathBuf, Error> {
        progress!("building {} {} for {TARGET}", self.package, self.name);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.manifest_dir)
            .args([
                "build",
                "--message-format=json-render-diagnostics",
                "--target",
                TARGET,
            ])
            .arg("--manifest-path")
            .arg(self.manifest_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(cache_dir.join("cross"))
            .args(["-p", &self.package, self.kind.flag(), &self.name]);
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        if self.release {
            cmd.arg("--release");
        }
        for var in [
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Build(format!("cannot run cargo: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or(Error::Build("no cargo stdout".into()))?;
        let mut executable = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.map_err(|e| Error::Build(format!("reading cargo's output: {e}")))?;
            if let Some(exe) = artifact_executable(&line, self.kind, &self.name) {
                executable = Some(exe);
            }
        }
        let status = child.wait().map_err(|e| Error::Build(e.to_string()))?;
        if !status.success() {
            return Err(Error::Build(format!(
                "cargo build for {TARGET} failed ({status})"
            )));
        }
        executable.ok_or(Error::Build(format!(
            "cargo reported no executable for {}",
            self.name
        )))
    }

    /// Builds the target and runs it in the emulated host (or natively, where that works)
    /// with `args`; returns its exit status.
    pub fn relaunch(&self, args: &[OsString]) -> Result<i32, Error> {
        let opts = RunOptions::from_env()?;
        let exe = self.build(&opts.cache_dir)?;
        crate::run(&exe, args, &opts)
    }

    /// [`relaunch`](Self::relaunch) with this process's own arguments, as the status this
    /// process should exit with; a failure to relaunch is reported on stderr as `who: ...`.
    pub fn relaunch_self(&self, who: &str) -> std::process::ExitCode {
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        match self.relaunch(&args) {
            Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(255)),
            Err(e) => {
                eprintln!("{who}: cannot run in the emulated arm64 KVM host: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// The executable of a `compiler-artifact` message for the target `name` of `kind`.
fn artifact_executable(line: &str, kind: TargetKind, name: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != name {
        return None;
    }
    let kinds = msg["target"]["kind"].as_array()?;
    if !kinds.iter().any(|k| k == kind.json_kind()) {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
}

/// Builds the crate at `crate_rel` (relative to the workspace root; a workspace of its own
/// with its Cargo.lock) for [`TARGET`] into `target_dir`, adding the target to the
/// toolchain if missing, and checks that `exe` is there: a nested `cargo build --release
/// --locked`, with the outer build's target, flags and wrappers removed; cargo's progress
/// goes to stderr. Later calls only check that it is up to date.
pub(crate) fn build_workspace(crate_rel: &str, target_dir: &Path, exe: &Path) -> Result<(), Error> {
    rustup_targets::ensure(TARGET).map_err(Error::Build)?;
    let crate_dir = crate::workspace_root().join(crate_rel);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&crate_dir)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for var in [
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| Error::Build(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "building {} for {TARGET} failed ({status})",
            crate_dir.display()
        )));
    }
    if !exe.is_file() {
        return Err(Error::Build(format!(
            "cargo reported success but {} is missing",
            exe.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_lines_are_picked_by_kind_and_name() {
        let test = r#"{"reason":"compiler-artifact","target":{"name":"hwpoison","kind":["test"]},"executable":"/t/hwpoison-1"}"#;
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"hwpoison","kind":["lib"]},"executable":null}"#;
        assert_eq!(
            artifact_executable(test, TargetKind::Test, "hwpoison"),
            Some("/t/hwpoison-1".into())
        );
        assert_eq!(
            artifact_executable(test, TargetKind::Bench, "hwpoison"),
            None
        );
        assert_eq!(artifact_executable(lib, TargetKind::Test, "hwpoison"), None);
        assert_eq!(
            artifact_executable("not json", TargetKind::Test, "hwpoison"),
            None
        );
    }
}
