//! The network linearised at `w`: Jacobians `J_i`, residuals `r_i`, curvatures `Λ_i`, and the
//! quantities of the equivalent linear model `ỹ_i = J_i c − Λ_i⁻¹ r_i = J_i w' + ε_i`,
//! `ε_i ~ N(0, Λ_i⁻¹)`, whose targets are built around a centre `c` (`c = w` for Laplace; the
//! variational mean `μ` for VI, with `w` a sample from `q`).

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::likelihood::{BlockDiag, Likelihood};
use crate::linalg::{a_b, at_b};
use crate::nn::Network;

/// Everything DNN2GP needs from the network and the likelihood at one point `w`.
#[derive(Debug, Clone)]
pub struct Linearization {
    /// The point `w` (P) where J, r and Λ are evaluated.
    w: Vec<f64>,
    /// The centre `c` of the pseudo-targets (P).
    center: Vec<f64>,
    /// Network outputs `f_w(x_i)` (N×K).
    f: Mat<f64>,
    /// Stacked Jacobians (NK×P), row `i·K + k`.
    jac: Mat<f64>,
    /// Residuals `r_i` stacked (NK).
    resid: Vec<f64>,
    /// Curvatures `Λ = blockdiag(Λ_i)`.
    lambda: BlockDiag,
    /// `−log p(D | w)`.
    nll: f64,
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
        let lambda = BlockDiag::curvatures(lik, f.as_ref(), y);
        let nll = lik.nll_sum(f.as_ref(), y);
        Linearization {
            w: w.to_vec(),
            center: w.to_vec(),
            f,
            jac,
            resid,
            lambda,
            nll,
        }
    }

    /// The point `w` where J, r and Λ are evaluated.
    pub fn point(&self) -> &[f64] {
        &self.w
    }

    /// The centre `c` of the pseudo-targets (`w` unless set by [`Linearization::with_center`]).
    pub fn center(&self) -> &[f64] {
        &self.center
    }

    /// The network's outputs `f_w(x_i)` (N×K).
    pub fn outputs(&self) -> MatRef<'_, f64> {
        self.f.as_ref()
    }

    /// The stacked Jacobians `J` (NK×P), row `i·K + k` = `∂f_k(x_i)/∂w`.
    pub fn jacobian(&self) -> MatRef<'_, f64> {
        self.jac.as_ref()
    }

    /// The residuals `r_i = ∂ℓ/∂f` stacked (NK).
    pub fn residuals(&self) -> &[f64] {
        &self.resid
    }

    /// The curvatures `Λ = blockdiag(Λ_i)`.
    pub fn curvature(&self) -> &BlockDiag {
        &self.lambda
    }

    /// The data loss `Σ_i ℓ(y_i, f_w(x_i)) = −log p(D | w)`.
    pub fn nll(&self) -> f64 {
        self.nll
    }

    /// The number of examples N.
    pub fn n(&self) -> usize {
        self.f.nrows()
    }

    /// The number of outputs K.
    pub fn k(&self) -> usize {
        self.f.ncols()
    }

    /// The same linearisation with pseudo-targets centred at `c` (Theorem 2: `c = μ`).
    pub fn with_center(mut self, c: &[f64]) -> Self {
        assert_eq!(c.len(), self.w.len(), "centre length");
        self.center = c.to_vec();
        self
    }

    /// Checks that a precomputed NTK is the NK×NK kernel of the training inputs.
    pub fn check_ntk(&self, ntk: &Mat<f64>) -> Result<()> {
        let nk = self.n() * self.k();
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

    /// The GP noise `Λ⁻¹`; fails, saying why and what to use instead, where a `Λ_i` is
    /// singular.
    pub fn lambda_inv(&self) -> Result<BlockDiag> {
        self.lambda.inverse().map_err(|i| self.singular(i))
    }

    /// The error for a singular `Λ_i`: the GP's noise `Λ_i⁻¹` does not exist, with what to
    /// use instead.
    fn singular(&self, i: usize) -> Error {
        let f: Vec<String> = self.f.row(i).iter().map(|v| format!("{v:.4}")).collect();
        let why = if self.k() > 1 {
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

    /// The mean noise variance of the GP, `tr(Λ⁻¹)/(NK)`.
    pub fn mean_noise_variance(&self) -> f64 {
        let tr = self.lambda_inv().map_or(0.0, |inv| inv.trace());
        tr / (self.n() * self.k()).max(1) as f64
    }

    /// `Σ_i log |Λ_i|`.
    pub fn sum_log_det_lambda(&self) -> Result<f64> {
        self.lambda.log_det().map_err(|i| self.singular(i))
    }

    /// Pseudo-targets `ỹ_i = J_i c − Λ_i⁻¹ r_i` (c = w for Laplace).
    pub fn pseudo_targets(&self) -> Result<Vec<f64>> {
        let jw = crate::linalg::mat_vec(self.jac.as_ref(), &self.center);
        let lr = self.lambda_inv()?.apply(&self.resid);
        Ok(jw.iter().zip(&lr).map(|(a, b)| a - b).collect())
    }

    /// `Λ_i^{1/2} J_i` stacked (NK×P), with `(Λ^{1/2})ᵀ Λ^{1/2} = Λ` (symmetric square root).
    pub fn sqrt_lambda_jac(&self) -> Mat<f64> {
        let k = self.k();
        let mut out = self.jac.clone();
        if self.lambda.is_scaled_identity() {
            for m in 0..self.n() * k {
                let s = self.lambda.block(m / k)[0].sqrt();
                out.as_mut().row_mut(m).iter_mut().for_each(|v| *v *= s);
            }
            return out;
        }
        let root = self.lambda.sqrt();
        for i in 0..self.n() {
            let ji = self.jac.as_ref().subrows(i * k, k);
            out.as_mut()
                .subrows_mut(i * k, k)
                .copy_from(a_b(root.block_mat(i).as_ref(), ji));
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
        let k = self.k();
        if !self.lambda.is_scaled_identity() {
            return crate::linalg::col_sq_norms(self.sqrt_lambda_jac().as_ref());
        }
        self.jac
            .col_iter()
            .map(|c| {
                c.iter()
                    .enumerate()
                    .map(|(m, j)| self.lambda.block(m / k)[0] * j * j)
                    .sum()
            })
            .collect()
    }

    /// The loss gradient without the prior, `Σ_i J_iᵀ r_i`.
    pub fn loss_gradient(&self) -> Vec<f64> {
        crate::linalg::mat_t_vec(self.jac.as_ref(), &self.resid)
    }
}
