//! Booting the guest payload, the one way the VMM, the tests and the benches do it: guest
//! RAM at [`map::RAM_BASE`] holding the image, each vCPU entered at the image's entry with
//! x0 = its mailbox and its [`Params`] in the mailbox, the GICv3 once every vCPU exists
//! (the contract in the `ras_guest_abi` crate docs); and reading a vCPU's [`Report`] back.

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

/// Creates vCPU `index` with `params` in its mailbox, PC at the payload's entry and x0 =
/// the mailbox.
pub fn add_payload_vcpu(vm: &Vm, index: usize, params: &Params) -> Result<Vcpu> {
    let mailbox = mailbox(index)?;
    vm.write_guest(mailbox + mailbox_offset::PARAMS, params.as_bytes())?;
    let vcpu = vm.create_vcpu(index as u64)?;
    vcpu.set_core(CoreReg::Pc, payload::ENTRY)?;
    vcpu.set_core(CoreReg::X(0), mailbox)?;
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
