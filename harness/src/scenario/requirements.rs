//! What a host must offer to run a scenario, so that the runner skips with a reason instead
//! of failing. A missing 1 GiB page pool is a skip decided here, never a parse error.

use serde::Serialize;

use super::spec::{Backing, Method, OnMemoryError, Scenario, SeaVia};
use crate::kvm::Cap;

/// What a scenario needs from the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirements {
    /// CAP_SYS_ADMIN: every poisoning method needs it (madvise EPERM, /proc/self/pagemap
    /// PFNs, hard_offline_page), docs/ras-facts.md §1.
    pub root: bool,
    /// CONFIG_MEMORY_FAILURE (madvise EINVAL without it).
    pub memory_failure: bool,
    /// /sys/devices/system/memory/hard_offline_page exists.
    pub hard_offline_page: bool,
    /// Transparent huge pages are not "never".
    pub thp: bool,
    /// Free hugetlb pages needed: (page size in MiB, count).
    pub hugetlb: Option<(u32, u32)>,
    /// KVM capabilities the VMM's configuration uses and the scenario does not mask.
    pub caps: Vec<Cap>,
    /// KVM_SET_ONE_REG may lower ID_AA64PFR0_EL1.RAS (to hide FEAT_RAS from the guest).
    pub writable_id_regs: bool,
}

/// What the runner found on the host; the input of [`Requirements::unmet`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostSupport {
    /// /dev/kvm could be opened and the host is arm64: every scenario needs it.
    pub kvm: bool,
    /// Running with CAP_SYS_ADMIN.
    pub root: bool,
    /// CONFIG_MEMORY_FAILURE is in the kernel.
    pub memory_failure: bool,
    /// /sys/devices/system/memory/hard_offline_page exists.
    pub hard_offline_page: bool,
    /// THP enabled is "always" or "madvise".
    pub thp: bool,
    /// Free 2 MiB hugetlb pages.
    pub hugetlb_2m_free: u32,
    /// Free 1 GiB hugetlb pages.
    pub hugetlb_1g_free: u32,
    /// KVM_CHECK_EXTENSION numbers that returned non-zero.
    pub caps: Vec<u32>,
    /// ID_AA64PFR0_EL1 is writable before the first KVM_RUN.
    pub writable_id_regs: bool,
}

/// What `scenario` needs from the host.
pub fn requirements(scenario: &Scenario) -> Requirements {
    let faults = &scenario.faults;
    let vmm = &scenario.vmm;
    let mut caps = match vmm.on_memory_error {
        // ext_dabt_pending travels in struct kvm_vcpu_events (cap 41) and needs cap 178.
        OnMemoryError::Sea if vmm.sea == SeaVia::KvmExtDabt => {
            vec![Cap::VcpuEvents, Cap::ArmInjectExtDabt]
        }
        OnMemoryError::Serror if vmm.serror_esr.is_some() => {
            vec![Cap::VcpuEvents, Cap::ArmInjectSerrorEsr]
        }
        OnMemoryError::Serror => vec![Cap::VcpuEvents],
        OnMemoryError::Sea | OnMemoryError::Stop => vec![],
    };
    // A masked capability is the point of the scenario: the VMM must cope without it, and a
    // host that lacks it runs the same test.
    caps.retain(|c| !vmm.mask_caps.contains(c));
    Requirements {
        root: !faults.is_empty(),
        memory_failure: !faults.is_empty(),
        hard_offline_page: faults.iter().any(|f| f.method == Method::HardOffline),
        thp: scenario.guest.backing == Backing::Thp,
        hugetlb: scenario
            .guest
            .backing
            .hugetlb_mib()
            .map(|size| (size, scenario.guest.memory_mib / size)),
        caps,
        writable_id_regs: !scenario.guest.ras,
    }
}

impl Requirements {
    /// Why `host` cannot run the scenario, one reason per missing thing; empty when it can.
    pub fn unmet(&self, host: &HostSupport) -> Vec<String> {
        let mut out = Vec::new();
        if !host.kvm {
            out.push(
                "no arm64 KVM this user can open (/dev/kvm missing or not permitted)".to_owned(),
            );
        }
        if self.root && !host.root {
            out.push("poisoning needs root (CAP_SYS_ADMIN)".to_owned());
        }
        if self.memory_failure && !host.memory_failure {
            out.push("the kernel lacks CONFIG_MEMORY_FAILURE".to_owned());
        }
        if self.hard_offline_page && !host.hard_offline_page {
            out.push("no /sys/devices/system/memory/hard_offline_page".to_owned());
        }
        if self.thp && !host.thp {
            out.push("transparent huge pages are disabled".to_owned());
        }
        if let Some((size, count)) = self.hugetlb {
            let free = if size == 2 {
                host.hugetlb_2m_free
            } else {
                host.hugetlb_1g_free
            };
            if free < count {
                let unit = if size == 2 { "2 MiB" } else { "1 GiB" };
                out.push(format!(
                    "needs {count} free {unit} hugetlb pages, the host has {free}"
                ));
            }
        }
        // Without KVM nothing can be said of its capabilities.
        if !host.kvm {
            return out;
        }
        for cap in &self.caps {
            if !host.caps.contains(&cap.number()) {
                out.push(format!("KVM lacks {} ({})", cap.name(), cap.number()));
            }
        }
        if self.writable_id_regs && !host.writable_id_regs {
            out.push("KVM cannot hide FEAT_RAS (ID_AA64PFR0_EL1 is not writable)".to_owned());
        }
        out
    }
}
