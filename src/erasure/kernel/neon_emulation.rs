//! A byte-exact software model of the few AArch64 NEON intrinsics the NEON kernel uses, so that kernel's
//! [`super::simd::VectorOps`] impl compiles and is tested on x86 development machines (test builds only).
//!
//! Each function follows the Arm definition: `vqtbl1q_u8` yields 0 for an index ≥ 16, `vshrq_n_u8` shifts
//! each byte right bringing in zeros. They are `unsafe fn` to match the calling convention of the real
//! intrinsics from code without `#[target_feature]`.

#![allow(non_camel_case_types)] // mirror the Arm names so neon.rs reads the same on both targets

/// Sixteen bytes, as NEON's `uint8x16_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct uint8x16_t([u8; 16]);

/// # Safety
/// `src` is readable for 16 bytes.
pub(super) unsafe fn vld1q_u8(src: *const u8) -> uint8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes; read_unaligned has no alignment requirement.
    uint8x16_t(unsafe { src.cast::<[u8; 16]>().read_unaligned() })
}

/// # Safety
/// `dst` is writable for 16 bytes.
pub(super) unsafe fn vst1q_u8(dst: *mut u8, v: uint8x16_t) {
    // SAFETY: the caller guarantees 16 writable bytes; write_unaligned has no alignment requirement.
    unsafe { dst.cast::<[u8; 16]>().write_unaligned(v.0) }
}

/// # Safety
/// None; `unsafe` only to match the real intrinsic's use.
pub(super) unsafe fn vdupq_n_u8(x: u8) -> uint8x16_t {
    uint8x16_t([x; 16])
}

/// # Safety
/// None; `unsafe` only to match the real intrinsic's use.
pub(super) unsafe fn vandq_u8(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
    uint8x16_t(std::array::from_fn(|i| a.0[i] & b.0[i]))
}

/// # Safety
/// None; `unsafe` only to match the real intrinsic's use.
pub(super) unsafe fn veorq_u8(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
    uint8x16_t(std::array::from_fn(|i| a.0[i] ^ b.0[i]))
}

/// # Safety
/// None; `unsafe` only to match the real intrinsic's use.
pub(super) unsafe fn vshrq_n_u8<const N: i32>(a: uint8x16_t) -> uint8x16_t {
    uint8x16_t(a.0.map(|x| x >> N))
}

/// Table lookup: byte i of the result is `table[index[i]]`, or 0 when `index[i]` ≥ 16.
///
/// # Safety
/// None; `unsafe` only to match the real intrinsic's use.
pub(super) unsafe fn vqtbl1q_u8(table: uint8x16_t, index: uint8x16_t) -> uint8x16_t {
    uint8x16_t(
        index
            .0
            .map(|i| table.0.get(usize::from(i)).copied().unwrap_or(0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookup_zeroes_out_of_range_indices() {
        let table = uint8x16_t(std::array::from_fn(|i| 100 + i as u8));
        let index = uint8x16_t([0, 15, 16, 255, 3, 3, 1, 2, 17, 4, 5, 6, 7, 8, 9, 10]);
        // SAFETY: the emulation needs no CPU feature.
        let out = unsafe { vqtbl1q_u8(table, index) };
        assert_eq!(
            out.0,
            [
                100, 115, 0, 0, 103, 103, 101, 102, 0, 104, 105, 106, 107, 108, 109, 110
            ]
        );
        // SAFETY: as above.
        assert_eq!(unsafe { vshrq_n_u8::<4>(vdupq_n_u8(0xab)) }.0, [0x0a; 16]);
    }
}
