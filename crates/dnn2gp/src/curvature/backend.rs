//! The curvature "backend": a network at its weights under a likelihood, and the GGN
//! `H = Σ_i J_iᵀ Λ_i J_i` over data (X, Y) in every structure a posterior needs, with one
//! argument order for all: full (from the stacked Jacobians, or a dense layer's from its
//! inputs), its diagonal and the KFAC factors streamed over the data, the product `H M` and the
//! top eigenpairs matrix-free.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::error::Result;
use crate::likelihood::{curvature_root_rows, Likelihood};
use crate::linalg::par_chunk_sum;
use crate::nn::{Cotangents, KronSums, Network, Reduce};
use crate::progress::Progress;

use super::Linearization;

/// Examples per chunk of [`Backend::diag`].
pub const GGN_CHUNK: usize = 64;

/// A network `net` at weights `w` under `lik`.
#[derive(Clone, Copy)]
pub struct Backend<'a> {
    /// The network.
    pub net: &'a dyn Network,
    /// The likelihood (its `Λ`).
    pub lik: &'a dyn Likelihood,
    /// The weights.
    pub w: &'a [f64],
}

impl<'a> Backend<'a> {
    /// The backend of `net` at `w` under `lik`.
    pub fn new(net: &'a dyn Network, lik: &'a dyn Likelihood, w: &'a [f64]) -> Self {
        Backend { net, lik, w }
    }

    /// `H = Σ_i J_iᵀ Λ_i J_i` (P×P) from the stacked Jacobians (NK×P: callers check the
    /// memory).
    pub fn full(&self, x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Mat<f64> {
        Linearization::new(self.net, self.lik, x, y, self.w).ggn()
    }

    /// `H` of a network that is one dense layer `f = W φ + b`, from its inputs Φ (N×D):
    /// `H = Σ_n Λ_n ⊗ φ̃_n φ̃_nᵀ` (`φ̃ = [φ, 1]`) in the layer's parameter order (W row-major,
    /// then b), one product `Φ̃ᵀ diag(Λ_{n,kk′}) Φ̃` per pair of outputs: `K²D²N` operations
    /// instead of the `NK·P²` of `JᵀΛJ` (a last-layer posterior's full GGN).
    pub fn dense_layer_full(&self, phi: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Mat<f64> {
        let f = crate::nn::predict(self.net, self.w, phi);
        let (n, d, k) = (phi.nrows(), phi.ncols(), f.ncols());
        let mut lam = vec![0.0; n * k * k];
        let (mut fr, mut yr) = (vec![0.0; k], vec![0.0; y.ncols()]);
        for (e, l) in lam.chunks_mut(k * k).enumerate() {
            (0..k).for_each(|a| fr[a] = f[(e, a)]);
            (0..y.ncols()).for_each(|a| yr[a] = y[(e, a)]);
            self.lik.curvature(&fr, &yr, l);
        }
        let tilde = Mat::from_fn(n, d + 1, |e, i| if i < d { phi[(e, i)] } else { 1.0 });
        let at = |kk: usize, i: usize| if i < d { kk * d + i } else { k * d + kk };
        let p = k * (d + 1);
        let mut h = Mat::<f64>::zeros(p, p);
        let pairs: Vec<(usize, usize)> = (0..k).flat_map(|a| (a..k).map(move |b| (a, b))).collect();
        let blocks: Vec<Mat<f64>> = pairs
            .par_iter()
            .map(|&(a, b)| {
                let scaled =
                    Mat::from_fn(n, d + 1, |e, i| lam[e * k * k + a * k + b] * tilde[(e, i)]);
                crate::linalg::at_b(scaled.as_ref(), tilde.as_ref())
            })
            .collect();
        for (&(a, b), s) in pairs.iter().zip(&blocks) {
            for i in 0..=d {
                for j in 0..=d {
                    h[(at(a, i), at(b, j))] = s[(i, j)];
                    h[(at(b, j), at(a, i))] = s[(i, j)];
                }
            }
        }
        h
    }

    /// `diag(H)` over a data set of any size, streamed in parallel chunks of [`GGN_CHUNK`]
    /// examples: one backward pass of the curvature-root rows `R_i` (`R_iᵀR_i = Λ_i`) per
    /// chunk, summing squared parameter derivatives; no Jacobian is formed. `progress`
    /// advances by the examples done.
    pub fn diag(
        &self,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        progress: Option<&dyn Progress>,
    ) -> Vec<f64> {
        let k = self.net.n_outputs();
        let (_, h) = par_chunk_sum(x.nrows(), GGN_CHUNK, self.w.len(), |s, m| {
            let yb = y.subrows(s, m);
            let (_, mut out) = self.net.forward_reduce(self.w, x.subrows(s, m), &mut |f| {
                vec![Cotangents {
                    rows: curvature_root_rows(self.lik, f, yb),
                    rows_per_example: k,
                    reduce: Reduce::SumSq,
                }]
            });
            if let Some(pb) = progress {
                pb.advance(m as u64);
            }
            (0.0, out.pop().expect("one request"))
        });
        h
    }

    /// The layers' KFAC factors ([`super::kron`]), streamed over the data.
    pub fn kron(
        &self,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        progress: Option<&dyn Progress>,
    ) -> Vec<KronSums> {
        super::kron::kron_factors(self.net, self.lik, self.w, x, y, progress)
    }

    /// `H M` for a block M (P × l), streamed over chunks of examples.
    pub fn times(&self, x: MatRef<'_, f64>, y: MatRef<'_, f64>, m: MatRef<'_, f64>) -> Mat<f64> {
        super::lowrank::ggn_times(self.net, self.lik, self.w, x, y, m)
    }

    /// The top `rank` eigenpairs `(U, s)` of H by randomized subspace iteration
    /// ([`super::lowrank`]) with `power` extra passes from `seed`.
    pub fn top_eigen(
        &self,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        rank: usize,
        power: usize,
        seed: u64,
        progress: Option<&dyn Progress>,
    ) -> Result<(Mat<f64>, Vec<f64>)> {
        super::lowrank::ggn_top_eigen(
            self.net, self.lik, self.w, x, y, rank, power, seed, progress,
        )
    }
}
