//! SHA-256 for the bulk hashing of uploads and downloads, with two messages hashed at once.
//!
//! Upload and download hash every block, every crypttext segment and the whole file: about five times the file's
//! bytes, their largest CPU cost. With the x86 SHA extensions one message is bound by the latency of the
//! `sha256rnds2` chain, not by the core's throughput, so two independent messages whose rounds are interleaved
//! ([`update_pair`]) cost little more than one (measured on this project's machines: 1.9× the bytes per second).
//! Where the extensions are missing every hasher is an ordinary `sha2::Sha256`, with the same results.

use sha2::Digest;

const BLOCK: usize = 64;

const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 computation in progress.
#[derive(Clone)]
pub struct Sha256 {
    imp: Imp,
}

#[derive(Clone)]
enum Imp {
    Extensions(Lane),
    Portable(sha2::Sha256),
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        let imp = if x86::available() {
            Imp::Extensions(Lane::new())
        } else {
            Imp::Portable(sha2::Sha256::new())
        };
        Sha256 { imp }
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.imp {
            Imp::Extensions(lane) => lane.update(data),
            Imp::Portable(hasher) => hasher.update(data),
        }
    }

    pub fn finalize(self) -> [u8; 32] {
        match self.imp {
            Imp::Extensions(lane) => lane.finalize(),
            Imp::Portable(hasher) => hasher.finalize().into(),
        }
    }
}

/// Feeds `first` to `a` and `second` to `b`, hashing both at once: as fast as feeding one of them alone when the
/// two are about as long.
pub fn update_pair(a: &mut Sha256, first: &[u8], b: &mut Sha256, second: &[u8]) {
    let (Imp::Extensions(a), Imp::Extensions(b)) = (&mut a.imp, &mut b.imp) else {
        a.update(first);
        b.update(second);
        return;
    };
    a.length += first.len() as u64;
    b.length += second.len() as u64;
    let first = a.fill(first);
    let second = b.fill(second);
    // A partial block stays partial only when its input ran out, and then no whole block of it follows.
    let blocks = if a.buffered == 0 && b.buffered == 0 {
        (first.len() / BLOCK).min(second.len() / BLOCK)
    } else {
        0
    };
    if blocks > 0 {
        x86::compress_pair(
            &mut a.state,
            &first[..blocks * BLOCK],
            &mut b.state,
            &second[..blocks * BLOCK],
        );
    }
    a.absorb(&first[blocks * BLOCK..]);
    b.absorb(&second[blocks * BLOCK..]);
}

/// One message's progress on the SHA-extension path: chaining state, a partial block, and the length so far.
#[derive(Clone)]
struct Lane {
    state: [u32; 8],
    buffer: [u8; BLOCK],
    buffered: usize,
    length: u64,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            state: INITIAL,
            buffer: [0; BLOCK],
            buffered: 0,
            length: 0,
        }
    }

    /// Tops up the partial block from `data`, compressing it once full; returns what is left of `data`.
    fn fill<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        if self.buffered == 0 {
            return data;
        }
        let take = (BLOCK - self.buffered).min(data.len());
        self.buffer[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
        self.buffered += take;
        if self.buffered == BLOCK {
            let block = self.buffer;
            x86::compress(&mut self.state, &block);
            self.buffered = 0;
        }
        &data[take..]
    }

    /// Compresses the whole blocks of `data` and keeps the rest, after `fill` (which left no partial block unless
    /// `data` is empty).
    fn absorb(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        debug_assert_eq!(self.buffered, 0);
        let whole = data.len() / BLOCK * BLOCK;
        if whole > 0 {
            x86::compress(&mut self.state, &data[..whole]);
        }
        let tail = &data[whole..];
        self.buffer[..tail.len()].copy_from_slice(tail);
        self.buffered = tail.len();
    }

    fn update(&mut self, data: &[u8]) {
        self.length += data.len() as u64;
        let rest = self.fill(data);
        self.absorb(rest);
    }

    fn finalize(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        // 0x80, zeros up to 56 bytes into a block, then the length in bits: one block or two.
        let mut padding = [0u8; 2 * BLOCK];
        padding[0] = 0x80;
        let zeros = if self.buffered < 56 {
            56 - self.buffered
        } else {
            120 - self.buffered
        };
        padding[zeros..zeros + 8].copy_from_slice(&bits.to_be_bytes());
        self.update(&padding[..zeros + 8]);
        debug_assert_eq!(self.buffered, 0);
        let mut digest = [0u8; 32];
        for (bytes, word) in digest.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// Compresses whole blocks of `data` into `state`.
    pub fn compress(state: &mut [u32; 8], data: &[u8]) {
        assert!(data.len().is_multiple_of(64), "whole blocks only");
        // SAFETY: only reached through `Imp::Extensions`, which is made only when `available()` found the SHA,
        // SSE4.1 and SSSE3 extensions on this CPU; the kernel reads `data` within its length.
        unsafe { compress_lanes::<1>([state, &mut [0; 8]], [data, &[]], data.len() / 64) }
    }

    /// Compresses `first` into `state_first` and `second` (as many whole blocks) into `state_second`.
    pub fn compress_pair(
        state_first: &mut [u32; 8],
        first: &[u8],
        state_second: &mut [u32; 8],
        second: &[u8],
    ) {
        assert!(
            first.len() == second.len() && first.len().is_multiple_of(64),
            "as many whole blocks in both"
        );
        // SAFETY: as in `compress`; both inputs hold `first.len() / 64` whole blocks.
        unsafe {
            compress_lanes::<2>(
                [state_first, state_second],
                [first, second],
                first.len() / 64,
            )
        }
    }

    /// The SHA-extension rounds for `LANES` (1 or 2) messages of `blocks` blocks each, interleaved so that one
    /// lane's rounds fill the other's latency.
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    unsafe fn compress_lanes<const LANES: usize>(
        states: [&mut [u32; 8]; 2],
        data: [&[u8]; 2],
        blocks: usize,
    ) {
        let swap = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        // SAFETY: K has 64 entries, read as 16 unaligned groups of four.
        let round_constants: [__m128i; 16] = std::array::from_fn(|group| unsafe {
            _mm_loadu_si128(K.as_ptr().add(group * 4).cast())
        });
        let mut abef = [_mm_setzero_si128(); 2];
        let mut cdgh = [_mm_setzero_si128(); 2];
        for lane in 0..LANES {
            // SAFETY: each state is 8 u32, read as two unaligned 16-byte halves.
            let (dcba, hgfe) = unsafe {
                (
                    _mm_loadu_si128(states[lane].as_ptr().cast()),
                    _mm_loadu_si128(states[lane].as_ptr().add(4).cast()),
                )
            };
            let cdab = _mm_shuffle_epi32(dcba, 0xb1);
            let efgh = _mm_shuffle_epi32(hgfe, 0x1b);
            abef[lane] = _mm_alignr_epi8(cdab, efgh, 8);
            cdgh[lane] = _mm_blend_epi16(efgh, cdab, 0xf0);
        }
        for block in 0..blocks {
            let saved_abef = abef;
            let saved_cdgh = cdgh;
            let mut w = [[_mm_setzero_si128(); 4]; 2];
            // Four rounds of every lane per step; written out so each message word stays in a register.
            macro_rules! rounds {
                ($group:expr) => {
                    for lane in 0..LANES {
                        let x = if $group < 4 {
                            // SAFETY: block < blocks, and each input holds `blocks` whole blocks of 64 bytes.
                            let words = unsafe {
                                _mm_loadu_si128(data[lane].as_ptr().add(block * 64 + $group * 16).cast())
                            };
                            _mm_shuffle_epi8(words, swap)
                        } else {
                            let w = &w[lane];
                            let sum = _mm_add_epi32(
                                _mm_sha256msg1_epu32(w[$group % 4], w[($group + 1) % 4]),
                                _mm_alignr_epi8(w[($group + 3) % 4], w[($group + 2) % 4], 4),
                            );
                            _mm_sha256msg2_epu32(sum, w[($group + 3) % 4])
                        };
                        w[lane][$group % 4] = x;
                        let message = _mm_add_epi32(x, round_constants[$group]);
                        cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], message);
                        abef[lane] =
                            _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], _mm_shuffle_epi32(message, 0x0e));
                    }
                };
            }
            rounds!(0);
            rounds!(1);
            rounds!(2);
            rounds!(3);
            rounds!(4);
            rounds!(5);
            rounds!(6);
            rounds!(7);
            rounds!(8);
            rounds!(9);
            rounds!(10);
            rounds!(11);
            rounds!(12);
            rounds!(13);
            rounds!(14);
            rounds!(15);
            for lane in 0..LANES {
                abef[lane] = _mm_add_epi32(abef[lane], saved_abef[lane]);
                cdgh[lane] = _mm_add_epi32(cdgh[lane], saved_cdgh[lane]);
            }
        }
        for lane in 0..LANES {
            let feba = _mm_shuffle_epi32(abef[lane], 0x1b);
            let dchg = _mm_shuffle_epi32(cdgh[lane], 0xb1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xf0);
            let hgfe = _mm_alignr_epi8(dchg, feba, 8);
            // SAFETY: as for the loads above.
            unsafe {
                _mm_storeu_si128(states[lane].as_mut_ptr().cast(), dcba);
                _mm_storeu_si128(states[lane].as_mut_ptr().add(4).cast(), hgfe);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub fn available() -> bool {
        false
    }
    pub fn compress(_: &mut [u32; 8], _: &[u8]) {
        unreachable!("no SHA extensions off x86_64")
    }
    pub fn compress_pair(_: &mut [u32; 8], _: &[u8], _: &mut [u32; 8], _: &[u8]) {
        unreachable!("no SHA extensions off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = sha2::Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    #[test]
    fn known_answers() {
        let empty = Sha256::new().finalize();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&empty),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut abc = Sha256::new();
        abc.update(b"abc");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&abc.finalize()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Every padding case: lengths around one and two blocks.
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            let mut hasher = Sha256::new();
            hasher.update(&data[..len]);
            assert_eq!(
                hasher.finalize(),
                reference(&[&data[..len]]),
                "length {len}"
            );
        }
    }

    proptest! {
        /// Any sequence of single and paired feeds gives each hasher exactly what sha2 gives for its bytes.
        #[test]
        fn pairs_equal_sha2(steps in proptest::collection::vec((0u8..3, 0usize..700, 0usize..700), 0..12)) {
            let data: Vec<u8> = (0..2000u32).map(|i| (i * 131 + i / 7) as u8).collect();
            let (mut a, mut b) = (Sha256::new(), Sha256::new());
            let (mut fed_a, mut fed_b): (Vec<&[u8]>, Vec<&[u8]>) = (vec![], vec![]);
            for (i, (how, len_a, len_b)) in steps.iter().enumerate() {
                let first = &data[i * 37..i * 37 + len_a];
                let second = &data[i * 53..i * 53 + len_b];
                match how {
                    0 => { a.update(first); fed_a.push(first); }
                    1 => { b.update(second); fed_b.push(second); }
                    _ => { update_pair(&mut a, first, &mut b, second); fed_a.push(first); fed_b.push(second); }
                }
            }
            prop_assert_eq!(a.finalize(), reference(&fed_a));
            prop_assert_eq!(b.finalize(), reference(&fed_b));
        }
    }
}
