//! One time axis for three clocks: the host's CLOCK_MONOTONIC (the SIGBUS recorder's
//! stamps), the host's virtual counter and the guest's.
//!
//! Under KVM the guest's CNTVCT_EL0 is the host's physical counter minus the VM's
//! CNTVOFF (arch/arm64/kvm/arch_timer.c). A VHE host's own EL0 read of CNTVCT_EL0 has no
//! offset (HCR_EL2.{E2H,TGE} = {1,1}), and is what KVM calls the physical counter. So:
//! counters are compared as counters (guest + offset = host), and only then converted to
//! CLOCK_MONOTONIC through a line fitted on the host thread: Linux's arm64 clocksource is
//! the same counter, so the two move together at CNTFRQ_EL0.

use ras_harness::kvm::regs::TIMER_CNT;
use ras_harness::kvm::Vcpu;
use std::arch::asm;

/// Samples per fit; the tightest bracket wins.
const SAMPLES: usize = 32;

/// CNTVCT_EL0 on this thread. Linux lets EL0 read it (CNTKCTL_EL1.EL0VCTEN). The `isb`
/// keeps the read from being taken early: counter reads are not ordered with other
/// instructions (Linux does the same, arch/arm64/include/asm/arch_timer.h,
/// `__arch_counter_get_cntvct`).
pub fn host_counter() -> u64 {
    let cnt: u64;
    // SAFETY: reads a system register Linux makes readable at EL0; no memory is touched.
    unsafe {
        asm!(
            "isb",                 // no earlier-than-program-order read
            "mrs {c}, cntvct_el0", // the virtual counter
            c = out(reg) cnt,
            options(nomem, nostack),
        )
    };
    cnt
}

/// CNTFRQ_EL0: the counter's frequency in Hz, as firmware (or QEMU) programmed it.
pub fn counter_frequency() -> u64 {
    let frq: u64;
    // SAFETY: as above.
    unsafe {
        asm!(
            "mrs {f}, cntfrq_el0", // counter frequency
            f = out(reg) frq,
            options(nomem, nostack),
        )
    };
    frq
}

/// CLOCK_MONOTONIC in nanoseconds, the clock the SIGBUS recorder stamps with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The host counter placed on CLOCK_MONOTONIC: `mono = mono0 + (cnt - cnt0) / freq`.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    freq: u64,
    cnt0: u64,
    mono0: u64,
}

impl Timeline {
    /// Fits the line: a clock read bracketed by two counter reads, the tightest of
    /// [`SAMPLES`], the clock placed at the bracket's middle.
    pub fn calibrate() -> Self {
        let (cnt0, mono0) = tightest(monotonic_ns);
        Self {
            freq: counter_frequency(),
            cnt0,
            mono0,
        }
    }

    /// Host counter value `cnt` as CLOCK_MONOTONIC nanoseconds.
    pub fn counter_to_ns(&self, cnt: u64) -> i128 {
        let ticks = i128::from(cnt) - i128::from(self.cnt0);
        i128::from(self.mono0) + ticks * 1_000_000_000 / i128::from(self.freq.max(1))
    }

    /// Counter ticks as nanoseconds.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.freq.max(1))) as u64
    }
}

/// The guest's counter offset: host counter = guest counter + offset. Read with
/// KVM_GET_ONE_REG(TIMER_CNT) bracketed by two host counter reads, the
/// tightest bracket of [`SAMPLES`]. The VMM never writes the offset, so it holds for the
/// VM's life.
pub fn guest_offset(vcpu: &Vcpu) -> ras_harness::kvm::Result<u64> {
    let mut err = None;
    let (host, guest) = tightest(|| match vcpu.get_reg(TIMER_CNT) {
        Ok(v) => v,
        Err(e) => {
            err = Some(e);
            0
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(host.wrapping_sub(guest)),
    }
}

/// `(midpoint host counter, value)` of the read of `read` most tightly bracketed by host
/// counter reads.
fn tightest(mut read: impl FnMut() -> u64) -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..SAMPLES {
        let before = host_counter();
        let value = read();
        let after = host_counter();
        let width = after.wrapping_sub(before);
        if width < best.0 {
            best = (width, before + width / 2, value);
        }
    }
    (best.1, best.2)
}
