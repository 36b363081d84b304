//! Posteriors over the weights: the Laplace-GGN Gaussian `N(θ*, Σ)`,
//!
//! `Σ⁻¹ = c H + D`, `H = Σ_i J_iᵀ Λ_i J_i` at the MAP `θ*` over the covered weights (in the
//! structure's approximation), D the prior precision (δI, or δ_g per tensor), c the GGN's
//! scale at another Gaussian noise and temperature (`c = σ_fit²/(σ²T)`).
//!
//! The layout, one concern per file: [`base`] the interface in laplace-torch's shape
//! ([`Posterior`]); [`link`] the predictive and the links; [`structure`] one type per
//! structure (full, diag, kron, lowrank) behind [`GgnStructure`]; [`curvature`] what a fit sums
//! over its data ([`Curvature`]) and the memory it needs; [`laplace`] the posterior itself
//! ([`Laplace`]); [`evidence`] the evidence and its gradient; [`prior`] the prior precision and
//! its search; [`noise`] the noise search; [`io`] the file; [`last_layer`] what a posterior
//! covers (all weights, the last layer, a subnetwork); [`weight_posterior`] the factorised Gaussian ([`LaplaceGgn`]) that Laplace and the
//! GP's weight space hold. The words and the value every part shares ([`Subset`],
//! [`HessianStructure`], [`PriorStructure`], [`PredType`], [`PriorPrecision`],
//! [`PriorDiagonal`]) are defined here, so no file
//! imports a sibling that imports it back. A new structure is a file in `structure/` and a word
//! in [`HessianStructure`]; a new predictive link a word in [`LinkApprox`].
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

pub mod base;
pub mod curvature;
pub mod evidence;
pub mod io;
pub mod laplace;
pub mod last_layer;
pub mod link;
pub mod noise;
pub mod prior;
pub mod structure;
pub mod weight_posterior;

pub use base::Posterior;
pub use curvature::{Curvature, DataTerms, FitOptions};
pub use laplace::Laplace;
pub use link::{Link, LinkApprox, Predictive};
pub use noise::NoiseFit;
pub use prior::{LayerwisePriorFit, PriorFit};
pub use structure::GgnStructure;
pub use weight_posterior::LaplaceGgn;

crate::words! {
    /// Which weights the posterior covers, with laplace-torch's names (`all`, `last_layer`).
    pub enum Subset("subset of weights") {
        /// Every weight.
        All = ["all"],
        /// The last (dense) layer's weights and bias, the rest held at `w*`: the GP's kernel is
        /// then `φ(x)ᵀ Σ φ(x′)` over the features φ of the layers below.
        LastLayer = ["last_layer", "last-layer", "lastlayer"],
        /// Weights chosen by their index in the parameter vector (laplace-torch's
        /// `subnetwork_indices`), the rest held at `w*`: [`Laplace::fit_subnetwork`].
        Subnetwork = ["subnetwork"],
    }
}

impl Subset {
    /// The covered weights in words: "all weights", "the last layer".
    pub fn weights(self) -> &'static str {
        match self {
            Subset::All => "all weights",
            Subset::LastLayer => "the last layer",
            Subset::Subnetwork => "the chosen weights",
        }
    }
}

crate::words! {
    /// Structure of the posterior precision, with laplace-torch's names.
    pub enum HessianStructure("hessian structure") {
        /// The full P×P GGN.
        Full = ["full"],
        /// Its diagonal.
        Diag = ["diag", "diagonal"],
        /// KFAC: per layer `G ⊗ A` (weights) and `G` (biases), eigendecomposed.
        Kron = ["kron", "kfac"],
        /// The top eigenpairs of the GGN (matrix-free), the rest of the spectrum 0.
        LowRank = ["lowrank", "low-rank", "low_rank"],
    }
}

crate::words! {
    /// laplace-torch's `pred_type`: how the predictive treats the network.
    pub enum PredType("predictive type") {
        /// The linearised network (the GLM predictive): `f ~ N(f_{θ*}(x), J Σ Jᵀ)`.
        Glm = ["glm"],
        /// The network itself at weights drawn from the posterior, `f_θ(x)`, `θ ~ N(θ*, Σ)`.
        Nn = ["nn"],
    }
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

/// A prior precision spread over the covered weights: one value per parameter and one per
/// parameter tensor (each layer's weight, then its bias).
#[derive(Debug, Clone, Copy)]
pub struct PriorDiagonal<'a> {
    /// δ per parameter (P).
    pub per_parameter: &'a [f64],
    /// δ per parameter tensor.
    pub per_tensor: &'a [f64],
}
