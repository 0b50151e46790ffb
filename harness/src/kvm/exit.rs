//! What the run loop does with each exit, as a pure function of (exit, state): testable
//! without KVM, on any host.

use ras_guest_abi::doorbell::{Doorbell, Event};
use ras_guest_abi::map::DOORBELL;

/// `KVM_SYSTEM_EVENT_SHUTDOWN` / `_RESET` (include/uapi/linux/kvm.h): PSCI SYSTEM_OFF /
/// SYSTEM_RESET from the guest.
pub const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// See [`SYSTEM_EVENT_SHUTDOWN`].
pub const SYSTEM_EVENT_RESET: u32 = 2;
/// Doorbells one run may ring. The payload rings a handful per step; a guest ringing in a
/// loop would otherwise grow [`RunState::doorbells`] until the watchdog fires.
pub const MAX_DOORBELLS: usize = 4096;

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
            if state.doorbells.len() >= MAX_DOORBELLS {
                return Action::Stop(Stop::Unexpected(format!(
                    "more than {MAX_DOORBELLS} doorbells (the guest rings in a loop)"
                )));
            }
            let doorbell = Doorbell::decode(data);
            state.doorbells.push(doorbell);
            match doorbell.kind() {
                Some(Event::ReadyForFault) => Stop::ReadyForFault {
                    step: doorbell.step,
                },
                Some(_) => return Action::Resume,
                None => Stop::Unexpected(format!("doorbell {data:#x}: unknown event code")),
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

    /// Any exit a guest can cause, including the ones KVM would never produce.
    fn any_exit() -> impl proptest::strategy::Strategy<Value = Exit> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<u64>(), any::<bool>(), any::<u32>(), any::<u64>()).prop_map(
                |(addr, write, len, data)| Exit::Mmio {
                    addr,
                    write,
                    len,
                    data
                }
            ),
            // The doorbell itself, any size, any value.
            (any::<bool>(), 0u32..=16, any::<u64>()).prop_map(|(write, len, data)| Exit::Mmio {
                addr: DOORBELL,
                write,
                len,
                data
            }),
            any::<u32>().prop_map(|kind| Exit::SystemEvent { kind }),
            Just(Exit::Interrupted),
            any::<u32>().prop_map(Exit::Other),
        ]
    }

    proptest::proptest! {
        /// No exit panics; each one counts; only a well-formed doorbell is recorded; a
        /// kick is reported only when the watchdog fired; a stop is never silent.
        #[test]
        fn arbitrary_exits_are_decided_without_panic(
            exits in proptest::collection::vec((any_exit(), proptest::bool::ANY), 1..64)
        ) {
            let mut state = RunState::default();
            for (i, (exit, kicked)) in exits.iter().enumerate() {
                let before = state.doorbells.len();
                let action = handle_exit(exit, *kicked, &mut state);
                proptest::prop_assert_eq!(state.exits, i as u64 + 1);
                let doorbell = matches!(
                    exit,
                    Exit::Mmio { addr: DOORBELL, write: true, len: 8, .. }
                );
                proptest::prop_assert_eq!(state.doorbells.len(), before + usize::from(doorbell));
                match &action {
                    Action::Resume => proptest::prop_assert!(
                        doorbell && state.doorbells[before].kind().is_some()
                    ),
                    Action::Stop(Stop::Kicked) => {
                        proptest::prop_assert!(*kicked && *exit == Exit::Interrupted)
                    }
                    Action::Stop(Stop::Unexpected(why)) => proptest::prop_assert!(!why.is_empty()),
                    Action::Stop(Stop::Mmio { addr, .. }) => proptest::prop_assert_ne!(*addr, DOORBELL),
                    Action::Stop(_) => {}
                }
            }
        }
    }

    #[test]
    fn junk_doorbells_stop_the_run_and_a_ringing_loop_is_cut_off() {
        let mut state = RunState::default();
        let junk = Exit::Mmio {
            addr: DOORBELL,
            write: true,
            len: 8,
            data: 0xdead_beef_0000_ffff,
        };
        assert!(matches!(
            handle_exit(&junk, false, &mut state),
            Action::Stop(Stop::Unexpected(m)) if m.contains("unknown event code")
        ));
        let mut state = RunState::default();
        for _ in 0..MAX_DOORBELLS {
            assert_eq!(
                handle_exit(&doorbell(Event::StepDone, 1), false, &mut state),
                Action::Resume
            );
        }
        assert!(matches!(
            handle_exit(&doorbell(Event::StepDone, 1), false, &mut state),
            Action::Stop(Stop::Unexpected(m)) if m.contains("doorbells")
        ));
        assert_eq!(state.doorbells.len(), MAX_DOORBELLS);
    }
}
