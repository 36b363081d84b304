//! Curvature at a point `w`: the network linearised there ([`Linearization`]: `J_i`, `r_i`,
//! `Λ_i`) and the GGN `Σ_i J_iᵀ Λ_i J_i` in the structures a posterior needs: full (also a
//! dense layer's, from its inputs), diagonal and KFAC streamed over the data, and its top
//! eigenpairs matrix-free; the precisions they give ([`Precision`]).

pub mod kron;
pub mod linearization;
pub mod lowrank;
pub mod precision;

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::likelihood::{curvature_root_rows, Likelihood};
use crate::linalg::par_chunk_sum;
use crate::nn::{Cotangents, Network, Reduce};
use crate::progress::Progress;

pub use kron::{kron_factors, Kron};
pub use linearization::Linearization;
pub use lowrank::{ggn_top_eigen, LowRank};
pub use precision::Precision;

/// The GGN diagonal `diag(Σ_i J_iᵀ Λ_i J_i)` over a data set of any size, streamed in
/// parallel chunks of [`GGN_CHUNK`] examples: one backward pass of the curvature-root rows
/// `R_i` (`R_iᵀR_i = Λ_i`) per chunk, summing squared parameter derivatives; no Jacobian is
/// formed. `progress` advances by the examples done.
pub fn ggn_diagonal(
    net: &dyn Network,
    lik: &dyn Likelihood,
    w: &[f64],
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    progress: Option<&dyn Progress>,
) -> Vec<f64> {
    let k = net.n_outputs();
    let (_, h) = par_chunk_sum(x.nrows(), GGN_CHUNK, w.len(), |s, m| {
        let yb = y.subrows(s, m);
        let (_, mut out) = net.forward_reduce(w, x.subrows(s, m), &mut |f| {
            vec![Cotangents {
                rows: curvature_root_rows(lik, f, yb),
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

/// Examples per chunk of [`ggn_diagonal`].
pub const GGN_CHUNK: usize = 64;

/// The GGN of one dense layer `f = W φ + b` on its inputs Φ (N×D) with outputs F (N×K):
/// `H = Σ_n Λ_n ⊗ φ̃_n φ̃_nᵀ` (`φ̃ = [φ, 1]`) in the layer's parameter order (W row-major, then
/// b), one product `Φ̃ᵀ diag(Λ_{n,kk′}) Φ̃` per pair of outputs: `K²D²N` operations instead of
/// the `NK·P²` of `JᵀΛJ` (a last-layer posterior's full GGN).
pub fn dense_layer_ggn(
    lik: &dyn Likelihood,
    phi: MatRef<'_, f64>,
    f: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
) -> Mat<f64> {
    let (n, d, k) = (phi.nrows(), phi.ncols(), f.ncols());
    let mut lam = vec![0.0; n * k * k];
    let (mut fr, mut yr) = (vec![0.0; k], vec![0.0; y.ncols()]);
    for (e, l) in lam.chunks_mut(k * k).enumerate() {
        (0..k).for_each(|a| fr[a] = f[(e, a)]);
        (0..y.ncols()).for_each(|a| yr[a] = y[(e, a)]);
        lik.curvature(&fr, &yr, l);
    }
    let tilde = Mat::from_fn(n, d + 1, |e, i| if i < d { phi[(e, i)] } else { 1.0 });
    let at = |kk: usize, i: usize| if i < d { kk * d + i } else { k * d + kk };
    let p = k * (d + 1);
    let mut h = Mat::<f64>::zeros(p, p);
    let pairs: Vec<(usize, usize)> = (0..k).flat_map(|a| (a..k).map(move |b| (a, b))).collect();
    let blocks: Vec<Mat<f64>> = pairs
        .par_iter()
        .map(|&(a, b)| {
            let scaled = Mat::from_fn(n, d + 1, |e, i| lam[e * k * k + a * k + b] * tilde[(e, i)]);
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
