//! What this host offers the scenarios: [`probe`] reads it from /proc, /sys and /dev/kvm.
//! It works on any host (on x86 it says there is no arm64 KVM) and is what
//! `ras-harness caps --json` and the report's `"host"` print.

use serde::Serialize;

use crate::scenario::HostSupport;

/// CAP_SYS_ADMIN is bit 21 of the capability sets (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
/// /proc/sys/vm/memory_failure_early_kill exists only with CONFIG_MEMORY_FAILURE
/// (mm/memory-failure.c registers it).
const MEMORY_FAILURE_SYSCTL: &str = "/proc/sys/vm/memory_failure_early_kill";
const HARD_OFFLINE_PAGE: &str = "/sys/devices/system/memory/hard_offline_page";
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// The host, as the report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    /// `uname -m`: the harness's own architecture.
    pub arch: String,
    /// `uname -r`.
    pub kernel: String,
    /// The base page size in bytes.
    pub page_size: u64,
    /// What scenarios may require ([`crate::scenario::Requirements::unmet`]).
    #[serde(flatten)]
    pub support: HostSupport,
}

/// Probes the running host. Never fails: what cannot be read counts as absent.
pub fn probe() -> HostInfo {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let kvm = kvm_probe();
    HostInfo {
        arch: std::env::consts::ARCH.to_owned(),
        kernel: read("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        page_size: page_size(),
        support: HostSupport {
            kvm: kvm.is_some(),
            root: read("/proc/self/status").is_some_and(|s| has_cap_sys_admin(&s)),
            memory_failure: std::path::Path::new(MEMORY_FAILURE_SYSCTL).exists(),
            hard_offline_page: std::path::Path::new(HARD_OFFLINE_PAGE).exists(),
            thp: read(THP_ENABLED).is_some_and(|s| thp_enabled(&s)),
            hugetlb_2m_free: free_hugepages(2048),
            hugetlb_1g_free: free_hugepages(1 << 20),
            caps: kvm.as_ref().map(|k| k.caps.clone()).unwrap_or_default(),
            writable_id_regs: kvm.is_some_and(|k| k.writable_id_regs),
        },
    }
}

/// Whether `CapEff` in /proc/self/status text has CAP_SYS_ADMIN.
pub fn has_cap_sys_admin(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether transparent_hugepage/enabled text selects `always` or `madvise`
/// (the selected value is in brackets: `always [madvise] never`).
pub fn thp_enabled(text: &str) -> bool {
    text.contains("[always]") || text.contains("[madvise]")
}

fn free_hugepages(kib: u64) -> u32 {
    std::fs::read_to_string(format!("{HUGEPAGES}/hugepages-{kib}kB/free_hugepages"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The host's base page size in bytes ([`crate::fault::host_page_size`] on Linux; 4 KiB
/// elsewhere, where nothing runs a guest).
pub fn page_size() -> u64 {
    #[cfg(target_os = "linux")]
    {
        crate::fault::host_page_size() as u64
    }
    #[cfg(not(target_os = "linux"))]
    {
        4096
    }
}

struct KvmProbe {
    caps: Vec<u32>,
    writable_id_regs: bool,
}

/// The capabilities KVM reports (41, 158, 178, 245) and whether ID_AA64PFR0_EL1.RAS can be
/// lowered before the first KVM_RUN; `None` without arm64 KVM.
#[cfg(target_arch = "aarch64")]
fn kvm_probe() -> Option<KvmProbe> {
    use crate::kvm::{Cap, Vm};
    let vm = Vm::new().ok()?;
    let caps = Cap::ALL
        .iter()
        .filter(|&&c| vm.caps().host_has(c))
        .map(|&c| c as u32)
        .collect();
    let writable_id_regs = vm
        .create_vcpu(0)
        .is_ok_and(|vcpu| vcpu.hide_feat_ras().is_ok());
    Some(KvmProbe {
        caps,
        writable_id_regs,
    })
}

#[cfg(not(target_arch = "aarch64"))]
fn kvm_probe() -> Option<KvmProbe> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sys_admin_is_read_from_capeff() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(has_cap_sys_admin(root));
        let user = "CapEff:\t0000000000000000\n";
        assert!(!has_cap_sys_admin(user));
        // Only CAP_NET_ADMIN (12) and CAP_SYS_PTRACE (19): not enough.
        assert!(!has_cap_sys_admin("CapEff:\t0000000000081000\n"));
        assert!(!has_cap_sys_admin("no such line"));
    }

    #[test]
    fn thp_selection_is_the_bracketed_word() {
        assert!(thp_enabled("[always] madvise never\n"));
        assert!(thp_enabled("always [madvise] never\n"));
        assert!(!thp_enabled("always madvise [never]\n"));
    }

    #[test]
    fn probe_runs_anywhere_and_serialises_flat() {
        let info = probe();
        assert!(!info.arch.is_empty());
        assert!(info.page_size >= 4096);
        if info.arch != "aarch64" {
            assert!(!info.support.kvm && info.support.caps.is_empty());
        }
        let json = serde_json::to_value(&info).unwrap();
        for key in [
            "arch",
            "kernel",
            "page_size",
            "kvm",
            "root",
            "caps",
            "hugetlb_2m_free",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
