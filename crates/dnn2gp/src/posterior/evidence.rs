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

/// `−log p(D | w*)` tempered by T and the GGN's scale `c = σ²/σ′²` at another Gaussian noise
/// σ′ (`None`: the fitted σ, `c = 1`), from the fitted data term and
/// `SSE = Σ_i ‖f(x_i) − y_i‖²` over NK outputs: `−log p(D | w*) = SSE/(2σ′²T) + (NK/2) log
/// 2πσ′²` and `H ∝ σ′⁻²` (laplace-torch's temperature scales the data fit, not the Gaussian's
/// normaliser); a classification likelihood's `−log p / T`, without σ.
pub(crate) fn at_sigma(
    m: &Model,
    nll: f64,
    sse: f64,
    nk: usize,
    sigma: Option<f64>,
    temperature: f64,
) -> Result<(f64, f64)> {
    let gaussian = |s: f64| {
        0.5 * sse / (s * s * temperature) + 0.5 * nk as f64 * (std::f64::consts::TAU * s * s).ln()
    };
    match (sigma, m.likelihood) {
        (None, _) if temperature == 1.0 => Ok((nll, 1.0)),
        (None, LikelihoodKind::Gaussian) => Ok((gaussian(m.sigma), 1.0)),
        (None, _) => Ok((nll / temperature, 1.0)),
        (Some(s), LikelihoodKind::Gaussian) if s.is_finite() && s > 0.0 => {
            Ok((gaussian(s), (m.sigma / s).powi(2)))
        }
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

    /// `−log p(D | θ*)` tempered and the GGN's scale at noise σ (`None`: the fitted one).
    pub(crate) fn nll_at(&self, sigma: Option<f64>) -> Result<(f64, f64)> {
        let d = &self.data;
        at_sigma(&self.model, d.nll, d.sse, d.nk, sigma, self.temperature)
    }

    /// laplace-torch's `log_likelihood`: `log p(D | θ*)` at the fitted noise, divided by the
    /// temperature (for the Gaussian, its data fit `−SSE/(2σ²T)`; its normaliser is not).
    pub fn log_likelihood(&self) -> Result<f64> {
        Ok(-self.nll_at(None)?.0)
    }

    /// laplace-torch's `log_det_ratio`: `log|c H + D| − log|D|` at the posterior's prior D.
    pub fn log_det_ratio(&self) -> Result<f64> {
        let d = self.per_tensor(&self.prior)?;
        let log_det_prior: f64 = (self.prior_tensors().iter().zip(&d))
            .map(|((_, len), d)| *len as f64 * d.ln())
            .sum();
        Ok(self.log_det_precision(&self.prior, 1.0)? - log_det_prior)
    }

    /// laplace-torch's `scatter`: `θ*ᵀ D θ* = Σ_g δ_g ‖θ_g*‖²` at the posterior's prior. With
    /// them, the evidence is `log_likelihood − ½ (log_det_ratio + scatter)`.
    pub fn scatter(&self) -> Result<f64> {
        let d = self.per_tensor(&self.prior)?;
        Ok(self
            .tensor_sq_norms()
            .iter()
            .zip(&d)
            .map(|(w2, d)| d * w2)
            .sum())
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
        let (nll, c) = self.nll_at(sigma)?;
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

    /// The evidence's gradient at a prior (one δ, or δ_g per tensor) and Gaussian noise σ
    /// (`None`: the fitted one), in log space: `∂/∂ log δ_g = ½ (s_g − δ_g ‖θ_g*‖²)` (one value
    /// for one δ) and, for the Gaussian, `∂/∂ log σ = SSE/(σ²T) − NK + Σ_g s_g`, where
    /// `s_g = P_g − δ_g tr_g Σ` is the share of tensor g's weights the data determine:
    /// `Σ_{λ∈g} cλ/(cλ + δ_g)` from H's eigenvalues (one δ, or a structure whose eigenvalues
    /// fall in the tensors), else from `diag Σ` of a new factor.
    pub fn log_marginal_likelihood_gradients(
        &self,
        prior: &PriorPrecision,
        sigma: Option<f64>,
    ) -> Result<(Vec<f64>, Option<f64>)> {
        let d = self.per_tensor(prior)?;
        let (_, c) = self.nll_at(sigma)?;
        let share = |l: &[f64], d: f64| {
            l.iter()
                .map(|v| c * v.max(0.0) / (c * v.max(0.0) + d))
                .sum::<f64>()
        };
        let (shares, w2): (Vec<f64>, Vec<f64>) = match prior {
            PriorPrecision::Scalar(delta) => (
                vec![share(&self.ggn.eigenvalues()?, *delta)],
                vec![self.mean_sq()],
            ),
            PriorPrecision::Layerwise(_) if self.ggn.separable() => {
                let lambda = self.ggn.eigenvalues()?;
                let s = self.by_tensor(&lambda).zip(&d).map(|(l, d)| share(l, *d));
                (s.collect(), self.tensor_sq_norms())
            }
            PriorPrecision::Layerwise(_) => {
                let posterior = self.ggn.posterior(
                    self.posterior.mean.clone(),
                    PriorDiagonal {
                        per_parameter: &self.per_parameter(&d),
                        per_tensor: &d,
                    },
                    c,
                )?;
                let v = posterior.variances();
                let s = self
                    .by_tensor(&v)
                    .zip(&d)
                    .map(|(v, d)| v.len() as f64 - d * v.iter().sum::<f64>());
                (s.collect(), self.tensor_sq_norms())
            }
        };
        let by_prior = (shares.iter().zip(&w2).zip(&d))
            .map(|((s, w2), d)| 0.5 * (s - d * w2))
            .collect();
        let by_sigma = match self.model.likelihood {
            LikelihoodKind::Gaussian => {
                let s = sigma.unwrap_or(self.model.sigma);
                let nk = self.data.nk as f64;
                Some(self.data.sse / (s * s * self.temperature) - nk + shares.iter().sum::<f64>())
            }
            _ => None,
        };
        Ok((by_prior, by_sigma))
    }

    /// `∂ log p(D)/∂ log δ = ½ Σ_i λ_i/(λ_i + δ) − ½ δ ‖θ*‖²` at prior precision δ (H's
    /// eigenvalues λ, at the fitted σ).
    pub fn log_marginal_likelihood_gradient(&self, delta: f64) -> Result<f64> {
        crate::train::check_delta(delta)?;
        Ok(self
            .log_marginal_likelihood_gradients(&PriorPrecision::Scalar(delta), None)?
            .0[0])
    }

    /// `∂ log p(D)/∂ log δ_g = ½ (P_g − δ_g ‖θ_g*‖² − δ_g tr_g Σ)` per tensor at δ_g (at the
    /// fitted σ).
    pub fn log_marginal_likelihood_gradient_layerwise(&self, deltas: &[f64]) -> Result<Vec<f64>> {
        Ok(self
            .log_marginal_likelihood_gradients(&PriorPrecision::Layerwise(deltas.to_vec()), None)?
            .0)
    }
}
