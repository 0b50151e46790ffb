//! The only hand-written assembly: the Image and PE/COFF headers, the entries (plain and
//! EFI; self-relocation, the vCPU's mailbox), the vector table, the step guard, EL0 code.

use core::arch::global_asm;
use ras_guest_abi::arch::{VECTOR_ENTRY_SIZE, VECTOR_TABLE_SIZE};
use ras_guest_abi::map::{IMAGE_SPAN, MAILBOXES_OFFSET, MAILBOX_SIZE, MAX_VCPUS};

global_asm!(
    r#"
    // The arm64 Image header (Documentation/arch/arm64/booting.rst, "Call the kernel
    // image"): 64 bytes, code0 first. code0 doubles as the "MZ" of a PE/COFF image, which
    // UEFI firmware starts at efi_entry (efi.rs).
    .section .text.head, "ax"
    .global _start
_start:
    .inst   0xfa405a4d              // code0: "MZ", and ccmp x18, #0, #0xd, pl: no effect
    b       primary                 // code1: branch over the headers
    .quad   0                       // text_offset: at the 2 MiB-aligned base itself
    .quad   __image_size            // image_size: the bytes to reserve
    .quad   {image_flags}           // flags: little-endian, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0                 // res2-res4
    .ascii  "ARM\x64"              // magic
    .long   pe_header - _start      // res5: where the PE header is (PE/COFF e_lfanew)

    // The PE32+ header (Microsoft PE Format; UEFI 2.10 §2.1.1 for the subsystem): two
    // sections, so a firmware that protects images maps code read-only and the rest
    // writable: .text (the EL1 and EL0 code) and .data (everything after it, to the end of
    // IMAGE_SPAN: the loader zero-fills the mailboxes). The first page is the headers.
    .balign 8
pe_header:
    .ascii  "PE\0\0"
    .short  0xaa64                  // Machine: IMAGE_FILE_MACHINE_ARM64
    .short  2                       // NumberOfSections
    .long   0, 0, 0                 // TimeDateStamp, PointerToSymbolTable, NumberOfSymbols
    .short  sections - optional_header // SizeOfOptionalHeader
    .short  0x0206                  // EXECUTABLE_IMAGE | LINE_NUMS_STRIPPED | DEBUG_STRIPPED
optional_header:
    .short  0x20b                   // PE32+
    .byte   0, 0                    // linker version
    .long   __pe_text_size          // SizeOfCode
    .long   __pe_data_size          // SizeOfInitializedData
    .long   0                       // SizeOfUninitializedData
    .long   __efi_entry_offset      // AddressOfEntryPoint
    .long   {pe_headers}            // BaseOfCode
    .quad   0                       // ImageBase: anywhere (the payload relocates itself)
    .long   {pe_headers}            // SectionAlignment
    .long   {pe_headers}            // FileAlignment
    .short  0, 0, 0, 0, 0, 0        // OS, image and subsystem versions
    .long   0                       // Win32VersionValue
    .long   {image_span}            // SizeOfImage
    .long   {pe_headers}            // SizeOfHeaders
    .long   0                       // CheckSum
    .short  10                      // Subsystem: EFI application
    .short  0                       // DllCharacteristics
    .quad   0, 0, 0, 0              // stack and heap reserve and commit
    .long   0                       // LoaderFlags
    .long   6                       // NumberOfRvaAndSizes: none used, no base relocations
    .quad   0, 0, 0, 0, 0, 0
sections:
    .ascii  ".text\0\0\0"
    .long   __pe_text_size          // VirtualSize
    .long   {pe_headers}            // VirtualAddress
    .long   __pe_text_size          // SizeOfRawData
    .long   {pe_headers}            // PointerToRawData
    .long   0, 0                    // relocations, line numbers
    .short  0, 0
    .long   0x60000020              // CNT_CODE | MEM_EXECUTE | MEM_READ
    .ascii  ".data\0\0\0"
    .long   __pe_data_virtual_size  // VirtualSize: to the end of IMAGE_SPAN
    .long   __pe_data_start         // VirtualAddress
    .long   __pe_data_size          // SizeOfRawData
    .long   __pe_data_start         // PointerToRawData
    .long   0, 0
    .short  0, 0
    .long   0xc0000040              // CNT_INITIALIZED_DATA | MEM_READ | MEM_WRITE

    .section .text.entry, "ax"
primary:
    // x0 = the DTB (boot protocol), or the EfiBoot an EFI boot left. The MMU is off:
    // memory is Device-nGnRnE, so every access below is aligned. x9 = the base we were
    // loaded at (link address 0).
    adrp    x9, __image_start
    add     x9, x9, :lo12:__image_start
    bl      relocate
    // This vCPU's index: MPIDR_EL1 Aff0 + 16 * Aff1 (KVM's reset_mpidr numbering).
    mrs     x1, mpidr_el1
    and     x2, x1, #0xff
    ubfx    x3, x1, #8, #8
    add     x2, x2, x3, lsl #4
    cmp     x2, #{max_vcpus}
    b.hs    3f                      // no mailbox for it: park
    // Mailbox = base + MAILBOXES_OFFSET + index * MAILBOX_SIZE; keep it in TPIDR_EL1 for
    // the handler. SP_EL1 = its end (mailbox_offset::EL1_STACK_TOP), 16-byte aligned.
    mov     x1, #{mailboxes_offset}
    add     x1, x1, x9
    add     x1, x1, x2, lsl #{mailbox_shift}
    msr     tpidr_el1, x1
    add     x3, x1, #{mailbox_size}
    mov     sp, x3
    // CPACR_EL1.FPEN = 0b11 (bits 21:20): compiled Rust may use FP/SIMD registers.
    mov     x3, #(3 << 20)
    msr     cpacr_el1, x3
    // VBAR_EL1 = the vector table below.
    adrp    x3, vector_table
    add     x3, x3, :lo12:vector_table
    msr     vbar_el1, x3
    // Make both writes take effect before any Rust runs.
    isb
    // payload_main(dtb x0, mailbox x1, index x2, image base x3) never returns.
    mov     x3, x9
    bl      payload_main
3:  wfi
    b       3b

    // The PE entry point (efi.rs): x0 = image handle, x1 = system table, the MMU on with
    // the firmware's identity map. Returns to the firmware only if efi_main fails.
    .section .text.efi, "ax"
    .global efi_entry
efi_entry:
    stp     x29, x30, [sp, #-32]!
    mov     x29, sp
    stp     x0, x1, [sp, #16]
    adrp    x9, __image_start
    add     x9, x9, :lo12:__image_start
    bl      relocate
    ldp     x0, x1, [sp, #16]
    mov     x2, x9
    bl      efi_main                // efi_main(handle, system table, image)
    ldp     x29, x30, [sp], #32
    ret

    // Applies the relocations for the image at x9; clobbers x10-x14. Past the first page,
    // which a firmware maps as data (the PE headers), since efi_entry calls it too. Each Elf64_Rela is
    // (r_offset, r_info, r_addend); the linker emits only R_AARCH64_RELATIVE
    // (harness/build.rs checks): *(base + offset) = base + addend. Idempotent, so vCPUs
    // entering together may all apply it, and an EFI boot applies it twice.
relocate:
    adrp    x10, __rela_start
    add     x10, x10, :lo12:__rela_start
    adrp    x11, __rela_end
    add     x11, x11, :lo12:__rela_end
1:  cmp     x10, x11
    b.hs    2f
    ldp     x12, x13, [x10]         // r_offset, r_info
    ldr     x14, [x10, #16]         // r_addend
    add     x10, x10, #24
    add     x14, x14, x9
    str     x14, [x9, x12]
    b       1b
2:  ret

    // ! efi_leave(EfiBoot *x0, u64 base x1): boot services are gone. Cleans the moved
    // image's span to the point of coherency (what was written with caches on must be in
    // memory once they are off), turns the MMU and caches off, and enters the moved
    // image's first byte (Image code0/code1, then primary) with x0 as given.
    .global efi_leave
efi_leave:
    mrs     x2, ctr_el0
    ubfx    x2, x2, #16, #4         // CTR_EL0.DminLine: log2 of the line in words
    mov     x3, #4
    lsl     x3, x3, x2              // line size in bytes
    mov     x4, x1
    add     x5, x1, #{image_span}
1:  dc      civac, x4
    add     x4, x4, x3
    cmp     x4, x5
    b.lo    1b
    dsb     sy
    mrs     x2, sctlr_el1
    bic     x2, x2, #1              // M: MMU off
    bic     x2, x2, #(1 << 2)       // C: data cache off
    bic     x2, x2, #(1 << 12)      // I: instruction cache off
    msr     sctlr_el1, x2
    isb
    ic      iallu                   // no stale instructions of the old copy
    tlbi    vmalle1                 // none of the firmware's translations either
    dsb     sy
    isb
    br      x1

    // VBAR_EL1 needs 2 KiB alignment (Arm ARM D24.2.214): 16 entries of 0x80 bytes.
    .section .text.vectors, "ax"
    .balign {table_size}
vector_table:
    .irp    offset, 0x000, 0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0x400, 0x480, 0x500, 0x580, 0x600, 0x680, 0x700, 0x780
    .balign {entry_size}
    // x0 = this entry's offset; the interrupted context is never resumed, so no
    // register needs saving.
    mov     x0, #\offset
    b       exception_entry
    .endr

    .section .text, "ax"
exception_entry:
    // handle_exception(vector_offset) never returns: it resumes a guard or powers off.
    bl      handle_exception
2:  wfi
    b       2b

    // u64 guard_call(jmpbuf *x0, void (*step)(u64) x1, u64 arg x2)
    // Saves what the AAPCS64 says a callee must preserve, then runs step(arg).
    // Returns 0 when the step returns, or the value passed to guard_resume.
    .global guard_call
guard_call:
    stp     x19, x20, [x0, #0]      // callee-saved registers...
    stp     x21, x22, [x0, #16]
    stp     x23, x24, [x0, #32]
    stp     x25, x26, [x0, #48]
    stp     x27, x28, [x0, #64]
    stp     x29, x30, [x0, #80]     // ...frame pointer and our return address
    mov     x9, sp
    str     x9, [x0, #96]           // ...and the stack pointer
    mov     x19, x0                 // keep the buffer across the call (x19 is callee-saved)
    mov     x0, x2                  // step(arg)
    blr     x1
    mov     x0, x19                 // normal return: resume with 0
    mov     x1, #0
    // fall through

    // ! guard_resume(jmpbuf *x0, u64 value x1): returns `value` from guard_call.
    .global guard_resume
guard_resume:
    ldp     x19, x20, [x0, #0]      // restore callee-saved registers...
    ldp     x21, x22, [x0, #16]
    ldp     x23, x24, [x0, #32]
    ldp     x25, x26, [x0, #48]
    ldp     x27, x28, [x0, #64]
    ldp     x29, x30, [x0, #80]     // ...frame pointer and guard_call's return address
    ldr     x9, [x0, #96]
    mov     sp, x9                  // ...and the stack pointer
    mov     x0, x1                  // guard_call's result
    ret

    // EL0 code: its own pages (see link.ld), executable only at EL0.
    // Entered by eret with x0 = target; `svc #0` hands control back to EL1.
    .section .el0_text, "ax"
    .global el0_load
el0_load:
    .global el0_load_access
el0_load_access:
    ldr     x1, [x0]                // the access: an 8-byte load from the target
    svc     #0                      // step done
    .global el0_store
el0_store:
    mov     x1, #0x5a5a             // a recognisable value
    .global el0_store_access
el0_store_access:
    str     x1, [x0]                // the access: an 8-byte store to the target
    svc     #0                      // step done
"#,
    table_size = const VECTOR_TABLE_SIZE,
    entry_size = const VECTOR_ENTRY_SIZE,
    image_flags = const IMAGE_FLAGS,
    image_span = const IMAGE_SPAN,
    pe_headers = const PE_HEADERS,
    max_vcpus = const MAX_VCPUS,
    mailboxes_offset = const MAILBOXES_OFFSET,
    mailbox_shift = const MAILBOX_SIZE.trailing_zeros(),
    mailbox_size = const MAILBOX_SIZE,
);

/// The PE headers' page, the image's first 4 KiB: besides the headers only the Image
/// entry and the vector table (link.ld), which run with the MMU off or the payload's own
/// map, never under the firmware's.
const PE_HEADERS: u64 = 0x1000;

/// Image header flags (booting.rst): bit 0 = 0 little-endian, bits 2:1 = 1 4 KiB pages,
/// bit 3 = 1 the base may be anywhere in physical memory.
const IMAGE_FLAGS: u64 = (1 << 1) | (1 << 3);

// The `mov`/`add` immediates above: MAILBOXES_OFFSET fits a `mov` (a 16-bit chunk), the
// mailbox size is a power of two an `add` immediate can hold (12 bits, shifted or not).
const _: () = assert!(MAILBOXES_OFFSET == 0x10_0000 && MAILBOX_SIZE == 0x1_0000);

extern "C" {
    /// Runs `step(arg)`; returns 0 if it returned, else the value given to [`guard_resume`].
    pub fn guard_call(jmpbuf: *mut [u64; 13], step: extern "C" fn(u64), arg: u64) -> u64;
    /// Returns `value` from the [`guard_call`] that filled `jmpbuf`.
    pub fn guard_resume(jmpbuf: *const [u64; 13], value: u64) -> !;
    /// EL0 load from x0, then `svc #0`.
    pub fn el0_load();
    /// EL0 store to x0, then `svc #0`.
    pub fn el0_store();
    /// The load instruction inside [`el0_load`] (its address names ELR in reports).
    pub fn el0_load_access();
    /// The store instruction inside [`el0_store`].
    pub fn el0_store_access();
}
