//! The only hand-written assembly: entry, the vector table, the step guard, EL0 code.

use core::arch::global_asm;
use ras_guest_abi::arch::{VECTOR_ENTRY_SIZE, VECTOR_TABLE_SIZE};

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    // x0 = this vCPU's mailbox (set by the VMM). Keep it in TPIDR_EL1 for the handler.
    msr     tpidr_el1, x0
    // SP_EL1 = mailbox + 0x10000 (mailbox_offset::EL1_STACK_TOP), 16-byte aligned.
    add     x1, x0, #0x10, lsl #12
    mov     sp, x1
    // CPACR_EL1.FPEN = 0b11 (bits 21:20): compiled Rust may use FP/SIMD registers.
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    // VBAR_EL1 = the vector table below.
    adrp    x1, vector_table
    add     x1, x1, :lo12:vector_table
    msr     vbar_el1, x1
    // Make both writes take effect before any Rust runs.
    isb
    // payload_main(mailbox) never returns; x0 still holds the mailbox.
    bl      payload_main
1:  wfi
    b       1b

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
);

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
