//! VOGN: variational online Gauss-Newton (Khan et al. 2018; Theorem 2 of DNN2GP).
//!
//! The variational posterior is `q(w) = N(μ, Σ)`. Each step draws `w_t ~ q` (or `w_t = μ` for
//! the deterministic OGN), takes a minibatch B of size M, and with estimates scaled to the full
//! data set (the update is written for the **sum** of per-example losses over all N examples)
//!
//! `ĝ = (N/M) Σ_B J_iᵀ r_i`, `Ĥ = (N/M) Σ_B J_iᵀ Λ_i J_i` (GGN) or `(N/M) Σ_B g_i g_iᵀ`
//! (squared per-example gradients, what the official code uses), all at `w_t`, updates
//!
//! `Σ⁻¹ ← (1 − β) Σ⁻¹ + β (Ĥ + δ I)`, `μ ← μ − α Σ (ĝ + δ μ)`, with α = β by default for a
//! full covariance (the form of Theorem 2) and `β/10` for a diagonal one, whose steps
//! `α Σ ĝ` ignore the correlations and overshoot at α = β.
//!
//! With S Monte Carlo samples, ĝ and Ĥ are averaged over the samples. Optional momentum
//! replaces `ĝ + δμ` by its bias-corrected exponential average. `Σ` is full (P×P) or diagonal.

use crate::progress::Progress;
use faer::{Mat, MatRef};
use rayon::prelude::*;

use super::{
    check_finite, epoch_batches, gather_rows, run_epoch, EpochHook, Objective, GRAD_CHUNK,
    PARALLEL_GRAD_WORK,
};
use crate::error::{Error, Result};
use crate::likelihood;
use crate::nn::{Cotangents, Reduce};

use crate::curvature::{Linearization, Precision};
use crate::linalg::{at_b, wide};
use crate::rng::{child_seed, seeded, Rng};

crate::words! {
    /// Form of the covariance of `q`.
    pub enum Covariance("covariance") {
        /// Full P×P (small networks).
        Full = ["full"],
        /// Diagonal.
        Diag = ["diag", "diagonal"],
    }
}

crate::words! {
    /// Source of the curvature estimate Ĥ.
    pub enum Curvature("curvature") {
        /// The generalised Gauss-Newton `Σ J_iᵀ Λ_i J_i` (the paper's VOGGN).
        Ggn = ["ggn"],
        /// Squared per-example gradients `Σ g_i g_iᵀ` (empirical Fisher; the official VOGN
        /// code).
        SquaredGradients = ["squared-gradients", "sqgrad", "ef"],
    }
}

/// Settings of VOGN.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VognConfig {
    /// Step β of the precision update.
    pub beta: f64,
    /// Step α of the mean update (`None`: [`VognConfig::mean_step`]'s default).
    pub lr: Option<f64>,
    /// Monte Carlo samples per step.
    pub mc_samples: usize,
    /// Minibatch size (`None`: full batch).
    pub batch_size: Option<usize>,
    /// Passes over the data.
    pub epochs: usize,
    /// Full or diagonal covariance.
    pub covariance: Covariance,
    /// GGN or squared gradients.
    pub curvature: Curvature,
    /// Momentum β₁ on the gradient (`None`: no momentum).
    pub momentum: Option<f64>,
    /// Initial precision `Σ₀⁻¹ = s I`.
    pub init_precision: f64,
    /// OGN: use `w_t = μ_t` instead of a sample.
    pub deterministic: bool,
    /// Seed of the samples and minibatches.
    pub seed: u64,
    /// Keep `(μ_t, Σ_t⁻¹)` every this many steps (0: never).
    pub snapshot_every: usize,
}

impl VognConfig {
    /// The mean step α: as given, else β for a full covariance (the form of Theorem 2, in
    /// which each step is the posterior of a GP) and `β/10` for a diagonal one.
    pub fn mean_step(&self) -> f64 {
        self.lr.unwrap_or(match self.covariance {
            Covariance::Full => self.beta,
            Covariance::Diag => self.beta / 10.0,
        })
    }
}

/// A run diverges when its epoch loss exceeds the best so far by this many times its scale
/// (`max(|best|, N)`), or ‖μ‖ exceeds this many times `max(‖μ₀‖, 1)`.
pub const DIVERGENCE: f64 = 1e4;

impl Default for VognConfig {
    fn default() -> Self {
        VognConfig {
            beta: 0.1,
            lr: None,
            mc_samples: 1,
            batch_size: None,
            epochs: 1000,
            covariance: Covariance::Full,
            curvature: Curvature::Ggn,
            momentum: None,
            init_precision: 1.0,
            deterministic: false,
            seed: 0,
            snapshot_every: 0,
        }
    }
}

/// The state of `q = N(μ, Σ)` and the momentum.
#[derive(Debug, Clone)]
pub struct VognState {
    /// Mean μ.
    pub mu: Vec<f64>,
    /// Precision `Σ⁻¹`.
    pub precision: Precision,
    momentum: Vec<f64>,
    /// Steps taken.
    pub t: usize,
    /// Buffers of the diagonal estimates, kept across steps.
    scratch: Vec<Vec<Vec<f64>>>,
}

impl VognState {
    /// `q₀ = N(μ₀, s⁻¹ I)`.
    pub fn new(mu0: &[f64], cfg: &VognConfig) -> Result<Self> {
        let p = mu0.len();
        if !(cfg.init_precision.is_finite() && cfg.init_precision > 0.0) {
            return Err(Error::Invalid(format!(
                "initial precision must be positive, got {}",
                cfg.init_precision
            )));
        }
        let precision = match cfg.covariance {
            Covariance::Full => Precision::full(
                Mat::from_fn(p, p, |i, j| if i == j { cfg.init_precision } else { 0.0 }),
                "VOGN precision",
            )?,
            Covariance::Diag => Precision::Diag(vec![cfg.init_precision; p]),
        };
        Ok(VognState {
            mu: mu0.to_vec(),
            precision,
            momentum: vec![0.0; p],
            t: 0,
            scratch: Vec::new(),
        })
    }
}

impl VognState {
    /// The points of one step: `cfg.mc_samples` draws from `q`, or `μ` alone for the
    /// deterministic OGN. One stream per sample, so that samples are drawn in parallel and the
    /// numbers do not depend on the thread count.
    pub fn draw(&self, cfg: &VognConfig, rng: &mut Rng) -> Vec<Vec<f64>> {
        if cfg.deterministic {
            return vec![self.mu.clone()];
        }
        let seeds: Vec<u64> = (0..cfg.mc_samples).map(|_| child_seed(rng)).collect();
        let draw = |s: &u64| self.precision.sample(&self.mu, &mut seeded(*s));
        if seeds.len() > 1 {
            seeds.par_iter().map(draw).collect()
        } else {
            seeds.iter().map(draw).collect()
        }
    }
}

/// A curvature estimate Ĥ in the form of the covariance.
enum Hessian {
    Full(Mat<f64>),
    Diag(Vec<f64>),
}

/// Full-data-scaled gradient and curvature estimates at the samples.
struct Estimates {
    g: Vec<f64>,
    h: Hessian,
    loss: f64,
}

/// Most jobs one diagonal estimate is cut into (each holds a 2P buffer).
const MAX_JOBS: usize = 16;

/// Diagonal estimates from backward passes alone (no Jacobian is formed). The work is cut into
/// jobs, one per sample when there are several, else row chunks of a large batch; the jobs run
/// in parallel into the buffers of `scratch` (kept across steps) and are summed in order, so
/// that the numbers do not depend on the thread count.
fn diag_estimates(
    obj: &Objective<'_>,
    cfg: &VognConfig,
    xb: MatRef<'_, f64>,
    yb: MatRef<'_, f64>,
    samples: &[Vec<f64>],
    scratch: &mut Vec<Vec<Vec<f64>>>,
) -> Estimates {
    let (n, p) = (xb.nrows(), samples[0].len());
    let scale = obj.n() as f64 / n as f64 / samples.len() as f64;
    // (sample, first row, rows).
    let jobs: Vec<(usize, usize, usize)> = if samples.len() > 1 || n * p < PARALLEL_GRAD_WORK {
        (0..samples.len()).map(|s| (s, 0, n)).collect()
    } else {
        let rows = GRAD_CHUNK.max(n.div_ceil(MAX_JOBS));
        (0..n)
            .step_by(rows)
            .map(|r| (0, r, rows.min(n - r)))
            .collect()
    };
    if scratch.len() < jobs.len() {
        scratch.resize_with(jobs.len(), Vec::new);
    }
    // One job: its data loss, and [g; h] (one buffer) or g and h (two) in `out`.
    let run = |&(s, r, m): &(usize, usize, usize), out: &mut Vec<Vec<f64>>| {
        let (xc, yc) = (xb.subrows(r, m), yb.subrows(r, m));
        let mut l = 0.0;
        obj.net.forward_reduce_into(
            &samples[s],
            xc,
            &mut |f| {
                l = obj.lik.nll_sum(f, yc);
                let r = obj.lik.residuals(f, yc);
                match cfg.curvature {
                    Curvature::Ggn => vec![
                        Cotangents {
                            rows: r,
                            rows_per_example: 1,
                            reduce: Reduce::Sum,
                        },
                        Cotangents {
                            rows: likelihood::curvature_root_rows(obj.lik, f, yc),
                            rows_per_example: f.ncols(),
                            reduce: Reduce::SumSq,
                        },
                    ],
                    // Gradient and squared gradients share their cotangents: one pass.
                    Curvature::SquaredGradients => vec![Cotangents {
                        rows: r,
                        rows_per_example: 1,
                        reduce: Reduce::SumAndSumSq,
                    }],
                }
            },
            out,
        );
        l
    };
    let losses: Vec<f64> = if jobs.len() > 1 {
        jobs.par_iter()
            .zip(scratch.par_iter_mut())
            .map(|(j, out)| run(j, out))
            .collect()
    } else {
        vec![run(&jobs[0], &mut scratch[0])]
    };
    let (g0, h0) = grad_and_curvature(&scratch[0], p);
    let (mut g, mut h) = (g0.to_vec(), h0.to_vec());
    for out in &scratch[1..jobs.len()] {
        let (gj, hj) = grad_and_curvature(out, p);
        wide(|| {
            g.iter_mut().zip(gj).for_each(|(a, b)| *a += b);
            h.iter_mut().zip(hj).for_each(|(a, b)| *a += b);
        });
    }
    let loss = scale * losses.iter().sum::<f64>();
    wide(|| {
        g.iter_mut().for_each(|a| *a *= scale);
        h.iter_mut().for_each(|a| *a *= scale);
    });
    Estimates {
        g,
        h: Hessian::Diag(h),
        loss,
    }
}

/// A job's sums `(Σ g, Σ h)`: one buffer `[g; h]` (squared gradients) or two (GGN).
fn grad_and_curvature(out: &[Vec<f64>], p: usize) -> (&[f64], &[f64]) {
    match out {
        [gh] => gh.split_at(p),
        [g, h] => (g, h),
        _ => unreachable!("one or two requests"),
    }
}

fn estimates(
    obj: &Objective<'_>,
    cfg: &VognConfig,
    idx: Option<&[usize]>,
    samples: &[Vec<f64>],
    scratch: &mut Vec<Vec<Vec<f64>>>,
) -> Estimates {
    let gathered = idx.map(|idx| (gather_rows(obj.x, idx), gather_rows(obj.y, idx)));
    let (xb, yb) = match &gathered {
        Some((x, y)) => (x.as_ref(), y.as_ref()),
        None => (obj.x, obj.y),
    };
    if cfg.covariance == Covariance::Diag {
        return diag_estimates(obj, cfg, xb, yb, samples, scratch);
    }
    let m = xb.nrows();
    let p = samples[0].len();
    let scale = obj.n() as f64 / m as f64 / samples.len() as f64;
    let mut g = vec![0.0; p];
    let mut loss = 0.0;
    // Rows whose outer products sum to Ĥ, all samples stacked: Λ^{1/2} J (GGN) or the
    // per-example gradients g_i = J_iᵀ r_i.
    let mut stacked: Vec<Mat<f64>> = Vec::new();
    for w in samples {
        let lin = Linearization::new(obj.net, obj.lik, xb, yb, w);
        loss += scale * obj.lik.nll_sum(lin.outputs(), yb);
        for (g, v) in g.iter_mut().zip(lin.loss_gradient()) {
            *g += scale * v;
        }
        stacked.push(match cfg.curvature {
            Curvature::Ggn => lin.sqrt_lambda_jac(),
            Curvature::SquaredGradients => {
                let k = lin.k();
                Mat::from_fn(m, p, |i, c| {
                    (0..k)
                        .map(|a| lin.jacobian()[(i * k + a, c)] * lin.residuals()[i * k + a])
                        .sum()
                })
            }
        });
    }
    let h_full = {
        let total: usize = stacked.iter().map(|r| r.nrows()).sum();
        let mut all = Mat::<f64>::zeros(total, p);
        let mut r0 = 0;
        for r in &stacked {
            all.as_mut().subrows_mut(r0, r.nrows()).copy_from(r);
            r0 += r.nrows();
        }
        let mut h = at_b(all.as_ref(), all.as_ref());
        h.as_mut()
            .col_iter_mut()
            .for_each(|c| c.iter_mut().for_each(|v| *v *= scale));
        h
    };
    Estimates {
        g,
        h: Hessian::Full(h_full),
        loss,
    }
}

/// One VOGN step on the minibatch `idx` (`None`: all data) at the given samples of `q`;
/// returns the minibatch estimate of the data loss.
pub fn step_at(
    obj: &Objective<'_>,
    state: &mut VognState,
    cfg: &VognConfig,
    idx: Option<&[usize]>,
    samples: &[Vec<f64>],
) -> Result<f64> {
    let est = estimates(obj, cfg, idx, samples, &mut state.scratch);
    state.t += 1;
    check_finite(est.loss, &est.g, "VOGN", state.t)?;
    let (beta, delta) = (cfg.beta, obj.delta);
    let lr = cfg.mean_step();
    let momentum = cfg.momentum.map(|b1| (b1, 1.0 - b1.powi(state.t as i32)));
    // The direction `ĝ + δμ`, or with momentum its bias-corrected exponential average.
    let direction = |g: f64, mu: f64, m: &mut f64| {
        let d = g + delta * mu;
        match momentum {
            Some((b1, corr)) => {
                *m = b1 * *m + (1.0 - b1) * d;
                *m / corr
            }
            None => d,
        }
    };
    let (mu, mom, g) = (&mut state.mu, &mut state.momentum, &est.g);
    match (&mut state.precision, est.h) {
        (
            Precision::Full {
                matrix: Some(matrix),
                ..
            },
            Hessian::Full(h),
        ) => {
            let p = matrix.nrows();
            let next = Mat::from_fn(p, p, |i, j| {
                (1.0 - beta) * matrix[(i, j)]
                    + beta * (h[(i, j)] + if i == j { delta } else { 0.0 })
            });
            state.precision = Precision::full(next, "VOGN precision")?;
            let dir: Vec<f64> = mu
                .iter()
                .zip(mom.iter_mut())
                .zip(g)
                .map(|((mu, m), g)| direction(*g, *mu, m))
                .collect();
            for (mu, s) in mu.iter_mut().zip(state.precision.covariance_times(&dir)) {
                *mu -= lr * s;
            }
        }
        // Precision and mean element by element, in one pass.
        (Precision::Diag(d), Hessian::Diag(h)) => wide(|| {
            for ((((d, h), mu), m), g) in d.iter_mut().zip(&h).zip(mu).zip(mom).zip(g) {
                *d = (1.0 - beta) * *d + beta * (h + delta);
                *mu -= lr * (direction(*g, *mu, m) / *d);
            }
        }),
        _ => unreachable!("estimates match the covariance form"),
    }
    Ok(est.loss)
}

/// Stops a run whose epoch loss (N examples) grew by orders of magnitude over the `best`
/// before, or whose mean left finite range or grew far beyond its start (‖μ₀‖, at least 1):
/// [`Error::Numerical`] naming the epoch, the step, the growth and the likely causes.
fn check_divergence(
    n: usize,
    epoch: usize,
    state: &VognState,
    loss: f64,
    best: f64,
    norm0: f64,
    cfg: &VognConfig,
) -> Result<()> {
    let norm = crate::linalg::norm(&state.mu);
    let grew = best.is_finite() && loss - best > DIVERGENCE * best.abs().max(n as f64);
    if loss.is_finite() && norm.is_finite() && !grew && norm <= DIVERGENCE * norm0 {
        return Ok(());
    }
    Err(Error::Numerical(format!(
        "VOGN diverged in epoch {} (step {}): the loss estimate went from {best:.3e} (its best) \
         to {loss:.3e} and ‖μ‖ from {norm0:.3e} to {norm:.3e}; the mean steps α Σ (ĝ + δμ) are \
         too long for this curvature. Likely causes: a mean step α too large (α = {:.3e}; lower \
         it), an initial precision too small (s = {:.3e}; raise it, so that the first steps are \
         short), or a precision step β too large (β = {:.3e})",
        epoch + 1,
        state.t,
        cfg.mean_step(),
        cfg.init_precision,
        cfg.beta
    )))
}

/// A kept state of the run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Step index t (the state before step t+1).
    pub t: usize,
    /// μ_t.
    pub mu: Vec<f64>,
    /// Σ_t⁻¹.
    pub precision: Precision,
}

/// Outcome of a VOGN run.
#[derive(Debug, Clone)]
pub struct VognResult {
    /// The final state.
    pub state: VognState,
    /// Mean minibatch loss estimate per epoch.
    pub history: Vec<f64>,
    /// Snapshots every `snapshot_every` steps.
    pub snapshots: Vec<Snapshot>,
}

/// Runs VOGN from `μ₀` for `cfg.epochs` epochs; `progress` advances by one per step.
pub fn run(
    obj: &Objective<'_>,
    mu0: &[f64],
    cfg: &VognConfig,
    progress: Option<&dyn Progress>,
) -> Result<VognResult> {
    run_with(obj, mu0, cfg, progress, &mut |_, _, _| Ok(()))
}

/// [`run`], calling `on_epoch(epoch, μ, epoch_loss)` after each epoch; an error from it stops
/// training.
pub fn run_with(
    obj: &Objective<'_>,
    mu0: &[f64],
    cfg: &VognConfig,
    progress: Option<&dyn Progress>,
    on_epoch: &mut EpochHook<'_>,
) -> Result<VognResult> {
    if !(cfg.beta > 0.0 && cfg.beta <= 1.0) {
        return Err(Error::Invalid(format!(
            "VOGN step β must be in (0, 1], got {}",
            cfg.beta
        )));
    }
    if cfg.epochs == 0 {
        return Err(Error::option(
            "epochs",
            "VOGN needs at least one epoch, got 0",
        ));
    }
    if cfg.mc_samples == 0 {
        return Err(Error::Invalid(
            "VOGN needs at least one Monte Carlo sample".into(),
        ));
    }
    if let Some(m) = cfg.momentum.filter(|m| !(0.0..1.0).contains(m)) {
        return Err(Error::Invalid(format!(
            "VOGN momentum must be in [0, 1), got {m}"
        )));
    }
    if let Some(lr) = cfg.lr.filter(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(Error::Invalid(format!(
            "VOGN step α of the mean must be positive, got {lr}"
        )));
    }
    if cfg.batch_size == Some(0) {
        return Err(Error::Invalid(
            "VOGN minibatch size must be positive".into(),
        ));
    }
    let mut state = VognState::new(mu0, cfg)?;
    let mut rng = seeded(cfg.seed);
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut snapshots = Vec::new();
    let norm0 = crate::linalg::norm(mu0).max(1.0);
    let mut best = f64::INFINITY;
    for epoch in 0..cfg.epochs {
        let batches = epoch_batches(&mut rng, obj.n(), cfg.batch_size);
        let epoch_loss = run_epoch(&batches, progress, |idx| {
            if cfg.snapshot_every > 0 && state.t % cfg.snapshot_every == 0 {
                snapshots.push(Snapshot {
                    t: state.t,
                    mu: state.mu.clone(),
                    precision: state.precision.clone(),
                });
            }
            let samples = state.draw(cfg, &mut rng);
            step_at(obj, &mut state, cfg, idx, &samples)
        })?;
        history.push(epoch_loss);
        check_divergence(obj.n(), epoch, &state, epoch_loss, best, norm0, cfg)?;
        best = best.min(epoch_loss);
        on_epoch(epoch, &state.mu, epoch_loss)?;
    }
    Ok(VognResult {
        state,
        history,
        snapshots,
    })
}
