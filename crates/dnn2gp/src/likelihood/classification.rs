//! Classification likelihoods on logits `f`:
//! Bernoulli `p = s(f)`, `r = p − y`, `Λ = s(f) s(−f)`; categorical `p = softmax(f)`, `r = p − y`
//! (one-hot y), `Λ = diag(p) − ppᵀ` (rank K − 1, so the GP works in data space, section 4 of the
//! math reference); and the link approximations of the predictive probability.

use super::Likelihood;
use crate::math::exp;
use crate::rng::{normals, Rng};

/// `s(f) = 1/(1 + e^{−f})`, computed without overflow.
pub fn sigmoid(f: f64) -> f64 {
    if f >= 0.0 {
        1.0 / (1.0 + exp(-f))
    } else {
        let e = exp(f);
        e / (1.0 + e)
    }
}

/// The Bernoulli variance `p(1 − p)` at logit f, as `s(f) s(−f)`: both factors are computed
/// without cancellation, so it stays positive up to |f| ≈ 745 (`p − p²` is exactly 0 from
/// f ≈ 36.7, where `p` rounds to 1).
pub fn bernoulli_variance(f: f64) -> f64 {
    sigmoid(f) * sigmoid(-f)
}

/// `p_a (1 − p_a)` as `p_a Σ_{b≠a} p_b`, which stays positive where `1 − p_a` rounds to 0.
fn categorical_variances(p: &[f64]) -> Vec<f64> {
    p.iter()
        .enumerate()
        .map(|(a, pa)| {
            let rest: f64 = p
                .iter()
                .enumerate()
                .filter(|&(b, _)| b != a)
                .map(|(_, q)| q)
                .sum();
            pa * rest
        })
        .collect()
}

/// `softmax(f)`, shifted by the maximum.
pub fn softmax(f: &[f64]) -> Vec<f64> {
    let m = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = f.iter().map(|v| exp(v - m)).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// `log Σ exp f`, shifted by the maximum.
fn log_sum_exp(f: &[f64]) -> f64 {
    let m = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + f.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Bernoulli likelihood on one logit, targets in {0, 1}.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bernoulli;

impl Likelihood for Bernoulli {
    fn name(&self) -> &'static str {
        "bernoulli"
    }

    /// `log(1 + e^f) − y f`.
    fn nll(&self, f: &[f64], y: &[f64]) -> f64 {
        let f = f[0];
        f.max(0.0) + (-f.abs()).exp().ln_1p() - y[0] * f
    }

    fn residual(&self, f: &[f64], y: &[f64], r: &mut [f64]) {
        r[0] = sigmoid(f[0]) - y[0];
    }

    /// `Λ = s(f) s(−f)` ([`bernoulli_variance`]).
    fn curvature(&self, f: &[f64], _y: &[f64], lam: &mut [f64]) {
        lam[0] = bernoulli_variance(f[0]);
    }

    /// The data-space noise `s(f) s(−f)`.
    fn observation_variance(&self, f: &[f64]) -> Vec<f64> {
        vec![bernoulli_variance(f[0])]
    }

    fn mean(&self, f: &[f64]) -> Vec<f64> {
        vec![sigmoid(f[0])]
    }
}

/// Categorical likelihood on K logits, one-hot targets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Categorical;

impl Likelihood for Categorical {
    fn name(&self) -> &'static str {
        "categorical"
    }

    /// `log Σ_k e^{f_k} − Σ_k y_k f_k`.
    fn nll(&self, f: &[f64], y: &[f64]) -> f64 {
        log_sum_exp(f) * y.iter().sum::<f64>() - f.iter().zip(y).map(|(f, y)| f * y).sum::<f64>()
    }

    fn residual(&self, f: &[f64], y: &[f64], r: &mut [f64]) {
        for ((r, p), y) in r.iter_mut().zip(softmax(f)).zip(y) {
            *r = p - y;
        }
    }

    /// `Λ = diag(p) − ppᵀ`, its diagonal as `p_a Σ_{b≠a} p_b` (no cancellation when p_a → 1).
    fn curvature(&self, f: &[f64], _y: &[f64], lam: &mut [f64]) {
        let p = softmax(f);
        let k = p.len();
        let diag = categorical_variances(&p);
        for a in 0..k {
            for b in 0..k {
                lam[a * k + b] = if a == b { diag[a] } else { -p[a] * p[b] };
            }
        }
    }

    /// The data-space noise `diag(Λ) = p_k (1 − p_k)`.
    fn observation_variance(&self, f: &[f64]) -> Vec<f64> {
        categorical_variances(&softmax(f))
    }

    fn mean(&self, f: &[f64]) -> Vec<f64> {
        softmax(f)
    }

    /// `R = diag(√p) − √p pᵀ`: `RᵀR = diag(p) − 2ppᵀ + pᵀ(Σ_a p_a)p = Λ` since `Σ p = 1`.
    fn curvature_root(&self, f: &[f64], _y: &[f64], root: &mut [f64]) {
        let p = softmax(f);
        let k = p.len();
        for a in 0..k {
            let s = p[a].sqrt();
            for b in 0..k {
                root[a * k + b] = if a == b { s } else { 0.0 } - s * p[b];
            }
        }
    }
}

/// Probit approximation of `E[s(f)]` or `E[softmax(f)]` for `f ~ N(μ, diag(v))`:
/// the link applied to `μ_k / √(1 + π v_k / 8)`. With one output it is the Bernoulli
/// probability.
pub fn probit(mean: &[f64], var: &[f64]) -> Vec<f64> {
    let scaled: Vec<f64> = mean
        .iter()
        .zip(var)
        .map(|(m, v)| m / (1.0 + std::f64::consts::PI * v.max(0.0) / 8.0).sqrt())
        .collect();
    if scaled.len() == 1 {
        vec![sigmoid(scaled[0])]
    } else {
        softmax(&scaled)
    }
}

/// Monte Carlo estimate of the same expectation from `n` draws of `f ~ N(μ, diag(v))`.
pub fn mc_link(mean: &[f64], var: &[f64], n: usize, rng: &mut Rng) -> Vec<f64> {
    let k = mean.len();
    let mut acc = vec![0.0; k];
    for _ in 0..n {
        let z = normals(rng, k);
        let f: Vec<f64> = (0..k)
            .map(|i| mean[i] + var[i].max(0.0).sqrt() * z[i])
            .collect();
        let p = if k == 1 {
            vec![sigmoid(f[0])]
        } else {
            softmax(&f)
        };
        acc.iter_mut().zip(p).for_each(|(a, p)| *a += p / n as f64);
    }
    acc
}
