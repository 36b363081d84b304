//! Training: the MAP estimate `w* = argmin L(w)`, `L(w) = Σ_i ℓ(y_i, f_w(x_i)) + (δ/2)‖w‖²`,
//! by Adam (full batch or minibatch, learning-rate decay on plateau), then an optional polish to
//! a stationary point (the GP identities of DNN2GP hold exactly only where ∇L = 0):
//! L-BFGS, finished by damped Newton for small networks.

pub mod adam;
pub mod lbfgs;
pub mod model;
pub mod newton;
pub mod vogn;

use crate::progress::Progress;
use faer::{Mat, MatRef};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::likelihood::Likelihood;
use crate::linalg::{dot, norm};
use crate::nn::Network;
use crate::rng::{permutation, Rng};

pub use adam::{Adam, AdamState, Plateau};

/// The regularised sum-loss `L(w)` on a data set.
pub struct Objective<'a> {
    /// The network.
    pub net: &'a dyn Network,
    /// The likelihood.
    pub lik: &'a dyn Likelihood,
    /// Inputs (N×D).
    pub x: MatRef<'a, f64>,
    /// Targets (N×K).
    pub y: MatRef<'a, f64>,
    /// Prior precision δ.
    pub delta: f64,
}

/// The kind of the warning about a point that is not stationary.
pub const NOT_STATIONARY: &str = "not_stationary";

/// Relative gradients above this mark a fit as not stationary (see [`Stationarity`]).
pub const STATIONARY_RTOL: f64 = 1e-3;

/// The rule of [`Stationarity`] on a relative gradient (NaN is not stationary).
pub fn is_stationary(relative: f64) -> bool {
    relative <= STATIONARY_RTOL
}

/// How far `w` is from a stationary point of `L(w) = Σ_i ℓ_i + (δ/2)‖w‖²`: the gradient
/// `g = Σ_i J_iᵀ r_i + δw`, and its norm relative to the two forces that cancel at a minimum,
/// `‖g‖ / (‖Σ_i J_iᵀ r_i‖ + δ‖w‖)`: 0 at a stationary point, 1 when nothing cancels. The rule:
/// a fit is not stationary when this exceeds [`STATIONARY_RTOL`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stationarity {
    /// `‖∇L(w)‖`.
    pub grad_norm: f64,
    /// `‖∇L(w)‖ / (‖Σ_i J_iᵀ r_i‖ + δ‖w‖)`.
    pub relative: f64,
}

impl Stationarity {
    /// From the data part of the gradient, `Σ_i J_iᵀ r_i`, the point and δ.
    pub fn new(data_grad: &[f64], w: &[f64], delta: f64) -> Self {
        let g: Vec<f64> = data_grad
            .iter()
            .zip(w)
            .map(|(g, w)| g + delta * w)
            .collect();
        let grad_norm = norm(&g);
        let scale = norm(data_grad) + delta * norm(w);
        Stationarity {
            grad_norm,
            relative: if scale > 0.0 { grad_norm / scale } else { 0.0 },
        }
    }

    /// Whether the rule marks the fit as stationary.
    pub fn is_stationary(&self) -> bool {
        is_stationary(self.relative)
    }

    /// The warning for a point that is not stationary (kind [`NOT_STATIONARY`]), with
    /// `½ gᵀA⁻¹g` (the amount by which the GP marginal likelihood exceeds the Laplace evidence
    /// there) when known. Callers add what their user can do ([`crate::Warning::advise`]).
    pub fn warning(&self, gap: Option<f64>) -> Option<crate::Warning> {
        if self.is_stationary() {
            return None;
        }
        let gap = gap
            .map(|g| {
                format!(
                    "; the GP marginal likelihood exceeds the Laplace evidence by ½gᵀA⁻¹g = \
                     {g:.4e} nats"
                )
            })
            .unwrap_or_default();
        Some(crate::Warning::new(
            NOT_STATIONARY,
            format!(
                "w* is not a stationary point of the loss: ‖∇L(w*)‖ = {:.3e}, {:.2e} of its \
                 scale ‖Σ J_i'r_i‖ + δ‖w*‖ (the rule: above {STATIONARY_RTOL:.0e}){gap}. The \
                 Laplace-GGN and GP identities assume ∇L = 0, so neither evidence is reliable for \
                 choosing a model",
                self.grad_norm, self.relative
            ),
        ))
    }
}

/// Rows per parallel chunk of a large gradient.
pub const GRAD_CHUNK: usize = 32;
/// Rows × parameters above which a gradient is split into chunks.
pub(crate) const PARALLEL_GRAD_WORK: usize = 100_000;

/// Gathers the rows `idx` of `m`.
pub fn gather_rows(m: MatRef<'_, f64>, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), m.ncols(), |i, j| m[(idx[i], j)])
}

impl<'a> Objective<'a> {
    /// `L` on a data set.
    pub fn on(
        net: &'a dyn Network,
        lik: &'a dyn Likelihood,
        data: &'a Dataset,
        delta: f64,
    ) -> Self {
        Objective {
            net,
            lik,
            x: data.x.as_ref(),
            y: data.y.as_ref(),
            delta,
        }
    }

    /// Number of examples N.
    pub fn n(&self) -> usize {
        self.x.nrows()
    }

    /// `(L(w), ∇L(w))` on the full data.
    pub fn value_grad(&self, w: &[f64]) -> (f64, Vec<f64>) {
        self.batch_value_grad(w, self.x, self.y, 1.0)
    }

    /// The unbiased minibatch estimate `(N/M) Σ_B ℓ_i + (δ/2)‖w‖²` and its gradient.
    pub fn minibatch_value_grad(&self, w: &[f64], idx: &[usize]) -> (f64, Vec<f64>) {
        let (xb, yb) = (gather_rows(self.x, idx), gather_rows(self.y, idx));
        let scale = self.n() as f64 / idx.len() as f64;
        self.batch_value_grad(w, xb.as_ref(), yb.as_ref(), scale)
    }

    /// `Σ_i ℓ_i` and `Σ_i J_iᵀ r_i` over rows, in parallel over fixed chunks of
    /// [`GRAD_CHUNK`] rows when the batch is large (the chunks, and so the summation order, do
    /// not depend on the number of threads).
    pub fn data_loss_grad(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
    ) -> (f64, Vec<f64>) {
        let n = x.nrows();
        let one = |x: MatRef<'_, f64>, y: MatRef<'_, f64>| {
            let mut loss = 0.0;
            let (_, g) = self.net.forward_vjp(w, x, &mut |f| {
                loss = self.lik.nll_sum(f, y);
                self.lik.residuals(f, y)
            });
            (loss, g)
        };
        if n < 2 * GRAD_CHUNK || (n * w.len()) < PARALLEL_GRAD_WORK {
            return one(x, y);
        }
        crate::linalg::par_chunk_sum(n, GRAD_CHUNK, w.len(), |s, m| {
            one(x.subrows(s, m), y.subrows(s, m))
        })
    }

    /// The rule of [`Stationarity`] on a relative gradient (NaN is not stationary).
    pub fn is_stationary(relative: f64) -> bool {
        relative <= STATIONARY_RTOL
    }

    /// How far `w` is from a stationary point of `L`.
    pub fn stationarity(&self, w: &[f64]) -> Stationarity {
        let (_, data) = self.data_loss_grad(w, self.x, self.y);
        Stationarity::new(&data, w, self.delta)
    }

    fn batch_value_grad(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        scale: f64,
    ) -> (f64, Vec<f64>) {
        let (data_loss, mut g) = self.data_loss_grad(w, x, y);
        for (gi, wi) in g.iter_mut().zip(w) {
            *gi = scale * *gi + self.delta * wi;
        }
        (scale * data_loss + 0.5 * self.delta * dot(w, w), g)
    }
}

/// Settings of MAP training.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MapConfig {
    /// Adam settings.
    pub adam: Adam,
    /// Number of epochs (passes over the data).
    pub epochs: usize,
    /// Minibatch size; `None` for full batch.
    pub batch_size: Option<usize>,
    /// Seed of the minibatch order.
    pub seed: u64,
    /// Maximum polish iterations after Adam (0: none).
    pub polish_iters: usize,
    /// Stop the polish once `‖∇L‖ ≤ grad_tol`.
    pub grad_tol: f64,
}

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            adam: Adam::default(),
            epochs: 10_000,
            batch_size: None,
            seed: 0,
            polish_iters: 1000,
            grad_tol: 1e-9,
        }
    }
}

/// Outcome of MAP training.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MapResult {
    /// The MAP estimate `w*`.
    pub w: Vec<f64>,
    /// `L(w*)`.
    pub loss: f64,
    /// `‖∇L(w*)‖` on the full data.
    pub grad_norm: f64,
    /// Adam epochs run.
    pub epochs: usize,
    /// Polish iterations run (Newton or L-BFGS).
    pub polish_iters: usize,
    /// Learning rate at the end of Adam.
    pub final_lr: f64,
    /// Full-data loss after each epoch (full batch) or the epoch's mean minibatch loss.
    pub history: Vec<f64>,
}

/// Minimises `L` from `w0`: Adam, then L-BFGS, then (for P ≤ [`newton::MAX_PARAMS`], after at
/// most a quarter of the budget in L-BFGS) damped Newton until `‖∇L‖ ≤ grad_tol`,
/// `polish_iters` iterations in all. Fails with the epoch at which the
/// loss or gradient became NaN or infinite.
pub fn fit_map(
    obj: &Objective<'_>,
    w0: &[f64],
    cfg: &MapConfig,
    progress: Option<&dyn Progress>,
) -> Result<MapResult> {
    let mut run = adam::run(obj, w0, cfg, progress)?;
    let small = w0.len() <= newton::MAX_PARAMS;
    let lbfgs_iters = if small {
        cfg.polish_iters / 4
    } else {
        cfg.polish_iters
    };
    let (mut w, mut loss, mut iters) = lbfgs::minimize(obj, &run.w, lbfgs_iters, cfg.grad_tol)?;
    if small && iters < cfg.polish_iters {
        let (wn, ln, it) = newton::minimize(obj, &w, cfg.polish_iters - iters, cfg.grad_tol)?;
        (w, loss, iters) = (wn, ln, iters + it);
    }
    let (_, g) = obj.value_grad(&w);
    run.w = w;
    run.loss = loss;
    run.grad_norm = norm(&g);
    run.polish_iters = iters;
    Ok(run)
}

/// A hook called after each training epoch with `(epoch, parameters, epoch loss)`.
pub type EpochHook<'a> = dyn FnMut(usize, &[f64], f64) -> Result<()> + 'a;

/// Steps per epoch: `⌈n / batch_size⌉`, or 1 for full batch.
pub fn steps_per_epoch(n: usize, batch_size: Option<usize>) -> usize {
    match batch_size.map(|b| b.max(1)) {
        Some(b) if b < n => n.div_ceil(b),
        _ => 1,
    }
}

/// The minibatches of one epoch: a fresh random permutation of `0..n` cut into batches of
/// `batch_size`, or one `None` (the full data) when there is no batch size below `n`.
pub(crate) fn epoch_batches(
    rng: &mut Rng,
    n: usize,
    batch_size: Option<usize>,
) -> Vec<Option<Vec<usize>>> {
    match batch_size.map(|b| b.max(1)) {
        Some(b) if b < n => permutation(rng, n)
            .chunks(b)
            .map(|c| Some(c.to_vec()))
            .collect(),
        _ => vec![None],
    }
}

/// Runs one epoch, `step(batch) → loss` for each of `batches`, on a worker thread of the pool:
/// the parallel sections inside a step then fork and join among the workers, where a caller
/// outside the pool would sleep and be woken for each one. Returns the mean loss; `progress`
/// advances by one per step.
pub(crate) fn run_epoch(
    batches: &[Option<Vec<usize>>],
    progress: Option<&dyn Progress>,
    mut step: impl FnMut(Option<&[usize]>) -> Result<f64> + Send,
) -> Result<f64> {
    rayon::scope(|_| {
        let mut loss = 0.0;
        for idx in batches {
            loss += step(idx.as_deref())? / batches.len() as f64;
            if let Some(pb) = progress {
                pb.advance(1);
            }
        }
        Ok(loss)
    })
}

/// Whether a trial point is accepted by a polish: the Armijo condition, or, near the optimum
/// where `L` changes below rounding, a smaller gradient.
pub(crate) fn accept(f: f64, f_new: f64, armijo: bool, g_norm: f64, g_new_norm: f64) -> bool {
    let flat = (f_new - f).abs() <= 1e-12 * f.abs().max(1.0) && g_new_norm < g_norm;
    f_new.is_finite() && (armijo || flat)
}

/// Checks a loss value during training.
pub(crate) fn check_finite(loss: f64, grad: &[f64], what: &str, step: usize) -> Result<()> {
    if loss.is_finite() && grad.iter().all(|g| g.is_finite()) {
        Ok(())
    } else {
        Err(Error::Numerical(format!(
            "{what} diverged at step {step}: the loss or its gradient is NaN or infinite \
             (lower the learning rate or check the data for extreme values)"
        )))
    }
}

/// δ must be positive and finite ([`Error::Option`] named `δ`: callers rename it to their own
/// spelling with [`Error::for_option`]).
pub fn check_delta(delta: f64) -> Result<()> {
    if delta.is_finite() && delta > 0.0 {
        Ok(())
    } else {
        Err(Error::option(
            "δ",
            format!("the prior precision must be a positive number, got {delta}"),
        ))
    }
}
