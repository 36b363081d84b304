//! The GP predictive of a classifier in data space (section 4 of the math reference). The
//! softmax curvature `Λ` is singular, so the linear model is written for `y` itself:
//! `y ≈ p + Λ J (w − w*) + ε`, `ε ~ N(0, Λ)`, with
//!
//! - `p = softmax f*(x)` (or `s(f*)`),
//! - `var_f = diag(Λ* J* Σ J*ᵀ Λ*)`,
//! - `var_y = var_f + diag(Λ*)` (`diag(Λ*) = p − p²`),
//!
//! and the paper's "GP posterior mean" `J* w*`, one column per class.

use faer::{Mat, MatRef};

use crate::likelihood::classification::probit;
use crate::likelihood::Likelihood;
use crate::linalg::mat_vec;

/// Data-space predictive marginals at N inputs, each N×K.
#[derive(Debug, Clone)]
pub struct DataSpacePredictive {
    /// The GP posterior mean `J(x) w*`.
    pub gp_mean: Mat<f64>,
    /// `p = link(f*(x))`, the network's probabilities.
    pub p: Mat<f64>,
    /// `var_f = diag(Λ J Σ Jᵀ Λ)`.
    pub var_f: Mat<f64>,
    /// `var_y = var_f + diag(Λ)`.
    pub var_y: Mat<f64>,
    /// The probit approximation of `E[link(f)]`, `f ~ N(f*, diag(J Σ Jᵀ))`.
    pub p_probit: Mat<f64>,
}

/// The K×K diagonal blocks `C_i = J_i Σ J_iᵀ` of an NK×NK kernel, row-major, `N·K·K` values.
pub fn diagonal_blocks(kernel: MatRef<'_, f64>, k: usize) -> Vec<f64> {
    let n = kernel.nrows() / k;
    (0..n)
        .flat_map(|i| (0..k * k).map(move |m| kernel[(i * k + m / k, i * k + m % k)]))
        .collect()
}

/// The predictive from the outputs `F = f*(X)` (N×K), the stacked Jacobians (NK×P), the
/// weights `w*` and the diagonal blocks of the posterior kernel `J Σ Jᵀ`
/// ([`diagonal_blocks`]).
pub fn data_space_predictive(
    lik: &dyn Likelihood,
    f: MatRef<'_, f64>,
    jac: MatRef<'_, f64>,
    w: &[f64],
    cov_blocks: &[f64],
) -> DataSpacePredictive {
    let (n, k) = (f.nrows(), f.ncols());
    let jw = mat_vec(jac, w);
    let mut out = DataSpacePredictive {
        gp_mean: Mat::from_fn(n, k, |i, a| jw[i * k + a]),
        p: Mat::zeros(n, k),
        var_f: Mat::zeros(n, k),
        var_y: Mat::zeros(n, k),
        p_probit: Mat::zeros(n, k),
    };
    let mut lam = vec![0.0; k * k];
    let y0 = vec![0.0; k];
    for i in 0..n {
        let fi: Vec<f64> = (0..k).map(|a| f[(i, a)]).collect();
        lik.curvature(&fi, &y0, &mut lam);
        let c = &cov_blocks[i * k * k..(i + 1) * k * k];
        let noise = lik.observation_variance(&fi);
        let mean = lik.mean(&fi);
        let var_latent: Vec<f64> = (0..k).map(|a| c[a * k + a]).collect();
        let pp = probit(&fi, &var_latent);
        for a in 0..k {
            // (Λ C Λ)_aa = Σ_bc Λ_ab C_bc Λ_ca.
            let v: f64 = (0..k)
                .map(|b| {
                    lam[a * k + b]
                        * (0..k)
                            .map(|c2| c[b * k + c2] * lam[c2 * k + a])
                            .sum::<f64>()
                })
                .sum();
            out.p[(i, a)] = mean[a];
            out.var_f[(i, a)] = v;
            out.var_y[(i, a)] = v + noise[a];
            out.p_probit[(i, a)] = pp[a];
        }
    }
    out
}

/// Row-wise arg-max of an N×K matrix (for K = 1, the logit's sign: 1 if positive).
pub fn argmax_rows(m: MatRef<'_, f64>) -> Vec<usize> {
    (0..m.nrows())
        .map(|i| {
            if m.ncols() == 1 {
                usize::from(m[(i, 0)] > 0.0)
            } else {
                (0..m.ncols())
                    .max_by(|&a, &b| m[(i, a)].total_cmp(&m[(i, b)]))
                    .unwrap_or(0)
            }
        })
        .collect()
}

/// The fraction of rows whose arg-max ([`argmax_rows`]) is the label: `(1/N) Σ_i [argmax f_i = y_i]`.
pub fn accuracy(f: MatRef<'_, f64>, labels: &[usize]) -> f64 {
    let hits = argmax_rows(f)
        .iter()
        .zip(labels)
        .filter(|(a, b)| a == b)
        .count();
    hits as f64 / labels.len().max(1) as f64
}
