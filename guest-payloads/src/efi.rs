//! Booting as an EFI application, for firmware that starts the image through its PE/COFF
//! header (edk2 on QEMU virt given `-kernel`): the same image, entered at `efi_entry` with
//! the MMU on, by the UEFI calling convention (UEFI 2.10 §2.3.6: x0 the image handle, x1
//! the system table).
//!
//! What the device tree gives a plain boot comes from the firmware here: the bootargs from
//! the image's load options (the `-append` text, as UCS-2), the RSDP from the configuration
//! table, the console from the SPCR, the PSCI conduit from the FADT, RAM from the memory
//! map. Then, as Linux's EFI stub does, the image moves itself to a 2 MiB-aligned base (below
//! the first GiB boundary of RAM, so its target window is the GiB above), claims that
//! window's target pages from the firmware, leaves boot services, turns the MMU off and
//! enters the plain boot path at the moved image's first byte with x0 = an [`EfiBoot`] in
//! place of a device tree.

use core::ffi::c_void;
use core::mem::size_of;

use ras_guest_abi::acpi::{fadt_psci_smc, spcr_uart, SDT_HEADER_LEN};
use ras_guest_abi::bootargs;
use ras_guest_abi::fdt::Uart;
use ras_guest_abi::map::{target_window, EFI_BOOT_OFFSET, IMAGE_SPAN};
use uefi_raw::protocol::loaded_image::LoadedImageProtocol;
use uefi_raw::table::boot::{AllocateType, BootServices, MemoryDescriptor, MemoryType};
use uefi_raw::table::system::SystemTable;
use uefi_raw::{guid, Guid, Handle, Status};

/// EFI_ACPI_20_TABLE_GUID (UEFI 2.10 §4.6.1.1): the configuration table entry whose table
/// is the RSDP.
const ACPI_20_TABLE: Guid = guid!("8868e871-e4f1-11d3-bc22-0080c73c8881");
/// "RASEFIBT": what `boot::read` recognises at x0 instead of a device tree's magic.
pub const EFI_BOOT_MAGIC: u64 = u64::from_le_bytes(*b"RASEFIBT");
/// Most bootargs bytes kept.
const BOOTARGS_MAX: usize = 2048;
/// Bytes of memory map room (UEFI 2.10 §7.2.3: a map may grow between two calls).
const MEMORY_MAP_BYTES: usize = 64 << 10;
/// A UEFI page (UEFI 2.10 §7.2.1).
const EFI_PAGE: u64 = 4096;
/// The image base alignment an arm64 Image needs (Documentation/arch/arm64/booting.rst).
const IMAGE_ALIGN: u64 = 2 << 20;

/// What the firmware told the payload, at [`EFI_BOOT_OFFSET`] from the moved image's base.
#[repr(C)]
pub struct EfiBoot {
    /// [`EFI_BOOT_MAGIC`].
    pub magic: u64,
    /// The RSDP (0 when the configuration table has none).
    pub rsdp: u64,
    /// The console from the SPCR.
    pub uart: Option<Uart>,
    /// PSCI over SMC (the FADT).
    pub psci_smc: bool,
    /// RAM from its lowest to its highest byte, as the memory map says.
    pub ram: [u64; 2],
    /// Bytes of `bootargs` used.
    pub bootargs_len: usize,
    /// The load options, as ASCII.
    pub bootargs: [u8; BOOTARGS_MAX],
    /// Room for the memory map ExitBootServices is given.
    memory_map: [u64; MEMORY_MAP_BYTES / 8],
}

const _: () = assert!(EFI_BOOT_OFFSET + size_of::<EfiBoot>() as u64 <= IMAGE_SPAN);

extern "C" {
    /// Cleans the moved image's span to memory, turns the MMU off and enters the image at
    /// `base` with x0 = `boot` (entry.rs).
    fn efi_leave(boot: u64, base: u64) -> !;
    /// The image's end (link.ld), relative like every other address of it.
    static __image_end: u8;
}

/// Called by `efi_entry` with the relocations applied at `image` (where the firmware
/// loaded the image). Returns only on failure, with the status the firmware gets back.
#[no_mangle]
extern "C" fn efi_main(handle: Handle, st: *const SystemTable, image: u64) -> Status {
    // SAFETY: the firmware passes a valid system table, whose boot services stay valid
    // until ExitBootServices, which is the last call made through them here.
    let (st, bs) = unsafe { (&*st, &*(*st).boot_services) };
    match prepare(handle, st, bs, image) {
        Ok(boot) => {
            // SAFETY: boot services are gone; `boot` lies in the moved image's span.
            unsafe { efi_leave(boot as u64, boot as u64 - EFI_BOOT_OFFSET) }
        }
        Err(why) => {
            say(st, why);
            Status::LOAD_ERROR
        }
    }
}

fn prepare(
    handle: Handle,
    st: &SystemTable,
    bs: &BootServices,
    image: u64,
) -> Result<*const EfiBoot, &'static str> {
    let size = &raw const __image_end as u64 - image;
    let options = load_options(handle, bs)?;
    let rsdp = configuration_table(st, &ACPI_20_TABLE).unwrap_or(0);
    // The first RAM GiB: the moved image goes below its end, the targets above it.
    let mut first = [0u64; 2048];
    let map = memory_map_in(bs, &mut first).map_err(|_| "GetMemoryMap failed")?;
    let ram_start = map.iter().filter(is_ram).map(|d| d.phys_start).min();
    let window = target_window(ram_start.ok_or("the memory map holds no RAM")?);
    let base = allocate(
        bs,
        AllocateType::MAX_ADDRESS,
        window - 1,
        IMAGE_SPAN + IMAGE_ALIGN,
    )?
    .next_multiple_of(IMAGE_ALIGN);
    // SAFETY: [image, image + size) is the loaded image; [base, base + IMAGE_SPAN) was
    // just allocated for it, so the two do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(image as *const u8, base as *mut u8, size as usize) };
    // SAFETY: inside the allocation, which nothing else uses: zero from the image's end
    // (the mailboxes, which vCPUs read each other's state from) through the EfiBoot, and
    // all-zero is a valid EfiBoot.
    let boot = unsafe {
        let end = base + size;
        let boot = (base + EFI_BOOT_OFFSET) as *mut EfiBoot;
        core::ptr::write_bytes(end as *mut u8, 0, (boot as u64 - end) as usize);
        core::ptr::write_bytes(boot, 0, 1);
        &mut *boot
    };
    boot.magic = EFI_BOOT_MAGIC;
    boot.rsdp = rsdp;
    boot.bootargs_len = options.copy_to(&mut boot.bootargs);
    // The target pages: the firmware must not hold them when boot services end.
    let targets = bootargs::target_span(&boot.bootargs[..boot.bootargs_len]);
    if targets > 0 {
        allocate(bs, AllocateType::ADDRESS, window, targets)
            .map_err(|_| "the firmware holds memory in the target window")?;
    }
    if rsdp != 0 {
        boot.uart = table(rsdp, b"SPCR").and_then(spcr_uart);
        boot.psci_smc = table(rsdp, b"FACP").and_then(fadt_psci_smc) == Some(true);
    }
    exit_boot_services(handle, bs, boot)?;
    Ok(boot)
}

/// Whether a memory map entry is RAM (anything but I/O space and unusable memory).
fn is_ram(d: &&MemoryDescriptor) -> bool {
    !matches!(
        d.ty,
        MemoryType::MMIO | MemoryType::MMIO_PORT_SPACE | MemoryType::UNUSABLE
    )
}

/// Pages of `bytes` from the firmware, `how` with `address`; returns their base.
fn allocate(
    bs: &BootServices,
    how: AllocateType,
    address: u64,
    bytes: u64,
) -> Result<u64, &'static str> {
    let mut at = address;
    let pages = bytes.div_ceil(EFI_PAGE) as usize;
    // SAFETY: a boot service call with a valid out pointer.
    let status = unsafe { (bs.allocate_pages)(how, MemoryType::LOADER_DATA, pages, &mut at) };
    if status.is_success() {
        Ok(at)
    } else {
        Err("AllocatePages failed")
    }
}

/// The memory map, into `buf`, and its key.
struct MemoryMap<'a> {
    buf: &'a [u8],
    descriptor_size: usize,
    key: usize,
}

impl MemoryMap<'_> {
    fn iter(&self) -> impl Iterator<Item = &MemoryDescriptor> + Clone {
        let step = self.descriptor_size.max(size_of::<MemoryDescriptor>());
        self.buf
            .chunks_exact(step)
            // SAFETY: GetMemoryMap wrote whole descriptors `descriptor_size` apart, each
            // starting with a MemoryDescriptor; the buffer is 8-byte aligned (a [u64]) and
            // descriptor sizes are multiples of 8.
            .map(|c| unsafe { &*(c.as_ptr() as *const MemoryDescriptor) })
    }
}

fn memory_map_in<'a>(bs: &BootServices, buf: &'a mut [u64]) -> Result<MemoryMap<'a>, Status> {
    let (mut size, mut key, mut descriptor_size, mut version) = (size_of_val(buf), 0, 0, 0);
    let map = buf.as_mut_ptr().cast::<MemoryDescriptor>();
    // SAFETY: a boot service call with valid out pointers and `size` bytes at `map`.
    let status = unsafe {
        (bs.get_memory_map)(&mut size, map, &mut key, &mut descriptor_size, &mut version)
    };
    if !status.is_success() {
        return Err(status);
    }
    // SAFETY: the first `size` bytes of `buf`, which GetMemoryMap wrote.
    let buf = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), size) };
    Ok(MemoryMap {
        buf,
        descriptor_size,
        key,
    })
}

/// Records RAM's extent and leaves boot services (UEFI 2.10 §7.4.6: with the key of the
/// latest memory map; a map that changed meanwhile is fetched again, once).
fn exit_boot_services(
    handle: Handle,
    bs: &BootServices,
    boot: &mut EfiBoot,
) -> Result<(), &'static str> {
    for _ in 0..2 {
        let map = memory_map_in(bs, &mut boot.memory_map).map_err(|_| "GetMemoryMap failed")?;
        let ram = map.iter().filter(is_ram);
        let start = ram.clone().map(|d| d.phys_start).min().unwrap_or(0);
        let end = ram
            .map(|d| d.phys_start + d.page_count * EFI_PAGE)
            .max()
            .unwrap_or(0);
        let key = map.key;
        boot.ram = [start, end];
        // SAFETY: a boot service call; nothing is allocated between the map and this.
        if unsafe { (bs.exit_boot_services)(handle, key) }.is_success() {
            return Ok(());
        }
    }
    Err("ExitBootServices failed")
}

/// The image's load options: UCS-2 text (`-append`, edk2's QemuLoadImageLib).
struct LoadOptions {
    text: *const u16,
    units: usize,
}

impl LoadOptions {
    fn units(&self) -> impl Iterator<Item = u16> + '_ {
        // SAFETY: LoadOptionsSize bytes at LoadOptions, from the loaded image protocol.
        (0..self.units).map(|i| unsafe { self.text.add(i).read_unaligned() })
    }

    /// As ASCII: up to the first NUL, anything outside ASCII as '?'.
    fn ascii(&self) -> impl Iterator<Item = u8> + '_ {
        self.units()
            .take_while(|&u| u != 0)
            .map(|u| u8::try_from(u).ok().filter(u8::is_ascii).unwrap_or(b'?'))
    }

    fn copy_to(&self, out: &mut [u8]) -> usize {
        out.iter_mut()
            .zip(self.ascii())
            .map(|(o, b)| *o = b)
            .count()
    }
}

fn load_options(handle: Handle, bs: &BootServices) -> Result<LoadOptions, &'static str> {
    let mut interface: *mut c_void = core::ptr::null_mut();
    // SAFETY: a boot service call with a valid GUID and out pointer.
    let status =
        unsafe { (bs.handle_protocol)(handle, &LoadedImageProtocol::GUID, &mut interface) };
    if !status.is_success() || interface.is_null() {
        return Err("no loaded image protocol on the image handle");
    }
    // SAFETY: the firmware's protocol instance for this image.
    let li = unsafe { &*interface.cast::<LoadedImageProtocol>() };
    Ok(LoadOptions {
        text: li.load_options.cast(),
        units: li.load_options_size as usize / 2,
    })
}

/// The vendor table the configuration table lists under `guid`.
fn configuration_table(st: &SystemTable, guid: &Guid) -> Option<u64> {
    (0..st.number_of_configuration_table_entries).find_map(|i| {
        // SAFETY: the system table's array of that many entries.
        let entry = unsafe { &*st.configuration_table.add(i) };
        (entry.vendor_guid == *guid).then_some(entry.vendor_table as u64)
    })
}

/// The ACPI table with signature `sig` the XSDT lists (RSDP revision 2 and later, ACPI 6.5
/// §5.2.5.3: the XSDT address at offset 24).
fn table(rsdp: u64, sig: &[u8; 4]) -> Option<&'static [u8]> {
    // SAFETY: firmware-built tables in memory the firmware keeps (ACPI reclaim), mapped by
    // its identity map; each is read within the length its header gives.
    unsafe {
        let header = |at: u64| core::slice::from_raw_parts(at as *const u8, SDT_HEADER_LEN);
        let whole = |at: u64| {
            let len = u32::from_le_bytes(header(at)[4..8].try_into().ok()?) as usize;
            (len >= SDT_HEADER_LEN).then(|| core::slice::from_raw_parts(at as *const u8, len))
        };
        let r = core::slice::from_raw_parts(rsdp as *const u8, 36);
        if r[..8] != *b"RSD PTR " || r[15] < 2 {
            return None;
        }
        let xsdt = whole(u64::from_le_bytes(r[24..32].try_into().ok()?))?;
        xsdt[SDT_HEADER_LEN..]
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().unwrap_or_default()))
            .filter(|&at| at != 0 && header(at)[..4] == *sig)
            .find_map(whole)
    }
}

/// Prints `text` on the firmware's console (before ExitBootServices only).
fn say(st: &SystemTable, text: &str) {
    let mut line = [0u16; 128];
    let prefix = "ras: efi: ";
    let chars = prefix.bytes().chain(text.bytes()).chain(*b"\r\n");
    for (slot, b) in line[..127].iter_mut().zip(chars) {
        *slot = u16::from(b);
    }
    if st.stdout.is_null() {
        return;
    }
    // SAFETY: the firmware's console protocol and a NUL-terminated UCS-2 string.
    let _ = unsafe { ((*st.stdout).output_string)(st.stdout, line.as_ptr()) };
}
