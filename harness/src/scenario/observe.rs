//! The guest's side of an [`Outcome`](super::Outcome): a vCPU's payload report (the
//! `ras_guest_abi` contract, read from guest memory by whoever can reach it) turned into a
//! [`GuestReport`]. Pure, and the same for every VMM that boots the payload.

use ras_guest_abi::mailbox::{acpi_found, State, NO_STEP};
use ras_guest_abi::Report;

use super::hex::Hex;
use super::outcome::{
    code_address_name, ExceptionTaken, GuestReport, GuestState, RecordRead, SerrorWait,
};
use super::spec::GuestException;

impl GuestReport {
    /// What vCPU `vcpu`'s report `r` says. A report whose magic is not the payload's says
    /// nothing: the vCPU never started.
    pub fn from_report(vcpu: u8, r: &Report) -> Self {
        if r.magic != ras_guest_abi::REPORT_MAGIC {
            return Self {
                vcpu,
                state: GuestState::NotStarted,
                exceptions: Vec::new(),
                serror_wait: None,
            };
        }
        let kept = (r.exception_count as usize).min(r.records.len());
        let running = State::from_code(r.state) == Some(State::Running);
        let exceptions = r.records[..kept]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let step = u32::try_from(e.step).ok().filter(|_| e.step != NO_STEP);
                let cper = &e.cper;
                let record = (cper.found & acpi_found::RECORD != 0).then(|| {
                    let copied = (cper.copied_len as usize).min(cper.bytes.len());
                    RecordRead::new(
                        &cper.bytes[..copied],
                        cper.record_len,
                        cper.found & acpi_found::ACKED != 0,
                    )
                });
                ExceptionTaken {
                    kind: GuestException::from_esr(e.esr),
                    vector_offset: Hex(e.vector_offset),
                    esr: Hex(e.esr),
                    far: Hex(e.far),
                    elr: Hex(e.elr),
                    elr_at: step
                        .and_then(|s| r.steps.get(s as usize))
                        .and_then(|at| code_address_name(e.elr, at)),
                    spsr: Hex(e.spsr),
                    isr: Hex(e.isr),
                    step,
                    // The VM ended in the handler, before the guest looked for a record.
                    unfinished: running && i + 1 == kept && cper.found == 0,
                    record,
                    access_to_vector_ns: step.and_then(|s| {
                        let before = *r.counter_before.get(s as usize).filter(|&&b| b != 0)?;
                        let ticks = e.cntvct.checked_sub(before)?;
                        let ns = (u128::from(ticks) * 1_000_000_000)
                            .checked_div(u128::from(r.cntfrq))?;
                        u64::try_from(ns).ok()
                    }),
                }
            })
            .collect();
        let serror_wait = (r.serror.ran != 0).then(|| SerrorWait {
            isr: Hex(r.serror.isr_masked),
            disr: (r.serror.esb_executed != 0).then_some(Hex(r.serror.disr)),
        });
        Self {
            vcpu,
            state: match State::from_code(r.state) {
                Some(State::Done) => GuestState::Done,
                Some(State::Fatal) => GuestState::Fatal,
                Some(State::Running) => GuestState::Running,
                Some(State::NotStarted) | None => GuestState::NotStarted,
            },
            exceptions,
            serror_wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ras_guest_abi::mailbox::{ExceptionRecord, RecordRead as AbiRecordRead};

    fn report() -> Report {
        Report {
            magic: ras_guest_abi::REPORT_MAGIC,
            state: State::Done as u32,
            ..Report::default()
        }
    }

    #[test]
    fn each_exception_keeps_the_record_read_at_it() {
        let mut r = report();
        let mut read = AbiRecordRead {
            found: acpi_found::RECORD | acpi_found::ACKED,
            block_status: 1,
            record_len: 600,
            copied_len: 3,
            ..AbiRecordRead::default()
        };
        read.bytes[..3].copy_from_slice(&[1, 2, 3]);
        r.records[0] = ExceptionRecord {
            vector_offset: 0x200,
            esr: 0x9600_0410,
            step: 0,
            cper: read,
            ..ExceptionRecord::default()
        };
        r.records[1] = ExceptionRecord {
            vector_offset: 0x380,
            esr: 0xbe00_0811,
            step: NO_STEP,
            ..ExceptionRecord::default()
        };
        r.exception_count = 2;
        let g = GuestReport::from_report(1, &r);
        assert_eq!((g.vcpu, g.state), (1, GuestState::Done));
        let [first, second] = g.exceptions.as_slice() else {
            panic!("{g:?}")
        };
        assert_eq!((first.kind, first.step), (GuestException::Sea, Some(0)));
        let rec = first.record.as_ref().unwrap();
        assert_eq!(
            (rec.acked, rec.length, &rec.hex.0[..]),
            (true, 600, &[1, 2, 3][..])
        );
        assert!(rec.decoded.get("error").is_some(), "3 bytes do not decode");
        assert_eq!((second.kind, second.step), (GuestException::Serror, None));
        assert_eq!(second.record, None);
        assert_eq!(g.serror_wait, None);
    }

    #[test]
    fn an_exception_the_vm_ended_in_is_unfinished() {
        let mut r = report();
        r.state = State::Running as u32;
        r.records[0].esr = 0x9200_0410;
        r.records[1].esr = 0x9200_0410;
        r.exception_count = 2;
        let unfinished = |r: &Report| {
            let g = GuestReport::from_report(0, r);
            g.exceptions
                .iter()
                .map(|e| e.unfinished)
                .collect::<Vec<_>>()
        };
        // Only the last, with no walk of its own, while the guest was running.
        assert_eq!(unfinished(&r), [false, true]);
        r.records[1].cper.found = acpi_found::RSDP;
        assert_eq!(unfinished(&r), [false, false]);
        r.records[1].cper.found = 0;
        r.state = State::Done as u32;
        assert_eq!(unfinished(&r), [false, false]);
    }

    #[test]
    fn the_time_from_the_access_to_the_vector_is_on_the_guest_counter() {
        let mut r = report();
        r.cntfrq = 62_500_000; // 16 ns a tick
        r.counter_before[1] = 1_000;
        r.records[0] = ExceptionRecord {
            step: 1,
            cntvct: 1_000 + 625,
            ..ExceptionRecord::default()
        };
        // Outside every step, and a counter read before the access: no time.
        r.records[1] = ExceptionRecord {
            step: NO_STEP,
            cntvct: 5_000,
            ..ExceptionRecord::default()
        };
        r.records[2] = ExceptionRecord {
            step: 1,
            cntvct: 999,
            ..ExceptionRecord::default()
        };
        r.exception_count = 3;
        let times = |r: &Report| {
            let g = GuestReport::from_report(0, r);
            g.exceptions
                .iter()
                .map(|e| e.access_to_vector_ns)
                .collect::<Vec<_>>()
        };
        assert_eq!(times(&r), [Some(10_000), None, None]);
        r.cntfrq = 0;
        assert_eq!(times(&r), [None, None, None]);
    }

    #[test]
    fn a_report_without_the_magic_says_the_vcpu_never_started() {
        let mut r = report();
        r.exception_count = 3;
        r.magic = 0;
        let g = GuestReport::from_report(0, &r);
        assert_eq!((g.state, g.exceptions.len()), (GuestState::NotStarted, 0));
    }

    #[test]
    fn the_serror_wait_has_disr_only_after_an_esb() {
        let mut r = report();
        r.serror.ran = 1;
        r.serror.isr_masked = 0x100;
        r.serror.disr = 0x8000_0811;
        let g = GuestReport::from_report(0, &r);
        assert_eq!(
            g.serror_wait,
            Some(SerrorWait {
                isr: Hex(0x100),
                disr: None
            })
        );
        r.serror.esb_executed = 1;
        let g = GuestReport::from_report(0, &r);
        assert_eq!(g.serror_wait.unwrap().disr, Some(Hex(0x8000_0811)));
    }
}
