//! The calling thread's memory-error kill policy (`PR_MCE_KILL`): whether poison found in
//! memory it maps but has not touched is signalled at once (BUS_MCEERR_AO) or only when
//! touched (BUS_MCEERR_AR).

use std::io;

use super::sigbus::SigbusError;

/// `PR_MCE_KILL` (include/uapi/linux/prctl.h).
const PR_MCE_KILL: libc::c_int = 33;
/// Its second argument: `PR_MCE_KILL_CLEAR` (back to the default), `PR_MCE_KILL_SET`
/// (include/uapi/linux/prctl.h).
const PR_MCE_KILL_CLEAR: libc::c_ulong = 0;
const PR_MCE_KILL_SET: libc::c_ulong = 1;
/// The policies: `PR_MCE_KILL_LATE`, `PR_MCE_KILL_EARLY`, `PR_MCE_KILL_DEFAULT`
/// (include/uapi/linux/prctl.h).
const PR_MCE_KILL_LATE: libc::c_ulong = 0;
const PR_MCE_KILL_EARLY: libc::c_ulong = 1;
const PR_MCE_KILL_DEFAULT: libc::c_ulong = 2;
/// `PR_MCE_KILL_GET` (include/uapi/linux/prctl.h).
const PR_MCE_KILL_GET: libc::c_int = 34;

/// Which process gets told about poison found in memory it maps but has not touched
/// (`PR_MCE_KILL`, include/uapi/linux/prctl.h; the policy is per thread: it sets
/// PF_MCE_PROCESS/PF_MCE_EARLY on the calling thread, and memory_failure() sends the AO
/// signal to a thread that has both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MceKill {
    /// `PR_MCE_KILL_EARLY`: SIGBUS BUS_MCEERR_AO as soon as the poison is found.
    Early,
    /// `PR_MCE_KILL_LATE`: no signal until the page is touched (then BUS_MCEERR_AR).
    Late,
    /// `PR_MCE_KILL_DEFAULT`: follow the vm.memory_failure_early_kill sysctl.
    Default,
}

/// Sets the calling thread's memory-error kill policy.
///
/// # Errors
///
/// [`SigbusError::Prctl`].
pub fn set_mce_kill(policy: MceKill) -> Result<(), SigbusError> {
    let (op, arg) = match policy {
        MceKill::Early => (PR_MCE_KILL_SET, PR_MCE_KILL_EARLY),
        MceKill::Late => (PR_MCE_KILL_SET, PR_MCE_KILL_LATE),
        MceKill::Default => (PR_MCE_KILL_CLEAR, 0),
    };
    // SAFETY: prctl with integer arguments only; arg4 and arg5 must be 0.
    let rc = unsafe { libc::prctl(PR_MCE_KILL, op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SigbusError::Prctl(io::Error::last_os_error()))
    }
}

/// The calling thread's memory-error kill policy (`PR_MCE_KILL_GET`).
///
/// # Errors
///
/// [`SigbusError::Prctl`], also for a value this code does not know.
pub fn mce_kill() -> Result<MceKill, SigbusError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            PR_MCE_KILL_GET,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match u64::try_from(rc).map(|v| v as libc::c_ulong) {
        Ok(PR_MCE_KILL_EARLY) => Ok(MceKill::Early),
        Ok(PR_MCE_KILL_LATE) => Ok(MceKill::Late),
        Ok(PR_MCE_KILL_DEFAULT) => Ok(MceKill::Default),
        Ok(other) => Err(SigbusError::Prctl(io::Error::other(format!(
            "PR_MCE_KILL_GET returned {other}"
        )))),
        Err(_) => Err(SigbusError::Prctl(io::Error::last_os_error())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mce_kill_policy_round_trips_on_this_thread() {
        // A fresh thread so the test runner's thread keeps its policy.
        std::thread::spawn(|| {
            set_mce_kill(MceKill::Early).unwrap();
            assert_eq!(mce_kill().unwrap(), MceKill::Early);
            set_mce_kill(MceKill::Late).unwrap();
            assert_eq!(mce_kill().unwrap(), MceKill::Late);
            set_mce_kill(MceKill::Default).unwrap();
            assert_eq!(mce_kill().unwrap(), MceKill::Default);
        })
        .join()
        .unwrap();
    }
}
