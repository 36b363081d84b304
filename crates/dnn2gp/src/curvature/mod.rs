//! Curvature at a point `w`: the network linearised there ([`Linearization`]: `J_i`, `r_i`,
//! `Λ_i`) and the GGN `Σ_i J_iᵀ Λ_i J_i` in the structures a posterior needs (full, diagonal).

pub mod kron;
pub mod linearization;
pub mod lowrank;
pub mod precision;

use faer::MatRef;

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
