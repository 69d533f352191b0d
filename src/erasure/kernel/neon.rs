//! AArch64 NEON kernel: split-nibble products with `tbl` (`vqtbl1q_u8`), 16-byte vectors.
//!
//! The [`VectorOps`] impl below is written against the `core::arch::aarch64` names only. On AArch64 it uses
//! the real intrinsics; in x86 test builds the same code is compiled against a bit-exact software model of
//! those intrinsics (`neon_emulation`) and tested against the scalar kernel, since this crate's development
//! machine cannot build for AArch64. Only the `#[target_feature]` entry functions are AArch64-only.

#[cfg(target_arch = "aarch64")]
use core::arch::aarch64::{
    uint8x16_t, vandq_u8, vdupq_n_u8, veorq_u8, vld1q_u8, vqtbl1q_u8, vshrq_n_u8, vst1q_u8,
};

#[cfg(not(target_arch = "aarch64"))]
use super::neon_emulation::{
    uint8x16_t, vandq_u8, vdupq_n_u8, veorq_u8, vld1q_u8, vqtbl1q_u8, vshrq_n_u8, vst1q_u8,
};

use super::simd::VectorOps;
use crate::erasure::gf::NIBBLE_TABLES;

/// NEON `tbl` on 16-byte vectors.
pub(super) struct Neon;

impl VectorOps for Neon {
    const WIDTH: usize = 16;
    type Vector = uint8x16_t;
    type Operand = (uint8x16_t, uint8x16_t);
    type Multiplier = (uint8x16_t, uint8x16_t);

    #[inline(always)]
    unsafe fn load(src: *const u8) -> uint8x16_t {
        // SAFETY: caller guarantees NEON and 16 readable bytes; vld1q_u8 has no alignment requirement.
        unsafe { vld1q_u8(src) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut u8, v: uint8x16_t) {
        // SAFETY: caller guarantees NEON and 16 writable bytes; vst1q_u8 has no alignment requirement.
        unsafe { vst1q_u8(dst, v) }
    }
    #[inline(always)]
    unsafe fn store_streaming(dst: *mut u8, v: uint8x16_t) {
        // SAFETY: as `store`; the NEON kernel never streams (stream_align 0), this is a plain store.
        unsafe { vst1q_u8(dst, v) }
    }
    #[inline(always)]
    unsafe fn zero() -> uint8x16_t {
        // SAFETY: caller guarantees NEON.
        unsafe { vdupq_n_u8(0) }
    }
    #[inline(always)]
    unsafe fn xor(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        // SAFETY: caller guarantees NEON.
        unsafe { veorq_u8(a, b) }
    }
    #[inline(always)]
    unsafe fn operand(v: uint8x16_t) -> (uint8x16_t, uint8x16_t) {
        // SAFETY: caller guarantees NEON. The per-byte shift brings in zeros, so the high nibble needs no mask.
        unsafe { (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v)) }
    }
    #[inline(always)]
    unsafe fn multiplier(c: u8) -> (uint8x16_t, uint8x16_t) {
        let table = &NIBBLE_TABLES[c as usize];
        // SAFETY: caller guarantees NEON; each table half is 16 readable bytes.
        unsafe { (vld1q_u8(table.low.as_ptr()), vld1q_u8(table.high.as_ptr())) }
    }
    #[inline(always)]
    unsafe fn mul(
        (low, high): (uint8x16_t, uint8x16_t),
        (x_low, x_high): (uint8x16_t, uint8x16_t),
    ) -> uint8x16_t {
        // SAFETY: caller guarantees NEON. Indices are < 16, so `tbl` never hits its out-of-range zeroing.
        unsafe { veorq_u8(vqtbl1q_u8(low, x_low), vqtbl1q_u8(high, x_high)) }
    }
}

#[cfg(target_arch = "aarch64")]
mod entry {
    use super::super::KernelImpl;
    use super::super::simd::{copy_rows, dot_group};
    use super::Neon;

    /// # Safety
    /// The [`super::super::DotFn`] contract; the CPU has NEON.
    #[target_feature(enable = "neon")]
    unsafe fn neon_dot(
        rows: &[*const u8],
        inputs: &[*const u8],
        outputs: &[*mut u8],
        start: usize,
        len: usize,
        streaming: bool,
    ) {
        // SAFETY: forwarded contract; NEON is enabled for this function.
        unsafe { dot_group::<Neon, 2>(rows, inputs, outputs, start, len, streaming) }
    }

    /// # Safety
    /// The [`super::super::CopyFn`] contract; the CPU has NEON.
    #[target_feature(enable = "neon")]
    unsafe fn neon_copy(
        src: *const u8,
        outputs: &[*mut u8],
        start: usize,
        len: usize,
        streaming: bool,
    ) {
        // SAFETY: forwarded contract; NEON is enabled for this function.
        unsafe { copy_rows::<Neon, 2>(src, outputs, start, len, streaming) }
    }

    pub(in super::super) static NEON: KernelImpl = KernelImpl {
        block: 32,
        stream_align: 0,
        // 32 vector registers: 4 rows × 2 accumulators + 4 operands + 2 tables leaves plenty spare.
        max_group: 6,
        strip_budget: 192_000,
        strip_min: 4 << 10,
        strip_max: 64 << 10,
        dot: neon_dot,
        copy: neon_copy,
        fence: || {},
    };
}

/// The NEON kernel, if the CPU has NEON (every AArch64 Linux CPU does).
#[cfg(target_arch = "aarch64")]
pub(super) fn implementation() -> Option<&'static super::KernelImpl> {
    std::arch::is_aarch64_feature_detected!("neon").then_some(&entry::NEON)
}

#[cfg(all(test, not(target_arch = "aarch64")))]
mod tests {
    use super::super::simd::{copy_rows, dot_group};
    use super::Neon;
    use crate::erasure::gf::mul;

    /// Runs the generic loop with the emulated NEON ops and compares with a direct byte-wise computation.
    #[test]
    fn emulated_neon_matches_reference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (k, rows_n, len) in [(1, 1, 32), (3, 7, 96), (5, 6, 64), (10, 4, 160), (2, 2, 32)] {
            let inputs: Vec<Vec<u8>> = (0..k)
                .map(|_| (0..len + 3).map(|_| next() as u8).collect())
                .collect();
            let coefs: Vec<Vec<u8>> = (0..rows_n)
                .map(|_| (0..k).map(|_| next() as u8).collect())
                .collect();
            let mut outputs = vec![vec![0u8; len + 5]; rows_n];
            let input_ptrs: Vec<*const u8> = inputs.iter().map(|b| b[3..].as_ptr()).collect();
            let row_ptrs: Vec<*const u8> = coefs.iter().map(|r| r.as_ptr()).collect();
            let output_ptrs: Vec<*mut u8> =
                outputs.iter_mut().map(|o| o[5..].as_mut_ptr()).collect();
            for group in (0..rows_n).collect::<Vec<_>>().chunks(6) {
                let (a, b) = (group[0], group[group.len() - 1] + 1);
                // SAFETY: the emulated ops need no CPU feature; buffers are len bytes past the offsets, coefficient
                // rows have k entries, outputs are distinct Vecs; len is a multiple of the 32-byte block.
                unsafe {
                    dot_group::<Neon, 2>(
                        &row_ptrs[a..b],
                        &input_ptrs,
                        &output_ptrs[a..b],
                        0,
                        len,
                        false,
                    );
                }
            }
            for (r, out) in outputs.iter().enumerate() {
                for i in 0..len {
                    let want = (0..k).fold(0, |acc, j| acc ^ mul(coefs[r][j], inputs[j][3 + i]));
                    assert_eq!(out[5 + i], want, "k={k} row={r} byte={i}");
                }
            }
            let mut copies = vec![vec![0u8; len]; 3];
            let copy_ptrs: Vec<*mut u8> = copies.iter_mut().map(|o| o.as_mut_ptr()).collect();
            // SAFETY: as above, with one input and three distinct outputs.
            unsafe { copy_rows::<Neon, 2>(input_ptrs[0], &copy_ptrs, 0, len, false) };
            assert!(copies.iter().all(|c| c[..] == inputs[0][3..3 + len]));
        }
    }
}
