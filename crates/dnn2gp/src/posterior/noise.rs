//! The Gaussian noise σ and the prior precision δ together at the evidence's maximum
//! (regression): coordinate ascent on exact roots, then H scaled by `c = σ_fit²/σ*²`.

use super::base::Posterior;
use super::evidence::{at_sigma, root_in_log};
use super::{Laplace, PriorPrecision};
use crate::error::{Error, Result};
use crate::likelihood::LikelihoodKind;

/// The noise and prior chosen by the evidence ([`Laplace::optimize_noise_and_prior`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NoiseFit {
    /// δ*.
    pub delta: f64,
    /// σ*.
    pub sigma: f64,
    /// The evidence there.
    pub log_marglik: f64,
    /// Coordinate-ascent rounds.
    pub rounds: usize,
}

impl Laplace {
    /// Refits the posterior at the Gaussian noise σ (the prior kept): `−log p(D | θ*)` at σ
    /// and H scaled by `c = σ_fit²/σ²`, from the same curvature (no data pass).
    pub fn set_sigma_noise(&mut self, sigma: f64) -> Result<()> {
        if self.model.likelihood != LikelihoodKind::Gaussian {
            return Err(Error::Invalid(format!(
                "the noise σ belongs to the Gaussian likelihood, not the {}",
                self.model.likelihood
            )));
        }
        let prior = self.prior.clone();
        self.refit_at(self.model.delta, sigma)?;
        match prior {
            PriorPrecision::Layerwise(_) => self.set_prior(prior),
            PriorPrecision::Scalar(_) => Ok(()),
        }
    }

    /// The posterior at prior precision δ and Gaussian noise σ, from the same curvature (the
    /// temperature kept; the data term stored untempered).
    fn refit_at(&mut self, delta: f64, sigma: f64) -> Result<()> {
        let d = &self.data;
        let (nll, c) = at_sigma(&self.model, d.nll, d.sse, d.nk, Some(sigma), 1.0)?;
        crate::train::check_delta(delta)?;
        let mut model = self.model.clone();
        (model.sigma, model.delta) = (sigma, delta);
        let data = super::DataTerms { nll, ..self.data };
        let temperature = self.temperature;
        *self = Self::assemble(model, self.cover.clone(), self.ggn.scaled(c), data)?;
        self.temperature = temperature;
        Ok(())
    }

    /// The Gaussian noise σ and prior precision δ maximising the evidence (regression): by
    /// coordinate ascent, each step the exact root in log δ of
    /// `½ Σ cλ/(cλ + δ) − ½ δ‖θ*‖²` and in log σ of `SSE/σ² − NK + Σ cλ/(cλ + δ)` (both fall
    /// strictly; `c = σ_fit²/σ²` scales H; at temperature T the SSE is divided by T), until both are below 1e-9 of their terms. The
    /// posterior is then refitted at (δ*, σ*): H scaled by c, the model's σ and δ set.
    pub fn optimize_noise_and_prior(&mut self) -> Result<NoiseFit> {
        if self.model.likelihood != LikelihoodKind::Gaussian {
            return Err(Error::Invalid(format!(
                "the noise σ belongs to the Gaussian likelihood, not the {}",
                self.model.likelihood
            )));
        }
        let lambda: Vec<f64> = self.ggn.eigenvalues()?.iter().map(|l| l.max(0.0)).collect();
        let (w2, s0, sse, nk) = (
            self.mean_sq(),
            self.model.sigma,
            self.data.sse / self.temperature,
            self.data.nk as f64,
        );
        let fit_share = |td: f64, ts: f64| {
            let (d, c) = (td.exp(), (s0 / ts.exp()).powi(2));
            lambda.iter().map(|l| c * l / (c * l + d)).sum::<f64>()
        };
        let g_delta = |td: f64, ts: f64| 0.5 * fit_share(td, ts) - 0.5 * td.exp() * w2;
        let g_sigma = |td: f64, ts: f64| sse / (2.0 * ts).exp() - nk + fit_share(td, ts);
        let none = || {
            Error::Numerical(
                "the evidence has no maximum in δ or σ within [e^-40, e^40]".to_string(),
            )
        };
        let mut ts = s0.ln();
        let mut rounds = 0;
        let td = loop {
            let td = root_in_log(&|t| g_delta(t, ts)).ok_or_else(none)?;
            ts = root_in_log(&|t| g_sigma(td, t)).ok_or_else(none)?;
            rounds += 1;
            let scale = nk + fit_share(td, ts);
            if g_delta(td, ts).abs() < 1e-9 * scale && g_sigma(td, ts).abs() < 1e-9 * scale {
                break td;
            }
            if rounds == 10_000 {
                return Err(Error::Numerical(
                    "the noise and prior did not converge in 10,000 rounds".into(),
                ));
            }
        };
        let (delta, sigma) = (td.exp(), ts.exp());
        self.refit_at(delta, sigma)?;
        Ok(NoiseFit {
            delta,
            sigma,
            log_marglik: self.log_marginal_likelihood(None, None)?,
            rounds,
        })
    }
}
