//! The guest kernel: which Debian arm64 kernel, fetched and checked once, cached.
//!
//! Package names are resolved through the flavour's metapackage (linux-image-arm64 or
//! linux-image-arm64-16k) and its dependencies, never pinned: bookworm and trixie ship one
//! `linux-image-VER-arm64-unsigned` package (Image at boot/vmlinuz-VER, config at
//! boot/config-VER, modules under lib/modules/VER); sid splits it into
//! `linux-binary-unsigned-VER-arm64` (usr/lib/modules/VER/vmlinuz.unsigned),
//! `linux-base-VER-arm64` (usr/lib/modules/VER/config) and `linux-modules-VER-arm64`
//! (xz-compressed modules). Only what a boot needs is kept: the Image, the config and an
//! initramfs part with the needed modules, decompressed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Apt};
use crate::cpio::Archive;
use crate::error::{setup_io, Error};
use crate::modules;
use crate::progress;

/// The environment variable that selects the guest ("host under test") kernel.
pub const KERNEL_VAR: &str = "RAS_HOST_KERNEL";
/// The Debian mirror; a local mirror or snapshot.debian.org can stand in.
pub const MIRROR_VAR: &str = "RAS_EMU_MIRROR";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian mirror: [`MIRROR_VAR`], else deb.debian.org.
pub(crate) fn mirror() -> String {
    std::env::var(MIRROR_VAR).unwrap_or_else(|_| DEFAULT_MIRROR.into())
}

/// The kernels the emulated host can boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// Debian stable (trixie), 6.12: the default.
    Stable,
    /// Debian bookworm, 6.1.
    Bookworm,
    /// Debian sid, the newest kernel (7.x when this was written).
    Sid,
    /// Debian sid's 16 KiB-page flavour (si_addr_lsb 14, madvise ranges 16 KiB-aligned).
    Sid16k,
}

impl KernelChoice {
    pub const ALL: [KernelChoice; 4] = [
        KernelChoice::Stable,
        KernelChoice::Bookworm,
        KernelChoice::Sid,
        KernelChoice::Sid16k,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Stable => "stable",
            KernelChoice::Bookworm => "bookworm",
            KernelChoice::Sid => "sid",
            KernelChoice::Sid16k => "sid-16k",
        }
    }

    /// Reads a name as given to RAS_HOST_KERNEL or `--kernel` ("trixie" means stable).
    pub fn parse(s: &str) -> Result<KernelChoice, Error> {
        match s.trim() {
            "" | "stable" | "trixie" => Ok(KernelChoice::Stable),
            "bookworm" => Ok(KernelChoice::Bookworm),
            "sid" | "unstable" => Ok(KernelChoice::Sid),
            "sid-16k" => Ok(KernelChoice::Sid16k),
            other => Err(Error::Config(format!(
                "unknown kernel {other:?}; choose one of stable, bookworm, sid, sid-16k"
            ))),
        }
    }

    /// The choice in RAS_HOST_KERNEL, stable when unset.
    pub fn from_env() -> Result<KernelChoice, Error> {
        KernelChoice::parse(&std::env::var(KERNEL_VAR).unwrap_or_default())
    }

    fn suite(self) -> &'static str {
        match self {
            KernelChoice::Stable => "trixie",
            KernelChoice::Bookworm => "bookworm",
            KernelChoice::Sid | KernelChoice::Sid16k => "sid",
        }
    }

    fn metapackage(self) -> &'static str {
        match self {
            KernelChoice::Sid16k => "linux-image-arm64-16k",
            _ => "linux-image-arm64",
        }
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub choice: KernelChoice,
    /// `uname -r` of the guest, e.g. "6.12.48+deb13-arm64".
    pub release: String,
    /// The arm64 Image (uncompressed, or gzip, which QEMU also loads).
    pub image: PathBuf,
    pub config: PathBuf,
    /// Its text symbols from /proc/kallsyms, written by its first boot whose init can reach
    /// the cache (`RunSpec::symbols`); to name the PCs of a hung emulated host.
    pub symbols: PathBuf,
    /// An initramfs part holding the modules under /emuhost/modules.
    pub modules_cpio: PathBuf,
    /// The guest paths of those modules, in load order.
    pub module_paths: Vec<String>,
    /// 4096, 16384 or 65536, from the config.
    pub page_size: u32,
    /// The Debian packages it came from.
    pub packages: Vec<String>,
}

/// The cached kernel for `choice`, fetched and checked first if `refresh` or if not there.
pub fn ensure(choice: KernelChoice, cache: &Path, refresh: bool) -> Result<Kernel, Error> {
    let dir = cache.join("kernels").join(choice.name());
    if !refresh {
        if let Some(k) = load(choice, &dir) {
            return Ok(k);
        }
    }
    fetch(choice, cache, &dir)?;
    load(choice, &dir).ok_or(Error::Setup(format!(
        "{} was set up but cannot be read back",
        dir.display()
    )))
}

/// The kernel for `choice` if it is already in `cache`: no lock, no network.
pub fn ensure_cached(choice: KernelChoice, cache: &Path) -> Option<Kernel> {
    load(choice, &cache.join("kernels").join(choice.name()))
}

/// Reads kernel.txt, written last by `fetch`, so a partial set-up reads as absent. A
/// different list of wanted modules (a newer emuhost) also reads as absent.
fn load(choice: KernelChoice, dir: &Path) -> Option<Kernel> {
    let text = fs::read_to_string(dir.join("kernel.txt")).ok()?;
    let mut k = Kernel {
        choice,
        release: String::new(),
        image: dir.join("Image"),
        config: dir.join("config"),
        symbols: dir.join("symbols"),
        modules_cpio: dir.join("modules.cpio"),
        module_paths: Vec::new(),
        page_size: 0,
        packages: Vec::new(),
    };
    let mut wanted = String::new();
    for line in text.lines() {
        let (key, value) = line.split_once(' ')?;
        match key {
            "release" => k.release = value.to_owned(),
            "page-size" => k.page_size = value.parse().ok()?,
            "module" => k.module_paths.push(value.to_owned()),
            "package" => k.packages.push(value.to_owned()),
            "wanted" => wanted = value.to_owned(),
            _ => {}
        }
    }
    let ok = wanted == wanted_modules()
        && !k.release.is_empty()
        && [&k.image, &k.config, &k.modules_cpio]
            .iter()
            .all(|p| p.is_file());
    ok.then_some(k)
}

fn wanted_modules() -> String {
    format!(
        "{} optional {}",
        modules::REQUIRED.join(","),
        modules::OPTIONAL.join(",")
    )
}

fn fetch(choice: KernelChoice, cache: &Path, dir: &Path) -> Result<(), Error> {
    let mirror = mirror();
    let apt = Apt::new(
        &cache.join("apt").join(choice.suite()),
        &mirror,
        &[choice.suite()],
    )?;
    progress!(
        "fetching the arm64 package lists of Debian {} from {mirror}",
        choice.suite()
    );
    apt.update()?;
    let packages = resolve(&apt, choice)?;
    progress!("downloading {}", packages.join(" "));
    let work = dir.with_extension("tmp");
    // A leftover from an interrupted set-up is discarded.
    let _ = fs::remove_dir_all(&work);
    let debs = apt.download(&packages, &work.join("debs"))?;
    let root = work.join("root");
    apt::extract(&debs, &root)?;
    progress!("checking and packing the kernel");
    let found = Extracted::find(&root)?;
    let config = fs::read_to_string(&found.config).map_err(setup_io(found.config.display()))?;
    check_config(&config)?;
    let image = fs::read(&found.image).map_err(setup_io(found.image.display()))?;
    check_image(&image)?;

    let builtin = fs::read_to_string(found.modules.join("modules.builtin")).unwrap_or_default();
    let mut read = |p: &Path| read_module(p).map_err(|e| e.to_string());
    let order = modules::load_order(
        &modules::index(&found.modules.join("kernel")),
        &builtin,
        modules::REQUIRED,
        modules::OPTIONAL,
        &mut read,
    )
    .map_err(Error::Setup)?;
    let mut archive = Archive::new();
    let mut module_paths = Vec::new();
    for (i, (name, data)) in order.iter().enumerate() {
        let guest = format!("/emuhost/modules/{i:02}-{name}.ko");
        archive.file(&guest, 0o644, data);
        module_paths.push(guest);
    }

    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(setup_io(dir.display()))?;
    fs::write(dir.join("Image"), &image).map_err(setup_io(dir.display()))?;
    fs::write(dir.join("config"), &config).map_err(setup_io(dir.display()))?;
    fs::write(dir.join("modules.cpio"), archive.finish()).map_err(setup_io(dir.display()))?;
    let mut txt = format!(
        "release {}\npage-size {}\nwanted {}\n",
        found.release,
        page_size(&config),
        wanted_modules()
    );
    for p in &packages {
        txt.push_str(&format!("package {p}\n"));
    }
    for m in &module_paths {
        txt.push_str(&format!("module {m}\n"));
    }
    fs::write(dir.join("kernel.txt"), txt).map_err(setup_io(dir.display()))?;
    let _ = fs::remove_dir_all(&work);
    progress!("kernel {} ready in {}", found.release, dir.display());
    Ok(())
}

/// The packages holding the flavour's unsigned Image, config and modules.
fn resolve(apt: &Apt, choice: KernelChoice) -> Result<Vec<String>, Error> {
    let meta = choice.metapackage();
    let image = apt
        .depends(meta)?
        .into_iter()
        .find(|d| d.starts_with("linux-image-"))
        .ok_or(Error::Setup(format!(
            "{meta} depends on no linux-image-* package"
        )))?;
    // One-package layout (bookworm, trixie).
    let unsigned = format!("{image}-unsigned");
    if apt.exists(&unsigned) {
        return Ok(vec![unsigned]);
    }
    // Split layout (sid): the image package depends on binary, base and modules.
    let mut packages = Vec::new();
    for dep in apt.depends(&image)? {
        if let Some(rest) = dep.strip_prefix("linux-binary-") {
            let unsigned = format!("linux-binary-unsigned-{rest}");
            packages.push(if apt.exists(&unsigned) { unsigned } else { dep });
        } else if dep.starts_with("linux-base-") || dep.starts_with("linux-modules-") {
            packages.push(dep);
        }
    }
    if packages.is_empty() {
        return Err(Error::Setup(format!(
            "{image}: neither {unsigned} nor split packages found"
        )));
    }
    Ok(packages)
}

/// Where the extracted packages keep the pieces (modules under lib/modules/RELEASE/kernel).
struct Extracted {
    release: String,
    image: PathBuf,
    config: PathBuf,
    modules: PathBuf,
}

impl Extracted {
    fn find(root: &Path) -> Result<Extracted, Error> {
        for base in ["lib/modules", "usr/lib/modules"] {
            let Ok(entries) = fs::read_dir(root.join(base)) else {
                continue;
            };
            for e in entries.flatten() {
                let modules = e.path();
                if !modules.join("kernel").is_dir() {
                    continue;
                }
                let release = e.file_name().to_string_lossy().into_owned();
                let pick = |candidates: [PathBuf; 2]| candidates.into_iter().find(|p| p.is_file());
                let image = pick([
                    modules.join("vmlinuz.unsigned"),
                    root.join(format!("boot/vmlinuz-{release}")),
                ])
                .or_else(|| pick([modules.join("vmlinuz"), modules.join("Image")]));
                let config = pick([
                    modules.join("config"),
                    root.join(format!("boot/config-{release}")),
                ]);
                return match (image, config) {
                    (Some(image), Some(config)) => Ok(Extracted {
                        release,
                        image,
                        config,
                        modules,
                    }),
                    _ => Err(Error::Setup(format!(
                        "the packages for {release} lack the Image or the config"
                    ))),
                };
            }
        }
        Err(Error::Setup(
            "the packages hold no lib/modules/RELEASE/kernel".into(),
        ))
    }
}

/// The options the emulated host exists for must be built in.
fn check_config(config: &str) -> Result<(), Error> {
    for opt in [
        "CONFIG_KVM=y",
        "CONFIG_MEMORY_FAILURE=y",
        "CONFIG_DEVTMPFS=y",
        "CONFIG_HUGETLBFS=y",
    ] {
        if !config.lines().any(|l| l.trim() == opt) {
            return Err(Error::Setup(format!("the kernel config lacks {opt}")));
        }
    }
    Ok(())
}

/// An arm64 Image carries "ARM\x64" at offset 56 (Documentation/arch/arm64/booting.rst,
/// the image header's magic field); Debian's may also be gzip (1f 8b), which QEMU unpacks.
fn check_image(image: &[u8]) -> Result<(), Error> {
    let arm64 = image.get(56..60) == Some(b"ARM\x64".as_slice());
    let gzip = image.starts_with(&[0x1f, 0x8b]);
    if arm64 || gzip {
        Ok(())
    } else {
        Err(Error::Setup(
            "the kernel image is neither an arm64 Image nor gzip".into(),
        ))
    }
}

fn page_size(config: &str) -> u32 {
    if config.lines().any(|l| l == "CONFIG_ARM64_16K_PAGES=y") {
        16384
    } else if config.lines().any(|l| l == "CONFIG_ARM64_64K_PAGES=y") {
        65536
    } else {
        4096
    }
}

/// A module file's contents, decompressed with the host's tools when compressed.
fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path).map_err(setup_io(path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| Error::Setup(format!("cannot run {tool} for {name}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Setup(format!("{tool} -dc {name} failed")));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        for c in KernelChoice::ALL {
            assert_eq!(KernelChoice::parse(c.name()).unwrap(), c);
        }
        assert_eq!(KernelChoice::parse("trixie").unwrap(), KernelChoice::Stable);
        assert!(matches!(KernelChoice::parse("6.1"), Err(Error::Config(_))));
    }

    #[test]
    fn config_and_image_checks() {
        let good = "CONFIG_KVM=y\nCONFIG_MEMORY_FAILURE=y\nCONFIG_DEVTMPFS=y\nCONFIG_HUGETLBFS=y\n";
        assert!(check_config(good).is_ok());
        assert!(check_config("CONFIG_KVM=m\nCONFIG_MEMORY_FAILURE=y\n").is_err());
        assert_eq!(
            page_size(&format!("{good}CONFIG_ARM64_16K_PAGES=y\n")),
            16384
        );
        assert_eq!(page_size(good), 4096);
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert!(check_image(&image).is_ok());
        assert!(check_image(&[0u8; 64]).is_err());
    }
}
