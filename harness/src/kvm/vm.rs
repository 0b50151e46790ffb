//! The VM: /dev/kvm, the VM fd, its memslots and the GICv3.

use super::{CapSet, Error, GuestMemory, Mapping, Result, Vcpu};
use crate::fault::translate::Memslot;
use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
    kvm_userspace_memory_region, KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR,
    KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, Kvm, VmFd};
use ras_guest_abi::map;

/// The guest physical address size the VM is created with (KVM_CREATE_VM's type,
/// KVM_VM_TYPE_ARM_IPA_SIZE, Documentation/virt/kvm/api.rst): KVM's own default of 40 bits
/// (KVM_PHYS_SHIFT, arch/arm64/include/asm/kvm_mmu.h), which the guest map (it ends at
/// 3 GiB) and what a guest may touch beyond it (tests/hwpoison/guest_control.rs) fit in.
/// Not the host's limit, which kvm-ioctls' `create_vm` asks for on arm64 (52 bits under
/// QEMU `-cpu max`, FEAT_LPA2): Linux 7.x destroys a VM by walking its whole IPA space one
/// level-1/2 block at a time (`stage2_destroy_range` in arch/arm64/kvm/mmu.c; 1 GiB steps
/// with 4 KiB pages, 32 MiB with 16 KiB), so 52 bits cost 2^22 steps per VM with 4 KiB
/// pages (seconds under emulation) and 2^27 with 16 KiB (minutes: the 16K host hung).
/// 40 bits cost 2^10 and 2^15 steps (docs/ras-facts.md §10).
pub const IPA_BITS: u32 = 40;
const _: () = assert!(map::TARGET_BASE + map::TARGET_MAX_SIZE <= 1 << IPA_BITS);
const _: () = assert!(map::RAM_BASE + map::RAM_SIZE <= 1 << IPA_BITS);
const _: () = assert!(map::DOORBELL < 1 << IPA_BITS);

/// One memslot: guest physical base and the mapping behind it.
#[derive(Debug)]
struct Slot {
    gpa: u64,
    mapping: Mapping,
}

/// A KVM VM. Field order matters: the VM fd closes before the mappings unmap.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
    kvm: Kvm,
    caps: CapSet,
    slots: Vec<Slot>,
}

impl Vm {
    /// Opens /dev/kvm, creates a VM (KVM_CREATE_VM with an [`IPA_BITS`] address space)
    /// and probes the caps.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| Error::sys("open /dev/kvm", e))?;
        let fd = kvm
            .create_vm_with_ipa_size(IPA_BITS)
            .map_err(|e| Error::sys("KVM_CREATE_VM", e))?;
        let caps = CapSet::probe(&kvm);
        Ok(Self {
            fd,
            kvm,
            caps,
            slots: Vec::new(),
        })
    }

    /// The capabilities the VMM may use (host caps minus the mask).
    pub fn caps(&self) -> CapSet {
        self.caps
    }

    /// Replaces the capability set, e.g. `vm.caps().masked(&[..])`.
    pub fn set_caps(&mut self, caps: CapSet) {
        self.caps = caps;
    }

    /// The /dev/kvm handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM fd, for ioctls this layer does not wrap.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Makes `mapping` guest memory at `gpa` (KVM_SET_USER_MEMORY_REGION, next free slot).
    /// The VM owns the mapping from now on. Returns the slot number.
    pub fn add_memory(&mut self, gpa: u64, mapping: Mapping) -> Result<u32> {
        let slot = self.slots.len() as u32;
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: mapping.len() as u64,
            userspace_addr: mapping.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of exactly memory_size bytes, owned by this
        // Vm, and it is unmapped only after the VM fd is closed (field order).
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(|e| Error::sys("KVM_SET_USER_MEMORY_REGION", e))?;
        self.slots.push(Slot { gpa, mapping });
        Ok(slot)
    }

    /// The memslots, as the SIGBUS translation reads them (guest and host addresses).
    pub fn memslots(&self) -> Vec<Memslot> {
        self.slots
            .iter()
            .map(|s| Memslot {
                gpa: s.gpa,
                hva: s.mapping.as_ptr() as u64,
                size: s.mapping.len() as u64,
            })
            .collect()
    }

    /// The mapping and offset that back `gpa`, if any slot does.
    pub fn memory_at(&self, gpa: u64) -> Option<(&Mapping, usize)> {
        self.slots.iter().find_map(|s| {
            let offset = gpa.checked_sub(s.gpa)?;
            (offset < s.mapping.len() as u64).then_some((&s.mapping, offset as usize))
        })
    }

    /// Copies `bytes` into guest memory at `gpa` (within one slot).
    pub fn write_guest(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        let (m, off) = self.slot_for(gpa)?;
        m.write(off, bytes)
    }

    /// Copies guest memory at `gpa` (within one slot) into `buf`.
    pub fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let (m, off) = self.slot_for(gpa)?;
        m.read(off, buf)
    }

    fn slot_for(&self, gpa: u64) -> Result<(&Mapping, usize)> {
        self.memory_at(gpa)
            .ok_or_else(|| Error::Invalid(format!("no memslot at {gpa:#x}")))
    }

    /// Creates vCPU `id` (KVM_CREATE_VCPU) and initialises it (see [`Vcpu::init`]).
    pub fn create_vcpu(&self, id: u64) -> Result<Vcpu> {
        let fd = self
            .fd
            .create_vcpu(id)
            .map_err(|e| Error::sys("KVM_CREATE_VCPU", e))?;
        Vcpu::init(&self.fd, fd, id)
    }

    /// Creates a GICv3 (KVM_CREATE_DEVICE, KVM_DEV_TYPE_ARM_VGIC_V3) with its distributor
    /// and redistributors at the given addresses, and initialises it. Call after creating
    /// every vCPU (Documentation/virt/kvm/devices/arm-vgic-v3.rst).
    pub fn create_gic_v3(&self, dist: u64, redist: u64) -> Result<DeviceFd> {
        let mut device = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
            fd: 0,
            flags: 0,
        };
        let gic = self
            .fd
            .create_device(&mut device)
            .map_err(|e| Error::sys("KVM_CREATE_DEVICE(VGIC_V3)", e))?;
        for (kind, addr) in [
            (KVM_VGIC_V3_ADDR_TYPE_DIST, dist),
            (KVM_VGIC_V3_ADDR_TYPE_REDIST, redist),
        ] {
            let attr = kvm_device_attr {
                group: KVM_DEV_ARM_VGIC_GRP_ADDR,
                attr: u64::from(kind),
                addr: &addr as *const u64 as u64,
                flags: 0,
            };
            gic.set_device_attr(&attr)
                .map_err(|e| Error::sys("KVM_SET_DEVICE_ATTR(VGIC_GRP_ADDR)", e))?;
        }
        let init = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_CTRL,
            attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
            addr: 0,
            flags: 0,
        };
        gic.set_device_attr(&init)
            .map_err(|e| Error::sys("KVM_SET_DEVICE_ATTR(VGIC_CTRL_INIT)", e))?;
        Ok(gic)
    }
}

impl GuestMemory for Vm {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> std::result::Result<(), String> {
        self.read_guest(gpa, buf).map_err(|e| e.to_string())
    }
    fn write(&self, gpa: u64, bytes: &[u8]) -> std::result::Result<(), String> {
        self.write_guest(gpa, bytes).map_err(|e| e.to_string())
    }
}
