//! One posterior interface in laplace-torch's shape ([`Posterior`]): fit from a network, a
//! likelihood and data with a structure; `log_marginal_likelihood(δ, σ)`; the functional
//! variance and covariance at new inputs; `predict(x, link)`; `sample`; the kernel
//! `J(x) Σ J(x')ᵀ`; save and load. [`Laplace`] is the Laplace-GGN member, full or diagonal;
//! [`crate::gp::FunctionSpace`] holds the same full posterior through the NK×NK GP Gram matrix
//! (no P×P matrix, for P ≫ NK):
//!
//! `q(w) = N(w*, Σ)`, `Σ⁻¹ = A = H + δI`, `H = Σ_i J_iᵀ Λ_i J_i` at the MAP `w*`.
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
use crate::curvature::{ggn_diagonal, Linearization};
use crate::error::{Error, Result};
use crate::likelihood::classification::{probit, softmax};
use crate::likelihood::LikelihoodKind;
use crate::linalg::{check_memory, dot, mat_bytes, sym_sqrt};
use crate::nn::weights::{self, ParamTensor, StoredDtype};
use crate::nn::Network;
use crate::progress::Progress;
use crate::rng::{normals, seeded};
use crate::train::model::Model;

/// How class probabilities come from the Gaussian over the logits `f ~ N(f*(x), J Σ Jᵀ)`:
/// laplace-torch's `link_approx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `softmax(f*_k / √(1 + π v_k / 8))` (the sigmoid for one logit).
    Probit,
    /// The mean of `softmax(f)` over `samples` draws of f, from `seed`.
    MonteCarlo {
        /// Draws per input.
        samples: usize,
        /// Seed of the draws.
        seed: u64,
    },
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
/// Jacobians of [`inputs_per_block`] inputs at a time.
pub fn blocks_by_input_block(
    net: &dyn Network,
    w: &[f64],
    x: MatRef<'_, f64>,
    blocks: &dyn Fn(MatRef<'_, f64>) -> Vec<f64>,
) -> Vec<f64> {
    let rows = inputs_per_block(net.n_outputs(), net.n_params(), x.nrows());
    (0..x.nrows())
        .step_by(rows)
        .flat_map(|s| {
            blocks(
                net.jacobian(w, x.subrows(s, rows.min(x.nrows() - s)))
                    .as_ref(),
            )
        })
        .collect()
}

/// A Gaussian posterior `N(μ, Σ)` over a network's weights and what it gives, in the shape of
/// laplace-torch's `BaseLaplace`. The structures (full, diag; next KFAC, low-rank, last layer)
/// are members; the command line and the examples call only this.
pub trait Posterior {
    /// The model: network, `μ = w*`, likelihood, σ, δ.
    fn model(&self) -> &Model;

    /// The curvature structure.
    fn structure(&self) -> HessianStructure;

    /// The Laplace evidence `log p(D) ≈ log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|A|` at
    /// prior precision `delta` and Gaussian noise `sigma` (`None`: the fitted values), from one
    /// fit: laplace-torch's `log_marginal_likelihood(prior_precision, sigma_noise)`.
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64>;

    /// `Σ v`.
    fn covariance_times(&self, v: &[f64]) -> Vec<f64>;

    /// The K×K blocks `J_m Σ J_mᵀ` for stacked Jacobians `J` (MK×P), row-major.
    fn covariance_blocks(&self, jac: MatRef<'_, f64>) -> Vec<f64>;

    /// `J_a Σ J_bᵀ` for stacked Jacobians.
    fn covariance_between(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64>;

    /// `n` draws `w ~ N(μ, Σ)` from `seed` (laplace-torch's `sample`).
    fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f64>>;

    /// The functional covariance: K×K blocks `J(x_m) Σ J(x_m)ᵀ` at the rows of `x`, row-major
    /// (M·K·K), a block of inputs at a time (at most 256 MiB of Jacobian).
    fn functional_covariance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        let m = self.model();
        blocks_by_input_block(&m.net, &m.w, x, &|j| self.covariance_blocks(j))
    }

    /// The functional variance `diag J(x) Σ J(x)ᵀ` (M·K, row `m·K + k`).
    fn functional_variance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        diagonals(&self.functional_covariance(x), self.model().net.n_outputs())
    }

    /// The posterior kernel `κ(x, x') = J(x) Σ J(x')ᵀ` (M_aK × M_bK).
    fn kernel(&self, xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f64> {
        let m = self.model();
        let (ja, jb) = (m.net.jacobian(&m.w, xa), m.net.jacobian(&m.w, xb));
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
        let mean = crate::nn::predict(&m.net, &m.w, x);
        let covariance = self.functional_covariance(x);
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
        Link::Probit => None,
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
            _ => probit(&f, &(0..c).map(|a| cov[(a, a)]).collect::<Vec<_>>()),
        };
        for (a, v) in p.into_iter().enumerate() {
            out[(i, a)] = v;
        }
    }
    Ok(out)
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

/// What [`Laplace::fit`] may use.
pub struct FitOptions<'a> {
    /// Bytes the fit may allocate at once (the Jacobian and the P×P GGN of a full fit).
    pub memory_limit: u128,
    /// Told of the examples done (diagonal fits).
    pub progress: Option<&'a dyn Progress>,
}

impl Default for FitOptions<'_> {
    /// Three quarters of the available memory, no progress.
    fn default() -> Self {
        FitOptions {
            memory_limit: crate::linalg::available_memory() / 4 * 3,
            progress: None,
        }
    }
}

/// The GGN `H` as fitted: P×P, or its diagonal.
#[derive(Debug, Clone)]
enum Ggn {
    Full(Mat<f64>),
    Diag(Vec<f64>),
}

/// The Laplace-GGN posterior of a model on its training data: laplace-torch's `Laplace(model,
/// likelihood, subset_of_weights="all", hessian_structure="full" | "diag")` after `fit`.
#[derive(Debug, Clone)]
pub struct Laplace {
    model: Model,
    ggn: Ggn,
    posterior: LaplaceGgn,
    /// `−log p(D | w*)` at the fitted σ.
    nll: f64,
    /// `Σ_i ‖f(x_i) − y_i‖²` (Gaussian) and the number of outputs NK, for the evidence at
    /// another σ.
    sse: f64,
    nk: usize,
    /// The eigenvalues of a full H, for the evidence at other δ and σ (computed once; `None`
    /// when the eigendecomposition did not converge).
    eigenvalues: OnceLock<Option<Vec<f64>>>,
}

/// Metadata keys of a saved posterior.
const STRUCTURE: &str = "dnn2gp.posterior.structure";
const NLL: &str = "dnn2gp.posterior.nll";
const SSE: &str = "dnn2gp.posterior.sse";
const NK: &str = "dnn2gp.posterior.nk";
/// The tensor holding H.
const GGN: &str = "posterior.ggn";

impl Laplace {
    /// Fits the posterior of `model` on its training data `(X, Y)` (targets in the
    /// likelihood's form): the full GGN from the stacked Jacobians (memory checked first), or
    /// its diagonal streamed without forming J.
    pub fn fit(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        opts: &FitOptions<'_>,
    ) -> Result<Self> {
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
        let (n, k, p) = (x.nrows(), net.n_outputs(), net.n_params());
        let f = crate::nn::predict(net, &model.w, x);
        let nll = lik.nll_sum(f.as_ref(), y);
        let sse = crate::linalg::sq_diff(f.as_ref(), y);
        let ggn = match structure {
            HessianStructure::Full => {
                check_memory(
                    "the Jacobian (NK×P) and the full P×P GGN",
                    mat_bytes(n * k, p) + 3 * mat_bytes(p, p),
                    opts.memory_limit,
                    "use HessianStructure::Diag (--hessian diag)",
                )?;
                Ggn::Full(Linearization::new(net, lik.as_ref(), x, y, &model.w).ggn())
            }
            HessianStructure::Diag => Ggn::Diag(ggn_diagonal(
                net,
                lik.as_ref(),
                &model.w,
                x,
                y,
                opts.progress,
            )),
        };
        Self::from_ggn(model, ggn, nll, sse, n * k)
    }

    fn from_ggn(model: Model, ggn: Ggn, nll: f64, sse: f64, nk: usize) -> Result<Self> {
        let posterior = match &ggn {
            Ggn::Full(h) => LaplaceGgn::from_ggn(model.w.clone(), h.clone(), model.delta)?,
            Ggn::Diag(h) => LaplaceGgn::from_ggn_diagonal(model.w.clone(), h, model.delta)?,
        };
        Ok(Laplace {
            model,
            ggn,
            posterior,
            nll,
            sse,
            nk,
            eigenvalues: OnceLock::new(),
        })
    }

    /// The fitted weight-space posterior (its factor, jitter, warnings).
    pub fn weight_posterior(&self) -> &LaplaceGgn {
        &self.posterior
    }

    /// `log|c H + δI|`, from the fitted factor at the fitted (δ, c = 1), else from H's
    /// eigenvalues (floored at 0) or its diagonal.
    fn log_det_precision(&self, delta: f64, c: f64) -> Result<f64> {
        if delta == self.model.delta && c == 1.0 {
            return Ok(self.posterior.log_det_precision());
        }
        let terms = |s: &[f64]| s.iter().map(|s| (c * s.max(0.0) + delta).ln()).sum();
        match &self.ggn {
            Ggn::Diag(h) => Ok(terms(h)),
            Ggn::Full(h) => self
                .eigenvalues
                .get_or_init(|| h.as_ref().self_adjoint_eigenvalues(Side::Lower).ok())
                .as_deref()
                .map(terms)
                .ok_or_else(|| {
                    Error::Numerical(
                        "the eigendecomposition of the GGN did not converge: the evidence at \
                         another δ or σ is not available"
                            .into(),
                    )
                }),
        }
    }

    /// Writes the posterior to one safetensors file: the model's weights and metadata
    /// ([`Model::save`]), the structure, the data terms of the evidence, and `H` as the tensor
    /// `posterior.ggn` (P×P or P). PyTorch reads the weights with `load_state_dict(…,
    /// strict=False)`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let p = self.model.w.len();
        let (shape, values) = match &self.ggn {
            Ggn::Full(h) => (
                vec![p, p],
                (0..p)
                    .flat_map(|i| (0..p).map(move |j| (i, j)))
                    .map(|(i, j)| h[(i, j)])
                    .collect::<Vec<f64>>(),
            ),
            Ggn::Diag(h) => (vec![p], h.clone()),
        };
        let mut layout = self.model.net.param_layout();
        layout.push(ParamTensor {
            name: GGN.into(),
            shape,
            offset: p,
        });
        let mut flat = self.model.w.clone();
        flat.extend(values);
        let mut meta = self.model.metadata();
        meta.extend([
            (STRUCTURE.to_string(), self.structure().to_string()),
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
        let mut full = false;
        let (meta, flat) = weights::load_with_metadata(path, |meta| {
            let net = Model::architecture_in(meta).map_err(|e| bad(e.to_string()))?;
            let structure = meta
                .get(STRUCTURE)
                .ok_or_else(|| {
                    bad(format!(
                        "no '{STRUCTURE}' in its metadata: not a saved posterior"
                    ))
                })
                .and_then(|s| HessianStructure::from_str(s).map_err(|e| bad(e.to_string())))?;
            p = net.n_params();
            full = structure == HessianStructure::Full;
            let mut layout = net.param_layout();
            layout.push(ParamTensor {
                name: GGN.into(),
                shape: if full { vec![p, p] } else { vec![p] },
                offset: p,
            });
            Ok(layout)
        })?;
        let number = |key: &str| -> Result<f64> {
            meta.get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| bad(format!("'{key}' is missing or not a number")))
        };
        let (nll, sse, nk) = (number(NLL)?, number(SSE)?, number(NK)? as usize);
        let model =
            Model::from_metadata(&meta, flat[..p].to_vec()).map_err(|e| bad(e.to_string()))?;
        let h = &flat[p..];
        let ggn = if full {
            Ggn::Full(Mat::from_fn(p, p, |i, j| h[i * p + j]))
        } else {
            Ggn::Diag(h.to_vec())
        };
        Self::from_ggn(model, ggn, nll, sse, nk)
    }
}

impl Posterior for Laplace {
    fn model(&self) -> &Model {
        &self.model
    }

    fn structure(&self) -> HessianStructure {
        self.posterior.structure
    }

    /// At another σ see [`at_sigma`].
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64> {
        let m = &self.model;
        let delta = delta.unwrap_or(m.delta);
        crate::train::check_delta(delta)?;
        let (nll, c) = at_sigma(m, self.nll, self.sse, self.nk, sigma)?;
        Ok(laplace_evidence(
            -nll,
            delta,
            dot(&m.w, &m.w),
            m.w.len(),
            self.log_det_precision(delta, c)?,
        ))
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
        self.posterior.sample(n, &mut seeded(seed))
    }
}
