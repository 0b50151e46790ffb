//! Giving back the huge pages that poisoning takes out of the hugetlb pools.
//!
//! memory_failure() on a hugetlb page dissolves it (mm/memory-failure.c
//! `try_memory_failure_hugetlb`, mm/hugetlb.c `dissolve_free_hugetlb_folio`): unpoisoning
//! returns its base pages to the buddy allocator, not the huge page to its pool, so every
//! poisoned huge page shrinks `nr_hugepages` by one (`ras-harness soak` saw 16 -> 7 in nine
//! rounds of the matrix). A run takes a [`Snapshot`] first and [`Snapshot::restore`]s it
//! after unpoisoning.

use std::path::{Path, PathBuf};

/// One directory per huge page size, each with `nr_hugepages`
/// (Documentation/admin-guide/mm/hugetlbpage.rst).
pub const HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// Every pool's `nr_hugepages` at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(Vec<(PathBuf, u64)>);

/// The pools under [`HUGEPAGES`] now (none on a kernel without hugetlb).
pub fn snapshot() -> Snapshot {
    snapshot_in(Path::new(HUGEPAGES))
}

fn snapshot_in(dir: &Path) -> Snapshot {
    let mut pools: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("nr_hugepages"))
        .filter_map(|p| Some((read(&p)?, p)))
        .map(|(n, p)| (p, n))
        .collect();
    pools.sort();
    Snapshot(pools)
}

fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Snapshot {
    /// Grows every pool that shrank since the snapshot back to its size then (needs root);
    /// returns one sentence per pool still short.
    pub fn restore(&self) -> Vec<String> {
        let mut short = Vec::new();
        for (path, want) in &self.0 {
            let now = read(path).unwrap_or(0);
            if now >= *want {
                continue;
            }
            let _ = std::fs::write(path, format!("{want}\n"));
            let after = read(path).unwrap_or(0);
            if after < *want {
                short.push(format!(
                    "{}: {after} huge pages, {want} before the run",
                    path.display()
                ));
            }
        }
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrunk_pool_is_grown_back_and_others_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("ras-pools-{}", std::process::id()));
        for (size, n) in [("hugepages-2048kB", "16\n"), ("hugepages-1048576kB", "2\n")] {
            std::fs::create_dir_all(dir.join(size)).unwrap();
            std::fs::write(dir.join(size).join("nr_hugepages"), n).unwrap();
        }
        let snap = snapshot_in(&dir);
        assert_eq!(snap.0.len(), 2);
        let two_m = dir.join("hugepages-2048kB/nr_hugepages");
        let one_g = dir.join("hugepages-1048576kB/nr_hugepages");
        std::fs::write(&two_m, "15\n").unwrap();
        std::fs::write(&one_g, "3\n").unwrap();
        assert!(snap.restore().is_empty());
        assert_eq!(read(&two_m), Some(16));
        assert_eq!(read(&one_g), Some(3), "a pool that grew is not shrunk");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(snapshot_in(&dir).0.is_empty());
    }
}
