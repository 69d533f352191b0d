//! The one multiply-accumulate loop (and copy loop) that every SIMD kernel instantiates.
//!
//! The loops are architecture-neutral and `#[inline(always)]`: each kernel's `#[target_feature]` entry function
//! instantiates them with its [`VectorOps`], so the intrinsics inline into code compiled for that instruction
//! set. The loop logic is therefore exercised by every kernel the test machine can run, and a kernel that
//! cannot run there (GFNI, AVX-512) differs only in its few-line `VectorOps` impl.

/// Largest row group any kernel uses; [`dot_group`] has an instantiation for each size up to it.
pub(super) const MAX_GROUP: usize = 8;

/// The vector operations a kernel provides. Every method is `unsafe`: the caller must run on a CPU with the
/// implementing kernel's instruction set (guaranteed by being called from that kernel's entry function).
pub(super) trait VectorOps {
    /// Bytes per vector.
    const WIDTH: usize;
    type Vector: Copy;
    /// An input vector in the form a multiply consumes (split nibbles for table kernels, raw bytes for GFNI).
    type Operand: Copy;
    /// A coefficient in the form a multiply consumes (two 16-entry tables, or a GFNI bit matrix).
    type Multiplier: Copy;

    /// # Safety
    /// CPU support, and `src` is readable for `WIDTH` bytes (any alignment).
    unsafe fn load(src: *const u8) -> Self::Vector;
    /// # Safety
    /// CPU support, and `dst` is writable for `WIDTH` bytes (any alignment).
    unsafe fn store(dst: *mut u8, v: Self::Vector);
    /// A store that bypasses the cache where the ISA has one.
    /// # Safety
    /// As [`VectorOps::store`], and `dst` is aligned to the kernel's `stream_align`.
    unsafe fn store_streaming(dst: *mut u8, v: Self::Vector);
    /// # Safety
    /// CPU support.
    unsafe fn zero() -> Self::Vector;
    /// # Safety
    /// CPU support.
    unsafe fn xor(a: Self::Vector, b: Self::Vector) -> Self::Vector;
    /// # Safety
    /// CPU support.
    unsafe fn operand(v: Self::Vector) -> Self::Operand;
    /// # Safety
    /// CPU support.
    unsafe fn multiplier(c: u8) -> Self::Multiplier;
    /// Each byte of `x` times the coefficient `m` was made from.
    /// # Safety
    /// CPU support.
    unsafe fn mul(m: Self::Multiplier, x: Self::Operand) -> Self::Vector;
}

/// Dispatches a group of 1..=[`MAX_GROUP`] rows to the instantiation for exactly that many rows, so the
/// accumulators are a fixed-size array the compiler keeps in registers.
///
/// # Safety
/// The [`super::DotFn`] contract for `S`, with `len` a multiple of `S::WIDTH * U`.
#[inline(always)]
pub(super) unsafe fn dot_group<S: VectorOps, const U: usize>(
    rows: &[*const u8],
    inputs: &[*const u8],
    outputs: &[*mut u8],
    start: usize,
    len: usize,
    streaming: bool,
) {
    // SAFETY: forwarded contract; each arm passes exactly as many rows as its G.
    unsafe {
        match rows.len() {
            1 => dot_rows::<S, 1, U>(rows, inputs, outputs, start, len, streaming),
            2 => dot_rows::<S, 2, U>(rows, inputs, outputs, start, len, streaming),
            3 => dot_rows::<S, 3, U>(rows, inputs, outputs, start, len, streaming),
            4 => dot_rows::<S, 4, U>(rows, inputs, outputs, start, len, streaming),
            5 => dot_rows::<S, 5, U>(rows, inputs, outputs, start, len, streaming),
            6 => dot_rows::<S, 6, U>(rows, inputs, outputs, start, len, streaming),
            7 => dot_rows::<S, 7, U>(rows, inputs, outputs, start, len, streaming),
            8 => dot_rows::<S, 8, U>(rows, inputs, outputs, start, len, streaming),
            _ => unreachable!("row group of {} exceeds MAX_GROUP", rows.len()),
        }
    }
}

/// The dot-product loop: for each `S::WIDTH * U`-byte column block, accumulate all `G` rows over all inputs in
/// registers, then store each output block once.
///
/// # Safety
/// As [`dot_group`], with `rows.len() == outputs.len() == G`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // parallel fixed-size arrays read clearer with indices
unsafe fn dot_rows<S: VectorOps, const G: usize, const U: usize>(
    rows: &[*const u8],
    inputs: &[*const u8],
    outputs: &[*mut u8],
    start: usize,
    len: usize,
    streaming: bool,
) {
    debug_assert!(rows.len() == G && outputs.len() == G);
    debug_assert!(len.is_multiple_of(S::WIDTH * U));
    let mut coefs = [core::ptr::null::<u8>(); G];
    let mut outs = [core::ptr::null_mut::<u8>(); G];
    coefs.copy_from_slice(&rows[..G]);
    outs.copy_from_slice(&outputs[..G]);
    let end = start + len;
    let mut col = start;
    while col < end {
        // SAFETY: col..col + WIDTH*U lies in start..end, which the caller guarantees readable in every input
        // and writable in every output; each coefs[r] has inputs.len() coefficients; with `streaming`, col
        // stays aligned because the caller aligned `start` and blocks are multiples of the alignment.
        unsafe {
            let mut acc = [[S::zero(); U]; G];
            for (j, &input) in inputs.iter().enumerate() {
                let src = input.add(col);
                let mut x = [S::operand(S::zero()); U];
                for u in 0..U {
                    x[u] = S::operand(S::load(src.add(u * S::WIDTH)));
                }
                for r in 0..G {
                    let m = S::multiplier(*coefs[r].add(j));
                    for u in 0..U {
                        acc[r][u] = S::xor(acc[r][u], S::mul(m, x[u]));
                    }
                }
            }
            for r in 0..G {
                let dst = outs[r].add(col);
                for u in 0..U {
                    if streaming {
                        S::store_streaming(dst.add(u * S::WIDTH), acc[r][u]);
                    } else {
                        S::store(dst.add(u * S::WIDTH), acc[r][u]);
                    }
                }
            }
        }
        col += S::WIDTH * U;
    }
}

/// Copies one input to several outputs, reading it once.
///
/// # Safety
/// The [`super::CopyFn`] contract for `S`, with `len` a multiple of `S::WIDTH * U`.
#[inline(always)]
pub(super) unsafe fn copy_rows<S: VectorOps, const U: usize>(
    src: *const u8,
    outputs: &[*mut u8],
    start: usize,
    len: usize,
    streaming: bool,
) {
    debug_assert!(len.is_multiple_of(S::WIDTH * U));
    let end = start + len;
    let mut col = start;
    while col < end {
        // SAFETY: col..col + WIDTH*U lies within the caller's readable/writable range; alignment as in
        // `dot_rows`.
        unsafe {
            let mut v = [S::zero(); U];
            for (u, v) in v.iter_mut().enumerate() {
                *v = S::load(src.add(col + u * S::WIDTH));
            }
            for &out in outputs {
                for (u, &v) in v.iter().enumerate() {
                    let dst = out.add(col + u * S::WIDTH);
                    if streaming {
                        S::store_streaming(dst, v);
                    } else {
                        S::store(dst, v);
                    }
                }
            }
        }
        col += S::WIDTH * U;
    }
}
