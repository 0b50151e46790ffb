//! Debian's arm64 QEMU as a system under test inside the emulated host: `qemu-system-aarch64`
//! of the suite's `qemu-system-arm` package, with its shared-library closure, fetched
//! through the private apt state (crate::apt) and unpacked with `dpkg-deb -x` (no dpkg, no
//! maintainer scripts) under `<cache>/qemu/<suite>/root`.
//!
//! The emulated host's root is an initramfs without libraries, so QEMU runs through the
//! unpacked dynamic linker, each suite with its own glibc (sid's QEMU needs sid's):
//!
//! ```text
//! <root>/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 --library-path DIRS \
//!     <root>/usr/bin/qemu-system-aarch64 -L <root>/usr/share/qemu ...
//! ```
//!
//! Started that way, /proc/self/exe is the linker, so QEMU's own idea of where it was
//! installed (util/cutils.c, qemu_init_exec_dir reads /proc/self/exe; get_relocated_path
//! derives the data directory from it) misses the unpacked data directory: `-L` names it.
//! The workspace, and so the cache, is shared into the emulated host at its own path, so
//! these paths hold there too.
//!
//! Run from that share, though, QEMU starts slowly: the 9p share is mounted without a cache
//! and reads at about 1 MB/s inside the emulated host, so faulting in the binary and its
//! libraries takes about 20 s per start (measured: `-version` 22.6 s from the share, 1.9 s
//! from tmpfs). So the fetch also packs the binary, the dynamic linker and the libraries
//! it loads into a newc archive (`initramfs.cpio`, about 60 MB) that a run appends to the
//! emulated host's initramfs ([`RunOptions::initramfs_parts`](crate::RunOptions)), and
//! [`QemuInstall::staged`] names them there, under `/emuhost/qemu/<suite>`.
//!
//! Which packages: qemu-system-arm and everything it depends on directly (its libraries,
//! qemu-system-common, qemu-system-data); beyond that only what libraries depend on that is
//! a library itself (archive section `libs`, Debian Policy 2.4). That leaves out what
//! maintainer scripts need (libibverbs1 depends on adduser, which pulls passwd, PAM and
//! debconf). Whether nothing was left out that QEMU loads is checked after unpacking: every
//! DT_NEEDED of qemu-system-aarch64 and of the libraries it needs, recursively, must be in
//! the library directories (crate::elf). Besides, the suite's edk2 firmware for the virt
//! machine (qemu-efi-aarch64, `QEMU_EFI.fd`), which a QEMU with ACPI boots first.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::apt::{self, Apt};
use crate::cpio::Archive;
use crate::error::{setup_io, Error};
use crate::{elf, kernel, progress};

/// The package, and the emulator of it that is kept.
const PACKAGE: &str = "qemu-system-arm";
const BINARY: &str = "usr/bin/qemu-system-aarch64";
/// The multiarch library directories, in the order glibc's ld.so searches them on Debian
/// arm64 (libc6's /etc/ld.so.conf.d/aarch64-linux-gnu.conf, then the system directories).
const LIBRARY_DIRS: &[&str] = &[
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib",
    "usr/lib",
];
/// QEMU's data directory (Debian's --datadir, qemu-system-data).
const DATA_DIR: &str = "usr/share/qemu";
/// Removed after unpacking: documentation, glibc's iconv converters (gconv, 20 MB; loaded
/// only to convert from or to charsets other than UTF-8 and ASCII) and the 32-bit emulator
/// of the same package.
const PRUNED: &[&str] = &[
    "usr/lib/aarch64-linux-gnu/gconv",
    "lib/aarch64-linux-gnu/gconv",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/locale",
    "usr/bin/qemu-system-arm",
];
/// The UEFI firmware a QEMU with ACPI boots (Debian's edk2 build for the virt machine),
/// fetched with each suite's QEMU so the pair is what that suite ships.
const FIRMWARE_PACKAGE: &str = "qemu-efi-aarch64";
const FIRMWARE: &str = "usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// Written into qemu.txt; a different one (a newer emuhost's layout) reads as not installed.
const LAYOUT: &str = "3";
/// Where the initramfs part puts a suite's QEMU in the emulated host (init's own files
/// live under /emuhost too).
const STAGED: &str = "/emuhost/qemu";

/// The Debian suites whose QEMU can be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QemuSuite {
    /// Debian 12: QEMU 7.2.
    Bookworm,
    /// Debian 12 with its backports: a newer QEMU on bookworm's libraries.
    BookwormBackports,
    /// Debian 13 (stable when written): QEMU 10.0.
    Trixie,
    /// Debian unstable: the newest QEMU, on sid's glibc.
    Sid,
}

impl QemuSuite {
    pub const ALL: [QemuSuite; 4] = [
        QemuSuite::Bookworm,
        QemuSuite::BookwormBackports,
        QemuSuite::Trixie,
        QemuSuite::Sid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QemuSuite::Bookworm => "bookworm",
            QemuSuite::BookwormBackports => "bookworm-backports",
            QemuSuite::Trixie => "trixie",
            QemuSuite::Sid => "sid",
        }
    }

    /// Reads a suite name ("stable" means trixie, "unstable" sid).
    pub fn parse(s: &str) -> Result<QemuSuite, Error> {
        match s.trim() {
            "bookworm" => Ok(QemuSuite::Bookworm),
            "bookworm-backports" => Ok(QemuSuite::BookwormBackports),
            "trixie" | "stable" => Ok(QemuSuite::Trixie),
            "sid" | "unstable" => Ok(QemuSuite::Sid),
            other => Err(Error::Config(format!(
                "unknown QEMU suite {other:?}; choose one of bookworm, bookworm-backports, \
                 trixie, sid"
            ))),
        }
    }

    /// The archive suites its apt state lists.
    fn sources(self) -> &'static [&'static str] {
        match self {
            QemuSuite::Bookworm => &["bookworm"],
            QemuSuite::BookwormBackports => &["bookworm", "bookworm-backports"],
            QemuSuite::Trixie => &["trixie"],
            QemuSuite::Sid => &["sid"],
        }
    }
}

/// An unpacked QEMU, ready to run in the emulated host (or on any arm64 Linux).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuInstall {
    pub suite: QemuSuite,
    /// The Debian version of qemu-system-arm, e.g. "1:10.0.13+ds-0+deb13u1".
    pub version: String,
    /// Where the packages were unpacked.
    pub root: PathBuf,
    /// The unpacked ld-linux-aarch64.so.1.
    pub loader: PathBuf,
    /// The directories holding the libraries QEMU loads, in search order.
    pub library_dirs: Vec<PathBuf>,
    /// `<root>/usr/bin/qemu-system-aarch64`.
    pub binary: PathBuf,
    /// `<root>/usr/share/qemu`, passed with -L.
    pub data_dir: Option<PathBuf>,
    /// The suite's edk2 firmware for the virt machine (`-bios`).
    pub firmware: PathBuf,
    /// The unpacked packages: (name, version).
    pub packages: Vec<(String, String)>,
    /// A newc archive holding the binary, the dynamic linker and the libraries it loads
    /// where [`staged`](Self::staged) says, to add to the emulated host's initramfs.
    pub initramfs: PathBuf,
}

impl QemuInstall {
    /// The command prefix that runs this QEMU: the loader, `--library-path DIRS`, the binary
    /// and `-L DATADIR`; QEMU's own arguments follow.
    pub fn prefix(&self) -> Vec<OsString> {
        let mut p = vec![
            self.loader.clone().into_os_string(),
            "--library-path".into(),
        ];
        // ensure() refuses a cache whose path holds the separator.
        p.push(std::env::join_paths(&self.library_dirs).unwrap_or_default());
        p.push(self.binary.clone().into_os_string());
        if let Some(data) = &self.data_dir {
            p.push("-L".into());
            p.push(data.clone().into_os_string());
        }
        p
    }

    /// [`prefix`](Self::prefix) as a command to add QEMU's arguments to (arm64 Linux only).
    pub fn command(&self) -> Command {
        let prefix = self.prefix();
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..]);
        cmd
    }

    /// This QEMU as the emulated host sees it when [`initramfs`](Self::initramfs) is one
    /// of its initramfs parts: binary, linker, libraries and firmware in RAM under
    /// `/emuhost/qemu/<suite>/{bin,lib,firmware}`, the data directory still read from the
    /// share.
    pub fn staged(&self) -> QemuInstall {
        let root = Path::new(STAGED).join(self.suite.name());
        QemuInstall {
            loader: root.join("lib").join(loader_name()),
            library_dirs: vec![root.join("lib")],
            binary: root.join("bin/qemu-system-aarch64"),
            firmware: root.join("firmware/QEMU_EFI.fd"),
            root,
            ..self.clone()
        }
    }

    /// The upstream version, e.g. "10.0.13" from "1:10.0.13+ds-0+deb13u1".
    pub fn upstream_version(&self) -> &str {
        upstream(&self.version)
    }

    /// The firmware's upstream version, e.g. "2025.02" from "2025.02-8"; empty if unknown.
    pub fn firmware_version(&self) -> &str {
        self.packages
            .iter()
            .find(|(name, _)| name == FIRMWARE_PACKAGE)
            .map_or("", |(_, v)| upstream(v))
    }
}

/// A Debian version without its epoch and Debian revision.
fn upstream(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |v| v.1);
    v.split(['+', '-', '~']).next().unwrap_or(v)
}

/// The cached QEMU of `suite`, fetched and unpacked first if `refresh` or if not there.
/// Holds `cache_dir`'s set-up lock (shared with the kernel set-up) throughout.
pub fn ensure(suite: QemuSuite, cache_dir: &Path, refresh: bool) -> Result<QemuInstall, Error> {
    let dir = cache_dir.join("qemu").join(suite.name());
    if dir.to_string_lossy().contains(':') {
        return Err(Error::Config(format!(
            "{}: ld.so's --library-path cannot name a directory whose path holds ':'",
            dir.display()
        )));
    }
    let _lock = crate::lock_cache(cache_dir)?;
    if !refresh {
        if let Some(install) = load(suite, &dir) {
            return Ok(install);
        }
    }
    fetch(suite, cache_dir, &dir)?;
    load(suite, &dir).ok_or(Error::Setup(format!(
        "{} was set up but cannot be read back",
        dir.display()
    )))
}

/// The QEMU of `suite` already in `cache_dir`, if [`ensure`] put it there: no lock, no
/// network (what a run inside the emulated host uses).
pub fn installed(suite: QemuSuite, cache_dir: &Path) -> Option<QemuInstall> {
    load(suite, &cache_dir.join("qemu").join(suite.name()))
}

/// Reads qemu.txt, written last by `fetch`, so a partial set-up reads as absent.
fn load(suite: QemuSuite, dir: &Path) -> Option<QemuInstall> {
    let text = fs::read_to_string(dir.join("qemu.txt")).ok()?;
    let root = dir.join("root");
    let mut install = QemuInstall {
        suite,
        version: String::new(),
        loader: PathBuf::new(),
        library_dirs: Vec::new(),
        binary: root.join(BINARY),
        data_dir: None,
        firmware: root.join(FIRMWARE),
        packages: Vec::new(),
        root: root.clone(),
        initramfs: dir.join("initramfs.cpio"),
    };
    let mut layout = "";
    for line in text.lines() {
        let (key, value) = line.split_once(' ')?;
        match key {
            "layout" => layout = value,
            "version" => install.version = value.to_owned(),
            "loader" => install.loader = root.join(value),
            "library-dir" => install.library_dirs.push(root.join(value)),
            "data-dir" => install.data_dir = Some(root.join(value)),
            "package" => {
                let (name, version) = value.split_once(' ')?;
                install.packages.push((name.to_owned(), version.to_owned()));
            }
            _ => {}
        }
    }
    let ok = layout == LAYOUT
        && !install.version.is_empty()
        && !install.library_dirs.is_empty()
        && install.loader.is_file()
        && install.binary.is_file()
        && install.firmware.is_file()
        && install.initramfs.is_file();
    ok.then_some(install)
}

fn fetch(suite: QemuSuite, cache: &Path, dir: &Path) -> Result<(), Error> {
    let started = Instant::now();
    let mirror = kernel::mirror();
    let apt = Apt::new(
        &cache.join("apt").join(suite.name()),
        &mirror,
        suite.sources(),
    )?;
    progress!(
        "fetching the arm64 package lists of Debian {} from {mirror}",
        suite.sources().join(" + ")
    );
    apt.update()?;
    let listed = started.elapsed();
    let mut closure = resolve(&apt)?;
    let firmware = apt.show(&[FIRMWARE_PACKAGE.to_owned()])?;
    let firmware = firmware
        .get(FIRMWARE_PACKAGE)
        .and_then(|f| f.get("Version"))
        .ok_or(Error::Setup(format!(
            "the archive has no {FIRMWARE_PACKAGE}"
        )))?;
    closure
        .taken
        .insert(FIRMWARE_PACKAGE.to_owned(), firmware.clone());
    let resolved = started.elapsed();
    let names: Vec<String> = closure.taken.keys().cloned().collect();
    progress!(
        "downloading {PACKAGE} {} and {} more packages",
        closure.taken[PACKAGE],
        names.len() - 1
    );
    let work = dir.with_extension("tmp");
    // A leftover from an interrupted set-up is discarded.
    let _ = fs::remove_dir_all(&work);
    let debs = apt.download(&names, &work.join("debs"))?;
    let fetched = started.elapsed();
    let downloaded: u64 = debs
        .iter()
        .filter_map(|d| d.metadata().ok())
        .map(|m| m.len())
        .sum();
    let root = work.join("root");
    apt::extract(&debs, &root)?;
    for p in PRUNED {
        let p = root.join(p);
        let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
    }
    if !root.join(FIRMWARE).is_file() {
        return Err(Error::Setup(format!(
            "{FIRMWARE_PACKAGE} {firmware} has no {FIRMWARE}"
        )));
    }
    let linked = link_closure(&root)?;
    let part = staging_archive(suite, &root, &linked)?;
    let unpacked = started.elapsed();

    let mut txt = format!(
        "layout {LAYOUT}\nversion {}\nloader {}\n",
        closure.taken[PACKAGE],
        linked.loader.display()
    );
    for d in &linked.library_dirs {
        txt.push_str(&format!("library-dir {d}\n"));
    }
    if root.join(DATA_DIR).is_dir() {
        txt.push_str(&format!("data-dir {DATA_DIR}\n"));
    }
    for (name, version) in &closure.taken {
        txt.push_str(&format!("package {name} {version}\n"));
    }
    for (name, why) in &closure.skipped {
        txt.push_str(&format!("skipped {name} {why}\n"));
    }
    txt.push_str(&format!("downloaded-bytes {downloaded}\n"));

    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(setup_io(dir.display()))?;
    fs::rename(&root, dir.join("root")).map_err(setup_io(dir.display()))?;
    fs::write(dir.join("initramfs.cpio"), part).map_err(setup_io(dir.display()))?;
    fs::write(dir.join("qemu.txt"), txt).map_err(setup_io(dir.display()))?;
    let _ = fs::remove_dir_all(&work);
    let secs = |d: std::time::Duration| d.as_secs_f64();
    progress!(
        "QEMU {} ({}, {} packages, {:.1} MB downloaded) ready in {} after {:.1} s (lists \
         {:.1} s, resolving {:.1} s, downloading {:.1} s, unpacking and packing {:.1} s)",
        closure.taken[PACKAGE],
        suite.name(),
        names.len(),
        downloaded as f64 / 1e6,
        dir.display(),
        secs(started.elapsed()),
        secs(listed),
        secs(resolved - listed),
        secs(fetched - resolved),
        secs(unpacked - fetched),
    );
    Ok(())
}

/// The packages to unpack and the dependencies left out.
struct Closure {
    /// name -> candidate version.
    taken: BTreeMap<String, String>,
    /// name -> why it was left out (its section, or that the archive lacks it).
    skipped: BTreeMap<String, String>,
}

/// Whether an archive section holds shared libraries (Debian Policy 2.4: `libs`, and
/// `oldlibs` for transitional ones; in contrib and non-free prefixed by the area).
fn is_library_section(section: &str) -> bool {
    let s = section.rsplit('/').next().unwrap_or(section);
    s == "libs" || s == "oldlibs"
}

/// Breadth-first over Depends and Pre-Depends from qemu-system-arm: its direct
/// dependencies all, then libraries only. Two apt-cache runs (each reads the whole package
/// list, about 1 s): the unpruned closure, then the fields of all of it.
fn resolve(apt: &Apt) -> Result<Closure, Error> {
    let graph = apt.depends_closure(PACKAGE)?;
    let shown = apt.show(&graph.keys().cloned().collect::<Vec<_>>())?;
    let mut closure = Closure {
        taken: BTreeMap::new(),
        skipped: BTreeMap::new(),
    };
    let mut level = vec![PACKAGE.to_owned()];
    let mut depth = 0;
    while !level.is_empty() {
        let mut next = BTreeSet::new();
        for name in level {
            let Some(fields) = shown.get(&name) else {
                closure
                    .skipped
                    .insert(name, "(not in the archive for arm64)".into());
                continue;
            };
            let section = fields.get("Section").map_or("", String::as_str);
            if depth > 1 && !is_library_section(section) {
                closure.skipped.insert(name, section.to_owned());
                continue;
            }
            let version = fields.get("Version").cloned().unwrap_or_default();
            next.extend(graph.get(&name).into_iter().flatten().cloned());
            closure.taken.insert(name, version);
        }
        level = next
            .into_iter()
            .filter(|d| !closure.taken.contains_key(d) && !closure.skipped.contains_key(d))
            .collect();
        depth += 1;
    }
    if !closure.taken.contains_key(PACKAGE) {
        return Err(Error::Setup(format!(
            "the archive has no {PACKAGE} for arm64"
        )));
    }
    Ok(closure)
}

/// Where the dynamic linker and the libraries were found, relative to the root.
struct Linked {
    loader: PathBuf,
    library_dirs: Vec<&'static str>,
    /// (soname, the file it names) of every library QEMU loads.
    libraries: Vec<(String, PathBuf)>,
}

/// The dynamic linker's name in the staged tree: the aarch64 one (glibc's
/// sysdeps/unix/sysv/linux/aarch64/ldsodefs.h, "ld-linux-aarch64.so.1").
fn loader_name() -> &'static str {
    "ld-linux-aarch64.so.1"
}

/// The initramfs part of [`QemuInstall::staged`]: each file under its run-time name
/// (libraries by soname), symbolic links followed.
fn staging_archive(suite: QemuSuite, root: &Path, linked: &Linked) -> Result<Vec<u8>, Error> {
    let base = format!("{STAGED}/{}", suite.name());
    let mut archive = Archive::new();
    let mut add = |guest: String, rel: &Path, mode: u32| -> Result<(), Error> {
        let data = fs::read(root.join(rel)).map_err(setup_io(rel.display()))?;
        archive.file(&guest, mode, &data);
        Ok(())
    };
    add(
        format!("{base}/bin/qemu-system-aarch64"),
        Path::new(BINARY),
        0o755,
    )?;
    add(
        format!("{base}/lib/{}", loader_name()),
        &linked.loader,
        0o755,
    )?;
    for (soname, file) in &linked.libraries {
        add(format!("{base}/lib/{soname}"), file, 0o644)?;
    }
    add(
        format!("{base}/firmware/QEMU_EFI.fd"),
        Path::new(FIRMWARE),
        0o644,
    )?;
    Ok(archive.finish())
}

/// Follows qemu-system-aarch64's PT_INTERP and DT_NEEDED, recursively, through
/// [`LIBRARY_DIRS`] under `root`: every soname must be there, as a file or a relative
/// symbolic link (an absolute one would point into the emulated host's own root).
fn link_closure(root: &Path) -> Result<Linked, Error> {
    let read = |rel: &Path| -> Result<elf::Needs, Error> {
        let data = fs::read(root.join(rel)).map_err(setup_io(rel.display()))?;
        elf::needs(&data).map_err(|e| Error::Setup(format!("{}: {e}", rel.display())))
    };
    let find = |soname: &str| -> Result<Option<(&'static str, PathBuf)>, Error> {
        for dir in LIBRARY_DIRS {
            let rel = Path::new(dir).join(soname);
            if let Some(file) = file_in(root, &rel)? {
                return Ok(Some((*dir, file)));
            }
        }
        Ok(None)
    };
    let exe = read(Path::new(BINARY))?;
    let interp = exe
        .interp
        .as_deref()
        .ok_or(Error::Setup(format!("{BINARY} has no PT_INTERP")))?;
    let interp_name = Path::new(interp)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if interp_name != loader_name() {
        return Err(Error::Setup(format!(
            "{BINARY} asks for the dynamic linker {interp}, not {}",
            loader_name()
        )));
    }
    let (_, loader) = find(&interp_name)?.ok_or(Error::Setup(format!(
        "the unpacked packages lack {BINARY}'s dynamic linker {interp}"
    )))?;
    let mut used: BTreeSet<&'static str> = BTreeSet::new();
    let mut libraries = Vec::new();
    // libc.so.6 needs the linker too; it is there already.
    let mut seen: BTreeSet<String> = BTreeSet::from([interp_name]);
    let mut missing = Vec::new();
    let mut queue: Vec<(String, String)> = exe
        .needed
        .into_iter()
        .map(|n| (n, BINARY.to_owned()))
        .collect();
    while let Some((soname, by)) = queue.pop() {
        if !seen.insert(soname.clone()) {
            continue;
        }
        match find(&soname)? {
            Some((dir, file)) => {
                used.insert(dir);
                let needs = read(&file)?;
                let by = file.display().to_string();
                queue.extend(needs.needed.into_iter().map(|n| (n, by.clone())));
                libraries.push((soname, file));
            }
            None => missing.push(format!("{soname} (needed by {by})")),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(Error::Setup(format!(
            "the unpacked packages lack shared libraries QEMU loads: {}",
            missing.join(", ")
        )));
    }
    libraries.sort();
    Ok(Linked {
        loader,
        libraries,
        library_dirs: LIBRARY_DIRS
            .iter()
            .copied()
            .filter(|d| used.contains(d))
            .collect(),
    })
}

/// The file `rel` (relative to `root`) names, following relative symbolic links; None if
/// there is none.
fn file_in(root: &Path, rel: &Path) -> Result<Option<PathBuf>, Error> {
    let mut rel = rel.to_owned();
    for _ in 0..16 {
        let Ok(meta) = fs::symlink_metadata(root.join(&rel)) else {
            return Ok(None);
        };
        if meta.is_file() {
            return Ok(Some(rel));
        }
        if !meta.file_type().is_symlink() {
            return Ok(None);
        }
        let target = fs::read_link(root.join(&rel)).map_err(setup_io(rel.display()))?;
        if target.is_absolute() {
            return Err(Error::Setup(format!(
                "{} is an absolute symbolic link ({}), which would not resolve inside the \
                 emulated host",
                rel.display(),
                target.display()
            )));
        }
        rel = normalise(&rel.parent().unwrap_or(Path::new("")).join(target));
    }
    Ok(None)
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        for s in QemuSuite::ALL {
            assert_eq!(QemuSuite::parse(s.name()).unwrap(), s);
        }
        assert_eq!(QemuSuite::parse("stable").unwrap(), QemuSuite::Trixie);
        assert!(matches!(QemuSuite::parse("buster"), Err(Error::Config(_))));
    }

    #[test]
    fn sections() {
        assert!(is_library_section("libs"));
        assert!(is_library_section("oldlibs"));
        assert!(is_library_section("non-free/libs"));
        assert!(!is_library_section("admin"));
        assert!(!is_library_section(""));
    }

    #[test]
    fn prefix_and_versions() {
        let install = QemuInstall {
            suite: QemuSuite::Trixie,
            version: "1:10.0.13+ds-0+deb13u1".into(),
            root: "/r".into(),
            loader: "/r/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1".into(),
            library_dirs: vec!["/r/lib/aarch64-linux-gnu".into(), "/r/usr/lib".into()],
            binary: "/r/usr/bin/qemu-system-aarch64".into(),
            data_dir: Some("/r/usr/share/qemu".into()),
            firmware: "/r/usr/share/qemu-efi-aarch64/QEMU_EFI.fd".into(),
            packages: vec![("qemu-efi-aarch64".into(), "2025.02-8".into())],
            initramfs: "/c/initramfs.cpio".into(),
        };
        assert_eq!(
            install.prefix(),
            [
                "/r/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
                "--library-path",
                "/r/lib/aarch64-linux-gnu:/r/usr/lib",
                "/r/usr/bin/qemu-system-aarch64",
                "-L",
                "/r/usr/share/qemu"
            ]
        );
        assert_eq!(install.upstream_version(), "10.0.13");
        assert_eq!(install.firmware_version(), "2025.02");
        assert_eq!(
            install.staged().firmware,
            Path::new("/emuhost/qemu/trixie/firmware/QEMU_EFI.fd")
        );
        assert_eq!(
            install.staged().prefix(),
            [
                "/emuhost/qemu/trixie/lib/ld-linux-aarch64.so.1",
                "--library-path",
                "/emuhost/qemu/trixie/lib",
                "/emuhost/qemu/trixie/bin/qemu-system-aarch64",
                "-L",
                "/r/usr/share/qemu"
            ]
        );
        let bookworm = QemuInstall {
            version: "1:7.2+dfsg-7+deb12u18".into(),
            ..install
        };
        assert_eq!(bookworm.upstream_version(), "7.2");
    }

    #[test]
    fn symbolic_links_resolve_inside_the_root_only() {
        let root = std::env::temp_dir().join(format!("emuhost-links-{}", std::process::id()));
        let lib = root.join("usr/lib/aarch64-linux-gnu");
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("libz.so.1.3"), b"").unwrap();
        std::os::unix::fs::symlink("libz.so.1.3", lib.join("libz.so.1")).unwrap();
        std::os::unix::fs::symlink("../aarch64-linux-gnu/libz.so.1", lib.join("libq.so")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/libc.so.6", lib.join("libc.so.6")).unwrap();
        let f = |p: &str| file_in(&root, Path::new(p));
        assert_eq!(
            f("usr/lib/aarch64-linux-gnu/libz.so.1").unwrap(),
            Some("usr/lib/aarch64-linux-gnu/libz.so.1.3".into())
        );
        assert_eq!(
            f("usr/lib/aarch64-linux-gnu/libq.so").unwrap(),
            Some("usr/lib/aarch64-linux-gnu/libz.so.1.3".into())
        );
        assert_eq!(f("usr/lib/aarch64-linux-gnu/libnone.so").unwrap(), None);
        assert!(f("usr/lib/aarch64-linux-gnu/libc.so.6").is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
