//! The GGN `H = Σ_i J_iᵀ Λ_i J_i` over the covered weights in each structure, one type per
//! structure behind [`GgnStructure`] (as laplace-torch has one class per structure): [`Full`]
//! (P×P), [`Diag`] (its diagonal), [`KronFactors`] (KFAC, per layer `G ⊗ A` and `G`) and
//! [`LowRank`] (its top eigenpairs). Each gives the posterior `N(θ*, (cH + D)⁻¹)` at a prior D
//! and GGN scale c, its eigenvalues for the evidence at any prior, and its tensors for files and
//! for adding chunks of data. A new structure is a file here, a word in [`HessianStructure`]
//! and a line in [`compute`] and [`from_tensors`].

mod diag;
mod full;
mod kron;
mod lowrank;

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use faer::{Mat, MatRef};

pub use diag::Diag;
pub use full::Full;
pub use kron::KronFactors;
pub use lowrank::LowRank;

use super::weight_posterior::LaplaceGgn;
use super::{HessianStructure, PriorDiagonal};
use crate::curvature::kron::LayerVariance;
use crate::curvature::Backend;
use crate::error::{Error, Result};
use crate::nn::{Graph, KronShape, Network};
use crate::progress::Progress;

/// A tensor as its shape and row-major values.
pub type Tensor = (Vec<usize>, Vec<f64>);

/// A named tensor of a structure, as files store it: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f64>);

/// The tensor holding H (full or diag), or the prefix of the Kronecker factors
/// (`posterior.ggn.{l}.a`, `.g`) and eigenpairs (`posterior.ggn.u`, `.s`).
pub(crate) const GGN: &str = "posterior.ggn";

/// The GGN of one structure over the covered weights, and what a posterior needs from it.
pub trait GgnStructure: fmt::Debug + Send + Sync {
    /// Its word.
    fn kind(&self) -> HessianStructure;

    /// The posterior `N(mean, (c H + diag(d))⁻¹)` at the prior `d` and GGN scale c.
    fn posterior(&self, mean: Vec<f64>, prior: PriorDiagonal<'_>, c: f64) -> Result<LaplaceGgn>;

    /// H's eigenvalues, one per covered weight (floored at 0 where they are used). Diag and
    /// KFAC give them tensor by tensor ([`GgnStructure::separable`]).
    fn eigenvalues(&self) -> Result<Cow<'_, [f64]>>;

    /// Whether H is block-diagonal over the parameter tensors, its eigenvalues given tensor by
    /// tensor: the evidence then separates over a prior per tensor.
    fn separable(&self) -> bool;

    /// Whether the structure can hold a prior precision per tensor (not low rank: `U diag(s)
    /// Uᵀ + δI` has one δ).
    fn layerwise(&self) -> bool {
        true
    }

    /// `c H`.
    fn scaled(&self, c: f64) -> Box<dyn GgnStructure>;

    /// Whether its shapes are those of this structure over the weights of `net`.
    fn fits(&self, net: &Graph) -> bool;

    /// Takes from the covered network what its tensors do not say (KFAC: which layers have a
    /// bias).
    fn adopt(&mut self, net: &Graph) {
        let _ = net;
    }

    /// Its tensors, named as [`super::Laplace::save`] stores them.
    fn tensors(&self) -> Vec<NamedTensor>;

    /// `H += H′` for another chunk of the data (`n`, `n_other` examples: KFAC's `A` is a mean
    /// over them).
    fn add(&mut self, other: &dyn GgnStructure, n: usize, n_other: usize) -> Result<()>;

    /// The layers' covariances in their eigenbasis, when the structure gives the predictive
    /// from per-layer Jacobian factors (diag, KFAC) rather than from J.
    fn layer_variances<'p>(
        &self,
        posterior: &'p LaplaceGgn,
        net: &Graph,
    ) -> Option<Vec<LayerVariance<'p>>> {
        let _ = (posterior, net);
        None
    }

    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn GgnStructure>;

    /// Itself, for [`GgnStructure::add`] to see the other's type.
    fn as_any(&self) -> &dyn Any;
}

impl Clone for Box<dyn GgnStructure> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// What a fit of each structure may use beyond the data.
#[derive(Clone, Copy)]
pub struct ComputeOptions<'a> {
    /// Told of the examples done (diag, kron and lowrank; lowrank makes four passes).
    pub progress: Option<&'a dyn Progress>,
    /// Eigenpairs of a low-rank GGN.
    pub rank: usize,
    /// Seed of its random start.
    pub seed: u64,
    /// The covered network is one dense layer (the last layer on its features): its full GGN
    /// comes from its inputs.
    pub dense_layer: bool,
}

/// Passes of subspace iteration after the first for a low-rank fit.
const POWER_ITERATIONS: usize = 2;

/// The GGN of `structure` over the data (X, Y) from `backend`.
pub fn compute(
    structure: HessianStructure,
    backend: Backend<'_>,
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    opts: ComputeOptions<'_>,
) -> Result<Box<dyn GgnStructure>> {
    Ok(match structure {
        HessianStructure::Full if opts.dense_layer => {
            Box::new(Full::new(backend.dense_layer_full(x, y)))
        }
        HessianStructure::Full => Box::new(Full::new(backend.full(x, y))),
        HessianStructure::Diag => Box::new(Diag::new(backend.diag(x, y, opts.progress))),
        HessianStructure::Kron => Box::new(KronFactors::new(backend.kron(x, y, opts.progress))),
        HessianStructure::LowRank => {
            let (u, s) =
                backend.top_eigen(x, y, opts.rank, POWER_ITERATIONS, opts.seed, opts.progress)?;
            Box::new(LowRank::new(u, s))
        }
    })
}

/// The GGN of `structure` from its tensors' shapes and values (as [`GgnStructure::tensors`]
/// gives them, without names).
pub fn from_tensors(structure: HessianStructure, t: Vec<Tensor>) -> Result<Box<dyn GgnStructure>> {
    let bad = || {
        Error::Invalid(format!(
            "tensors of shapes {:?} are not a {structure} GGN",
            t.iter().map(|(s, _)| s).collect::<Vec<_>>()
        ))
    };
    if !t
        .iter()
        .all(|(s, v)| s.iter().product::<usize>() == v.len())
    {
        return Err(bad());
    }
    let ggn: Option<Box<dyn GgnStructure>> = match structure {
        HessianStructure::Full => Full::from_tensors(&t).map(|g| Box::new(g) as _),
        HessianStructure::Diag => Diag::from_tensors(&t).map(|g| Box::new(g) as _),
        HessianStructure::Kron => KronFactors::from_tensors(&t).map(|g| Box::new(g) as _),
        HessianStructure::LowRank => LowRank::from_tensors(&t).map(|g| Box::new(g) as _),
    };
    ggn.ok_or_else(bad)
}

/// The shapes of the tensors a structure of `kind` over `net` holds, as [`from_tensors`] takes
/// them (a low-rank one has `rank` eigenpairs).
pub fn tensor_shapes(kind: HessianStructure, net: &Graph, rank: usize) -> Vec<Vec<usize>> {
    let q = net.n_params();
    match kind {
        HessianStructure::Full => vec![vec![q, q]],
        HessianStructure::Diag => vec![vec![q]],
        HessianStructure::Kron => kron_shapes(net)
            .iter()
            .flat_map(|s| [vec![s.inputs, s.inputs], vec![s.outputs, s.outputs]])
            .collect(),
        HessianStructure::LowRank => vec![vec![q, rank], vec![rank]],
    }
}

/// The names of a structure's tensors (`posterior.ggn`, or `posterior.ggn.{l}.a`/`.g`,
/// `posterior.ggn.u`/`.s`), in the order of [`tensor_shapes`].
pub(crate) fn tensor_names(kind: HessianStructure, count: usize) -> Vec<String> {
    match kind {
        HessianStructure::Full | HessianStructure::Diag => vec![GGN.to_string()],
        HessianStructure::Kron => (0..count / 2)
            .flat_map(|l| [format!("{GGN}.{l}.a"), format!("{GGN}.{l}.g")])
            .collect(),
        HessianStructure::LowRank => vec![format!("{GGN}.u"), format!("{GGN}.s")],
    }
}

/// The shapes of a network's KFAC units (a conv layer's inputs are its `c·k·k` patch
/// entries; a tensor without Kronecker form is `outputs × 1`).
pub(crate) fn kron_shapes(net: &Graph) -> Vec<KronShape> {
    net.kron_layout()
}

/// A row-major matrix `(shape, values)` as a matrix, when it has two axes.
fn matrix((s, v): &Tensor) -> Option<Mat<f64>> {
    match s[..] {
        [r, c] => Some(Mat::from_fn(r, c, |i, j| v[i * c + j])),
        _ => None,
    }
}

/// A square matrix of a tensor.
fn square(t: &Tensor) -> Option<Mat<f64>> {
    matrix(t).filter(|m| m.nrows() == m.ncols())
}

/// A matrix as `(shape, row-major values)`.
fn row_major(m: &Mat<f64>) -> (Vec<usize>, Vec<f64>) {
    let (r, c) = (m.nrows(), m.ncols());
    (
        vec![r, c],
        (0..r * c).map(|i| m[(i / c, i % c)]).collect::<Vec<f64>>(),
    )
}

/// The refusal of adding an unlike curvature.
fn unlike(a: &dyn GgnStructure, b: &dyn GgnStructure) -> Error {
    Error::Invalid(format!(
        "cannot add a {} curvature to a {} one of other shapes",
        b.kind(),
        a.kind()
    ))
}

/// Two matrices of the same shape.
fn same(a: &Mat<f64>, b: &Mat<f64>) -> bool {
    a.nrows() == b.nrows() && a.ncols() == b.ncols()
}
