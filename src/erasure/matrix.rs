//! zfec's systematic encoding matrix and the linear algebra that turns a set of surviving shares into decode
//! coefficients. Plain safe code; none of it is on the per-byte hot path.

use super::gf::{MUL, alpha_pow, inverse, mul};

/// The evaluation point of share `r` in zfec's Vandermonde matrix: x_0 = 0, x_r = α^(r−1).
fn point(r: usize) -> u8 {
    if r == 0 { 0 } else { alpha_pow(r - 1) }
}

/// Rows k..m of zfec's encoding matrix, `(m−k)×k` row-major (rows 0..k are the identity and not stored).
///
/// zfec builds the m×k Vandermonde matrix V[r][c] = x_r^c (0^0 = 1), then multiplies the bottom rows by the
/// inverse of the top k×k block. Row r of V·V_top⁻¹ holds the Lagrange basis polynomials of the points
/// x_0..x_{k−1} evaluated at x_r, which is what is computed here directly:
/// `E[r][j] = Π_{i≠j} (x_r − x_i)/(x_j − x_i)`. The inverse is unique, so the bytes equal zfec's
/// (`_invert_vdm`) and those of any other correct inversion; the unit tests cross-check against Gauss–Jordan.
pub(crate) fn check_rows(k: usize, m: usize) -> Vec<u8> {
    debug_assert!(1 <= k && k <= m && m <= 256);
    // denominators[j] = Π_{i≠j} (x_j − x_i); subtraction is XOR in characteristic 2.
    let denominators: Vec<u8> = (0..k)
        .map(|j| {
            (0..k)
                .filter(|&i| i != j)
                .fold(1, |acc, i| mul(acc, point(j) ^ point(i)))
        })
        .collect();
    let mut rows = vec![0u8; (m - k) * k];
    for (r, row) in (k..m).zip(rows.chunks_exact_mut(k.max(1))) {
        let x = point(r);
        // x is not among x_0..x_{k−1}, so every factor is non-zero and `inverse` below cannot fail.
        let numerator = (0..k).fold(1, |acc, i| mul(acc, x ^ point(i)));
        for (j, entry) in row.iter_mut().enumerate() {
            let divisor = mul(x ^ point(j), denominators[j]);
            *entry = mul(numerator, inverse(divisor).unwrap_or(0));
        }
    }
    rows
}

/// `dst ^= g·src`, element-wise.
fn add_scaled(dst: &mut [u8], src: &[u8], g: u8) {
    let table = &MUL[g as usize];
    for (d, &s) in dst.iter_mut().zip(src) {
        *d ^= table[s as usize];
    }
}

/// Inverts an n×n row-major matrix by Gauss–Jordan elimination; `None` if it is singular.
pub(crate) fn invert(matrix: &[u8], n: usize) -> Option<Vec<u8>> {
    debug_assert_eq!(matrix.len(), n * n);
    let mut a = matrix.to_vec();
    let mut inv = vec![0u8; n * n];
    for i in 0..n {
        inv[i * n + i] = 1;
    }
    let mut pivot_a = vec![0u8; n];
    let mut pivot_inv = vec![0u8; n];
    for col in 0..n {
        let pivot = (col..n).find(|&r| a[r * n + col] != 0)?;
        if pivot != col {
            for c in 0..n {
                a.swap(pivot * n + c, col * n + c);
                inv.swap(pivot * n + c, col * n + c);
            }
        }
        let scale = inverse(a[col * n + col])?;
        for c in 0..n {
            a[col * n + c] = mul(a[col * n + c], scale);
            inv[col * n + c] = mul(inv[col * n + c], scale);
        }
        pivot_a.copy_from_slice(&a[col * n..col * n + n]);
        pivot_inv.copy_from_slice(&inv[col * n..col * n + n]);
        for r in (0..n).filter(|&r| r != col) {
            let g = a[r * n + col];
            if g != 0 {
                add_scaled(&mut a[r * n..r * n + n], &pivot_a, g);
                add_scaled(&mut inv[r * n..r * n + n], &pivot_inv, g);
            }
        }
    }
    Some(inv)
}

/// How to rebuild the k data blocks from one particular set of k shares.
#[derive(Debug)]
pub(crate) struct DecodePlan {
    /// The share number read at each input position 0..k: data share i sits at position i when present;
    /// the check shares, ascending, fill the positions of the missing data blocks, ascending.
    pub(crate) position_shares: Vec<u16>,
    /// The missing data block indices, ascending.
    pub(crate) missing: Vec<u16>,
    /// For each missing block, k coefficients over the input positions, rows concatenated.
    pub(crate) rows: Vec<u8>,
}

/// Builds the decode plan for `shares` (ascending, distinct, k of them, all < m), given the check rows of
/// [`check_rows`]. `None` only if the chosen rows are singular, which cannot happen for zfec's (MDS) matrix.
///
/// Instead of inverting the whole k×k matrix of the received rows, only the L×L block that couples the L
/// missing data blocks to the L check shares is inverted (L = number of check shares used): with P the
/// present data blocks and C the check shares, `A·d_missing = y_C ⊕ E[C][P]·d_P` where `A = E[C][missing]`,
/// so `d_missing = A⁻¹·y_C ⊕ (A⁻¹·E[C][P])·d_P`. The result equals the corresponding rows of the full inverse.
pub(crate) fn decode_plan(check_rows: &[u8], k: usize, shares: &[usize]) -> Option<DecodePlan> {
    debug_assert_eq!(shares.len(), k);
    let mut present = vec![false; k];
    let mut checks = Vec::new();
    for &s in shares {
        if s < k {
            present[s] = true;
        } else {
            checks.push(s);
        }
    }
    let missing: Vec<usize> = (0..k).filter(|&i| !present[i]).collect();
    let l = missing.len();
    if checks.len() != l {
        return None;
    }
    let check_row = |c: usize| &check_rows[(c - k) * k..(c - k + 1) * k];

    let mut position_shares: Vec<u16> = (0..k as u16).collect();
    for (&pos, &c) in missing.iter().zip(&checks) {
        position_shares[pos] = c as u16;
    }

    let mut coupling = vec![0u8; l * l];
    for (b, &c) in checks.iter().enumerate() {
        for (a, &i) in missing.iter().enumerate() {
            coupling[b * l + a] = check_row(c)[i];
        }
    }
    let coupling_inv = invert(&coupling, l)?;

    let mut rows = vec![0u8; l * k];
    for (a, row) in rows.chunks_exact_mut(k).enumerate() {
        let inv_row = &coupling_inv[a * l..(a + 1) * l];
        for (b, &c) in checks.iter().enumerate() {
            row[missing[b]] = inv_row[b];
            let e = check_row(c);
            for j in (0..k).filter(|&j| present[j]) {
                row[j] ^= mul(inv_row[b], e[j]);
            }
        }
    }
    Some(DecodePlan {
        position_shares,
        missing: missing.iter().map(|&i| i as u16).collect(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zfec's construction spelled out literally: V·V_top⁻¹ with Gauss–Jordan.
    fn check_rows_by_inversion(k: usize, m: usize) -> Vec<u8> {
        let vandermonde = |r: usize, c: usize| -> u8 {
            if r == 0 {
                u8::from(c == 0)
            } else {
                alpha_pow((r - 1) * c)
            }
        };
        let top: Vec<u8> = (0..k * k).map(|i| vandermonde(i / k, i % k)).collect();
        let top_inv = invert(&top, k).expect("Vandermonde top block is invertible");
        let mut rows = vec![0u8; (m - k) * k];
        for r in k..m {
            for c in 0..k {
                rows[(r - k) * k + c] =
                    (0..k).fold(0, |acc, t| acc ^ mul(vandermonde(r, t), top_inv[t * k + c]));
            }
        }
        rows
    }

    #[test]
    fn known_rows() {
        assert_eq!(check_rows(2, 3), vec![3, 2]);
        let expected = [
            0x0f0806,
            0x2d301c,
            0x99e078,
            0x0be7ed,
            0x893bb3,
            0x46f1b6,
            0xbad962u32,
        ];
        let rows = check_rows(3, 10);
        for (row, want) in rows.chunks_exact(3).zip(expected) {
            assert_eq!(row, &want.to_be_bytes()[1..]);
        }
        assert_eq!(check_rows(1, 5), vec![1; 4]);
        assert!(check_rows(7, 7).is_empty());
    }

    #[test]
    fn lagrange_equals_gauss_jordan() {
        for m in 1..=20 {
            for k in 1..=m {
                assert_eq!(check_rows(k, m), check_rows_by_inversion(k, m), "({k},{m})");
            }
        }
        for (k, m) in [
            (25, 50),
            (10, 14),
            (64, 80),
            (200, 256),
            (255, 256),
            (1, 256),
            (2, 256),
        ] {
            assert_eq!(check_rows(k, m), check_rows_by_inversion(k, m), "({k},{m})");
        }
    }

    #[test]
    fn inversion_round_trip() {
        let n = 5;
        let matrix: Vec<u8> = (0..n * n).map(|i| (i * 37 + 11) as u8).collect();
        let inv = invert(&matrix, n).expect("invertible");
        for r in 0..n {
            for c in 0..n {
                let v = (0..n).fold(0, |acc, t| acc ^ mul(matrix[r * n + t], inv[t * n + c]));
                assert_eq!(v, u8::from(r == c));
            }
        }
        assert!(invert(&[1, 2, 1, 2], 2).is_none());
    }

    /// The plan's rows equal the matching rows of the full inverse of the received rows.
    #[test]
    fn plan_equals_full_inverse() {
        for (k, m, shares) in [
            (3, 10, vec![3, 4, 5]),
            (3, 10, vec![0, 5, 9]),
            (4, 6, vec![1, 2, 4, 5]),
            (5, 9, vec![0, 1, 2, 3, 8]),
            (1, 4, vec![3]),
        ] {
            let rows = check_rows(k, m);
            let plan = decode_plan(&rows, k, &shares).expect("plan");
            let mut received = vec![0u8; k * k];
            for (p, &s) in plan.position_shares.iter().enumerate() {
                let s = s as usize;
                if s < k {
                    received[p * k + s] = 1;
                } else {
                    received[p * k..(p + 1) * k]
                        .copy_from_slice(&rows[(s - k) * k..(s - k + 1) * k]);
                }
            }
            let full = invert(&received, k).expect("MDS");
            for (a, &i) in plan.missing.iter().enumerate() {
                let i = i as usize;
                assert_eq!(
                    &plan.rows[a * k..(a + 1) * k],
                    &full[i * k..(i + 1) * k],
                    "({k},{m}) {shares:?}"
                );
            }
        }
    }
}
