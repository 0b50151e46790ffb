//! What a scenario cannot say even though it parses: values out of range and settings that
//! contradict each other. Whether the *host* can run a scenario is a different question,
//! answered at run time by [`super::requirements`].

use ras_guest_abi::arch::{
    VECTOR_CUR_SPX_SERROR, VECTOR_CUR_SPX_SYNC, VECTOR_LOWER_A64_SERROR, VECTOR_LOWER_A64_SYNC,
};

use super::json_name;
use super::spec::{
    Access, CperExpectation, El, ExpectedCper, ExpectedOutcome, Fault, Firmware, Guest,
    GuestException, MceKill, Method, OnAo, OnMemoryError, Os, Scenario, SeaVia, Vmm, When,
};
use crate::formats::esr::{ESR_ELx_EC_SERROR, Esr};
use crate::kvm::Cap;

/// Size of a target region page: the guest's identity map uses a 4 KiB granule whatever the
/// host page size, so page indices mean the same on every host.
pub const TARGET_PAGE_SIZE: u64 = 4096;
/// Target slot bounds, in MiB: the payload maps one 1 GiB block of target memory
/// (guest-abi `map::TARGET_MAX_SIZE`).
pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 16..=1024;
/// vCPU bounds.
pub const VCPUS: std::ops::RangeInclusive<u8> = 1..=8;
/// The largest SError syndrome KVM accepts: ISS is bits \[24:0\]; anything above is EINVAL
/// (docs/ras-facts.md §3).
pub const SERROR_ISS_MAX: u64 = 0x1FF_FFFF;

/// One thing wrong with a scenario: the field, as a path like `faults[1].page`, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong, with the allowed values.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Every rule a scenario breaks, in field order; empty when it is valid.
pub fn validate(s: &Scenario) -> Vec<Invalid> {
    let mut out = Vec::new();
    check_name(s, &mut out);
    if s.guest.os == Os::Linux {
        check_linux(s, &mut out);
        return out;
    }
    if s.expect.console.is_some() {
        out.push(invalid(
            "expect.console",
            "only a Linux guest has a console the harness reads: needs guest.os linux",
        ));
    }
    check_guest(s, &mut out);
    check_faults(s, &mut out);
    check_vmm(s, &mut out);
    check_expect(s, &mut out);
    check_guest_reads(s, &mut out);
    out
}

/// Whether `name` is usable as a JUnit test case and snapshot file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn check_name(s: &Scenario, out: &mut Vec<Invalid>) {
    if !valid_name(&s.name) {
        out.push(invalid(
            "name",
            format!(
                "{:?} is not a valid name: use 1 to 100 of a-z, 0-9, '-', '_', '.'",
                s.name
            ),
        ));
    }
}

fn check_guest(s: &Scenario, out: &mut Vec<Invalid>) {
    let g = &s.guest;
    if !VCPUS.contains(&g.vcpus) {
        out.push(invalid(
            "guest.vcpus",
            format!("{} is out of range: expected 1 to 8", g.vcpus),
        ));
    }
    if !MEMORY_MIB.contains(&g.memory_mib) {
        out.push(invalid(
            "guest.memory_mib",
            format!("{} is out of range: expected 16 to 1024", g.memory_mib),
        ));
    }
    if let Some(huge) = g.backing.hugetlb_mib() {
        if !g.memory_mib.is_multiple_of(huge) {
            out.push(invalid(
                "guest.memory_mib",
                format!(
                    "{} MiB is not a multiple of the {huge} MiB huge page size that guest.backing asks for",
                    g.memory_mib
                ),
            ));
        }
    }
    let target_bytes = u64::from(g.target_pages) * TARGET_PAGE_SIZE;
    let usable = u64::from(g.memory_mib) << 20;
    if g.target_pages == 0 {
        out.push(invalid("guest.target_pages", "must be at least 1"));
    } else if target_bytes > usable {
        out.push(invalid(
            "guest.target_pages",
            format!(
                "{} pages of 4 KiB do not fit in the {} MiB target slot (guest.memory_mib)",
                g.target_pages, g.memory_mib
            ),
        ));
    }
    // With PSTATE.A set a consuming access that faults cannot be ended by an SError (it stays
    // pending), so KVM would fault on the same poisoned page for ever; the masked wait is the
    // step that meets the error instead (vmm::plan), and it has no access.
    if g.serror_masked && g.access != Access::None {
        out.push(invalid(
            "guest.serror_masked",
            format!(
                "needs guest.access none, not {}: the error arrives during the masked wait, and a faulting access with PSTATE.A set would fault again for ever",
                json_name(&g.access)
            ),
        ));
    }
    if g.esb && !g.serror_masked {
        out.push(invalid(
            "guest.esb",
            "ESB runs in the masked SError wait: needs guest.serror_masked",
        ));
    }
}

fn check_faults(s: &Scenario, out: &mut Vec<Invalid>) {
    for (i, f) in s.faults.iter().enumerate() {
        let at = |field: &str| format!("faults[{i}].{field}");
        if f.page >= s.guest.target_pages {
            out.push(invalid(
                at("page"),
                format!(
                    "page {} is beyond the target region: guest.target_pages is {}",
                    f.page, s.guest.target_pages
                ),
            ));
        }
        if f.vcpu >= s.guest.vcpus {
            out.push(invalid(
                at("vcpu"),
                format!(
                    "vCPU {} does not exist: guest.vcpus is {}",
                    f.vcpu, s.guest.vcpus
                ),
            ));
        }
        match f.when {
            When::BeforeAck | When::AfterAck if i == 0 => out.push(invalid(
                at("when"),
                "before-ack and after-ack follow an earlier fault; the first fault cannot use them",
            )),
            When::BeforeAck | When::AfterAck if s.vmm.on_memory_error == OnMemoryError::Stop => {
                out.push(invalid(
                    at("when"),
                    "the first error stops the VM (vmm.on_memory_error is stop): nothing follows it",
                ))
            }
            When::BeforeAck if s.faults[i - 1].vcpu == f.vcpu => out.push(invalid(
                at("when"),
                "before-ack needs a vCPU other than the previous fault's: one vCPU acknowledges a record before it reaches its next access",
            )),
            When::AfterAck if s.firmware == Firmware::Dtb => out.push(invalid(
                at("when"),
                "after-ack needs the GHESv2 read-ack register, which only firmware acpi has",
            )),
            When::AfterAck if !s.guest.ack => out.push(invalid(
                at("when"),
                "after-ack needs a guest that acknowledges (guest.ack true)",
            )),
            _ => {}
        }
    }
}

fn check_vmm(s: &Scenario, out: &mut Vec<Invalid>) {
    let v = &s.vmm;
    for (i, cap) in v.mask_caps.iter().enumerate() {
        if *cap == Cap::ArmSeaToUser {
            out.push(invalid(
                format!("vmm.mask_caps[{i}]"),
                "245 (KVM_CAP_ARM_SEA_TO_USER) cannot be masked: the hwpoison path never uses \
                 it (scenarios/README.md); maskable: 41, 158, 178",
            ));
        } else if v.mask_caps[..i].contains(cap) {
            out.push(invalid(
                format!("vmm.mask_caps[{i}]"),
                format!("capability {} is listed twice", cap.number()),
            ));
        }
    }
    if v.on_memory_error == OnMemoryError::Sea
        && v.sea == SeaVia::KvmExtDabt
        && s.guest.access == Access::Ifetch
    {
        // ext_dabt_pending always makes a Data Abort (EC 0x24/0x25); a VMM that wants an
        // Instruction Abort must emulate the entry. Rather than a silent fallback, the
        // scenario has to say so.
        out.push(invalid(
            "vmm.sea",
            "kvm-ext-dabt injects a Data Abort and cannot express an instruction fetch abort: use emulated with guest.access ifetch",
        ));
    }
    if let Some(esr) = v.serror_esr {
        if v.on_memory_error != OnMemoryError::Serror {
            out.push(invalid(
                "vmm.serror_esr",
                "only used when vmm.on_memory_error is serror",
            ));
        } else if esr.0 > SERROR_ISS_MAX {
            out.push(invalid(
                "vmm.serror_esr",
                format!("{esr} has bits above 24: KVM takes only the ISS, 0x0 to 0x1ffffff"),
            ));
        }
    }
    if v.on_ao == OnAo::Notify && v.mce_kill != MceKill::Early {
        out.push(invalid(
            "vmm.on_ao",
            "notify needs vmm.mce_kill early: with late kill no BUS_MCEERR_AO arrives",
        ));
    }
}

fn check_expect(s: &Scenario, out: &mut Vec<Invalid>) {
    let e = &s.expect;
    let notified = e.outcome == ExpectedOutcome::GuestNotified;
    let outcome = json_name(&e.outcome);
    if !notified {
        let exception_given = matches!(e.guest_exception, Some(k) if k != GuestException::None);
        for (given, field) in [
            (exception_given, "expect.guest_exception"),
            (e.esr.is_some(), "expect.esr"),
            (e.vector_offset.is_some(), "expect.vector_offset"),
            (
                matches!(e.notifications, Some(n) if n > 0),
                "expect.notifications",
            ),
            (
                e.cper
                    .as_ref()
                    .is_some_and(|c| c.any(ExpectedCper::Consumed)),
                "expect.cper",
            ),
        ] {
            if given {
                out.push(invalid(
                    field,
                    format!("the guest takes no exception when expect.outcome is {outcome}"),
                ));
            }
        }
        return;
    }

    if s.faults.is_empty() && s.vmm.on_ao == OnAo::Ignore {
        out.push(invalid(
            "expect.outcome",
            "guest-notified needs at least one fault",
        ));
    }
    if s.guest.access == Access::None && s.vmm.on_ao == OnAo::Ignore {
        out.push(invalid(
            "expect.outcome",
            "guest-notified needs an access (guest.access is none) or vmm.on_ao notify",
        ));
    }
    if s.vmm.on_memory_error == OnMemoryError::Stop {
        out.push(invalid(
            "expect.outcome",
            "guest-notified contradicts vmm.on_memory_error stop",
        ));
    }
    if e.notifications == Some(0) {
        out.push(invalid(
            "expect.notifications",
            "0 contradicts expect.outcome guest-notified",
        ));
    }
    if let Some(kind) = e.guest_exception {
        check_exception_kind(s, kind, out);
    }
    check_syndrome(s, out);
}

/// A Linux guest (sut::linux) is one process that maps one page, the page poisoned by
/// frame once the process reports it, then loaded from: by the process (`guest.el` 0) or
/// by the kernel for write(2) (`guest.el` 1). What the payload reports (exceptions,
/// records, ISR) is the kernel's business there: `expect` holds the outcome and the
/// console.
fn check_linux(s: &Scenario, out: &mut Vec<Invalid>) {
    const WHY: &str = "not for a Linux guest, which is one process with one page";
    let g = &s.guest;
    let d = Guest::default();
    for (differs, field) in [
        (g.vcpus != d.vcpus, "guest.vcpus"),
        (g.memory_mib != d.memory_mib, "guest.memory_mib"),
        (g.backing != d.backing, "guest.backing"),
        (g.target_pages != d.target_pages, "guest.target_pages"),
        (g.ras != d.ras, "guest.ras"),
        (g.serror_masked != d.serror_masked, "guest.serror_masked"),
        (g.esb != d.esb, "guest.esb"),
        (g.ack != d.ack, "guest.ack"),
    ] {
        if differs {
            out.push(invalid(field, WHY));
        }
    }
    if s.vmm != Vmm::default() {
        out.push(invalid(
            "vmm",
            "a Linux guest runs on a Debian QEMU as it comes: its configuration is not the \
             scenario's",
        ));
    }
    if g.access != Access::Load {
        out.push(invalid(
            "guest.access",
            format!(
                "{} is not one for a Linux guest: load (the process loads, guest.el 0, or \
                 the kernel reads the page for write(2), guest.el 1)",
                json_name(&g.access)
            ),
        ));
    }
    let one = Fault {
        method: Method::HardOffline,
        page: 0,
        vcpu: 0,
        when: When::AtReady,
    };
    if s.faults != [one] {
        out.push(invalid(
            "faults",
            "a Linux guest takes one fault, its page poisoned by frame: \
             [{\"method\": \"hard-offline\"}]",
        ));
    }
    let e = &s.expect;
    for (given, field) in [
        (!e.host_signals.is_empty(), "expect.host_signals"),
        (e.guest_exception.is_some(), "expect.guest_exception"),
        (e.esr.is_some(), "expect.esr"),
        (e.vector_offset.is_some(), "expect.vector_offset"),
        (e.notifications.is_some(), "expect.notifications"),
        (e.cper.is_some(), "expect.cper"),
        (e.isr.is_some(), "expect.isr"),
        (e.disr.is_some(), "expect.disr"),
    ] {
        if given {
            out.push(invalid(
                field,
                "a Linux guest tells only its console (expect.console) and how QEMU ended \
                 (expect.outcome)",
            ));
        }
    }
}

/// `expect.cper` fault by fault has one entry per fault; records need ACPI; `isr` and
/// `disr` are read by the masked SError wait (and `disr` after its ESB).
fn check_guest_reads(s: &Scenario, out: &mut Vec<Invalid>) {
    let e = &s.expect;
    if let Some(CperExpectation::PerFault(v)) = &e.cper {
        if v.len() != s.faults.len() {
            out.push(invalid(
                "expect.cper",
                format!(
                    "{} entries for {} faults: give one per fault, or one string for all",
                    v.len(),
                    s.faults.len()
                ),
            ));
        }
    }
    let any_record = e
        .cper
        .as_ref()
        .is_some_and(|c| c.any(ExpectedCper::Recorded) || c.any(ExpectedCper::Consumed));
    if any_record && s.firmware == Firmware::Dtb {
        out.push(invalid(
            "expect.cper",
            "firmware dtb has no transport for a CPER record: expect none",
        ));
    }
    if e.isr.is_some() && !s.guest.serror_masked {
        out.push(invalid(
            "expect.isr",
            "only the masked SError wait reads it: needs guest.serror_masked",
        ));
    }
    if e.disr.is_some() && !(s.guest.serror_masked && s.guest.esb) {
        out.push(invalid(
            "expect.disr",
            "read after the masked SError wait's ESB: needs guest.serror_masked and guest.esb",
        ));
    }
}

/// The exception kind the VMM configuration can produce for the guest's access.
fn check_exception_kind(s: &Scenario, kind: GuestException, out: &mut Vec<Invalid>) {
    let producible = match s.vmm.on_memory_error {
        OnMemoryError::Serror => vec![GuestException::Serror],
        OnMemoryError::Sea => match s.guest.access {
            Access::Ifetch => vec![GuestException::Iabt],
            // With no access, only an AO notified at poison time reaches the guest.
            Access::Load | Access::Store | Access::None => vec![GuestException::Sea],
        },
        OnMemoryError::Stop => vec![],
    };
    // A masked SError may never be taken: "none" is a valid expectation then.
    let masked_none = kind == GuestException::None && s.guest.serror_masked;
    if !producible.contains(&kind) && !masked_none {
        out.push(invalid(
            "expect.guest_exception",
            format!(
                "{} cannot come from vmm.on_memory_error {} with guest.access {}",
                json_name(&kind),
                json_name(&s.vmm.on_memory_error),
                json_name(&s.guest.access)
            ),
        ));
    }
}

/// expect.esr and expect.vector_offset must agree with the exception and the EL.
fn check_syndrome(s: &Scenario, out: &mut Vec<Invalid>) {
    let e = &s.expect;
    let Some(kind) = e.guest_exception else {
        return;
    };
    if let Some(esr) = e.esr {
        let ec = Esr::from_raw(esr.0).ec();
        let from = s.guest.el.origin();
        let want = match kind {
            GuestException::Sea => Some(from.data_abort_ec()),
            GuestException::Iabt => Some(from.instruction_abort_ec()),
            GuestException::Serror => Some(ESR_ELx_EC_SERROR),
            GuestException::None | GuestException::Other => None,
        };
        if let Some(want) = want.filter(|&w| w != ec) {
            out.push(invalid(
                "expect.esr",
                format!(
                    "{esr} has EC {ec:#x}, but {} at EL{} has EC {want:#x}",
                    json_name(&kind),
                    u8::from(s.guest.el)
                ),
            ));
        }
    }
    if let Some(offset) = e.vector_offset {
        // Arm ARM D1.4.1.6. An SError may be taken after the guest is back at EL1.
        let allowed: &[u64] = match (kind, s.guest.el) {
            (GuestException::Sea | GuestException::Iabt, El::El1) => &[VECTOR_CUR_SPX_SYNC],
            (GuestException::Sea | GuestException::Iabt, El::El0) => &[VECTOR_LOWER_A64_SYNC],
            (GuestException::Serror, El::El1) => &[VECTOR_CUR_SPX_SERROR],
            (GuestException::Serror, El::El0) => &[VECTOR_CUR_SPX_SERROR, VECTOR_LOWER_A64_SERROR],
            (GuestException::None | GuestException::Other, _) => &[],
        };
        if !allowed.is_empty() && !allowed.contains(&offset.0) {
            let list: Vec<String> = allowed.iter().map(|v| format!("{v:#x}")).collect();
            out.push(invalid(
                "expect.vector_offset",
                format!(
                    "{offset} is not where {} from EL{} goes: expected {}",
                    json_name(&kind),
                    u8::from(s.guest.el),
                    list.join(" or ")
                ),
            ));
        }
    }
}
