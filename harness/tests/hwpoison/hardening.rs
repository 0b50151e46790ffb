//! Issue 7's guarantees, each as a trial that fails if it is broken (docs/safety.md names
//! them): nothing outside guest RAM is ever poisoned, a run without root says so before it
//! does anything, the runner writes only `--out`, one scenario cannot change another's
//! result; and the VMM's answer to what a guest controls (MMIO anywhere, junk doorbells,
//! PSCI with junk arguments, a guest that never exits, a vector table in unbacked memory):
//! a stop, an error or a kick, never a panic or a hang.
//!
//! The guest trials drive the VM directly with the `kvm` module and a few hand-written
//! instructions (encodings from the Arm ARM, C6.2), so they need no payload change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use libtest_mimic::{Completion, Failed, Trial};
use ras_guest_abi::map;
use ras_harness::fault::unpoison::hardware_corrupted_kib;
use ras_harness::fault::{GuestRanges, Method, PoisonError, Poisoner};
use ras_harness::kvm::regs::VBAR_EL1;
use ras_harness::kvm::{Backing, CoreReg, Mapping, RunState, Stop, Vcpu, Vm, Watchdog};
use ras_harness::runner::ExecLine;
use ras_harness::scenario::{self, When};
use ras_harness::vmm::{self, ExecError, Options};

pub fn trials() -> Vec<Trial> {
    let t = |name: &str, f: fn() -> Result<Completion, Failed>| {
        Trial::ignorable_test(format!("hardening::{name}"), f)
    };
    vec![
        t(
            "poisoner_refuses_every_address_outside_guest_ram",
            poisoner_refuses_every_address_outside_guest_ram,
        ),
        t(
            "vmm_refuses_a_fault_page_past_the_target_slot",
            vmm_refuses_a_fault_page_past_the_target_slot,
        ),
        t(
            "run_refuses_an_out_of_range_page_before_running_anything",
            run_refuses_an_out_of_range_page_before_running_anything,
        ),
        t(
            "without_root_a_poisoning_scenario_skips_with_the_reason",
            without_root_a_poisoning_scenario_skips_with_the_reason,
        ),
        t("run_writes_only_its_out_file", run_writes_only_its_out_file),
        t(
            "a_poisoning_scenario_does_not_change_the_next_ones_result",
            a_poisoning_scenario_does_not_change_the_next_ones_result,
        ),
        t(
            "a_hugetlb_run_gives_the_huge_page_back",
            a_hugetlb_run_gives_the_huge_page_back,
        ),
        t(
            "guest_mmio_anywhere_stops_with_its_address_and_size",
            guest_mmio_anywhere_stops_with_its_address_and_size,
        ),
        t(
            "guest_junk_doorbells_are_errors",
            guest_junk_doorbells_are_errors,
        ),
        t(
            "guest_psci_with_junk_arguments_is_answered_by_kvm",
            guest_psci_with_junk_arguments_is_answered_by_kvm,
        ),
        t(
            "guest_that_never_exits_is_kicked",
            guest_that_never_exits_is_kicked,
        ),
        t(
            "guest_faulting_in_an_unbacked_vector_table_is_kicked",
            guest_faulting_in_an_unbacked_vector_table_is_kicked,
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// What the harness promises the host.
// ---------------------------------------------------------------------------------------

fn scenarios() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "scenarios"]
        .iter()
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ras-hardening-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// HardwareCorrupted in kB, or a skip on a kernel without CONFIG_MEMORY_FAILURE.
fn corrupted() -> Result<u64, Completion> {
    hardware_corrupted_kib()
        .map_err(|e| Completion::ignored_with(format!("no HardwareCorrupted figure: {e}")))
}

/// Every address the harness did not register as guest RAM is refused before any system
/// call: its stack, its heap, a mapping of its own that is not guest RAM, the page just
/// past a registered range and the one just before it. HardwareCorrupted does not move and
/// every one of those pages is still readable.
fn poisoner_refuses_every_address_outside_guest_ram() -> Result<Completion, Failed> {
    let before = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    let page = ras_harness::fault::host_page_size();
    let guest = Mapping::new(Backing::Anonymous, 4 * page)?;
    let other = Mapping::new(Backing::Anonymous, 4 * page)?;
    let mut ranges = GuestRanges::new();
    // SAFETY: `guest` is a live mapping made as guest RAM; locals drop in reverse order,
    // so `ranges` (declared after it) is gone before the mapping is.
    unsafe { ranges.add(guest.as_ptr() as usize, guest.len()) }?;
    let stack = [0u8; 64];
    let heap = vec![0u8; 3 * page];
    let align = |a: usize| a / page * page;
    let outside = [
        ("stack", align(stack.as_ptr() as usize)),
        ("heap", align(heap.as_ptr() as usize + page)),
        ("unregistered mapping", other.as_ptr() as usize),
        ("page past guest RAM", guest.as_ptr() as usize + guest.len()),
        ("page before guest RAM", guest.as_ptr() as usize - page),
    ];
    let poisoner = Poisoner::new(&ranges);
    for (what, hva) in outside {
        for method in [
            Method::MadviseHwpoison,
            Method::HardOffline,
            Method::SoftOffline,
        ] {
            match poisoner.poison(hva, method) {
                Err(PoisonError::OutsideGuestRam { .. }) => {}
                other => return Err(format!("{what} {hva:#x} {method:?}: {other:?}").into()),
            }
        }
    }
    // Still mapped and unpoisoned: reading them would SIGBUS otherwise.
    assert_eq!(std::hint::black_box(&stack).iter().sum::<u8>(), 0);
    assert_eq!(
        std::hint::black_box(&heap)
            .iter()
            .map(|&b| b as u32)
            .sum::<u32>(),
        0
    );
    let mut buf = vec![0u8; other.len()];
    other.read(0, &mut buf)?;
    let after = hardware_corrupted_kib()?;
    assert_eq!(after, before, "HardwareCorrupted moved");
    println!(
        "{} addresses x 3 methods refused; HardwareCorrupted {after} kB",
        outside.len()
    );
    Ok(Completion::Completed)
}

/// The VMM computes the HVA of a fault from its page number. With validation bypassed and
/// a page one past the target slot, the run is refused at the poison call with a clear
/// error, and nothing is poisoned.
fn vmm_refuses_a_fault_page_past_the_target_slot() -> Result<Completion, Failed> {
    if !Path::new("/dev/kvm").exists() {
        return Ok(Completion::ignored_with("no /dev/kvm"));
    }
    let before = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    let mut s = scenario::load(&scenarios().join("acpi-store.json"))?;
    let slot = u64::from(s.guest.memory_mib) << 20;
    let page = u32::try_from(slot / scenario::TARGET_PAGE_SIZE)?;
    s.faults[0].page = page;
    assert_eq!(s.faults[0].gpa() - map::TARGET_BASE, slot);
    s.faults[0].when = When::BeforeBoot;
    match vmm::execute(&s, &Options::default()) {
        Err(ExecError::Failed(why)) if why.contains("refusing to poison") => {
            println!("refused: {why}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(hardware_corrupted_kib()?, before, "HardwareCorrupted moved");
    Ok(Completion::Completed)
}

/// Through the CLI, the same page is a validation error: exit 2, nothing run.
fn run_refuses_an_out_of_range_page_before_running_anything() -> Result<Completion, Failed> {
    let dir = scratch("range");
    let text = std::fs::read_to_string(scenarios().join("acpi-store.json"))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)?;
    json["faults"][0]["page"] = 1_000_000.into();
    let file = dir.join("far.json");
    std::fs::write(&file, json.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("run")
        .arg(&file)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("faults[0].page") && stderr.contains("nothing was run"),
        "{stderr}"
    );
    Ok(Completion::Completed)
}

/// `__exec` as an unprivileged user (uid/gid 65534): the scenario is a skip whose reason
/// names root, decided before any VM or poison call; HardwareCorrupted does not move.
fn without_root_a_poisoning_scenario_skips_with_the_reason() -> Result<Completion, Failed> {
    if !emuhost::is_root() {
        return Ok(Completion::ignored_with(
            "needs root to drop to another user",
        ));
    }
    let before = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    // A world-readable copy of the binary and the scenario: the originals may sit in a
    // directory only root can enter.
    let dir = scratch("nobody");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.join("ras-harness");
    std::fs::copy(env!("CARGO_BIN_EXE_ras-harness"), &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let file = dir.join("acpi-store.json");
    std::fs::copy(scenarios().join("acpi-store.json"), &file)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;

    use std::os::unix::process::CommandExt;
    let out = Command::new(&exe)
        .arg("__exec")
        .arg(&file)
        .current_dir(&dir)
        .uid(65534)
        .gid(65534)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: ExecLine = serde_json::from_str(stdout.trim())?;
    match line {
        ExecLine::Skip(why) if why.contains("root") => println!("skip: {why}"),
        other => return Err(format!("expected a skip naming root, got {other:?}").into()),
    }
    assert_eq!(hardware_corrupted_kib()?, before, "HardwareCorrupted moved");
    Ok(Completion::Completed)
}

/// Every file under `dir`, with its length and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.insert(e.path(), (meta.len(), mtime));
            }
        }
    }
    files
}

/// A run from a fresh working directory, on copies of two scenario files (one poisons):
/// afterwards the working directory, the scenario directory and the output directory hold
/// exactly what they held before, plus the `--out` file. (Scenario files cannot name a
/// path: the schema denies unknown fields and has no path-valued one; see
/// scenario::tests' property section.)
fn run_writes_only_its_out_file() -> Result<Completion, Failed> {
    let root = scratch("paths");
    let (cwd, input, output) = (root.join("cwd"), root.join("in"), root.join("out"));
    for d in [&cwd, &input, &output] {
        std::fs::create_dir_all(d)?;
    }
    for name in ["acpi-store.json", "dtb-stop.json"] {
        std::fs::copy(scenarios().join(name), input.join(name))?;
    }
    let before = tree(&root);
    let report = output.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .args(["run", "in", "--report", "json", "--out"])
        .arg(&report)
        .current_dir(&root)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut after = tree(&root);
    assert!(after.remove(&report).is_some(), "no report written");
    assert_eq!(after, before, "the run changed files besides --out");
    Ok(Completion::Completed)
}

fn run_json(args: &[&std::ffi::OsStr]) -> Result<serde_json::Value, Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_ras-harness"))
        .arg("run")
        .args(args)
        .args(["--report", "json"])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ras-harness run exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// One `ras-harness run` of a scenario that poisons (and gets a SIGBUS) then one that
/// does not: both pass, and the second observes exactly what it observes alone.
fn a_poisoning_scenario_does_not_change_the_next_ones_result() -> Result<Completion, Failed> {
    let dir = scenarios();
    let (poisons, clean) = (dir.join("acpi-store.json"), dir.join("dtb-stop.json"));
    let both = run_json(&[poisons.as_os_str(), clean.as_os_str()])?;
    let alone = run_json(&[clean.as_os_str()])?;
    let results = both["results"].as_array().ok_or("no results")?;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["verdict"], "pass", "{:#}", results[0]);
    assert!(
        !results[0]["observed"]["host_signals"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the first scenario must really poison: {:#}",
        results[0]
    );
    assert_eq!(results[1]["verdict"], "pass", "{:#}", results[1]);
    assert_eq!(
        results[1]["observed"], alone["results"][0]["observed"],
        "the second scenario saw something else after the first"
    );
    Ok(Completion::Completed)
}

// ---------------------------------------------------------------------------------------
// What a guest controls.
// ---------------------------------------------------------------------------------------

/// Hand-written A64 (Arm ARM C6.2; load/store "immediate, unsigned offset" with offset 0).
const STR_X2_X1: u32 = 0xf900_0022; // str  x2, [x1]
const STR_W2_X1: u32 = 0xb900_0022; // str  w2, [x1]
const STRH_W2_X1: u32 = 0x7900_0022; // strh w2, [x1]
const STRB_W2_X1: u32 = 0x3900_0022; // strb w2, [x1]
const LDR_X3_X1: u32 = 0xf940_0023; // ldr  x3, [x1]
const LDR_W3_X1: u32 = 0xb940_0023; // ldr  w3, [x1]
const LDRB_W3_X1: u32 = 0x3940_0023; // ldrb w3, [x1]
const STR_X0_X9: u32 = 0xf900_0120; // str  x0, [x9]
const HVC_0: u32 = 0xd400_0002; // hvc  #0
const B_SELF: u32 = 0x1400_0000; // b    .
const UDF_0: u32 = 0x0000_0000; // udf  #0

/// Where the code sits: the start of guest RAM.
const CODE: u64 = map::RAM_BASE;
/// An unbacked GPA the PSCI program stores its result to (an MMIO exit, not memory).
const PROBE: u64 = 0x1_0000_0000;
/// How long any guest trial may run before its watchdog kicks it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A one-vCPU VM with 1 MiB of RAM holding `code` at [`CODE`], PC there, and a GICv3.
fn vm_with_code(code: &[u32]) -> Result<(Vm, Vcpu), Completion> {
    if !Path::new("/dev/kvm").exists() {
        return Err(Completion::ignored_with("no /dev/kvm"));
    }
    let mut vm = Vm::new().expect("create VM");
    let ram = Mapping::new(Backing::Anonymous, 1 << 20).expect("map RAM");
    vm.add_memory(CODE, ram).expect("RAM memslot");
    let bytes: Vec<u8> = code.iter().flat_map(|i| i.to_le_bytes()).collect();
    vm.write_guest(CODE, &bytes).expect("load code");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    vcpu.set_core(CoreReg::Pc, CODE).expect("PC");
    vm.create_gic_v3(map::GIC_DIST_BASE, map::GIC_REDIST_BASE)
        .expect("GICv3");
    Ok((vm, vcpu))
}

/// xorshift64*, seeded from the clock (printed, so a failure can be replayed by hand).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        println!("seed {seed:#x}");
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs the one instruction at `CODE + 4 * index` with x1 = `addr`, x2 = `value`.
fn run_one(vcpu: &mut Vcpu, index: usize, addr: u64, value: u64) -> Stop {
    vcpu.set_core(CoreReg::Pc, CODE + 4 * index as u64).unwrap();
    vcpu.set_core(CoreReg::X(1), addr).unwrap();
    vcpu.set_core(CoreReg::X(2), value).unwrap();
    let stop = vcpu.run_until_stop(&mut RunState::default()).unwrap();
    // Retire the access before the next register write (docs/ras-facts.md §3).
    vcpu.complete_mmio().unwrap();
    stop
}

/// 200 loads and stores of every size, of random values, at random aligned GPAs no memslot
/// or in-kernel device covers (4 GiB to 512 GiB, inside the default 40-bit IPA space):
/// each is one `Stop::Mmio` naming exactly that access, and the vCPU keeps working.
fn guest_mmio_anywhere_stops_with_its_address_and_size() -> Result<Completion, Failed> {
    let code = [
        STR_X2_X1, STR_W2_X1, STRH_W2_X1, STRB_W2_X1, LDR_X3_X1, LDR_W3_X1, LDRB_W3_X1,
    ];
    let sizes = [8, 4, 2, 1, 8, 4, 1];
    let (_vm, mut vcpu) = match vm_with_code(&code) {
        Ok(v) => v,
        Err(skip) => return Ok(skip),
    };
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT)?;
    let mut rng = Rng::new();
    for _ in 0..200 {
        let index = (rng.next() % code.len() as u64) as usize;
        let len = sizes[index];
        let addr = ((1u64 << 32) + rng.next() % ((1 << 39) - (1 << 32))) / len * len;
        let stop = run_one(&mut vcpu, index, addr, rng.next());
        let want = Stop::Mmio {
            addr,
            write: index < 4,
            len: len as u32,
        };
        assert_eq!(stop, want, "instruction {index}");
    }
    Ok(Completion::Completed)
}

/// The doorbell is the guest's only channel to the VMM: an unknown event code, a 4-byte
/// store and a read are each an `Unexpected` stop that names what happened.
fn guest_junk_doorbells_are_errors() -> Result<Completion, Failed> {
    let (_vm, mut vcpu) = match vm_with_code(&[STR_X2_X1, STR_W2_X1, LDR_X3_X1]) {
        Ok(v) => v,
        Err(skip) => return Ok(skip),
    };
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT)?;
    let mut rng = Rng::new();
    for (index, value, says) in [
        // Event code 0xffff is no event (guest-abi doorbell.rs).
        (0, rng.next() | 0xffff, "unknown event code"),
        (1, rng.next(), "write of 4 bytes"),
        (2, 0, "read of 8 bytes"),
    ] {
        match run_one(&mut vcpu, index, map::DOORBELL, value) {
            Stop::Unexpected(why) if why.contains(says) => println!("{why}"),
            other => return Err(format!("doorbell {index}: {other:?}").into()),
        }
    }
    Ok(Completion::Completed)
}

/// PSCI return codes (Arm DEN0022, table 5.2.2).
const PSCI_NOT_SUPPORTED: i64 = -1;
const PSCI_INVALID_PARAMETERS: i64 = -2;
/// Function IDs (Arm DEN0022 §5.1): CPU_ON (SMC64), AFFINITY_INFO (SMC64), PSCI_FEATURES,
/// SYSTEM_OFF.
const PSCI_CPU_ON: u64 = 0xc400_0003;
const PSCI_AFFINITY_INFO: u64 = 0xc400_0004;
const PSCI_FEATURES: u64 = 0x8400_000a;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

/// `hvc #0` with x0..x3 set, then stores x0 to [`PROBE`]; returns the guest's x0.
fn hvc(vcpu: &mut Vcpu, args: [u64; 4]) -> Result<i64, Failed> {
    vcpu.set_core(CoreReg::Pc, CODE)?;
    vcpu.set_core(CoreReg::X(9), PROBE)?;
    for (i, a) in args.iter().enumerate() {
        vcpu.set_core(CoreReg::X(i as u8), *a)?;
    }
    let stop = vcpu.run_until_stop(&mut RunState::default())?;
    if stop
        != (Stop::Mmio {
            addr: PROBE,
            write: true,
            len: 8,
        })
    {
        return Err(format!("hvc {args:#x?}: {stop:?}").into());
    }
    vcpu.complete_mmio()?;
    Ok(vcpu.get_core(CoreReg::X(0))? as i64)
}

/// KVM answers PSCI and SMCCC calls in the kernel: junk function IDs (owner "Trusted OS",
/// SMCCC DEN0028 §2.5) are NOT_SUPPORTED, CPU_ON of a vCPU that does not exist is
/// INVALID_PARAMETERS, AFFINITY_INFO and PSCI_FEATURES with junk return something, and
/// SYSTEM_OFF with junk in x1..x3 is still a clean `SystemOff`.
fn guest_psci_with_junk_arguments_is_answered_by_kvm() -> Result<Completion, Failed> {
    let (_vm, mut vcpu) = match vm_with_code(&[HVC_0, STR_X0_X9, B_SELF]) {
        Ok(v) => v,
        Err(skip) => return Ok(skip),
    };
    let _watchdog = Watchdog::start(&vcpu, TIMEOUT)?;
    let mut rng = Rng::new();
    for _ in 0..32 {
        let owner = 0x32 + rng.next() % 14;
        let fid = 0x8000_0000 | (rng.next() & 0x4000_ffff) | (owner << 24);
        let x0 = hvc(&mut vcpu, [fid, rng.next(), rng.next(), rng.next()])?;
        assert_eq!(x0 as i32, PSCI_NOT_SUPPORTED as i32, "function {fid:#x}");
    }
    for _ in 0..8 {
        // Aff1 set: never vCPU 0's MPIDR (all affinity fields 0).
        let target = rng.next() | 0x100;
        let x0 = hvc(&mut vcpu, [PSCI_CPU_ON, target, rng.next(), rng.next()])?;
        assert_eq!(x0, PSCI_INVALID_PARAMETERS, "CPU_ON {target:#x}");
        let x0 = hvc(&mut vcpu, [PSCI_AFFINITY_INFO, rng.next(), rng.next(), 0])?;
        println!("AFFINITY_INFO junk -> {x0}");
        let x0 = hvc(&mut vcpu, [PSCI_FEATURES, rng.next() | 0xff, 0, 0])?;
        println!("PSCI_FEATURES junk -> {x0}");
    }
    vcpu.set_core(CoreReg::Pc, CODE)?;
    for (i, a) in [PSCI_SYSTEM_OFF, rng.next(), rng.next(), rng.next()]
        .into_iter()
        .enumerate()
    {
        vcpu.set_core(CoreReg::X(i as u8), a)?;
    }
    let stop = vcpu.run_until_stop(&mut RunState::default())?;
    assert_eq!(stop, Stop::SystemOff);
    Ok(Completion::Completed)
}

/// `b .` with interrupts masked never exits to the VMM: the watchdog kicks it on time.
fn guest_that_never_exits_is_kicked() -> Result<Completion, Failed> {
    let (_vm, mut vcpu) = match vm_with_code(&[B_SELF]) {
        Ok(v) => v,
        Err(skip) => return Ok(skip),
    };
    kicked_after(&mut vcpu, Duration::from_millis(300))
}

/// VBAR_EL1 in unbacked memory and an undefined instruction: the exception entry fetches
/// from an address no memslot backs, KVM injects a prefetch abort, whose entry fetches from
/// there again, forever inside KVM_RUN. The watchdog ends it.
fn guest_faulting_in_an_unbacked_vector_table_is_kicked() -> Result<Completion, Failed> {
    let (_vm, mut vcpu) = match vm_with_code(&[UDF_0]) {
        Ok(v) => v,
        Err(skip) => return Ok(skip),
    };
    vcpu.set_reg(VBAR_EL1, PROBE)?;
    kicked_after(&mut vcpu, Duration::from_millis(500))
}

fn kicked_after(vcpu: &mut Vcpu, timeout: Duration) -> Result<Completion, Failed> {
    let watchdog = Watchdog::start(vcpu, timeout)?;
    let started = Instant::now();
    let mut state = RunState::default();
    let stop = vcpu.run_until_stop(&mut state)?;
    let waited = started.elapsed();
    assert_eq!(
        stop,
        Stop::Kicked,
        "after {waited:?}, {} exits",
        state.exits
    );
    assert!(watchdog.fired());
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(5),
        "{waited:?}"
    );
    println!("kicked after {waited:?}, {} exits", state.exits);
    Ok(Completion::Completed)
}

/// HugePages_Total from /proc/meminfo.
fn huge_pages_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("HugePages_Total:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A run of the hugetlb scenario leaves the host's hugetlb pool as it found it: poisoning
/// dissolves the huge page, and the child grows the pool back after unpoisoning.
fn a_hugetlb_run_gives_the_huge_page_back() -> Result<Completion, Failed> {
    let Some(before) = huge_pages_total().filter(|&n| n > 0) else {
        return Ok(Completion::ignored_with("no hugetlb pool"));
    };
    let corrupted = match corrupted() {
        Ok(kib) => kib,
        Err(skip) => return Ok(skip),
    };
    let report = run_json(&[scenarios().join("hugetlb-2m.json").as_os_str()])?;
    let verdict = &report["results"][0]["verdict"];
    assert!(verdict == "pass" || verdict == "skip", "{report:#}");
    assert_eq!(huge_pages_total(), Some(before), "HugePages_Total moved");
    assert_eq!(
        hardware_corrupted_kib()?,
        corrupted,
        "HardwareCorrupted moved"
    );
    Ok(Completion::Completed)
}
