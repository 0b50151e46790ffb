//! What the payload learns before its MMU is on: the device tree in x0 (or what its EFI
//! entry learned from the firmware instead, [`EfiBoot`]) and the bootargs in it, turned
//! into this vCPU's [`Params`]. Memory is Device-nGnRnE until then; the target is built
//! with `+strict-align`, so the reads below are aligned.

use crate::efi::{EfiBoot, EFI_BOOT_MAGIC};
use ras_guest_abi::bootargs::{self, BootargsError, Problem};
use ras_guest_abi::fdt::{self, FdtError, Uart};
use ras_guest_abi::map::{target_window, RAM_SIZE, TARGET_MAX_SIZE};
use ras_guest_abi::{DtbObservation, Params, ABI_VERSION, PARAMS_MAGIC};

/// What boot found. It borrows nothing from the DTB, which the identity map may not cover.
pub struct Boot {
    /// This vCPU's parameters (defaults where boot failed).
    pub params: Params,
    /// The console, if stdout-path names a UART the payload can drive.
    pub uart: Option<Uart>,
    /// PSCI over SMC rather than HVC.
    pub psci_smc: bool,
    /// The DTB header, as recognised.
    pub dtb: DtbObservation,
    /// Where firmware tables may lie: RAM the identity map covers and the ACPI walk reads.
    pub tables: [u64; 2],
    /// Why the payload cannot run, if it cannot.
    pub error: Option<BootError>,
}

/// Why the payload cannot run.
pub enum BootError {
    /// x0 holds no device tree this payload can read.
    Dtb(FdtError),
    /// The bootargs are wrong: the word's key (cut to 48 bytes), and why.
    Bootargs([u8; 48], usize, Problem),
}

impl BootError {
    fn bootargs(e: BootargsError<'_>) -> Self {
        let mut key = [0u8; 48];
        let len = e.key.len().min(key.len());
        key[..len].copy_from_slice(&e.key[..len]);
        Self::Bootargs(key, len, e.problem)
    }
}

/// Reads the DTB (or [`EfiBoot`]) at `dtb` for vCPU `index` of an image loaded at
/// `image_base`.
pub fn read(dtb: u64, index: usize, image_base: u64) -> Boot {
    let mut boot = Boot {
        params: Params {
            magic: PARAMS_MAGIC,
            abi_version: ABI_VERSION,
            el: 1,
            vcpus: 1,
            dtb_gpa: dtb,
            ..Params::default()
        },
        uart: None,
        psci_smc: false,
        dtb: DtbObservation::default(),
        // The reference VMM's firmware area, in the RAM slot after the image.
        tables: [image_base, image_base + RAM_SIZE],
        error: None,
    };
    if let Some(efi) = efi_boot(dtb, image_base) {
        boot.uart = efi.uart;
        boot.psci_smc = efi.psci_smc;
        // All RAM the two mapped GiBs (the image's and the target window) hold.
        let mapped_end = target_window(image_base) + TARGET_MAX_SIZE;
        boot.tables = [efi.ram[0], efi.ram[1].min(mapped_end)];
        let line = &efi.bootargs[..efi.bootargs_len.min(efi.bootargs.len())];
        set_params(&mut boot, line, index, image_base);
        if boot.params.rsdp_gpa == 0 {
            boot.params.rsdp_gpa = efi.rsdp;
        }
        return boot;
    }
    let info = blob(dtb).and_then(|b| fdt::boot_info(b).map(|info| (b, info)));
    let (blob, info) = match info {
        Ok(found) => found,
        Err(e) => {
            boot.error = Some(BootError::Dtb(e));
            return boot;
        }
    };
    boot.dtb = DtbObservation {
        recognised: 1,
        total_size: blob.len() as u32,
    };
    boot.uart = info.uart;
    boot.psci_smc = info.psci_smc;
    set_params(&mut boot, info.bootargs, index, image_base);
    boot
}

/// The parameters `line` gives vCPU `index`, or why there are none.
fn set_params(boot: &mut Boot, line: &[u8], index: usize, image_base: u64) {
    match bootargs::parse(line, index) {
        Ok(b) => {
            let window = target_window(image_base);
            let p = &mut boot.params;
            p.access = b.access as u32;
            p.el = b.el;
            p.flags = b.flags;
            p.vcpus = b.vcpus;
            p.target_count = b.target_count;
            for (t, offset) in p.targets.iter_mut().zip(b.targets) {
                *t = window.wrapping_add(offset);
            }
            p.targets[b.target_count as usize..].fill(0);
            p.rsdp_gpa = b.rsdp;
            p.doorbell_gpa = b.doorbell;
        }
        Err(e) => {
            // Still announce the refusal where the VMM listens.
            boot.params.doorbell_gpa = bootargs::doorbell(line);
            boot.error = Some(BootError::bootargs(e));
        }
    }
}

/// The [`EfiBoot`] at `at`, if the EFI entry left one there (it is always at
/// `EFI_BOOT_OFFSET` from the image).
fn efi_boot(at: u64, image_base: u64) -> Option<&'static EfiBoot> {
    if at != image_base + ras_guest_abi::map::EFI_BOOT_OFFSET {
        return None;
    }
    // SAFETY: inside the image's span, which the EFI entry allocated and the plain boot
    // protocol leaves alone; read once for the magic, aligned.
    let magic = unsafe { core::ptr::read_volatile(at as *const u64) };
    // SAFETY: the EFI entry wrote a whole EfiBoot there before leaving boot services, and
    // nothing writes it afterwards.
    (magic == EFI_BOOT_MAGIC).then(|| unsafe { &*(at as *const EfiBoot) })
}

/// The whole DTB at `dtb`, sized by its header.
fn blob(dtb: u64) -> Result<&'static [u8], FdtError> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return Err(FdtError::BadMagic);
    }
    // SAFETY: the boot protocol puts a DTB at x0 in RAM the VMM mapped for the guest; the
    // header is read first, then exactly `totalsize` bytes. The VMM never changes it.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, fdt::HEADER_SIZE) };
    let size = fdt::total_size(header)?;
    // SAFETY: as above, `size` checked against fdt::MAX_SIZE.
    Ok(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}
