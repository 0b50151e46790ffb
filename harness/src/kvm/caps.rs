//! KVM capabilities the harness depends on, probed with KVM_CHECK_EXTENSION, and a mask
//! so the VMM can behave as if a capability were absent (to test its fallbacks).

/// Capabilities by their include/uapi/linux/kvm.h numbers (kvm-ioctls 0.25 has no `Cap`
/// variants for 158, 178 and 245, hence the raw numbers). JSON (a scenario's
/// `vmm.mask_caps`): the number.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
#[repr(u32)]
pub enum Cap {
    /// KVM_CAP_VCPU_EVENTS: KVM_GET/SET_VCPU_EVENTS.
    VcpuEvents = 41,
    /// KVM_CAP_ARM_INJECT_SERROR_ESR (Linux 4.19): `serror_has_esr`.
    ArmInjectSerrorEsr = 158,
    /// KVM_CAP_ARM_INJECT_EXT_DABT (Linux 5.5): `ext_dabt_pending`.
    ArmInjectExtDabt = 178,
    /// KVM_CAP_ARM_SEA_TO_USER (Linux 6.19): KVM_EXIT_ARM_SEA.
    ArmSeaToUser = 245,
}

impl Cap {
    /// Every capability probed, in number order.
    pub const ALL: [Cap; 4] = [
        Cap::VcpuEvents,
        Cap::ArmInjectSerrorEsr,
        Cap::ArmInjectExtDabt,
        Cap::ArmSeaToUser,
    ];

    /// The capability number.
    pub fn number(self) -> u32 {
        self as u32
    }

    /// The uapi name.
    pub fn name(self) -> &'static str {
        match self {
            Cap::VcpuEvents => "KVM_CAP_VCPU_EVENTS",
            Cap::ArmInjectSerrorEsr => "KVM_CAP_ARM_INJECT_SERROR_ESR",
            Cap::ArmInjectExtDabt => "KVM_CAP_ARM_INJECT_EXT_DABT",
            Cap::ArmSeaToUser => "KVM_CAP_ARM_SEA_TO_USER",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Cap::VcpuEvents => 1,
            Cap::ArmInjectSerrorEsr => 2,
            Cap::ArmInjectExtDabt => 4,
            Cap::ArmSeaToUser => 8,
        }
    }
}

impl TryFrom<u32> for Cap {
    type Error = String;

    fn try_from(v: u32) -> Result<Self, String> {
        Cap::ALL
            .into_iter()
            .find(|c| c.number() == v)
            .ok_or_else(|| format!("unknown capability {v}, expected one of 41, 158, 178, 245"))
    }
}

impl From<Cap> for u32 {
    fn from(cap: Cap) -> u32 {
        cap.number()
    }
}

/// What the host offers and what the VMM pretends is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet {
    present: u8,
    masked: u8,
}

impl CapSet {
    /// Probes `kvm` (KVM_CHECK_EXTENSION on /dev/kvm; > 0 means present).
    #[cfg(target_arch = "aarch64")]
    pub fn probe(kvm: &kvm_ioctls::Kvm) -> Self {
        let present = Cap::ALL
            .iter()
            .filter(|&&c| kvm.check_extension_raw(c as u32 as libc::c_ulong) > 0)
            .fold(0, |acc, c| acc | c.bit());
        Self { present, masked: 0 }
    }

    /// A set with exactly `caps` present (for tests and for replaying a host's caps).
    pub fn from_present(caps: &[Cap]) -> Self {
        Self {
            present: caps.iter().fold(0, |acc, c| acc | c.bit()),
            masked: 0,
        }
    }

    /// The same set with `caps` hidden from [`CapSet::has`].
    pub fn masked(self, caps: &[Cap]) -> Self {
        Self {
            masked: self.masked | caps.iter().fold(0, |acc, c| acc | c.bit()),
            ..self
        }
    }

    /// Whether the host has `cap` (ignoring the mask).
    pub fn host_has(self, cap: Cap) -> bool {
        self.present & cap.bit() != 0
    }

    /// Whether the VMM may use `cap`: present and not masked.
    pub fn has(self, cap: Cap) -> bool {
        self.host_has(cap) && self.masked & cap.bit() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_cap_is_absent_for_the_vmm_but_present_on_the_host() {
        let caps = CapSet::from_present(&[Cap::VcpuEvents, Cap::ArmInjectExtDabt])
            .masked(&[Cap::ArmInjectExtDabt]);
        assert!(caps.has(Cap::VcpuEvents));
        assert!(!caps.has(Cap::ArmInjectExtDabt));
        assert!(caps.host_has(Cap::ArmInjectExtDabt));
        assert!(!caps.has(Cap::ArmSeaToUser));
    }

    #[test]
    fn numbers_match_the_uapi() {
        let numbers: Vec<u32> = Cap::ALL.iter().map(|&c| c as u32).collect();
        assert_eq!(numbers, [41, 158, 178, 245]);
    }
}
