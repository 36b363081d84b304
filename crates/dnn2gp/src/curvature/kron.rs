//! KFAC: the GGN `Σ_i J_iᵀ Λ_i J_i` approximated per layer by Kronecker products, as
//! laplace-torch (curvlinops, type-2, KFAC-expand, weight and bias apart) computes it:
//!
//! `H_W ≈ G ⊗ A`, `H_b ≈ G`, `G = Σ_{i,c,t} g_{ict} g_{ictᵀ}`, `A = Σ_{i,t} a_{it} a_{itᵀ} / (N T)`
//!
//! with `g_{ict}` the column c of `Λ_i^{½}` backpropagated to the layer's outputs at position t
//! (T positions for a conv layer, 1 for a dense one) and `a_{it}` its inputs (patches). Each
//! factor is eigendecomposed once, `G = Q_G diag(λ_G) Q_Gᵀ`, so that the precision
//! `A = c·(G ⊗ A) + δI` at any prior precision δ and GGN scale c is
//! `(Q_G ⊗ Q_A) diag(c λ_G ⊗ λ_A + δ) (Q_G ⊗ Q_A)ᵀ`: log-determinant, `Σ v`, samples and
//! `J Σ Jᵀ` follow without refitting.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::likelihood::{curvature_root_rows, Likelihood};
use crate::linalg::par_chunk_reduce;
use crate::nn::{Factor, JacobianFactors, KronSums, Network};
use crate::progress::Progress;
use crate::rng::{normals, Rng};

/// Examples per parallel chunk of [`kron_factors`]: small enough that a chunk's backward
/// matrices (K rows per example) stay below the allocator's mmap threshold and are reused.
const CHUNK: usize = 64;

/// The layers' [`KronSums`] of the GGN over a data set of any size, streamed in parallel
/// chunks (summed in a fixed order: the same bytes on any thread count), with each `A`
/// divided by `N T` (laplace-torch's scaling; a tensor without Kronecker form gets `A = 1`). `progress` advances by the examples done.
pub(crate) fn kron_factors(
    net: &dyn Network,
    lik: &dyn Likelihood,
    w: &[f64],
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    progress: Option<&dyn Progress>,
) -> Vec<KronSums> {
    let (n, k) = (x.nrows(), net.n_outputs());
    let sums = |s: usize, m: usize| {
        let yb = y.subrows(s, m);
        let out = net.kron_sums(w, x.subrows(s, m), &|f| curvature_root_rows(lik, f, yb), k);
        if let Some(pb) = progress {
            pb.advance(m as u64);
        }
        out
    };
    let total = par_chunk_reduce(n, CHUNK, 64, sums, |t: &mut Vec<KronSums>, p| {
        t.iter_mut().zip(&p).for_each(|(t, p)| t.add(p))
    });
    let mut total = total.unwrap_or_default();
    for s in &mut total {
        s.a *= faer::Scale(1.0 / s.count.max(1) as f64);
    }
    total
}

/// One Kronecker block of the precision: `c (G ⊗ A) + δ I` over `outputs × inputs` parameters
/// at `offset` (row-major, as PyTorch stores a weight), eigendecomposed, with its own δ (a
/// layerwise prior). A bias block has `A = [1]`.
#[derive(Debug, Clone)]
struct Block {
    offset: usize,
    delta: f64,
    qg: Mat<f64>,
    lg: Vec<f64>,
    qa: Mat<f64>,
    la: Vec<f64>,
}

impl Block {
    fn len(&self) -> usize {
        self.lg.len() * self.la.len()
    }

    /// `c λ_G,i λ_A,j + δ`, row-major.
    fn eigenvalues(&self, c: f64) -> impl Iterator<Item = f64> + '_ {
        self.lg
            .iter()
            .flat_map(move |g| self.la.iter().map(move |a| c * g * a + self.delta))
    }

    /// `Q_Gᵀ M Q_A` for the block's slice `v` of a vector, as a matrix (outputs × inputs).
    fn rotate(&self, v: &[f64]) -> Mat<f64> {
        let m = MatRef::from_row_major_slice(v, self.lg.len(), self.la.len());
        let t = crate::linalg::at_b(self.qg.as_ref(), m);
        crate::linalg::a_b(t.as_ref(), self.qa.as_ref())
    }

    /// `Q_G Z Q_Aᵀ`, row-major into `out`.
    fn rotate_back(&self, z: &Mat<f64>, out: &mut [f64]) {
        let t = crate::linalg::a_b(self.qg.as_ref(), z.as_ref());
        let m = crate::linalg::a_bt(t.as_ref(), self.qa.as_ref());
        let cols = self.la.len();
        out.iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = m[(i / cols, i % cols)]);
    }
}

/// The eigendecomposition `Q diag(λ) Qᵀ` of a symmetric factor (a sum of outer products, so
/// positive semi-definite), eigenvalues floored at 0; also returns how many were negative
/// beyond the eigensolver's rounding `64 n ε max|λ|` (the ones below it are floored silently:
/// they are zeros of a rank-deficient factor).
fn eigen(m: &Mat<f64>, what: &str) -> Result<(Mat<f64>, Vec<f64>, usize)> {
    let evd = m
        .as_ref()
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::Numerical(format!("{what}: eigendecomposition did not converge")))?;
    let s = evd.S();
    let l: Vec<f64> = (0..m.nrows()).map(|i| s[i]).collect();
    let top = l.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
    let rounding = 64.0 * l.len() as f64 * f64::EPSILON * top;
    let negative = l.iter().filter(|v| **v < -rounding).count();
    Ok((
        evd.U().to_owned(),
        l.into_iter().map(|v| v.max(0.0)).collect(),
        negative,
    ))
}

/// The KFAC precision `c (G_l ⊗ A_l) + δ_l I` (weights) and `c G_l + δ_l′ I` (biases), layer
/// by layer, in the eigenbasis of its factors; one δ for all blocks, or one per block (per
/// parameter tensor).
#[derive(Debug, Clone)]
pub struct Kron {
    blocks: Vec<Block>,
    /// Per unit (layer, or tensor without Kronecker form): whether a bias block follows.
    units: Vec<bool>,
    dim: usize,
    /// Scale c of the GGN (`σ²/σ′²` at another Gaussian noise; 1 as fitted).
    pub scale: f64,
    floored: usize,
}

impl Kron {
    /// From the layers' factors (first layer first; parameters in the network's order: each
    /// layer's weight, then its bias), at prior precision δ.
    pub fn new(factors: &[KronSums], delta: f64) -> Result<Self> {
        let mut blocks = Vec::with_capacity(2 * factors.len());
        let mut units = Vec::with_capacity(factors.len());
        let (mut offset, mut floored) = (0, 0);
        for (l, f) in factors.iter().enumerate() {
            let (qg, lg, ng) = eigen(&f.g, &format!("the KFAC factor G of layer {l}"))?;
            let (qa, la, na) = eigen(&f.a, &format!("the KFAC factor A of layer {l}"))?;
            floored += ng + na;
            let (o, i) = (lg.len(), la.len());
            let bias = f.bias.then(|| Block {
                offset: offset + o * i,
                delta,
                qg: qg.clone(),
                lg: lg.clone(),
                qa: Mat::identity(1, 1),
                la: vec![1.0],
            });
            blocks.push(Block {
                offset,
                delta,
                qg,
                lg,
                qa,
                la,
            });
            offset += o * i;
            if let Some(b) = bias {
                offset += b.len();
                blocks.push(b);
            }
            units.push(f.bias);
        }
        Ok(Kron {
            blocks,
            units,
            dim: offset,
            scale: 1.0,
            floored,
        })
    }

    /// The same factors at another δ per block (one per parameter tensor: each layer's weight,
    /// then its bias if it has one) and GGN scale c.
    pub fn at(&self, deltas: &[f64], scale: f64) -> Result<Self> {
        if deltas.len() != self.blocks.len() {
            return Err(Error::Invalid(format!(
                "{} prior precisions for {} KFAC blocks",
                deltas.len(),
                self.blocks.len()
            )));
        }
        let mut out = Kron {
            scale,
            ..self.clone()
        };
        out.blocks
            .iter_mut()
            .zip(deltas)
            .for_each(|(b, d)| b.delta = *d);
        Ok(out)
    }

    /// The prior precision of each block (parameter tensor).
    pub fn deltas(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.delta).collect()
    }

    /// The number of parameters P.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Negative factor eigenvalues beyond rounding floored at 0.
    pub fn floored_eigenvalues(&self) -> usize {
        self.floored
    }

    /// The eigenvalues `λ_G ⊗ λ_A` of the Kronecker GGN (P, in parameter order of the
    /// eigenbasis), for the evidence at any δ.
    pub fn ggn_eigenvalues(&self) -> Vec<f64> {
        self.blocks
            .iter()
            .flat_map(|b| b.lg.iter().flat_map(|g| b.la.iter().map(move |a| g * a)))
            .collect()
    }

    /// `log|c (G ⊗ A) + δI| = Σ log(c λ_G λ_A + δ)`.
    pub fn log_det(&self) -> f64 {
        self.blocks
            .iter()
            .flat_map(|b| b.eigenvalues(self.scale))
            .map(f64::ln)
            .sum()
    }

    /// `Σ v`, block by block: `Q_G ((Q_Gᵀ V Q_A) ⊘ D) Q_Aᵀ`.
    pub fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        self.map_blocks(v, |d| 1.0 / d)
    }

    /// `Q_G (f(D) ⊙ (Q_Gᵀ V Q_A)) Q_Aᵀ` block by block.
    fn map_blocks(&self, v: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
        let mut out = vec![0.0; self.dim];
        for b in &self.blocks {
            let range = b.offset..b.offset + b.len();
            let mut z = b.rotate(&v[range.clone()]);
            let cols = b.la.len();
            for (i, d) in b.eigenvalues(self.scale).enumerate() {
                z[(i / cols, i % cols)] *= f(d);
            }
            b.rotate_back(&z, &mut out[range]);
        }
        out
    }

    /// A draw `μ + Σ^{½} z`, `z ~ N(0, I)`.
    pub fn sample(&self, mu: &[f64], rng: &mut Rng) -> Vec<f64> {
        // `Σ^{½} = (Q_G ⊗ Q_A) D^{-½}`: scale z in the eigenbasis, then rotate it back.
        let z = normals(rng, self.dim);
        let mut out = vec![0.0; self.dim];
        for b in &self.blocks {
            let (rows, cols) = (b.lg.len(), b.la.len());
            let d: Vec<f64> = b.eigenvalues(self.scale).collect();
            let zm = Mat::from_fn(rows, cols, |i, j| {
                z[b.offset + i * cols + j] / d[i * cols + j].sqrt()
            });
            b.rotate_back(&zm, &mut out[b.offset..b.offset + b.len()]);
        }
        out.iter_mut().zip(mu).for_each(|(o, m)| *o += m);
        out
    }

    /// `J Σ^{½}` for the rows of `J` (R×P): each block's slice of a row, rotated into the
    /// eigenbasis and scaled by `D^{-½}`, so that `J_a Σ J_bᵀ` is a product of the results.
    pub fn whiten(&self, j: MatRef<'_, f64>) -> Mat<f64> {
        let mut out = Mat::zeros(j.nrows(), j.ncols());
        let mut offset = 0;
        for lv in &self.layer_variances() {
            let len = lv.weight.len() + lv.bias.len();
            lv.whiten_rows(
                j.subcols(offset, len),
                out.as_mut().subcols_mut(offset, len),
            );
            offset += len;
        }
        out
    }

    /// Each layer's covariance in its eigenbasis, for `factored_covariance_blocks`:
    /// `Q_G`, `Q_A`, `1/(c λ_G λ_A + δ)` (weight) and `1/(c λ_G + δ)` (bias).
    pub fn layer_variances(&self) -> Vec<LayerVariance<'_>> {
        let mut blocks = self.blocks.iter();
        self.units
            .iter()
            .map(|&bias| {
                let w = blocks.next().expect("a block per unit");
                let inv = |b: &Block| b.eigenvalues(self.scale).map(|d| 1.0 / d).collect();
                LayerVariance {
                    qg: Some(&w.qg),
                    qa: Some(&w.qa),
                    outputs: w.lg.len(),
                    weight: inv(w),
                    bias: if bias {
                        inv(blocks.next().expect("a bias block"))
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect()
    }

    /// The variances `diag Σ`: `(Q_G ∘ Q_G) D^{-1} (Q_A ∘ Q_A)ᵀ` block by block.
    pub fn variances(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.dim];
        for b in &self.blocks {
            let (rows, cols) = (b.lg.len(), b.la.len());
            let d: Vec<f64> = b.eigenvalues(self.scale).collect();
            let inv = Mat::from_fn(rows, cols, |i, j| 1.0 / d[i * cols + j]);
            let g2 = Mat::from_fn(rows, rows, |i, j| b.qg[(i, j)].powi(2));
            let a2 = Mat::from_fn(cols, cols, |i, j| b.qa[(i, j)].powi(2));
            let mut t = Mat::<f64>::zeros(rows, cols);
            matmul(
                t.as_mut(),
                Accum::Replace,
                g2.as_ref(),
                inv.as_ref(),
                1.0,
                Par::Seq,
            );
            let v = crate::linalg::a_bt(t.as_ref(), a2.as_ref());
            for (i, o) in out[b.offset..b.offset + b.len()].iter_mut().enumerate() {
                *o = v[(i / cols, i % cols)];
            }
        }
        out
    }

    /// The precision as a dense P×P matrix (block diagonal); for small networks and tests.
    pub fn dense(&self) -> Mat<f64> {
        self.columns(|d| d)
    }

    /// The covariance `Σ` as a dense P×P matrix; for small networks and tests.
    pub fn covariance(&self) -> Mat<f64> {
        self.columns(|d| 1.0 / d)
    }

    /// The matrix `Q f(D) Qᵀ`, column by column.
    fn columns(&self, f: impl Fn(f64) -> f64 + Copy) -> Mat<f64> {
        let p = self.dim;
        let mut out = Mat::<f64>::zeros(p, p);
        for c in 0..p {
            let mut e = vec![0.0; p];
            e[c] = 1.0;
            for (r, v) in self.map_blocks(&e, f).into_iter().enumerate() {
                out[(r, c)] = v;
            }
        }
        out
    }
}

/// One layer's posterior covariance when it is diagonal in a Kronecker eigenbasis
/// `Q_G ⊗ Q_A` (KFAC) or in the parameter basis (a diagonal posterior: no rotations): the
/// variances of the weight (outputs × inputs, row-major) and of the bias in that basis.
#[derive(Debug, Clone)]
pub struct LayerVariance<'a> {
    /// The output-side eigenvectors `Q_G` (none: the parameter basis).
    pub qg: Option<&'a Mat<f64>>,
    /// The input-side eigenvectors `Q_A` (none: the parameter basis).
    pub qa: Option<&'a Mat<f64>>,
    /// The weight's rows (outputs).
    pub outputs: usize,
    /// The weight's variances in that basis (outputs × inputs, row-major).
    pub weight: Vec<f64>,
    /// The bias's variances in that basis (none without a bias).
    pub bias: Vec<f64>,
}

impl LayerVariance<'_> {
    /// Jacobian rows of the layer (R × len: the weight row-major, then the bias) into the
    /// eigenbasis and scaled by the standard deviations: `(Q_Gᵀ W_r Q_A) ⊙ √s^W`,
    /// `(Q_Gᵀ b_r) ⊙ √s^b`, so that `J Σ Jᵀ` over the layer is a product of such rows. The
    /// rows' weights stacked (R·o × i) go through one product with `Q_A`.
    fn whiten_rows(&self, rows: MatRef<'_, f64>, mut out: MatMut<'_, f64>) {
        let (r_n, o) = (rows.nrows(), self.outputs);
        let i = self.weight.len() / o.max(1);
        let sd_w: Vec<f64> = self.weight.iter().map(|v| v.sqrt()).collect();
        let sd_b: Vec<f64> = self.bias.iter().map(|v| v.sqrt()).collect();
        // Row r's weight, stacked: S[(r·o + g, j)] = rows[(r, g·i + j)].
        let stacked = Mat::from_fn(r_n * o, i, |m, j| rows[(m / o, (m % o) * i + j)]);
        let t = match self.qa {
            Some(q) => crate::linalg::a_b(stacked.as_ref(), q.as_ref()),
            None => stacked,
        };
        for r in 0..r_n {
            let tr = t.as_ref().subrows(r * o, o);
            let u = match self.qg {
                Some(q) => crate::linalg::at_b(q.as_ref(), tr),
                None => tr.to_owned(),
            };
            for g in 0..o {
                for j in 0..i {
                    out[(r, g * i + j)] = u[(g, j)] * sd_w[g * i + j];
                }
            }
            if !self.bias.is_empty() {
                let b = Mat::from_fn(o, 1, |g, _| rows[(r, o * i + g)]);
                let b = match self.qg {
                    Some(q) => crate::linalg::at_b(q.as_ref(), b.as_ref()),
                    None => b,
                };
                for g in 0..o {
                    out[(r, o * i + g)] = b[(g, 0)] * sd_b[g];
                }
            }
        }
    }
}

/// The K×K blocks `J_n Σ J_nᵀ` (row-major, N·K·K) from the per-layer factors of the stacked
/// Jacobians, without forming J, for a covariance given layer by layer ([`LayerVariance`]):
/// a dense layer's rows are `g_m ⊗ ã_n`, so with `u_m = Q_Gᵀ g_m`, `v_n = Q_Aᵀ a_n` and the
/// variances `s`, `(J_n Σ J_nᵀ)_{kk′} = Σ_g u_{kg} u_{k′g} (Σ_j v_{nj}² s^W_{gj} + s^b_g)`;
/// a layer held as a Jacobian block (conv) is rotated and scaled row by row.
pub(crate) fn factored_covariance_blocks(
    f: &JacobianFactors<f64>,
    layers: &[LayerVariance<'_>],
) -> Vec<f64> {
    let k = f.k();
    let n = f.rows() / k;
    let mut out = vec![0.0; n * k * k];
    for (factor, lv) in f.layers().iter().rev().zip(layers) {
        let o = lv.outputs;
        let i = lv.weight.len() / o.max(1);
        let rotate = |m: MatRef<'_, f64>, q: Option<&Mat<f64>>| match q {
            Some(q) => crate::linalg::a_b(m, q.as_ref()),
            None => m.to_owned(),
        };
        // Per example: the variance along each output direction.
        let scales = |a: MatRef<'_, f64>| -> Vec<Vec<f64>> {
            let v = rotate(a.subcols(0, i), lv.qa);
            (0..a.nrows())
                .into_par_iter()
                .map(|e| {
                    (0..o)
                        .map(|g| {
                            (0..i)
                                .map(|j| v[(e, j)].powi(2) * lv.weight[g * i + j])
                                .sum::<f64>()
                                + a[(e, i)].powi(2) * lv.bias[g]
                        })
                        .collect()
                })
                .collect()
        };
        let add = |out: &mut [f64], u: &(dyn Fn(usize, usize) -> f64 + Sync), t: &[Vec<f64>]| {
            out.par_chunks_mut(k * k).enumerate().for_each(|(e, c)| {
                for r in 0..k {
                    for q in 0..k {
                        c[r * k + q] += (0..o)
                            .map(|g| u(e * k + r, g) * u(e * k + q, g) * t[e][g])
                            .sum::<f64>();
                    }
                }
            });
        };
        match factor {
            Factor::Dense { g, a } => {
                let u = rotate(g.as_ref(), lv.qg);
                add(&mut out, &|m, c| u[(m, c)], &scales(a.as_ref()));
            }
            Factor::Outputs { a, .. } => {
                let u = |m: usize, c: usize| match lv.qg {
                    Some(q) => q[(m % k, c)],
                    None => f64::from(u8::from(m % k == c)),
                };
                add(&mut out, &u, &scales(a.as_ref()));
            }
            Factor::Block(jb) => {
                // Example by example: its K rows rotated and scaled, then their Gram.
                let p = jb.ncols();
                out.par_chunks_mut(k * k).enumerate().for_each(|(e, c)| {
                    let mut z = Mat::<f64>::zeros(k, p);
                    lv.whiten_rows(jb.as_ref().subrows(e * k, k), z.as_mut());
                    let c = MatMut::from_row_major_slice_mut(c, k, k);
                    matmul(c, Accum::Add, z.as_ref(), z.transpose(), 1.0, Par::Seq);
                });
            }
        }
    }
    out
}

/// The units of a diagonal precision `d` (parameters in the network's order) as
/// [`LayerVariance`]s, for the network's KFAC units.
pub(crate) fn diag_layer_variances(
    d: &[f64],
    shapes: &[crate::nn::KronShape],
) -> Vec<LayerVariance<'static>> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|s| {
            let (i, o, b) = (s.inputs, s.outputs, if s.bias { s.outputs } else { 0 });
            let inv = |r: std::ops::Range<usize>| d[r].iter().map(|v| 1.0 / v).collect();
            let lv = LayerVariance {
                qg: None,
                qa: None,
                outputs: o,
                weight: inv(offset..offset + o * i),
                bias: inv(offset + o * i..offset + o * i + b),
            };
            offset += o * i + b;
            lv
        })
        .collect()
}
