//! Debian arm64 packages through a private apt state.
//!
//! apt-get and apt-cache run with every state, cache and source path redirected into a
//! directory of ours and `APT::Architecture=arm64`, so the machine's dpkg architectures and
//! apt state stay untouched (never `dpkg --add-architecture`). apt checks the Release
//! signature against Debian's keyring and every downloaded file against the signed hashes.
//! The machine's apt preferences are replaced by ours too (every listed suite at the same
//! priority).

use std::collections::BTreeMap;
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
    /// Prepares `dir` for `suites` (e.g. ["trixie"], or ["bookworm", "bookworm-backports"])
    /// of `mirror`; nothing is fetched yet.
    ///
    /// Every suite gets priority 500: a backports suite's Release says `NotAutomatic: yes`,
    /// which would otherwise give it 100 (apt_preferences(5), "APT's Default Priority
    /// Assignments"), so its newer versions become the candidates, as `apt-get -t` would
    /// make them.
    pub fn new(dir: &Path, mirror: &str, suites: &[&str]) -> Result<Apt, Error> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(setup_io(dir.display()))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").map_err(setup_io(status.display()))?;
        }
        let mut sources = String::new();
        let mut preferences = String::new();
        for suite in suites {
            sources.push_str(&format!(
                "deb [arch=arm64 signed-by={KEYRING}] {mirror} {suite} main\n"
            ));
            preferences.push_str(&format!(
                "Package: *\nPin: release n={suite}\nPin-Priority: 500\n\n"
            ));
        }
        std::fs::write(dir.join("sources.list"), sources).map_err(setup_io(dir.display()))?;
        std::fs::write(dir.join("preferences"), preferences).map_err(setup_io(dir.display()))?;
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
            format!("Dir::Etc::Preferences={d}/preferences"),
            "Dir::Etc::PreferencesParts=/nonexistent".into(),
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

    /// Fetches the package lists (signature-checked by apt); an error if none came.
    pub fn update(&self) -> Result<(), Error> {
        self.run("apt-get", &["-q", "update"], None)?;
        if !self.has_lists() {
            return Err(Error::Setup(format!(
                "apt-get update fetched no package list into {}",
                self.dir.display()
            )));
        }
        Ok(())
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

    /// The direct Depends and Pre-Depends of `package` and of everything they lead to
    /// (candidate versions), by package, with one apt-cache run; virtual packages are left
    /// out.
    pub fn depends_closure(&self, package: &str) -> Result<BTreeMap<String, Vec<String>>, Error> {
        let out = self.run(
            "apt-cache",
            &[
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                package,
            ],
            None,
        )?;
        Ok(split_blocks(&out)
            .into_iter()
            .filter(|(name, _)| !name.starts_with('<'))
            .map(|(name, block)| (name, parse_depends(&block)))
            .collect())
    }

    /// The control fields of the candidate version of each of `packages` that the archive
    /// has, by package name, with one apt-cache run; unknown names are left out.
    pub fn show(
        &self,
        packages: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
        let mut found = BTreeMap::new();
        if packages.is_empty() {
            return Ok(found);
        }
        let mut args = vec!["show", "--no-all-versions"];
        args.extend(packages.iter().map(String::as_str));
        // apt-cache show fails when one name is unknown (a purely virtual package) but
        // still prints the others.
        let out = match self.run("apt-cache", &args, None) {
            Ok(out) => out,
            Err(_) => {
                let mut out = String::new();
                for p in packages {
                    out.push_str(
                        &self
                            .run("apt-cache", &["show", "--no-all-versions", p], None)
                            .unwrap_or_default(),
                    );
                    out.push('\n');
                }
                out
            }
        };
        for stanza in parse_stanzas(&out) {
            if let Some(name) = stanza.get("Package") {
                found.entry(name.clone()).or_insert(stanza);
            }
        }
        Ok(found)
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

/// Unpacks `debs` into `root` with `dpkg-deb -x` (no maintainer scripts, no dpkg state).
pub fn extract(debs: &[PathBuf], root: &Path) -> Result<(), Error> {
    for deb in debs {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(root)
            .status()
            .map_err(|e| Error::Setup(format!("cannot run dpkg-deb: {e}")))?;
        if !status.success() {
            return Err(Error::Setup(format!(
                "dpkg-deb -x {} failed",
                deb.display()
            )));
        }
    }
    Ok(())
}

/// The package names of `apt-cache depends` output's Depends and PreDepends lines,
/// alternatives included ("|Depends:" lines), virtual packages ("<name>") left out.
pub fn parse_depends(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('|');
            l.strip_prefix("Depends:")
                .or_else(|| l.strip_prefix("PreDepends:"))
        })
        .map(str::trim)
        .filter(|name| !name.starts_with('<') && !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `apt-cache depends A B ...` output cut into (package, its lines): a block starts at an
/// unindented line.
fn split_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            blocks.push((line.trim().to_owned(), String::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Control-file stanzas (`Field: value`, continuation lines indented, stanzas separated
/// by blank lines; Debian Policy 5.1) as field maps; continuation lines are dropped.
fn parse_stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut stanzas = vec![BTreeMap::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if stanzas.last().is_some_and(|s| !s.is_empty()) {
                stanzas.push(BTreeMap::new());
            }
        } else if !line.starts_with([' ', '\t']) {
            if let Some((k, v)) = line.split_once(':') {
                if let Some(s) = stanzas.last_mut() {
                    s.insert(k.to_owned(), v.trim().to_owned());
                }
            }
        }
    }
    stanzas.retain(|s| !s.is_empty());
    stanzas
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

    #[test]
    fn several_packages_depends_and_show_output_is_cut_per_package() {
        // apt-cache depends libpam-modules libc6 (trixie), abridged.
        let text = "libpam-modules\n |PreDepends: debconf\n  PreDepends: <debconf-2.0>\n    \
                    cdebconf\n    debconf\n  Depends: libc6\nlibc6\n  Depends: libgcc-s1\n";
        let blocks = split_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].0, "libpam-modules");
        assert_eq!(parse_depends(&blocks[0].1), ["debconf", "libc6"]);
        assert_eq!(parse_depends(&blocks[1].1), ["libgcc-s1"]);

        let show = "Package: zlib1g\nVersion: 1:1.3.dfsg+really1.3.1-1+b1\nDescription: x\n \
                    more text: not a field\nSection: libs\n\nPackage: adduser\nSection: admin\n";
        let stanzas = parse_stanzas(show);
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0]["Section"], "libs");
        assert!(!stanzas[0].contains_key(" more text"));
        assert_eq!(stanzas[1]["Package"], "adduser");
    }
}
