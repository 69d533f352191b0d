//! Zfec-compatible Reed–Solomon erasure coding over GF(2^8) (polynomial 0x11d): the [`Codec`] that Tahoe's
//! immutable and mutable share formats are built on, with SIMD kernels chosen at run time.
//!
//! # Compatibility
//! For every 1 ≤ k ≤ m ≤ 256 the shares are byte-identical to zfec 1.6's `Encoder.encode`: shares 0..k are the
//! data blocks themselves, share r ≥ k is row r of zfec's systematic matrix (its Vandermonde matrix at the
//! points 0, 1, α, α², … times the inverse of its top k×k block) applied to the k blocks. Decoding any k
//! distinct shares, in any order, returns the k data blocks, as `zfec.Decoder.decode` does.
//!
//! # Padding contract
//! Like zfec's core, the codec never pads: the k data blocks of one call must have equal length (any length,
//! including 0 and lengths that are not a multiple of a vector). Tahoe cuts a file into segments and each
//! segment into k blocks of `segment_len / k` bytes. Its segment size is a multiple of k, and the short last
//! segment (the tail) is padded with zero bytes up to the next multiple of k before it is split (see
//! [`padded_len`]); the padding is stripped on download using the file size from the URI extension block.
//! zfec's `easyfec` uses the same rule for a whole buffer (blocks of ⌈len/k⌉ bytes, zero padding at the end).
//!
//! # Performance
//! No call allocates once a share set's decode plan is cached: pointers are gathered on the stack and the
//! kernel runs over column strips that keep inputs in cache, computing a group of output rows per pass with
//! accumulators in registers and, for outputs larger than the cache, non-temporal stores. Rows that are unit
//! vectors (data shares, and every share when k = 1) are copies, never multiplies.

mod gf;
mod kernel;
mod matrix;

use std::sync::{Arc, Mutex};

pub use kernel::{KERNEL_ENV_VAR, Kernel};
use kernel::{KernelImpl, MAX_SHARES, Work};
use matrix::DecodePlan;

/// Errors from building a codec or from a malformed encode/decode call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    #[error("erasure parameters k={k}, m={m} are out of range: need 1 <= k <= m <= 256")]
    Parameters { k: usize, m: usize },
    #[error(
        "unknown erasure kernel {0:?} (set {KERNEL_ENV_VAR} to one of: scalar, ssse3, avx2, avx512bw, gfni-avx2, gfni-avx512, neon)"
    )]
    UnknownKernel(String),
    #[error("erasure kernel {0} is not available on this CPU or in this build")]
    KernelUnavailable(Kernel),
    #[error("share number {share} is out of range: this codec has m={m} shares (0..{m})")]
    ShareOutOfRange { share: u16, m: usize },
    #[error("share number {0} is given more than once")]
    DuplicateShare(u16),
    #[error("wrong number of {what}: expected {expected}, got {got}")]
    Count {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} {index} is {got} bytes, but the first input block is {expected} bytes")]
    Length {
        what: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
}

/// The length a Tahoe tail segment of `len` bytes is zero-padded to before it is split into k blocks.
pub fn padded_len(len: usize, k: usize) -> usize {
    len.div_ceil(k.max(1)) * k.max(1)
}

/// How many decode plans (one per set of k share numbers) a codec keeps.
const DECODE_CACHE_ENTRIES: usize = 32;

/// A set of share numbers, as a 256-bit mask.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ShareSet([u64; 4]);

/// An encoder/decoder for one (k, m), zfec-compatible. Cheap to share between threads.
pub struct Codec {
    k: usize,
    m: usize,
    kernel: Kernel,
    kernel_impl: &'static KernelImpl,
    /// Rows k..m of the encoding matrix, k coefficients each.
    check_rows: Vec<u8>,
    /// Recently used decode plans, most recent first.
    decode_plans: Mutex<Vec<(ShareSet, Arc<DecodePlan>)>>,
    streaming_threshold: usize,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("k", &self.k)
            .field("m", &self.m)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec for k-of-m with the process's kernel: [`KERNEL_ENV_VAR`] if set, else the fastest available.
    pub fn new(k: usize, m: usize) -> Result<Codec, ErasureError> {
        Codec::with_kernel(k, m, Kernel::selected()?)
    }

    /// A codec for k-of-m that uses `kernel`, which must be available on this CPU.
    pub fn with_kernel(k: usize, m: usize, kernel: Kernel) -> Result<Codec, ErasureError> {
        if !(1 <= k && k <= m && m <= MAX_SHARES) {
            return Err(ErasureError::Parameters { k, m });
        }
        let kernel_impl =
            kernel::implementation(kernel).ok_or(ErasureError::KernelUnavailable(kernel))?;
        Ok(Codec {
            k,
            m,
            kernel,
            kernel_impl,
            check_rows: matrix::check_rows(k, m),
            decode_plans: Mutex::new(Vec::with_capacity(DECODE_CACHE_ENTRIES)),
            streaming_threshold: kernel::DEFAULT_STREAMING_THRESHOLD,
        })
    }

    /// Makes calls that write at least `bytes` of output use non-temporal stores (which bypass the cache: a win
    /// once outputs outgrow it, a loss for segment-sized calls). The default is 8 MiB.
    pub fn with_streaming_threshold(mut self, bytes: usize) -> Codec {
        self.streaming_threshold = bytes;
        self
    }

    /// Shares needed to decode.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Total shares.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The kernel this codec runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Row `share` of the encoding matrix: the coefficients that produce that share from the k data blocks.
    pub fn matrix_row(&self, share: u16) -> Result<Vec<u8>, ErasureError> {
        let s = self.check_share(share)?;
        Ok(if s < self.k {
            (0..self.k).map(|j| u8::from(j == s)).collect()
        } else {
            self.check_row(s).to_vec()
        })
    }

    /// Computes the shares numbered `shares` (any subset of 0..m, any order, no repeats) from the k equal-length
    /// `data` blocks into `outputs` (one per requested share, each as long as a data block). A data share
    /// (number < k) is a copy of its block; callers that can use the data in place need not ask for it.
    pub fn encode(
        &self,
        data: &[&[u8]],
        shares: &[u16],
        outputs: &mut [&mut [u8]],
    ) -> Result<(), ErasureError> {
        let len = self.check_blocks("data block", data, self.k)?;
        check_count("outputs", shares.len(), outputs.len())?;
        self.share_set(shares)?;
        check_lengths("output", outputs.iter().map(|o| o.len()), len)?;

        let mut gathered = Outputs::new();
        for (&share, output) in shares.iter().zip(outputs.iter_mut()) {
            let s = usize::from(share);
            if s < self.k {
                gathered.copy(s, output);
            } else {
                gathered.compute(self.check_row(s), output);
            }
        }
        gathered.run(self.kernel_impl, data, self.streaming_threshold);
        Ok(())
    }

    /// Rebuilds the k data blocks into `outputs` (block i into `outputs[i]`) from exactly k distinct shares:
    /// `blocks[i]` is share number `shares[i]`, in any order, all of one length.
    pub fn decode(
        &self,
        shares: &[u16],
        blocks: &[&[u8]],
        outputs: &mut [&mut [u8]],
    ) -> Result<(), ErasureError> {
        let len = self.check_blocks("share block", blocks, self.k)?;
        check_count("share numbers", self.k, shares.len())?;
        check_count("outputs", self.k, outputs.len())?;
        check_lengths("output", outputs.iter().map(|o| o.len()), len)?;
        let set = self.share_set(shares)?;
        let plan = self.decode_plan(set);

        // Where each share number's block sits in `blocks`.
        let mut position_of = [0usize; MAX_SHARES];
        for (i, &share) in shares.iter().enumerate() {
            position_of[usize::from(share)] = i;
        }
        let mut inputs: [&[u8]; MAX_SHARES] = [&[]; MAX_SHARES];
        for (input, &share) in inputs.iter_mut().zip(&plan.position_shares) {
            *input = blocks[position_of[usize::from(share)]];
        }
        let mut gathered = Outputs::new();
        let mut missing = plan
            .missing
            .iter()
            .map(|&i| usize::from(i))
            .enumerate()
            .peekable();
        for (i, output) in outputs.iter_mut().enumerate() {
            match missing.next_if(|&(_, block)| block == i) {
                Some((a, _)) => gathered.compute(&plan.rows[a * self.k..(a + 1) * self.k], output),
                // A data share that arrived: the plan put it at input position i.
                None => gathered.copy(i, output),
            }
        }
        gathered.run(
            self.kernel_impl,
            &inputs[..self.k],
            self.streaming_threshold,
        );
        Ok(())
    }

    /// The set of `shares`, each checked to be in range and given once.
    fn share_set(&self, shares: &[u16]) -> Result<ShareSet, ErasureError> {
        let mut set = ShareSet([0; 4]);
        for &share in shares {
            self.check_share(share)?;
            if !set.insert(share) {
                return Err(ErasureError::DuplicateShare(share));
            }
        }
        Ok(set)
    }

    fn check_row(&self, share: usize) -> &[u8] {
        &self.check_rows[(share - self.k) * self.k..(share - self.k + 1) * self.k]
    }

    fn check_share(&self, share: u16) -> Result<usize, ErasureError> {
        let s = usize::from(share);
        if s < self.m {
            Ok(s)
        } else {
            Err(ErasureError::ShareOutOfRange { share, m: self.m })
        }
    }

    /// Checks there are `count` blocks of one length; returns it.
    fn check_blocks(
        &self,
        what: &'static str,
        blocks: &[&[u8]],
        count: usize,
    ) -> Result<usize, ErasureError> {
        check_count(what, count, blocks.len())?;
        let len = blocks[0].len();
        check_lengths(what, blocks.iter().map(|b| b.len()), len)?;
        Ok(len)
    }

    /// The cached plan for `set`, computed on first use.
    fn decode_plan(&self, set: ShareSet) -> Arc<DecodePlan> {
        let mut cache = self
            .decode_plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hit) = cache.iter().position(|(s, _)| *s == set) {
            cache[..=hit].rotate_right(1);
            return Arc::clone(&cache[0].1);
        }
        let shares: Vec<usize> = (0..self.m).filter(|&s| set.contains(s)).collect();
        // zfec's matrix is MDS: every k rows are independent, so a plan always exists.
        let plan = Arc::new(
            matrix::decode_plan(&self.check_rows, self.k, &shares)
                .expect("zfec's encoding matrix is MDS"),
        );
        if cache.len() == DECODE_CACHE_ENTRIES {
            cache.pop();
        }
        cache.insert(0, (set, Arc::clone(&plan)));
        plan
    }
}

/// One call's outputs, sorted into coefficient rows to compute and plain copies of an input, gathered on the
/// stack so that calls do not allocate.
struct Outputs<'a> {
    rows: [&'a [u8]; MAX_SHARES],
    row_outputs: [&'a mut [u8]; MAX_SHARES],
    copies: [(usize, &'a mut [u8]); MAX_SHARES],
    n_rows: usize,
    n_copies: usize,
}

impl<'a> Outputs<'a> {
    fn new() -> Outputs<'a> {
        Outputs {
            rows: [&[]; MAX_SHARES],
            row_outputs: std::array::from_fn(|_| <&mut [u8]>::default()),
            copies: std::array::from_fn(|_| (0, <&mut [u8]>::default())),
            n_rows: 0,
            n_copies: 0,
        }
    }

    /// `output = row · inputs`. A unit row (every share when k = 1) becomes a copy: no multiplies.
    fn compute(&mut self, row: &'a [u8], output: &'a mut [u8]) {
        match kernel::unit_source(row) {
            Some(input) => self.copy(input, output),
            None => {
                self.rows[self.n_rows] = row;
                self.row_outputs[self.n_rows] = output;
                self.n_rows += 1;
            }
        }
    }

    /// `output = inputs[input]`.
    fn copy(&mut self, input: usize, output: &'a mut [u8]) {
        self.copies[self.n_copies] = (input, output);
        self.n_copies += 1;
    }

    fn run(mut self, kernel_impl: &KernelImpl, inputs: &[&'a [u8]], streaming_threshold: usize) {
        kernel::run(
            kernel_impl,
            Work {
                inputs,
                rows: &self.rows[..self.n_rows],
                row_outputs: &mut self.row_outputs[..self.n_rows],
                copies: &mut self.copies[..self.n_copies],
                streaming_threshold,
            },
        );
    }
}

impl ShareSet {
    /// Adds `share`; false if it was already present.
    fn insert(&mut self, share: u16) -> bool {
        let (word, bit) = (usize::from(share) / 64, 1u64 << (share % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    fn contains(&self, share: usize) -> bool {
        self.0[share / 64] & (1 << (share % 64)) != 0
    }
}

fn check_count(what: &'static str, expected: usize, got: usize) -> Result<(), ErasureError> {
    if expected == got {
        Ok(())
    } else {
        Err(ErasureError::Count {
            what,
            expected,
            got,
        })
    }
}

fn check_lengths(
    what: &'static str,
    lengths: impl Iterator<Item = usize>,
    expected: usize,
) -> Result<(), ErasureError> {
    for (index, got) in lengths.enumerate() {
        if got != expected {
            return Err(ErasureError::Length {
                what,
                index,
                expected,
                got,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn parameters_are_checked() {
        for (k, m) in [(0, 1), (2, 1), (1, 257), (0, 0)] {
            assert_eq!(
                Codec::with_kernel(k, m, Kernel::Scalar).unwrap_err(),
                ErasureError::Parameters { k, m }
            );
        }
        assert!(Codec::with_kernel(256, 256, Kernel::Scalar).is_ok());
    }

    #[test]
    fn bad_calls_are_errors_not_panics() {
        let codec = Codec::with_kernel(2, 4, Kernel::Scalar).unwrap();
        let (a, b) = (vec![1u8; 8], vec![2u8; 8]);
        let mut out = vec![0u8; 8];
        let short = vec![0u8; 7];
        assert!(matches!(
            codec.encode(&[&a], &[2], &mut [&mut out]),
            Err(ErasureError::Count { .. })
        ));
        assert!(matches!(
            codec.encode(&[&a, &short], &[2], &mut [&mut out]),
            Err(ErasureError::Length { .. })
        ));
        assert_eq!(
            codec.encode(&[&a, &b], &[4], &mut [&mut out]),
            Err(ErasureError::ShareOutOfRange { share: 4, m: 4 })
        );
        let mut out2 = vec![0u8; 8];
        assert_eq!(
            codec.encode(&[&a, &b], &[3, 3], &mut [&mut out, &mut out2]),
            Err(ErasureError::DuplicateShare(3))
        );
        assert_eq!(
            codec.decode(&[1, 1], &[&a, &b], &mut [&mut out, &mut out2]),
            Err(ErasureError::DuplicateShare(1))
        );
        let mut short_out = vec![0u8; 7];
        assert!(matches!(
            codec.decode(&[0, 1], &[&a, &b], &mut [&mut out, &mut short_out]),
            Err(ErasureError::Length {
                what: "output",
                index: 1,
                ..
            })
        ));
    }

    #[test]
    fn round_trip_every_pair_of_shares_3_of_5() {
        let codec = Codec::with_kernel(3, 5, Kernel::Scalar).unwrap();
        let data: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(i + 1, 101)).collect();
        let inputs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let mut shares = vec![vec![0u8; 101]; 5];
        {
            let mut outs: Vec<&mut [u8]> = shares.iter_mut().map(|s| s.as_mut_slice()).collect();
            codec.encode(&inputs, &[0, 1, 2, 3, 4], &mut outs).unwrap();
        }
        assert_eq!(&shares[..3], &data[..]);
        for chosen in [[0u16, 1, 2], [4, 3, 2], [1, 4, 0], [3, 0, 4], [2, 4, 3]] {
            let blocks: Vec<&[u8]> = chosen
                .iter()
                .map(|&s| shares[usize::from(s)].as_slice())
                .collect();
            let mut decoded = vec![vec![0u8; 101]; 3];
            let mut outs: Vec<&mut [u8]> = decoded.iter_mut().map(|s| s.as_mut_slice()).collect();
            codec.decode(&chosen, &blocks, &mut outs).unwrap();
            assert_eq!(decoded, data, "{chosen:?}");
        }
    }

    #[test]
    fn decode_cache_is_bounded_and_reused() {
        let codec = Codec::with_kernel(2, 40, Kernel::Scalar).unwrap();
        for a in 0..40u16 {
            let set = {
                let mut s = ShareSet([0; 4]);
                s.insert(a);
                s.insert((a + 1) % 40);
                s
            };
            let first = codec.decode_plan(set);
            assert!(Arc::ptr_eq(&first, &codec.decode_plan(set)));
        }
        assert_eq!(
            codec.decode_plans.lock().unwrap().len(),
            DECODE_CACHE_ENTRIES
        );
    }

    #[test]
    fn padding_rule() {
        assert_eq!(padded_len(0, 3), 0);
        assert_eq!(padded_len(10, 3), 12);
        assert_eq!(padded_len(12, 3), 12);
        assert_eq!(padded_len(5, 1), 5);
    }
}
