//! From the Gaussian over the outputs to predictions: the GLM predictive at new inputs
//! ([`Predictive`]: `f_{w*}(x)`, the K×K blocks `J(x) Σ J(x)ᵀ`, σ² for y), and class
//! probabilities by laplace-torch's links ([`Link`]: probit, Monte Carlo, Laplace bridge),
//! parsed from their words once ([`LinkApprox`]) for the command line and Python alike.

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::likelihood::classification::{probit, softmax};
use crate::linalg::{mat_bytes, sym_sqrt};
use crate::progress::Progress;
use crate::rng::{normals, seeded};

/// How class probabilities come from the Gaussian over the logits `f ~ N(f*(x), J Σ Jᵀ)`:
/// laplace-torch's `link_approx` (`probit`, `mc`, `bridge`, `bridge_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `softmax(f*_k / √(1 + π v_k / 8))` (the sigmoid for one logit).
    Probit,
    /// The Laplace bridge (Hobbhahn et al. 2022): the mean of the Dirichlet matched to the
    /// Gaussian after the zero-sum correction `f̃ = f − Σ1 (1ᵀf)/(1ᵀΣ1)`,
    /// `Σ̃ = Σ − Σ11ᵀΣ/(1ᵀΣ1)`: `α_k = (1 − 2/K + e^{f̃_k} Σ_l e^{−f̃_l} / K²) / Σ̃_kk`,
    /// `p = α / Σα` (two or more classes).
    Bridge,
    /// The Laplace bridge after the variance normalisation of Hobbhahn et al.: with
    /// `s = mean_k Σ̃_kk / √(K/2)`, `f̃ / √s` and `Σ̃_kk / s` in place of `f̃` and `Σ̃_kk`.
    BridgeNorm,
    /// The mean of `softmax(f)` over `samples` draws of f, from `seed`.
    MonteCarlo {
        /// Draws per input.
        samples: usize,
        /// Seed of the draws.
        seed: u64,
    },
}

crate::words! {
    /// laplace-torch's `link_approx` words: how [`Link`] turns the Gaussian over the logits into
    /// class probabilities.
    pub enum LinkApprox("link approximation") {
        /// [`Link::Probit`].
        Probit = ["probit"],
        /// [`Link::MonteCarlo`].
        Mc = ["mc"],
        /// [`Link::Bridge`].
        Bridge = ["bridge"],
        /// [`Link::BridgeNorm`].
        BridgeNorm = ["bridge_norm", "bridge-norm"],
    }
}

impl Link {
    /// The link of a `link_approx` word, with `samples` draws from `seed` for `mc` (at least
    /// one).
    pub fn new(approx: LinkApprox, samples: usize, seed: u64) -> Result<Self> {
        Ok(match approx {
            LinkApprox::Probit => Link::Probit,
            LinkApprox::Bridge => Link::Bridge,
            LinkApprox::BridgeNorm => Link::BridgeNorm,
            LinkApprox::Mc if samples == 0 => {
                return Err(Error::option(
                    "samples",
                    "a Monte Carlo link needs at least one sample",
                ))
            }
            LinkApprox::Mc => Link::MonteCarlo { samples, seed },
        })
    }

    /// Its `link_approx` word.
    pub fn approx(self) -> LinkApprox {
        match self {
            Link::Probit => LinkApprox::Probit,
            Link::Bridge => LinkApprox::Bridge,
            Link::BridgeNorm => LinkApprox::BridgeNorm,
            Link::MonteCarlo { .. } => LinkApprox::Mc,
        }
    }
}

/// The predictive at M new inputs.
#[derive(Debug, Clone)]
pub struct Predictive {
    /// The GLM mean: the network's outputs `f_{w*}(x)` (M×K).
    pub mean: Mat<f64>,
    /// The K×K blocks `J(x_m) Σ J(x_m)ᵀ` of the functional covariance, row-major (M·K·K).
    pub covariance: Vec<f64>,
    /// The observation noise variance σ² added to predict y (Gaussian), else 0.
    pub noise: f64,
    /// Class probabilities by the link (M × classes; two classes for one Bernoulli logit).
    pub probabilities: Option<Mat<f64>>,
}

impl Predictive {
    /// The functional variances `diag J Σ Jᵀ` (M·K, row `m·K + k`).
    pub fn functional_variance(&self) -> Vec<f64> {
        let k = self.mean.ncols();
        diagonals(&self.covariance, k)
    }

    /// The predictive variances of y: functional variance plus σ² (M·K).
    pub fn variance(&self) -> Vec<f64> {
        let noise = self.noise;
        self.functional_variance()
            .into_iter()
            .map(|v| v + noise)
            .collect()
    }
}

/// The diagonals of row-major K×K blocks.
pub(crate) fn diagonals(blocks: &[f64], k: usize) -> Vec<f64> {
    blocks
        .chunks(k * k)
        .flat_map(|b| (0..k).map(move |a| b[a * k + a]))
        .collect()
}

/// Inputs per block of [`blocks_by_input_block`]: at most 256 MiB of Jacobian (K×P each), at
/// least one, at most the `m` inputs.
pub fn inputs_per_block(k: usize, p: usize, m: usize) -> usize {
    ((256usize << 20) / mat_bytes(k, p).max(1) as usize).clamp(1, m.max(1))
}

/// The K×K blocks `J(x_m) Σ J(x_m)ᵀ` at the rows of `x`, `blocks` applied to the stacked
/// Jacobians `jacobian(x_block)` (K×P per input) of [`inputs_per_block`] inputs at a time;
/// `progress` advances by the inputs of each block.
pub fn blocks_by_input_block(
    (k, p): (usize, usize),
    x: MatRef<'_, f64>,
    jacobian: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
    blocks: &dyn Fn(MatRef<'_, f64>) -> Vec<f64>,
    progress: Option<&dyn Progress>,
) -> Vec<f64> {
    let rows = inputs_per_block(k, p, x.nrows());
    (0..x.nrows())
        .step_by(rows)
        .flat_map(|s| {
            let m = rows.min(x.nrows() - s);
            let out = blocks(jacobian(x.subrows(s, m)).as_ref());
            if let Some(pb) = progress {
                pb.advance(m as u64);
            }
            out
        })
        .collect()
}

/// Class probabilities from logits (M×K) and their K×K covariance blocks by `link`, M × classes
/// (two for one Bernoulli logit); the Monte Carlo draws come from one stream, input by input.
pub fn class_probabilities(logits: &Mat<f64>, blocks: &[f64], link: Link) -> Result<Mat<f64>> {
    let (m, k) = (logits.nrows(), logits.ncols());
    let c = if k == 1 { 2 } else { k };
    let mut rng = match link {
        Link::MonteCarlo { samples: 0, .. } => {
            return Err(Error::Invalid(
                "a Monte Carlo link needs at least one sample".into(),
            ))
        }
        Link::MonteCarlo { seed, .. } => Some(seeded(seed)),
        Link::Bridge | Link::BridgeNorm if k == 1 => {
            return Err(Error::Invalid(
                "the Laplace bridge needs two or more classes; use probit or mc for one logit"
                    .into(),
            ))
        }
        Link::Probit | Link::Bridge | Link::BridgeNorm => None,
    };
    let mut out = Mat::zeros(m, c);
    for i in 0..m {
        let b = &blocks[i * k * k..(i + 1) * k * k];
        // One logit: [0, f] with covariance [[0, 0], [0, v]].
        let (f, cov): (Vec<f64>, Mat<f64>) = if k == 1 {
            (
                vec![0.0, logits[(i, 0)]],
                Mat::from_fn(2, 2, |r, s| if r + s == 2 { b[0] } else { 0.0 }),
            )
        } else {
            (
                (0..k).map(|a| logits[(i, a)]).collect(),
                Mat::from_fn(k, k, |r, s| b[r * k + s]),
            )
        };
        let p = match (&mut rng, link) {
            (Some(rng), Link::MonteCarlo { samples, .. }) => {
                let root = sym_sqrt(cov.as_ref());
                let mut acc = vec![0.0; c];
                for _ in 0..samples {
                    let z = normals(rng, c);
                    let draw: Vec<f64> = (0..c)
                        .map(|r| f[r] + (0..c).map(|s| root[(r, s)] * z[s]).sum::<f64>())
                        .collect();
                    acc.iter_mut()
                        .zip(softmax(&draw))
                        .for_each(|(a, p)| *a += p / samples as f64);
                }
                acc
            }
            (_, Link::Bridge) => bridge(&f, &cov, false),
            (_, Link::BridgeNorm) => bridge(&f, &cov, true),
            _ => probit(&f, &(0..c).map(|a| cov[(a, a)]).collect::<Vec<_>>()),
        };
        for (a, v) in p.into_iter().enumerate() {
            out[(i, a)] = v;
        }
    }
    Ok(out)
}

/// The Laplace bridge of [`Link::Bridge`] (`normalise`: [`Link::BridgeNorm`]); where the
/// corrected variance of a class is 0 (no uncertainty) the bridge is undefined and the softmax
/// of the mean is returned.
fn bridge(f: &[f64], cov: &Mat<f64>, normalise: bool) -> Vec<f64> {
    let k = f.len();
    let row: Vec<f64> = (0..k).map(|a| (0..k).map(|b| cov[(a, b)]).sum()).collect();
    let total: f64 = row.iter().sum();
    let fsum: f64 = f.iter().sum();
    let mut mu: Vec<f64> = (0..k).map(|a| f[a] - row[a] * fsum / total).collect();
    let mut var: Vec<f64> = (0..k)
        .map(|a| cov[(a, a)] - row[a] * row[a] / total)
        .collect();
    let kf = k as f64;
    if normalise {
        let s = var.iter().sum::<f64>() / kf / (kf / 2.0).sqrt();
        mu.iter_mut().for_each(|m| *m /= s.sqrt());
        var.iter_mut().for_each(|v| *v /= s);
    }
    let sum_exp: f64 = mu.iter().map(|m| (-m).exp()).sum();
    let alpha: Vec<f64> = (0..k)
        .map(|a| (1.0 - 2.0 / kf + mu[a].exp() / (kf * kf) * sum_exp) / var[a])
        .collect();
    let norm: f64 = alpha.iter().sum();
    if alpha.iter().all(|a| a.is_finite() && *a > 0.0) && norm.is_finite() {
        alpha.iter().map(|a| a / norm).collect()
    } else {
        softmax(f)
    }
}
