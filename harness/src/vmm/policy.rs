//! What the reference VMM does with one memory error, as a pure function of the firmware,
//! the capabilities it may use, its configuration and what it knows about the error. This is
//! the code a VMM change alters; [`decide`] is unit-tested on every host.

use super::log::{InjectionKind, InjectionVia};
use crate::kvm::{Cap, CapSet};
use crate::scenario::{Firmware, OnAo, OnMemoryError, SeaVia, SignalCode, Vmm};

/// What the VMM knows when it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// BUS_MCEERR_AR (a vCPU consumed the poison) or BUS_MCEERR_AO (found, not consumed).
    pub code: SignalCode,
    /// The guest physical address `si_addr` names (what the record reports).
    pub gpa: u64,
    /// The poisoned guest range, `[start, start + len)`: the signalled host page
    /// (`si_addr_lsb`) translated to guest physical addresses.
    pub gpa_start: u64,
    /// Its length.
    pub gpa_len: u64,
    /// The vCPU's PC. The payload runs identity-mapped, so a PC inside the poisoned range
    /// means the poison was met by an instruction fetch (a VMM with paging guests would walk
    /// the stage-1 tables first).
    pub pc: u64,
    /// The GHESv2 read-ack register is non-zero: the guest has acknowledged the last record
    /// (or none was written yet), so a new one may be written (docs/ras-facts.md §8).
    pub acked: bool,
}

impl FaultInfo {
    /// Whether the PC lies in the poisoned range: the error is an instruction fetch.
    pub fn is_ifetch(&self) -> bool {
        self.pc
            .checked_sub(self.gpa_start)
            .is_some_and(|off| off < self.gpa_len)
    }
}

/// What happens to the CPER record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordAction {
    /// No record: DTB firmware has no transport for one.
    None,
    /// Write a memory-error record for `gpa` into the SEA-notified GHESv2 status block,
    /// after clearing the read-ack register.
    Write {
        /// The faulting guest physical address.
        gpa: u64,
    },
    /// The guest has not acknowledged the previous record: leave it untouched (QEMU
    /// `abort()`s here instead; docs/ras-facts.md §9). The notification still goes out, so the
    /// guest learns of the error even though it finds no new record.
    KeepUnacknowledged,
}

/// How the guest is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing (an action-optional error the VMM ignores, as QEMU).
    Nothing,
    /// A synchronous external abort.
    Sea {
        /// Data Abort, or Instruction Abort for a fetch.
        kind: InjectionKind,
        /// `ext_dabt_pending` or the emulated entry.
        via: InjectionVia,
    },
    /// An SError through KVM_SET_VCPU_EVENTS, with this ISS when `serror_has_esr` is
    /// used.
    Serror {
        /// ISS bits \[24:0\], or `None` for KVM's implementation-defined syndrome.
        iss: Option<u64>,
    },
    /// Stop the VM, with the reason the outcome reports.
    Stop(String),
}

/// The decision on one error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The CPER record.
    pub record: RecordAction,
    /// The notification.
    pub delivery: Delivery,
}

/// Decides what to do with one memory error.
///
/// - AO with `on_ao: ignore`: nothing. Otherwise an AO is treated as an AR at poison time.
/// - `on_memory_error: stop`: stop the VM, no record (QEMU without GHES: "Hardware memory
///   error!", exit 1).
/// - ACPI: record (or keep an unacknowledged one). DTB: no record.
/// - `sea`: an Instruction Abort when the PC is in the poisoned range (emulated: KVM's
///   `ext_dabt_pending` can only make a Data Abort); else `ext_dabt_pending` when configured
///   and caps 41 and 178 are usable, else the emulated entry (QEMU's way).
/// - `serror`: needs cap 41; the configured ISS only with cap 158, else KVM's default.
pub fn decide(firmware: Firmware, caps: CapSet, vmm: &Vmm, fault: &FaultInfo) -> Decision {
    if fault.code == SignalCode::Ao && vmm.on_ao == OnAo::Ignore {
        return Decision {
            record: RecordAction::None,
            delivery: Delivery::Nothing,
        };
    }
    let record = match firmware {
        _ if vmm.on_memory_error == OnMemoryError::Stop => RecordAction::None,
        Firmware::Dtb => RecordAction::None,
        Firmware::Acpi if fault.acked => RecordAction::Write { gpa: fault.gpa },
        Firmware::Acpi => RecordAction::KeepUnacknowledged,
    };
    let events = caps.has(Cap::VcpuEvents);
    let delivery = match vmm.on_memory_error {
        OnMemoryError::Sea if fault.is_ifetch() => Delivery::Sea {
            kind: InjectionKind::Iabt,
            via: InjectionVia::Emulated,
        },
        OnMemoryError::Sea => {
            let ext_dabt =
                vmm.sea == SeaVia::KvmExtDabt && events && caps.has(Cap::ArmInjectExtDabt);
            Delivery::Sea {
                kind: InjectionKind::Sea,
                via: if ext_dabt {
                    InjectionVia::KvmExtDabt
                } else {
                    InjectionVia::Emulated
                },
            }
        }
        OnMemoryError::Serror if !events => Delivery::Stop(
            "cannot deliver an SError: KVM_CAP_VCPU_EVENTS (41) is not usable".to_owned(),
        ),
        OnMemoryError::Serror => Delivery::Serror {
            iss: vmm
                .serror_esr
                .map(|h| h.0)
                .filter(|_| caps.has(Cap::ArmInjectSerrorEsr)),
        },
        OnMemoryError::Stop => Delivery::Stop(format!(
            "memory error at guest physical {:#x}: vmm.on_memory_error is stop",
            fault.gpa
        )),
    };
    Decision { record, delivery }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Hex;

    const ALL: [Cap; 3] = [
        Cap::VcpuEvents,
        Cap::ArmInjectSerrorEsr,
        Cap::ArmInjectExtDabt,
    ];

    fn ar(pc: u64) -> FaultInfo {
        FaultInfo {
            code: SignalCode::Ar,
            gpa: 0x8000_2000,
            gpa_start: 0x8000_2000,
            gpa_len: 0x1000,
            pc,
            acked: true,
        }
    }

    fn vmm(on: OnMemoryError, sea: SeaVia) -> Vmm {
        Vmm {
            on_memory_error: on,
            sea,
            ..Vmm::default()
        }
    }

    #[test]
    fn acpi_load_records_and_uses_ext_dabt_when_configured_and_present() {
        let d = decide(
            Firmware::Acpi,
            CapSet::from_present(&ALL),
            &vmm(OnMemoryError::Sea, SeaVia::KvmExtDabt),
            &ar(0x4000_1234),
        );
        assert_eq!(d.record, RecordAction::Write { gpa: 0x8000_2000 });
        assert_eq!(
            d.delivery,
            Delivery::Sea {
                kind: InjectionKind::Sea,
                via: InjectionVia::KvmExtDabt
            }
        );
    }

    #[test]
    fn masked_178_or_41_falls_back_to_the_emulated_entry() {
        for mask in [Cap::ArmInjectExtDabt, Cap::VcpuEvents] {
            let caps = CapSet::from_present(&ALL).masked(&[mask]);
            let d = decide(
                Firmware::Acpi,
                caps,
                &vmm(OnMemoryError::Sea, SeaVia::KvmExtDabt),
                &ar(0),
            );
            assert_eq!(
                d.delivery,
                Delivery::Sea {
                    kind: InjectionKind::Sea,
                    via: InjectionVia::Emulated
                },
                "{mask:?}"
            );
        }
    }

    #[test]
    fn a_pc_in_the_poisoned_range_is_an_instruction_abort_even_with_ext_dabt() {
        for pc in [0x8000_2000, 0x8000_2ffc] {
            let d = decide(
                Firmware::Acpi,
                CapSet::from_present(&ALL),
                &vmm(OnMemoryError::Sea, SeaVia::KvmExtDabt),
                &ar(pc),
            );
            assert_eq!(
                d.delivery,
                Delivery::Sea {
                    kind: InjectionKind::Iabt,
                    via: InjectionVia::Emulated
                },
                "{pc:#x}"
            );
        }
        // One byte past the range is a data access again.
        assert!(!ar(0x8000_3000).is_ifetch());
        assert!(!ar(0x8000_1ffc).is_ifetch());
    }

    #[test]
    fn an_unacknowledged_record_is_kept_and_the_guest_still_notified() {
        let mut fault = ar(0);
        fault.acked = false;
        let d = decide(
            Firmware::Acpi,
            CapSet::from_present(&ALL),
            &Vmm::default(),
            &fault,
        );
        assert_eq!(d.record, RecordAction::KeepUnacknowledged);
        assert!(matches!(d.delivery, Delivery::Sea { .. }));
    }

    #[test]
    fn dtb_never_records_and_serror_esr_needs_158() {
        let mut v = vmm(OnMemoryError::Serror, SeaVia::Emulated);
        v.serror_esr = Some(Hex(0x811));
        let with = decide(Firmware::Dtb, CapSet::from_present(&ALL), &v, &ar(0));
        assert_eq!(with.record, RecordAction::None);
        assert_eq!(with.delivery, Delivery::Serror { iss: Some(0x811) });
        let masked = CapSet::from_present(&ALL).masked(&[Cap::ArmInjectSerrorEsr]);
        let without = decide(Firmware::Dtb, masked, &v, &ar(0));
        assert_eq!(without.delivery, Delivery::Serror { iss: None });
        let no_events = CapSet::from_present(&ALL).masked(&[Cap::VcpuEvents]);
        assert!(matches!(
            decide(Firmware::Dtb, no_events, &v, &ar(0)).delivery,
            Delivery::Stop(r) if r.contains("(41)")
        ));
    }

    #[test]
    fn stop_and_ignored_ao() {
        let d = decide(
            Firmware::Dtb,
            CapSet::default(),
            &vmm(OnMemoryError::Stop, SeaVia::Emulated),
            &ar(0),
        );
        assert_eq!(d.record, RecordAction::None);
        assert!(matches!(d.delivery, Delivery::Stop(r) if r.contains("0x80002000")));
        let mut ao = ar(0);
        ao.code = SignalCode::Ao;
        let ignored = decide(Firmware::Acpi, CapSet::default(), &Vmm::default(), &ao);
        assert_eq!(ignored.delivery, Delivery::Nothing);
        assert_eq!(ignored.record, RecordAction::None);
        let notify = Vmm {
            on_ao: OnAo::Notify,
            ..Vmm::default()
        };
        let notified = decide(Firmware::Acpi, CapSet::default(), &notify, &ao);
        assert_eq!(notified.record, RecordAction::Write { gpa: 0x8000_2000 });
    }
}
