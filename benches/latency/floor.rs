//! The floor: what any memory-error delivery costs at least.
//!
//! - [`NullExit`]: the guest rings the doorbell in a loop (params flag DOORBELL_LOOP), so
//!   one `run_until_stop` is one full round trip: guest store -> KVM_EXIT_MMIO -> the VMM's
//!   exit handling -> KVM_RUN -> guest -> next store. Timed on the host around the call,
//!   and on the guest's counter between two rings (each ring carries CNTVCT_EL0's low 32
//!   bits).
//! - [`SignalTarget`]: a thread blocked in `pause()` or spinning; tgkill(SIGBUS) to it,
//!   timed from just before the call to the first clock read of the same SIGBUS recorder
//!   the vCPU path uses (ras_harness::fault::sigbus).
//! - [`ThreadHop`]: a message to a thread blocked in `recv` and its answer: what a VMM
//!   pays when the vCPU thread hands the decision to another thread and waits for it.

use crate::clock::{host_counter, Timeline};
use crate::guest::Guest;
use ras_guest_abi::mailbox::{flags, Access};
use ras_guest_abi::Params;
use ras_harness::fault::sigbus;
use ras_harness::kvm::Stop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// A guest in the doorbell loop.
pub struct NullExit {
    guest: Guest,
    timeline: Timeline,
    last_tick: Option<u32>,
}

/// One round trip, both ways of looking at it.
#[derive(Clone, Copy, Debug)]
pub struct RoundTrip {
    /// Host: the `run_until_stop` call.
    pub host_ns: u64,
    /// Guest: counter ticks between this ring and the previous one, as ns.
    pub guest_ns: Option<u64>,
}

impl NullExit {
    pub fn boot() -> Result<Self, String> {
        let p = Params::new(Access::None, 0, flags::DOORBELL_LOOP, &[]);
        let guest = Guest::boot(&p, |_| Ok(()))?;
        Ok(Self {
            guest,
            timeline: Timeline::calibrate(),
            last_tick: None,
        })
    }

    /// One round trip.
    pub fn round_trip(&mut self) -> Result<RoundTrip, String> {
        self.guest.state.doorbells.clear();
        let start = host_counter();
        let stop = self.guest.run()?;
        let host_ns = self
            .timeline
            .ticks_to_ns(host_counter().wrapping_sub(start));
        if !matches!(stop, Stop::ReadyForFault { .. }) {
            return Err(format!("doorbell loop: expected a ring, got {stop:?}"));
        }
        let tick = self.guest.state.doorbells.last().map(|d| d.arg);
        let guest_ns = match (self.last_tick, tick) {
            (Some(a), Some(b)) => Some(self.timeline.ticks_to_ns(u64::from(b.wrapping_sub(a)))),
            _ => None,
        };
        self.last_tick = tick;
        Ok(RoundTrip { host_ns, guest_ns })
    }
}

/// What the signalled thread does while it waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// In `pause()`: the signal has to wake it.
    Blocked,
    /// In a busy loop on another CPU: the signal has to interrupt it.
    Spinning,
}

/// A thread that receives SIGBUS and records it, nothing else.
pub struct SignalTarget {
    timeline: Timeline,
    tid: i32,
    waiting: Waiting,
    stop: Arc<AtomicBool>,
    /// Times the thread has gone (back) to waiting.
    waits: Arc<AtomicU64>,
    /// Signals delivered so far.
    delivered: std::cell::Cell<u64>,
    thread: Option<JoinHandle<()>>,
}

impl SignalTarget {
    pub fn start(waiting: Waiting) -> Result<Self, String> {
        sigbus::install().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let waits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let (s, w) = (Arc::clone(&stop), Arc::clone(&waits));
        let thread = std::thread::Builder::new()
            .name(format!("signal-{waiting:?}"))
            .spawn(move || {
                let _ = sigbus::unblock_sigbus();
                let _ = tx.send(sigbus::gettid());
                while !s.load(Ordering::Acquire) {
                    w.fetch_add(1, Ordering::AcqRel);
                    match waiting {
                        // SAFETY: pause only waits for a signal.
                        Waiting::Blocked => unsafe {
                            libc::pause();
                        },
                        Waiting::Spinning => {
                            while !s.load(Ordering::Relaxed) {
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let tid = rx.recv().map_err(|e| e.to_string())?;
        Ok(Self {
            timeline: Timeline::calibrate(),
            tid,
            waiting,
            stop,
            waits,
            delivered: std::cell::Cell::new(0),
            thread: Some(thread),
        })
    }

    /// One delivery: nanoseconds from just before tgkill to the handler's clock read.
    pub fn deliver(&self) -> Result<u64, String> {
        if self.waiting == Waiting::Blocked {
            self.wait_until_sleeping()?;
        }
        let _ = sigbus::take_events();
        let sent = self.timeline.counter_to_ns(host_counter());
        self.tgkill()?;
        loop {
            if let Some(e) = sigbus::take_events()
                .into_iter()
                .find(|e| e.tid == self.tid)
            {
                self.delivered.set(self.delivered.get() + 1);
                return Ok((i128::from(e.monotonic_ns) - sent).max(0) as u64);
            }
            std::hint::spin_loop();
        }
    }

    fn tgkill(&self) -> Result<(), String> {
        // SAFETY: tgkill with this process's id and a live thread of it (joined only in
        // drop); SIGBUS has the recorder installed, which returns for a sent signal.
        let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), self.tid, libc::SIGBUS) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("tgkill: {}", std::io::Error::last_os_error()))
        }
    }

    /// Waits until the thread is asleep in `pause()`: gone back to waiting after the last
    /// delivery (one wait more than deliveries) and in state S
    /// (/proc/self/task/TID/stat, field 3).
    fn wait_until_sleeping(&self) -> Result<(), String> {
        let path = format!("/proc/self/task/{}/stat", self.tid);
        loop {
            let back = self.waits.load(Ordering::Acquire) > self.delivered.get();
            let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            // The name in field 2 is parenthesised and may hold spaces: state follows ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            if back && state == Some('S') {
                return Ok(());
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for SignalTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                let _ = self.tgkill();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = thread.join();
        }
    }
}

/// A thread that answers every message: the hand-over between a vCPU thread and a VMM
/// thread, both blocked in `recv` in turn.
pub struct ThreadHop {
    timeline: Timeline,
    to: Option<mpsc::Sender<()>>,
    from: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ThreadHop {
    pub fn start() -> Result<Self, String> {
        let (to, rx) = mpsc::channel::<()>();
        let (tx, from) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hop".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            timeline: Timeline::calibrate(),
            to: Some(to),
            from,
            thread: Some(thread),
        })
    }

    /// One message there and its answer back, in nanoseconds.
    pub fn round_trip(&self) -> Result<u64, String> {
        let start = host_counter();
        self.to
            .as_ref()
            .ok_or("stopped")?
            .send(())
            .map_err(|_| "the hop thread is gone")?;
        self.from.recv().map_err(|_| "the hop thread is gone")?;
        Ok(self
            .timeline
            .ticks_to_ns(host_counter().wrapping_sub(start)))
    }
}

impl Drop for ThreadHop {
    fn drop(&mut self) {
        drop(self.to.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
