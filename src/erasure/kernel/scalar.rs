//! The portable kernel: one pass per (row, input) through the 64 KiB product table, 8 bytes per step. It is
//! the reference the SIMD kernels are tested against, the fallback on CPUs without them, and the tail handler
//! for every kernel (lengths below a vector block, unaligned heads before streaming stores).

use super::KernelImpl;
use crate::erasure::gf::MUL;

pub(super) static IMPL: KernelImpl = KernelImpl {
    block: 1,
    stream_align: 0,
    max_group: super::simd::MAX_GROUP,
    // Strips keep the output strip and one input strip in L1 across the k passes.
    strip_budget: 0,
    strip_min: 4096,
    strip_max: 4096,
    dot,
    copy,
    fence: || {},
};

/// # Safety
/// The [`super::DotFn`] contract (no CPU feature needed; any `len`, including 0).
unsafe fn dot(
    rows: &[*const u8],
    inputs: &[*const u8],
    outputs: &[*mut u8],
    start: usize,
    len: usize,
    _streaming: bool,
) {
    if len == 0 {
        return;
    }
    for (&row, &out) in rows.iter().zip(outputs) {
        // SAFETY: the caller guarantees `out` writable over start..start+len, not overlapping any input,
        // and `row` holding inputs.len() coefficients.
        let (dst, coefs) = unsafe {
            (
                core::slice::from_raw_parts_mut(out.add(start), len),
                core::slice::from_raw_parts(row, inputs.len()),
            )
        };
        for (j, (&input, &c)) in inputs.iter().zip(coefs).enumerate() {
            // SAFETY: the caller guarantees every input readable over start..start+len.
            let src = unsafe { core::slice::from_raw_parts(input.add(start), len) };
            if j == 0 {
                mul_into(c, src, dst);
            } else {
                mul_add_into(c, src, dst);
            }
        }
    }
}

/// # Safety
/// The [`super::CopyFn`] contract.
unsafe fn copy(src: *const u8, outputs: &[*mut u8], start: usize, len: usize, _streaming: bool) {
    for &out in outputs {
        // SAFETY: the caller guarantees src readable and out writable over start..start+len, not overlapping.
        unsafe { core::ptr::copy_nonoverlapping(src.add(start), out.add(start), len) };
    }
}

/// `dst = c·src`.
fn mul_into(c: u8, src: &[u8], dst: &mut [u8]) {
    match c {
        0 => dst.fill(0),
        1 => dst.copy_from_slice(src),
        _ => {
            let table = &MUL[c as usize];
            let (dst_chunks, dst_tail) = dst.as_chunks_mut::<8>();
            let (src_chunks, src_tail) = src.as_chunks::<8>();
            for (d, s) in dst_chunks.iter_mut().zip(src_chunks) {
                *d = s.map(|x| table[x as usize]);
            }
            for (d, &s) in dst_tail.iter_mut().zip(src_tail) {
                *d = table[s as usize];
            }
        }
    }
}

/// `dst ^= c·src`.
fn mul_add_into(c: u8, src: &[u8], dst: &mut [u8]) {
    match c {
        0 => {}
        1 => {
            let (dst_chunks, dst_tail) = dst.as_chunks_mut::<8>();
            let (src_chunks, src_tail) = src.as_chunks::<8>();
            for (d, s) in dst_chunks.iter_mut().zip(src_chunks) {
                *d = (u64::from_ne_bytes(*d) ^ u64::from_ne_bytes(*s)).to_ne_bytes();
            }
            for (d, &s) in dst_tail.iter_mut().zip(src_tail) {
                *d ^= s;
            }
        }
        _ => {
            let table = &MUL[c as usize];
            let (dst_chunks, dst_tail) = dst.as_chunks_mut::<8>();
            let (src_chunks, src_tail) = src.as_chunks::<8>();
            for (d, s) in dst_chunks.iter_mut().zip(src_chunks) {
                let product = u64::from_ne_bytes(s.map(|x| table[x as usize]));
                *d = (u64::from_ne_bytes(*d) ^ product).to_ne_bytes();
            }
            for (d, &s) in dst_tail.iter_mut().zip(src_tail) {
                *d ^= table[s as usize];
            }
        }
    }
}
