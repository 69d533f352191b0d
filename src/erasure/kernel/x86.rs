//! x86-64 kernels: [`VectorOps`] for SSSE3, AVX2 and AVX-512BW split-nibble `pshufb` products and for GFNI
//! `vgf2p8affineqb` on ymm and zmm, plus one `#[target_feature]` entry pair (dot, copy) per kernel that
//! instantiates the shared loops of [`super::simd`].
//!
//! Split-nibble multiply: `c·x = T_lo[x & 15] ^ T_hi[x >> 4]`, two 16-byte tables per coefficient broadcast to
//! every 128-bit lane (`pshufb` looks up within lanes). GFNI multiply: one affine transform with the
//! coefficient's bit matrix from [`AFFINE_MATRICES`] broadcast to every qword.

use core::arch::x86_64::*;

use super::simd::{VectorOps, copy_rows, dot_group};
use super::{Kernel, KernelImpl};
use crate::erasure::gf::{AFFINE_MATRICES, NIBBLE_TABLES};

/// Entry points and tuning of `kernel` if this CPU supports it.
pub(super) fn implementation(kernel: Kernel) -> Option<&'static KernelImpl> {
    let (supported, imp) = match kernel {
        Kernel::Ssse3 => (is_x86_feature_detected!("ssse3"), &SSSE3),
        Kernel::Avx2 => (is_x86_feature_detected!("avx2"), &AVX2),
        Kernel::Avx512Bw => (
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"),
            &AVX512BW,
        ),
        Kernel::GfniAvx2 => (
            is_x86_feature_detected!("gfni") && is_x86_feature_detected!("avx2"),
            &GFNI_AVX2,
        ),
        Kernel::GfniAvx512 => (
            is_x86_feature_detected!("gfni") && is_x86_feature_detected!("avx512f"),
            &GFNI_AVX512,
        ),
        Kernel::Scalar | Kernel::Neon => return None,
    };
    supported.then_some(imp)
}

fn sfence() {
    // SAFETY: SSE is part of the x86-64 baseline, so `sfence` is always available.
    unsafe { _mm_sfence() }
}

/// Builds a kernel's entry functions and [`KernelImpl`]: `$features` for `#[target_feature]`, `$ops` the
/// [`VectorOps`], `$unroll` vectors per row per iteration.
macro_rules! x86_kernel {
    (
        $name:ident, $dot:ident, $copy:ident, features = $features:literal, ops = $ops:ty, unroll = $unroll:literal,
        max_group = $group:literal, stream_align = $align:expr, strip_budget = $budget:literal
    ) => {
        /// # Safety
        /// The [`super::DotFn`] contract; the CPU has the listed features.
        #[target_feature(enable = $features)]
        unsafe fn $dot(
            rows: &[*const u8],
            inputs: &[*const u8],
            outputs: &[*mut u8],
            start: usize,
            len: usize,
            streaming: bool,
        ) {
            // SAFETY: forwarded contract; this function's features are the ones `$ops` needs.
            unsafe { dot_group::<$ops, $unroll>(rows, inputs, outputs, start, len, streaming) }
        }

        /// # Safety
        /// The [`super::CopyFn`] contract; the CPU has the listed features.
        #[target_feature(enable = $features)]
        unsafe fn $copy(
            src: *const u8,
            outputs: &[*mut u8],
            start: usize,
            len: usize,
            streaming: bool,
        ) {
            // SAFETY: forwarded contract; this function's features are the ones `$ops` needs.
            unsafe { copy_rows::<$ops, $unroll>(src, outputs, start, len, streaming) }
        }

        static $name: KernelImpl = KernelImpl {
            block: <$ops as VectorOps>::WIDTH * $unroll,
            stream_align: $align,
            max_group: $group,
            strip_budget: $budget,
            strip_min: 4 << 10,
            strip_max: 64 << 10,
            dot: $dot,
            copy: $copy,
            fence: sfence,
        };
    };
}

x86_kernel!(
    SSSE3,
    ssse3_dot,
    ssse3_copy,
    features = "ssse3",
    ops = Ssse3,
    unroll = 2,
    max_group = 4,
    stream_align = 0,
    strip_budget = 192_000
);
x86_kernel!(
    AVX2,
    avx2_dot,
    avx2_copy,
    features = "avx2",
    ops = Avx2,
    unroll = 2,
    max_group = 4,
    stream_align = 64,
    strip_budget = 192_000
);
x86_kernel!(
    AVX512BW,
    avx512bw_dot,
    avx512bw_copy,
    features = "avx512f,avx512bw",
    ops = Avx512Bw,
    unroll = 1,
    max_group = 8,
    stream_align = 64,
    strip_budget = 192_000
);
x86_kernel!(
    GFNI_AVX2,
    gfni_avx2_dot,
    gfni_avx2_copy,
    features = "gfni,avx2",
    ops = GfniAvx2,
    unroll = 2,
    max_group = 6,
    stream_align = 64,
    strip_budget = 192_000
);
x86_kernel!(
    GFNI_AVX512,
    gfni_avx512_dot,
    gfni_avx512_copy,
    features = "gfni,avx512f",
    ops = GfniAvx512,
    unroll = 1,
    max_group = 8,
    stream_align = 64,
    strip_budget = 192_000
);

/// SSSE3 `pshufb` on 16-byte vectors.
struct Ssse3;

impl VectorOps for Ssse3 {
    const WIDTH: usize = 16;
    type Vector = __m128i;
    type Operand = (__m128i, __m128i);
    type Multiplier = (__m128i, __m128i);

    #[inline(always)]
    unsafe fn load(src: *const u8) -> __m128i {
        // SAFETY: caller guarantees 16 readable bytes; loadu has no alignment requirement.
        unsafe { _mm_loadu_si128(src.cast()) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut u8, v: __m128i) {
        // SAFETY: caller guarantees 16 writable bytes; storeu has no alignment requirement.
        unsafe { _mm_storeu_si128(dst.cast(), v) }
    }
    #[inline(always)]
    unsafe fn store_streaming(dst: *mut u8, v: __m128i) {
        // SAFETY: caller guarantees 16 writable bytes aligned to 16.
        unsafe { _mm_stream_si128(dst.cast(), v) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m128i {
        // SAFETY: SSE2 is baseline on x86-64.
        unsafe { _mm_setzero_si128() }
    }
    #[inline(always)]
    unsafe fn xor(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: SSE2 is baseline on x86-64.
        unsafe { _mm_xor_si128(a, b) }
    }
    #[inline(always)]
    unsafe fn operand(v: __m128i) -> (__m128i, __m128i) {
        // SAFETY: SSE2 is baseline on x86-64.
        unsafe {
            let mask = _mm_set1_epi8(0x0f);
            (
                _mm_and_si128(v, mask),
                _mm_and_si128(_mm_srli_epi64::<4>(v), mask),
            )
        }
    }
    #[inline(always)]
    unsafe fn multiplier(c: u8) -> (__m128i, __m128i) {
        let table = &NIBBLE_TABLES[c as usize];
        // SAFETY: each table half is 16 readable bytes.
        unsafe {
            (
                _mm_loadu_si128(table.low.as_ptr().cast()),
                _mm_loadu_si128(table.high.as_ptr().cast()),
            )
        }
    }
    #[inline(always)]
    unsafe fn mul((low, high): (__m128i, __m128i), (x_low, x_high): (__m128i, __m128i)) -> __m128i {
        // SAFETY: caller guarantees SSSE3.
        unsafe { _mm_xor_si128(_mm_shuffle_epi8(low, x_low), _mm_shuffle_epi8(high, x_high)) }
    }
}

/// AVX2 `vpshufb` on 32-byte vectors.
struct Avx2;

impl VectorOps for Avx2 {
    const WIDTH: usize = 32;
    type Vector = __m256i;
    type Operand = (__m256i, __m256i);
    type Multiplier = (__m256i, __m256i);

    #[inline(always)]
    unsafe fn load(src: *const u8) -> __m256i {
        // SAFETY: caller guarantees AVX and 32 readable bytes; no alignment requirement.
        unsafe { _mm256_loadu_si256(src.cast()) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut u8, v: __m256i) {
        // SAFETY: caller guarantees AVX and 32 writable bytes; no alignment requirement.
        unsafe { _mm256_storeu_si256(dst.cast(), v) }
    }
    #[inline(always)]
    unsafe fn store_streaming(dst: *mut u8, v: __m256i) {
        // SAFETY: caller guarantees AVX and 32 writable bytes aligned to 32 (stream_align is 64).
        unsafe { _mm256_stream_si256(dst.cast(), v) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        // SAFETY: caller guarantees AVX.
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: caller guarantees AVX2.
        unsafe { _mm256_xor_si256(a, b) }
    }
    #[inline(always)]
    unsafe fn operand(v: __m256i) -> (__m256i, __m256i) {
        // SAFETY: caller guarantees AVX2.
        unsafe {
            let mask = _mm256_set1_epi8(0x0f);
            (
                _mm256_and_si256(v, mask),
                _mm256_and_si256(_mm256_srli_epi64::<4>(v), mask),
            )
        }
    }
    #[inline(always)]
    unsafe fn multiplier(c: u8) -> (__m256i, __m256i) {
        let table = &NIBBLE_TABLES[c as usize];
        // SAFETY: caller guarantees AVX2; each table half is 16 readable bytes.
        unsafe {
            (
                _mm256_broadcastsi128_si256(_mm_loadu_si128(table.low.as_ptr().cast())),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(table.high.as_ptr().cast())),
            )
        }
    }
    #[inline(always)]
    unsafe fn mul((low, high): (__m256i, __m256i), (x_low, x_high): (__m256i, __m256i)) -> __m256i {
        // SAFETY: caller guarantees AVX2.
        unsafe {
            _mm256_xor_si256(
                _mm256_shuffle_epi8(low, x_low),
                _mm256_shuffle_epi8(high, x_high),
            )
        }
    }
}

/// AVX-512BW `vpshufb` on 64-byte vectors.
struct Avx512Bw;

impl VectorOps for Avx512Bw {
    const WIDTH: usize = 64;
    type Vector = __m512i;
    type Operand = (__m512i, __m512i);
    type Multiplier = (__m512i, __m512i);

    #[inline(always)]
    unsafe fn load(src: *const u8) -> __m512i {
        // SAFETY: caller guarantees AVX-512F and 64 readable bytes; no alignment requirement.
        unsafe { _mm512_loadu_si512(src.cast()) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut u8, v: __m512i) {
        // SAFETY: caller guarantees AVX-512F and 64 writable bytes; no alignment requirement.
        unsafe { _mm512_storeu_si512(dst.cast(), v) }
    }
    #[inline(always)]
    unsafe fn store_streaming(dst: *mut u8, v: __m512i) {
        // SAFETY: caller guarantees AVX-512F and 64 writable bytes aligned to 64.
        unsafe { _mm512_stream_si512(dst.cast(), v) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn xor(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_xor_si512(a, b) }
    }
    #[inline(always)]
    unsafe fn operand(v: __m512i) -> (__m512i, __m512i) {
        // SAFETY: caller guarantees AVX-512F/BW.
        unsafe {
            let mask = _mm512_set1_epi8(0x0f);
            (
                _mm512_and_si512(v, mask),
                _mm512_and_si512(_mm512_srli_epi64::<4>(v), mask),
            )
        }
    }
    #[inline(always)]
    unsafe fn multiplier(c: u8) -> (__m512i, __m512i) {
        let table = &NIBBLE_TABLES[c as usize];
        // SAFETY: caller guarantees AVX-512F; each table half is 16 readable bytes.
        unsafe {
            (
                _mm512_broadcast_i32x4(_mm_loadu_si128(table.low.as_ptr().cast())),
                _mm512_broadcast_i32x4(_mm_loadu_si128(table.high.as_ptr().cast())),
            )
        }
    }
    #[inline(always)]
    unsafe fn mul((low, high): (__m512i, __m512i), (x_low, x_high): (__m512i, __m512i)) -> __m512i {
        // SAFETY: caller guarantees AVX-512BW.
        unsafe {
            _mm512_xor_si512(
                _mm512_shuffle_epi8(low, x_low),
                _mm512_shuffle_epi8(high, x_high),
            )
        }
    }
}

/// GFNI `vgf2p8affineqb` on 32-byte vectors; loads, stores and XOR as [`Avx2`].
struct GfniAvx2;

impl VectorOps for GfniAvx2 {
    const WIDTH: usize = 32;
    type Vector = __m256i;
    type Operand = __m256i;
    type Multiplier = __m256i;

    #[inline(always)]
    unsafe fn load(src: *const u8) -> __m256i {
        // SAFETY: same contract as Avx2::load.
        unsafe { Avx2::load(src) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut u8, v: __m256i) {
        // SAFETY: same contract as Avx2::store.
        unsafe { Avx2::store(dst, v) }
    }
    #[inline(always)]
    unsafe fn store_streaming(dst: *mut u8, v: __m256i) {
        // SAFETY: same contract as Avx2::store_streaming.
        unsafe { Avx2::store_streaming(dst, v) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        // SAFETY: same contract as Avx2::zero.
        unsafe { Avx2::zero() }
    }
    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: same contract as Avx2::xor.
        unsafe { Avx2::xor(a, b) }
    }
    #[inline(always)]
    unsafe fn operand(v: __m256i) -> __m256i {
        v
    }
    #[inline(always)]
    unsafe fn multiplier(c: u8) -> __m256i {
        // SAFETY: caller guarantees AVX.
        unsafe { _mm256_set1_epi64x(AFFINE_MATRICES[c as usize] as i64) }
    }
    #[inline(always)]
    unsafe fn mul(m: __m256i, x: __m256i) -> __m256i {
        // SAFETY: caller guarantees GFNI and AVX. Operand order: data first, bit matrix second.
        unsafe { _mm256_gf2p8affine_epi64_epi8::<0>(x, m) }
    }
}

/// GFNI `vgf2p8affineqb` on 64-byte vectors; loads, stores and XOR as [`Avx512Bw`].
struct GfniAvx512;

impl VectorOps for GfniAvx512 {
    const WIDTH: usize = 64;
    type Vector = __m512i;
    type Operand = __m512i;
    type Multiplier = __m512i;

    #[inline(always)]
    unsafe fn load(src: *const u8) -> __m512i {
        // SAFETY: same contract as Avx512Bw::load (AVX-512F only).
        unsafe { Avx512Bw::load(src) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut u8, v: __m512i) {
        // SAFETY: same contract as Avx512Bw::store (AVX-512F only).
        unsafe { Avx512Bw::store(dst, v) }
    }
    #[inline(always)]
    unsafe fn store_streaming(dst: *mut u8, v: __m512i) {
        // SAFETY: same contract as Avx512Bw::store_streaming (AVX-512F only).
        unsafe { Avx512Bw::store_streaming(dst, v) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: same contract as Avx512Bw::zero (AVX-512F only).
        unsafe { Avx512Bw::zero() }
    }
    #[inline(always)]
    unsafe fn xor(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: same contract as Avx512Bw::xor (AVX-512F only).
        unsafe { Avx512Bw::xor(a, b) }
    }
    #[inline(always)]
    unsafe fn operand(v: __m512i) -> __m512i {
        v
    }
    #[inline(always)]
    unsafe fn multiplier(c: u8) -> __m512i {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_set1_epi64(AFFINE_MATRICES[c as usize] as i64) }
    }
    #[inline(always)]
    unsafe fn mul(m: __m512i, x: __m512i) -> __m512i {
        // SAFETY: caller guarantees GFNI and AVX-512F. Operand order: data first, bit matrix second.
        unsafe { _mm512_gf2p8affine_epi64_epi8::<0>(x, m) }
    }
}
