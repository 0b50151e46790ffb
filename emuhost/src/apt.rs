//! Debian arm64 packages through a private apt state.
//!
//! apt-get and apt-cache run with every state, cache and source path redirected into a
//! directory of ours and `APT::Architecture=arm64`, so the machine's dpkg architectures and
//! apt state stay untouched (never `dpkg --add-architecture`). apt checks the Release
//! signature against Debian's keyring and every downloaded file against the signed hashes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{setup_io, Error};

/// Debian's archive keyring, shipped by debian-archive-keyring on every Debian system.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A private apt state for one suite of the arm64 archive.
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Prepares `dir` for `suite` (e.g. "trixie") of `mirror`; nothing is fetched yet.
    pub fn new(dir: &Path, mirror: &str, suite: &str) -> Result<Apt, Error> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(setup_io(dir.display()))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").map_err(setup_io(status.display()))?;
        }
        let sources = format!("deb [arch=arm64 signed-by={KEYRING}] {mirror} {suite} main\n");
        std::fs::write(dir.join("sources.list"), sources).map_err(setup_io(dir.display()))?;
        Ok(Apt {
            dir: dir.to_owned(),
        })
    }

    fn options(&self) -> Vec<OsString> {
        let d = self.dir.display();
        [
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".into(),
            "APT::Architecture=arm64".into(),
            "APT::Architectures::=arm64".into(),
            "Debug::NoLocking=1".into(),
        ]
        .into_iter()
        .flat_map(|o| [OsString::from("-o"), o.into()])
        .collect()
    }

    fn run(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<String, Error> {
        let mut cmd = Command::new(tool);
        cmd.args(self.options()).args(args).env("LC_ALL", "C");
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let out = cmd
            .output()
            .map_err(|e| Error::Setup(format!("cannot run {tool}: {e}")))?;
        if !out.status.success() {
            return Err(Error::Setup(format!(
                "{tool} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Fetches the package lists (signature-checked by apt).
    pub fn update(&self) -> Result<(), Error> {
        self.run("apt-get", &["-q", "update"], None).map(drop)
    }

    /// Whether the lists have been fetched at least once.
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    /// The direct dependencies of `package`, by name.
    pub fn depends(&self, package: &str) -> Result<Vec<String>, Error> {
        Ok(parse_depends(&self.run(
            "apt-cache",
            &["depends", package],
            None,
        )?))
    }

    /// Whether the archive has `package`.
    pub fn exists(&self, package: &str) -> bool {
        self.run("apt-cache", &["show", "--no-all-versions", package], None)
            .is_ok_and(|out| out.contains("Package:"))
    }

    /// Downloads `packages` into `into` (hash-checked by apt) and returns the .deb files.
    pub fn download(&self, packages: &[String], into: &Path) -> Result<Vec<PathBuf>, Error> {
        std::fs::create_dir_all(into).map_err(setup_io(into.display()))?;
        let mut args = vec!["-q", "download"];
        args.extend(packages.iter().map(String::as_str));
        self.run("apt-get", &args, Some(into))?;
        let files: Vec<PathBuf> = std::fs::read_dir(into)
            .map_err(setup_io(into.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        for p in packages {
            let prefix = format!("{p}_");
            if !files.iter().any(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            }) {
                return Err(Error::Setup(format!(
                    "apt-get download left no .deb for {p}"
                )));
            }
        }
        Ok(files)
    }
}

/// The package names of `apt-cache depends` output's Depends lines, alternatives included
/// ("|Depends:" lines), virtual packages ("<name>") left out.
pub fn parse_depends(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .filter(|name| !name.starts_with('<') && !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_lines_are_read_and_virtuals_dropped() {
        // apt-cache depends linux-image-7.2.13+deb14-arm64 (sid), abridged.
        let text =
            "linux-image-7.2.13+deb14-arm64\n  |Depends: dracut\n  |Depends: initramfs-tools\n    \
                    Depends: <linux-initramfs-tool>\n  Depends: linux-base-7.2.13+deb14-arm64\n  \
                    Depends: linux-binary-7.2.13+deb14-arm64\n  Recommends: apparmor\n";
        assert_eq!(
            parse_depends(text),
            [
                "dracut",
                "initramfs-tools",
                "linux-base-7.2.13+deb14-arm64",
                "linux-binary-7.2.13+deb14-arm64"
            ]
        );
    }
}
