//! Scenarios: the conformance matrix as data. One JSON file per scenario (see
//! scenarios/README.md), read with [`load_all`], which parses and validates every file
//! before anything runs; [`requirements`] says what the host must offer; the runner turns a
//! scenario into an [`Outcome`] and [`judge`] compares it with the scenario's `expect`.
//!
//! Nothing here touches KVM: it builds and tests on any host.

mod hex;
mod judge;
mod load;
pub mod normalise;
mod observe;
mod outcome;
pub mod page_size;
mod requirements;
mod spec;
mod validate;

pub use hex::{Hex, HexBytes};
pub use judge::{judge, judge_on};
pub use load::{load, load_all, parse, ScenarioError};
pub use outcome::{
    code_address_name, ExceptionTaken, GuestReport, GuestState, HostSignal, Mismatch, Outcome,
    RecordRead, SerrorWait, Verdict, VerdictKind, VmmEnd,
};
pub use requirements::{requirements, HostSupport, Requirements};
pub use spec::{
    Access, Backing, ConsoleExpectation, CperExpectation, CperProfile, El, Expect, ExpectedCper,
    ExpectedOutcome, ExpectedSignal, Fault, Firmware, Guest, GuestException, MceKill, Method, OnAo,
    OnMemoryError, Os, Scenario, SeaVia, SignalCode, Vmm, When,
};
pub use validate::{
    valid_name, validate, Invalid, MEMORY_MIB, SERROR_ISS_MAX, TARGET_PAGE_SIZE, VCPUS,
};

/// The JSON spelling of a unit enum value (`"kvm-ext-dabt"`), for messages.
pub(crate) fn json_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::from("?"),
    }
}

#[cfg(test)]
mod tests;
