//! What the payload learns before its MMU is on: the device tree in x0 and the bootargs in
//! it, turned into this vCPU's [`Params`]. Memory is Device-nGnRnE until then; the target
//! is built with `+strict-align`, so the reads below are aligned.

use ras_guest_abi::bootargs::{self, BootargsError, Problem};
use ras_guest_abi::fdt::{self, FdtError, Uart};
use ras_guest_abi::map::target_window;
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

/// Reads the DTB at `dtb` for vCPU `index` of an image loaded at `image_base`.
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
        error: None,
    };
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
    match bootargs::parse(info.bootargs, index) {
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
            boot.params.doorbell_gpa = bootargs::doorbell(info.bootargs);
            boot.error = Some(BootError::bootargs(e));
        }
    }
    boot
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
