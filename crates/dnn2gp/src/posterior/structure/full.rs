//! The full GGN `H` (P×P): the posterior precision `c H + D` factorised by Cholesky (or its
//! eigen form), and H's eigenvalues computed once for the evidence at any scalar prior.

use std::any::Any;
use std::borrow::Cow;
use std::sync::OnceLock;

use faer::{Mat, Side};

use super::{
    same, square, unlike, GgnStructure, HessianStructure, NamedTensor, PriorDiagonal, Tensor, GGN,
};
use crate::error::{Error, Result};
use crate::nn::{Graph, Network};
use crate::posterior::weight_posterior::LaplaceGgn;

/// The full GGN over the covered weights.
#[derive(Debug, Clone)]
pub struct Full {
    h: Mat<f64>,
    /// H's eigenvalues (`None` when the eigendecomposition did not converge), once.
    eigenvalues: OnceLock<Option<Vec<f64>>>,
}

impl Full {
    /// The structure of `H` (P×P, symmetric).
    pub fn new(h: Mat<f64>) -> Self {
        Full {
            h,
            eigenvalues: OnceLock::new(),
        }
    }

    /// H.
    pub fn matrix(&self) -> &Mat<f64> {
        &self.h
    }

    pub(super) fn from_tensors(t: &[Tensor]) -> Option<Self> {
        match t {
            [h] => square(h).map(Full::new),
            _ => None,
        }
    }
}

impl GgnStructure for Full {
    fn kind(&self) -> HessianStructure {
        HessianStructure::Full
    }

    /// `A = c H + diag(d)` factorised ([`crate::posterior::weight_posterior::factor_precision`]).
    fn posterior(&self, mean: Vec<f64>, prior: PriorDiagonal<'_>, c: f64) -> Result<LaplaceGgn> {
        let h = if c == 1.0 {
            self.h.clone()
        } else {
            &self.h * faer::Scale(c)
        };
        LaplaceGgn::from_ggn_prior(mean, h, prior.per_parameter)
    }

    fn eigenvalues(&self) -> Result<Cow<'_, [f64]>> {
        self.eigenvalues
            .get_or_init(|| self.h.as_ref().self_adjoint_eigenvalues(Side::Lower).ok())
            .as_deref()
            .map(Into::into)
            .ok_or_else(|| {
                Error::Numerical(
                    "the eigendecomposition of the GGN did not converge: the evidence at \
                     another δ or σ is not available"
                        .into(),
                )
            })
    }

    fn separable(&self) -> bool {
        false
    }

    /// `c H`, its eigenvalues (when computed) `c λ` without a new eigendecomposition.
    fn scaled(&self, c: f64) -> Box<dyn GgnStructure> {
        let scaled = Full::new(&self.h * faer::Scale(c));
        if let Some(l) = self.eigenvalues.get() {
            let _ = (scaled.eigenvalues).set(l.as_ref().map(|l| l.iter().map(|v| v * c).collect()));
        }
        Box::new(scaled)
    }

    fn fits(&self, net: &Graph) -> bool {
        let q = net.n_params();
        self.h.nrows() == q && self.h.ncols() == q
    }

    fn tensors(&self) -> Vec<NamedTensor> {
        let (shape, values) = super::row_major(&self.h);
        vec![(GGN.into(), shape, values)]
    }

    fn add(&mut self, other: &dyn GgnStructure, _: usize, _: usize) -> Result<()> {
        match other.as_any().downcast_ref::<Full>() {
            Some(o) if same(&self.h, &o.h) => {
                self.h += &o.h;
                self.eigenvalues = OnceLock::new();
                Ok(())
            }
            _ => Err(unlike(self, other)),
        }
    }

    fn clone_box(&self) -> Box<dyn GgnStructure> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
