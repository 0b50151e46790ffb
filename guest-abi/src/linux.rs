//! The Linux guest's side (guests/linux-init, a user-space init the harness boots under a
//! real kernel): the words in the first 16 bytes of its flag page, a private anonymous page
//! the harness finds in the VMM's memory by the physical address the init printed.

/// The flag page's first 8 bytes, written by the init: the harness checks them at that
/// address in the VMM's memory before it trusts the mapping.
pub const FLAG_MAGIC: u64 = u64::from_le_bytes(*b"RASLINUX");
/// The next 8 bytes, written by the harness: the go-ahead the init waits for (after the
/// target is poisoned, or after the last record is fed).
pub const GO: u64 = u64::from_le_bytes(*b"RASGOGO!");
