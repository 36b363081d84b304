//! Elementary functions in plain Rust, fast and the same on every CPU (no libm call).

/// `1/n!` for n = 0 … 14.
const INV_FACT: [f64; 15] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
    1.0 / 6227020800.0,
    1.0 / 87178291200.0,
];

/// ln 2 split so that `k·LN2_HI` is exact for the `k` used here (fdlibm's constants).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// `1.5·2⁵²`: `(v + S) − S` rounds `|v| < 2⁵¹` to the nearest integer (`f64::round` is a
/// software routine on baseline x86-64, several times slower).
const ROUND_SHIFT: f64 = 6_755_399_441_055_744.0;

/// `y = k ln 2 + r` with `k` an integer and `|r| ≤ ln2/2`: `(k + S, k, r)`, where `k + S`
/// ([`ROUND_SHIFT`]) holds `k` in its low bits.
#[inline(always)]
fn reduce_ln2(y: f64) -> (f64, f64, f64) {
    let shifted = y * std::f64::consts::LOG2_E + ROUND_SHIFT;
    let k = shifted - ROUND_SHIFT;
    (shifted, k, (y - k * LN2_HI) - k * LN2_LO)
}

/// `e^x` in plain Rust (no libm call): `x = k ln 2 + r`, `|r| ≤ ln2/2`, `e^r` by its Taylor
/// polynomial to `r¹³/13!` (truncation below 2e-17 relative), scaled by `2^k` through the
/// exponent bits; within 2 ulp. glibc's `exp`, `expm1` and `tanh` run up to 20× slower right
/// after AVX-512 matrix products on some CPUs (a register-state transition penalty); this stays fast.
#[inline]
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.133_219_101_941_1 {
        return 0.0;
    }
    let (_, k, r) = reduce_ln2(x);
    // Horner over 1/n!, n = 13 down to 0.
    let p = INV_FACT[..14].iter().rev().fold(0.0, |p, c| p * r + c);
    // 2^k in two steps, so that k down to −1074 (subnormal results) stays exact.
    let k = k as i64;
    let (k1, k2) = (k / 2, k - k / 2);
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    p * pow2(k1) * pow2(k2)
}

/// `tanh x` in plain Rust, without branches on the value (so that loops over many values
/// pipeline): `tanh|x| = −u/(u + 2)` with `u = e^{−2|x|} − 1 ∈ (−1, 0]`, which has no
/// cancellation anywhere; `u = 2^k(e^r − 1) + (2^k − 1)` with `−2|x| = k ln 2 + r`,
/// `|r| ≤ ln2/2`, and `e^r − 1` by its Taylor polynomial to `r¹⁴/14!`. Within a few ulp.
#[inline]
pub fn tanh(x: f64) -> f64 {
    // Beyond 20, tanh rounds to ±1; the clamp keeps 2^k normal.
    let y = -2.0 * x.abs().min(20.0);
    let (shifted, _, r) = reduce_ln2(y);
    // e^r − 1 = r Σ_{n=0}^{13} rⁿ/(n + 1)!.
    let q = r * INV_FACT[1..].iter().rev().fold(0.0, |p, c| p * r + c);
    // 2^k from k's bits in `shifted` (integer operations only, so that loops vectorise).
    let s = f64::from_bits(
        (shifted
            .to_bits()
            .wrapping_sub(ROUND_SHIFT.to_bits())
            .wrapping_add(1023))
            << 52,
    );
    let u = s * q + (s - 1.0);
    let t = (-u / (u + 2.0)).copysign(x);
    if x.is_nan() {
        x
    } else {
        t
    }
}

/// `ln x` in plain Rust (no libm call, see [`exp`]): `x = 2^k m` with `m ∈ [√½, √2)`,
/// `ln m = 2 atanh s` with `s = (m − 1)/(m + 1)`, `|s| ≤ 0.1716`, by its series to `s²³/23`
/// (truncation below 2e-17 relative); within a few ulp.
#[inline]
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // Subnormals are scaled into the normal range first.
    let (x, k0) = if x < f64::MIN_POSITIVE {
        (x * f64::from_bits(0x4350_0000_0000_0000), -54)
    } else {
        (x, 0)
    };
    let bits = x.to_bits();
    let mut k = ((bits >> 52) & 0x7ff) as i64 - 1023 + k0;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // Σ_{j=0}^{11} s^{2j}/(2j + 1) by Horner.
    const INV_ODD: [f64; 12] = [
        1.0,
        1.0 / 3.0,
        1.0 / 5.0,
        1.0 / 7.0,
        1.0 / 9.0,
        1.0 / 11.0,
        1.0 / 13.0,
        1.0 / 15.0,
        1.0 / 17.0,
        1.0 / 19.0,
        1.0 / 21.0,
        1.0 / 23.0,
    ];
    let p = INV_ODD.iter().rev().fold(0.0, |p, c| p * s2 + c);
    let k = k as f64;
    k * LN2_HI + (2.0 * s * p + k * LN2_LO)
}

#[cfg(test)]
mod tests {
    use super::{exp, ln, tanh};

    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst = (0.0f64, 0.0f64);
        for i in -200_000..=200_000 {
            let x = i as f64 * 3.7e-4 + (i as f64 * 0.618).sin() * 1e-5;
            for (ours, libm) in [(exp(x), x.exp()), (tanh(x), x.tanh())] {
                let rel = if libm == 0.0 {
                    ours.abs()
                } else {
                    ((ours - libm) / libm).abs()
                };
                worst.0 = worst.0.max(rel);
            }
            let y = x * 9.4;
            worst.1 = worst.1.max(((exp(y) - y.exp()) / y.exp()).abs());
        }
        assert!(worst.0 < 2e-15 && worst.1 < 1e-15, "{worst:?}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(30.0), 1.0);
        assert_eq!(tanh(-30.0), -1.0);
        assert_eq!(exp(800.0), f64::INFINITY);
        assert_eq!(exp(-800.0), 0.0);
        assert!(exp(f64::NAN).is_nan() && tanh(f64::NAN).is_nan());
        assert!((exp(-740.0) / (-740.0f64).exp() - 1.0).abs() < 1e-6);
    }

    /// The wide (AVX-512 or AVX2) loops give the scalar loop's bits, specials included.
    #[test]
    fn ln_matches_libm() {
        let mut worst = 0.0f64;
        for i in 1..=400_000 {
            // Near 1 (where ln x ≈ x − 1), across the normal range, and subnormals.
            for x in [
                1.0 + (i as f64 - 200_000.0) * 2.3e-6,
                (i as f64 * 1.7e-3 - 340.0).exp2() * (1.0 + (i as f64).sin() * 0.3),
                f64::from_bits(i as u64 * 97),
            ] {
                let libm = x.ln();
                let rel = if libm == 0.0 {
                    ln(x).abs()
                } else {
                    ((ln(x) - libm) / libm).abs()
                };
                worst = worst.max(rel);
            }
        }
        assert!(worst < 1e-15, "{worst:e}");
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f64::NAN).is_nan());
    }
}
