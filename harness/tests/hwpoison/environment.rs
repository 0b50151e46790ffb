//! The environment the scenarios rely on: KVM with the RAS injection capabilities. (That
//! MADV_HWPOISON delivers an action-required SIGBUS is proven by the `fault::` trials.)

use kvm_ioctls::Kvm;
use libtest_mimic::{Completion, Failed, Trial};

/// KVM_API_VERSION, include/uapi/linux/kvm.h.
const KVM_API_VERSION: i32 = 12;
/// KVM_CAP_ARM_INJECT_SERROR_ESR, include/uapi/linux/kvm.h.
const KVM_CAP_ARM_INJECT_SERROR_ESR: u64 = 158;
/// KVM_CAP_ARM_INJECT_EXT_DABT, include/uapi/linux/kvm.h.
const KVM_CAP_ARM_INJECT_EXT_DABT: u64 = 178;

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::ignorable_test("kvm::device_opens", || {
            let Ok(_kvm) = open_kvm_or_skip()? else {
                return Ok(skipped_no_access());
            };
            println!("opened /dev/kvm");
            Ok(Completion::Completed)
        }),
        Trial::ignorable_test("kvm::api_version_is_12", || {
            let Ok(kvm) = open_kvm_or_skip()? else {
                return Ok(skipped_no_access());
            };
            let v = kvm.get_api_version();
            println!("KVM_GET_API_VERSION = {v}");
            check(
                v == KVM_API_VERSION,
                format!("API version {v}, expected {KVM_API_VERSION}"),
            )
        }),
        cap_trial(
            "kvm::cap_arm_inject_serror_esr",
            KVM_CAP_ARM_INJECT_SERROR_ESR,
        ),
        cap_trial("kvm::cap_arm_inject_ext_dabt", KVM_CAP_ARM_INJECT_EXT_DABT),
        Trial::test(
            "kvm::guest_memory_copies_at_every_alignment",
            guest_memory_copies_at_every_alignment,
        ),
    ]
}

/// The volatile guest-memory copies (words in the middle, bytes at the edges) read back
/// exactly what they wrote, at every start alignment and length around a word, and refuse
/// a range past the mapping.
fn guest_memory_copies_at_every_alignment() -> Result<(), Failed> {
    use ras_harness::kvm::{Backing, Mapping};
    // 12 KiB of data in a mapping of whole host pages (one 16 KiB page on a 16K host).
    const LEN: usize = 3 * 4096;
    let page = ras_harness::fault::host_page_size();
    let m = Mapping::new(Backing::Anonymous, LEN.div_ceil(page) * page)?;
    for offset in 0..17 {
        for len in (0..41).chain([4096, 5000]) {
            m.write(0, &[0xAB; LEN])?;
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + offset + len) as u8).collect();
            m.write(offset, &data)?;
            let mut all = vec![0u8; LEN];
            m.read(0, &mut all)?;
            assert_eq!(
                &all[offset..offset + len],
                &data[..],
                "offset {offset} len {len}"
            );
            // Nothing outside the range changed.
            assert!(
                all[..offset].iter().all(|&b| b == 0xAB),
                "before {offset}+{len}"
            );
            assert!(
                all[offset + len..].iter().all(|&b| b == 0xAB),
                "after {offset}+{len}"
            );
            let mut back = vec![0u8; len];
            m.read(offset, &mut back)?;
            assert_eq!(back, data, "read at offset {offset} len {len}");
        }
    }
    assert!(m.write(m.len() - 4, &[0; 8]).is_err(), "past the end");
    Ok(())
}

fn check(ok: bool, why: String) -> Result<Completion, Failed> {
    if ok {
        Ok(Completion::Completed)
    } else {
        Err(why.into())
    }
}

fn skipped_no_access() -> Completion {
    Completion::ignored_with("no access to /dev/kvm (not root)")
}

/// Ok(Err(())) when /dev/kvm is there but closed to this user: a skip, not a failure.
fn open_kvm_or_skip() -> Result<Result<Kvm, ()>, Failed> {
    match Kvm::new() {
        Ok(kvm) => Ok(Ok(kvm)),
        Err(e) if e.errno() == libc::EACCES && !emuhost::is_root() => Ok(Err(())),
        Err(e) => Err(format!("opening /dev/kvm: {e}").into()),
    }
}

fn cap_trial(name: &str, cap: u64) -> Trial {
    Trial::ignorable_test(name, move || {
        let Ok(kvm) = open_kvm_or_skip()? else {
            return Ok(skipped_no_access());
        };
        let v = kvm.check_extension_raw(cap);
        println!("KVM_CHECK_EXTENSION({cap}) = {v}");
        check(v > 0, format!("capability {cap} absent ({v})"))
    })
}
