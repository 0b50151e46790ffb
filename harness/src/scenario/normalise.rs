//! What a snapshot of a run keeps: the outcome with only what varies between runs and host
//! kernels normalised, each rule checked before it is applied, so that one baseline holds
//! on every kernel and a change of behaviour still shows as a diff. Used by the scenario
//! trials (snapshots/scenarios/) and by the baselines of other VMMs (snapshots/vmm/,
//! [`vmm_baseline`]); the run report keeps the raw values.
//!
//! The rules:
//! - the poisoning thread's own BUS_MCEERR_AR, which Linux sends from about 6.11 (seen on
//!   6.12, not on 6.1, docs/ras-facts.md §1), is checked against the kernel version (one
//!   per `madvise-hwpoison` fault that poisons a page no earlier fault did, or none: on a
//!   16 KiB host two 4 KiB target pages can share one, [`super::page_size::poison_unit`])
//!   and left out;
//! - a signal's `si_addr_lsb` of one host base page (14 on a 16 KiB host, where KVM signals
//!   PAGE_SHIFT, docs/ras-facts.md §2) is written as on a 4 KiB host, 12: scenarios are
//!   written for one ([`super::page_size`]), and a base page is a base page;
//! - ESR_EL1 keeps bits \[31:0\], as the judge compares them, once bits \[63:32\] are checked
//!   to be 0 or the sign extension Linux 6.1 adds (seen 0xffffffff96000010, §3);
//! - signals are sorted by thread, code and address, and the VMM's injections by vCPU
//!   (errors on several vCPUs at once arrive in any order);
//! - ELR_EL1 is shown by the name the guest reported for it (`"access"`, `"target"`,
//!   `"ready"`, `"unmask+0x4"`: [`super::code_address_name`]), which is exactly as strict
//!   and does not move when the payload's code does; a raw value stays raw.

use serde_json::{json, Value};

use super::outcome::Outcome;
use super::page_size::LSB_4K;
use super::spec::{Method, Scenario, SignalCode};
use crate::formats::esr::Esr;
use crate::vmm::log::VmmLog;

/// The snapshot of a run of `s` on a host kernel whose release is `kernel_release`
/// (`uname -r`) and whose base pages are `page_size` bytes:
/// `{ "observed": ..., "vmm_log": { "injections", "records_written" } }`.
///
/// # Errors
///
/// A rule's check failed: the message says which and what was seen.
pub fn snapshot(
    s: &Scenario,
    observed: &Outcome,
    log: &VmmLog,
    kernel_release: &str,
    page_size: usize,
) -> Result<Value, String> {
    let mut o = observed.clone();
    drop_poisoner_signals(s, &mut o, kernel_release, page_size)?;
    let base_page = page_size.trailing_zeros();
    for h in &mut o.host_signals {
        if u32::from(h.lsb) == base_page {
            h.lsb = LSB_4K;
        }
    }
    keep_esr_low_half(&mut o)?;
    drop_timings(&mut o);
    o.host_signals.sort_by(|a, b| {
        (&a.thread, a.code, a.gpa.map(|g| g.0)).cmp(&(&b.thread, b.code, b.gpa.map(|g| g.0)))
    });
    let mut injections = log.injections.clone();
    // Stable: one vCPU's injections keep their order.
    injections.sort_by_key(|i| i.vcpu);
    let mut observed = serde_json::to_value(&o).map_err(|e| e.to_string())?;
    name_elr(&mut observed);
    Ok(json!({
        "observed": observed,
        "vmm_log": { "injections": injections, "records_written": log.records.len() },
    }))
}

/// The baseline of a run of `s` on a VMM other than the reference: `{ "observed": ...,
/// "conformance": [...] }`, the outcome normalised as above. Such a VMM is a process of its
/// own whose signals the harness does not see (`host_signals` is empty) and whose account
/// is not read, so only the ESR and ELR rules apply.
///
/// # Errors
///
/// An ESR whose upper half is neither 0 nor a sign extension.
pub fn vmm_baseline(
    observed: &Outcome,
    conformance: &[crate::conformance::Finding],
) -> Result<Value, String> {
    let mut o = observed.clone();
    keep_esr_low_half(&mut o)?;
    drop_timings(&mut o);
    let mut observed = serde_json::to_value(&o).map_err(|e| e.to_string())?;
    name_elr(&mut observed);
    Ok(json!({ "observed": observed, "conformance": conformance }))
}

/// `(major, minor)` of a kernel release such as `6.12.48+deb13-arm64`; 0 for what does not
/// parse.
pub fn kernel_version(release: &str) -> (u32, u32) {
    let mut v = release
        .trim()
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0))
}

fn drop_poisoner_signals(
    s: &Scenario,
    o: &mut Outcome,
    release: &str,
    page_size: usize,
) -> Result<(), String> {
    let signals_poisoner = kernel_version(release) >= (6, 11);
    let unit = super::page_size::poison_unit(s.guest.backing, page_size);
    let mut poisoned = Vec::new();
    let mut madvise = 0;
    // In the scenario's order: the first fault on a page poisons it.
    for f in s.faults.iter().filter(|f| f.method != Method::SoftOffline) {
        let page = f.gpa() / unit;
        if !poisoned.contains(&page) {
            poisoned.push(page);
            madvise += usize::from(f.method == Method::MadviseHwpoison);
        }
    }
    let own = |h: &super::HostSignal| h.thread == "vmm" && h.code == SignalCode::Ar.si_code();
    let on_vmm = o.host_signals.iter().filter(|h| own(h)).count();
    let want = if signals_poisoner { madvise } else { 0 };
    if on_vmm != want {
        return Err(format!(
            "kernel {}: the poisoning thread got {on_vmm} BUS_MCEERR_AR, expected {want}",
            release.trim()
        ));
    }
    o.host_signals.retain(|h| !own(h));
    Ok(())
}

fn keep_esr_low_half(o: &mut Outcome) -> Result<(), String> {
    for g in &mut o.guest {
        for e in &mut g.exceptions {
            let esr = Esr::from_raw(e.esr.0);
            if esr.high32() != 0 && !esr.is_sign_extended() {
                return Err(format!(
                    "vcpu{} ESR_EL1 {}: bits [63:32] are neither 0 nor a sign extension",
                    g.vcpu, e.esr
                ));
            }
            e.esr.0 = esr.canonical().raw();
        }
    }
    Ok(())
}

/// Times differ from run to run: they are measurements, not outcomes.
fn drop_timings(o: &mut Outcome) {
    for g in &mut o.guest {
        for e in &mut g.exceptions {
            e.access_to_vector_ns = None;
        }
    }
}

/// Each exception's `elr` replaced by its `elr_at` name, where it has one.
fn name_elr(observed: &mut Value) {
    let exceptions = observed["guest"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter_map(|g| g["exceptions"].as_array_mut())
        .flatten();
    for e in exceptions.filter_map(Value::as_object_mut) {
        if let Some(name) = e.remove("elr_at") {
            e.insert("elr".to_owned(), name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::SigbusCode;
    use crate::scenario::{load, ExceptionTaken, GuestException, GuestReport, GuestState, Hex};
    use crate::scenario::{HostSignal, VmmEnd};
    use std::path::Path;

    const AR: SigbusCode = SigbusCode::MceerrAr;

    fn outcome(esr: u64, signals: &[(&str, SigbusCode)]) -> Outcome {
        Outcome {
            vmm_end: VmmEnd::Completed,
            host_signals: signals
                .iter()
                .map(|&(thread, code)| HostSignal {
                    code,
                    lsb: 12,
                    gpa: Some(Hex(0x8000_0000)),
                    thread: thread.into(),
                })
                .collect(),
            guest: vec![GuestReport {
                vcpu: 0,
                state: GuestState::Done,
                exceptions: vec![ExceptionTaken {
                    kind: GuestException::Sea,
                    vector_offset: Hex(0x200),
                    esr: Hex(esr),
                    far: Hex(0),
                    elr: Hex(0x4000_1234),
                    elr_at: Some("access".into()),
                    spsr: Hex(0x3c5),
                    isr: Hex(0),
                    step: Some(0),
                    unfinished: false,
                    record: None,
                    access_to_vector_ns: None,
                }],
                serror_wait: None,
            }],
            console: Vec::new(),
        }
    }

    fn scenario() -> Scenario {
        load(Path::new("../scenarios/acpi-el1-load-emulated.json")).unwrap()
    }

    #[test]
    fn the_poisoners_own_ar_depends_on_the_kernel_and_is_checked() {
        let s = scenario();
        let with = outcome(0x9600_0410, &[("vcpu0", AR), ("vmm", AR)]);
        let without = outcome(0x9600_0410, &[("vcpu0", AR)]);
        let log = VmmLog::default();
        let a = snapshot(&s, &with, &log, "6.12.48+deb13-arm64", 4096).unwrap();
        let b = snapshot(&s, &without, &log, "6.1.0-37-arm64", 4096).unwrap();
        assert_eq!(a, b, "the same baseline on 6.12 and 6.1");
        assert!(snapshot(&s, &without, &log, "6.12.48", 4096)
            .unwrap_err()
            .contains("got 0 BUS_MCEERR_AR, expected 1"));
        assert!(snapshot(&s, &with, &log, "6.1.0", 4096)
            .unwrap_err()
            .contains("got 1 BUS_MCEERR_AR, expected 0"));
        assert_eq!(kernel_version("7.2.13-arm64-16k"), (7, 2));
    }

    #[test]
    fn target_pages_sharing_a_16k_host_page_make_one_poisoner_ar() {
        // Faults on target pages 0 and 1: two host pages of 4 KiB, one of 16 KiB.
        let mut s = load(Path::new("../scenarios/dtb-2vcpu-simultaneous.json")).unwrap();
        s.faults[1].page = 1;
        let log = VmmLog::default();
        let vcpus = [("vcpu0", AR), ("vcpu1", AR)];
        let one = outcome(0x9200_0410, &[vcpus[0], vcpus[1], ("vmm", AR)]);
        let two = outcome(0x9200_0410, &[vcpus[0], vcpus[1], ("vmm", AR), ("vmm", AR)]);
        assert_eq!(
            snapshot(&s, &one, &log, "7.2.13", 16384),
            snapshot(&s, &two, &log, "7.2.13", 4096)
        );
        assert!(snapshot(&s, &two, &log, "7.2.13", 16384)
            .unwrap_err()
            .contains("got 2 BUS_MCEERR_AR, expected 1"));
    }

    #[test]
    fn a_base_page_lsb_is_written_as_on_a_4k_host() {
        let s = scenario();
        let log = VmmLog::default();
        let mut o = outcome(0x9600_0410, &[("vcpu0", AR), ("vmm", AR)]);
        let on_4k = snapshot(&s, &o, &log, "7.2", 4096).unwrap();
        o.host_signals.iter_mut().for_each(|h| h.lsb = 14);
        assert_eq!(snapshot(&s, &o, &log, "7.2", 16384).unwrap(), on_4k);
        // 14 on a 4 KiB host is no base page: it stays.
        let kept = snapshot(&s, &o, &log, "7.2", 4096).unwrap();
        assert_eq!(kept["observed"]["host_signals"][0]["lsb"], 14);
    }

    #[test]
    fn esr_keeps_its_low_half_only_after_a_sign_extension() {
        let s = scenario();
        let log = VmmLog::default();
        let signals = [("vcpu0", AR)];
        let v = snapshot(
            &s,
            &outcome(0xffff_ffff_9600_0010, &signals),
            &log,
            "6.1",
            4096,
        )
        .unwrap();
        let e = &v["observed"]["guest"][0]["exceptions"][0];
        assert_eq!(
            (&e["esr"], &e["elr"]),
            (&json!("0x96000010"), &json!("access"))
        );
        assert!(e.get("elr_at").is_none());
        let junk = snapshot(&s, &outcome(0x1_9600_0010, &signals), &log, "6.1", 4096).unwrap_err();
        assert!(junk.contains("neither 0 nor a sign extension"), "{junk}");
    }
}
