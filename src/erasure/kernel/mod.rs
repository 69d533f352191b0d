//! Kernel selection and the portable driver that feeds them.
//!
//! Every kernel computes the same thing: for a group of output rows, `out[r][i] = ⊕_j coef[r][j]·in[j][i]`
//! over a column range, keeping the group's accumulators in registers, reading each input once per range and
//! storing each output once. The SIMD kernels share one generic loop ([`simd`]) over a small trait of vector
//! operations; only those few-line operations differ per instruction set. The driver here does what is common:
//! split rows into groups, cut columns into cache-sized strips, peel unaligned heads and short tails off to the
//! scalar kernel, route whole-row copies (coefficient rows that are unit vectors) to a copy loop, and decide
//! between regular and non-temporal stores.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use super::ErasureError;

#[cfg(any(target_arch = "aarch64", test))]
mod neon;
#[cfg(all(test, not(target_arch = "aarch64")))]
mod neon_emulation;
mod scalar;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Most shares (and so most rows, inputs and outputs) a codec can have.
pub(crate) const MAX_SHARES: usize = 256;

/// Environment variable that overrides the automatic kernel choice.
pub const KERNEL_ENV_VAR: &str = "TAHOE_MOUNT_EC_KERNEL";

/// An implementation of the GF(2^8) multiply-accumulate loops. All produce identical bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable table lookups (64 KiB product table), unrolled by 8 bytes.
    Scalar,
    /// x86 SSSE3 `pshufb` split-nibble products, 16-byte vectors.
    Ssse3,
    /// x86 AVX2 `vpshufb`, 32-byte vectors, 64 bytes per row per iteration.
    Avx2,
    /// x86 AVX-512BW `vpshufb`, 64-byte vectors.
    Avx512Bw,
    /// x86 GFNI `vgf2p8affineqb` on 32-byte vectors (AVX2-class CPUs with GFNI).
    GfniAvx2,
    /// x86 GFNI `vgf2p8affineqb` on 64-byte vectors (AVX-512).
    GfniAvx512,
    /// AArch64 NEON `tbl` split-nibble products.
    Neon,
}

impl Kernel {
    /// Every kernel, slowest first: the order in which [`Kernel::best`] prefers the last available one.
    pub const ALL: [Kernel; 7] = [
        Kernel::Scalar,
        Kernel::Neon,
        Kernel::Ssse3,
        Kernel::Avx2,
        Kernel::Avx512Bw,
        Kernel::GfniAvx2,
        Kernel::GfniAvx512,
    ];

    /// The name used by [`KERNEL_ENV_VAR`], `Display` and `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Ssse3 => "ssse3",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Bw => "avx512bw",
            Kernel::GfniAvx2 => "gfni-avx2",
            Kernel::GfniAvx512 => "gfni-avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this binary contains the kernel and this CPU can run it.
    pub fn is_available(self) -> bool {
        implementation(self).is_some()
    }

    /// The kernels this CPU runs, slowest first (always starts with [`Kernel::Scalar`]).
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest kernel this CPU runs (ignores [`KERNEL_ENV_VAR`]).
    pub fn best() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// The kernel new codecs use: [`KERNEL_ENV_VAR`] if set (an unknown or unavailable name is an error),
    /// otherwise [`Kernel::best`]. Decided once per process.
    pub fn selected() -> Result<Kernel, ErasureError> {
        static SELECTED: OnceLock<Result<Kernel, ErasureError>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var(KERNEL_ENV_VAR) {
                Ok(name) if !name.trim().is_empty() => {
                    let kernel: Kernel = name.trim().parse()?;
                    if kernel.is_available() {
                        Ok(kernel)
                    } else {
                        Err(ErasureError::KernelUnavailable(kernel))
                    }
                }
                _ => Ok(Kernel::best()),
            })
            .clone()
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = ErasureError;

    fn from_str(s: &str) -> Result<Kernel, ErasureError> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ErasureError::UnknownKernel(s.to_owned()))
    }
}

/// Computes `outputs[r][start..start+len] = ⊕_j rows[r][j]·inputs[j][start..start+len]` for one group.
///
/// # Safety
/// The CPU supports the kernel's instruction set; `rows.len() == outputs.len()` is between 1 and the kernel's
/// `max_group`; each `rows[r]` points to `inputs.len()` readable coefficients; every input is readable and every
/// output writable over `start..start+len`; outputs overlap neither each other nor any input; `len` is a
/// multiple of the kernel's `block`; with `streaming`, every `outputs[r] + start` is `stream_align`-aligned.
type DotFn = unsafe fn(
    rows: &[*const u8],
    inputs: &[*const u8],
    outputs: &[*mut u8],
    start: usize,
    len: usize,
    streaming: bool,
);

/// Copies `src[start..start+len]` to every output; the contract mirrors [`DotFn`] with one input.
type CopyFn =
    unsafe fn(src: *const u8, outputs: &[*mut u8], start: usize, len: usize, streaming: bool);

/// One kernel's entry points and tuning.
pub(crate) struct KernelImpl {
    /// Bytes per row per loop iteration; the driver only passes multiples of it.
    block: usize,
    /// Alignment that non-temporal stores need; 0 when the kernel never streams.
    stream_align: usize,
    /// Most output rows per pass over the inputs (bounded by the register file).
    max_group: usize,
    /// Column strips aim to keep `k` input strips within this many bytes of cache.
    strip_budget: usize,
    strip_min: usize,
    strip_max: usize,
    dot: DotFn,
    copy: CopyFn,
    /// Orders earlier non-temporal stores before later stores (`sfence`).
    fence: fn(),
}

impl KernelImpl {
    fn strip_len(&self, k: usize) -> usize {
        let strip = (self.strip_budget / k.max(1)).clamp(self.strip_min, self.strip_max);
        (strip / self.block).max(1) * self.block
    }
}

/// The entry points of `kernel`, or `None` if this binary or CPU lacks it.
pub(crate) fn implementation(kernel: Kernel) -> Option<&'static KernelImpl> {
    match kernel {
        Kernel::Scalar => Some(&scalar::IMPL),
        #[cfg(target_arch = "x86_64")]
        Kernel::Ssse3 | Kernel::Avx2 | Kernel::Avx512Bw | Kernel::GfniAvx2 | Kernel::GfniAvx512 => {
            x86::implementation(kernel)
        }
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => neon::implementation(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Non-temporal stores pay off only once the outputs no longer fit in cache.
pub(crate) const DEFAULT_STREAMING_THRESHOLD: usize = 8 << 20;

/// One encode or decode call, described with safe borrows.
pub(crate) struct Work<'w, 'a> {
    /// The k input blocks, all `len` bytes.
    pub(crate) inputs: &'w [&'a [u8]],
    /// Coefficient rows (k bytes each) of the outputs to compute.
    pub(crate) rows: &'w [&'a [u8]],
    /// One output per row, `len` bytes each.
    pub(crate) row_outputs: &'w mut [&'a mut [u8]],
    /// Outputs that are plain copies of an input: (input index, output).
    pub(crate) copies: &'w mut [(usize, &'a mut [u8])],
    /// Use non-temporal stores when the call writes at least this many bytes.
    pub(crate) streaming_threshold: usize,
}

/// If `row` is a unit vector (one coefficient 1, the rest 0), the index of its 1.
pub(crate) fn unit_source(row: &[u8]) -> Option<usize> {
    let j = row.iter().position(|&c| c != 0)?;
    (row[j] == 1 && row[j + 1..].iter().all(|&c| c == 0)).then_some(j)
}

/// Runs `work` with `imp`. Panics only on a violated internal invariant (mismatched lengths), which the codec
/// rules out before calling.
pub(crate) fn run(imp: &KernelImpl, work: Work<'_, '_>) {
    let k = work.inputs.len();
    let len = work.inputs.first().map_or(0, |b| b.len());
    assert!(
        (1..=MAX_SHARES).contains(&k),
        "kernel driver: bad input count"
    );
    assert!(
        work.inputs.iter().all(|b| b.len() == len),
        "kernel driver: unequal inputs"
    );
    assert!(
        work.rows.len() == work.row_outputs.len() && work.rows.len() <= MAX_SHARES,
        "kernel driver: rows and outputs differ"
    );
    assert!(
        work.rows.iter().all(|r| r.len() == k),
        "kernel driver: bad coefficient row"
    );
    assert!(
        work.row_outputs.iter().all(|o| o.len() == len),
        "kernel driver: bad output"
    );
    assert!(
        work.copies.len() <= MAX_SHARES
            && work.copies.iter().all(|(j, o)| *j < k && o.len() == len),
        "kernel driver: bad copy"
    );
    if len == 0 {
        return;
    }
    let written = (work.rows.len() + work.copies.len()).saturating_mul(len);
    let streaming = imp.stream_align != 0 && written >= work.streaming_threshold;

    let mut inputs = [core::ptr::null::<u8>(); MAX_SHARES];
    for (p, b) in inputs.iter_mut().zip(work.inputs) {
        *p = b.as_ptr();
    }
    let inputs = &inputs[..k];

    let mut streamed = false;
    work.copies.sort_unstable_by_key(|(j, _)| *j);
    for run in work.copies.chunk_by_mut(|a, b| a.0 == b.0) {
        let src = work.inputs[run[0].0];
        let mut outputs = [core::ptr::null_mut::<u8>(); MAX_SHARES];
        for (p, (_, o)) in outputs.iter_mut().zip(run.iter_mut()) {
            *p = o.as_mut_ptr();
        }
        let outputs = &outputs[..run.len()];
        match streaming
            .then(|| aligned_split(imp, outputs, len))
            .flatten()
        {
            Some((head, body_end)) => {
                for (_, o) in run.iter_mut() {
                    o[..head].copy_from_slice(&src[..head]);
                    o[body_end..].copy_from_slice(&src[body_end..]);
                }
                // SAFETY: `imp` was obtained from `implementation`, which checked the CPU; src and every
                // output are `len` bytes and distinct borrows (so non-overlapping); head..body_end is a whole
                // number of blocks and, per `aligned_split`, starts `stream_align`-aligned in every output.
                unsafe { (imp.copy)(src.as_ptr(), outputs, head, body_end - head, true) };
                streamed = true;
            }
            None => {
                for (_, o) in run.iter_mut() {
                    o.copy_from_slice(src);
                }
            }
        }
    }

    let n = work.rows.len();
    if n > 0 {
        let mut rows = [core::ptr::null::<u8>(); MAX_SHARES];
        let mut outputs = [core::ptr::null_mut::<u8>(); MAX_SHARES];
        for ((p, r), (q, o)) in rows
            .iter_mut()
            .zip(work.rows.iter())
            .zip(outputs.iter_mut().zip(work.row_outputs.iter_mut()))
        {
            *p = r.as_ptr();
            *q = o.as_mut_ptr();
        }
        let (rows, outputs) = (&rows[..n], &outputs[..n]);
        let (head, body_end, stream_rows) = match streaming
            .then(|| aligned_split(imp, outputs, len))
            .flatten()
        {
            Some((head, body_end)) => (head, body_end, true),
            None => (0, (len / imp.block) * imp.block, false),
        };
        // SAFETY: scalar needs no CPU feature; rows hold k coefficients, inputs are `len` readable bytes,
        // outputs are `len` writable bytes borrowed mutably and distinctly (no overlap); both ranges lie
        // within 0..len.
        unsafe {
            (scalar::IMPL.dot)(rows, inputs, outputs, 0, head, false);
            (scalar::IMPL.dot)(rows, inputs, outputs, body_end, len - body_end, false);
        }
        let groups = n.div_ceil(imp.max_group);
        let strip = imp.strip_len(k);
        let mut start = head;
        while start < body_end {
            let strip_len = strip.min(body_end - start);
            let mut first = 0;
            for g in 0..groups {
                // Balanced groups: sizes differ by at most one.
                let size = n / groups + usize::from(g < n % groups);
                // SAFETY: `imp` came from `implementation` (CPU checked); 1 <= size <= max_group; each row has
                // k coefficients; inputs/outputs cover 0..len and start+strip_len <= body_end <= len; outputs
                // are distinct mutable borrows; strip_len is a multiple of `block` because head..body_end is
                // and strips are; with stream_rows, `aligned_split` made start (head + whole blocks, and
                // block is a multiple of stream_align) aligned in every output.
                unsafe {
                    (imp.dot)(
                        &rows[first..first + size],
                        inputs,
                        &outputs[first..first + size],
                        start,
                        strip_len,
                        stream_rows,
                    );
                }
                first += size;
            }
            start += strip_len;
        }
        streamed |= stream_rows;
    }
    if streamed {
        (imp.fence)();
    }
}

/// For streaming stores: `(head, body_end)` such that every output is `stream_align`-aligned at `head` and
/// `head..body_end` is a whole number of blocks, or `None` if the outputs disagree on alignment (or are too
/// short to bother).
fn aligned_split(imp: &KernelImpl, outputs: &[*mut u8], len: usize) -> Option<(usize, usize)> {
    let align = imp.stream_align;
    let misalignment = outputs.first()?.addr() % align;
    if outputs.iter().any(|o| o.addr() % align != misalignment) {
        return None;
    }
    let head = (align - misalignment) % align;
    let body = len.checked_sub(head)? / imp.block * imp.block;
    (body > 0).then_some((head, head + body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kernel in Kernel::ALL {
            assert_eq!(kernel.to_string().parse::<Kernel>().unwrap(), kernel);
            assert_eq!(
                kernel.name().to_uppercase().parse::<Kernel>().unwrap(),
                kernel
            );
        }
        assert!(matches!(
            "sse9".parse::<Kernel>(),
            Err(ErasureError::UnknownKernel(_))
        ));
    }

    #[test]
    fn availability() {
        let available = Kernel::available();
        assert_eq!(available[0], Kernel::Scalar);
        assert!(available.contains(&Kernel::best()));
        assert_eq!(*available.last().unwrap(), Kernel::best());
        #[cfg(not(target_arch = "aarch64"))]
        assert!(!Kernel::Neon.is_available());
    }

    #[test]
    fn unit_rows() {
        assert_eq!(unit_source(&[1]), Some(0));
        assert_eq!(unit_source(&[0, 0, 1]), Some(2));
        assert_eq!(unit_source(&[0, 2, 0]), None);
        assert_eq!(unit_source(&[1, 1]), None);
        assert_eq!(unit_source(&[0, 0]), None);
    }

    #[test]
    fn strips_are_whole_blocks() {
        for kernel in Kernel::available() {
            let imp = implementation(kernel).unwrap();
            assert!(imp.max_group >= 1 && imp.max_group <= simd::MAX_GROUP);
            assert!(imp.stream_align == 0 || imp.block.is_multiple_of(imp.stream_align));
            for k in 1..=256 {
                let s = imp.strip_len(k);
                assert!(
                    s >= imp.block && s.is_multiple_of(imp.block),
                    "{kernel} k={k}"
                );
            }
        }
    }
}
