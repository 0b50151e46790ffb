//! The order a scenario puts its faults in, as a pure state machine the machine drives:
//! when each fault's page is poisoned (its `when`) and which vCPU waits for which after a
//! notification, so that "the second error before the ack" happens in the scenario's
//! order, not the scheduler's. No KVM here: it is tested on every host.
//!
//! - A vCPU at the `ReadyForFault` doorbell of a step that meets fault `i` is held until
//!   `i` may be poisoned: at once (`at-ready`), once fault `i - 1` is notified
//!   (`before-ack`), or once it is notified and the guest acknowledged its record
//!   (`after-ack`).
//! - A vCPU just notified of fault `i` is held while the next fault is a `before-ack` one
//!   on another vCPU that is not notified yet (so the guest cannot acknowledge first); the
//!   vCPU notified of a `before-ack` fault then waits until the guest acknowledged the
//!   previous record, so which of them reads the status block first is fixed too. (It
//!   cannot wait for the first vCPU to end: vCPU 0 powers off only after the others.)

use crate::scenario::{Scenario, When};

/// What a held vCPU waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Nothing: released at the next check.
    Now,
    /// Fault n has been notified to the guest.
    Notified(usize),
    /// Fault n has been notified and the guest acknowledged its record.
    Acked(usize),
}

/// What to do with a vCPU at its `ReadyForFault` doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtReady {
    /// Nothing to poison for this step (or it already is): let it run.
    Resume,
    /// Poison `fault`'s page once `after` holds, then let it run.
    Poison {
        /// The fault.
        fault: usize,
        /// When.
        after: Until,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct FaultState {
    poisoned: bool,
    notified: bool,
}

/// The faults' progress.
#[derive(Clone, Debug)]
pub struct Order<'s> {
    s: &'s Scenario,
    faults: Vec<FaultState>,
    /// Per vCPU, the fault each step meets (the plan's `step_faults`).
    steps: Vec<Vec<Option<usize>>>,
    /// The fault each vCPU is in the middle of (from its last `ReadyForFault`).
    current: Vec<Option<usize>>,
}

impl<'s> Order<'s> {
    /// The order of `s`, whose vCPU `v` meets fault `steps[v][n]` in step `n`.
    pub fn new(s: &'s Scenario, steps: Vec<Vec<Option<usize>>>) -> Self {
        Self {
            s,
            faults: vec![FaultState::default(); s.faults.len()],
            current: vec![None; steps.len()],
            steps,
        }
    }

    /// The faults poisoned before the first KVM_RUN.
    pub fn before_boot(&self) -> impl Iterator<Item = usize> + '_ {
        self.s
            .faults
            .iter()
            .enumerate()
            .filter(|(_, f)| f.when == When::BeforeBoot)
            .map(|(i, _)| i)
    }

    /// vCPU `vcpu` rang `ReadyForFault` for `step`.
    pub fn at_ready(&mut self, vcpu: u8, step: u16) -> AtReady {
        let fault = self
            .steps
            .get(usize::from(vcpu))
            .and_then(|steps| steps.get(usize::from(step)).copied())
            .flatten();
        let Some(i) = fault else {
            return AtReady::Resume;
        };
        self.current[usize::from(vcpu)] = Some(i);
        if self.faults[i].poisoned {
            return AtReady::Resume;
        }
        let after = match (self.s.faults[i].when, i.checked_sub(1)) {
            (When::BeforeAck, Some(prev)) => Until::Notified(prev),
            (When::AfterAck, Some(prev)) => Until::Acked(prev),
            _ => Until::Now,
        };
        AtReady::Poison { fault: i, after }
    }

    /// Fault `i`'s page is poisoned.
    pub fn poisoned(&mut self, i: usize) {
        self.faults[i].poisoned = true;
    }

    /// The fault vCPU `vcpu` is in the middle of.
    pub fn current(&self, vcpu: u8) -> Option<usize> {
        self.current.get(usize::from(vcpu)).copied().flatten()
    }

    /// vCPU `vcpu` was notified of its current fault (or the VM stopped for it).
    pub fn notified(&mut self, vcpu: u8) {
        if let Some(i) = self.current(vcpu) {
            self.faults[i].notified = true;
        }
    }

    /// Whether `until` holds; `acked` reads the guest's acknowledgement (the GHESv2
    /// read-ack register), asked only when it matters.
    pub fn satisfied(&self, until: Until, acked: impl FnOnce() -> bool) -> bool {
        let notified = |i: usize| self.faults.get(i).is_some_and(|f| f.notified);
        match until {
            Until::Now => true,
            Until::Notified(i) => notified(i),
            Until::Acked(i) => notified(i) && acked(),
        }
    }

    /// What vCPU `vcpu`, just notified, waits for before it runs on (module docs).
    pub fn hold_after_notify(&self, vcpu: u8) -> Option<Until> {
        let i = self.current(vcpu)?;
        let faults = &self.s.faults;
        if let Some(next) = faults.get(i + 1) {
            if next.when == When::BeforeAck && next.vcpu != vcpu && !self.faults[i + 1].notified {
                return Some(Until::Notified(i + 1));
            }
        }
        let prev = i.checked_sub(1)?;
        (faults[i].when == When::BeforeAck && faults[prev].vcpu != vcpu && self.s.guest.ack)
            .then_some(Until::Acked(prev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load;
    use std::path::Path;

    fn scenario(name: &str) -> Scenario {
        load(&Path::new("../scenarios").join(format!("{name}.json"))).unwrap()
    }

    fn order(s: &Scenario) -> Order<'_> {
        let steps = (0..s.guest.vcpus)
            .map(|v| s.faults_of(v).map(Some).collect())
            .collect();
        Order::new(s, steps)
    }

    /// vCPU 1's error comes while vCPU 0's record is unacknowledged: vCPU 1's page is
    /// poisoned only once vCPU 0 is notified, vCPU 0 is held until vCPU 1 is notified, and
    /// vCPU 1 runs on only once the guest acknowledged vCPU 0's record.
    #[test]
    fn second_error_before_the_ack() {
        let s = scenario("acpi-second-before-ack");
        let mut o = order(&s);
        assert_eq!(
            o.at_ready(0, 0),
            AtReady::Poison {
                fault: 0,
                after: Until::Now
            }
        );
        let second = o.at_ready(1, 0);
        assert_eq!(
            second,
            AtReady::Poison {
                fault: 1,
                after: Until::Notified(0)
            }
        );
        o.poisoned(0);
        assert!(!o.satisfied(Until::Notified(0), || unreachable!()));
        o.notified(0);
        assert_eq!(o.hold_after_notify(0), Some(Until::Notified(1)));
        assert!(o.satisfied(Until::Notified(0), || unreachable!()));
        o.poisoned(1);
        o.notified(1);
        assert!(o.satisfied(Until::Notified(1), || unreachable!()));
        assert_eq!(o.hold_after_notify(1), Some(Until::Acked(0)));
        assert!(!o.satisfied(Until::Acked(0), || false));
        assert!(o.satisfied(Until::Acked(0), || true));
    }

    /// The second error of one vCPU waits for the guest's acknowledgement of the first.
    #[test]
    fn after_ack_waits_for_the_acknowledgement() {
        let s = scenario("acpi-ack-then-second");
        let mut o = order(&s);
        assert_eq!(
            o.at_ready(0, 0),
            AtReady::Poison {
                fault: 0,
                after: Until::Now
            }
        );
        o.poisoned(0);
        o.notified(0);
        assert_eq!(o.hold_after_notify(0), None, "one vCPU: nobody to wait for");
        assert_eq!(
            o.at_ready(0, 1),
            AtReady::Poison {
                fault: 1,
                after: Until::Acked(0)
            }
        );
    }

    /// A guest that never acknowledges: vCPU 1 does not wait for an acknowledgement that
    /// never comes.
    #[test]
    fn a_guest_that_never_acknowledges_holds_nobody_for_it() {
        let s = scenario("acpi-never-ack-second");
        let mut o = order(&s);
        o.at_ready(0, 0);
        o.at_ready(1, 0);
        o.notified(0);
        o.notified(1);
        assert_eq!(o.hold_after_notify(1), None);
    }

    #[test]
    fn before_boot_faults_are_poisoned_first_and_resume_at_ready() {
        let s = scenario("before-boot");
        let mut o = order(&s);
        assert_eq!(o.before_boot().collect::<Vec<_>>(), [0]);
        o.poisoned(0);
        assert_eq!(o.at_ready(0, 0), AtReady::Resume);
        assert_eq!(o.current(0), Some(0));
        // A step with no fault (the control run's) and a step past the plan resume.
        let control = scenario("control-no-fault");
        let mut o = Order::new(&control, vec![vec![None]]);
        assert_eq!(o.at_ready(0, 0), AtReady::Resume);
        assert_eq!(o.at_ready(0, 7), AtReady::Resume);
        assert_eq!(o.current(0), None);
    }
}
