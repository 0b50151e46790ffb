//! One vCPU thread of the [machine](super::machine): the run loop as an explicit state
//! machine (firecracker's `vstate/vcpu.rs` style), each state a method returning the next.
//!
//! ```text
//! Running --ReadyForFault--> AtDoorbell --Resume--> Running
//!    |                           |--Notify(AO)--> Handling
//!    |--EINTR, this thread's AR--> Handling --injected--> Held? --> Running
//!    |--SystemOff / Kicked / Halt--> Ended
//! ```

use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use super::handler::MemoryError;
use super::machine::{lock, Shared, TICK};
use super::order::Until;
use super::ExecError;
use crate::fault::sigbus;
use crate::kvm::{RunState, Stop, Vcpu, Watchdog};

/// vCPU thread -> VMM thread.
pub(super) enum Msg {
    /// The guest rang ReadyForFault for this step (the MMIO is already completed); the
    /// vCPU waits for a [`Command`].
    Ready { vcpu: u8, step: u16 },
    /// A fault was notified while the VMM thread holds a vCPU: check the holds now.
    Notified,
    /// The thread ends.
    Exited { vcpu: u8, how: Ended },
}

/// How a vCPU thread ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The guest powered the VM off.
    SystemOff,
    /// The machine stopped it (the VM stopped, powered off, or the run ended).
    Halted,
    /// Its watchdog fired.
    Timeout,
    /// The harness failed.
    Error(String),
}

/// VMM thread -> a vCPU thread waiting at its doorbell.
#[derive(Clone, Copy, Debug)]
pub(super) enum Command {
    Resume,
    Halt,
    /// Act on this early-kill BUS_MCEERR_AO (`on_ao: notify`).
    Notify(MemoryError),
}

/// Where a vCPU thread is.
enum State {
    /// About to enter (or back in) KVM_RUN.
    Running,
    /// At a ReadyForFault doorbell, waiting for the VMM thread.
    AtDoorbell,
    /// Acting on a memory error, on this thread.
    Handling(MemoryError),
    /// Notified, waiting until the scenario's order lets it run on.
    Held(Until),
    /// Done.
    Ended(Ended),
}

/// One vCPU thread, from its first KVM_RUN to its end.
struct Thread<'a, 'm> {
    sh: &'a Shared<'m>,
    id: u8,
    tid: i32,
    vcpu: Vcpu,
    run: RunState,
    /// Kicks the vCPU if it runs too long; stops when the thread ends.
    _watchdog: Watchdog,
    tx: &'a Sender<Msg>,
    rx: &'a Receiver<Command>,
}

/// The body of vCPU thread `id`; tells the VMM thread how it ended.
pub(super) fn run(
    sh: &Shared<'_>,
    id: u8,
    vcpu: Vcpu,
    timeout: Duration,
    tx: &Sender<Msg>,
    rx: &Receiver<Command>,
) {
    let how = match Watchdog::start(&vcpu, timeout) {
        Ok(watchdog) => {
            // Known before the first fault, so the SIGBUS path makes no gettid call.
            let tid = sigbus::gettid();
            lock(&sh.ctl).tids.insert(tid, format!("vcpu{id}"));
            let mut t = Thread {
                sh,
                id,
                tid,
                vcpu,
                run: RunState::default(),
                _watchdog: watchdog,
                tx,
                rx,
            };
            let mut state = State::Running;
            loop {
                state = match t.step(state) {
                    Ok(State::Ended(how)) => break how,
                    Ok(next) => next,
                    Err(e) => break Ended::Error(e.to_string()),
                };
            }
        }
        Err(e) => Ended::Error(e.to_string()),
    };
    let _ = tx.send(Msg::Exited { vcpu: id, how });
}

impl Thread<'_, '_> {
    fn step(&mut self, state: State) -> Result<State, ExecError> {
        match state {
            State::Running => self.running(),
            State::AtDoorbell => Ok(self.at_doorbell()),
            State::Handling(error) => self.handling(&error),
            State::Held(until) => Ok(self.held(until)),
            State::Ended(how) => Ok(State::Ended(how)),
        }
    }

    fn running(&mut self) -> Result<State, ExecError> {
        let stop = self
            .vcpu
            .run_until_stop(&mut self.run)
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        Ok(match stop {
            Stop::ReadyForFault { step } => {
                // Retire the doorbell store now, so that an injection written while the
                // vCPU waits does not lose its first instruction (docs/ras-facts.md §3).
                self.vcpu
                    .complete_mmio()
                    .map_err(|e| ExecError::Failed(e.to_string()))?;
                self.tx
                    .send(Msg::Ready {
                        vcpu: self.id,
                        step,
                    })
                    .map_err(|_| ExecError::Failed("the VMM thread is gone".into()))?;
                State::AtDoorbell
            }
            Stop::Interrupted => self.interrupted(),
            Stop::SystemOff => State::Ended(Ended::SystemOff),
            Stop::Kicked => State::Ended(Ended::Timeout),
            other => {
                return Err(ExecError::Failed(format!(
                    "vCPU {}: unexpected stop {other:?}",
                    self.id
                )))
            }
        })
    }

    /// KVM_RUN returned EINTR: this thread's SIGBUS, a stray signal, or the machine
    /// interrupting it at the end.
    fn interrupted(&mut self) -> State {
        let mut ctl = lock(&self.sh.ctl);
        if ctl.stopped.is_some() || ctl.vm_off || ctl.halt {
            return State::Ended(Ended::Halted);
        }
        ctl.collect(&self.sh.handler);
        match ctl.take_ar(self.tid) {
            Some(error) => State::Handling(error),
            // A stray EINTR (a signal that was not this vCPU's SIGBUS): run on.
            None => State::Running,
        }
    }

    fn at_doorbell(&mut self) -> State {
        match self.rx.recv() {
            Ok(Command::Resume) => State::Running,
            Ok(Command::Halt) | Err(_) => State::Ended(Ended::Halted),
            Ok(Command::Notify(error)) => State::Handling(error),
        }
    }

    /// Handles `error` on this thread with no lock held, then records what was done.
    fn handling(&mut self, error: &MemoryError) -> Result<State, ExecError> {
        let sh = self.sh;
        let handled = sh
            .handler
            .on_memory_error(&sh.m.vm, &self.vcpu, self.id, error, &mut ())?;
        let stopped = handled.stop.is_some();
        let mut ctl = lock(&sh.ctl);
        let notified = ctl.handled(self.id, handled.record, handled.injection, handled.stop);
        if notified {
            sh.wake(&ctl, self.tx);
        }
        if stopped {
            return Ok(State::Ended(Ended::Halted));
        }
        Ok(
            match ctl.order.hold_after_notify(self.id).filter(|_| notified) {
                Some(until) => State::Held(until),
                None => State::Running,
            },
        )
    }

    /// Waits, on the machine's condition variable, until `until` holds.
    fn held(&mut self, until: Until) -> State {
        let sh = self.sh;
        let mut ctl = lock(&sh.ctl);
        while !sh.satisfied(&ctl, until) {
            if ctl.halt || ctl.stopped.is_some() {
                return State::Ended(Ended::Halted);
            }
            ctl.waiting += 1;
            ctl = sh
                .changed
                .wait_timeout(ctl, TICK)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            ctl.waiting -= 1;
        }
        State::Running
    }
}
