//! The GGN's top eigenpairs `H ≈ U diag(s) Uᵀ` (found matrix-free): the posterior precision
//! `c U diag(s) Uᵀ + δI` with one δ.

use std::any::Any;
use std::borrow::Cow;

use faer::Mat;

use super::{
    matrix, row_major, GgnStructure, HessianStructure, NamedTensor, PriorDiagonal, Tensor, GGN,
};
use crate::curvature::LowRank as LowRankPrecision;
use crate::error::{Error, Result};
use crate::nn::{Graph, Network};
use crate::posterior::weight_posterior::LaplaceGgn;

/// The top eigenpairs of the GGN over the covered weights.
#[derive(Debug, Clone)]
pub struct LowRank {
    u: Mat<f64>,
    s: Vec<f64>,
}

impl LowRank {
    /// The structure of eigenvectors U (P × k) and eigenvalues s (k, largest first).
    pub fn new(u: Mat<f64>, s: Vec<f64>) -> Self {
        LowRank { u, s }
    }

    /// The precision at δ and scale c.
    fn precision(&self, delta: f64, c: f64) -> LowRankPrecision {
        LowRankPrecision {
            u: self.u.clone(),
            s: self.s.clone(),
            delta,
            scale: c,
        }
    }

    pub(super) fn from_tensors(t: &[Tensor]) -> Option<Self> {
        match t {
            [u, (s, v)] if s.len() == 1 => matrix(u)
                .filter(|u| u.ncols() == v.len())
                .map(|u| LowRank::new(u, v.clone())),
            _ => None,
        }
    }
}

impl GgnStructure for LowRank {
    fn kind(&self) -> HessianStructure {
        HessianStructure::LowRank
    }

    /// `c U diag(s) Uᵀ + δI` (one δ: the prior's first).
    fn posterior(&self, mean: Vec<f64>, prior: PriorDiagonal<'_>, c: f64) -> Result<LaplaceGgn> {
        LaplaceGgn::from_low_rank(mean, self.precision(prior.per_tensor[0], c))
    }

    /// s, padded with zeros to P.
    fn eigenvalues(&self) -> Result<Cow<'_, [f64]>> {
        Ok(self.precision(1.0, 1.0).ggn_eigenvalues().into())
    }

    fn separable(&self) -> bool {
        false
    }

    fn layerwise(&self) -> bool {
        false
    }

    fn scaled(&self, c: f64) -> Box<dyn GgnStructure> {
        Box::new(LowRank::new(
            self.u.clone(),
            self.s.iter().map(|v| v * c).collect(),
        ))
    }

    fn fits(&self, net: &Graph) -> bool {
        self.u.nrows() == net.n_params()
    }

    fn tensors(&self) -> Vec<NamedTensor> {
        let (su, vu) = row_major(&self.u);
        vec![
            (format!("{GGN}.u"), su, vu),
            (format!("{GGN}.s"), vec![self.s.len()], self.s.clone()),
        ]
    }

    fn add(&mut self, _: &dyn GgnStructure, _: usize, _: usize) -> Result<()> {
        Err(Error::Invalid(
            "a lowrank GGN is not a sum over chunks of the data (its eigenvectors are of the \
             whole sum); use full, diag or kron"
                .into(),
        ))
    }

    fn clone_box(&self) -> Box<dyn GgnStructure> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
