//! The Laplace evidence and its gradient, the one definition every path uses (laplace-torch's
//! `log_marginal_likelihood`):
//!
//! `log p(D) ≈ log p(D | θ*) − Σ_g (δ_g/2)‖θ_g*‖² + Σ_g (P_g/2) log δ_g − ½ log|c H + D|`
//!
//! at any prior (one δ, or δ_g per parameter tensor) and Gaussian noise σ (H scales by
//! `c = σ_fit²/σ²`), from one fit: H's eigenvalues give `log|cH + δI|` and
//! `∂ log p(D)/∂ log δ = ½ Σ λ/(λ + δ) − ½ δ ‖θ*‖²` at every δ. The GP of `crate::gp` uses
//! [`laplace_evidence`] from here.

use super::{Laplace, PriorDiagonal, PriorPrecision};
use crate::error::{Error, Result};
use crate::likelihood::LikelihoodKind;
use crate::linalg::dot;
use crate::train::model::Model;

/// The Laplace evidence of the paper, the one definition every path uses:
/// `log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|A|`, from `log p(D | w*)`, δ, `‖w*‖²`, P
/// and `log|A|`.
pub fn laplace_evidence(log_lik: f64, delta: f64, w_sq: f64, p: usize, log_det_a: f64) -> f64 {
    log_lik - 0.5 * delta * w_sq + 0.5 * p as f64 * delta.ln() - 0.5 * log_det_a
}

/// `−log p(D | w*)` and the GGN's scale `c = σ²/σ′²` at another Gaussian noise σ′ (`None`:
/// the fitted σ, `c = 1`), from the fitted data term and `SSE = Σ_i ‖f(x_i) − y_i‖²` over NK
/// outputs: `−log p(D | w*) = SSE/(2σ′²) + (NK/2) log 2πσ′²` and `H ∝ σ′⁻²`. The
/// classification likelihoods have no σ.
pub(crate) fn at_sigma(
    m: &Model,
    nll: f64,
    sse: f64,
    nk: usize,
    sigma: Option<f64>,
) -> Result<(f64, f64)> {
    match (sigma, m.likelihood) {
        (None, _) => Ok((nll, 1.0)),
        (Some(s), LikelihoodKind::Gaussian) if s.is_finite() && s > 0.0 => Ok((
            0.5 * sse / (s * s) + 0.5 * nk as f64 * (std::f64::consts::TAU * s * s).ln(),
            (m.sigma / s).powi(2),
        )),
        (Some(s), LikelihoodKind::Gaussian) => Err(Error::option(
            "σ",
            format!("the noise must be a positive number, got {s}"),
        )),
        (Some(_), other) => Err(Error::option(
            "σ",
            format!("applies to the Gaussian likelihood, not the {other}"),
        )),
    }
}

/// The root of a function falling strictly in `t = log x` on `[−40, 40]`, bisected to machine
/// precision; `None` when it does not change sign there.
pub(crate) fn root_in_log(g: &dyn Fn(f64) -> f64) -> Option<f64> {
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    if !(g(lo) > 0.0 && g(hi) < 0.0) {
        return None;
    }
    while hi - lo > 1e-13 * hi.abs().max(1.0) {
        let mid = 0.5 * (lo + hi);
        if g(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi))
}

/// `∂ log p(D)/∂ log δ = ½ Σ λ/(λ + δ) − ½ δ ‖θ‖²` for GGN eigenvalues λ (floored at 0).
pub(crate) fn evidence_gradient(lambda: &[f64], w2: f64, delta: f64) -> f64 {
    let l = |l: &f64| l.max(0.0);
    0.5 * lambda.iter().map(|v| l(v) / (l(v) + delta)).sum::<f64>() - 0.5 * delta * w2
}

impl Laplace {
    /// `log|c H + D|` at a prior D (δI, or δ_g per tensor): from the fitted factor at the
    /// fitted prior and c = 1; else from H's eigenvalues, `Σ_g Σ_{λ∈g} log(c max(λ, 0) + δ_g)`
    /// (one δ, or a structure whose eigenvalues fall in the tensors); else (full H, δ per
    /// tensor) from a new factor.
    fn log_det_precision(&self, prior: &PriorPrecision, c: f64) -> Result<f64> {
        if *prior == self.prior && c == 1.0 {
            return Ok(self.posterior.log_det_precision());
        }
        let d = self.per_tensor(prior)?;
        let sum = |l: &[f64], d: f64| l.iter().map(|s| (c * s.max(0.0) + d).ln()).sum::<f64>();
        match prior {
            PriorPrecision::Scalar(delta) => Ok(sum(&self.ggn.eigenvalues()?, *delta)),
            PriorPrecision::Layerwise(_) if self.ggn.separable() => {
                let lambda = self.ggn.eigenvalues()?;
                Ok(self
                    .by_tensor(&lambda)
                    .zip(&d)
                    .map(|(l, d)| sum(l, *d))
                    .sum())
            }
            PriorPrecision::Layerwise(_) => Ok(self
                .ggn
                .posterior(
                    self.posterior.mean.clone(),
                    PriorDiagonal {
                        per_parameter: &self.per_parameter(&d),
                        per_tensor: &d,
                    },
                    c,
                )?
                .log_det_precision()),
        }
    }

    /// `‖θ*‖²` of the covered weights.
    pub(crate) fn mean_sq(&self) -> f64 {
        dot(&self.posterior.mean, &self.posterior.mean)
    }

    /// `‖θ_g*‖²` per parameter tensor.
    pub(crate) fn tensor_sq_norms(&self) -> Vec<f64> {
        self.by_tensor(&self.posterior.mean)
            .map(|t| dot(t, t))
            .collect()
    }

    /// The Laplace evidence at a prior (δ, or δ_g per tensor) and noise σ (`None`: the fitted
    /// one): `log p(D | θ*) − Σ_g (δ_g/2)‖θ_g*‖² + Σ_g (P_g/2) log δ_g − ½ log|c H + D|`.
    pub fn log_marginal_likelihood_at(
        &self,
        prior: &PriorPrecision,
        sigma: Option<f64>,
    ) -> Result<f64> {
        let d = self.per_tensor(prior)?;
        let (nll, c) = at_sigma(
            &self.model,
            self.data.nll,
            self.data.sse,
            self.data.nk,
            sigma,
        )?;
        let log_det = self.log_det_precision(prior, c)?;
        Ok(match prior {
            PriorPrecision::Scalar(delta) => laplace_evidence(
                -nll,
                *delta,
                self.mean_sq(),
                self.posterior.mean.len(),
                log_det,
            ),
            PriorPrecision::Layerwise(_) => {
                let tensors = self.prior_tensors();
                let prior_terms: f64 = (self.tensor_sq_norms().iter().zip(&d).zip(&tensors))
                    .map(|((w2, d), (_, len))| laplace_evidence(0.0, *d, *w2, *len, 0.0))
                    .sum();
                -nll + prior_terms - 0.5 * log_det
            }
        })
    }

    /// `∂ log p(D)/∂ log δ = ½ Σ_i λ_i/(λ_i + δ) − ½ δ ‖θ*‖²` at prior precision δ (H's
    /// eigenvalues λ, at the fitted σ).
    pub fn log_marginal_likelihood_gradient(&self, delta: f64) -> Result<f64> {
        crate::train::check_delta(delta)?;
        Ok(evidence_gradient(
            &self.ggn.eigenvalues()?,
            self.mean_sq(),
            delta,
        ))
    }

    /// `∂ log p(D)/∂ log δ_g = ½ (P_g − δ_g ‖θ_g*‖² − δ_g tr_g Σ)` per tensor at δ_g (at the
    /// fitted σ): where H's eigenvalues fall in the tensors (diagonal, KFAC),
    /// `tr_g Σ = Σ_{λ∈g} 1/(λ + δ_g)`; for a full H from `diag Σ` at that prior.
    pub fn log_marginal_likelihood_gradient_layerwise(&self, deltas: &[f64]) -> Result<Vec<f64>> {
        let d = self.per_tensor(&PriorPrecision::Layerwise(deltas.to_vec()))?;
        let w2 = self.tensor_sq_norms();
        if self.ggn.separable() {
            let lambda = self.ggn.eigenvalues()?;
            return Ok((self.by_tensor(&lambda).zip(&w2).zip(&d))
                .map(|((l, w2), d)| evidence_gradient(l, *w2, *d))
                .collect());
        }
        let variances = self.posterior_at(&d)?.variances();
        Ok((self.by_tensor(&variances).zip(&w2).zip(&d))
            .map(|((v, w2), d)| 0.5 * (v.len() as f64 - d * w2 - d * v.iter().sum::<f64>()))
            .collect())
    }
}
