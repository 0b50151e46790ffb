//! The hwpoison path, one freshly poisoned page per iteration, timed in parts.
//!
//! The guest loads, at EL0, from one target page per step (the payload's MAX_TARGETS per
//! VM; a fresh VM with fresh pages when they are used up). At the step's `ReadyForFault`
//! the VMM poisons the page (MADV_HWPOISON). The load faults; KVM sends SIGBUS
//! (BUS_MCEERR_AR) to the vCPU thread and KVM_RUN returns EINTR. Then, on the vCPU thread,
//! the reference VMM's own handler
//! ([`ras_harness::vmm::handler::ErrorHandler::on_memory_error`], what the machine runs for
//! a scenario), configured for the delivery, with a [`Probe`] reading the counter:
//!
//! | part | from | to |
//! |---|---|---|
//! | `signal` | SIGBUS handler's clock read | KVM_RUN back in the VMM |
//! | `hva_to_gpa` | | the recorder drained, si_addr translated |
//! | `decide` | | PC read (the ifetch check), read-ack checked, policy decided |
//! | `cper` | | the pre-encoded record patched and written (ACPI only) |
//! | `inject` | | the injection ioctl(s) returned (each one also timed) |
//! | `reentry` | | the guest's CNTVCT_EL0 in its vector, on the host's axis |
//!
//! The guest's counter becomes host time through [`crate::clock`]. The guest's record is
//! checked (vector, ESR) so that a number is never taken from a path that did not work.

use crate::clock::{guest_offset, host_counter, Timeline};
use crate::guest::Guest;
use ras_guest_abi::arch::{VECTOR_LOWER_A64_SERROR, VECTOR_LOWER_A64_SYNC};
use ras_guest_abi::mailbox::{flags, Access, MAX_TARGETS};
use ras_guest_abi::{map, Params};
use ras_harness::fault::sigbus::{self, SigbusEvent};
use ras_harness::fault::translate::Memslot;
use ras_harness::fault::{host_page_size, GuestRanges, Method, PoisonedPage, Poisoner, SigbusCode};
use ras_harness::formats::acpi::{AcpiLayout, AcpiTables, Notify};
use ras_harness::kvm::{Backing, Cap, Mapping, Stop};
use ras_harness::scenario::{self, Hex, OnMemoryError, SeaVia, Vmm};
use ras_harness::vmm::handler::{ErrorHandler, Mark, Probe};

/// Data abort from EL0 (EC 0x24), IL, DFSC 0x10: KVM's ext_dabt (FnV 0) and QEMU's
/// emulated entry (FnV, bit 10, set). docs/ras-facts.md §6.
const ESR_DABT_LOW_SEA: u32 = 0x9200_0010;
const ESR_DABT_LOW_SEA_FNV: u32 = 0x9200_0410;
/// SError ISS a Linux guest survives: AET UEO (0b010 << 10), DFSC 0x11 (docs/ras-facts.md §7),
/// and the ESR_EL1 it becomes (EC 0x2F, IL).
const SERROR_ISS_UEO: u64 = 0x811;
const ESR_SERROR_UEO: u32 = 0xBE00_0811;

/// How the VMM tells the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// KVM_SET_VCPU_EVENTS with ext_dabt_pending: KVM builds the abort.
    ExtDabt,
    /// QEMU's way: the VMM writes the exception entry with KVM_SET_ONE_REG.
    Emulated,
    /// KVM_SET_VCPU_EVENTS with serror_pending and an ESR (cap 158).
    SerrorEsr,
}

impl Delivery {
    pub const ALL: [Delivery; 3] = [Delivery::ExtDabt, Delivery::Emulated, Delivery::SerrorEsr];

    pub fn name(self) -> &'static str {
        match self {
            Delivery::ExtDabt => "ext_dabt",
            Delivery::Emulated => "emulated",
            Delivery::SerrorEsr => "serror_esr",
        }
    }

    /// The vector and ESR_EL1 (32 bits: 6.1 sign-extends) the guest must record.
    fn expected(self) -> (u64, u32) {
        match self {
            Delivery::ExtDabt => (VECTOR_LOWER_A64_SYNC, ESR_DABT_LOW_SEA),
            Delivery::Emulated => (VECTOR_LOWER_A64_SYNC, ESR_DABT_LOW_SEA_FNV),
            Delivery::SerrorEsr => (VECTOR_LOWER_A64_SERROR, ESR_SERROR_UEO),
        }
    }

    /// The VMM configuration (a scenario's `vmm`) that makes the handler take this path.
    fn vmm(self) -> Vmm {
        match self {
            Delivery::ExtDabt => Vmm {
                sea: SeaVia::KvmExtDabt,
                ..Vmm::default()
            },
            Delivery::Emulated => Vmm {
                sea: SeaVia::Emulated,
                ..Vmm::default()
            },
            Delivery::SerrorEsr => Vmm {
                on_memory_error: OnMemoryError::Serror,
                serror_esr: Some(Hex(SERROR_ISS_UEO)),
                ..Vmm::default()
            },
        }
    }

    /// The capability it needs, if any.
    pub fn cap(self) -> Option<Cap> {
        match self {
            Delivery::ExtDabt => Some(Cap::ArmInjectExtDabt),
            Delivery::Emulated => None,
            Delivery::SerrorEsr => Some(Cap::ArmInjectSerrorEsr),
        }
    }
}

/// What the guest boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU-like ACPI tables with a GHESv2 source: the VMM writes a CPER record first,
    /// the guest walks the tables after its handler and acknowledges.
    Acpi,
    /// No tables: no record.
    Dtb,
}

impl Firmware {
    pub const ALL: [Firmware; 2] = [Firmware::Acpi, Firmware::Dtb];

    pub fn name(self) -> &'static str {
        match self {
            Firmware::Acpi => "acpi",
            Firmware::Dtb => "dtb",
        }
    }

    fn scenario(self) -> scenario::Firmware {
        match self {
            Firmware::Acpi => scenario::Firmware::Acpi,
            Firmware::Dtb => scenario::Firmware::Dtb,
        }
    }
}

/// One iteration's parts, in nanoseconds (signed: the guest's part comes from another
/// clock, and a bad fit would show as a negative value rather than be hidden).
#[derive(Clone, Debug, Default)]
pub struct Parts {
    pub signal: i64,
    pub hva_to_gpa: i64,
    pub decide: i64,
    pub cper: i64,
    pub inject: i64,
    pub reentry: i64,
    /// Each injection ioctl, in order.
    pub ioctls: Vec<(&'static str, i64)>,
}

impl Parts {
    /// SIGBUS handler to the injection ioctl(s) returning.
    pub fn to_ioctl_return(&self) -> i64 {
        self.signal + self.hva_to_gpa + self.decide + self.cper + self.inject
    }

    /// SIGBUS handler to the guest's first instruction in the vector.
    pub fn to_vector(&self) -> i64 {
        self.to_ioctl_return() + self.reentry
    }
}

/// One VM's worth of target pages.
struct PoisonVm {
    /// Before `guest`: the registry goes before the mappings it names.
    ranges: GuestRanges,
    guest: Guest,
    hvas: Vec<usize>,
    handler: ErrorHandler,
    /// Host counter = guest counter + offset.
    offset: u64,
    timeline: Timeline,
    next_step: usize,
}

impl PoisonVm {
    fn boot(firmware: Firmware, delivery: Delivery) -> Result<Self, String> {
        let page = host_page_size();
        let targets: Vec<u64> = (0..MAX_TARGETS)
            .map(|i| map::TARGET_BASE + (i * page) as u64)
            .collect();
        let fw = map::FIRMWARE_BASE;
        let layout = AcpiLayout::qemu_like(fw, fw + 0x1000, fw + 0x2000);
        let (mut p, tables) = match firmware {
            Firmware::Acpi => {
                let tables = AcpiTables::build(&layout).map_err(|e| e.to_string())?;
                let p = Params::new(Access::Load, 0, flags::WALK_ACPI | flags::ACK, &targets);
                (p, Some(tables))
            }
            Firmware::Dtb => (Params::new(Access::Load, 0, 0, &targets), None),
        };
        if tables.is_some() {
            p.rsdp_gpa = layout.rsdp;
        }
        let guest = Guest::boot(&p, |vm| {
            let target = Mapping::new(Backing::Anonymous, MAX_TARGETS * page)
                .map_err(|e| format!("target mapping: {e}"))?;
            vm.add_memory(map::TARGET_BASE, target)
                .map_err(|e| format!("target memslot: {e}"))?;
            for blob in tables.iter().flat_map(|t| t.blobs()) {
                vm.write_guest(blob.gpa, &blob.bytes)
                    .map_err(|e| format!("{}: {e}", blob.name))?;
            }
            Ok(())
        })?;
        let slot = |gpa| {
            guest.vm.memory_at(gpa).map(|(m, _)| Memslot {
                gpa,
                hva: m.as_ptr() as u64,
                size: m.len() as u64,
            })
        };
        let slots: Vec<Memslot> = [map::RAM_BASE, map::TARGET_BASE]
            .into_iter()
            .filter_map(slot)
            .collect();
        let target = slots.get(1).ok_or("no target memslot")?;
        let mut ranges = GuestRanges::new();
        // SAFETY: the target slot's mapping was allocated above as guest RAM and lives in
        // `guest.vm`, which this struct drops after `ranges`.
        unsafe { ranges.add(target.hva as usize, target.size as usize) }
            .map_err(|e| e.to_string())?;
        let hvas = (0..MAX_TARGETS)
            .map(|i| target.hva as usize + i * page)
            .collect();
        let offset = guest_offset(&guest.vcpu).map_err(|e| e.to_string())?;
        let ghes = match firmware {
            Firmware::Acpi => Some(*layout.source_for(Notify::Sea).ok_or("no SEA source")?),
            Firmware::Dtb => None,
        };
        let handler = ErrorHandler::new(
            firmware.scenario(),
            guest.vm.caps(),
            &delivery.vmm(),
            slots,
            ghes,
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            ranges,
            guest,
            hvas,
            handler,
            offset,
            timeline: Timeline::calibrate(),
            next_step: 0,
        })
    }
}

/// Runs the path for one (delivery, firmware), VM after VM.
pub struct Path {
    delivery: Delivery,
    firmware: Firmware,
    vm: Option<PoisonVm>,
    /// Every page poisoned, for unpoisoning at the end.
    poisoned: Vec<PoisonedPage>,
    /// This (the vCPU) thread's id, to pick its SIGBUS: known before the fault, so the
    /// path makes no gettid call.
    tid: i32,
    /// Allocated once: an allocation inside a timed part can cost a system call (musl).
    marks: Marks,
    /// Where the recorder is drained into, allocated once for the same reason.
    events: Vec<SigbusEvent>,
}

impl Path {
    pub fn new(delivery: Delivery, firmware: Firmware) -> Result<Self, String> {
        sigbus::install().map_err(|e| e.to_string())?;
        Ok(Self {
            delivery,
            firmware,
            vm: None,
            poisoned: Vec::new(),
            tid: sigbus::gettid(),
            marks: Marks(Vec::with_capacity(MARKS), 0),
            events: Vec::with_capacity(sigbus::RING_LEN),
        })
    }

    /// The pages poisoned so far; the VMs holding them are gone.
    pub fn finish(mut self) -> Vec<PoisonedPage> {
        self.vm = None;
        std::mem::take(&mut self.poisoned)
    }

    /// One poisoned page, from the guest's load to its vector.
    pub fn iteration(&mut self) -> Result<Parts, String> {
        if self.vm.as_ref().is_none_or(|v| v.next_step >= MAX_TARGETS) {
            self.vm = None;
            let vm = PoisonVm::boot(self.firmware, self.delivery)?;
            if let Some(cap) = self.delivery.cap() {
                if !vm.guest.vm.caps().has(cap) {
                    return Err(format!("the host has no {cap:?}"));
                }
            }
            self.vm = Some(vm);
        }
        let vm = self.vm.as_mut().ok_or("no VM")?;
        let step = vm.next_step;
        vm.next_step += 1;

        let page = Poisoner::new(&vm.ranges)
            .poison(vm.hvas[step], Method::MadviseHwpoison)
            .map_err(|e| e.to_string())?;
        self.poisoned.push(page);
        // Since 6.11 the poisoning thread gets its own BUS_MCEERR_AR at injection time:
        // that one is not the guest's.
        let _ = sigbus::take_events();

        let stop = vm.guest.run()?;
        let back = host_counter();
        if stop != Stop::Interrupted {
            return Err(format!("step {step}: expected the SIGBUS, got {stop:?}"));
        }
        self.events.clear();
        sigbus::take_events_into(&mut self.events);
        let ev = *self
            .events
            .iter()
            .find(|e| e.si_code == SigbusCode::MceerrAr && e.tid == self.tid)
            .ok_or_else(|| format!("step {step}: KVM_RUN was interrupted without a SIGBUS"))?;
        let error = vm
            .handler
            .memory_error(&ev)
            .ok_or_else(|| format!("step {step}: the SIGBUS is not in guest memory"))?;
        let translated = host_counter();
        let marks = &mut self.marks;
        marks.0.clear();
        marks.1 = translated;
        let handled = vm
            .handler
            .on_memory_error(&vm.guest.vm, &vm.guest.vcpu, 0, &error, marks)
            .map_err(|e| e.to_string())?;
        let injected = host_counter();
        if handled.injection.is_none() {
            return Err(format!("step {step}: the VMM did not inject ({handled:?})"));
        }
        if self.firmware == Firmware::Acpi && handled.record.is_none() {
            return Err(format!(
                "step {step}: no CPER record written (not acknowledged?)"
            ));
        }

        let stop = vm.guest.run()?;
        let expected_stop = if step + 1 < MAX_TARGETS {
            Stop::ReadyForFault {
                step: step as u16 + 1,
            }
        } else {
            Stop::SystemOff
        };
        if stop != expected_stop {
            return Err(format!(
                "step {step}: expected {expected_stop:?}, got {stop:?}"
            ));
        }
        let report = vm.guest.report()?;
        let record = report
            .records
            .get(step)
            .filter(|_| report.exception_count as usize == step + 1)
            .ok_or_else(|| format!("step {step}: {} exceptions", report.exception_count))?;
        let (vector, esr) = self.delivery.expected();
        if (record.vector_offset, record.esr as u32) != (vector, esr) {
            return Err(format!(
                "step {step}: the guest took vector {:#x} ESR {:#x}, expected {vector:#x} {esr:#x}",
                record.vector_offset, record.esr
            ));
        }
        let in_vector = record.cntvct.wrapping_add(vm.offset);

        let t = &vm.timeline;
        let ticks = |a: u64, b: u64| t.ticks_to_ns(b.wrapping_sub(a)) as i64;
        let at = |mark: Mark| {
            marks
                .at(mark)
                .ok_or(format!("step {step}: no {mark:?} mark"))
        };
        let (decided, recorded) = (at(Mark::Decided)?, at(Mark::Recorded)?);
        Ok(Parts {
            signal: (t.counter_to_ns(back) - i128::from(ev.monotonic_ns)) as i64,
            hva_to_gpa: ticks(back, translated),
            decide: ticks(translated, decided),
            cper: ticks(decided, recorded),
            inject: ticks(recorded, injected),
            reentry: (t.counter_to_ns(in_vector) - t.counter_to_ns(injected)) as i64,
            ioctls: marks
                .ioctls()
                .map(|(name, n)| (name, t.ticks_to_ns(n) as i64))
                .collect(),
        })
    }
}

/// More marks than any path makes (the emulated entry: 3 + 10 ioctls), so that no
/// allocation falls inside a timed part.
const MARKS: usize = 16;

/// The handler's marks, each with the host counter when it was reached, and the counter
/// when the handler was called.
struct Marks(Vec<(Mark, u64)>, u64);

impl Probe for Marks {
    fn mark(&mut self, at: Mark) {
        self.0.push((at, host_counter()));
    }
}

impl Marks {
    fn at(&self, mark: Mark) -> Option<u64> {
        self.0.iter().find(|(m, _)| *m == mark).map(|&(_, c)| c)
    }

    /// Each ioctl with its ticks: from the mark before it (the calls follow one another).
    fn ioctls(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let before = std::iter::once(self.1).chain(self.0.iter().map(|&(_, c)| c));
        self.0
            .iter()
            .zip(before)
            .filter_map(|(&(mark, at), prev)| match mark {
                Mark::Ioctl(name) => Some((name, at.wrapping_sub(prev))),
                _ => None,
            })
    }
}
