//! Booting the guest payload, the one way the VMM, the tests and the benches do it: guest
//! RAM at [`map::RAM_BASE`] holding the image, the device tree with the bootargs at
//! [`map::DTB_BASE`], each vCPU entered at the image's entry with x0 = the device tree, the
//! GICv3 once every vCPU exists (the contract in the `ras_guest_abi` crate docs); and
//! reading a vCPU's [`Report`] back.

use ras_guest_abi::map::{self, mailbox_offset};
use ras_guest_abi::{Params, Report};

use super::{Backing, CoreReg, Error, Mapping, Result, Vcpu, Vm};
use crate::payload;
use kvm_ioctls::DeviceFd;

/// Adds the RAM slot (anonymous, [`map::RAM_SIZE`]) and copies the payload image into it.
pub fn add_payload_ram(vm: &mut Vm) -> Result<()> {
    let ram = Mapping::new(Backing::Anonymous, map::RAM_SIZE as usize)?;
    vm.add_memory(map::RAM_BASE, ram)?;
    vm.write_guest(map::RAM_BASE, payload::IMAGE)
}

/// Writes the device tree for vCPUs running `params` (vCPU `i` runs `params[i]`) with
/// `target_size` bytes of target slot ([`payload::device_tree`]).
pub fn write_device_tree(vm: &Vm, params: &[Params], target_size: u64) -> Result<()> {
    let dtb = payload::device_tree(params, target_size)
        .map_err(|e| Error::Invalid(format!("device tree: {e}")))?;
    vm.write_guest(map::DTB_BASE, &dtb)
}

/// Creates vCPU `index`, PC at the payload's entry and x0 = the device tree.
pub fn add_payload_vcpu(vm: &Vm, index: usize) -> Result<Vcpu> {
    mailbox(index)?;
    let vcpu = vm.create_vcpu(index as u64)?;
    vcpu.set_core(CoreReg::Pc, map::RAM_BASE + payload::ENTRY)?;
    vcpu.set_core(CoreReg::X(0), map::DTB_BASE)?;
    Ok(vcpu)
}

/// The GICv3 at the payload's map (QEMU virt's addresses); call once every vCPU exists.
pub fn add_gic(vm: &Vm) -> Result<DeviceFd> {
    vm.create_gic_v3(map::GIC_DIST_BASE, map::GIC_REDIST_BASE)
}

/// vCPU `index`'s report, as the guest last wrote it.
pub fn read_report(vm: &Vm, index: usize) -> Result<Report> {
    let mut bytes = vec![0u8; std::mem::size_of::<Report>()];
    vm.read_guest(mailbox(index)? + mailbox_offset::REPORT, &mut bytes)?;
    Report::from_bytes(&bytes).ok_or_else(|| Error::Invalid("short report".into()))
}

fn mailbox(index: usize) -> Result<u64> {
    map::mailbox_base(index).ok_or_else(|| Error::Invalid(format!("no mailbox for vCPU {index}")))
}
