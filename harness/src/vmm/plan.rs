//! The VM a scenario asks for, as data: the target slot, what goes into the firmware area
//! (ACPI tables with a GHESv2 source notified by SEA, if any, and the device tree with the
//! bootargs), each vCPU's parameters and which step of which vCPU consumes which fault.
//! Pure, so that the layout is unit-tested on any host.

use ras_guest_abi::mailbox::{flags, Access as AbiAccess, MAX_TARGETS};
use ras_guest_abi::map::{DTB_BASE, FIRMWARE_BASE, TARGET_BASE, TARGET_MAX_SIZE};
use ras_guest_abi::Params;

use crate::formats::acpi::{AcpiLayout, AcpiTables, GhesSource, Notify};
use crate::payload;
use crate::scenario::{Access, El, Firmware, Scenario};

/// Where the ACPI tables go in the firmware area: RSDP first, XSDT and HEST after it, the
/// GHES registers and status blocks 64 KiB in (QEMU's arrangement, [`AcpiLayout::qemu_like`]).
const ACPI_TABLES: u64 = FIRMWARE_BASE + 0x1000;
const ACPI_ERRORS: u64 = FIRMWARE_BASE + 0x1_0000;

/// One vCPU's part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuPlan {
    /// The parameters (the bootargs carry them).
    pub params: Params,
    /// For each step, the index in `scenario.faults` of the fault it consumes (`None` for
    /// the control run's unpoisoned step).
    pub step_faults: Vec<Option<usize>>,
}

/// A scenario's VM.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes of the target slot at [`TARGET_BASE`].
    pub target_size: u64,
    /// Blobs to copy into the firmware area: (name, GPA, bytes).
    pub blobs: Vec<(String, u64, Vec<u8>)>,
    /// The GHESv2 source notified by SEA (ACPI only): where records go.
    pub ghes: Option<GhesSource>,
    /// One entry per vCPU.
    pub vcpus: Vec<VcpuPlan>,
}

/// Why a scenario cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// More faults on one vCPU than its mailbox has targets.
    #[error("vCPU {vcpu} has {count} faults; the payload takes at most {MAX_TARGETS}")]
    TooManyFaults {
        /// The vCPU.
        vcpu: u8,
        /// Its faults.
        count: usize,
    },
    /// More than one fault on a vCPU whose only step is the masked SError wait.
    #[error("vCPU {vcpu} has {count} faults; a masked SError wait meets only one")]
    MaskedWaitFaults {
        /// The vCPU.
        vcpu: u8,
        /// Its faults.
        count: usize,
    },
    /// The target slot does not fit the guest's 1 GiB target window.
    #[error("guest.memory_mib {0} is more than the 1024 MiB target window the payload maps")]
    TargetTooLarge(u32),
    /// Table or device tree building failed.
    #[error("firmware: {0}")]
    Firmware(String),
}

/// Lays out `s`.
pub fn plan(s: &Scenario) -> Result<Plan, PlanError> {
    let size = u64::from(s.guest.memory_mib) << 20;
    if size > TARGET_MAX_SIZE {
        return Err(PlanError::TargetTooLarge(s.guest.memory_mib));
    }
    let page = s.guest.backing.page_size();
    let target_size = size.div_ceil(page) * page;

    let (mut blobs, ghes, rsdp) = match s.firmware {
        Firmware::Acpi => {
            let layout = AcpiLayout::qemu_like(FIRMWARE_BASE, ACPI_TABLES, ACPI_ERRORS);
            let tables =
                AcpiTables::build(&layout).map_err(|e| PlanError::Firmware(e.to_string()))?;
            let blobs = tables
                .blobs()
                .iter()
                .map(|b| (b.name.clone(), b.gpa, b.bytes.clone()))
                .collect();
            (
                blobs,
                layout.source_for(Notify::Sea).copied(),
                FIRMWARE_BASE,
            )
        }
        Firmware::Dtb => (Vec::new(), None, 0),
    };

    let mut flag_bits = 0;
    if s.firmware == Firmware::Acpi {
        flag_bits |= flags::WALK_ACPI;
        if s.guest.ack {
            flag_bits |= flags::ACK;
        }
    }
    if s.guest.serror_masked {
        flag_bits |= flags::SERROR_WAIT;
        if s.guest.esb {
            flag_bits |= flags::SERROR_ESB;
        }
    }
    let access = match s.guest.access {
        Access::Load => AbiAccess::Load,
        Access::Store => AbiAccess::Store,
        Access::Ifetch => AbiAccess::Ifetch,
        Access::None => AbiAccess::None,
    };

    let mut vcpus = Vec::new();
    for v in 0..s.guest.vcpus {
        let mut step_faults: Vec<Option<usize>> = s.faults_of(v).map(Some).collect();
        // A control run (no faults) still performs its access, on an unpoisoned page.
        if s.faults.is_empty() && v == 0 {
            step_faults.push(None);
        }
        if step_faults.len() > MAX_TARGETS {
            return Err(PlanError::TooManyFaults {
                vcpu: v,
                count: step_faults.len(),
            });
        }
        // A masked SError wait meets the vCPU's error itself (validation allows no access
        // then): no access steps, and the wait, step 0, consumes the fault.
        let access_steps = if s.guest.serror_masked {
            if step_faults.len() > 1 {
                return Err(PlanError::MaskedWaitFaults {
                    vcpu: v,
                    count: step_faults.len(),
                });
            }
            0
        } else {
            step_faults.len()
        };
        let targets: Vec<u64> = step_faults[..access_steps]
            .iter()
            .map(|fault| fault.map_or(TARGET_BASE, |i| s.faults[i].gpa()))
            .collect();
        let el = match s.guest.el {
            El::El0 => 0,
            El::El1 => 1,
        };
        let params = Params {
            rsdp_gpa: rsdp,
            dtb_gpa: DTB_BASE,
            ..Params::new(access, el, flag_bits, &targets)
        };
        vcpus.push(VcpuPlan {
            params,
            step_faults,
        });
    }
    let params: Vec<Params> = vcpus.iter().map(|v: &VcpuPlan| v.params).collect();
    let dtb = payload::device_tree(&params, target_size)
        .map_err(|e| PlanError::Firmware(e.to_string()))?;
    blobs.push(("DTB".to_owned(), DTB_BASE, dtb));
    Ok(Plan {
        target_size,
        blobs,
        ghes,
        vcpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse;
    use std::path::Path;

    fn scenario(json: &str) -> Scenario {
        parse(Path::new("t.json"), json, "t").unwrap()
    }

    #[test]
    fn acpi_plan_points_the_guest_at_the_rsdp_and_the_sea_source() {
        let s = scenario(
            r#"{"firmware":"acpi","guest":{"el":0,"access":"store"},
                "faults":[{"page":3}],"expect":{"outcome":"guest-notified"}}"#,
        );
        let p = plan(&s).unwrap();
        assert_eq!(p.target_size, 64 << 20);
        let v = &p.vcpus[0];
        assert_eq!(v.step_faults, [Some(0)]);
        assert_eq!(v.params.targets[0], TARGET_BASE + 3 * 4096);
        assert_eq!((v.params.el, v.params.access), (0, AbiAccess::Store as u32));
        assert_eq!(v.params.flags, flags::WALK_ACPI | flags::ACK);
        assert_eq!(
            (v.params.rsdp_gpa, v.params.dtb_gpa),
            (FIRMWARE_BASE, DTB_BASE)
        );
        let ghes = p.ghes.unwrap();
        assert_eq!(ghes.notify, Notify::Sea);
        assert!(ghes.status_block > FIRMWARE_BASE);
        assert!(p
            .blobs
            .iter()
            .any(|(n, gpa, _)| n == "RSDP" && *gpa == FIRMWARE_BASE));
        let last = p.blobs.iter().map(|(_, gpa, b)| gpa + b.len() as u64).max();
        assert!(last.unwrap() <= DTB_BASE + ras_guest_abi::map::DTB_MAX_SIZE);
        let (_, _, dtb) = p.blobs.iter().find(|(n, _, _)| n == "DTB").unwrap();
        let info = ras_guest_abi::fdt::boot_info(dtb).unwrap();
        assert!(std::str::from_utf8(info.bootargs)
            .unwrap()
            .contains("ras.rsdp=0x40200000"));
    }

    #[test]
    fn dtb_plan_splits_faults_by_vcpu_and_has_no_ghes() {
        let s = scenario(
            r#"{"firmware":"dtb","guest":{"vcpus":2,"memory_mib":16,"backing":"hugetlb-2m"},
                "faults":[{"page":0},{"page":1,"vcpu":1},{"page":2}],
                "expect":{"outcome":"guest-notified"}}"#,
        );
        let p = plan(&s).unwrap();
        assert!(p.ghes.is_none());
        assert_eq!(p.vcpus[0].step_faults, [Some(0), Some(2)]);
        assert_eq!(p.vcpus[1].step_faults, [Some(1)]);
        assert_eq!(p.vcpus[1].params.targets[0], TARGET_BASE + 4096);
        assert_eq!(p.vcpus[0].params.flags, 0);
        assert_eq!(p.vcpus[0].params.dtb_gpa, DTB_BASE);
        assert_eq!(p.blobs.len(), 1);
        assert_eq!(
            (p.blobs[0].1, &p.blobs[0].2[..4]),
            (DTB_BASE, &[0xd0, 0x0d, 0xfe, 0xed][..])
        );
    }

    #[test]
    fn a_masked_serror_wait_is_the_step_that_meets_the_fault() {
        let s = scenario(
            r#"{"firmware":"dtb","guest":{"access":"none","serror_masked":true,"esb":true},
                "faults":[{"method":"hard-offline","page":2}],
                "vmm":{"mce_kill":"early","on_ao":"notify","on_memory_error":"serror"},
                "expect":{"outcome":"guest-unaffected"}}"#,
        );
        let v = &plan(&s).unwrap().vcpus[0];
        assert_eq!(v.params.target_count, 0);
        assert_eq!(v.step_faults, [Some(0)]);
        assert_eq!(v.params.flags, flags::SERROR_WAIT | flags::SERROR_ESB);
        let mut two = s.clone();
        two.faults.push(two.faults[0].clone());
        assert!(matches!(
            plan(&two),
            Err(PlanError::MaskedWaitFaults { count: 2, .. })
        ));
    }

    #[test]
    fn a_control_run_accesses_an_unpoisoned_page_and_limits_are_errors() {
        let s =
            scenario(r#"{"firmware":"dtb","faults":[],"expect":{"outcome":"guest-unaffected"}}"#);
        assert_eq!(plan(&s).unwrap().vcpus[0].step_faults, [None]);
        let mut big = s.clone();
        big.guest.memory_mib = 2048;
        assert_eq!(plan(&big).unwrap_err(), PlanError::TargetTooLarge(2048));
        let mut many = s;
        many.faults = vec![
            crate::scenario::Fault {
                method: Default::default(),
                page: 0,
                vcpu: 0,
                when: Default::default(),
            };
            5
        ];
        assert!(matches!(
            plan(&many),
            Err(PlanError::TooManyFaults { count: 5, .. })
        ));
    }
}
