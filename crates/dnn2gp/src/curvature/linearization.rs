//! The network linearised at `w`: Jacobians `J_i`, residuals `r_i`, curvatures `Λ_i`, and the
//! quantities of the equivalent linear model `ỹ_i = J_i c − Λ_i⁻¹ r_i = J_i w' + ε_i`,
//! `ε_i ~ N(0, Λ_i⁻¹)`, whose targets are built around a centre `c` (`c = w` for Laplace; the
//! variational mean `μ` for VI, with `w` a sample from `q`).

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};
use crate::likelihood::{self, is_scaled_identity, Likelihood};
use crate::linalg::{a_b, at_b};
use crate::nn::Network;

/// Everything DNN2GP needs from the network and the likelihood at one point `w`.
#[derive(Debug, Clone)]
pub struct Linearization {
    /// The point `w` (P) where J, r and Λ are evaluated.
    pub w: Vec<f64>,
    /// The centre `c` of the pseudo-targets (P); `w` unless set by [`Linearization::with_center`].
    pub center: Vec<f64>,
    /// Network outputs `f_w(x_i)` (N×K).
    pub f: Mat<f64>,
    /// Stacked Jacobians (NK×P), row `i·K + k`.
    pub jac: Mat<f64>,
    /// Residuals `r_i` stacked (NK).
    pub resid: Vec<f64>,
    /// Curvatures `Λ_i`, N blocks of K×K row-major.
    pub lambda: Vec<f64>,
    /// The data loss `Σ_i ℓ(y_i, f_w(x_i)) = −log p(D | w)`.
    pub nll: f64,
    /// Number of examples N.
    pub n: usize,
    /// Number of outputs K.
    pub k: usize,
}

/// A small symmetric K×K block as a faer matrix.
fn block(k: usize, b: &[f64]) -> Mat<f64> {
    Mat::from_fn(k, k, |i, j| b[i * k + j])
}

impl Linearization {
    /// [`Linearization::new`] after checking that its Jacobian (NK×P) fits in `memory_limit`
    /// bytes.
    pub fn checked(
        net: &dyn Network,
        lik: &dyn Likelihood,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        w: &[f64],
        memory_limit: u128,
    ) -> Result<Self> {
        crate::linalg::check_memory(
            "the training Jacobian (NK×P)",
            crate::linalg::mat_bytes(x.nrows() * net.n_outputs(), net.n_params()),
            memory_limit,
            "use a subset of the training data",
        )?;
        Ok(Self::new(net, lik, x, y, w))
    }

    /// Linearises `net` at `w` on the data `(X, Y)` under `lik`.
    pub fn new(
        net: &dyn Network,
        lik: &dyn Likelihood,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        w: &[f64],
    ) -> Self {
        let (f, jac) = net.forward_jacobian(w, x);
        let r = lik.residuals(f.as_ref(), y);
        let (n, k) = (f.nrows(), f.ncols());
        let resid = (0..n * k).map(|m| r[(m / k, m % k)]).collect();
        let lambda = likelihood::curvatures(lik, f.as_ref(), y);
        let nll = lik.nll_sum(f.as_ref(), y);
        Linearization {
            w: w.to_vec(),
            center: w.to_vec(),
            f,
            jac,
            resid,
            lambda,
            nll,
            n,
            k,
        }
    }

    /// The same linearisation with pseudo-targets centred at `c` (Theorem 2: `c = μ`).
    pub fn with_center(mut self, c: &[f64]) -> Self {
        assert_eq!(c.len(), self.w.len(), "centre length");
        self.center = c.to_vec();
        self
    }

    /// Checks that a precomputed NTK is the NK×NK kernel of the training inputs.
    pub fn check_ntk(&self, ntk: &Mat<f64>) -> Result<()> {
        let nk = self.n * self.k;
        if ntk.nrows() != nk || ntk.ncols() != nk {
            return Err(Error::Invalid(format!(
                "the NTK is {}×{}, the training data need {nk}×{nk}",
                ntk.nrows(),
                ntk.ncols()
            )));
        }
        Ok(())
    }

    /// Number of parameters P.
    pub fn n_params(&self) -> usize {
        self.jac.ncols()
    }

    /// `Λ_i` as a matrix.
    pub fn lambda_block(&self, i: usize) -> Mat<f64> {
        let kk = self.k * self.k;
        block(self.k, &self.lambda[i * kk..(i + 1) * kk])
    }

    /// `Λ_i⁻¹` for every example (N blocks, row-major); fails where `Λ_i` is singular.
    pub fn lambda_inv(&self) -> Result<Vec<f64>> {
        let k = self.k;
        let mut out = vec![0.0; self.lambda.len()];
        for i in 0..self.n {
            let llt = self
                .lambda_block(i)
                .llt(Side::Lower)
                .map_err(|_| self.singular(i))?;
            let inv = llt.inverse();
            for a in 0..k {
                for b in 0..k {
                    out[i * k * k + a * k + b] = inv[(a, b)];
                }
            }
        }
        Ok(out)
    }

    /// The error for a singular `Λ_i`: the GP's noise `Λ_i⁻¹` does not exist, with what to
    /// use instead.
    fn singular(&self, i: usize) -> Error {
        let f: Vec<String> = self.f.row(i).iter().map(|v| format!("{v:.4}")).collect();
        let why = if self.k > 1 {
            "a softmax's Λ = diag(p) − ppᵀ has rank K − 1 by construction, so the GP noise Λ⁻¹ does \
             not exist; `dnn2gp predict` gives the Laplace-GGN (GLM) predictive of a softmax model, \
             and `dnn2gp reproduce mnist --model` its data-space views"
        } else {
            "the likelihood's curvature is 0 here (a Bernoulli logit beyond ±745, where s(f)s(−f) \
             underflows), so the GP noise Λ⁻¹ does not exist; retrain with a larger prior \
             precision δ, which keeps the logits finite"
        };
        Error::Invalid(format!(
            "curvature Λ of training example {i} (outputs [{}]) is singular: {why}",
            f.join(", ")
        ))
    }

    /// The mean noise variance of the GP, `tr(Λ̃⁻¹)/(NK)`.
    pub fn mean_noise_variance(&self) -> f64 {
        let k = self.k;
        let inv = self.lambda_inv().unwrap_or_default();
        let tr: f64 = inv
            .chunks(k * k)
            .map(|b| (0..k).map(|a| b[a * k + a]).sum::<f64>())
            .sum();
        tr / (self.n * k).max(1) as f64
    }

    /// `Σ_i log |Λ_i|`.
    pub fn sum_log_det_lambda(&self) -> Result<f64> {
        let mut s = 0.0;
        for i in 0..self.n {
            let llt = self
                .lambda_block(i)
                .llt(Side::Lower)
                .map_err(|_| self.singular(i))?;
            s += 2.0 * (0..self.k).map(|j| llt.L()[(j, j)].ln()).sum::<f64>();
        }
        Ok(s)
    }

    /// Applies the block-diagonal `Λ̃` (or any N blocks `b`) to a stacked NK vector.
    pub fn apply_blocks(&self, blocks: &[f64], v: &[f64]) -> Vec<f64> {
        let k = self.k;
        let mut out = vec![0.0; v.len()];
        for i in 0..self.n {
            for a in 0..k {
                out[i * k + a] = (0..k)
                    .map(|b| blocks[i * k * k + a * k + b] * v[i * k + b])
                    .sum();
            }
        }
        out
    }

    /// Pseudo-targets `ỹ_i = J_i c − Λ_i⁻¹ r_i` (c = w for Laplace).
    pub fn pseudo_targets(&self) -> Result<Vec<f64>> {
        let jw = crate::linalg::mat_vec(self.jac.as_ref(), &self.center);
        let lr = self.apply_blocks(&self.lambda_inv()?, &self.resid);
        Ok(jw.iter().zip(&lr).map(|(a, b)| a - b).collect())
    }

    /// `Λ_i^{1/2} J_i` stacked (NK×P), with `(Λ^{1/2})ᵀ Λ^{1/2} = Λ` (symmetric square root).
    pub fn sqrt_lambda_jac(&self) -> Mat<f64> {
        let k = self.k;
        if self.lambda.chunks(k * k).all(|b| is_scaled_identity(k, b)) {
            let mut out = self.jac.clone();
            for m in 0..self.n * k {
                let s = self.lambda[(m / k) * k * k].sqrt();
                out.as_mut().row_mut(m).iter_mut().for_each(|v| *v *= s);
            }
            return out;
        }
        let mut out = Mat::zeros(self.jac.nrows(), self.jac.ncols());
        for i in 0..self.n {
            let root = crate::linalg::sym_sqrt(self.lambda_block(i).as_ref());
            let ji = self.jac.as_ref().subrows(i * k, k);
            out.as_mut()
                .subrows_mut(i * k, k)
                .copy_from(a_b(root.as_ref(), ji));
        }
        out
    }

    /// The generalised Gauss-Newton `Σ_i J_iᵀ Λ_i J_i` (P×P).
    pub fn ggn(&self) -> Mat<f64> {
        let s = self.sqrt_lambda_jac();
        at_b(s.as_ref(), s.as_ref())
    }

    /// The diagonal of the GGN, `Σ_m λ_m J_m²` when every `Λ_i` is a multiple of the identity.
    pub fn ggn_diag(&self) -> Vec<f64> {
        let k = self.k;
        if !self.lambda.chunks(k * k).all(|b| is_scaled_identity(k, b)) {
            return crate::linalg::col_sq_norms(self.sqrt_lambda_jac().as_ref());
        }
        self.jac
            .col_iter()
            .map(|c| {
                c.iter()
                    .enumerate()
                    .map(|(m, j)| self.lambda[(m / k) * k * k] * j * j)
                    .sum()
            })
            .collect()
    }

    /// The loss gradient without the prior, `Σ_i J_iᵀ r_i`.
    pub fn loss_gradient(&self) -> Vec<f64> {
        crate::linalg::mat_t_vec(self.jac.as_ref(), &self.resid)
    }
}
