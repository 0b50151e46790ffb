//! Interrupting a vCPU thread in KVM_RUN: the one registry of which thread runs which vCPU,
//! used by the [`super::Watchdog`] (a stuck guest) and by a VMM ending a VM whose other
//! vCPUs sleep in KVM_RUN after PSCI CPU_OFF.
//!
//! A [`Kicker`] sends SIGRTMIN, whose handler does nothing, to the thread while (and only
//! while) it is inside [`super::Vcpu::run_until_stop`], so KVM_RUN returns EINTR
//! (Documentation/virt/kvm/api.rst, KVM_RUN: "-EINTR: an unmasked signal is pending"). A
//! signal that lands between two KVM_RUNs is lost; callers repeat it. `kvm_run.immediate_exit`
//! is not written from here: the vCPU thread holds the kvm_run mapping as `&mut` for the
//! whole KVM_RUN, so another thread may not write into it.

use super::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

/// The vCPU's side: which thread is in its KVM_RUN, and whether it was kicked.
#[derive(Debug, Default)]
pub(super) struct KickTarget {
    /// The pthread_t in `run_until_stop`, as an integer (a pointer on musl, not Send).
    running: Mutex<Option<usize>>,
    fired: AtomicBool,
}

/// A handle that interrupts one vCPU's KVM_RUN; cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct Kicker(Arc<KickTarget>);

impl KickTarget {
    pub(super) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Marks the calling thread as the one in KVM_RUN until the guard drops.
    pub(super) fn running_on_this_thread(&self) -> RunningGuard<'_> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *lock(&self.running) = Some(me as usize);
        RunningGuard(self)
    }

    fn signal(&self) {
        if let Some(thread) = *lock(&self.running) {
            // SAFETY: `thread` is inside run_until_stop (its guard clears it under this
            // lock before that returns), so the thread is alive; SIGRTMIN has a handler
            // (installed before any Kicker exists, see `Kicker::new`).
            unsafe { libc::pthread_kill(thread as libc::pthread_t, libc::SIGRTMIN()) };
        }
    }
}

impl Kicker {
    pub(super) fn new(target: Arc<KickTarget>) -> Result<Self> {
        install_handler()?;
        Ok(Self(target))
    }

    /// Interrupts KVM_RUN and makes the run loop stop with [`super::Stop::Kicked`] from
    /// now on: the watchdog's kick.
    pub fn kick(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.signal();
    }

    /// Interrupts KVM_RUN once: the run loop stops with [`super::Stop::Interrupted`],
    /// for the caller to decide what the vCPU does next.
    pub fn interrupt(&self) {
        self.0.signal();
    }

    /// Whether [`Kicker::kick`] was called.
    pub fn fired(&self) -> bool {
        self.0.fired()
    }
}

pub(super) struct RunningGuard<'a>(&'a KickTarget);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.running) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(libc::SIGRTMIN(), on_kick)
            .map_err(|e| Error::sys("sigaction(SIGRTMIN)", e));
    });
    result
}
