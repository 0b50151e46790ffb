//! The command line that starts a VMM with the payload as its kernel.
//!
//! Every VMM gets the same guest: the payload image as an arm64 Image, its bootargs, one
//! vCPU, and RAM reaching past the payload's target window (the first GiB boundary above
//! the image, `ras_guest_abi::map::target_window`): 1 GiB plus the scenario's target, with
//! RAM starting at a GiB boundary and the image loaded in its first 2 MiB, as QEMU virt
//! (RAM at 0x4000_0000, the image 2 MiB in) and libkrun (RAM and image at 0x8000_0000) do.
//!
//! A scenario with ACPI boots QEMU's virt machine with `ras=on` and UEFI firmware, which
//! builds the ACPI tables (HEST and GHESv2 among them) from QEMU's table loader and starts
//! the payload as an EFI application; the payload moves itself below the first GiB boundary
//! of RAM (guest-payloads/src/efi.rs), and RAM gets [`FIRMWARE_HEADROOM`] more so that the
//! firmware's allocations, made from the top of RAM down, stay clear of the target window.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The placeholders an `exec=` template may use; `{image}` and `{bootargs}` are required.
pub const PLACEHOLDERS: [(&str, &str); 5] = [
    ("{image}", "the payload as an arm64 Image file"),
    (
        "{bootargs}",
        "the kernel command line the payload reads its parameters from",
    ),
    (
        "{ram_mib}",
        "guest RAM in MiB (1024 + the scenario's memory_mib)",
    ),
    ("{vcpus}", "vCPUs (1)"),
    (
        "{console}",
        "a file the VMM may write the guest's console to",
    ),
];

/// What one run gives the VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// The payload image file.
    pub image: PathBuf,
    /// Its command line.
    pub bootargs: String,
    /// Guest RAM in MiB.
    pub ram_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// Where the console goes, for VMMs that write it to a file.
    pub console: PathBuf,
    /// ACPI tables wanted: boot through UEFI firmware.
    pub acpi: bool,
}

/// MiB of RAM past the target for UEFI firmware's own allocations.
pub const FIRMWARE_HEADROOM: u64 = 256;

impl Guest {
    /// RAM for a payload whose targets need `memory_mib` MiB past the target window, booted
    /// through firmware or not.
    pub fn ram_mib(memory_mib: u32, acpi: bool) -> u64 {
        1024 + u64::from(memory_mib) + if acpi { FIRMWARE_HEADROOM } else { 0 }
    }
}

/// A program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// QEMU's arguments after `prefix` (the binary, or a loader and the binary): the virt
/// machine under KVM with the host's CPU, no default devices but the PL011 console (which
/// virt always describes in its device tree as /chosen/stdout-path, and with ACPI in its
/// SPCR), written to the console file; `-kernel` loads an arm64 Image 2 MiB into RAM and
/// `-append` becomes /chosen/bootargs (hw/arm/boot.c). With ACPI, `ras=on` (the HEST and
/// its GHESv2 sources, hw/arm/virt-acpi-build.c) and `firmware` as `-bios`, which gets the
/// image and the command line through fw_cfg and starts it as an EFI application with the
/// command line as its load options.
pub fn qemu(prefix: Launch, firmware: Option<&Path>, g: &Guest) -> Launch {
    let mut l = qemu_machine(
        prefix,
        firmware.filter(|_| g.acpi),
        g.vcpus,
        g.ram_mib,
        &g.console,
    );
    l.args.push("-kernel".into());
    l.args.push(g.image.clone().into());
    l.args.push("-append".into());
    l.args.push(g.bootargs.clone().into());
    l
}

/// QEMU's arguments for a Linux guest: `kernel` (an arm64 Image, which the firmware, when
/// there is one, starts through its EFI stub) with `initrd` and `cmdline`; a panic ends
/// QEMU (`-no-reboot`) rather than looping.
pub fn qemu_linux(
    prefix: Launch,
    firmware: Option<&Path>,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    console: &Path,
) -> Launch {
    let mut l = qemu_machine(prefix, firmware, 1, LINUX_RAM_MIB, console);
    for a in ["-no-reboot", "-kernel"] {
        l.args.push(a.into());
    }
    l.args.push(kernel.into());
    l.args.push("-initrd".into());
    l.args.push(initrd.into());
    l.args.push("-append".into());
    l.args.push(cmdline.into());
    l
}

/// QEMU's arguments for the firmware alone, no kernel (what it starts is not reached):
/// `ras=on` and `firmware`, paused before the first instruction (`-S`) so that a fault can
/// come before the firmware runs.
pub fn qemu_firmware_paused(prefix: Launch, firmware: &Path, console: &Path) -> Launch {
    let mut l = qemu_machine(prefix, Some(firmware), 1, LINUX_RAM_MIB, console);
    l.args.push("-S".into());
    l
}

/// `l` with a QMP server on the Unix socket `socket`, which QEMU makes at start-up and does
/// not wait on (docs/interop/qmp-spec.rst; `-qmp` is `-chardev socket` + `-mon`).
pub fn with_qmp(mut l: Launch, socket: &Path) -> Launch {
    l.args.push("-qmp".into());
    l.args
        .push(format!("unix:{},server=on,wait=off", socket.display()).into());
    l
}

/// RAM of the Linux guest.
const LINUX_RAM_MIB: u64 = 1024;

/// The machine: virt under KVM with the host's CPU, `vcpus`, `ram_mib`, no default devices
/// but the PL011, written to `console`; with `firmware`, `ras=on` and the firmware.
fn qemu_machine(
    prefix: Launch,
    firmware: Option<&Path>,
    vcpus: u8,
    ram_mib: u64,
    console: &Path,
) -> Launch {
    let mut args = prefix.args;
    let machine = if firmware.is_some() {
        "virt,gic-version=3,ras=on"
    } else {
        "virt,gic-version=3"
    };
    if let Some(firmware) = firmware {
        args.push("-bios".into());
        args.push(firmware.into());
    }
    let console = format!("file:{}", console.display());
    for a in [
        "-M",
        machine,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        &vcpus.to_string(),
        "-m",
        &format!("{ram_mib}M"),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        &console,
    ] {
        args.push(a.into());
    }
    Launch {
        program: prefix.program,
        args,
    }
}

/// The harness's libkrun driver (`vmms/libkrun-driver`): the image as a raw kernel, the
/// console on its standard output.
pub fn libkrun(driver: &Path, g: &Guest) -> Launch {
    let args = [
        "--kernel".into(),
        g.image.clone().into(),
        "--ram-mib".into(),
        g.ram_mib.to_string().into(),
        "--vcpus".into(),
        g.vcpus.to_string().into(),
        "--cmdline".into(),
        g.bootargs.clone().into(),
    ];
    Launch {
        program: driver.to_owned(),
        args: args.into(),
    }
}

/// An `exec=` template, split at whitespace, each word with its placeholders filled (a
/// word that is exactly `{bootargs}` stays one argument, spaces and all).
pub fn exec(template: &str, g: &Guest) -> Launch {
    let values = [
        g.image.display().to_string(),
        g.bootargs.clone(),
        g.ram_mib.to_string(),
        g.vcpus.to_string(),
        g.console.display().to_string(),
    ];
    let mut words = template.split_whitespace().map(|w| {
        PLACEHOLDERS
            .iter()
            .zip(&values)
            .fold(w.to_owned(), |w, ((p, _), v)| w.replace(p, v))
    });
    let program = PathBuf::from(words.next().unwrap_or_default());
    Launch {
        program,
        args: words.map(OsString::from).collect(),
    }
}

/// Refuses a template without `{image}` or `{bootargs}`, or with an unknown `{...}`.
///
/// # Errors
///
/// What is missing or unknown, with the placeholders allowed.
pub fn check_template(template: &str) -> Result<(), String> {
    let allowed = PLACEHOLDERS
        .iter()
        .map(|(p, what)| format!("{p} ({what})"))
        .collect::<Vec<_>>()
        .join(", ");
    for required in ["{image}", "{bootargs}"] {
        if !template.contains(required) {
            return Err(format!(
                "the template needs {required}; placeholders: {allowed}"
            ));
        }
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        let word = &rest[open..close];
        if !PLACEHOLDERS.iter().any(|(p, _)| *p == word) {
            return Err(format!(
                "unknown placeholder {word}; placeholders: {allowed}"
            ));
        }
        rest = &rest[close..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Guest {
        Guest {
            image: "/t/ras-guest.img".into(),
            bootargs: "ras.abi=4 ras.access=load ras.el=1".into(),
            ram_mib: Guest::ram_mib(64, false),
            vcpus: 1,
            console: "/t/console".into(),
            acpi: false,
        }
    }

    #[test]
    fn qemu_gets_the_image_bootargs_and_ram_past_the_target_window() {
        let prefix = Launch {
            program: "/q/ld.so".into(),
            args: vec!["/q/qemu-system-aarch64".into()],
        };
        let firmware = Path::new("/q/QEMU_EFI.fd");
        let l = qemu(prefix.clone(), Some(firmware), &guest());
        let args: Vec<String> = l.args.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(args[0], "/q/qemu-system-aarch64");
        let after = |flag: &str| &args[args.iter().position(|a| a == flag).unwrap() + 1];
        assert_eq!(after("-M"), "virt,gic-version=3");
        assert_eq!(after("-m"), "1088M");
        assert_eq!(after("-kernel"), "/t/ras-guest.img");
        assert_eq!(after("-append"), "ras.abi=4 ras.access=load ras.el=1");
        assert_eq!(after("-serial"), "file:/t/console");
        assert!(
            !args.iter().any(|a| a == "-bios"),
            "no firmware without ACPI"
        );

        let acpi = Guest {
            acpi: true,
            ram_mib: Guest::ram_mib(64, true),
            ..guest()
        };
        let l = qemu(prefix, Some(firmware), &acpi);
        let args: Vec<String> = l.args.iter().map(|a| a.to_string_lossy().into()).collect();
        let after = |flag: &str| &args[args.iter().position(|a| a == flag).unwrap() + 1];
        assert_eq!(after("-M"), "virt,gic-version=3,ras=on");
        assert_eq!(after("-bios"), "/q/QEMU_EFI.fd");
        assert_eq!(after("-m"), "1344M");
    }

    #[test]
    fn templates_fill_placeholders_and_keep_bootargs_one_argument() {
        let l = exec(
            "vmm --kernel {image} -p {bootargs} --mem={ram_mib}M",
            &guest(),
        );
        assert_eq!(l.program, PathBuf::from("vmm"));
        assert_eq!(
            l.args,
            [
                "--kernel",
                "/t/ras-guest.img",
                "-p",
                "ras.abi=4 ras.access=load ras.el=1",
                "--mem=1088M"
            ]
            .map(OsString::from)
        );
        assert!(check_template("vmm {image} {bootargs} {vcpus}").is_ok());
        let e = check_template("vmm {image}").unwrap_err();
        assert!(e.contains("{bootargs}") && e.contains("{ram_mib}"), "{e}");
        assert!(check_template("vmm {image} {bootargs} {memory}")
            .unwrap_err()
            .contains("unknown placeholder {memory}"));
    }
}
