//! The Linux guest ras-harness uses as its oracle: Debian's arm64 kernel (the emulated
//! host's own, crate::kernel) with an initrd whose `/init` is guests/linux-init, built
//! static for aarch64-unknown-linux-musl. A VMM inside the emulated host boots it; the
//! kernel's own console lines are the outcome.
//!
//! Both files also go into an initramfs part for the emulated host, under
//! `/emuhost/linux-guest/`, so that a VMM there reads the 40 MB kernel from RAM rather than
//! over the 9p share (about 1 MB/s, crate::vmm_qemu).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::Archive;
use crate::error::{setup_io, Error};
use crate::{kernel, progress, KernelChoice, TARGET};

/// The init's crate, relative to the workspace root.
const INIT_CRATE: &str = "guests/linux-init";
/// Under the cache: the init's target directory and the initrd.
const DIR: &str = "linux-guest";
/// Where the initramfs part puts the kernel and the initrd in the emulated host.
const STAGED: &str = "/emuhost/linux-guest";

/// A kernel and an initrd to boot as the Linux guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxGuest {
    /// The arm64 Image (an EFI application too: Debian builds the EFI stub in).
    pub kernel: PathBuf,
    /// The newc initrd: /init, /dev/console.
    pub initrd: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
    /// The part that stages both into the emulated host's RAM ([`staged`](Self::staged)).
    pub initramfs: PathBuf,
}

impl LinuxGuest {
    /// The same files as the emulated host sees them with [`initramfs`](Self::initramfs)
    /// among its initramfs parts.
    pub fn staged(&self) -> LinuxGuest {
        LinuxGuest {
            kernel: Path::new(STAGED).join("Image"),
            initrd: Path::new(STAGED).join("initrd.cpio"),
            ..self.clone()
        }
    }
}

/// Fetches the kernel (as for the emulated host: Debian trixie's), builds the init and
/// packs the initrd and the staging part under `cache_dir`.
pub fn ensure(cache_dir: &Path) -> Result<LinuxGuest, Error> {
    let k = kernel::ensure(KernelChoice::Stable, cache_dir, false)?;
    let dir = cache_dir.join(DIR);
    let init = dir.join(TARGET).join("release").join("ras-linux-init");
    progress!("building the Linux guest's init for {TARGET}");
    crate::cross::build_workspace(INIT_CRATE, &dir, &init)?;
    let mut initrd = Archive::new();
    initrd.dir("dev");
    initrd.dir("proc");
    // The kernel opens /dev/console for init before devtmpfs is mounted
    // (init/main.c, console_on_rootfs): character device 5:1 (devices.txt).
    initrd.char_dev("dev/console", 5, 1);
    initrd.file(
        "init",
        0o755,
        &fs::read(&init).map_err(setup_io(init.display()))?,
    );
    let initrd = initrd.finish();
    let mut part = Archive::new();
    part.file(&format!("{STAGED}/initrd.cpio"), 0o644, &initrd);
    part.file(
        &format!("{STAGED}/Image"),
        0o644,
        &fs::read(&k.image).map_err(setup_io(k.image.display()))?,
    );
    let guest = installed_in(&dir, &k);
    fs::write(&guest.initrd, initrd).map_err(setup_io(guest.initrd.display()))?;
    fs::write(&guest.initramfs, part.finish()).map_err(setup_io(guest.initramfs.display()))?;
    Ok(guest)
}

/// What [`ensure`] left in `cache_dir`, if it did: no network, no build.
pub fn installed(cache_dir: &Path) -> Option<LinuxGuest> {
    let k = kernel::ensure_cached(KernelChoice::Stable, cache_dir)?;
    let guest = installed_in(&cache_dir.join(DIR), &k);
    (guest.initrd.is_file() && guest.initramfs.is_file()).then_some(guest)
}

fn installed_in(dir: &Path, k: &kernel::Kernel) -> LinuxGuest {
    LinuxGuest {
        kernel: k.image.clone(),
        initrd: dir.join("initrd.cpio"),
        release: k.release.clone(),
        initramfs: dir.join("initramfs.cpio"),
    }
}
