//! The watchdog: no guest can hang the harness. After a deadline it kicks the vCPU
//! ([`super::Kicker::kick`]) and repeats the kick until the vCPU is gone, so KVM_RUN returns
//! EINTR and the run loop reports [`super::Stop::Kicked`].

use super::{Error, Kicker, Result, Vcpu};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Between repeated kicks (the vCPU may be between two KVM_RUNs when one lands).
const KICK_INTERVAL: Duration = Duration::from_millis(50);

/// Kicks a vCPU if it is still running when the timeout expires; stops on drop.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    kicker: Kicker,
}

impl Watchdog {
    /// Arms a watchdog on `vcpu` for `timeout`.
    pub fn start(vcpu: &Vcpu, timeout: Duration) -> Result<Self> {
        let kicker = vcpu.kicker()?;
        let (stop, rx) = mpsc::channel::<()>();
        let kicked = kicker.clone();
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
            kicker,
        })
    }

    /// Whether it has kicked.
    pub fn fired(&self) -> bool {
        self.kicker.fired()
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
