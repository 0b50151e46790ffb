//! Debian's arm64 QEMU of each suite (emuhost::vmm_qemu) as a system under test inside the
//! emulated host, under its nested KVM: `qemu-system-aarch64 -version`, then a boot of a tiny
//! arm64 Image that writes "OK\n" to the PL011 and powers off through PSCI, which must end
//! QEMU with status 0 and that output. Each suite is one boot of the emulated host running
//! the probe's `time` three times; the timings are printed (`--nocapture` shows them).
//!
//! QEMU runs from the emulated host's initramfs (QemuInstall::staged), but for one test
//! that runs it from the share. The first run per suite fetches QEMU with its libraries
//! (about 30 MB, 20 s).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use emuhost::vmm_qemu::{self, QemuInstall, QemuSuite};
use emuhost::RunOptions;

static BOOTS: Mutex<()> = Mutex::new(());

const PROBE: &str = env!("EMUHOST_PROBE");

/// The UART of QEMU's `virt` machine: a PL011 at 0x0900_0000 (hw/arm/virt.c, VIRT_UART).
const PL011: u32 = 0x0900_0000;

/// A tiny arm64 Image: the 64-byte header of Documentation/arch/arm64/booting.rst, then
/// code that writes "OK\n" to the PL011's data register (offset 0) and calls PSCI
/// SYSTEM_OFF (function ID 0x8400_0008, PSCI 1.x, DEN0022) through HVC, the conduit QEMU's
/// virt machine advertises under KVM. The instructions are hand-assembled A64 (Arm ARM,
/// C6: MOVZ/MOVK "move wide immediate", STRB "unsigned offset", B, HVC).
fn tiny_image() -> Vec<u8> {
    const HEADER: [u32; 16] = [
        0x1400_0010, // code0: b +0x40, past the header to the code
        0xd503_201f, // code1: nop
        0x0000_0000, // text_offset (u64): load at the start of RAM
        0x0000_0000,
        0x0000_1000, // image_size (u64): 4 KiB; nonzero, else QEMU assumes a pre-3.17 kernel
        0x0000_0000,
        0x0000_0000, // flags (u64): 0 = little-endian, page size unspecified
        0x0000_0000,
        0x0000_0000, // res2
        0x0000_0000,
        0x0000_0000, // res3
        0x0000_0000,
        0x0000_0000, // res4
        0x0000_0000,
        0x644d_5241, // magic: "ARM\x64" at offset 0x38
        0x0000_0000, // res5 (PE/COFF offset): none
    ];
    const CODE: [u32; 12] = [
        0xd2a1_2000, // movz x0, #0x0900, lsl #16   x0 = 0x0900_0000, the PL011
        0x5280_09e1, // movz w1, #0x4f              'O'
        0x3900_0001, // strb w1, [x0]               to UARTDR
        0x5280_0961, // movz w1, #0x4b              'K'
        0x3900_0001, // strb w1, [x0]
        0x5280_0141, // movz w1, #0x0a              '\n'
        0x3900_0001, // strb w1, [x0]
        0xd280_0100, // movz x0, #0x0008
        0xf2b0_8000, // movk x0, #0x8400, lsl #16   x0 = 0x8400_0008, PSCI SYSTEM_OFF
        0xd400_0002, // hvc #0
        0x1400_0000, // b .                         should SYSTEM_OFF return
        0x0000_0000, // padding to a multiple of 8 bytes
    ];
    let image: Vec<u8> = HEADER
        .iter()
        .chain(CODE.iter())
        .flat_map(|w| w.to_le_bytes())
        .collect();
    assert_eq!(&image[0x38..0x3c], b"ARM\x64");
    assert_eq!(PL011 >> 16, (CODE[0] >> 5) & 0xffff);
    image
}

/// One `time` report of the probe.
#[derive(Debug)]
struct Timed {
    status: i32,
    secs: f64,
    stdout: String,
    stderr: String,
}

/// The probe's `time` reports in `out`, in order.
fn reports(out: &str) -> Vec<Timed> {
    let unquote = |s: &str| -> String {
        // Rust debug quoting of what QEMU printed: the escapes QEMU's output can carry.
        let s = s.trim().trim_start_matches('"').trim_end_matches('"');
        s.replace("\\n", "\n")
            .replace("\\r", "\r")
            .replace("\\t", "\t")
            .replace("\\\"", "\"")
            .replace("\\'", "'")
            .replace("\\\\", "\\")
    };
    let mut found: Vec<Timed> = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("time status ") {
            let mut words = rest.split_whitespace();
            let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
            let secs = words.nth(1).and_then(|s| s.parse().ok()).unwrap_or(-1.0);
            found.push(Timed {
                status,
                secs,
                stdout: String::new(),
                stderr: String::new(),
            });
        } else if let (Some(rest), Some(t)) = (line.strip_prefix("time stdout "), found.last_mut())
        {
            t.stdout = unquote(rest);
        } else if let (Some(rest), Some(t)) = (line.strip_prefix("time stderr "), found.last_mut())
        {
            t.stderr = unquote(rest);
        }
    }
    found
}

/// `time N` and the words of one QEMU command.
fn timed(install: &QemuInstall, qemu_args: &[&str], image: &Path) -> Vec<OsString> {
    timed_words(install.prefix(), qemu_args, image)
}

fn timed_words(mut words: Vec<OsString>, qemu_args: &[&str], image: &Path) -> Vec<OsString> {
    for a in qemu_args {
        words.push(if *a == "IMAGE" {
            image.as_os_str().to_owned()
        } else {
            a.into()
        });
    }
    let mut args = vec!["time".into(), words.len().to_string().into()];
    args.extend(words);
    args
}

/// The machine of the brief: the nested KVM's own CPU, 64 MiB, the PL011 on stdio.
const BOOT: &[&str] = &[
    "-cpu",
    "host",
    "-accel",
    "kvm",
    "-m",
    "64M",
    "-nographic",
    "-nodefaults",
    "-serial",
    "stdio",
    "-kernel",
    "IMAGE",
];

fn with_machine(machine: &str) -> Vec<&str> {
    let mut args = vec!["-M", machine];
    args.extend_from_slice(BOOT);
    args
}

/// Sets up `suite`'s QEMU, writes the tiny image, and runs the probe in the emulated host
/// with `args(host install, install to run, image)`; returns the install and the `time`
/// reports.
fn run(
    suite: QemuSuite,
    staged: bool,
    args: impl FnOnce(&QemuInstall, &QemuInstall, &Path) -> Vec<OsString>,
) -> (QemuInstall, Vec<Timed>) {
    let _one_at_a_time = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = RunOptions::from_env().expect("options from the environment");
    opts.emulate = true;
    opts.env.clear();

    let started = Instant::now();
    let install = vmm_qemu::ensure(suite, &opts.cache_dir, false).expect("QEMU set up");
    let set_up = started.elapsed().as_secs_f64();
    let run = if staged {
        opts.initramfs_parts.push(install.initramfs.clone());
        install.staged()
    } else {
        install.clone()
    };

    let image_dir: PathBuf = opts.cache_dir.join("qemu");
    let image = image_dir.join("tiny-ok.Image");
    std::fs::write(&image, tiny_image()).expect("the tiny image written");
    // Shared at their own paths even when RAS_EMU_CACHE lies outside the workspace.
    opts.extra_shares = vec![image_dir];

    let args = args(&install, &run, &image);
    let mut out = Vec::new();
    let booted = Instant::now();
    let status = emuhost::run_emulated(PROBE.as_ref(), &args, &opts, &mut out);
    let whole = booted.elapsed().as_secs_f64();
    let out = String::from_utf8_lossy(&out).into_owned();
    print!("{out}");
    assert_eq!(status.expect("an emulated run"), 0, "{out}");
    println!(
        "{}: QEMU {} ({} packages, {}); set-up {set_up:.2} s; emulated host run {whole:.2} s",
        suite.name(),
        install.version,
        install.packages.len(),
        if staged {
            "staged in the initramfs"
        } else {
            "from the share"
        },
    );
    (install, reports(&out))
}

fn check(suite: QemuSuite) {
    let (install, found) = run(suite, true, |host, run, image| {
        let mut args = timed(run, &["-version"], image);
        args.extend(timed(run, &with_machine("virt"), image));
        args.extend(timed(run, &with_machine("virt,ras=on"), image));
        args.extend(timed(run, &with_machine("virt,ras=on,acpi=off"), image));
        args.extend(timed(run, &["-L", "help"], image));
        // Without -L: where QEMU itself looks for its data.
        let without: Vec<OsString> = run.prefix()[..4].to_vec();
        args.extend(timed_words(without, &["-L", "help"], image));
        assert_eq!(host.data_dir, run.data_dir);
        args
    });
    assert_eq!(found.len(), 6, "{found:?}");
    let [version, boot, ras, ras_no_acpi, data_dirs, own_data_dirs] = [
        &found[0], &found[1], &found[2], &found[3], &found[4], &found[5],
    ];
    for (what, t) in [
        ("-version", version),
        ("virt boot to PSCI off", boot),
        ("virt,ras=on", ras),
        ("virt,ras=on,acpi=off", ras_no_acpi),
        ("-L DATADIR -L help", data_dirs),
        ("-L help", own_data_dirs),
    ] {
        println!(
            "  {what}: status {} in {:.3} s; stdout {:?}; stderr {:?}",
            t.status, t.secs, t.stdout, t.stderr
        );
    }

    assert_eq!(version.status, 0, "-version: {version:?}");
    assert!(
        version.stdout.starts_with(&format!(
            "QEMU emulator version {}",
            install.upstream_version()
        )),
        "{version:?}"
    );
    assert!(
        version
            .stdout
            .contains(&format!("(Debian {})", install.version)),
        "{version:?}"
    );
    assert_eq!(boot.status, 0, "the tiny image's boot: {boot:?}");
    assert_eq!(boot.stdout, "OK\n", "{boot:?}");
    assert_eq!(
        ras_no_acpi.status, 0,
        "ras=on without ACPI boots the tiny image too: {ras_no_acpi:?}"
    );
    assert_eq!(ras_no_acpi.stdout, "OK\n", "{ras_no_acpi:?}");
    let data_dir = install.data_dir.as_ref().expect("a data directory");
    assert!(
        data_dirs.stdout.contains(&data_dir.display().to_string()),
        "{data_dirs:?}"
    );
}

/// The plain prefix, as `emuhost setup-qemu` prints it, run from the share: slow (every
/// page of QEMU and its libraries read over 9p) but the same QEMU.
#[test]
fn trixie_qemu_runs_from_the_share_too() {
    let (install, found) = run(QemuSuite::Trixie, false, |_, run, image| {
        timed(run, &["-version"], image)
    });
    assert_eq!(found.len(), 1, "{found:?}");
    println!(
        "  -version from the share: status {} in {:.3} s",
        found[0].status, found[0].secs
    );
    assert_eq!(found[0].status, 0, "{:?}", found[0]);
    assert!(found[0].stdout.contains(&install.version), "{:?}", found[0]);
}

#[test]
fn trixie_qemu_runs_and_boots_under_nested_kvm() {
    check(QemuSuite::Trixie);
}

#[test]
fn bookworm_qemu_runs_and_boots_under_nested_kvm() {
    check(QemuSuite::Bookworm);
}

#[test]
fn bookworm_backports_qemu_runs_and_boots_under_nested_kvm() {
    check(QemuSuite::BookwormBackports);
}

#[test]
fn sid_qemu_runs_and_boots_under_nested_kvm() {
    check(QemuSuite::Sid);
}

#[test]
fn the_tiny_image_is_what_it_says() {
    let image = tiny_image();
    assert_eq!(image.len() % 8, 0);
    // code0 branches to the first word after the 64-byte header.
    let code0 = u32::from_le_bytes(image[..4].try_into().unwrap());
    assert_eq!(code0 >> 26, 0b000101, "B");
    assert_eq!((code0 & 0x03ff_ffff) * 4, 64);
    assert_eq!(u64::from_le_bytes(image[8..16].try_into().unwrap()), 0);
    assert_ne!(u64::from_le_bytes(image[16..24].try_into().unwrap()), 0);
    assert_eq!(u64::from_le_bytes(image[24..32].try_into().unwrap()), 0);
}
