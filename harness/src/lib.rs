//! ras-harness: a fault-injection and RAS conformance harness for arm64 KVM.
//!
//! The harness boots tiny bare-metal aarch64 payloads under KVM, poisons their pages for
//! real, captures the host's SIGBUS, lets a VMM report the error to the guest (a CPER record
//! behind ACPI HEST/GHESv2, then an SEA or an SError) and judges, as a black box, what came
//! out: what the guest reported, what the host kernel signalled, how the VMM ended.
//!
//! The map, one concept per module, the pure ones first (they build and test on any host):
//! - [`formats`]: byte-exact codecs: CPER (with a model of what Linux does with a record),
//!   ESR_ELx, ACPI RSDP/XSDT/HEST, FDT.
//! - [`scenario`]: the scenario files (schema, loading, validation, what a host must offer),
//!   the black-box [`scenario::Outcome`], the judge, and the snapshot rules.
//! - [`conformance`]: the rules every VMM is judged by, each with its source.
//! - [`report`]: the run report as JSON, JUnit XML and a table, for one run or side by side
//!   for several host kernels or VMMs ([`report::SideBySide`]).
//! - [`payload`]: the guest payload image (built from guest-payloads/), and the device tree
//!   and bootargs the reference VMM boots it with.
//! - [`sut`]: the VMMs under test besides the reference: their `--vmm` names, command
//!   lines, and the driver that runs one as a process and observes it from outside.
//! - [`vmm`]: the reference VMM. Its decisions ([`vmm::policy`]), the fault order
//!   ([`vmm::order`]), the VM layout ([`vmm::plan`]), the exception entry ([`vmm::entry`]) and
//!   the GHESv2 protocol ([`vmm::ghes`]) are pure; the machine and the memory-error handler
//!   run on arm64.
//! - [`kvm`]: the thin KVM layer: VM, memory, register ids, vCPU, run loop, kicks, watchdog,
//!   booting the payload (ioctls on arm64 only; exit handling and caps everywhere).
//! - [`fault`]: poisoning guest pages for real, the SIGBUS that follows (its si_code,
//!   [`fault::SigbusCode`], everywhere), and which guest physical addresses it covers (the
//!   system calls on Linux only).
//! - [`host`]: what this host offers (kernel, KVM caps, memory failure, privileges).
//! - [`runner`]: one scenario per child process, a crash or hang an error verdict.
//!
//! A walk through the pure half: a scenario, what a run of it observed, the verdict.
//!
//! ```
//! use ras_harness::fault::SigbusCode;
//! use ras_harness::formats::cper::{memory_error_record, Profile, Severity};
//! use ras_harness::scenario::{self, ExceptionTaken, GuestException, GuestReport, GuestState};
//! use ras_harness::scenario::{Hex, HostSignal, Outcome, RecordRead, Verdict, VmmEnd};
//!
//! // 1. A row of the matrix: an EL1 load of a poisoned page, a QEMU-style SEA expected.
//! let s = scenario::load(std::path::Path::new("../scenarios/acpi-el1-load-emulated.json"))?;
//! let page = s.faults[0].gpa();
//!
//! // 2. What a VMM run showed: the kernel's AR on the vCPU thread, and the guest's report:
//! //    an SEA at +0x200 whose ACPI walk read (and acknowledged) a record for the page.
//! let record = memory_error_record(page, Severity::Recoverable, Profile::Qemu).encode();
//! let observed = Outcome {
//!     vmm_end: VmmEnd::Completed,
//!     host_signals: vec![HostSignal { code: SigbusCode::MceerrAr, lsb: 12, gpa: Some(Hex(page)), thread: "vcpu0".into() }],
//!     guest: vec![GuestReport {
//!         vcpu: 0,
//!         state: GuestState::Done,
//!         exceptions: vec![ExceptionTaken {
//!             kind: GuestException::Sea,
//!             vector_offset: Hex(0x200),
//!             esr: Hex(0x9600_0410),
//!             far: Hex(0),
//!             elr: Hex(0x4000_1000),
//!             elr_at: None,
//!             spsr: Hex(0x3c5),
//!             isr: Hex(0),
//!             step: Some(0),
//!             unfinished: false,
//!             record: Some(RecordRead::new(&record, record.len() as u32, true)),
//!             access_to_vector_ns: None,
//!         }],
//!         serror_wait: None,
//!     }],
//!     console: Vec::new(),
//! };
//!
//! // 3. The verdict: every expectation of the scenario is met.
//! assert_eq!(scenario::judge(&s, &observed), Verdict::Pass);
//!
//! // ... and a VMM that delivered KVM's ext_dabt syndrome instead fails, saying so.
//! let mut wrong = observed.clone();
//! wrong.guest[0].exceptions[0].esr = Hex(0x9600_0010);
//! let reason = scenario::judge(&s, &wrong).reason().unwrap();
//! assert_eq!(reason, "expect.esr: expected 0x96000410, observed vcpu0 0x96000010");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod conformance;
pub mod crash;
pub mod fault;
pub mod formats;
pub mod host;
pub mod kvm;
pub mod payload;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sut;
pub mod vmm;

#[cfg(test)]
pub(crate) mod testutil;
