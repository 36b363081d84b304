//! The GP of variational training (Theorem 2).
//!
//! During training, one VOGN step from `q_t = N(μ_t, Σ_t)` with sample `w_t` is the exact
//! posterior of the linear model `ỹ_i = J_i w + ε_i`, `ε_i ~ N(0, (β Λ_i)⁻¹)`, with targets
//! `ỹ_i = J_i μ_t − Λ_i⁻¹ r_i` (all at `w_t`) and prior `N(m_t, S_t)`,
//! `S_t⁻¹ = (1 − β) Σ_t⁻¹ + β δ I`, `m_t = (1 − β) S_t Σ_t⁻¹ μ_t`. So the network is a GP with
//! mean function `J(x) m_t` and kernel `J(x) S_t J(x')ᵀ` at every iteration.
//!
//! At convergence the GP is the DNN2GP one (prior `δ⁻¹ I`, noise `Λ⁻¹`) linearised at samples
//! `w ~ q` with targets centred at μ: see [`converged_linearizations`].

use faer::{Mat, MatRef};

use super::GpPrediction;
use crate::curvature::Linearization;
use crate::curvature::Precision;
use crate::error::Result;
use crate::likelihood::Likelihood;
use crate::linalg::{at_b, col_sq_norms, mat_vec, Cholesky};
use crate::nn::Network;
use crate::rng::seeded;

/// The GP of one VOGN step.
pub struct StepGp<'a> {
    lin: &'a Linearization,
    /// Prior mean `m_t` of the weights.
    pub prior_mean: Vec<f64>,
    prior_chol: Cholesky,
    targets: Vec<f64>,
    gram_chol: Cholesky,
    alpha: Vec<f64>,
}

/// The prior precision of step t, `S_t⁻¹ = (1 − β) Σ_t⁻¹ + β δ I`.
pub fn step_prior_precision(precision_t: MatRef<'_, f64>, beta: f64, delta: f64) -> Mat<f64> {
    let p = precision_t.nrows();
    Mat::from_fn(p, p, |i, j| {
        (1.0 - beta) * precision_t[(i, j)] + if i == j { beta * delta } else { 0.0 }
    })
}

/// The kernel of step t on inputs with Jacobians `J`: `J S_t Jᵀ`.
pub fn step_kernel(
    j: MatRef<'_, f64>,
    precision_t: MatRef<'_, f64>,
    beta: f64,
    delta: f64,
) -> Result<Mat<f64>> {
    let chol = Cholesky::new(
        step_prior_precision(precision_t, beta, delta).as_ref(),
        "prior precision S_t⁻¹",
    )?;
    let v = chol.solve_l(j.transpose());
    Ok(at_b(v.as_ref(), v.as_ref()))
}

impl<'a> StepGp<'a> {
    /// The GP for a full-batch step from precision `Σ_t⁻¹` (dense) with step β and prior δ,
    /// where `lin` holds J, r, Λ at the sample `w_t` on all N examples and its centre is the
    /// point the targets are built around (μ_t for Theorem 2).
    pub fn new(
        lin: &'a Linearization,
        precision_t: MatRef<'_, f64>,
        mu_t: &[f64],
        beta: f64,
        delta: f64,
    ) -> Result<Self> {
        Self::minibatch(lin, precision_t, mu_t, beta, delta, lin.n())
    }

    /// The GP of a minibatch step: `lin` on the M examples of the batch, out of `n_total`.
    /// VOGN scales the batch's curvature and gradient by N/M, so the step is the posterior of
    /// the same linear model on the batch with noise `(β (N/M) Λ_i)⁻¹`.
    pub fn minibatch(
        lin: &'a Linearization,
        precision_t: MatRef<'_, f64>,
        mu_t: &[f64],
        beta: f64,
        delta: f64,
        n_total: usize,
    ) -> Result<Self> {
        if n_total < lin.n() || lin.n() == 0 {
            return Err(crate::error::Error::Invalid(format!(
                "a minibatch of {} examples out of {n_total}",
                lin.n()
            )));
        }
        let scale = n_total as f64 / lin.n() as f64;
        let s_inv = step_prior_precision(precision_t, beta, delta);
        let prior_chol = Cholesky::new(s_inv.as_ref(), "prior precision S_t⁻¹")?;
        let pm = mat_vec(precision_t, mu_t);
        let prior_mean: Vec<f64> = prior_chol
            .solve_vec(&pm)
            .into_iter()
            .map(|v| (1.0 - beta) * v)
            .collect();
        let v = prior_chol.solve_l(lin.jacobian().transpose());
        let mut gram = at_b(v.as_ref(), v.as_ref());
        super::add_blocks(&mut gram, &lin.lambda_inv()?, beta * scale);
        let gram_chol = Cholesky::new(gram.as_ref(), "step GP Gram matrix")?;
        let targets = lin.pseudo_targets()?;
        let jm = mat_vec(lin.jacobian(), &prior_mean);
        let e: Vec<f64> = targets.iter().zip(&jm).map(|(t, m)| t - m).collect();
        let alpha = gram_chol.solve_vec(&e);
        Ok(StepGp {
            lin,
            prior_mean,
            prior_chol,
            targets,
            gram_chol,
            alpha,
        })
    }

    /// Pseudo-targets ỹ.
    pub fn targets(&self) -> &[f64] {
        &self.targets
    }

    /// The kernel `J_a S_t J_bᵀ`.
    pub fn kernel(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        let (va, vb) = (
            self.prior_chol.solve_l(ja.transpose()),
            self.prior_chol.solve_l(jb.transpose()),
        );
        at_b(va.as_ref(), vb.as_ref())
    }

    /// GP posterior at test Jacobians `J*` (taken at the same `w_t`).
    pub fn predict(&self, jstar: MatRef<'_, f64>) -> GpPrediction {
        let vs = self.prior_chol.solve_l(jstar.transpose());
        let vx = self.prior_chol.solve_l(self.lin.jacobian().transpose());
        let k_sx = at_b(vs.as_ref(), vx.as_ref());
        let prior = mat_vec(jstar, &self.prior_mean);
        let mean = prior
            .iter()
            .zip(mat_vec(k_sx.as_ref(), &self.alpha))
            .map(|(a, b)| a + b)
            .collect();
        let w = self.gram_chol.solve_l(k_sx.transpose());
        let var = col_sq_norms(vs.as_ref())
            .iter()
            .zip(col_sq_norms(w.as_ref()))
            .map(|(a, b)| a - b)
            .collect();
        GpPrediction::clamping(mean, var)
    }
}

/// The converged VI linearisations (Theorem 2 at convergence): J, r, Λ at `n_samples` draws
/// `w ~ N(μ, Σ)` (at μ itself when `n_samples` is 0), each with pseudo-targets centred at μ.
/// Each is a DNN2GP GP with prior `δ⁻¹ I` and noise `Λ⁻¹`; averaging their log marginal
/// likelihoods estimates the expectation under q.
#[allow(clippy::too_many_arguments)]
pub fn converged_linearizations(
    net: &dyn Network,
    lik: &dyn Likelihood,
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    mu: &[f64],
    precision: &Precision,
    n_samples: usize,
    seed: u64,
) -> Vec<Linearization> {
    posterior_points(mu, precision, n_samples, seed)
        .iter()
        .map(|w| Linearization::new(net, lik, x, y, w).with_center(mu))
        .collect()
}

/// `n` draws from `N(μ, Σ)` with a seed, or `[μ]` when `n` is 0.
pub fn posterior_points(mu: &[f64], precision: &Precision, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = seeded(seed);
    if n == 0 {
        vec![mu.to_vec()]
    } else {
        (0..n).map(|_| precision.sample(mu, &mut rng)).collect()
    }
}
