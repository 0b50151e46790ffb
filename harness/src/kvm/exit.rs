//! What the run loop does with each exit, as a pure function of (exit, state): testable
//! without KVM, on any host.

use ras_guest_abi::doorbell::{Doorbell, Event};
use ras_guest_abi::map::DOORBELL;

/// `KVM_SYSTEM_EVENT_SHUTDOWN` / `_RESET` (include/uapi/linux/kvm.h): PSCI SYSTEM_OFF /
/// SYSTEM_RESET from the guest.
pub const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// See [`SYSTEM_EVENT_SHUTDOWN`].
pub const SYSTEM_EVENT_RESET: u32 = 2;

/// One return from KVM_RUN, reduced to what the harness looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// KVM_EXIT_MMIO: an access no memslot covers. `data` holds a write's bytes
    /// (little-endian, zero-extended).
    Mmio {
        /// Guest physical address.
        addr: u64,
        /// Write (true) or read.
        write: bool,
        /// Access size in bytes.
        len: u32,
        /// The written value.
        data: u64,
    },
    /// KVM_EXIT_SYSTEM_EVENT.
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        kind: u32,
    },
    /// KVM_RUN returned -1/EINTR: a signal (the hwpoison SIGBUS, or a kick).
    Interrupted,
    /// Any other exit: the raw `exit_reason` (28 = KVM_EXIT_ARM_NISV, 41 = KVM_EXIT_ARM_SEA
    /// arrive here from kvm-ioctls 0.25 as `Unsupported`), or `u32::MAX` when it has none.
    Other(u32),
}

/// Why the run loop handed control back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest rang `ReadyForFault` for `step`: poison or inject now. The doorbell store
    /// is an MMIO exit, so its instruction skip is still pending: see
    /// [`super::Vcpu::complete_mmio`].
    ReadyForFault {
        /// The step.
        step: u16,
    },
    /// An MMIO access outside the doorbell (e.g. to an unbacked target address).
    Mmio {
        /// Guest physical address.
        addr: u64,
        /// Write (true) or read.
        write: bool,
        /// Access size in bytes.
        len: u32,
    },
    /// PSCI SYSTEM_OFF.
    SystemOff,
    /// PSCI SYSTEM_RESET.
    SystemReset,
    /// EINTR that was not a kick (for the hwpoison path: the SIGBUS arrived).
    Interrupted,
    /// The watchdog kicked the vCPU: the guest took too long.
    Kicked,
    /// Something the harness does not expect: the description says what.
    Unexpected(String),
}

/// The run loop's next move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Call KVM_RUN again.
    Resume,
    /// Return to the caller.
    Stop(Stop),
}

/// Everything the run loop has seen, kept for the caller's assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunState {
    /// Every doorbell the guest rang, in order.
    pub doorbells: Vec<Doorbell>,
    /// KVM_RUN returns handled.
    pub exits: u64,
}

impl RunState {
    /// The doorbell events by kind, in order (unknown codes as `None`).
    pub fn events(&self) -> Vec<Option<Event>> {
        self.doorbells.iter().map(|d| d.kind()).collect()
    }
}

/// Decides what to do with `exit`; `kicked` says whether the watchdog has fired.
pub fn handle_exit(exit: &Exit, kicked: bool, state: &mut RunState) -> Action {
    state.exits += 1;
    let stop = match *exit {
        Exit::Mmio {
            addr: DOORBELL,
            write: true,
            len: 8,
            data,
        } => {
            let doorbell = Doorbell::decode(data);
            state.doorbells.push(doorbell);
            match doorbell.kind() {
                Some(Event::ReadyForFault) => Stop::ReadyForFault {
                    step: doorbell.step,
                },
                _ => return Action::Resume,
            }
        }
        Exit::Mmio {
            addr: DOORBELL,
            write,
            len,
            ..
        } => Stop::Unexpected(format!(
            "doorbell {} of {len} bytes (expected an 8-byte store)",
            if write { "write" } else { "read" }
        )),
        Exit::Mmio {
            addr, write, len, ..
        } => Stop::Mmio { addr, write, len },
        Exit::SystemEvent {
            kind: SYSTEM_EVENT_SHUTDOWN,
        } => Stop::SystemOff,
        Exit::SystemEvent {
            kind: SYSTEM_EVENT_RESET,
        } => Stop::SystemReset,
        Exit::SystemEvent { kind } => Stop::Unexpected(format!("system event {kind}")),
        Exit::Interrupted if kicked => Stop::Kicked,
        Exit::Interrupted => Stop::Interrupted,
        Exit::Other(reason) => Stop::Unexpected(format!("exit reason {reason}")),
    };
    Action::Stop(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doorbell(event: Event, step: u16) -> Exit {
        Exit::Mmio {
            addr: DOORBELL,
            write: true,
            len: 8,
            data: Doorbell::new(event, step, 0).encode(),
        }
    }

    #[test]
    fn a_boot_reads_as_doorbells_then_system_off() {
        let mut state = RunState::default();
        assert_eq!(
            handle_exit(&doorbell(Event::Ready, 0), false, &mut state),
            Action::Resume
        );
        assert_eq!(
            handle_exit(&doorbell(Event::ReadyForFault, 2), false, &mut state),
            Action::Stop(Stop::ReadyForFault { step: 2 })
        );
        assert_eq!(
            handle_exit(&doorbell(Event::Done, 3), false, &mut state),
            Action::Resume
        );
        let off = Exit::SystemEvent {
            kind: SYSTEM_EVENT_SHUTDOWN,
        };
        assert_eq!(
            handle_exit(&off, false, &mut state),
            Action::Stop(Stop::SystemOff)
        );
        assert_eq!(
            state.events(),
            [
                Some(Event::Ready),
                Some(Event::ReadyForFault),
                Some(Event::Done)
            ]
        );
        assert_eq!(state.exits, 4);
    }

    #[test]
    fn foreign_mmio_and_odd_doorbells_go_to_the_caller() {
        let mut state = RunState::default();
        let target = Exit::Mmio {
            addr: 0x8000_0000,
            write: true,
            len: 8,
            data: 0x5a5a,
        };
        assert_eq!(
            handle_exit(&target, false, &mut state),
            Action::Stop(Stop::Mmio {
                addr: 0x8000_0000,
                write: true,
                len: 8
            })
        );
        let read = Exit::Mmio {
            addr: DOORBELL,
            write: false,
            len: 8,
            data: 0,
        };
        assert!(matches!(
            handle_exit(&read, false, &mut state),
            Action::Stop(Stop::Unexpected(m)) if m.contains("read")
        ));
        assert!(state.doorbells.is_empty());
    }

    #[test]
    fn eintr_is_a_kick_only_when_the_watchdog_fired() {
        let mut state = RunState::default();
        assert_eq!(
            handle_exit(&Exit::Interrupted, true, &mut state),
            Action::Stop(Stop::Kicked)
        );
        assert_eq!(
            handle_exit(&Exit::Interrupted, false, &mut state),
            Action::Stop(Stop::Interrupted)
        );
        assert_eq!(
            handle_exit(&Exit::Other(41), false, &mut state),
            Action::Stop(Stop::Unexpected("exit reason 41".into()))
        );
    }
}
