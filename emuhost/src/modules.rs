//! Which kernel modules to load, in which order.
//!
//! Debian's packages ship no modules.dep (depmod writes it at install time), so the
//! dependencies come from each module's own `.modinfo` section: modpost records them as
//! `MODULE_INFO(depends, "a,b")` in the generated .mod.c (scripts/mod/modpost.c), which
//! lands in the module as the NUL-terminated string "depends=a,b". modules.builtin
//! (shipped) lists the modules built into the image, which need no loading.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules a run needs: virtio-pci transport (a module on 6.1, built in on 6.12) and
/// the 9p file system over virtio for the shared directories.
pub const REQUIRED: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
/// Modules loaded when the kernel has them: hwpoison_inject backs
/// /sys/kernel/debug/hwpoison/corrupt-pfn for the hard-offline scenarios.
pub const OPTIONAL: &[&str] = &["hwpoison_inject"];

/// The module name a path stands for: file name without .ko and compression suffix,
/// with '-' read as '_' (as the kernel and modprobe do).
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Every module file under `dir`, by module name.
pub fn index(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                found.insert(name_of(&name), p);
            }
        }
    }
    found
}

/// The names in a module's "depends=" modinfo string.
pub fn depends_of(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let Some(at) = module
        .windows(KEY.len())
        .enumerate()
        .find(|(i, w)| *w == KEY && (*i == 0 || module[i - 1] == 0))
        .map(|(i, _)| i + KEY.len())
    else {
        return Vec::new();
    };
    let end = module[at..]
        .iter()
        .position(|&b| b == 0)
        .map_or(module.len(), |n| at + n);
    String::from_utf8_lossy(&module[at..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(name_of)
        .collect()
}

/// The modules to load for `required` and the available `optional` ones, every dependency
/// before its users, each once, as (name, contents). `read` gives a module's
/// (decompressed) contents.
pub fn load_order(
    index: &BTreeMap<String, PathBuf>,
    builtin: &str,
    required: &[&str],
    optional: &[&str],
    read: &mut dyn FnMut(&Path) -> Result<Vec<u8>, String>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let builtin: BTreeSet<String> = builtin.lines().map(name_of).collect();
    let mut walk = Walk {
        index,
        builtin: &builtin,
        read,
        seen: BTreeSet::new(),
        order: Vec::new(),
    };
    let wanted = required
        .iter()
        .map(|m| (m, true))
        .chain(optional.iter().map(|m| (m, false)));
    for (module, must) in wanted {
        let name = name_of(module);
        if builtin.contains(&name) {
            continue;
        }
        if !index.contains_key(&name) {
            if must {
                return Err(format!(
                    "the kernel has module {name} neither built in nor as a file"
                ));
            }
            continue;
        }
        walk.visit(&name, 0)?;
    }
    Ok(walk.order)
}

struct Walk<'a> {
    index: &'a BTreeMap<String, PathBuf>,
    builtin: &'a BTreeSet<String>,
    read: &'a mut dyn FnMut(&Path) -> Result<Vec<u8>, String>,
    seen: BTreeSet<String>,
    order: Vec<(String, Vec<u8>)>,
}

impl Walk<'_> {
    fn visit(&mut self, name: &str, depth: usize) -> Result<(), String> {
        // Module dependencies form no cycles (the kernel refuses them); the bound keeps a
        // corrupt module from recursing forever.
        if depth > 64 {
            return Err(format!("module dependencies too deep at {name}"));
        }
        if !self.seen.insert(name.to_owned()) || self.builtin.contains(name) {
            return Ok(());
        }
        let path = self.index.get(name).ok_or(format!(
            "a module depends on {name}, which the kernel lacks"
        ))?;
        let data = (self.read)(path)?;
        for dep in depends_of(&data) {
            self.visit(&dep, depth + 1)?;
        }
        self.order.push((name.to_owned(), data));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake modules: their contents are just a modinfo-like string table.
    fn fake(entries: &[(&str, &str)]) -> (BTreeMap<String, PathBuf>, BTreeMap<PathBuf, Vec<u8>>) {
        let mut index = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (path, deps) in entries {
            let p = PathBuf::from(path);
            index.insert(name_of(path), p.clone());
            files.insert(
                p,
                format!("\0license=GPL\0depends={deps}\0intree=Y\0").into_bytes(),
            );
        }
        (index, files)
    }

    // Shaped like Debian 6.1 arm64, where virtio_pci is a module.
    const MODULES: &[(&str, &str)] = &[
        ("kernel/fs/9p/9p.ko.xz", "fscache,netfs,9pnet"),
        ("kernel/net/9p/9pnet_virtio.ko.xz", "9pnet"),
        ("kernel/net/9p/9pnet.ko.xz", ""),
        ("kernel/fs/netfs/netfs.ko.xz", ""),
        ("kernel/fs/fscache/fscache.ko.xz", "netfs"),
        (
            "kernel/drivers/virtio/virtio_pci.ko",
            "virtio_pci_legacy_dev,virtio_pci_modern_dev",
        ),
        ("kernel/drivers/virtio/virtio_pci_legacy_dev.ko", ""),
        ("kernel/drivers/virtio/virtio_pci_modern_dev.ko", ""),
        ("kernel/mm/hwpoison-inject.ko.xz", ""),
    ];

    #[test]
    fn dependencies_come_first_and_once() {
        let (index, files) = fake(MODULES);
        let mut read = |p: &Path| Ok(files[p].clone());
        let order = load_order(&index, "", REQUIRED, OPTIONAL, &mut read).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "9pnet",
                "9pnet_virtio",
                "netfs",
                "fscache",
                "9p",
                "hwpoison_inject"
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped_and_missing_ones_reported() {
        let (index, files) = fake(MODULES);
        let mut read = |p: &Path| Ok(files[p].clone());
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/netfs/netfs.ko\n";
        let order = load_order(&index, builtin, REQUIRED, &[], &mut read).unwrap();
        assert!(
            order
                .iter()
                .all(|(n, _)| !n.starts_with("virtio_pci") && n != "netfs"),
            "{order:?}"
        );
        let (index, files) = fake(&[("kernel/fs/9p/9p.ko", "")]);
        let mut read = |p: &Path| Ok(files[p].clone());
        let err = load_order(&index, "", REQUIRED, &[], &mut read).unwrap_err();
        assert!(err.contains("virtio_pci"), "{err}");
    }

    #[test]
    fn depends_string_is_found_only_at_an_entry_start() {
        assert_eq!(
            depends_of(b"xx\0depends=a-b,c\0vermagic=6.1\0"),
            ["a_b", "c"]
        );
        assert!(depends_of(b"\0nodepends=a\0").is_empty());
        assert!(depends_of(b"\0depends=\0").is_empty());
    }
}
