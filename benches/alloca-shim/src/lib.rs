//! A pure-Rust stand-in for `alloca` 0.4's `with_alloca`, the one function criterion 0.8
//! calls (to shift the stack by a varying amount between samples).
//!
//! The real crate compiles C (cc-rs) for the target, so every aarch64 build of the harness,
//! tests included (criterion is a dev-dependency), would need a C cross compiler; the
//! workspace builds for aarch64-unknown-linux-musl with rust-lld alone. This version hands
//! the callback a heap buffer of the requested size instead: the stack does not move,
//! which matters for nanosecond benches, not for the microsecond-to-millisecond paths the
//! latency bench measures.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::mem::MaybeUninit;

/// Calls `f` with `size` bytes of uninitialised scratch memory.
pub fn with_alloca<R>(size: usize, f: impl FnOnce(&mut [MaybeUninit<u8>]) -> R) -> R {
    let mut buffer: Vec<MaybeUninit<u8>> = Vec::with_capacity(size);
    buffer.resize(size, MaybeUninit::uninit());
    f(&mut buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_gets_the_size_asked_for_and_its_result_comes_back() {
        assert_eq!(with_alloca(4096, |m| m.len()), 4096);
        assert_eq!(with_alloca(0, |m| m.len()), 0);
    }
}
