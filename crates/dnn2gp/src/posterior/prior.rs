//! The prior precision over the covered weights, `p(θ) = Π_g N(θ_g | 0, δ_g⁻¹ I)`: one δ or one
//! per parameter tensor (laplace-torch's `prior_structure`), set, and chosen at the maximum of
//! the evidence ([`super::evidence`]) — exactly: the scalar δ and, where the evidence separates
//! over the tensors (diag, KFAC), each δ_g is the one root of its gradient; a full H's δ_g by
//! Newton's method in log δ.

use faer::{Mat, Side};

use super::base::Posterior;
use super::evidence::{evidence_gradient, root_in_log};
use super::weight_posterior::LaplaceGgn;
use super::{Laplace, PriorDiagonal, PriorPrecision, PriorStructure};
use crate::error::{Error, Result};

/// The prior precision chosen by the evidence ([`Laplace::optimize_prior_precision`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PriorFit {
    /// δ* maximising the evidence.
    pub delta: f64,
    /// The evidence there.
    pub log_marglik: f64,
    /// `∂ log p(D)/∂ log δ` there (0 up to the search's tolerance).
    pub gradient: f64,
}

/// The prior precision per tensor chosen by the evidence
/// ([`Laplace::optimize_prior_precision_layerwise`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerwisePriorFit {
    /// The parameter tensors' names (`3.weight`).
    pub tensors: Vec<String>,
    /// δ_g* per tensor.
    pub deltas: Vec<f64>,
    /// The evidence there.
    pub log_marglik: f64,
    /// `∂ log p(D)/∂ log δ_g` there (0 up to the search's tolerance).
    pub gradient: Vec<f64>,
}

impl Laplace {
    /// The covered weights' parameter tensors, as a layerwise prior orders them: their names
    /// (those of the whole network's state_dict) and sizes.
    pub fn prior_tensors(&self) -> Vec<(String, usize)> {
        self.cover.prior_tensors(&self.model.net)
    }

    /// The prior precision the posterior is at.
    pub fn prior_precision(&self) -> &PriorPrecision {
        &self.prior
    }

    /// `v` (one value per covered weight) cut into the parameter tensors.
    pub(crate) fn by_tensor<'a>(&self, v: &'a [f64]) -> impl Iterator<Item = &'a [f64]> {
        let mut at = 0;
        self.prior_tensors().into_iter().map(move |(_, len)| {
            at += len;
            &v[at - len..at]
        })
    }

    /// δ per tensor of a prior, checked: every δ valid, one per tensor, and one δ for a
    /// structure that holds one.
    pub(crate) fn per_tensor(&self, prior: &PriorPrecision) -> Result<Vec<f64>> {
        let tensors = self.prior_tensors();
        let d = match prior {
            PriorPrecision::Scalar(delta) => vec![*delta; tensors.len()],
            PriorPrecision::Layerwise(d) if !self.ggn.layerwise() => {
                return Err(Error::Invalid(format!(
                    "a prior precision per layer ({} values) needs a full, diag or kron \
                     posterior: the low-rank precision U diag(s) Uᵀ + δI has one δ",
                    d.len()
                )))
            }
            PriorPrecision::Layerwise(d) if d.len() != tensors.len() => {
                return Err(Error::Invalid(format!(
                    "a prior precision per layer of {} values for {} parameter tensors ({})",
                    d.len(),
                    tensors.len(),
                    tensors
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            PriorPrecision::Layerwise(d) => d.clone(),
        };
        d.iter().try_for_each(|v| crate::train::check_delta(*v))?;
        Ok(d)
    }

    /// δ per tensor spread over the tensors' weights.
    pub(crate) fn per_parameter(&self, d: &[f64]) -> Vec<f64> {
        self.prior_tensors()
            .iter()
            .zip(d)
            .flat_map(|((_, len), d)| std::iter::repeat_n(*d, *len))
            .collect()
    }

    /// The posterior at δ per tensor `d` (a new factor of the same curvature).
    pub(crate) fn posterior_at(&self, d: &[f64]) -> Result<LaplaceGgn> {
        self.ggn.posterior(
            self.posterior.mean.clone(),
            PriorDiagonal {
                per_parameter: &self.per_parameter(d),
                per_tensor: d,
            },
            1.0,
        )
    }

    /// The evidence's maximum over δ_g per tensor where H does not separate over the tensors
    /// (full), by Newton's method in `t = log δ`: gradient `g_g = ½(P_g − δ_g‖θ_g‖² − δ_g
    /// tr_g Σ)` and Hessian `∂g_g/∂t_h = ½ δ_g δ_h ‖Σ_gh‖²_F − [g = h] ½ δ_g (‖θ_g‖² + tr_g Σ)`
    /// from Σ at the current δ, each step halved until the evidence does not fall; where the
    /// Hessian is not negative definite, MacKay's step `δ_g ← (P_g − δ_g tr_g Σ)/‖θ_g‖²`. From
    /// the scalar optimum, until every gradient is below 1e-10·P_g.
    fn newton_layerwise_optimum(&self, w2: &[f64]) -> Result<Vec<f64>> {
        let sizes: Vec<usize> = self.prior_tensors().iter().map(|(_, len)| *len).collect();
        let starts: Vec<usize> = sizes
            .iter()
            .scan(0, |at, len| {
                *at += len;
                Some(*at - len)
            })
            .collect();
        let range = |g: usize| starts[g]..starts[g] + sizes[g];
        let n = sizes.len();
        let exp = |t: &[f64]| t.iter().map(|v| v.exp()).collect::<Vec<f64>>();
        let evidence =
            |t: &[f64]| self.log_marginal_likelihood_at(&PriorPrecision::Layerwise(exp(t)), None);
        let mut t = vec![self.scalar_optimum()?.ln(); n];
        let mut e = evidence(&t)?;
        for _ in 0..100 {
            let d = exp(&t);
            let sigma = self.posterior_at(&d)?.covariance();
            let tr: Vec<f64> = (0..n)
                .map(|g| range(g).map(|i| sigma[(i, i)]).sum())
                .collect();
            let grad: Vec<f64> = (0..n)
                .map(|g| 0.5 * (sizes[g] as f64 - d[g] * w2[g] - d[g] * tr[g]))
                .collect();
            if (0..n).all(|g| grad[g].abs() <= 1e-10 * sizes[g] as f64) {
                return Ok(d);
            }
            // −Hessian, to be positive definite at a maximum.
            let neg = Mat::from_fn(n, n, |g, k| {
                let f: f64 = range(g)
                    .flat_map(|i| range(k).map(move |j| (i, j)))
                    .map(|(i, j)| sigma[(i, j)] * sigma[(i, j)])
                    .sum();
                let diag = if g == k {
                    0.5 * d[g] * (w2[g] + tr[g])
                } else {
                    0.0
                };
                diag - 0.5 * d[g] * d[k] * f
            });
            let step: Vec<f64> = match neg.as_ref().llt(Side::Lower) {
                Ok(c) => {
                    let s =
                        faer::linalg::solvers::Solve::solve(&c, Mat::from_fn(n, 1, |g, _| grad[g]));
                    (0..n).map(|g| s[(g, 0)]).collect()
                }
                Err(_) => (0..n)
                    .map(|g| ((2.0 * grad[g] + d[g] * w2[g]) / w2[g]).ln() - t[g])
                    .collect(),
            };
            if step.iter().any(|s| !s.is_finite()) {
                return Err(Error::Numerical(format!(
                    "the evidence has no maximum in the prior precisions per layer (gradients \
                     {grad:?})"
                )));
            }
            let mut a = 1.0;
            loop {
                let next: Vec<f64> = t.iter().zip(&step).map(|(t, s)| t + a * s).collect();
                let en = evidence(&next)?;
                if en >= e || a < 1e-6 {
                    (t, e) = (next, en);
                    break;
                }
                a /= 2.0;
            }
        }
        Err(Error::Numerical(
            "the prior precision per layer did not converge in 100 Newton steps".into(),
        ))
    }

    /// The prior precision per parameter tensor maximising the evidence (laplace-torch's
    /// `optimize_prior_precision(method="marglik", prior_structure="layerwise")`). Diagonal
    /// and KFAC: the evidence separates over the tensors, so each δ_g is the one root of
    /// `½ Σ_{λ∈g} λ/(λ + δ_g) − ½ δ_g‖θ_g*‖²`, bisected in log δ_g to machine precision. Full:
    /// Newton's method in log δ from the scalar optimum. The posterior is then refitted there.
    pub fn optimize_prior_precision_layerwise(&mut self) -> Result<LayerwisePriorFit> {
        let tensors = self.prior_tensors();
        let w2 = self.tensor_sq_norms();
        let no_maximum = |g: usize| {
            Error::Numerical(format!(
                "the evidence has no maximum in the prior precision of {} within [e^-40, e^40] \
                 (‖θ‖² = {:.3e})",
                tensors[g].0, w2[g]
            ))
        };
        // Refuses a structure with one δ.
        self.per_tensor(&PriorPrecision::Layerwise(vec![1.0; tensors.len()]))?;
        let d = if self.ggn.separable() {
            let lambda = self.ggn.eigenvalues()?.into_owned();
            (self.by_tensor(&lambda).zip(&w2).enumerate())
                .map(|(g, (l, w2))| {
                    root_in_log(&|t| evidence_gradient(l, *w2, t.exp()))
                        .map(f64::exp)
                        .ok_or_else(|| no_maximum(g))
                })
                .collect::<Result<Vec<f64>>>()?
        } else {
            if let Some(g) = w2.iter().position(|v| *v <= 0.0) {
                return Err(no_maximum(g));
            }
            self.newton_layerwise_optimum(&w2)?
        };
        let gradient = self.log_marginal_likelihood_gradient_layerwise(&d)?;
        self.set_prior(PriorPrecision::Layerwise(d.clone()))?;
        Ok(LayerwisePriorFit {
            tensors: tensors.into_iter().map(|(n, _)| n).collect(),
            deltas: d,
            log_marglik: self.log_marginal_likelihood(None, None)?,
            gradient,
        })
    }

    /// The prior precision maximising the evidence (laplace-torch's
    /// `optimize_prior_precision(method="marglik")`, scalar δ), found exactly: with H's
    /// eigenvalues λ, `∂ log p(D)/∂ log δ = ½ Σ λ/(λ + δ) − ½ δ ‖θ*‖²` falls strictly in δ,
    /// so its one root is bracketed and bisected in log δ to machine precision. The posterior
    /// is then refitted at δ* (the model's δ becomes δ*).
    pub fn optimize_prior_precision(&mut self) -> Result<PriorFit> {
        let delta = self.scalar_optimum()?;
        self.set_prior_precision(delta)?;
        Ok(PriorFit {
            delta,
            log_marglik: self.log_marginal_likelihood(None, None)?,
            gradient: self.log_marginal_likelihood_gradient(delta)?,
        })
    }

    /// The root of `½ Σ λ/(λ + δ) − ½ δ ‖θ*‖²` in δ.
    fn scalar_optimum(&self) -> Result<f64> {
        let lambda = self.ggn.eigenvalues()?;
        let w2 = self.mean_sq();
        root_in_log(&|t| evidence_gradient(&lambda, w2, t.exp()))
            .map(f64::exp)
            .ok_or_else(|| {
                Error::Numerical(format!(
                    "the evidence has no maximum in δ ∈ [e^-40, e^40] (‖θ*‖² = {w2:.3e}, {} \
                     positive GGN eigenvalues)",
                    lambda.iter().filter(|l| **l > 0.0).count()
                ))
            })
    }

    /// The prior precision maximising the evidence with `structure`
    /// ([`Laplace::optimize_prior_precision`] or
    /// [`Laplace::optimize_prior_precision_layerwise`]); returns the evidence there.
    pub fn optimize_prior_precision_as(&mut self, structure: PriorStructure) -> Result<f64> {
        Ok(match structure {
            PriorStructure::Scalar => self.optimize_prior_precision()?.log_marglik,
            PriorStructure::Layerwise => self.optimize_prior_precision_layerwise()?.log_marglik,
        })
    }

    /// The posterior precision `c H + D` where the structure holds H in the weights' basis
    /// (laplace-torch's `posterior_precision`): full, a P×P matrix; diag, its P values. KFAC
    /// and low rank hold it factored (their covariance is [`LaplaceGgn::covariance`]).
    pub fn posterior_precision(&self) -> Result<super::structure::Tensor> {
        let d = self.per_parameter(&self.per_tensor(&self.prior)?);
        let kind = self.ggn.kind();
        match (kind, self.ggn.tensors().pop()) {
            (super::HessianStructure::Full, Some((_, shape, mut h))) => {
                let p = d.len();
                (0..p).for_each(|i| h[i * p + i] += d[i]);
                Ok((shape, h))
            }
            (super::HessianStructure::Diag, Some((_, shape, mut h))) => {
                h.iter_mut().zip(&d).for_each(|(h, d)| *h += d);
                Ok((shape, h))
            }
            _ => Err(Error::Invalid(format!(
                "a {kind} posterior holds its precision factored, not as a matrix; its \
                 covariance, variances and functional variance are there"
            ))),
        }
    }

    /// Refits the posterior at prior precision δ from the same curvature (no data pass); the
    /// model's δ becomes δ.
    pub fn set_prior_precision(&mut self, delta: f64) -> Result<()> {
        self.set_prior(PriorPrecision::Scalar(delta))?;
        self.model.delta = delta;
        Ok(())
    }

    /// Refits the posterior at a prior (one δ, or δ_g per tensor) from the same curvature;
    /// [`Laplace::prior_precision`] then holds it (the model's δ changes only through
    /// [`Laplace::set_prior_precision`]).
    pub fn set_prior(&mut self, prior: PriorPrecision) -> Result<()> {
        let d = self.per_tensor(&prior)?;
        self.posterior = self.posterior_at(&d)?;
        self.prior = prior;
        Ok(())
    }
}
