//! KFAC: each layer's factors `A` (inputs) and `G` (outputs), `H_W ≈ G ⊗ A`, `H_b ≈ G`,
//! eigendecomposed once ([`crate::curvature::Kron`]); the posterior at any prior per tensor and
//! GGN scale follows without refitting, and its eigenvalues `λ_G ⊗ λ_A` fall in the tensors.

use std::any::Any;
use std::borrow::Cow;
use std::sync::OnceLock;

use super::{
    kron_shapes, row_major, same, square, unlike, GgnStructure, HessianStructure, NamedTensor,
    PriorDiagonal, Tensor, GGN,
};
use crate::curvature::kron::LayerVariance;
use crate::curvature::{Kron, Precision};
use crate::error::{Error, Result};
use crate::nn::{Graph, KronSums};
use crate::posterior::weight_posterior::LaplaceGgn;

/// The layers' Kronecker factors over the covered weights.
#[derive(Debug, Clone)]
pub struct KronFactors {
    factors: Vec<KronSums>,
    /// The factors' eigendecomposition (at δ = 1, c = 1), once; its failure as a message.
    eigen: OnceLock<std::result::Result<Kron, String>>,
}

impl KronFactors {
    /// The structure of the layers' factors (first layer first; `A` already a mean).
    pub fn new(factors: Vec<KronSums>) -> Self {
        KronFactors {
            factors,
            eigen: OnceLock::new(),
        }
    }

    /// The factors.
    pub fn factors(&self) -> &[KronSums] {
        &self.factors
    }

    /// The eigendecomposed factors.
    fn eigen(&self) -> Result<&Kron> {
        self.eigen
            .get_or_init(|| Kron::new(&self.factors, 1.0).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Numerical(e.clone()))
    }

    pub(super) fn from_tensors(t: &[Tensor]) -> Option<Self> {
        if !t.len().is_multiple_of(2) {
            return None;
        }
        t.chunks(2)
            .map(|p| {
                Some(KronSums {
                    a: square(&p[0])?,
                    g: square(&p[1])?,
                    positions: 1,
                    bias: true,
                    count: 1,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(KronFactors::new)
    }
}

impl GgnStructure for KronFactors {
    fn kind(&self) -> HessianStructure {
        HessianStructure::Kron
    }

    /// `c (G ⊗ A) + δ_g I` per tensor, in the factors' eigenbasis.
    fn posterior(&self, mean: Vec<f64>, prior: PriorDiagonal<'_>, c: f64) -> Result<LaplaceGgn> {
        LaplaceGgn::from_kron(mean, self.eigen()?.at(prior.per_tensor, c)?)
    }

    fn eigenvalues(&self) -> Result<Cow<'_, [f64]>> {
        Ok(self.eigen()?.ggn_eigenvalues().into())
    }

    fn separable(&self) -> bool {
        true
    }

    /// `c G` per layer (the eigendecomposition redone).
    fn scaled(&self, c: f64) -> Box<dyn GgnStructure> {
        Box::new(KronFactors::new(
            self.factors
                .iter()
                .map(|s| KronSums {
                    g: &s.g * faer::Scale(c),
                    ..s.clone()
                })
                .collect(),
        ))
    }

    fn fits(&self, net: &Graph) -> bool {
        let shapes = kron_shapes(net);
        self.factors.len() == shapes.len()
            && self
                .factors
                .iter()
                .zip(&shapes)
                .all(|(s, k)| s.a.nrows() == k.inputs && s.g.nrows() == k.outputs)
    }

    /// Which units have a bias, from the network (files store the factors alone).
    fn adopt(&mut self, net: &Graph) {
        let shapes = kron_shapes(net);
        if shapes.len() == self.factors.len() {
            self.factors
                .iter_mut()
                .zip(&shapes)
                .for_each(|(f, s)| f.bias = s.bias);
            self.eigen = OnceLock::new();
        }
    }

    fn tensors(&self) -> Vec<NamedTensor> {
        self.factors
            .iter()
            .enumerate()
            .flat_map(|(l, s)| {
                let (sa, va) = row_major(&s.a);
                let (sg, vg) = row_major(&s.g);
                [
                    (format!("{GGN}.{l}.a"), sa, va),
                    (format!("{GGN}.{l}.g"), sg, vg),
                ]
            })
            .collect()
    }

    /// `G += G′`; `A`, a mean over the examples, becomes `(n A + n′ A′)/(n + n′)`.
    fn add(&mut self, other: &dyn GgnStructure, n: usize, n_other: usize) -> Result<()> {
        let o = match other.as_any().downcast_ref::<KronFactors>() {
            Some(o)
                if o.factors.len() == self.factors.len()
                    && self
                        .factors
                        .iter()
                        .zip(&o.factors)
                        .all(|(a, b)| same(&a.a, &b.a) && same(&a.g, &b.g)) =>
            {
                o
            }
            _ => return Err(unlike(self, other)),
        };
        let total = (n + n_other).max(1) as f64;
        let (u, v) = (n as f64 / total, n_other as f64 / total);
        for (a, b) in self.factors.iter_mut().zip(&o.factors) {
            a.g += &b.g;
            a.a = faer::Scale(u) * &a.a + faer::Scale(v) * &b.a;
        }
        self.eigen = OnceLock::new();
        Ok(())
    }

    fn layer_variances<'p>(
        &self,
        posterior: &'p LaplaceGgn,
        _: &Graph,
    ) -> Option<Vec<LayerVariance<'p>>> {
        match posterior.precision() {
            Precision::Kron(k) => Some(k.layer_variances()),
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
