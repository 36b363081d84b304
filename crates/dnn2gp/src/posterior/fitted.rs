//! One posterior interface in laplace-torch's shape ([`Posterior`]): fit from a network, a
//! likelihood and data with a structure; `log_marginal_likelihood(δ, σ)`; the functional
//! variance and covariance at new inputs; `predict(x, link)`; `sample`; the kernel
//! `J(x) Σ J(x')ᵀ`; save and load; the prior (and σ) by the evidence. [`Laplace`] is the
//! Laplace-GGN member, full, diagonal, KFAC or low rank, over all weights or the last layer;
//! [`crate::gp::FunctionSpace`] holds the same full posterior through the NK×NK GP Gram matrix
//! (no P×P matrix, for P ≫ NK):
//!
//! `q(w) = N(w*, Σ)`, `Σ⁻¹ = A = H + δI`, `H = Σ_i J_iᵀ Λ_i J_i` at the MAP `w*` (over the
//! covered weights; H in the structure's approximation).
//!
//! # Example: regression
//! ```
//! use dnn2gp::data::toy::{toy_sets, ToyConfig};
//! use dnn2gp::likelihood::LikelihoodKind;
//! use dnn2gp::nn::{Activation, Network, Sequential};
//! use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Link, Posterior};
//! use dnn2gp::train::model::Model;
//! use dnn2gp::train::{fit_map, MapConfig, Objective};
//!
//! let split = toy_sets(&ToyConfig::default(), 1).remove(0);
//! let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
//! let net = Sequential::mlp(vec![2, 20, 1], Activation::Tanh)?;
//! let lik = LikelihoodKind::Gaussian.build(1.0)?;
//! let obj = Objective { net: &net, lik: lik.as_ref(), x, y, delta: 0.6 };
//! let cfg = MapConfig { epochs: 300, ..Default::default() };
//! let w = fit_map(&obj, &net.init(0), &cfg, None)?.w;
//! let model = Model::new(net, w, LikelihoodKind::Gaussian, 1.0, 0.6)?;
//!
//! let la = Laplace::fit(model, x, y, HessianStructure::Full, &FitOptions::default())?;
//! let evidence = la.log_marginal_likelihood(None, None)?; // at the fitted δ, σ
//! let wider = la.log_marginal_likelihood(Some(2.0), Some(0.8))?; // any other δ, σ
//! let pred = la.predict(split.test.x.as_ref(), Link::Probit)?; // f(x*), J Σ Jᵀ, y variance
//! assert_eq!(pred.mean.nrows(), split.test.x.nrows());
//! assert!(pred.variance().iter().all(|v| *v > 0.0) && evidence.is_finite() && wider.is_finite());
//! # Ok::<(), dnn2gp::Error>(())
//! ```
//!
//! # Example: classification
//! ```
//! use dnn2gp::likelihood::LikelihoodKind;
//! use dnn2gp::nn::{Activation, Network, Sequential};
//! use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Link, Posterior};
//! use dnn2gp::train::model::Model;
//! use faer::Mat;
//!
//! // Three classes on a line, one-hot targets.
//! let x = Mat::from_fn(30, 1, |i, _| i as f64 / 10.0 - 1.5);
//! let y = Mat::from_fn(30, 3, |i, c| f64::from(u8::from(i / 10 == c)));
//! let net = Sequential::mlp(vec![1, 8, 3], Activation::Tanh)?;
//! let model = Model::new(net.clone(), net.init(1), LikelihoodKind::Categorical, 1.0, 1.0)?;
//! let la = Laplace::fit(model, x.as_ref(), y.as_ref(), HessianStructure::Diag, &FitOptions::default())?;
//! let pred = la.predict(x.as_ref(), Link::MonteCarlo { samples: 200, seed: 0 })?;
//! let p = pred.probabilities.expect("class probabilities");
//! assert!((0..30).all(|i| ((0..3).map(|c| p[(i, c)]).sum::<f64>() - 1.0).abs() < 1e-12));
//! # Ok::<(), dnn2gp::Error>(())
//! ```

use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use faer::{Mat, MatRef, Side};

use super::laplace::{laplace_evidence, HessianStructure, LaplaceGgn};
use crate::curvature::kron::{diag_layer_variances, factored_covariance_blocks};
use crate::curvature::{
    dense_layer_ggn, ggn_diagonal, ggn_top_eigen, kron_factors, Kron, Linearization, LowRank,
    Precision,
};
use crate::error::{Error, Result};
use crate::likelihood::classification::{probit, softmax};
use crate::likelihood::LikelihoodKind;
use crate::linalg::{check_memory, dot, mat_bytes, sym_sqrt};
use crate::nn::weights::{self, ParamTensor, StoredDtype};
use crate::nn::{KronSums, Layer, Network, Sequential};
use crate::progress::Progress;
use crate::rng::{normals, seeded};
use crate::train::model::Model;

/// How class probabilities come from the Gaussian over the logits `f ~ N(f*(x), J Σ Jᵀ)`:
/// laplace-torch's `link_approx` (`probit`, `mc`, `bridge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `softmax(f*_k / √(1 + π v_k / 8))` (the sigmoid for one logit).
    Probit,
    /// The Laplace bridge (Hobbhahn et al. 2022): the mean of the Dirichlet matched to the
    /// Gaussian after the zero-sum correction `f̃ = f − Σ1 (1ᵀf)/(1ᵀΣ1)`,
    /// `Σ̃ = Σ − Σ11ᵀΣ/(1ᵀΣ1)`: `α_k = (1 − 2/K + e^{f̃_k} Σ_l e^{−f̃_l} / K²) / Σ̃_kk`,
    /// `p = α / Σα` (two or more classes).
    Bridge,
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
    }
}

impl Link {
    /// The link of a `link_approx` word, with `samples` draws from `seed` for `mc` (at least
    /// one).
    pub fn new(approx: LinkApprox, samples: usize, seed: u64) -> Result<Self> {
        Ok(match approx {
            LinkApprox::Probit => Link::Probit,
            LinkApprox::Bridge => Link::Bridge,
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
fn diagonals(blocks: &[f64], k: usize) -> Vec<f64> {
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
/// Jacobians `jacobian(x_block)` (K×P per input) of [`inputs_per_block`] inputs at a time.
pub fn blocks_by_input_block(
    (k, p): (usize, usize),
    x: MatRef<'_, f64>,
    jacobian: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
    blocks: &dyn Fn(MatRef<'_, f64>) -> Vec<f64>,
) -> Vec<f64> {
    let rows = inputs_per_block(k, p, x.nrows());
    (0..x.nrows())
        .step_by(rows)
        .flat_map(|s| blocks(jacobian(x.subrows(s, rows.min(x.nrows() - s))).as_ref()))
        .collect()
}

crate::words! {
    /// Which weights the posterior covers, with laplace-torch's names (`all`, `last_layer`).
    pub enum Subset("subset of weights") {
        /// Every weight.
        All = ["all"],
        /// The last (dense) layer's weights and bias, the rest held at `w*`: the GP's kernel is
        /// then `φ(x)ᵀ Σ φ(x′)` over the features φ of the layers below.
        LastLayer = ["last_layer", "last-layer"],
    }
}

/// A Gaussian posterior `N(μ, Σ)` over a network's weights (all, or a subset) and what it
/// gives, in the shape of laplace-torch's `BaseLaplace`. The structures (full, diag, kron,
/// lowrank) and subsets (all, last layer) are members; the command line and the examples call
/// only this.
pub trait Posterior {
    /// The model: network, `μ = w*`, likelihood, σ, δ.
    fn model(&self) -> &Model;

    /// The curvature structure.
    fn structure(&self) -> HessianStructure;

    /// The weights the posterior covers.
    fn subset(&self) -> Subset {
        Subset::All
    }

    /// The stacked Jacobians `∂f(x_m)/∂θ` (MK × P_θ) with respect to the weights θ the
    /// posterior covers.
    fn jacobian(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let m = self.model();
        m.net.jacobian(&m.w, x)
    }

    /// The Laplace evidence `log p(D) ≈ log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|A|` at
    /// prior precision `delta` and Gaussian noise `sigma` (`None`: the fitted values), from one
    /// fit: laplace-torch's `log_marginal_likelihood(prior_precision, sigma_noise)`.
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64>;

    /// `Σ v` (v over the covered weights).
    fn covariance_times(&self, v: &[f64]) -> Vec<f64>;

    /// The K×K blocks `J_m Σ J_mᵀ` for stacked Jacobians `J` (MK×P), row-major.
    fn covariance_blocks(&self, jac: MatRef<'_, f64>) -> Vec<f64>;

    /// `J_a Σ J_bᵀ` for stacked Jacobians.
    fn covariance_between(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64>;

    /// `n` draws `w ~ N(μ, Σ)` from `seed` (laplace-torch's `sample`), each a full weight
    /// vector (weights outside the subset at `w*`).
    fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f64>>;

    /// The functional covariance: K×K blocks `J(x_m) Σ J(x_m)ᵀ` at the rows of `x`, row-major
    /// (M·K·K), a block of inputs at a time (at most 256 MiB of Jacobian).
    fn functional_covariance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        let m = self.model();
        let p = self.jacobian(x.subrows(0, x.nrows().min(1))).ncols();
        blocks_by_input_block((m.net.n_outputs(), p), x, &|x| self.jacobian(x), &|j| {
            self.covariance_blocks(j)
        })
    }

    /// The outputs `f_{w*}(x)` (M×K) and the functional covariance at the rows of `x`.
    fn outputs_and_covariance(&self, x: MatRef<'_, f64>) -> (Mat<f64>, Vec<f64>) {
        let m = self.model();
        (
            crate::nn::predict(&m.net, &m.w, x),
            self.functional_covariance(x),
        )
    }

    /// The functional variance `diag J(x) Σ J(x)ᵀ` (M·K, row `m·K + k`).
    fn functional_variance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        diagonals(&self.functional_covariance(x), self.model().net.n_outputs())
    }

    /// The posterior kernel `κ(x, x') = J(x) Σ J(x')ᵀ` (M_aK × M_bK).
    fn kernel(&self, xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f64> {
        let (ja, jb) = (self.jacobian(xa), self.jacobian(xb));
        self.covariance_between(ja.as_ref(), jb.as_ref())
    }

    /// The GLM predictive at the rows of `x`: the mean `f_{w*}(x)`, the functional covariance,
    /// σ² for the Gaussian, and class probabilities by `link` for the Bernoulli and the
    /// categorical (one Bernoulli logit f is the softmax of `[0, f]`).
    fn predict(&self, x: MatRef<'_, f64>, link: Link) -> Result<Predictive> {
        let m = self.model();
        if x.ncols() != m.net.n_inputs() {
            return Err(Error::Invalid(format!(
                "inputs of {} columns; the network takes {}",
                x.ncols(),
                m.net.n_inputs()
            )));
        }
        let (mean, covariance) = self.outputs_and_covariance(x);
        let (noise, probabilities) = match m.likelihood {
            LikelihoodKind::Gaussian => (m.sigma * m.sigma, None),
            _ => (0.0, Some(class_probabilities(&mean, &covariance, link)?)),
        };
        Ok(Predictive {
            mean,
            covariance,
            noise,
            probabilities,
        })
    }
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
        Link::Bridge if k == 1 => {
            return Err(Error::Invalid(
                "the Laplace bridge needs two or more classes; use probit or mc for one logit"
                    .into(),
            ))
        }
        Link::Probit | Link::Bridge => None,
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
            (_, Link::Bridge) => bridge(&f, &cov),
            _ => probit(&f, &(0..c).map(|a| cov[(a, a)]).collect::<Vec<_>>()),
        };
        for (a, v) in p.into_iter().enumerate() {
            out[(i, a)] = v;
        }
    }
    Ok(out)
}

/// The Laplace bridge of [`Link::Bridge`]; where the corrected variance of a class is 0 (no
/// uncertainty) the bridge is undefined and the softmax of the mean is returned.
fn bridge(f: &[f64], cov: &Mat<f64>) -> Vec<f64> {
    let k = f.len();
    let row: Vec<f64> = (0..k).map(|a| (0..k).map(|b| cov[(a, b)]).sum()).collect();
    let total: f64 = row.iter().sum();
    let fsum: f64 = f.iter().sum();
    let mu: Vec<f64> = (0..k).map(|a| f[a] - row[a] * fsum / total).collect();
    let var: Vec<f64> = (0..k)
        .map(|a| cov[(a, a)] - row[a] * row[a] / total)
        .collect();
    let sum_exp: f64 = mu.iter().map(|m| (-m).exp()).sum();
    let kf = k as f64;
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

/// `−log p(D | w*)` and the GGN's scale `c = σ²/σ′²` at another Gaussian noise σ′ (`None`:
/// the fitted σ, `c = 1`), from the fitted data term and `SSE = Σ_i ‖f(x_i) − y_i‖²` over NK
/// outputs: `−log p(D | w*) = SSE/(2σ′²) + (NK/2) log 2πσ′²` and `H ∝ σ′⁻²`. The
/// classification likelihoods have no σ.
pub(crate) fn at_sigma(
    m: &Model,
    nll: f64,
    sse: f64,
    nk: usize,
    sigma: Option<f64>,
) -> Result<(f64, f64)> {
    match (sigma, m.likelihood) {
        (None, _) => Ok((nll, 1.0)),
        (Some(s), LikelihoodKind::Gaussian) if s.is_finite() && s > 0.0 => Ok((
            0.5 * sse / (s * s) + 0.5 * nk as f64 * (std::f64::consts::TAU * s * s).ln(),
            (m.sigma / s).powi(2),
        )),
        (Some(s), LikelihoodKind::Gaussian) => Err(Error::Invalid(format!(
            "σ must be a positive number, got {s}"
        ))),
        (Some(_), other) => Err(Error::Invalid(format!(
            "σ applies to the Gaussian likelihood, not the {other}"
        ))),
    }
}

/// The root of a function falling strictly in `t = log x` on `[−40, 40]`, bisected to machine
/// precision; `None` when it does not change sign there.
pub(crate) fn root_in_log(g: &dyn Fn(f64) -> f64) -> Option<f64> {
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    if !(g(lo) > 0.0 && g(hi) < 0.0) {
        return None;
    }
    while hi - lo > 1e-13 * hi.abs().max(1.0) {
        let mid = 0.5 * (lo + hi);
        if g(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi))
}

/// The noise and prior chosen by the evidence ([`Laplace::optimize_noise_and_prior`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NoiseFit {
    /// δ*.
    pub delta: f64,
    /// σ*.
    pub sigma: f64,
    /// The evidence there.
    pub log_marglik: f64,
    /// Coordinate-ascent rounds.
    pub rounds: usize,
}

/// `∂ log p(D)/∂ log δ = ½ Σ λ/(λ + δ) − ½ δ ‖θ‖²` for GGN eigenvalues λ (floored at 0).
pub(crate) fn evidence_gradient(lambda: &[f64], w2: f64, delta: f64) -> f64 {
    let l = |l: &f64| l.max(0.0);
    0.5 * lambda.iter().map(|v| l(v) / (l(v) + delta)).sum::<f64>() - 0.5 * delta * w2
}

/// What [`Laplace::fit`] may use.
pub struct FitOptions<'a> {
    /// Bytes the fit may allocate at once (the Jacobian and the P×P GGN of a full fit).
    pub memory_limit: u128,
    /// Told of the examples done (diag, kron and lowrank fits; lowrank makes four passes).
    pub progress: Option<&'a dyn Progress>,
    /// Eigenpairs of a low-rank posterior.
    pub rank: usize,
    /// Seed of the low-rank posterior's random start.
    pub seed: u64,
}

impl Default for FitOptions<'_> {
    /// Three quarters of the available memory, no progress, rank 100, seed 0.
    fn default() -> Self {
        FitOptions {
            memory_limit: crate::linalg::available_memory() / 4 * 3,
            progress: None,
            rank: 100,
            seed: 0,
        }
    }
}

/// Passes of subspace iteration after the first for a low-rank fit.
const POWER_ITERATIONS: usize = 2;

/// The GGN `H` as fitted over the covered weights: P×P, its diagonal, or its per-layer
/// Kronecker factors.
#[derive(Debug, Clone)]
enum Ggn {
    Full(Mat<f64>),
    Diag(Vec<f64>),
    Kron(Vec<KronSums>),
    /// The top eigenvectors U (P × k) and eigenvalues s.
    LowRank(Mat<f64>, Vec<f64>),
}

/// A tensor as its shape and row-major values.
pub type Tensor = (Vec<usize>, Vec<f64>);

/// A curvature's scalars: `−log p`, the squared error, the examples and the outputs NK.
pub type CurvatureScalars = (f64, f64, usize, usize);

/// The additive statistics of a fit on some of the training data ([`Laplace::curvature`]):
/// the GGN `Σ_i J_iᵀ Λ_i J_i` over those examples in the posterior's structure, `−log p` and
/// the squared error. Chunks add up to the whole data's ([`Curvature::add`]).
#[derive(Debug, Clone)]
pub struct Curvature {
    /// KFAC's `A` as [`kron_factors`] gives it, divided by the examples' `n T`.
    ggn: Ggn,
    subset: Subset,
    nll: f64,
    sse: f64,
    n: usize,
    nk: usize,
}

impl Curvature {
    /// Adds another chunk's statistics: `H += H′`, `−log p += −log p′`; KFAC's `A`, a mean
    /// over the examples, becomes `(n A + n′ A′)/(n + n′)`.
    pub fn add(&mut self, other: &Curvature) -> Result<()> {
        let message = format!(
            "cannot add a {} curvature over the {} to a {} one over the {}",
            other.structure(),
            other.subset,
            self.structure(),
            self.subset
        );
        let mismatch = move || Error::Invalid(message);
        if self.subset != other.subset {
            return Err(mismatch());
        }
        let same = |a: &Mat<f64>, b: &Mat<f64>| a.nrows() == b.nrows() && a.ncols() == b.ncols();
        match (&mut self.ggn, &other.ggn) {
            (Ggn::Full(h), Ggn::Full(o)) if same(h, o) => *h += o,
            (Ggn::Diag(h), Ggn::Diag(o)) if h.len() == o.len() => {
                h.iter_mut().zip(o).for_each(|(a, b)| *a += b)
            }
            (Ggn::Kron(f), Ggn::Kron(o))
                if f.len() == o.len()
                    && f.iter()
                        .zip(o)
                        .all(|(a, b)| same(&a.a, &b.a) && same(&a.g, &b.g)) =>
            {
                let total = (self.n + other.n).max(1) as f64;
                let (u, v) = (self.n as f64 / total, other.n as f64 / total);
                for (a, b) in f.iter_mut().zip(o) {
                    a.g += &b.g;
                    a.a = faer::Scale(u) * &a.a + faer::Scale(v) * &b.a;
                }
            }
            _ => return Err(mismatch()),
        }
        self.nll += other.nll;
        self.sse += other.sse;
        self.n += other.n;
        self.nk += other.nk;
        Ok(())
    }

    /// The structure of its GGN.
    pub fn structure(&self) -> HessianStructure {
        self.ggn.structure()
    }

    /// The weights it covers.
    pub fn subset(&self) -> Subset {
        self.subset
    }

    /// The examples it sums over.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Its GGN as row-major tensors (full: P×P; diag: P; kron: each layer's `A` then `G`)
    /// and its scalars `(−log p, squared error, examples, outputs NK)`: what another process
    /// needs to rebuild it ([`Curvature::from_parts`]).
    pub fn to_parts(&self) -> (Vec<Tensor>, CurvatureScalars) {
        let tensors = self
            .ggn
            .tensors()
            .into_iter()
            .map(|(_, s, v)| (s, v))
            .collect();
        (tensors, (self.nll, self.sse, self.n, self.nk))
    }

    /// The statistics from [`Curvature::to_parts`]'s tensors and scalars.
    pub fn from_parts(
        structure: HessianStructure,
        subset: Subset,
        tensors: Vec<Tensor>,
        (nll, sse, n, nk): CurvatureScalars,
    ) -> Result<Self> {
        Ok(Curvature {
            ggn: Ggn::from_tensors(structure, tensors)?,
            subset,
            nll,
            sse,
            n,
            nk,
        })
    }
}

impl Ggn {
    fn structure(&self) -> HessianStructure {
        match self {
            Ggn::Full(_) => HessianStructure::Full,
            Ggn::Diag(_) => HessianStructure::Diag,
            Ggn::Kron(_) => HessianStructure::Kron,
            Ggn::LowRank(..) => HessianStructure::LowRank,
        }
    }

    /// Its tensors, named as [`Laplace::save`] stores them, with their shapes and row-major
    /// values.
    fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        let row_major = |m: &Mat<f64>| {
            let (r, c) = (m.nrows(), m.ncols());
            (0..r * c).map(|i| m[(i / c, i % c)]).collect::<Vec<f64>>()
        };
        let shape = |m: &Mat<f64>| vec![m.nrows(), m.ncols()];
        match self {
            Ggn::Full(h) => vec![(GGN.into(), shape(h), row_major(h))],
            Ggn::Diag(h) => vec![(GGN.into(), vec![h.len()], h.clone())],
            Ggn::Kron(f) => f
                .iter()
                .enumerate()
                .flat_map(|(l, s)| {
                    [
                        (format!("{GGN}.{l}.a"), shape(&s.a), row_major(&s.a)),
                        (format!("{GGN}.{l}.g"), shape(&s.g), row_major(&s.g)),
                    ]
                })
                .collect(),
            Ggn::LowRank(u, s) => vec![
                (format!("{GGN}.u"), shape(u), row_major(u)),
                (format!("{GGN}.s"), vec![s.len()], s.clone()),
            ],
        }
    }

    /// The GGN of `structure` from its [`Ggn::tensors`] (shapes and values).
    fn from_tensors(structure: HessianStructure, t: Vec<Tensor>) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "tensors of shapes {:?} are not a {structure} GGN",
                t.iter().map(|(s, _)| s).collect::<Vec<_>>()
            ))
        };
        let ok = t
            .iter()
            .all(|(s, v)| s.iter().product::<usize>() == v.len());
        let matrix = |(s, v): &Tensor| match s[..] {
            [r, c] => Some(Mat::from_fn(r, c, |i, j| v[i * c + j])),
            _ => None,
        };
        let square = |m: Option<Mat<f64>>| m.filter(|m| m.nrows() == m.ncols());
        let ggn = match (structure, &t[..]) {
            _ if !ok => None,
            (HessianStructure::Full, [h]) => square(matrix(h)).map(Ggn::Full),
            (HessianStructure::Diag, [(s, v)]) if s.len() == 1 => Some(Ggn::Diag(v.clone())),
            (HessianStructure::LowRank, [u, (s, v)]) if s.len() == 1 => matrix(u)
                .filter(|u| u.ncols() == v.len())
                .map(|u| Ggn::LowRank(u, v.clone())),
            (HessianStructure::Kron, t) if t.len() % 2 == 0 => t
                .chunks(2)
                .map(|p| {
                    Some(KronSums {
                        a: square(matrix(&p[0]))?,
                        g: square(matrix(&p[1]))?,
                        positions: 1,
                    })
                })
                .collect::<Option<Vec<_>>>()
                .map(Ggn::Kron),
            _ => None,
        };
        ggn.ok_or_else(bad)
    }
}

/// The last-layer split of a network: the layers below (the features φ) and the last dense
/// layer, whose weights start at `offset` in `w`.
#[derive(Debug, Clone)]
struct LastLayer {
    body: Option<Sequential>,
    head: Sequential,
    offset: usize,
}

impl LastLayer {
    fn of(net: &Sequential) -> Result<Self> {
        let layers = net.layers();
        let last = layers.last().expect("a network has layers");
        if !matches!(last, Layer::Dense { .. }) {
            return Err(Error::Invalid(format!(
                "a last-layer posterior needs a network whose last layer is dense; {} ends in \
                 {last:?}",
                net.spec()
            )));
        }
        let body = (layers.len() > 1)
            .then(|| Sequential::new(layers[..layers.len() - 1].to_vec()))
            .transpose()?;
        Ok(LastLayer {
            head: Sequential::new(vec![*last])?,
            offset: net.n_params() - last.n_params(),
            body,
        })
    }

    /// The features φ(x) (the inputs themselves for a one-layer network).
    fn features(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        match &self.body {
            Some(b) => crate::nn::predict(b, &w[..self.offset], x),
            None => x.to_owned(),
        }
    }
}

/// The Laplace-GGN posterior of a model on its training data: laplace-torch's `Laplace(model,
/// likelihood, subset_of_weights="all" | "last_layer", hessian_structure="full" | "diag" |
/// "kron" | "lowrank")` after `fit`.
#[derive(Debug, Clone)]
pub struct Laplace {
    model: Model,
    last_layer: Option<LastLayer>,
    ggn: Ggn,
    posterior: LaplaceGgn,
    /// `−log p(D | w*)` at the fitted σ.
    nll: f64,
    /// `Σ_i ‖f(x_i) − y_i‖²` (Gaussian) and the number of outputs NK, for the evidence at
    /// another σ.
    sse: f64,
    nk: usize,
    /// The eigenvalues of H (of a full H computed once; `None` when the eigendecomposition did
    /// not converge), for the evidence at other δ and σ.
    eigenvalues: OnceLock<Option<Vec<f64>>>,
    /// The prior precision the posterior is at.
    prior: PriorPrecision,
}

/// A prior precision over the covered weights `p(θ) = Π_g N(θ_g | 0, δ_g⁻¹ I)`: one δ, or one
/// per parameter tensor θ_g in the order of [`Laplace::prior_tensors`] (laplace-torch's
/// `prior_structure="scalar" | "layerwise"`). Serialised as a number or a list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum PriorPrecision {
    /// One δ for every covered weight.
    Scalar(f64),
    /// δ_g per parameter tensor (each layer's weight, then its bias).
    Layerwise(Vec<f64>),
}

crate::words! {
    /// How [`Laplace::optimize_prior_precision_as`] shares the prior precision: one δ, or one
    /// per parameter tensor (laplace-torch's `prior_structure`).
    pub enum PriorStructure("prior structure") {
        /// One δ.
        Scalar = ["scalar"],
        /// δ_g per parameter tensor.
        Layerwise = ["layerwise"],
    }
}

/// The prior precision per tensor chosen by the evidence
/// ([`Laplace::optimize_prior_precision_layerwise`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerwisePriorFit {
    /// The parameter tensors' names (`3.weight`).
    pub tensors: Vec<String>,
    /// δ_g* per tensor.
    pub deltas: Vec<f64>,
    /// The evidence there.
    pub log_marglik: f64,
    /// `∂ log p(D)/∂ log δ_g` there (0 up to the search's tolerance).
    pub gradient: Vec<f64>,
}

/// Metadata keys of a saved posterior.
const STRUCTURE: &str = "dnn2gp.posterior.structure";
/// A layerwise prior's δ_g, comma-separated (a scalar prior is the model's δ).
const LAYERWISE_PRIOR: &str = "dnn2gp.posterior.layerwise_prior";
const SUBSET: &str = "dnn2gp.posterior.subset";
const NLL: &str = "dnn2gp.posterior.nll";
const SSE: &str = "dnn2gp.posterior.sse";
const NK: &str = "dnn2gp.posterior.nk";
const RANK: &str = "dnn2gp.posterior.rank";
/// The tensor holding H (full or diag), or the prefix of the Kronecker factors
/// (`posterior.ggn.{l}.a`, `.g`).
const GGN: &str = "posterior.ggn";

/// The shapes `(inputs, outputs)` of the Kronecker factors of a network's layers with weights
/// (a conv layer's inputs are its `c·k·k` patch entries).
fn kron_shapes(net: &Sequential) -> Vec<(usize, usize)> {
    net.layers()
        .iter()
        .filter_map(|l| match *l {
            Layer::Dense { inputs, outputs } => Some((inputs, outputs)),
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => Some((in_channels * kernel * kernel, out_channels)),
            _ => None,
        })
        .collect()
}

/// The prior precision chosen by the evidence ([`Laplace::optimize_prior_precision`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PriorFit {
    /// δ* maximising the evidence.
    pub delta: f64,
    /// The evidence there.
    pub log_marglik: f64,
    /// `∂ log p(D)/∂ log δ` there (0 up to the search's tolerance).
    pub gradient: f64,
}

impl Laplace {
    /// Fits the posterior of `model` on its training data `(X, Y)` (targets in the
    /// likelihood's form) over all weights: see [`Laplace::fit_subset`].
    pub fn fit(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        opts: &FitOptions<'_>,
    ) -> Result<Self> {
        Self::fit_subset(model, x, y, structure, Subset::All, opts)
    }

    /// Fits the posterior over `subset` of the weights: the full GGN from the stacked
    /// Jacobians (memory checked first), its diagonal streamed without forming J, or its KFAC
    /// factors streamed layer by layer. For the last layer, the network below is run once to
    /// give the features φ(x) and the GGN is that of the last layer on them.
    pub fn fit_subset(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        subset: Subset,
        opts: &FitOptions<'_>,
    ) -> Result<Self> {
        let c = Self::curvature_of(&model, x, y, structure, subset, opts)?;
        Self::from_curvature_unchecked(model, c)
    }

    /// What a fit of `structure` over `subset` sums over the data `(X, Y)`: the GGN (full,
    /// its diagonal, or KFAC's factors), `−log p(D|θ*)` and the squared error. The statistics of
    /// chunks of the data add up ([`Curvature::add`]) to the whole data's, so a fit can run in
    /// pieces, on other processes, and end in [`Laplace::from_curvature`]. A low-rank GGN is
    /// no such sum and is refused.
    pub fn curvature(
        model: &Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        subset: Subset,
        opts: &FitOptions<'_>,
    ) -> Result<Curvature> {
        if structure == HessianStructure::LowRank {
            return Err(Error::Invalid(
                "a lowrank GGN is not a sum over chunks of the data (its eigenvectors are of the \
                 whole sum); use full, diag or kron"
                    .into(),
            ));
        }
        Self::curvature_of(model, x, y, structure, subset, opts)
    }

    /// The posterior of `model` from the statistics of its whole training data
    /// ([`Laplace::curvature`], summed over chunks); the statistics must be of this model's
    /// network (their shapes are checked).
    pub fn from_curvature(model: Model, c: Curvature) -> Result<Self> {
        let sub = match c.subset {
            Subset::All => model.net.clone(),
            Subset::LastLayer => LastLayer::of(&model.net)?.head,
        };
        let q = sub.n_params();
        let fits = match &c.ggn {
            Ggn::Full(h) => h.nrows() == q && h.ncols() == q,
            Ggn::Diag(h) => h.len() == q,
            Ggn::Kron(f) => {
                let shapes = kron_shapes(&sub);
                f.len() == shapes.len()
                    && f.iter()
                        .zip(&shapes)
                        .all(|(s, (i, o))| s.a.nrows() == *i && s.g.nrows() == *o)
            }
            Ggn::LowRank(u, _) => u.nrows() == q,
        };
        if !fits {
            return Err(Error::Invalid(format!(
                "the curvature's shapes are not those of a {} posterior over the {} of {}",
                c.structure(),
                c.subset,
                model.net.spec()
            )));
        }
        Self::from_curvature_unchecked(model, c)
    }

    fn from_curvature_unchecked(model: Model, c: Curvature) -> Result<Self> {
        let last_layer = match c.subset {
            Subset::All => None,
            Subset::LastLayer => Some(LastLayer::of(&model.net)?),
        };
        Self::from_ggn(model, last_layer, c.ggn, c.nll, c.sse, c.nk)
    }

    /// The fit's additive statistics ([`Laplace::curvature`], also low rank).
    fn curvature_of(
        model: &Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        subset: Subset,
        opts: &FitOptions<'_>,
    ) -> Result<Curvature> {
        let (net, lik) = (&model.net, model.likelihood()?);
        if x.nrows() != y.nrows() || x.ncols() != net.n_inputs() || y.ncols() != net.n_outputs() {
            return Err(Error::Invalid(format!(
                "data of {} inputs × {} columns and {} targets × {} columns for a network of {} \
                 inputs and {} outputs",
                x.nrows(),
                x.ncols(),
                y.nrows(),
                y.ncols(),
                net.n_inputs(),
                net.n_outputs()
            )));
        }
        Self::check_memory(net, x.nrows(), structure, subset, opts.memory_limit)?;
        let last_layer = match subset {
            Subset::All => None,
            Subset::LastLayer => Some(LastLayer::of(net)?),
        };
        let features;
        let (sub, w, inputs) = match &last_layer {
            None => (net, &model.w[..], x),
            Some(ll) => {
                features = ll.features(&model.w, x);
                (&ll.head, &model.w[ll.offset..], features.as_ref())
            }
        };
        let (n, k) = (x.nrows(), net.n_outputs());
        let f = crate::nn::predict(sub, w, inputs);
        let nll = lik.nll_sum(f.as_ref(), y);
        let sse = crate::linalg::sq_diff(f.as_ref(), y);
        let ggn = match structure {
            // The last layer's GGN from its inputs (no Jacobian); all weights through J.
            HessianStructure::Full if last_layer.is_some() => {
                Ggn::Full(dense_layer_ggn(lik.as_ref(), inputs, f.as_ref(), y))
            }
            HessianStructure::Full => {
                Ggn::Full(Linearization::new(sub, lik.as_ref(), inputs, y, w).ggn())
            }
            HessianStructure::Diag => {
                Ggn::Diag(ggn_diagonal(sub, lik.as_ref(), w, inputs, y, opts.progress))
            }
            HessianStructure::Kron => {
                Ggn::Kron(kron_factors(sub, lik.as_ref(), w, inputs, y, opts.progress))
            }
            HessianStructure::LowRank => {
                let (u, s) = ggn_top_eigen(
                    sub,
                    lik.as_ref(),
                    w,
                    inputs,
                    y,
                    opts.rank,
                    POWER_ITERATIONS,
                    opts.seed,
                    opts.progress,
                )?;
                Ggn::LowRank(u, s)
            }
        };
        Ok(Curvature {
            ggn,
            subset,
            nll,
            sse,
            n,
            nk: n * k,
        })
    }

    /// Refuses a fit of `structure` over `subset` of `net` on N examples whose largest
    /// allocation exceeds `limit` bytes, before any work: the full GGN needs the Jacobian
    /// (NK×P) and three P×P matrices (the last layer's: no Jacobian, its features), KFAC its factors and their eigenvectors (`Σ_l 3(i_l² +
    /// o_l²)` values), the diagonal a few P-vectors per thread; every predictive at most
    /// 256 MiB of Jacobian per block of inputs.
    pub fn check_memory(
        net: &Sequential,
        n: usize,
        structure: HessianStructure,
        subset: Subset,
        limit: u128,
    ) -> Result<()> {
        let sub = match subset {
            Subset::All => net.clone(),
            Subset::LastLayer => LastLayer::of(net)?.head,
        };
        let (k, p) = (net.n_outputs(), sub.n_params());
        let threads = rayon::current_num_threads() as u128;
        let (what, bytes) = match structure {
            HessianStructure::Full if subset == Subset::LastLayer => (
                "the full P×P GGN, its K² blocks and the features",
                4 * mat_bytes(p, p) + 3 * mat_bytes(n, p / k),
            ),
            HessianStructure::Full => (
                "the Jacobian (NK×P) and the full P×P GGN",
                mat_bytes(n * k, p) + 3 * mat_bytes(p, p),
            ),
            HessianStructure::Kron => (
                "the KFAC factors and their eigenvectors",
                kron_shapes(&sub)
                    .iter()
                    .map(|(i, o)| 3 * (mat_bytes(*i, *i) + mat_bytes(*o, *o)))
                    .sum(),
            ),
            HessianStructure::Diag => ("the GGN diagonal", (threads + 3) * 8 * p as u128),
            HessianStructure::LowRank => (
                "the Jacobians of a group of chunks and the subspace (P × (rank + 10), four copies)",
                8 * mat_bytes(64 * k, p) + 4 * mat_bytes(p, 110),
            ),
        };
        let subset_advice = if subset == Subset::All {
            ", or --subset last-layer"
        } else {
            ""
        };
        check_memory(
            &format!("a {structure} posterior over {p} weights: {what}"),
            bytes + (256 << 20),
            limit,
            &format!("use --hessian kron or diag{subset_advice}"),
        )
    }

    fn from_ggn(
        model: Model,
        last_layer: Option<LastLayer>,
        ggn: Ggn,
        nll: f64,
        sse: f64,
        nk: usize,
    ) -> Result<Self> {
        let mean = model.w[last_layer.as_ref().map_or(0, |l| l.offset)..].to_vec();
        let model_delta = model.delta;
        let posterior = match &ggn {
            Ggn::Full(h) => LaplaceGgn::from_ggn(mean, h.clone(), model.delta)?,
            Ggn::Diag(h) => LaplaceGgn::from_ggn_diagonal(mean, h, model.delta)?,
            Ggn::Kron(f) => LaplaceGgn::from_kron(mean, Kron::new(f, model.delta)?)?,
            Ggn::LowRank(u, s) => LaplaceGgn::from_low_rank(
                mean,
                LowRank {
                    u: u.clone(),
                    s: s.clone(),
                    delta: model.delta,
                    scale: 1.0,
                },
            )?,
        };
        Ok(Laplace {
            model,
            last_layer,
            ggn,
            posterior,
            nll,
            sse,
            nk,
            eigenvalues: OnceLock::new(),
            prior: PriorPrecision::Scalar(model_delta),
        })
    }

    /// The functional covariance at the rows of `x`, a block of inputs at a time, and the
    /// outputs into `outputs` when given. KFAC and diagonal: from the per-layer Jacobian factors
    /// ([`crate::curvature::kron::factored_covariance_blocks`]), without forming J; full and
    /// low rank through J. The last layer's features are computed once per block.
    fn covariance_by_input_block(
        &self,
        x: MatRef<'_, f64>,
        mut outputs: Option<&mut Mat<f64>>,
    ) -> Vec<f64> {
        let (sub, w) = self.covered();
        let k = sub.n_outputs();
        let layers = match self.posterior.precision() {
            Precision::Kron(kron) => Some(kron.layer_variances()),
            Precision::Diag(d) => Some(diag_layer_variances(d, &kron_shapes(sub))),
            _ => None,
        };
        let rows = inputs_per_block(k, sub.n_params(), x.nrows());
        (0..x.nrows())
            .step_by(rows)
            .flat_map(|s| {
                let xb = x.subrows(s, rows.min(x.nrows() - s));
                self.with_inputs(xb, |inputs| {
                    if let Some(out) = outputs.as_deref_mut() {
                        out.as_mut()
                            .subrows_mut(s, xb.nrows())
                            .copy_from(crate::nn::predict(sub, w, inputs));
                    }
                    match &layers {
                        Some(l) => factored_covariance_blocks(&sub.jacobian_factors(w, inputs), l),
                        None => self.covariance_blocks(sub.jacobian(w, inputs).as_ref()),
                    }
                })
            })
            .collect()
    }

    /// The network the posterior covers (the last layer alone, or all of it) and its weights.
    fn covered(&self) -> (&Sequential, &[f64]) {
        match &self.last_layer {
            None => (&self.model.net, &self.model.w),
            Some(ll) => (&ll.head, &self.model.w[ll.offset..]),
        }
    }

    /// `f` of the covered network's inputs at `x`: x itself, or the features φ(x).
    fn with_inputs<R>(&self, x: MatRef<'_, f64>, f: impl FnOnce(MatRef<'_, f64>) -> R) -> R {
        match &self.last_layer {
            None => f(x),
            Some(ll) => f(ll.features(&self.model.w, x).as_ref()),
        }
    }

    /// The fitted weight-space posterior over the covered weights (its factor, jitter,
    /// warnings).
    pub fn weight_posterior(&self) -> &LaplaceGgn {
        &self.posterior
    }

    /// The eigenvalues of H (floored at 0 where they are used): a full H's, computed once;
    /// the diagonal; the products `λ_G ⊗ λ_A` of the Kronecker factors.
    fn ggn_eigenvalues(&self) -> Result<std::borrow::Cow<'_, [f64]>> {
        match (&self.ggn, self.posterior.precision()) {
            (Ggn::Diag(h), _) => Ok(h.into()),
            (Ggn::Kron(_), Precision::Kron(k)) => Ok(k.ggn_eigenvalues().into()),
            (Ggn::LowRank(..), Precision::LowRank(l)) => Ok(l.ggn_eigenvalues().into()),
            (Ggn::Full(h), _) => self
                .eigenvalues
                .get_or_init(|| h.as_ref().self_adjoint_eigenvalues(Side::Lower).ok())
                .as_deref()
                .map(Into::into)
                .ok_or_else(|| {
                    Error::Numerical(
                        "the eigendecomposition of the GGN did not converge: the evidence at \
                         another δ or σ is not available"
                            .into(),
                    )
                }),
            (Ggn::Kron(_) | Ggn::LowRank(..), _) => {
                unreachable!("a structured fit holds its own precision")
            }
        }
    }

    /// `log|c H + D|` at a prior D (δI, or δ_g per tensor): from the fitted factor at the
    /// fitted prior and c = 1; else from H's eigenvalues, `Σ_g Σ_{λ∈g} log(c max(λ, 0) + δ_g)`
    /// (one δ, or the diagonal and KFAC, whose eigenvalues fall in the tensors); else (full H, δ
    /// per tensor) from a new factor.
    fn log_det_precision(&self, prior: &PriorPrecision, c: f64) -> Result<f64> {
        if *prior == self.prior && c == 1.0 {
            return Ok(self.posterior.log_det_precision());
        }
        let d = self.per_tensor(prior)?;
        let sum = |l: &[f64], d: f64| l.iter().map(|s| (c * s.max(0.0) + d).ln()).sum::<f64>();
        match (prior, &self.ggn) {
            (PriorPrecision::Scalar(delta), _) => Ok(sum(&self.ggn_eigenvalues()?, *delta)),
            (_, Ggn::Full(h)) => Ok(LaplaceGgn::from_ggn_prior(
                self.posterior.mean.clone(),
                h * faer::Scale(c),
                &self.per_parameter(&d),
            )?
            .log_det_precision()),
            _ => {
                let lambda = self.ggn_eigenvalues()?;
                Ok(self
                    .by_tensor(&lambda)
                    .zip(&d)
                    .map(|(l, d)| sum(l, *d))
                    .sum())
            }
        }
    }

    /// The covered weights' parameter tensors, as a layerwise prior orders them: their names
    /// (those of the whole network's state_dict) and sizes.
    pub fn prior_tensors(&self) -> Vec<(String, usize)> {
        let offset = self.last_layer.as_ref().map_or(0, |l| l.offset);
        self.model
            .net
            .param_layout()
            .into_iter()
            .filter(|t| t.offset >= offset)
            .map(|t| (t.name, t.shape.iter().product()))
            .collect()
    }

    /// The prior precision the posterior is at.
    pub fn prior_precision(&self) -> &PriorPrecision {
        &self.prior
    }

    /// `v` (one value per covered weight) cut into the parameter tensors.
    fn by_tensor<'a>(&self, v: &'a [f64]) -> impl Iterator<Item = &'a [f64]> {
        let mut at = 0;
        self.prior_tensors().into_iter().map(move |(_, len)| {
            at += len;
            &v[at - len..at]
        })
    }

    /// δ per tensor of a prior, checked: every δ valid, one per tensor, and one δ for a
    /// low-rank posterior.
    fn per_tensor(&self, prior: &PriorPrecision) -> Result<Vec<f64>> {
        let tensors = self.prior_tensors();
        let d = match prior {
            PriorPrecision::Scalar(delta) => vec![*delta; tensors.len()],
            PriorPrecision::Layerwise(d) if matches!(self.ggn, Ggn::LowRank(..)) => {
                return Err(Error::Invalid(format!(
                    "a prior precision per layer ({} values) needs a full, diag or kron \
                     posterior: the low-rank precision U diag(s) Uᵀ + δI has one δ",
                    d.len()
                )))
            }
            PriorPrecision::Layerwise(d) if d.len() != tensors.len() => {
                return Err(Error::Invalid(format!(
                    "a prior precision per layer of {} values for {} parameter tensors ({})",
                    d.len(),
                    tensors.len(),
                    tensors
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            PriorPrecision::Layerwise(d) => d.clone(),
        };
        d.iter().try_for_each(|v| crate::train::check_delta(*v))?;
        Ok(d)
    }

    /// δ per tensor spread over the tensors' weights.
    fn per_parameter(&self, d: &[f64]) -> Vec<f64> {
        self.prior_tensors()
            .iter()
            .zip(d)
            .flat_map(|((_, len), d)| std::iter::repeat_n(*d, *len))
            .collect()
    }

    /// `‖θ_g*‖²` per parameter tensor.
    fn tensor_sq_norms(&self) -> Vec<f64> {
        self.by_tensor(&self.posterior.mean)
            .map(|t| dot(t, t))
            .collect()
    }

    /// The Laplace evidence at a prior (δ, or δ_g per tensor) and noise σ (`None`: the fitted
    /// one): `log p(D | θ*) − Σ_g (δ_g/2)‖θ_g*‖² + Σ_g (P_g/2) log δ_g − ½ log|c H + D|`.
    pub fn log_marginal_likelihood_at(
        &self,
        prior: &PriorPrecision,
        sigma: Option<f64>,
    ) -> Result<f64> {
        let d = self.per_tensor(prior)?;
        let (nll, c) = at_sigma(&self.model, self.nll, self.sse, self.nk, sigma)?;
        let log_det = self.log_det_precision(prior, c)?;
        Ok(match prior {
            PriorPrecision::Scalar(delta) => laplace_evidence(
                -nll,
                *delta,
                self.mean_sq(),
                self.posterior.mean.len(),
                log_det,
            ),
            PriorPrecision::Layerwise(_) => {
                let tensors = self.prior_tensors();
                let prior_terms: f64 = (self.tensor_sq_norms().iter().zip(&d).zip(&tensors))
                    .map(|((w2, d), (_, len))| laplace_evidence(0.0, *d, *w2, *len, 0.0))
                    .sum();
                -nll + prior_terms - 0.5 * log_det
            }
        })
    }

    /// `∂ log p(D)/∂ log δ_g = ½ (P_g − δ_g ‖θ_g*‖² − δ_g tr_g Σ)` per tensor at δ_g (at the
    /// fitted σ): with the eigenvalues of a diagonal or KFAC H in tensor g,
    /// `tr_g Σ = Σ_{λ∈g} 1/(λ + δ_g)`; for a full H from `diag Σ` at that prior.
    pub fn log_marginal_likelihood_gradient_layerwise(&self, deltas: &[f64]) -> Result<Vec<f64>> {
        let d = self.per_tensor(&PriorPrecision::Layerwise(deltas.to_vec()))?;
        let w2 = self.tensor_sq_norms();
        let variances = match &self.ggn {
            Ggn::Full(h) => LaplaceGgn::from_ggn_prior(
                self.posterior.mean.clone(),
                h.clone(),
                &self.per_parameter(&d),
            )?
            .variances(),
            _ => {
                let lambda = self.ggn_eigenvalues()?;
                return Ok((self.by_tensor(&lambda).zip(&w2).zip(&d))
                    .map(|((l, w2), d)| evidence_gradient(l, *w2, *d))
                    .collect());
            }
        };
        Ok((self.by_tensor(&variances).zip(&w2).zip(&d))
            .map(|((v, w2), d)| 0.5 * (v.len() as f64 - d * w2 - d * v.iter().sum::<f64>()))
            .collect())
    }

    /// The evidence's maximum over δ_g per tensor for a full H, by Newton's method in
    /// `t = log δ`: gradient `g_g = ½(P_g − δ_g‖θ_g‖² − δ_g tr_g Σ)` and Hessian
    /// `∂g_g/∂t_h = ½ δ_g δ_h ‖Σ_gh‖²_F − [g = h] ½ δ_g (‖θ_g‖² + tr_g Σ)` from Σ at the
    /// current δ, each step halved until the evidence does not fall; where the Hessian is not
    /// negative definite, MacKay's step `δ_g ← (P_g − δ_g tr_g Σ)/‖θ_g‖²`. From the scalar
    /// optimum, until every gradient is below 1e-10·P_g.
    fn full_layerwise_optimum(&self, h: &Mat<f64>, w2: &[f64]) -> Result<Vec<f64>> {
        let sizes: Vec<usize> = self.prior_tensors().iter().map(|(_, len)| *len).collect();
        let starts: Vec<usize> = sizes
            .iter()
            .scan(0, |at, len| {
                *at += len;
                Some(*at - len)
            })
            .collect();
        let range = |g: usize| starts[g]..starts[g] + sizes[g];
        let n = sizes.len();
        let exp = |t: &[f64]| t.iter().map(|v| v.exp()).collect::<Vec<f64>>();
        let evidence =
            |t: &[f64]| self.log_marginal_likelihood_at(&PriorPrecision::Layerwise(exp(t)), None);
        let mut t = vec![self.scalar_optimum()?.ln(); n];
        let mut e = evidence(&t)?;
        for _ in 0..100 {
            let d = exp(&t);
            let sigma = LaplaceGgn::from_ggn_prior(
                self.posterior.mean.clone(),
                h.clone(),
                &self.per_parameter(&d),
            )?
            .covariance();
            let tr: Vec<f64> = (0..n)
                .map(|g| range(g).map(|i| sigma[(i, i)]).sum())
                .collect();
            let grad: Vec<f64> = (0..n)
                .map(|g| 0.5 * (sizes[g] as f64 - d[g] * w2[g] - d[g] * tr[g]))
                .collect();
            if (0..n).all(|g| grad[g].abs() <= 1e-10 * sizes[g] as f64) {
                return Ok(d);
            }
            // −Hessian, to be positive definite at a maximum.
            let neg = Mat::from_fn(n, n, |g, k| {
                let f: f64 = range(g)
                    .flat_map(|i| range(k).map(move |j| (i, j)))
                    .map(|(i, j)| sigma[(i, j)] * sigma[(i, j)])
                    .sum();
                let diag = if g == k {
                    0.5 * d[g] * (w2[g] + tr[g])
                } else {
                    0.0
                };
                diag - 0.5 * d[g] * d[k] * f
            });
            let step: Vec<f64> = match neg.as_ref().llt(Side::Lower) {
                Ok(c) => {
                    let s =
                        faer::linalg::solvers::Solve::solve(&c, Mat::from_fn(n, 1, |g, _| grad[g]));
                    (0..n).map(|g| s[(g, 0)]).collect()
                }
                Err(_) => (0..n)
                    .map(|g| ((2.0 * grad[g] + d[g] * w2[g]) / w2[g]).ln() - t[g])
                    .collect(),
            };
            if step.iter().any(|s| !s.is_finite()) {
                return Err(Error::Numerical(format!(
                    "the evidence has no maximum in the prior precisions per layer (gradients \
                     {grad:?})"
                )));
            }
            let mut a = 1.0;
            loop {
                let next: Vec<f64> = t.iter().zip(&step).map(|(t, s)| t + a * s).collect();
                let en = evidence(&next)?;
                if en >= e || a < 1e-6 {
                    (t, e) = (next, en);
                    break;
                }
                a /= 2.0;
            }
        }
        Err(Error::Numerical(
            "the prior precision per layer did not converge in 100 Newton steps".into(),
        ))
    }

    /// The prior precision per parameter tensor maximising the evidence (laplace-torch's
    /// `optimize_prior_precision(method="marglik", prior_structure="layerwise")`). Diagonal
    /// and KFAC: the evidence separates over the tensors, so each δ_g is the one root of
    /// `½ Σ_{λ∈g} λ/(λ + δ_g) − ½ δ_g‖θ_g*‖²`, bisected in log δ_g to machine precision. Full:
    /// Newton's method in log δ from the scalar optimum. The posterior is then refitted there.
    pub fn optimize_prior_precision_layerwise(&mut self) -> Result<LayerwisePriorFit> {
        let tensors = self.prior_tensors();
        let w2 = self.tensor_sq_norms();
        let no_maximum = |g: usize| {
            Error::Numerical(format!(
                "the evidence has no maximum in the prior precision of {} within [e^-40, e^40] \
                 (‖θ‖² = {:.3e})",
                tensors[g].0, w2[g]
            ))
        };
        // Refuses a low-rank posterior.
        self.per_tensor(&PriorPrecision::Layerwise(vec![1.0; tensors.len()]))?;
        let d = match &self.ggn {
            Ggn::Full(h) => {
                if let Some(g) = w2.iter().position(|v| *v <= 0.0) {
                    return Err(no_maximum(g));
                }
                self.full_layerwise_optimum(h, &w2)?
            }
            _ => {
                let lambda = self.ggn_eigenvalues()?.into_owned();
                (self.by_tensor(&lambda).zip(&w2).enumerate())
                    .map(|(g, (l, w2))| {
                        root_in_log(&|t| evidence_gradient(l, *w2, t.exp()))
                            .map(f64::exp)
                            .ok_or_else(|| no_maximum(g))
                    })
                    .collect::<Result<Vec<f64>>>()?
            }
        };
        let gradient = self.log_marginal_likelihood_gradient_layerwise(&d)?;
        self.set_prior(PriorPrecision::Layerwise(d.clone()))?;
        Ok(LayerwisePriorFit {
            tensors: tensors.into_iter().map(|(n, _)| n).collect(),
            deltas: d,
            log_marglik: self.log_marginal_likelihood(None, None)?,
            gradient,
        })
    }

    /// `‖θ*‖²` of the covered weights.
    fn mean_sq(&self) -> f64 {
        dot(&self.posterior.mean, &self.posterior.mean)
    }

    /// The prior precision maximising the evidence (laplace-torch's
    /// `optimize_prior_precision(method="marglik")`, scalar δ), found exactly: with H's
    /// eigenvalues λ, `∂ log p(D)/∂ log δ = ½ Σ λ/(λ + δ) − ½ δ ‖θ*‖²` falls strictly in δ,
    /// so its one root is bracketed and bisected in log δ to machine precision. The posterior
    /// is then refitted at δ* (the model's δ becomes δ*).
    pub fn optimize_prior_precision(&mut self) -> Result<PriorFit> {
        let delta = self.scalar_optimum()?;
        self.set_prior_precision(delta)?;
        Ok(PriorFit {
            delta,
            log_marglik: self.log_marginal_likelihood(None, None)?,
            gradient: self.log_marginal_likelihood_gradient(delta)?,
        })
    }

    /// The root of `½ Σ λ/(λ + δ) − ½ δ ‖θ*‖²` in δ.
    fn scalar_optimum(&self) -> Result<f64> {
        let lambda = self.ggn_eigenvalues()?;
        let w2 = self.mean_sq();
        root_in_log(&|t| evidence_gradient(&lambda, w2, t.exp()))
            .map(f64::exp)
            .ok_or_else(|| {
                Error::Numerical(format!(
                    "the evidence has no maximum in δ ∈ [e^-40, e^40] (‖θ*‖² = {w2:.3e}, {} \
                     positive GGN eigenvalues)",
                    lambda.iter().filter(|l| **l > 0.0).count()
                ))
            })
    }

    /// The prior precision maximising the evidence with `structure`
    /// ([`Laplace::optimize_prior_precision`] or
    /// [`Laplace::optimize_prior_precision_layerwise`]); returns the evidence there.
    pub fn optimize_prior_precision_as(&mut self, structure: PriorStructure) -> Result<f64> {
        Ok(match structure {
            PriorStructure::Scalar => self.optimize_prior_precision()?.log_marglik,
            PriorStructure::Layerwise => self.optimize_prior_precision_layerwise()?.log_marglik,
        })
    }

    /// The Gaussian noise σ and prior precision δ maximising the evidence (regression): by
    /// coordinate ascent, each step the exact root in log δ of
    /// `½ Σ cλ/(cλ + δ) − ½ δ‖θ*‖²` and in log σ of `SSE/σ² − NK + Σ cλ/(cλ + δ)` (both fall
    /// strictly; `c = σ_fit²/σ²` scales H), until both are below 1e-9 of their terms. The
    /// posterior is then refitted at (δ*, σ*): H scaled by c, the model's σ and δ set.
    pub fn optimize_noise_and_prior(&mut self) -> Result<NoiseFit> {
        if self.model.likelihood != LikelihoodKind::Gaussian {
            return Err(Error::Invalid(format!(
                "the noise σ belongs to the Gaussian likelihood, not the {}",
                self.model.likelihood
            )));
        }
        let lambda: Vec<f64> = self.ggn_eigenvalues()?.iter().map(|l| l.max(0.0)).collect();
        let (w2, s0, sse, nk) = (self.mean_sq(), self.model.sigma, self.sse, self.nk as f64);
        let fit_share = |td: f64, ts: f64| {
            let (d, c) = (td.exp(), (s0 / ts.exp()).powi(2));
            lambda.iter().map(|l| c * l / (c * l + d)).sum::<f64>()
        };
        let g_delta = |td: f64, ts: f64| 0.5 * fit_share(td, ts) - 0.5 * td.exp() * w2;
        let g_sigma = |td: f64, ts: f64| sse / (2.0 * ts).exp() - nk + fit_share(td, ts);
        let none = || {
            Error::Numerical(
                "the evidence has no maximum in δ or σ within [e^-40, e^40]".to_string(),
            )
        };
        let mut ts = s0.ln();
        let mut rounds = 0;
        let td = loop {
            let td = root_in_log(&|t| g_delta(t, ts)).ok_or_else(none)?;
            ts = root_in_log(&|t| g_sigma(td, t)).ok_or_else(none)?;
            rounds += 1;
            let scale = nk + fit_share(td, ts);
            if g_delta(td, ts).abs() < 1e-9 * scale && g_sigma(td, ts).abs() < 1e-9 * scale {
                break td;
            }
            if rounds == 10_000 {
                return Err(Error::Numerical(
                    "the noise and prior did not converge in 10,000 rounds".into(),
                ));
            }
        };
        let (delta, sigma) = (td.exp(), ts.exp());
        let c = (s0 / sigma).powi(2);
        let (nll, _) = at_sigma(&self.model, self.nll, sse, self.nk, Some(sigma))?;
        let ggn = match &self.ggn {
            Ggn::Full(h) => Ggn::Full(h * faer::Scale(c)),
            Ggn::Diag(h) => Ggn::Diag(h.iter().map(|v| v * c).collect()),
            Ggn::Kron(f) => Ggn::Kron(
                f.iter()
                    .map(|s| KronSums {
                        g: &s.g * faer::Scale(c),
                        ..s.clone()
                    })
                    .collect(),
            ),
            Ggn::LowRank(u, s) => Ggn::LowRank(u.clone(), s.iter().map(|v| v * c).collect()),
        };
        let mut model = self.model.clone();
        (model.sigma, model.delta) = (sigma, delta);
        *self = Self::from_ggn(model, self.last_layer.clone(), ggn, nll, sse, self.nk)?;
        Ok(NoiseFit {
            delta,
            sigma,
            log_marglik: self.log_marginal_likelihood(None, None)?,
            rounds,
        })
    }

    /// `∂ log p(D)/∂ log δ = ½ Σ_i λ_i/(λ_i + δ) − ½ δ ‖θ*‖²` at prior precision δ (H's
    /// eigenvalues λ, at the fitted σ).
    pub fn log_marginal_likelihood_gradient(&self, delta: f64) -> Result<f64> {
        crate::train::check_delta(delta)?;
        Ok(evidence_gradient(
            &self.ggn_eigenvalues()?,
            self.mean_sq(),
            delta,
        ))
    }

    /// Refits the posterior at prior precision δ from the same curvature (no data pass); the
    /// model's δ becomes δ.
    pub fn set_prior_precision(&mut self, delta: f64) -> Result<()> {
        self.set_prior(PriorPrecision::Scalar(delta))?;
        self.model.delta = delta;
        Ok(())
    }

    /// Refits the posterior at a prior (one δ, or δ_g per tensor) from the same curvature;
    /// [`Laplace::prior_precision`] then holds it (the model's δ changes only through
    /// [`Laplace::set_prior_precision`]).
    pub fn set_prior(&mut self, prior: PriorPrecision) -> Result<()> {
        let d = self.per_tensor(&prior)?;
        let mean = self.posterior.mean.clone();
        self.posterior = match (&self.ggn, self.posterior.precision()) {
            (Ggn::Kron(_), Precision::Kron(k)) => LaplaceGgn::from_kron(mean, k.at(&d, 1.0)?)?,
            (Ggn::Full(h), _) => {
                LaplaceGgn::from_ggn_prior(mean, h.clone(), &self.per_parameter(&d))?
            }
            (Ggn::Diag(h), _) => {
                LaplaceGgn::from_ggn_diagonal_prior(mean, h, &self.per_parameter(&d))?
            }
            (Ggn::LowRank(..), Precision::LowRank(l)) => LaplaceGgn::from_low_rank(
                mean,
                LowRank {
                    delta: d[0],
                    ..l.clone()
                },
            )?,
            (Ggn::Kron(_) | Ggn::LowRank(..), _) => {
                unreachable!("a structured fit holds its own precision")
            }
        };
        self.prior = prior;
        Ok(())
    }

    /// Writes the posterior to one safetensors file: the model's weights and metadata
    /// ([`Model::save`]), the structure and subset, the data terms of the evidence, and `H` as
    /// the tensor `posterior.ggn` (P×P or P), or its Kronecker factors `posterior.ggn.{l}.a`
    /// and `.g`. PyTorch reads the weights with `load_state_dict(…, strict=False)`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let p = self.model.w.len();
        let mut layout = self.model.net.param_layout();
        let mut flat = self.model.w.clone();
        for (name, shape, values) in self.ggn.tensors() {
            layout.push(ParamTensor {
                name,
                shape,
                offset: flat.len(),
            });
            flat.extend(values);
        }
        debug_assert!(flat.len() >= p);
        let mut meta = self.model.metadata();
        if let Ggn::LowRank(_, s) = &self.ggn {
            meta.insert(RANK.to_string(), s.len().to_string());
        }
        if let PriorPrecision::Layerwise(d) = &self.prior {
            let d: Vec<String> = d.iter().map(|v| format!("{v:?}")).collect();
            meta.insert(LAYERWISE_PRIOR.to_string(), d.join(","));
        }
        meta.extend([
            (STRUCTURE.to_string(), self.structure().to_string()),
            (SUBSET.to_string(), self.subset().to_string()),
            (NLL.to_string(), format!("{:?}", self.nll)),
            (SSE.to_string(), format!("{:?}", self.sse)),
            (NK.to_string(), self.nk.to_string()),
        ]);
        weights::save_with_metadata(path, &layout, &flat, StoredDtype::F64, &meta)
    }

    /// Reads a posterior written by [`Laplace::save`]: the same numbers, without the data.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
        let mut p = 0;
        let mut structure = HessianStructure::Full;
        let mut subset = Subset::All;
        let mut tensor_shapes = Vec::new();
        let (meta, flat) = weights::load_with_metadata(path, |meta| {
            let net = Model::architecture_in(meta).map_err(|e| e.in_file(path))?;
            let parse = |key: &str| {
                meta.get(key).ok_or_else(|| {
                    bad(format!("no '{key}' in its metadata: not a saved posterior"))
                })
            };
            structure =
                HessianStructure::from_str(parse(STRUCTURE)?).map_err(|e| bad(e.to_string()))?;
            // Posteriors saved before subsets existed cover all weights.
            subset = meta
                .get(SUBSET)
                .map_or(Ok(Subset::All), |s| Subset::from_str(s))
                .map_err(|e| bad(e.to_string()))?;
            p = net.n_params();
            let sub = match subset {
                Subset::All => net.clone(),
                Subset::LastLayer => LastLayer::of(&net).map_err(|e| bad(e.to_string()))?.head,
            };
            let q = sub.n_params();
            let mut layout = net.param_layout();
            let mut offset = p;
            let mut add = |name: String, shape: Vec<usize>| {
                let len = shape.iter().product::<usize>();
                tensor_shapes.push(shape.clone());
                layout.push(ParamTensor {
                    name,
                    shape,
                    offset,
                });
                offset += len;
            };
            match structure {
                HessianStructure::Full => add(GGN.into(), vec![q, q]),
                HessianStructure::Diag => add(GGN.into(), vec![q]),
                HessianStructure::Kron => {
                    for (l, (i, o)) in kron_shapes(&sub).iter().enumerate() {
                        add(format!("{GGN}.{l}.a"), vec![*i, *i]);
                        add(format!("{GGN}.{l}.g"), vec![*o, *o]);
                    }
                }
                HessianStructure::LowRank => {
                    let rank = meta
                        .get(RANK)
                        .and_then(|r| r.parse::<usize>().ok())
                        .ok_or_else(|| bad(format!("'{RANK}' is missing or not a count")))?;
                    add(format!("{GGN}.u"), vec![q, rank]);
                    add(format!("{GGN}.s"), vec![rank]);
                }
            }
            Ok(layout)
        })?;
        let number = |key: &str| -> Result<f64> {
            meta.get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| bad(format!("'{key}' is missing or not a number")))
        };
        let (nll, sse, nk) = (number(NLL)?, number(SSE)?, number(NK)? as usize);
        let model = Model::from_metadata(&meta, flat[..p].to_vec()).map_err(|e| e.in_file(path))?;
        let last_layer = match subset {
            Subset::All => None,
            Subset::LastLayer => Some(LastLayer::of(&model.net)?),
        };
        let mut at = p;
        let tensors = tensor_shapes
            .into_iter()
            .map(|shape| {
                let len = shape.iter().product::<usize>();
                at += len;
                (shape, flat[at - len..at].to_vec())
            })
            .collect();
        let ggn = Ggn::from_tensors(structure, tensors).map_err(|e| bad(e.to_string()))?;
        let mut la = Self::from_ggn(model, last_layer, ggn, nll, sse, nk)?;
        if let Some(d) = meta.get(LAYERWISE_PRIOR) {
            let d = (d.split(',').map(|v| v.parse::<f64>()))
                .collect::<std::result::Result<Vec<f64>, _>>()
                .map_err(|_| bad(format!("'{LAYERWISE_PRIOR}' is not a list of numbers")))?;
            la.set_prior(PriorPrecision::Layerwise(d))
                .map_err(|e| bad(e.to_string()))?;
        }
        Ok(la)
    }
}

impl Posterior for Laplace {
    fn model(&self) -> &Model {
        &self.model
    }

    fn structure(&self) -> HessianStructure {
        self.posterior.structure
    }

    fn subset(&self) -> Subset {
        match self.last_layer {
            None => Subset::All,
            Some(_) => Subset::LastLayer,
        }
    }

    /// For the last layer: the head's Jacobian at the features, `I_K ⊗ [φ(x)ᵀ, 1]`.
    fn jacobian(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let (sub, w) = self.covered();
        self.with_inputs(x, |x| sub.jacobian(w, x))
    }

    fn functional_covariance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        self.covariance_by_input_block(x, None)
    }

    /// The last layer's features are computed once per block of inputs for both.
    fn outputs_and_covariance(&self, x: MatRef<'_, f64>) -> (Mat<f64>, Vec<f64>) {
        let mut f = Mat::zeros(x.nrows(), self.model.net.n_outputs());
        let cov = self.covariance_by_input_block(x, Some(&mut f));
        (f, cov)
    }

    /// At another σ: the data term at σ′ and H scaled by `σ²/σ′²`.
    /// `delta = None`: at the posterior's prior (one δ, or δ_g per tensor).
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64> {
        let prior = delta.map_or_else(|| self.prior.clone(), PriorPrecision::Scalar);
        self.log_marginal_likelihood_at(&prior, sigma)
    }

    fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        self.posterior.covariance_times(v)
    }

    fn covariance_blocks(&self, jac: MatRef<'_, f64>) -> Vec<f64> {
        self.posterior
            .functional_covariance_blocks(jac, self.model.net.n_outputs())
    }

    fn covariance_between(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        self.posterior.kernel(ja, jb)
    }

    fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f64>> {
        let offset = self.last_layer.as_ref().map_or(0, |l| l.offset);
        self.posterior
            .sample(n, &mut seeded(seed))
            .into_iter()
            .map(|draw| {
                let mut w = self.model.w[..offset].to_vec();
                w.extend(draw);
                w
            })
            .collect()
    }
}
