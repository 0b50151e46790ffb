//! The watchdog: no guest can hang the harness. After a deadline it sets the vCPU's
//! `immediate_exit` and signals the vCPU thread (SIGRTMIN, whose handler does nothing),
//! so KVM_RUN returns EINTR and the run loop reports [`super::Stop::Kicked`]
//! (firecracker's kick, Documentation/virt/kvm/api.rst "immediate_exit").

use super::{Error, Result, Vcpu};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

/// Between repeated kicks (the vCPU may be between two KVM_RUNs when one lands).
const KICK_INTERVAL: Duration = Duration::from_millis(50);

/// What a kick needs: the vCPU's `kvm_run.immediate_exit` and the thread running it.
#[derive(Debug)]
pub(super) struct KickTarget {
    /// `immediate_exit` (0 once the vCPU is gone) and the pthread_t in KVM_RUN, if any,
    /// both as integers (pthread_t is a pointer on musl, which is not Send).
    inner: Mutex<(usize, Option<usize>)>,
    fired: AtomicBool,
}

impl KickTarget {
    pub(super) fn new(immediate_exit: *mut u8) -> Self {
        Self {
            inner: Mutex::new((immediate_exit as usize, None)),
            fired: AtomicBool::new(false),
        }
    }

    pub(super) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub(super) fn detach(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner = (0, None);
    }

    /// Marks the calling thread as the one in KVM_RUN until the guard drops.
    pub(super) fn running_on_this_thread(&self) -> RunningGuard<'_> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(me as usize);
        RunningGuard(self)
    }

    fn kick(&self) {
        self.fired.store(true, Ordering::SeqCst);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != 0 {
            // SAFETY: non-zero means the Vcpu (and its kvm_run mapping) is alive: Vcpu's
            // Drop detaches under this same lock before the fd closes.
            unsafe { std::ptr::write_volatile(inner.0 as *mut u8, 1) };
        }
        if let Some(thread) = inner.1 {
            // SAFETY: `thread` is in run_until_stop (the guard clears it, under this lock,
            // before that returns), so it is alive; SIGRTMIN has a handler installed.
            unsafe {
                libc::pthread_kill(thread as libc::pthread_t, vmm_sys_util::signal::SIGRTMIN())
            };
        }
    }
}

pub(super) struct RunningGuard<'a>(&'a KickTarget);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.inner.lock().unwrap_or_else(|p| p.into_inner()).1 = None;
    }
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(
            vmm_sys_util::signal::SIGRTMIN(),
            on_kick,
        )
        .map_err(|e| Error::sys("sigaction(SIGRTMIN)", e));
    });
    result
}

/// Kicks a vCPU if it is still running when the timeout expires; stops on drop.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    target: Arc<KickTarget>,
}

impl Watchdog {
    /// Arms a watchdog on `vcpu` for `timeout`.
    pub fn start(vcpu: &Vcpu, timeout: Duration) -> Result<Self> {
        install_kick_handler()?;
        let target = vcpu.kick_target();
        let (stop, rx) = mpsc::channel::<()>();
        let kicked = Arc::clone(&target);
        let thread = std::thread::Builder::new()
            .name(format!("watchdog-vcpu{}", vcpu.id()))
            .spawn(move || {
                let mut wait = timeout;
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(wait) {
                    kicked.kick();
                    wait = KICK_INTERVAL;
                }
            })
            .map_err(|e| Error::sys("spawn watchdog", e))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            target,
        })
    }

    /// Whether it has kicked.
    pub fn fired(&self) -> bool {
        self.target.fired()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
