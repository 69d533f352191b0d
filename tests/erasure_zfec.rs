//! Differential test of the erasure core against Python's zfec (the codec Tahoe-LAFS 1.20 calls), for every
//! kernel this CPU runs: the same shares from the same blocks, and the same blocks back from any k shares in
//! any order. The random part's seed is printed and can be replayed with `TAHOE_MOUNT_TEST_SEED`.

mod common;

use tahoe_mount::erasure::{Codec, Kernel};

/// xorshift64*: small, seedable, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

struct Case {
    k: usize,
    m: usize,
    data: Vec<Vec<u8>>,
    chosen: Vec<u16>,
}

fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut params = vec![
        (1, 1, 1),
        (1, 10, 63),
        (3, 10, 1),
        (3, 10, 4097),
        (25, 50, 1000),
        (255, 256, 129),
        (256, 256, 7),
        (2, 3, 65),
        (10, 14, 200),
        (1, 256, 33),
        (7, 255, 11),
    ];
    for _ in 0..20 {
        let m = 1 + rng.below(256);
        let k = 1 + rng.below(m);
        let len = match rng.below(4) {
            0 => 1 + rng.below(8),
            1 => 64 * (1 + rng.below(8)) + 1 + rng.below(63),
            _ => 1 + rng.below(3000),
        };
        params.push((k, m, len));
    }
    params
        .into_iter()
        .map(|(k, m, len)| {
            let data = (0..k).map(|_| rng.bytes(len)).collect();
            let mut all: Vec<u16> = (0..m as u16).collect();
            rng.shuffle(&mut all);
            all.truncate(k);
            Case {
                k,
                m,
                data,
                chosen: all,
            }
        })
        .collect()
}

fn oracle_input(cases: &[Case]) -> Vec<u8> {
    let mut input = Vec::new();
    for case in cases {
        input.extend_from_slice(&(case.k as u16).to_be_bytes());
        input.extend_from_slice(&(case.m as u16).to_be_bytes());
        input.extend_from_slice(&(case.data[0].len() as u32).to_be_bytes());
        for block in &case.data {
            input.extend_from_slice(block);
        }
        for share in &case.chosen {
            input.extend_from_slice(&share.to_be_bytes());
        }
    }
    input
}

/// Copies of `blocks` placed at `offset` bytes into fresh buffers, so kernels see unaligned slices.
fn placed(blocks: &[Vec<u8>], offset: usize) -> Vec<Vec<u8>> {
    blocks
        .iter()
        .map(|b| {
            let mut buf = vec![0xa5; offset];
            buf.extend_from_slice(b);
            buf
        })
        .collect()
}

#[test]
fn shares_and_decodes_match_python_zfec_for_every_kernel() {
    // An xorshift state must not be zero.
    let mut rng = Rng(common::test_seed("erasure_zfec") | 1);
    let cases = cases(&mut rng);
    let output = common::run_python("tests/zfec_oracle.py", &[], &oracle_input(&cases));
    let mut rest = output.as_slice();
    let kernels = Kernel::available();
    eprintln!("kernels under test: {kernels:?}");
    for case in &cases {
        let (k, m, len) = (case.k, case.m, case.data[0].len());
        let (zfec_shares, tail) = rest.split_at(m * len);
        let (zfec_decoded, tail) = tail.split_at(k * len);
        rest = tail;
        let zfec_shares: Vec<&[u8]> = zfec_shares.chunks(len).collect();
        let zfec_decoded: Vec<&[u8]> = zfec_decoded.chunks(len).collect();
        assert_eq!(
            zfec_decoded,
            case.data.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            "zfec itself"
        );
        for &kernel in &kernels {
            let what = format!("({k},{m}) len={len} kernel={kernel}");
            let codec = Codec::with_kernel(k, m, kernel).unwrap();
            let offset = rng.below(64);
            let inputs = placed(&case.data, offset);
            let inputs: Vec<&[u8]> = inputs.iter().map(|b| &b[offset..]).collect();
            let all: Vec<u16> = (0..m as u16).collect();
            let mut shares = vec![vec![0u8; len + offset]; m];
            let mut outs: Vec<&mut [u8]> = shares.iter_mut().map(|s| &mut s[offset..]).collect();
            codec.encode(&inputs, &all, &mut outs).unwrap();
            for (s, (ours, theirs)) in outs.iter().zip(&zfec_shares).enumerate() {
                assert!(&ours[..] == *theirs, "{what}: share {s} differs from zfec");
            }

            let blocks = placed(
                &case
                    .chosen
                    .iter()
                    .map(|&s| zfec_shares[usize::from(s)].to_vec())
                    .collect::<Vec<_>>(),
                offset,
            );
            let blocks: Vec<&[u8]> = blocks.iter().map(|b| &b[offset..]).collect();
            let mut decoded = vec![vec![0u8; len]; k];
            let mut outs: Vec<&mut [u8]> = decoded.iter_mut().map(|d| d.as_mut_slice()).collect();
            codec.decode(&case.chosen, &blocks, &mut outs).unwrap();
            for (i, (ours, theirs)) in outs.iter().zip(&zfec_decoded).enumerate() {
                assert!(
                    &ours[..] == *theirs,
                    "{what}: decoded block {i} from {:?} differs",
                    case.chosen
                );
            }
        }
    }
    assert!(
        rest.is_empty(),
        "oracle sent {} bytes more than expected",
        rest.len()
    );
}
