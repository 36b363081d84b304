//! The GGN's diagonal `diag(H)`: the posterior precision `diag(c h + d)`; its eigenvalues are h
//! itself, tensor by tensor.

use std::any::Any;
use std::borrow::Cow;

use super::{
    kron_shapes, unlike, GgnStructure, HessianStructure, NamedTensor, PriorDiagonal, Tensor, GGN,
};
use crate::curvature::kron::{diag_layer_variances, LayerVariance};
use crate::curvature::Precision;
use crate::error::Result;
use crate::nn::{Graph, Network};
use crate::posterior::weight_posterior::LaplaceGgn;

/// The GGN diagonal over the covered weights.
#[derive(Debug, Clone)]
pub struct Diag {
    h: Vec<f64>,
}

impl Diag {
    /// The structure of `diag(H)` (P).
    pub fn new(h: Vec<f64>) -> Self {
        Diag { h }
    }

    pub(super) fn from_tensors(t: &[Tensor]) -> Option<Self> {
        match t {
            [(s, v)] if s.len() == 1 => Some(Diag::new(v.clone())),
            _ => None,
        }
    }
}

impl GgnStructure for Diag {
    fn kind(&self) -> HessianStructure {
        HessianStructure::Diag
    }

    /// `Σ⁻¹ = diag(c h + d)`.
    fn posterior(&self, mean: Vec<f64>, prior: PriorDiagonal<'_>, c: f64) -> Result<LaplaceGgn> {
        let h: Cow<'_, [f64]> = if c == 1.0 {
            Cow::Borrowed(&self.h)
        } else {
            self.h.iter().map(|v| v * c).collect::<Vec<f64>>().into()
        };
        LaplaceGgn::from_ggn_diagonal_prior(mean, &h, prior.per_parameter)
    }

    fn eigenvalues(&self) -> Result<Cow<'_, [f64]>> {
        Ok(Cow::Borrowed(&self.h))
    }

    fn separable(&self) -> bool {
        true
    }

    fn scaled(&self, c: f64) -> Box<dyn GgnStructure> {
        Box::new(Diag::new(self.h.iter().map(|v| v * c).collect()))
    }

    fn fits(&self, net: &Graph) -> bool {
        self.h.len() == net.n_params()
    }

    fn tensors(&self) -> Vec<NamedTensor> {
        vec![(GGN.into(), vec![self.h.len()], self.h.clone())]
    }

    fn add(&mut self, other: &dyn GgnStructure, _: usize, _: usize) -> Result<()> {
        match other.as_any().downcast_ref::<Diag>() {
            Some(o) if o.h.len() == self.h.len() => {
                self.h.iter_mut().zip(&o.h).for_each(|(a, b)| *a += b);
                Ok(())
            }
            _ => Err(unlike(self, other)),
        }
    }

    /// The diagonal variances `1/(h + d)` layer by layer (no rotations).
    fn layer_variances<'p>(
        &self,
        posterior: &'p LaplaceGgn,
        net: &Graph,
    ) -> Option<Vec<LayerVariance<'p>>> {
        match posterior.precision() {
            Precision::Diag(d) => Some(diag_layer_variances(d, &kron_shapes(net))),
            _ => None,
        }
    }

    fn clone_box(&self) -> Box<dyn GgnStructure> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
