//! What can go wrong between a host binary and the emulated host's exit status.

use std::fmt;

/// A failure of the runner itself, as opposed to the guest binary's own exit status.
#[derive(Debug)]
pub enum Error {
    /// Bad settings: an unknown kernel name, a malformed timeout, a missing executable.
    Config(String),
    /// Installing QEMU or fetching and checking a kernel failed.
    Setup(String),
    /// Building a target for aarch64 failed.
    Build(String),
    /// QEMU did not start or ended with an error of its own.
    Qemu { message: String, tail: String },
    /// The guest kernel panicked before the binary's exit status was seen.
    KernelPanic { tail: String },
    /// The guest's init could not set up or start the binary.
    Init { message: String, tail: String },
    /// The guest ran past the timeout and was stopped; `cpus`: where its CPUs were.
    Timeout {
        secs: u64,
        cpus: String,
        tail: String,
    },
    /// The guest kernel reported a lockup, then printed nothing for `secs`, and was stopped.
    Hung {
        lockup: String,
        secs: u64,
        cpus: String,
        tail: String,
    },
    /// The guest ended without reporting an exit status.
    NoStatus { tail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_tail = |f: &mut fmt::Formatter<'_>, what: &str, tail: &str| {
            write!(f, "{what}")?;
            if tail.trim().is_empty() {
                write!(f, " (the console printed nothing)")
            } else {
                write!(f, "; console tail:\n{tail}")
            }
        };
        match self {
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::Setup(m) => write!(f, "set-up: {m}"),
            Error::Build(m) => write!(f, "aarch64 build: {m}"),
            Error::Qemu { message, tail } => with_tail(f, &format!("QEMU: {message}"), tail),
            Error::KernelPanic { tail } => with_tail(f, "the guest kernel panicked", tail),
            Error::Init { message, tail } => with_tail(f, &format!("guest init: {message}"), tail),
            Error::Timeout { secs, cpus, tail } => {
                with_tail(
                    f,
                    &format!("timed out after {secs} s (set RAS_EMU_TIMEOUT to change)"),
                    tail,
                )?;
                write!(f, "\nits CPUs when it was stopped:\n{cpus}")
            }
            Error::Hung {
                lockup,
                secs,
                cpus,
                tail,
            } => {
                with_tail(
                    f,
                    &format!(
                        "the emulated host hung: its kernel reported \"{lockup}\" and its \
                         console then stayed silent for {secs} s"
                    ),
                    tail,
                )?;
                write!(f, "\nits CPUs when it was stopped:\n{cpus}")
            }
            Error::NoStatus { tail } => with_tail(
                f,
                "the guest stopped without reporting an exit status",
                tail,
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for set-up failures caused by I/O.
pub(crate) fn setup_io(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Setup(format!("{what}: {e}"))
}
