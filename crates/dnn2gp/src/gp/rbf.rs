//! A plain GP regression with the RBF kernel `k(x, x') = s² exp(−‖x − x'‖²/(2ℓ²))` and
//! Gaussian noise σ², for contrast with the network's GP. `ℓ` and `s²` are chosen by maximising
//! the log marginal likelihood over a log-spaced grid.

use faer::{Mat, MatRef};

use crate::error::Result;
use crate::linalg::{col_sq_norms, dot, mat_vec, Cholesky};

/// A fitted RBF GP.
#[derive(Debug, Clone)]
pub struct RbfGp {
    /// Length-scale ℓ.
    pub lengthscale: f64,
    /// Signal variance s².
    pub variance: f64,
    /// Noise variance σ².
    pub noise: f64,
    /// Log marginal likelihood at the chosen hyperparameters.
    pub log_marglik: f64,
    x: Mat<f64>,
    chol: Cholesky,
    alpha: Vec<f64>,
}

fn rbf(a: MatRef<'_, f64>, b: MatRef<'_, f64>, ls: f64, var: f64) -> Mat<f64> {
    Mat::from_fn(a.nrows(), b.nrows(), |i, j| {
        let d2: f64 = (0..a.ncols())
            .map(|c| (a[(i, c)] - b[(j, c)]).powi(2))
            .sum();
        var * (-0.5 * d2 / (ls * ls)).exp()
    })
}

impl RbfGp {
    /// Fits ℓ and s² on a grid for targets `y` (length N) with noise variance `noise`.
    pub fn fit(x: MatRef<'_, f64>, y: &[f64], noise: f64) -> Result<Self> {
        let mut best: Option<RbfGp> = None;
        for i in 0..25 {
            let ls = 10f64.powf(-1.5 + 3.0 * i as f64 / 24.0);
            for j in 0..13 {
                let var = 10f64.powf(-2.0 + 4.0 * j as f64 / 12.0);
                let gp = Self::with(x, y, ls, var, noise)?;
                if best.as_ref().is_none_or(|b| gp.log_marglik > b.log_marglik) {
                    best = Some(gp);
                }
            }
        }
        Ok(best.expect("non-empty grid"))
    }

    /// The GP with fixed hyperparameters.
    pub fn with(
        x: MatRef<'_, f64>,
        y: &[f64],
        lengthscale: f64,
        variance: f64,
        noise: f64,
    ) -> Result<Self> {
        let mut k = rbf(x, x, lengthscale, variance);
        for i in 0..k.nrows() {
            k[(i, i)] += noise;
        }
        let chol = Cholesky::new(k.as_ref(), "RBF Gram matrix")?;
        let alpha = chol.solve_vec(y);
        let n = y.len() as f64;
        let log_marglik =
            -0.5 * dot(y, &alpha) - 0.5 * chol.log_det() - 0.5 * n * std::f64::consts::TAU.ln();
        Ok(RbfGp {
            lengthscale,
            variance,
            noise,
            log_marglik,
            x: x.to_owned(),
            chol,
            alpha,
        })
    }

    /// Predictive mean and variance of f at `xs`.
    pub fn predict(&self, xs: MatRef<'_, f64>) -> (Vec<f64>, Vec<f64>) {
        let ks = rbf(xs, self.x.as_ref(), self.lengthscale, self.variance);
        let mean = mat_vec(ks.as_ref(), &self.alpha);
        let v = self.chol.solve_l(ks.transpose());
        let var = col_sq_norms(v.as_ref())
            .into_iter()
            .map(|q| (self.variance - q).max(0.0))
            .collect();
        (mean, var)
    }
}
