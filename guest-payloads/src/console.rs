//! The console `/chosen/stdout-path` names: `ras: ...` lines a harness outside the VMM can
//! read even when the VMM's memory is gone. Polled output, no interrupts.

use core::fmt;
use ras_guest_abi::fdt::{Uart, UartKind};

/// PL011 registers (Arm PrimeCell UART PL011 TRM, 3.2 "Summary of registers"): UARTDR at
/// 0x000, UARTFR at 0x018 with TXFF (transmit FIFO full) at bit 5.
const PL011_DR: u64 = 0x000;
const PL011_FR: u64 = 0x018;
const PL011_FR_TXFF: u32 = 1 << 5;
/// 16550 registers (by index, scaled by `reg-shift`): THR 0, LSR 5 with THRE (transmit
/// holding register empty) at bit 5.
const UART_THR: u64 = 0;
const UART_LSR: u64 = 5;
const UART_LSR_THRE: u32 = 1 << 5;

/// A UART mapped as device memory (the identity map's first GiB).
#[derive(Clone, Copy)]
pub struct Console(pub Uart);

impl Console {
    fn read(&self, offset: u64) -> u32 {
        let addr = self.0.base + offset;
        // SAFETY: the UART's registers, device memory the identity map covers; an aligned
        // access of the width the binding gives.
        unsafe {
            if self.0.kind == UartKind::Ns16550 && self.0.io_width != 4 {
                u32::from(core::ptr::read_volatile(addr as *const u8))
            } else {
                core::ptr::read_volatile(addr as *const u32)
            }
        }
    }

    fn write(&self, offset: u64, value: u8) {
        let addr = self.0.base + offset;
        // SAFETY: as in `read`.
        unsafe {
            if self.0.kind == UartKind::Ns16550 && self.0.io_width != 4 {
                core::ptr::write_volatile(addr as *mut u8, value)
            } else {
                core::ptr::write_volatile(addr as *mut u32, u32::from(value))
            }
        }
    }

    fn put(&self, byte: u8) {
        match self.0.kind {
            UartKind::Pl011 => {
                while self.read(PL011_FR) & PL011_FR_TXFF != 0 {
                    core::hint::spin_loop();
                }
                self.write(PL011_DR, byte);
            }
            UartKind::Ns16550 => {
                let shift = self.0.reg_shift;
                while self.read(UART_LSR << shift) & UART_LSR_THRE == 0 {
                    core::hint::spin_loop();
                }
                self.write(UART_THR << shift, byte);
            }
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.put(b));
        Ok(())
    }
}

/// Writes one `ras: ` line on this vCPU's console, if it has one.
#[macro_export]
macro_rules! say {
    ($mb:expr, $($arg:tt)*) => {{
        if let Some(mut c) = $mb.console() {
            let _ = core::fmt::Write::write_fmt(&mut c, format_args!("ras: {}\n", format_args!($($arg)*)));
        }
    }};
}
