//! # dnn2gp
//!
//! Turns a trained deep network into a Gaussian process (Khan, Immer, Abedi, Korzepa,
//! "Approximate Inference Turns Deep Networks into Gaussian Processes", NeurIPS 2019).
//!
//! The modules follow the pipeline, each importing only those before it: the utilities
//! [`error`], [`linalg`], [`math`], [`progress`], [`io`], [`rng`] → [`data`] → [`nn`]
//! (`Sequential`, per-example Jacobians, `JacobianFactors`) → [`likelihood`] (residual `r`,
//! curvature `Λ`) → [`curvature`] (the linearisation, the GGN, the precision of a Gaussian) →
//! [`train`] (MAP by Adam, L-BFGS polish, VOGN; the model file) → [`posterior`] (the
//! [`posterior::Posterior`] interface; Laplace-GGN) → [`gp`] (kernel `δ⁻¹ J Jᵀ`,
//! pseudo-targets, predictive, marginal likelihood) → [`select`] (hyperparameter sweeps) →
//! [`experiments`] (the paper's runs as result structs). The `dnn2gp` command renders them.
//!
//! Where a change goes: a new posterior structure is a file in `posterior/structure/` behind
//! [`posterior::GgnStructure`] and a word in [`posterior::HessianStructure`]; a new curvature
//! computation a method of [`curvature::Backend`]; a new option word a line in its enum, made
//! by [`words!`] (the command line and Python parse it from there); a new kind of failure a
//! variant of [`Error`] (the command line exits 2 on it, Python maps it to an exception).
//!
//! Conventions: a network's parameters are one flat `f64` vector in PyTorch order (per layer
//! the weight `[out, in]` row-major, then the bias). Per-example arrays are `faer` matrices with
//! one row per example; a Jacobian stacks `J(x_n) ∈ R^{K×P}` so that row `n·K + k` is
//! `∂f_k(x_n)/∂w`. The loss is a sum over examples: `L(w) = Σ_i ℓ(y_i, f_w(x_i)) + δ/2 ‖w‖²`.

#![warn(missing_docs)]

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod curvature;
pub mod data;
pub mod error;
pub mod experiments;
pub mod gp;
pub mod io;
pub mod likelihood;
pub mod linalg;
pub mod math;
pub mod nn;
pub mod posterior;
pub mod progress;
pub mod rng;
pub mod select;
pub mod train;
pub mod words;

pub use error::{Error, Result, Warning};
pub use progress::Progress;
