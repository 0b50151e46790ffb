//! Doorbell values: what one 8-byte store to [`crate::map::DOORBELL`] says.
//!
//! Layout of the stored value (little-endian u64):
//!
//! | bits    | field | meaning |
//! |---------|-------|---------|
//! | 15:0    | event | an [`Event`] code |
//! | 31:16   | step  | the access step it concerns (index into `Params::targets`) |
//! | 63:32   | arg   | event-specific: record index, exception count, [`FatalReason`] |
//!
//! The vCPU that rang is the one that exited, so the value needs no vCPU id.

/// What the guest announces. Values are wire codes; unknown ones decode to `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Event {
    /// MMU on, params accepted, report initialised.
    Ready = 1,
    /// About to perform the access of `step` (or the SError wait): poison or inject now.
    ReadyForFault = 2,
    /// An exception was recorded; `arg` = its index in `Report::records`.
    ExceptionRecorded = 3,
    /// Step finished (faulted or not); `arg` = exceptions recorded so far.
    StepDone = 4,
    /// All steps done; PSCI SYSTEM_OFF follows.
    Done = 5,
    /// An exception was taken in `step` (`arg` = its index in `Report::records`, its
    /// record not read yet); the payload looks for the record once this is acknowledged. Handshake only (the doorbell's VMM injected the exception itself): it
    /// lets an outside VMM's driver order a second error before the guest's ack.
    ExceptionTaken = 6,
    /// Something the payload cannot continue from; `arg` = a [`FatalReason`]. SYSTEM_OFF
    /// follows.
    Fatal = 0xff,
}

impl Event {
    /// Decodes a wire code.
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Ready,
            2 => Self::ReadyForFault,
            3 => Self::ExceptionRecorded,
            4 => Self::StepDone,
            5 => Self::Done,
            6 => Self::ExceptionTaken,
            0xff => Self::Fatal,
            _ => return None,
        })
    }
}

/// `arg` of [`Event::Fatal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FatalReason {
    /// `Params::magic` or `Params::abi_version` did not match.
    BadParams = 1,
    /// An exception was taken outside any step (recorded with `step == NO_STEP`).
    UnexpectedException = 2,
    /// An exception was taken while the exception handler itself was running.
    NestedException = 3,
    /// PSCI SYSTEM_OFF returned.
    SystemOffReturned = 4,
    /// The payload panicked (a bug in the payload).
    Panic = 5,
    /// PSCI CPU_OFF returned (a vCPU other than vCPU 0 could not power down).
    CpuOffReturned = 6,
    /// PSCI CPU_ON refused to start another vCPU (neither success nor ALREADY_ON).
    CpuOnFailed = 7,
}

impl FatalReason {
    /// Decodes a wire code.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::BadParams,
            2 => Self::UnexpectedException,
            3 => Self::NestedException,
            4 => Self::SystemOffReturned,
            5 => Self::Panic,
            6 => Self::CpuOffReturned,
            7 => Self::CpuOnFailed,
            _ => return None,
        })
    }
}

/// One doorbell store, decoded. `event` stays raw so unknown codes are data, not panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Doorbell {
    /// Raw [`Event`] code.
    pub event: u16,
    /// Step index.
    pub step: u16,
    /// Event-specific argument.
    pub arg: u32,
}

impl Doorbell {
    /// A doorbell for `event`.
    pub const fn new(event: Event, step: u16, arg: u32) -> Self {
        Self {
            event: event as u16,
            step,
            arg,
        }
    }

    /// The value the guest stores.
    pub const fn encode(self) -> u64 {
        self.event as u64 | (self.step as u64) << 16 | (self.arg as u64) << 32
    }

    /// Splits a stored value into its fields.
    pub const fn decode(value: u64) -> Self {
        Self {
            event: value as u16,
            step: (value >> 16) as u16,
            arg: (value >> 32) as u32,
        }
    }

    /// The event, if the code is known.
    pub const fn kind(self) -> Option<Event> {
        Event::from_code(self.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let d = Doorbell::new(Event::ExceptionRecorded, 3, 0xdead_beef);
        assert_eq!(d.encode(), 0xdead_beef_0003_0003);
        assert_eq!(Doorbell::decode(d.encode()), d);
        assert_eq!(d.kind(), Some(Event::ExceptionRecorded));
    }

    #[test]
    fn unknown_codes_are_data() {
        assert_eq!(Doorbell::decode(0x77).kind(), None);
        assert_eq!(FatalReason::from_code(99), None);
        assert_eq!(
            FatalReason::from_code(2),
            Some(FatalReason::UnexpectedException)
        );
    }
}
