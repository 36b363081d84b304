//! Gaussian likelihood `y ~ N(f, σ² I)`: `r = (f − y)/σ²`, `Λ = I/σ²`.

use faer::{Mat, MatRef};

use super::Likelihood;
use crate::error::{Error, Result};

/// Isotropic Gaussian noise with standard deviation `sigma`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    /// Noise standard deviation σ.
    pub sigma: f64,
}

impl Gaussian {
    /// A Gaussian likelihood; σ must be positive and finite.
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(Error::option(
                "σ",
                format!("the noise must be a positive number, got {sigma}"),
            ));
        }
        Ok(Gaussian { sigma })
    }
}

impl Likelihood for Gaussian {
    fn name(&self) -> &'static str {
        "gaussian"
    }

    /// `½ (f − y)²/σ² + ½ log 2πσ²` summed over outputs.
    fn nll(&self, f: &[f64], y: &[f64]) -> f64 {
        let s2 = self.sigma * self.sigma;
        f.iter()
            .zip(y)
            .map(|(f, y)| 0.5 * (f - y) * (f - y) / s2 + 0.5 * (std::f64::consts::TAU * s2).ln())
            .sum()
    }

    fn residual(&self, f: &[f64], y: &[f64], r: &mut [f64]) {
        let s2 = self.sigma * self.sigma;
        for ((r, f), y) in r.iter_mut().zip(f).zip(y) {
            *r = (f - y) / s2;
        }
    }

    fn curvature(&self, f: &[f64], _y: &[f64], lam: &mut [f64]) {
        let k = f.len();
        lam.fill(0.0);
        for j in 0..k {
            lam[j * k + j] = 1.0 / (self.sigma * self.sigma);
        }
    }

    fn observation_variance(&self, f: &[f64]) -> Vec<f64> {
        vec![self.sigma * self.sigma; f.len()]
    }

    fn mean(&self, f: &[f64]) -> Vec<f64> {
        f.to_vec()
    }

    fn nll_sum(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> f64 {
        let s2 = self.sigma * self.sigma;
        let sq: f64 = f
            .col_iter()
            .zip(y.col_iter())
            .map(|(fc, yc)| {
                fc.iter()
                    .zip(yc.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
            })
            .sum();
        0.5 * sq / s2 + 0.5 * (f.nrows() * f.ncols()) as f64 * (std::f64::consts::TAU * s2).ln()
    }

    fn residuals(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Mat<f64> {
        let s2 = self.sigma * self.sigma;
        Mat::from_fn(f.nrows(), f.ncols(), |i, j| (f[(i, j)] - y[(i, j)]) / s2)
    }
}
