//! Adam on the regularised sum-loss:
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `w ← w − η m̂/(√v̂ + ε)`,
//! with the learning rate `η` multiplied by `factor` when the loss has not improved by a relative
//! `threshold` for `patience` epochs (PyTorch's ReduceLROnPlateau).

use crate::progress::Progress;

use super::{check_finite, epoch_batches, run_epoch, EpochHook, MapConfig, MapResult, Objective};
use crate::error::Result;
use crate::rng::seeded;

/// Learning-rate decay on plateau.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Plateau {
    /// Epochs without improvement before decaying.
    pub patience: usize,
    /// Multiplier of the learning rate.
    pub factor: f64,
    /// Relative improvement that counts.
    pub threshold: f64,
    /// Lower bound of the learning rate.
    pub min_lr: f64,
}

impl Default for Plateau {
    fn default() -> Self {
        Plateau {
            patience: 200,
            factor: 0.5,
            threshold: 1e-4,
            min_lr: 1e-5,
        }
    }
}

/// Adam's settings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Adam {
    /// Learning rate η.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decay on plateau; `None` keeps η fixed.
    pub plateau: Option<Plateau>,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            plateau: Some(Plateau::default()),
        }
    }
}

/// Adam's moment estimates.
#[derive(Debug, Clone)]
pub struct AdamState {
    m: Vec<f64>,
    v: Vec<f64>,
    t: usize,
}

impl AdamState {
    /// Zero moments for P parameters.
    pub fn new(p: usize) -> Self {
        AdamState {
            m: vec![0.0; p],
            v: vec![0.0; p],
            t: 0,
        }
    }

    /// One update of `w` with gradient `g` and learning rate `lr`.
    pub fn step(&mut self, a: &Adam, w: &mut [f64], g: &[f64], lr: f64) {
        self.t += 1;
        let (c1, c2) = (
            1.0 - a.beta1.powi(self.t as i32),
            1.0 - a.beta2.powi(self.t as i32),
        );
        for i in 0..w.len() {
            self.m[i] = a.beta1 * self.m[i] + (1.0 - a.beta1) * g[i];
            self.v[i] = a.beta2 * self.v[i] + (1.0 - a.beta2) * g[i] * g[i];
            w[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + a.eps);
        }
    }
}

/// Runs Adam for `cfg.epochs` epochs from `w0`; `progress` advances by one per step.
pub fn run(
    obj: &Objective<'_>,
    w0: &[f64],
    cfg: &MapConfig,
    progress: Option<&dyn Progress>,
) -> Result<MapResult> {
    run_with(obj, w0, cfg, progress, &mut |_, _, _| Ok(()))
}

/// [`run`], calling `on_epoch(epoch, w, epoch_loss)` after each epoch (e.g. to measure test
/// accuracy); an error from it stops training.
pub fn run_with(
    obj: &Objective<'_>,
    w0: &[f64],
    cfg: &MapConfig,
    progress: Option<&dyn Progress>,
    on_epoch: &mut EpochHook<'_>,
) -> Result<MapResult> {
    let a = cfg.adam;
    let p = w0.len();
    let mut w = w0.to_vec();
    let mut state = AdamState::new(p);
    let mut lr = a.lr;
    let mut rng = seeded(cfg.seed);
    let mut history = Vec::with_capacity(cfg.epochs);
    let (mut best, mut bad) = (f64::INFINITY, 0usize);
    for epoch in 0..cfg.epochs {
        let batches = epoch_batches(&mut rng, obj.n(), cfg.batch_size);
        let epoch_loss = run_epoch(&batches, progress, |idx| {
            let (loss, g) = match idx {
                Some(idx) => obj.minibatch_value_grad(&w, idx),
                None => obj.value_grad(&w),
            };
            check_finite(loss, &g, "Adam", state.t + 1)?;
            state.step(&a, &mut w, &g, lr);
            Ok(loss)
        })?;
        on_epoch(epoch, &w, epoch_loss)?;
        history.push(epoch_loss);
        if let Some(pl) = a.plateau {
            if epoch_loss < best * (1.0 - pl.threshold.copysign(best)) {
                best = epoch_loss;
                bad = 0;
            } else {
                bad += 1;
                if bad > pl.patience {
                    lr = (lr * pl.factor).max(pl.min_lr);
                    bad = 0;
                }
            }
        }
    }
    let (loss, g) = obj.value_grad(&w);
    Ok(MapResult {
        w,
        loss,
        grad_norm: crate::linalg::norm(&g),
        epochs: cfg.epochs,
        polish_iters: 0,
        final_lr: lr,
        history,
    })
}
