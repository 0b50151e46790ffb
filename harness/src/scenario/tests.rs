//! Loading the real scenario files and the bad ones, and the rules in between.

use std::path::{Path, PathBuf};

use rstest::rstest;

use super::*;
use crate::kvm::Cap;
use crate::testutil::snapshot_settings;

/// Every file under scenarios/ loads, validates, and is named after its file.
#[rstest]
fn every_scenario_file_loads(#[files("../scenarios/**/*.json")] path: PathBuf) {
    let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Some(s.name.as_str()),
        path.file_stem().and_then(|n| n.to_str())
    );
    assert!(
        !s.description.is_empty(),
        "{}: say what it tests",
        path.display()
    );
}

/// The whole directory loads at once too: names are unique and the order is sorted.
#[test]
fn scenario_directory_loads_sorted() {
    let all = load_all(&[Path::new("../scenarios")]).unwrap_or_else(|errs| {
        panic!(
            "{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(all.len() >= 8);
    let paths: Vec<&PathBuf> = all.iter().map(|(p, _)| p).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
}

/// Each bad file on its own is rejected (the duplicate-name pair is only bad together).
#[rstest]
fn every_bad_file_is_rejected(#[files("tests/bad-scenarios/*.json")] path: PathBuf) {
    assert!(load(&path).is_err(), "{} loaded", path.display());
}

/// The messages a user sees for each kind of mistake, all gathered by one load_all.
#[test]
fn bad_scenario_messages() {
    let errors = load_all(&[Path::new("tests/bad-scenarios")]).expect_err("all bad");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    // One error per file, plus the duplicate name; nothing stops at the first bad file.
    let files = std::fs::read_dir("tests/bad-scenarios")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(errors.len(), files + 1, "{text:#?}");
    snapshot_settings("scenario")
        .bind(|| insta::assert_snapshot!("bad_scenarios", text.join("\n")));
}

#[test]
fn a_missing_path_and_an_empty_directory_are_errors() {
    let dir = std::env::temp_dir().join(format!("ras-harness-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let errors = load_all(&[dir.as_path(), Path::new("no/such/file.json")]).unwrap_err();
    std::fs::remove_dir(&dir).unwrap();
    assert!(
        matches!(errors[0], ScenarioError::NoScenarios { .. }),
        "{errors:?}"
    );
    assert!(
        matches!(errors[1], ScenarioError::Read { .. }),
        "{errors:?}"
    );
}

#[test]
fn a_file_given_twice_is_loaded_once() {
    let f = Path::new("../scenarios/dtb-stop.json");
    let all = load_all(&[f, f]).unwrap();
    assert_eq!(all.len(), 1);
}

/// A scenario's `ar`/`ao` are the kernel's BUS_MCEERR_AR/AO and nothing else.
#[test]
fn signal_codes_are_the_memory_error_si_codes() {
    use crate::fault::SigbusCode;
    assert_eq!(SignalCode::Ar.si_code(), SigbusCode::MceerrAr);
    assert_eq!(SignalCode::Ao.si_code(), SigbusCode::MceerrAo);
    for code in [SignalCode::Ar, SignalCode::Ao] {
        assert_eq!(SignalCode::from_si_code(code.si_code()), Some(code));
    }
    assert_eq!(SignalCode::from_si_code(SigbusCode::from_raw(3)), None);
    assert_eq!(SignalCode::from_si_code(SigbusCode::from_raw(-6)), None);
}

/// The smallest valid scenario: every default, shown so a change of default is a decision.
#[test]
fn defaults() {
    let s = parse(
        Path::new("min.json"),
        r#"{"firmware": "acpi", "faults": [{}], "expect": {"outcome": "guest-notified"}}"#,
        "min",
    )
    .unwrap();
    assert_eq!(s.name, "min");
    assert_eq!(s.guest, Guest::default());
    assert_eq!(s.vmm, Vmm::default());
    assert_eq!(
        s.faults,
        [Fault {
            method: Method::MadviseHwpoison,
            page: 0,
            vcpu: 0,
            when: When::AtReady
        }]
    );
    snapshot_settings("scenario").bind(|| {
        insta::assert_json_snapshot!("defaults", s);
    });
}

fn base() -> Scenario {
    parse(
        Path::new("base.json"),
        r#"{"firmware": "acpi", "faults": [{}], "expect": {"outcome": "guest-notified"}}"#,
        "base",
    )
    .unwrap()
}

fn fields(s: &Scenario) -> Vec<String> {
    validate(s).into_iter().map(|i| i.field).collect()
}

#[test]
fn two_and_four_vcpus_with_errors_on_different_vcpus_validate() {
    for n in [2u8, 4] {
        let mut s = base();
        s.guest.vcpus = n;
        s.faults = (0..n)
            .map(|v| Fault {
                vcpu: v,
                page: u32::from(v),
                ..s.faults[0].clone()
            })
            .collect();
        assert_eq!(fields(&s), Vec::<String>::new());
    }
}

#[test]
fn second_error_rules() {
    let mut s = base();
    s.faults.push(Fault {
        when: When::BeforeAck,
        page: 1,
        ..s.faults[0].clone()
    });
    // One vCPU acknowledges before its next access: before-ack needs another vCPU.
    assert_eq!(fields(&s), ["faults[1].when"]);
    s.guest.vcpus = 2;
    s.faults[1].vcpu = 1;
    assert!(fields(&s).is_empty());
    s.faults[0].when = When::AfterAck;
    assert_eq!(fields(&s), ["faults[0].when"]);
    s.faults[0].when = When::AtReady;
    s.faults[1].when = When::AfterAck;
    s.guest.ack = false;
    assert_eq!(fields(&s), ["faults[1].when"]);
}

#[test]
fn ao_notify_needs_early_kill_and_allows_no_access() {
    let mut s = base();
    s.guest.access = Access::None;
    assert_eq!(fields(&s), ["expect.outcome"]);
    s.vmm.on_ao = OnAo::Notify;
    assert_eq!(fields(&s), ["vmm.on_ao"]);
    s.vmm.mce_kill = MceKill::Early;
    assert!(fields(&s).is_empty());
}

#[test]
fn serror_esr_only_with_serror_and_a_masked_serror_may_stay_pending() {
    let mut s = base();
    s.vmm.serror_esr = Some(Hex(0x811));
    assert_eq!(fields(&s), ["vmm.serror_esr"]);
    s.vmm.on_memory_error = OnMemoryError::Serror;
    s.expect.guest_exception = Some(GuestException::None);
    assert_eq!(fields(&s), ["expect.guest_exception"]);
    s.guest.serror_masked = true;
    assert_eq!(fields(&s), ["guest.serror_masked"]);
    s.guest.access = Access::None;
    // With no access only an early-kill AO acted on at once can reach the guest.
    s.vmm.mce_kill = MceKill::Early;
    s.vmm.on_ao = OnAo::Notify;
    assert!(fields(&s).is_empty());
    s.guest.serror_masked = false;
    s.guest.esb = true;
    assert_eq!(fields(&s), ["guest.esb", "expect.guest_exception"]);
}

#[test]
fn duplicate_masked_caps_and_dtb_records_are_rejected() {
    let mut s = base();
    s.vmm.mask_caps = vec![Cap::ArmInjectExtDabt, Cap::ArmInjectExtDabt];
    s.firmware = Firmware::Dtb;
    s.expect.cper = Some(CperExpectation::All(ExpectedCper::Recorded));
    assert_eq!(fields(&s), ["vmm.mask_caps[1]", "expect.cper"]);
}

#[test]
fn cper_fault_by_fault_needs_one_entry_per_fault() {
    let mut s = base();
    s.expect.cper = Some(CperExpectation::PerFault(vec![
        ExpectedCper::Consumed,
        ExpectedCper::None,
    ]));
    assert_eq!(fields(&s), ["expect.cper"]);
    s.expect.cper = Some(CperExpectation::PerFault(vec![ExpectedCper::Consumed]));
    assert!(fields(&s).is_empty());
}

#[test]
fn isr_and_disr_need_the_masked_wait_that_reads_them() {
    let mut s = base();
    s.expect.isr = Some(Hex(0x100));
    s.expect.disr = Some(Hex(0x8000_0811));
    assert_eq!(fields(&s), ["expect.isr", "expect.disr"]);
    s.guest.serror_masked = true;
    assert!(fields(&s).contains(&"expect.disr".to_owned()));
}

#[test]
fn cper_is_a_string_or_one_string_per_fault_and_typos_name_the_values() {
    let text = |cper: &str| {
        format!(
            r#"{{"firmware":"acpi","faults":[{{"page":0}},{{"page":1,"when":"after-ack"}}],
                "expect":{{"outcome":"guest-notified","cper":{cper}}}}}"#
        )
    };
    let s = parse(Path::new("t.json"), &text(r#"["consumed","none"]"#), "t").unwrap();
    assert_eq!(
        s.expect.cper,
        Some(CperExpectation::PerFault(vec![
            ExpectedCper::Consumed,
            ExpectedCper::None
        ]))
    );
    let s = parse(Path::new("t.json"), &text(r#""recorded""#), "t").unwrap();
    assert_eq!(
        s.expect.cper,
        Some(CperExpectation::All(ExpectedCper::Recorded))
    );
    for bad in [r#""consumd""#, r#"["consumed","nope"]"#] {
        let e = parse(Path::new("t.json"), &text(bad), "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expect.cper")
                && e.contains("expected one of `none`, `recorded`, `consumed`"),
            "{e}"
        );
    }
    let e = parse(Path::new("t.json"), &text("3"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("an array of them, one per fault"), "{e}");
}

#[test]
fn requirements_follow_the_configuration() {
    let mut s = base();
    s.vmm.sea = SeaVia::KvmExtDabt;
    let r = requirements(&s);
    assert_eq!(r.caps, [Cap::VcpuEvents, Cap::ArmInjectExtDabt]);
    assert!(r.root && r.memory_failure && !r.hard_offline_page);

    // Masking 178 is what the scenario tests: it is no longer required.
    s.vmm.mask_caps = vec![Cap::ArmInjectExtDabt];
    assert_eq!(requirements(&s).caps, [Cap::VcpuEvents]);

    s.guest.backing = Backing::Hugetlb1G;
    s.guest.memory_mib = 2048;
    s.guest.ras = false;
    s.faults[0].method = Method::HardOffline;
    let r = requirements(&s);
    assert_eq!(r.hugetlb, Some((1024, 2)));
    let host = HostSupport {
        kvm: true,
        root: true,
        memory_failure: true,
        hugetlb_1g_free: 1,
        caps: vec![41, 158, 178],
        ..HostSupport::default()
    };
    assert_eq!(
        r.unmet(&host),
        [
            "no /sys/devices/system/memory/hard_offline_page",
            "needs 2 free 1 GiB hugetlb pages, the host has 1",
            "KVM cannot hide FEAT_RAS (ID_AA64PFR0_EL1 is not writable)",
        ]
    );
    let host = HostSupport {
        hard_offline_page: true,
        hugetlb_1g_free: 2,
        writable_id_regs: true,
        ..host
    };
    assert!(r.unmet(&host).is_empty());
}

#[test]
fn serror_with_esr_needs_cap_158() {
    let mut s = base();
    s.vmm.on_memory_error = OnMemoryError::Serror;
    s.vmm.serror_esr = Some(Hex(0x811));
    let unmet = requirements(&s).unmet(&HostSupport {
        kvm: true,
        root: true,
        memory_failure: true,
        caps: vec![41],
        ..HostSupport::default()
    });
    assert_eq!(unmet, ["KVM lacks KVM_CAP_ARM_INJECT_SERROR_ESR (158)"]);
}

/// Without a KVM this user can open, that is the reason, and its capabilities are not
/// listed as missing one by one.
#[test]
fn no_kvm_is_one_reason() {
    let mut s = base();
    s.vmm.on_memory_error = OnMemoryError::Serror;
    s.vmm.serror_esr = Some(Hex(0x811));
    let unmet = requirements(&s).unmet(&HostSupport {
        root: true,
        memory_failure: true,
        ..HostSupport::default()
    });
    assert_eq!(
        unmet,
        ["no arm64 KVM this user can open (/dev/kvm missing or not permitted)"]
    );
}

#[test]
fn code_addresses_are_named_exactly_or_by_a_short_offset() {
    let at = ras_guest_abi::StepAddresses {
        target: 0x8000_2000,
        access: 0x4000_12b8,
        ready: 0x4000_1298,
        unmask: 0x4000_12a0,
    };
    let name = |a| code_address_name(a, &at);
    assert_eq!(name(0x4000_12b8).as_deref(), Some("access"));
    assert_eq!(name(0x8000_2000).as_deref(), Some("target"));
    assert_eq!(name(0x4000_1298).as_deref(), Some("ready"));
    // Nearest below wins: 0x12a4 is unmask+4, not ready+0xc.
    assert_eq!(name(0x4000_12a4).as_deref(), Some("unmask+0x4"));
    assert_eq!(name(0x4000_12b8 + 0x14), None);
    assert_eq!(name(0x4000_1000), None);
    // An address the step never had (0) names nothing.
    let none = ras_guest_abi::StepAddresses::default();
    assert_eq!(code_address_name(0, &none), None);
}

// ---------------------------------------------------------------------------------------
// Untrusted input: properties of what a scenario file and a guest can put in front of
// the harness. A scenario names no path; junk from a guest or a child never panics.
// ---------------------------------------------------------------------------------------

mod untrusted_input {
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;
    use rstest::rstest;

    use super::super::*;
    use crate::runner::{interpret, ChildEnd};

    fn acpi_store() -> (PathBuf, String) {
        let path = PathBuf::from("../scenarios/acpi-store.json");
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    /// Every string a scenario holds, with the key it sits under.
    fn strings<'a>(key: &str, v: &'a serde_json::Value, out: &mut Vec<(String, &'a str)>) {
        match v {
            serde_json::Value::String(s) => out.push((key.to_owned(), s)),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(key, x, out)),
            serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| strings(k, x, out)),
            _ => {}
        }
    }

    /// Outside `description`, no string of a loaded scenario contains a path separator, and
    /// the name is a plain token: nothing in a scenario can name a file for the harness to
    /// read or write (the runner writes `--out` only: safety::run_writes_only_its_out_file).
    #[rstest]
    fn a_scenario_holds_no_path(#[files("../scenarios/**/*.json")] path: PathBuf) {
        let s = load(&path).unwrap();
        let value = serde_json::to_value(&s).unwrap();
        let mut all = Vec::new();
        strings("", &value, &mut all);
        for (key, s) in all.into_iter().filter(|(k, _)| k != "description") {
            assert!(
                !s.contains('/') && !s.contains('\\') && s != "..",
                "{}: {key} = {s:?}",
                path.display()
            );
        }
        assert!(valid_name(&s.name), "{}", s.name);
    }

    /// Every scenario file that poisons is gated on root and on memory-failure support:
    /// on a host without either, it is a skip whose reason says which (decided by
    /// `runner::exec_line` before a VM exists; the non-root case end to end is
    /// safety::without_root_a_poisoning_scenario_skips_with_the_reason).
    #[rstest]
    fn a_poisoning_scenario_needs_root_and_memory_failure(
        #[files("../scenarios/**/*.json")] path: PathBuf,
    ) {
        let s = load(&path).unwrap();
        let r = requirements(&s);
        let everything = HostSupport {
            kvm: true,
            root: true,
            memory_failure: true,
            hard_offline_page: true,
            thp: true,
            hugetlb_2m_free: 1 << 20,
            hugetlb_1g_free: 1 << 10,
            caps: vec![41, 158, 178, 245],
            writable_id_regs: true,
        };
        assert_eq!(
            r.unmet(&everything),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        let no_mf = HostSupport {
            memory_failure: false,
            ..everything.clone()
        };
        let no_root = HostSupport {
            root: false,
            ..everything
        };
        if s.faults.is_empty() {
            assert!(r.unmet(&no_mf).is_empty() && r.unmet(&no_root).is_empty());
        } else {
            assert_eq!(r.unmet(&no_mf), ["the kernel lacks CONFIG_MEMORY_FAILURE"]);
            assert_eq!(r.unmet(&no_root), ["poisoning needs root (CAP_SYS_ADMIN)"]);
        }
    }

    proptest! {
        /// An extra key anywhere (say `"out": "/etc/passwd"`) is refused: the schema denies
        /// unknown fields at every level, so a file cannot smuggle a path in.
        #[test]
        fn an_unknown_key_is_refused_at_every_level(
            key in "[a-z_]{1,12}",
            at in 0usize..5,
            value in "/[a-z/]{0,20}",
        ) {
            let (path, text) = acpi_store();
            let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let object = match at {
                0 => &mut json,
                1 => &mut json["guest"],
                2 => &mut json["vmm"],
                3 => &mut json["faults"][0],
                _ => &mut json["expect"],
            };
            let object = object.as_object_mut().unwrap();
            prop_assume!(!object.contains_key(&key));
            object.insert(key.clone(), value.into());
            let parsed = parse(&path, &json.to_string(), "x");
            prop_assert!(parsed.is_err(), "{key} accepted at level {at}");
        }

        /// A guest's report page full of junk: the record decodes, every exception kind
        /// is derived from any ESR, and CPER bytes read back from guest memory decode or
        /// say why, without a panic.
        #[test]
        fn junk_report_and_cper_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), size_of::<ras_guest_abi::Report>()),
            cper in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let r = ras_guest_abi::Report::from_bytes(&bytes).unwrap();
            for e in &r.records {
                let _ = GuestException::from_esr(e.esr);
            }
            for v in 0..2 {
                let g = GuestReport::from_report(v, &r);
                prop_assert!(g.exceptions.len() <= r.records.len());
            }
            let c = RecordRead::new(&cper, cper.len() as u32, false);
            let _ = c.physical_addresses();
            prop_assert_eq!(c.hex.0, cper);
        }

        /// Whatever a child leaves behind (any stdout, any stderr, any status), the parent
        /// turns it into a verdict without a panic; a child that printed nothing it can
        /// parse is an error, never a pass.
        #[test]
        fn any_child_output_is_a_verdict(
            stdout in ".{0,200}",
            stderr in proptest::collection::vec(any::<char>(), 0..3000),
            code in proptest::option::of(any::<i32>()),
            signal in proptest::option::of(1i32..64),
        ) {
            let s = load(Path::new("../scenarios/acpi-store.json")).unwrap();
            let end = ChildEnd {
                code,
                signal,
                timed_out: None,
                kernel_log: None,
                stdout: stdout.clone(),
                stderr: stderr.into_iter().collect(),
            };
            let verdict = interpret(&s, &end, &crate::sut::Sut::Reference).verdict;
            if signal.is_some() || !stdout.contains('{') {
                prop_assert!(matches!(verdict, Verdict::Error(_)), "{verdict:?}");
            }
        }
    }
}

/// A Linux guest is one process with one page on a QEMU as it comes: what it cannot do or
/// tell is refused field by field, and a payload has no console to expect.
#[test]
fn a_linux_guest_takes_only_what_it_can_tell() {
    let mut s = load(Path::new("../scenarios/linux/el0-load-acpi.json")).unwrap();
    assert_eq!(fields(&s), Vec::<String>::new());
    s.guest.vcpus = 2;
    s.guest.access = Access::Store;
    s.faults[0].page = 3;
    s.vmm.on_memory_error = OnMemoryError::Stop;
    s.expect.esr = Some(Hex(0x9600_0410));
    assert_eq!(
        fields(&s),
        ["guest.vcpus", "vmm", "guest.access", "faults", "expect.esr"]
    );
    let mut p = base();
    p.expect.console = Some(ConsoleExpectation::default());
    assert_eq!(fields(&p), ["expect.console"]);
}
