//! The top eigenpairs of the GGN `H = Σ_i J_iᵀ Λ_i J_i`, matrix-free: randomized subspace
//! iteration (Halko, Martinsson & Tropp 2011) on products `H M` for blocks of vectors M, each
//! streamed over the data a chunk of examples at a time (`J_c M`, then `Λ`, then `J_cᵀ`),
//! never forming the P×P matrix; and the precision `A = c U diag(s) Uᵀ + δ I` it gives:
//!
//! `Σ = δ⁻¹ (I − U diag(cs/(cs + δ)) Uᵀ)`, `log|A| = Σ_i log(c s_i + δ) + (P − k) log δ`.

use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};
use crate::likelihood::Likelihood;
use crate::linalg::{a_b, at_b, par_chunk_reduce};
use crate::nn::Network;
use crate::progress::Progress;
use crate::rng::{normals, seeded, Rng};

/// Examples per chunk of a GGN-matrix product.
const CHUNK: usize = 64;
/// Chunks whose partial products are computed at once (summed in order after).
const GROUP: usize = 8;

/// `H M = Σ_i J_iᵀ Λ_i J_i M` for a block M (P × l), streamed over chunks of examples.
pub(crate) fn ggn_times(
    net: &dyn Network,
    lik: &dyn Likelihood,
    w: &[f64],
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    m: MatRef<'_, f64>,
) -> Mat<f64> {
    let (n, k) = (x.nrows(), net.n_outputs());
    let part = |s: usize, c: usize| {
        let (f, j) = net.forward_jacobian(w, x.subrows(s, c));
        let mut jm = a_b(j.as_ref(), m);
        // Λ_i (J_i M) example by example.
        let (mut fr, mut yr, mut lam) = (vec![0.0; k], vec![0.0; y.ncols()], vec![0.0; k * k]);
        for e in 0..c {
            (0..k).for_each(|a| fr[a] = f[(e, a)]);
            (0..y.ncols()).for_each(|a| yr[a] = y[(s + e, a)]);
            lik.curvature(&fr, &yr, &mut lam);
            for col in 0..jm.ncols() {
                let v: Vec<f64> = (0..k).map(|a| jm[(e * k + a, col)]).collect();
                for a in 0..k {
                    jm[(e * k + a, col)] = (0..k).map(|b| lam[a * k + b] * v[b]).sum();
                }
            }
        }
        at_b(j.as_ref(), jm.as_ref())
    };
    par_chunk_reduce(n, CHUNK, GROUP, part, |t: &mut Mat<f64>, p| *t += &p)
        .unwrap_or_else(|| Mat::zeros(m.nrows(), m.ncols()))
}

/// An orthonormal basis of the columns of `y` (thin QR).
fn orthonormal(y: &Mat<f64>) -> Mat<f64> {
    y.as_ref().qr().compute_thin_Q()
}

/// The top `rank` eigenpairs `(U, s)` of the GGN by randomized subspace iteration with
/// `rank + 10` vectors from `seed` and `power` extra passes; `progress` advances by the
/// examples of each pass. With `rank ≥ P` the subspace is the whole space and the
/// decomposition is exact up to rounding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ggn_top_eigen(
    net: &dyn Network,
    lik: &dyn Likelihood,
    w: &[f64],
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    rank: usize,
    power: usize,
    seed: u64,
    progress: Option<&dyn Progress>,
) -> Result<(Mat<f64>, Vec<f64>)> {
    let p = w.len();
    if rank == 0 {
        return Err(Error::Invalid("a low-rank posterior needs rank ≥ 1".into()));
    }
    let l = (rank + 10).min(p);
    let mut rng: Rng = seeded(seed);
    let z = normals(&mut rng, p * l);
    let omega = Mat::from_fn(p, l, |i, j| z[i * l + j]);
    let pass = |m: &Mat<f64>| {
        let out = ggn_times(net, lik, w, x, y, m.as_ref());
        if let Some(pb) = progress {
            pb.advance(x.nrows() as u64);
        }
        out
    };
    let mut q = orthonormal(&pass(&omega));
    for _ in 0..power {
        q = orthonormal(&pass(&q));
    }
    let hq = pass(&q);
    let b = at_b(q.as_ref(), hq.as_ref());
    let b = Mat::from_fn(l, l, |i, j| 0.5 * (b[(i, j)] + b[(j, i)]));
    let evd = b.as_ref().self_adjoint_eigen(Side::Lower).map_err(|_| {
        Error::Numerical("the projected GGN's eigendecomposition did not converge".into())
    })?;
    let (v, s) = (evd.U(), evd.S());
    // Eigenvalues ascend: keep the last `rank`, largest first.
    let keep = rank.min(l);
    let order: Vec<usize> = (0..l).rev().take(keep).collect();
    let u = a_b(q.as_ref(), v);
    Ok((
        Mat::from_fn(p, keep, |i, j| u[(i, order[j])]),
        order.iter().map(|&j| s[j].max(0.0)).collect(),
    ))
}

/// The low-rank precision `A = c U diag(s) Uᵀ + δ I` (U orthonormal, P × k).
#[derive(Debug, Clone)]
pub struct LowRank {
    /// The eigenvectors U (P × k).
    pub u: Mat<f64>,
    /// The eigenvalues s (k), largest first.
    pub s: Vec<f64>,
    /// Prior precision δ.
    pub delta: f64,
    /// Scale c of the GGN.
    pub scale: f64,
}

impl LowRank {
    /// The dimension P.
    pub fn dim(&self) -> usize {
        self.u.nrows()
    }

    /// `cs/(cs + δ)` per eigenpair.
    fn shrink(&self) -> Vec<f64> {
        self.s
            .iter()
            .map(|s| self.scale * s / (self.scale * s + self.delta))
            .collect()
    }

    /// The eigenvalues of H, padded with zeros to P.
    pub fn ggn_eigenvalues(&self) -> Vec<f64> {
        let mut l = self.s.clone();
        l.resize(self.dim(), 0.0);
        l
    }

    /// `log|A| = Σ log(c s + δ) + (P − k) log δ`.
    pub fn log_det(&self) -> f64 {
        self.s
            .iter()
            .map(|s| (self.scale * s + self.delta).ln())
            .sum::<f64>()
            + (self.dim() - self.s.len()) as f64 * self.delta.ln()
    }

    /// `Σ v = δ⁻¹ (v − U diag(cs/(cs+δ)) Uᵀ v)`.
    pub fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        let vm = MatRef::from_column_major_slice(v, v.len(), 1);
        let mut c = at_b(self.u.as_ref(), vm);
        for (i, d) in self.shrink().into_iter().enumerate() {
            c[(i, 0)] *= d;
        }
        let uc = a_b(self.u.as_ref(), c.as_ref());
        (0..v.len())
            .map(|i| (v[i] - uc[(i, 0)]) / self.delta)
            .collect()
    }

    /// A draw `μ + Σ^{½} z`: `Σ^{½} = δ^{-½} (I + U diag(√(δ/(cs+δ)) − 1) Uᵀ)`.
    pub fn sample(&self, mu: &[f64], rng: &mut Rng) -> Vec<f64> {
        let z = normals(rng, self.dim());
        let zm = MatRef::from_column_major_slice(&z, z.len(), 1);
        let mut c = at_b(self.u.as_ref(), zm);
        for (i, s) in self.s.iter().enumerate() {
            c[(i, 0)] *= (self.delta / (self.scale * s + self.delta)).sqrt() - 1.0;
        }
        let uc = a_b(self.u.as_ref(), c.as_ref());
        let r = self.delta.sqrt();
        (0..z.len())
            .map(|i| mu[i] + (z[i] + uc[(i, 0)]) / r)
            .collect()
    }

    /// `J_a Σ J_bᵀ = δ⁻¹ (J_a J_bᵀ − (J_a U) diag(cs/(cs+δ)) (J_b U)ᵀ)`.
    pub fn kernel(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        let d = self.shrink();
        let (au, bu) = (a_b(ja, self.u.as_ref()), a_b(jb, self.u.as_ref()));
        let scaled = Mat::from_fn(au.nrows(), au.ncols(), |i, j| au[(i, j)] * d[j]);
        let mut k = crate::linalg::a_bt(ja, jb);
        k -= crate::linalg::a_bt(scaled.as_ref(), bu.as_ref());
        k * faer::Scale(1.0 / self.delta)
    }

    /// The variances `diag Σ = δ⁻¹ (1 − Σ_j U_ij² cs_j/(cs_j+δ))`.
    pub fn variances(&self) -> Vec<f64> {
        let d = self.shrink();
        (0..self.dim())
            .map(|i| {
                (1.0 - (0..d.len())
                    .map(|j| self.u[(i, j)].powi(2) * d[j])
                    .sum::<f64>())
                    / self.delta
            })
            .collect()
    }

    /// `A` as a dense P×P matrix; for small networks and tests.
    pub fn dense(&self) -> Mat<f64> {
        let p = self.dim();
        let us = Mat::from_fn(p, self.s.len(), |i, j| {
            self.u[(i, j)] * self.scale * self.s[j]
        });
        let mut a = crate::linalg::a_bt(us.as_ref(), self.u.as_ref());
        for i in 0..p {
            a[(i, i)] += self.delta;
        }
        a
    }

    /// `Σ` as a dense P×P matrix; for small networks and tests.
    pub fn covariance(&self) -> Mat<f64> {
        let p = self.dim();
        self.kernel(
            Mat::<f64>::identity(p, p).as_ref(),
            Mat::<f64>::identity(p, p).as_ref(),
        )
    }
}
