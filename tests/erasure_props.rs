//! Property tests of the erasure core: any k shares in any order decode to the data, and every SIMD kernel
//! produces exactly the scalar kernel's bytes on random inputs, unaligned slices, tails and streaming stores.

use proptest::prelude::*;
use tahoe_mount::erasure::{Codec, Kernel};

/// (k, m) with m up to 256, biased towards the small codes Tahoe uses.
fn params() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        3 => (1usize..=20).prop_flat_map(|m| (1..=m, Just(m))),
        1 => (1usize..=256).prop_flat_map(|m| (1..=m, Just(m))),
    ]
}

fn slices(buffers: &[Vec<u8>], offsets: &[usize]) -> Vec<Vec<u8>> {
    buffers
        .iter()
        .zip(offsets.iter().cycle())
        .map(|(b, &o)| {
            let mut v = vec![0x5a; o];
            v.extend_from_slice(b);
            v
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_k_shares_in_any_order_decode_to_the_data(
        (k, m) in params(),
        len in 0usize..1500,
        seed in any::<u64>(),
        order in any::<prop::sample::Index>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let mut x = seed | 1;
        let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let data: Vec<Vec<u8>> = (0..k).map(|_| (0..len).map(|_| next() as u8).collect()).collect();
        let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let all: Vec<u16> = (0..m as u16).collect();
        let mut shares = vec![vec![0u8; len]; m];
        let mut outs: Vec<&mut [u8]> = shares.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&inputs, &all, &mut outs).unwrap();

        // A random k-subset in a random order (Fisher–Yates driven by the seed and `order`).
        let mut chosen = all.clone();
        let mut y = seed ^ order.index(usize::MAX) as u64 | 1;
        for i in (1..m).rev() {
            y ^= y << 13; y ^= y >> 7; y ^= y << 17;
            chosen.swap(i, (y % (i as u64 + 1)) as usize);
        }
        chosen.truncate(k);
        let blocks: Vec<&[u8]> = chosen.iter().map(|&s| shares[usize::from(s)].as_slice()).collect();
        let mut decoded = vec![vec![0xffu8; len]; k];
        let mut outs: Vec<&mut [u8]> = decoded.iter_mut().map(Vec::as_mut_slice).collect();
        codec.decode(&chosen, &blocks, &mut outs).unwrap();
        prop_assert_eq!(decoded, data, "shares {:?}", chosen);
    }

    #[test]
    fn every_kernel_equals_scalar_on_unaligned_slices(
        (k, m) in params(),
        len in prop_oneof![0usize..200, 200usize..5000],
        seed in any::<u64>(),
        offsets in prop::collection::vec(0usize..64, 1..8),
        stream in any::<bool>(),
    ) {
        let mut x = seed | 1;
        let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let data: Vec<Vec<u8>> = (0..k).map(|_| (0..len).map(|_| next() as u8).collect()).collect();
        let placed = slices(&data, &offsets);
        let inputs: Vec<&[u8]> = placed.iter().zip(offsets.iter().cycle()).map(|(b, &o)| &b[o..]).collect();
        // Parity shares first and a data share or two, in a scrambled order.
        let mut wanted: Vec<u16> = (k as u16..m as u16).rev().chain(0..k.min(2) as u16).collect();
        let turn = (seed % (wanted.len() as u64).max(1)) as usize;
        wanted.rotate_left(turn);

        let scalar = Codec::with_kernel(k, m, Kernel::Scalar).unwrap();
        let mut expected = vec![vec![0u8; len]; wanted.len()];
        let mut outs: Vec<&mut [u8]> = expected.iter_mut().map(Vec::as_mut_slice).collect();
        scalar.encode(&inputs, &wanted, &mut outs).unwrap();

        for kernel in Kernel::available() {
            // A tiny threshold sends these small calls down the non-temporal store path too.
            let codec = Codec::with_kernel(k, m, kernel).unwrap()
                .with_streaming_threshold(if stream { 1 } else { usize::MAX });
            let out_offsets: Vec<usize> =
                offsets[1..].iter().chain(&offsets[..1]).copied().cycle().take(wanted.len()).collect();
            let mut buffers: Vec<Vec<u8>> = out_offsets.iter().map(|&o| vec![0x5a; o + len]).collect();
            let mut outs: Vec<&mut [u8]> = buffers.iter_mut().zip(&out_offsets).map(|(b, &o)| &mut b[o..]).collect();
            codec.encode(&inputs, &wanted, &mut outs).unwrap();
            for (i, (ours, want)) in outs.iter().zip(&expected).enumerate() {
                prop_assert!(ours[..] == want[..], "kernel {} share {} differs", kernel, wanted[i]);
            }
            // The bytes around each output are untouched.
            for (b, &o) in buffers.iter().zip(&out_offsets) {
                prop_assert!(b[..o].iter().all(|&c| c == 0x5a), "kernel {} wrote before its output", kernel);
            }
        }
    }
}

/// Outputs big enough for the default streaming threshold, at equal and at differing alignments.
#[test]
fn large_streaming_encode_and_decode_agree_across_kernels() {
    let (k, m, len) = (3, 10, (3 << 20) / 3 + 77);
    let mut x = 0x1234_5678_9abc_def1u64;
    let data: Vec<Vec<u8>> = (0..k)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect();
    let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let parity: Vec<u16> = (k as u16..m as u16).collect();
    let mut expected = vec![vec![0u8; len]; m - k];
    let mut outs: Vec<&mut [u8]> = expected.iter_mut().map(Vec::as_mut_slice).collect();
    Codec::with_kernel(k, m, Kernel::Scalar)
        .unwrap()
        .encode(&inputs, &parity, &mut outs)
        .unwrap();
    for kernel in Kernel::available() {
        let codec = Codec::with_kernel(k, m, kernel)
            .unwrap()
            .with_streaming_threshold(1 << 20);
        for skew in [0usize, 1] {
            let mut buffers: Vec<Vec<u8>> = (0..m - k).map(|_| vec![0u8; len + 64]).collect();
            let mut outs: Vec<&mut [u8]> = buffers
                .iter_mut()
                .enumerate()
                .map(|(i, b)| &mut b[(i * skew) % 64..][..len])
                .collect();
            codec.encode(&inputs, &parity, &mut outs).unwrap();
            assert!(
                outs.iter().zip(&expected).all(|(a, b)| a[..] == b[..]),
                "{kernel} skew {skew}"
            );
            // Worst-case decode: every data block lost.
            let blocks: Vec<&[u8]> = expected[..k].iter().map(Vec::as_slice).collect();
            let mut decoded = vec![vec![0u8; len]; k];
            let mut outs: Vec<&mut [u8]> = decoded.iter_mut().map(Vec::as_mut_slice).collect();
            codec.decode(&parity[..k], &blocks, &mut outs).unwrap();
            assert!(decoded == data, "{kernel} decode");
        }
    }
}
