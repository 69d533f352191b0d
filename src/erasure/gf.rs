//! GF(2^8) arithmetic with zfec's field: polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), generator α = 2.
//!
//! Every table is built at compile time. `EXP`/`LOG` match zfec's `generate_gf` (`gf_exp[i] = α^i`,
//! `gf_log[gf_exp[i]] = i`, `gf_log[0] = 255` as an unused sentinel), and `MUL` equals its `gf_mul_table`. The
//! two kernel tables derive from `MUL`: split-nibble products for the PSHUFB/TBL kernels and 8×8 bit matrices
//! for GFNI's `vgf2p8affineqb` (whose built-in `gf2p8mulb` is hard-wired to 0x11b, the wrong field).

/// The field's reduction polynomial, x^8 + x^4 + x^3 + x^2 + 1.
pub(crate) const POLYNOMIAL: u16 = 0x11d;

/// `EXP[i] = α^i` for i in 0..255.
pub(crate) static EXP: [u8; 255] = build_exp();

/// `LOG[α^i] = i`; `LOG[0] = 255` is a sentinel that is never used as a real logarithm.
pub(crate) static LOG: [u8; 256] = build_log();

/// `MUL[a][b] = a·b`, 64 KiB, used by the scalar kernel and matrix arithmetic.
pub(crate) static MUL: [[u8; 256]; 256] = build_mul();

/// The products of one coefficient with every 4-bit value, for split-nibble shuffles: `c·x = low[x & 15] ^
/// high[x >> 4]`.
#[repr(C, align(32))]
pub(crate) struct NibbleTable {
    pub(crate) low: [u8; 16],
    pub(crate) high: [u8; 16],
}

/// `NIBBLE_TABLES[c]`: the split-nibble product table of coefficient `c`.
pub(crate) static NIBBLE_TABLES: [NibbleTable; 256] = build_nibble_tables();

/// `AFFINE_MATRICES[c]`: the 8×8 bit matrix that makes `vgf2p8affineqb` multiply each byte by `c` in this
/// field. Output bit i is the parity of (matrix byte 7−i AND x), so byte 7−i has bit j set when bit i of c·2^j
/// is set.
pub(crate) static AFFINE_MATRICES: [u64; 256] = build_affine_matrices();

const fn build_exp() -> [u8; 255] {
    let mut exp = [0u8; 255];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLYNOMIAL;
        }
        i += 1;
    }
    exp
}

const fn build_log() -> [u8; 256] {
    let exp = build_exp();
    let mut log = [0u8; 256];
    log[0] = 255;
    let mut i = 0;
    while i < 255 {
        log[exp[i] as usize] = i as u8;
        i += 1;
    }
    log
}

const fn build_mul() -> [[u8; 256]; 256] {
    let exp = build_exp();
    let log = build_log();
    let mut table = [[0u8; 256]; 256];
    let mut a = 1;
    while a < 256 {
        let mut b = 1;
        while b < 256 {
            table[a][b] = exp[(log[a] as usize + log[b] as usize) % 255];
            b += 1;
        }
        a += 1;
    }
    table
}

const fn build_nibble_tables() -> [NibbleTable; 256] {
    let mul = build_mul();
    let mut tables = [const {
        NibbleTable {
            low: [0; 16],
            high: [0; 16],
        }
    }; 256];
    let mut c = 0;
    while c < 256 {
        let mut x = 0;
        while x < 16 {
            tables[c].low[x] = mul[c][x];
            tables[c].high[x] = mul[c][x << 4];
            x += 1;
        }
        c += 1;
    }
    tables
}

const fn build_affine_matrices() -> [u64; 256] {
    let mul = build_mul();
    let mut matrices = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        let mut matrix = 0u64;
        let mut out_bit = 0;
        while out_bit < 8 {
            let mut row = 0u8;
            let mut in_bit = 0;
            while in_bit < 8 {
                if (mul[c][1 << in_bit] >> out_bit) & 1 == 1 {
                    row |= 1 << in_bit;
                }
                in_bit += 1;
            }
            matrix |= (row as u64) << (8 * (7 - out_bit));
            out_bit += 1;
        }
        matrices[c] = matrix;
        c += 1;
    }
    matrices
}

/// a·b in GF(2^8).
#[inline]
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    MUL[a as usize][b as usize]
}

/// The multiplicative inverse of a non-zero element; `None` for 0.
#[inline]
pub(crate) fn inverse(a: u8) -> Option<u8> {
    (a != 0).then(|| EXP[(255 - LOG[a as usize] as usize) % 255])
}

/// α^e for any exponent (reduced mod 255).
#[inline]
pub(crate) fn alpha_pow(e: usize) -> u8 {
    EXP[e % 255]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiplication by shift-and-reduce, independent of the log tables.
    fn mul_slow(mut a: u8, mut b: u8) -> u8 {
        let mut product = 0u8;
        while b != 0 {
            if b & 1 == 1 {
                product ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= (POLYNOMIAL & 0xff) as u8;
            }
            b >>= 1;
        }
        product
    }

    /// Software model of one byte of `vgf2p8affineqb` with imm8 = 0, per the instruction's definition: result
    /// bit i = parity(matrix byte (7−i) AND x).
    pub(crate) fn affine_byte(matrix: u64, x: u8) -> u8 {
        let mut result = 0u8;
        for bit in 0..8 {
            let row = (matrix >> (8 * (7 - bit))) as u8;
            result |= (((row & x).count_ones() & 1) as u8) << bit;
        }
        result
    }

    #[test]
    fn exp_and_log_are_inverse_and_match_zfec_start() {
        // zfec: gf_exp[0..8] = 1, 2, 4, ..., 128; gf_exp[8] = 0x1d (the polynomial's low byte).
        assert_eq!(&EXP[..9], &[1, 2, 4, 8, 16, 32, 64, 128, 0x1d]);
        assert_eq!(LOG[0], 255);
        for (i, &e) in EXP.iter().enumerate() {
            assert_eq!(LOG[e as usize] as usize, i);
        }
        let mut seen = [false; 256];
        for &e in &EXP {
            assert!(!seen[e as usize], "α is not a generator");
            seen[e as usize] = true;
        }
    }

    #[test]
    fn mul_table_matches_shift_and_reduce() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_slow(a, b), "{a}·{b}");
            }
        }
    }

    #[test]
    fn inverses() {
        assert_eq!(inverse(0), None);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inverse(a).unwrap()), 1);
        }
    }

    #[test]
    fn nibble_tables_reproduce_products() {
        for c in 0..=255u8 {
            let t = &NIBBLE_TABLES[c as usize];
            for x in 0..=255u8 {
                assert_eq!(
                    t.low[(x & 15) as usize] ^ t.high[(x >> 4) as usize],
                    mul(c, x)
                );
            }
        }
    }

    #[test]
    fn affine_identity_matches_published_constant() {
        // The identity matrix for GF2P8AFFINEQB is the widely published 0x0102040810204080 (and
        // 0x8040201008040201 reverses bits), an anchor independent of this module's derivation.
        assert_eq!(AFFINE_MATRICES[1], 0x0102_0408_1020_4080);
        for x in 0..=255u8 {
            assert_eq!(affine_byte(0x8040_2010_0804_0201, x), x.reverse_bits());
        }
        assert_eq!(AFFINE_MATRICES[0], 0);
    }

    #[test]
    fn affine_matrices_multiply_for_all_pairs() {
        for c in 0..=255u8 {
            for x in 0..=255u8 {
                assert_eq!(
                    affine_byte(AFFINE_MATRICES[c as usize], x),
                    mul(c, x),
                    "c={c:#04x} x={x:#04x}"
                );
            }
        }
    }
}
