//! Element-wise activations `φ` and their derivatives, written in terms of the output `a = φ(z)`.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `tanh z`.
    Tanh,
    /// `1 / (1 + e^{−z})`.
    Sigmoid,
    /// `max(z, 0)`.
    Relu,
    /// `z`.
    Identity,
}

impl Activation {
    /// `φ(z)`.
    #[inline]
    pub fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => tanh(z),
            Activation::Sigmoid => 1.0 / (1.0 + exp(-z)),
            Activation::Relu => z.max(0.0),
            Activation::Identity => z,
        }
    }

    /// `φ'(z)` expressed through `a = φ(z)`: `1 − a²`, `a(1 − a)`, `[a > 0]`, `1`.
    #[inline]
    pub fn derivative_from_output(self, a: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - a * a,
            Activation::Sigmoid => a * (1.0 - a),
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Identity => 1.0,
        }
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "tanh" => Ok(Activation::Tanh),
            "sigmoid" => Ok(Activation::Sigmoid),
            "relu" => Ok(Activation::Relu),
            "identity" | "linear" | "none" => Ok(Activation::Identity),
            other => Err(Error::Invalid(format!(
                "unknown activation '{other}' (expected tanh, sigmoid, relu or identity)"
            ))),
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
            Activation::Identity => "identity",
        };
        f.write_str(s)
    }
}

/// `1/n!` for n = 0 … 21.
const INV_FACT: [f64; 22] = [
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
    1.0 / 1307674368000.0,
    1.0 / 20922789888000.0,
    1.0 / 355687428096000.0,
    1.0 / 6402373705728000.0,
    1.0 / 121645100408832000.0,
    1.0 / 2432902008176640000.0,
    1.0 / 51090942171709440000.0,
];

/// `e^x` in plain Rust (no libm call): `x = k ln 2 + r`, `|r| ≤ ln2/2`, `e^r` by its Taylor
/// polynomial to `r¹³/13!` (truncation below 2e-17 relative), scaled by `2^k` through the
/// exponent bits; within 2 ulp. glibc's `exp`, `expm1` and `tanh` run up to 20× slower right
/// after AVX-512 matrix products on some CPUs (a register-state transition penalty); this stays fast.
#[inline]
pub fn exp(x: f64) -> f64 {
    // ln 2 split so that k·LN2_HI is exact (fdlibm's constants).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.133_219_101_941_1 {
        return 0.0;
    }
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Horner over 1/n!, n = 13 down to 0.
    let p = INV_FACT[..14].iter().rev().fold(0.0, |p, c| p * r + c);
    // 2^k in two steps, so that k down to −1074 (subnormal results) stays exact.
    let k = k as i64;
    let (k1, k2) = (k / 2, k - k / 2);
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    p * pow2(k1) * pow2(k2)
}

/// `tanh x` in plain Rust: `u/(u + 2)` with `u = e^{2x} − 1` summed as a Taylor series for
/// `|2x| < 1.25` (no cancellation), `1 − 2/(e^{2|x|} + 1)` with the sign otherwise; within a
/// few ulp.
#[inline]
pub fn tanh(x: f64) -> f64 {
    let a = x.abs();
    if a < 0.625 {
        let u = 2.0 * x;
        // expm1(u) = Σ_{n=1}^{20} uⁿ/n! by Horner (the tail is below 1e-17 relative for
        // |u| < 1.25).
        let sum = u * INV_FACT[1..=20].iter().rev().fold(0.0, |p, c| p * u + c);
        sum / (sum + 2.0)
    } else if a > 22.0 {
        x.signum()
    } else {
        (1.0 - 2.0 / (exp(2.0 * a) + 1.0)).copysign(x)
    }
}

#[cfg(test)]
mod tests {
    use super::{exp, tanh};

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
}
