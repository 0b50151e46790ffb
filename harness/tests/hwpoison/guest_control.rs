//! The VMM's answer to what a guest controls (MMIO anywhere, junk doorbells, PSCI with junk
//! arguments, a guest that never exits, a vector table in unbacked memory): a stop, an
//! error or a kick, never a panic or a hang (docs/safety.md names each trial).
//!
//! The trials drive the VM directly with the `kvm` module and a few hand-written
//! instructions (encodings from the Arm ARM, C6.2), so they need no payload change.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use libtest_mimic::{Completion, Failed, Trial};
use ras_guest_abi::map;
use ras_harness::kvm::regs::VBAR_EL1;
use ras_harness::kvm::{Backing, CoreReg, Mapping, RunState, Stop, Vcpu, Vm, Watchdog};

pub fn trials() -> Vec<Trial> {
    let t = |name: &str, f: fn() -> Result<Completion, Failed>| {
        Trial::ignorable_test(format!("guest_control::{name}"), f)
    };
    vec![
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
