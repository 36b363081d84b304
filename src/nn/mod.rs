//! Networks `f_w : R^D → R^K` with a flat parameter vector `w ∈ R^P`, their forward pass,
//! loss gradients `Σ_i J_iᵀ r_i` and exact per-example Jacobians `J(x) = ∂f_w(x)/∂w`.

pub mod activation;
mod dense;
pub mod mlp;
pub mod rng;
pub mod sequential;
pub mod weights;

use faer::reborrow::ReborrowMut;
use faer::{Mat, MatRef};
use rayon::prelude::*;

pub use activation::Activation;
pub use mlp::Mlp;
pub use sequential::{Layer, Sequential};

/// A differentiable network with a flat parameter vector.
pub trait Network: Sync {
    /// Number of parameters `P`.
    fn n_params(&self) -> usize;
    /// Input dimension `D`.
    fn n_inputs(&self) -> usize;
    /// Output dimension `K`.
    fn n_outputs(&self) -> usize;
    /// Outputs `F` (N×K) for inputs `X` (N×D).
    fn forward(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64>;
    /// Outputs `F` and, from one forward pass, a reduction over cotangent rows for each request
    /// that `requests` makes from `F`: `Σ_m J_{n(m)}ᵀ c_m` ([`Reduce::Sum`]) or the elementwise
    /// `Σ_m (J_{n(m)}ᵀ c_m)²` ([`Reduce::SumSq`]), without forming J.
    fn forward_reduce(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
    ) -> (Mat<f64>, Vec<Vec<f64>>);

    /// Outputs `F` and the vector-Jacobian product `Σ_i J_iᵀ c_i`, where the cotangents
    /// `C` (N×K) are computed from `F` by `cot`.
    fn forward_vjp(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        cot: &mut dyn FnMut(MatRef<'_, f64>) -> Mat<f64>,
    ) -> (Mat<f64>, Vec<f64>) {
        let (f, mut out) = self.forward_reduce(w, x, &mut |f| {
            vec![Cotangents {
                rows: cot(f),
                rows_per_example: 1,
                reduce: Reduce::Sum,
            }]
        });
        (f, out.pop().expect("one request"))
    }
    /// Outputs `F` (N×K) and per-example Jacobians stacked as an NK×P matrix, row `n·K + k` =
    /// `∂f_k(x_n)/∂w`, from one forward pass.
    fn forward_jacobian(&self, w: &[f64], x: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>);
    /// The stacked Jacobians alone.
    fn jacobian(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        self.forward_jacobian(w, x).1
    }

    /// The empirical NTK `J(X_a) J(X_b)ᵀ` (N_aK × N_bK).
    fn ntk(&self, w: &[f64], xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f64> {
        crate::linalg::a_bt(self.jacobian(w, xa).as_ref(), self.jacobian(w, xb).as_ref())
    }
    /// Its diagonal `‖J_m‖²`, one value per row `n·K + k`.
    fn ntk_diag(&self, w: &[f64], x: MatRef<'_, f64>) -> Vec<f64> {
        crate::linalg::row_sq_norms(self.jacobian(w, x).as_ref())
    }
    /// Initial parameters from a seed.
    fn init(&self, seed: u64) -> Vec<f64>;
}

/// Outputs `F` (N×K) of a large input batch, in parallel over chunks of rows.
pub fn predict(net: &dyn Network, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
    const CHUNK: usize = 256;
    let n = x.nrows();
    let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
    let parts: Vec<Mat<f64>> = starts
        .par_iter()
        .map(|&s| net.forward(w, x.subrows(s, CHUNK.min(n - s))))
        .collect();
    let mut f = Mat::zeros(n, net.n_outputs());
    for (s, p) in starts.iter().zip(&parts) {
        f.as_mut().subrows_mut(*s, p.nrows()).copy_from(p);
    }
    f
}

/// How a backward pass reduces the per-row parameter derivatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Their sum (a gradient).
    Sum,
    /// The sum of their elementwise squares (a diagonal GGN or empirical Fisher).
    SumSq,
}

/// Cotangent rows for a backward pass: row `m` belongs to example `m / rows_per_example`.
#[derive(Debug, Clone)]
pub struct Cotangents {
    /// The rows (M×K).
    pub rows: Mat<f64>,
    /// Rows per example.
    pub rows_per_example: usize,
    /// The reduction.
    pub reduce: Reduce,
}

/// Where a backward pass puts parameter derivatives.
pub(crate) enum Sink<'a> {
    /// Summed over rows: a gradient of length P.
    Sum(&'a mut [f64]),
    /// Squares summed over rows: `Σ_m (∂(c_mᵀ f)/∂w)²`, length P.
    SumSq(&'a mut [f64]),
    /// One row per cotangent row: a Jacobian block (rows × P).
    Rows(faer::MatMut<'a, f64>),
    /// Each layer's share of the Jacobian rows (last layer first): what structured kernels
    /// need.
    Factors(&'a mut Vec<Factor>),
}

/// One layer's share of stacked Jacobian rows, for structured kernels.
#[derive(Debug, Clone)]
pub(crate) enum Factor {
    /// A dense layer: row m of its Jacobian block is `G_m ⊗ [A_{n(m)}, 1]` (weights, then the
    /// bias), with `G` (rows × outputs) and `A` (examples × inputs).
    Dense { g: Mat<f64>, a: Mat<f64> },
    /// Any other layer with parameters: its Jacobian block (rows × the layer's parameters).
    Block(Mat<f64>),
}

/// The structured `J(X_a) J(X_b)ᵀ` of a network with factors; the symmetric product is
/// recognised when `X_a` and `X_b` are the same matrix.
pub(crate) fn structured_ntk<B: Backprop + Sync>(
    net: &B,
    w: &[f64],
    xa: MatRef<'_, f64>,
    xb: MatRef<'_, f64>,
) -> Mat<f64> {
    let k = net.n_outputs();
    let fa = forward_factors(net, w, xa);
    let same = xa.as_ptr() == xb.as_ptr()
        && xa.nrows() == xb.nrows()
        && xa.ncols() == xb.ncols()
        && xa.row_stride() == xb.row_stride()
        && xa.col_stride() == xb.col_stride();
    if same {
        factor_kernel(&fa, None, k)
    } else {
        factor_kernel(&fa, Some(&forward_factors(net, w, xb)), k)
    }
}

/// `J_a J_bᵀ` from the factors of two sets of rows, `k` rows per example (`fb = None`: the
/// symmetric `J_a J_aᵀ`, from one set of factors): each dense layer adds
/// `(G_a G_bᵀ) ⊙ (A_a A_bᵀ + 1)` (the second factor indexed by example), any other layer
/// `B_a B_bᵀ`. No Jacobian is formed for dense layers.
pub(crate) fn factor_kernel(fa: &[Factor], fb: Option<&[Factor]>, k: usize) -> Mat<f64> {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, Par};
    let fb = fb.unwrap_or(fa);
    let rows = |f: &[Factor]| match f.first() {
        Some(Factor::Dense { g, .. }) | Some(Factor::Block(g)) => g.nrows(),
        None => 0,
    };
    let (m, n) = (rows(fa), rows(fb));
    let mut out = Mat::<f64>::zeros(m, n);
    // Column tiles (whole examples), in parallel: each tile's products stay in cache.
    let tile = k * 128usize.div_ceil(k);
    out.as_mut()
        .par_col_chunks_mut(tile)
        .enumerate()
        .for_each(|(t, mut dst)| {
            let (c0, w) = (t * tile, dst.ncols());
            for (a, b) in fa.iter().zip(fb) {
                match (a, b) {
                    (Factor::Dense { g: ga, a: aa }, Factor::Dense { g: gb, a: ab }) => {
                        let mut gg = Mat::<f64>::zeros(m, w);
                        let gb = gb.as_ref().subrows(c0, w);
                        matmul(
                            gg.as_mut(),
                            Accum::Replace,
                            ga.as_ref(),
                            gb.transpose(),
                            1.0,
                            Par::Seq,
                        );
                        let ab = ab.as_ref().subrows(c0 / k, w / k);
                        let mut xx = Mat::<f64>::zeros(aa.nrows(), w / k);
                        matmul(
                            xx.as_mut(),
                            Accum::Replace,
                            aa.as_ref(),
                            ab.transpose(),
                            1.0,
                            Par::Seq,
                        );
                        for c in 0..w {
                            let d = dst
                                .rb_mut()
                                .col_mut(c)
                                .try_as_col_major_mut()
                                .expect("contiguous")
                                .as_slice_mut();
                            let g = gg.col(c).try_as_col_major().expect("contiguous").as_slice();
                            let x = xx
                                .col(c / k)
                                .try_as_col_major()
                                .expect("contiguous")
                                .as_slice();
                            if k == 1 {
                                d.iter_mut()
                                    .zip(g)
                                    .zip(x)
                                    .for_each(|((d, g), x)| *d += g * (x + 1.0));
                            } else {
                                // The k rows of one example share its factor x.
                                for ((d, g), x) in d.chunks_mut(k).zip(g.chunks(k)).zip(x) {
                                    let xv = x + 1.0;
                                    d.iter_mut().zip(g).for_each(|(d, g)| *d += g * xv);
                                }
                            }
                        }
                    }
                    (Factor::Block(ja), Factor::Block(jb)) => {
                        let jb = jb.as_ref().subrows(c0, w);
                        matmul(
                            dst.rb_mut(),
                            Accum::Add,
                            ja.as_ref(),
                            jb.transpose(),
                            1.0,
                            Par::Seq,
                        );
                    }
                    _ => unreachable!("both sides come from the same network"),
                }
            }
        });
    out
}

/// The diagonal of `J Jᵀ` from factors: `Σ_dense ‖G_m‖²(‖A_{n(m)}‖² + 1) + Σ_other ‖B_m‖²`.
pub(crate) fn factor_kernel_diag(f: &[Factor], k: usize) -> Vec<f64> {
    use crate::linalg::row_sq_norms;
    let mut out: Vec<f64> = Vec::new();
    for fac in f {
        let d: Vec<f64> = match fac {
            Factor::Dense { g, a } => {
                let (gn, an) = (row_sq_norms(g.as_ref()), row_sq_norms(a.as_ref()));
                gn.iter()
                    .enumerate()
                    .map(|(m, v)| v * (an[m / k] + 1.0))
                    .collect()
            }
            Factor::Block(j) => row_sq_norms(j.as_ref()),
        };
        if out.is_empty() {
            out = d;
        } else {
            out.iter_mut().zip(d).for_each(|(o, v)| *o += v);
        }
    }
    out
}

/// The factors of the stacked Jacobian rows (K per example, seeds `e_k`), computed in parallel
/// over chunks of examples and stacked by rows.
pub(crate) fn forward_factors<B: Backprop + Sync>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
) -> Vec<Factor> {
    let (n, k) = (x.nrows(), net.n_outputs());
    let starts: Vec<usize> = (0..n).step_by(JACOBIAN_CHUNK).collect();
    let chunks: Vec<Vec<Factor>> = starts
        .par_iter()
        .map(|&s| {
            let xc = x.subrows(s, JACOBIAN_CHUNK.min(n - s));
            let tape = net.record(w, xc);
            let seed = Mat::from_fn(xc.nrows() * k, k, |m, j| if m % k == j { 1.0 } else { 0.0 });
            let mut f = Vec::new();
            net.backprop(w, &tape, seed, k, Sink::Factors(&mut f));
            f
        })
        .collect();
    let stack = |parts: Vec<&Mat<f64>>| {
        let rows: usize = parts.iter().map(|m| m.nrows()).sum();
        let mut out = Mat::<f64>::zeros(rows, parts[0].ncols());
        let mut r0 = 0;
        for m in parts {
            out.as_mut().subrows_mut(r0, m.nrows()).copy_from(m);
            r0 += m.nrows();
        }
        out
    };
    (0..chunks.first().map_or(0, Vec::len))
        .map(|l| match &chunks[0][l] {
            Factor::Dense { .. } => {
                let (gs, as_): (Vec<&Mat<f64>>, Vec<&Mat<f64>>) = chunks
                    .iter()
                    .map(|c| match &c[l] {
                        Factor::Dense { g, a } => (g, a),
                        Factor::Block(_) => unreachable!("same layer in every chunk"),
                    })
                    .unzip();
                Factor::Dense {
                    g: stack(gs),
                    a: stack(as_),
                }
            }
            Factor::Block(_) => Factor::Block(stack(
                chunks
                    .iter()
                    .map(|c| match &c[l] {
                        Factor::Block(b) => b,
                        Factor::Dense { .. } => unreachable!("same layer in every chunk"),
                    })
                    .collect(),
            )),
        })
        .collect()
}

/// Number of examples per parallel Jacobian chunk.
const JACOBIAN_CHUNK: usize = 64;

/// A network that records a forward pass and backpropagates cotangent rows through it; the
/// reductions and Jacobians of [`Network`] are built on it once for every architecture.
pub(crate) trait Backprop: Network {
    /// What the forward pass keeps.
    type Tape;
    /// Runs the forward pass on `X`.
    fn record(&self, w: &[f64], x: MatRef<'_, f64>) -> Self::Tape;
    /// The outputs `F` in a tape.
    fn output(tape: &Self::Tape) -> &Mat<f64>;
    /// Backpropagates cotangent rows `g` (row m of example `m / rpe`) into `sink`.
    fn backprop(&self, w: &[f64], tape: &Self::Tape, g: Mat<f64>, rpe: usize, sink: Sink<'_>);
}

/// [`Network::forward_reduce`] from one recorded forward pass.
pub(crate) fn reduce<B: Backprop>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
    requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
) -> (Mat<f64>, Vec<Vec<f64>>) {
    let tape = net.record(w, x);
    let f = B::output(&tape).clone();
    let out = requests(f.as_ref())
        .into_iter()
        .map(|c| {
            let mut acc = vec![0.0; net.n_params()];
            let sink = match c.reduce {
                Reduce::Sum => Sink::Sum(&mut acc),
                Reduce::SumSq => Sink::SumSq(&mut acc),
            };
            net.backprop(w, &tape, c.rows, c.rows_per_example, sink);
            acc
        })
        .collect();
    (f, out)
}

/// Outputs and Jacobian rows of a chunk of examples: seeds `e_k` for each of the K outputs.
fn jacobian_chunk<B: Backprop>(net: &B, w: &[f64], x: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
    let (n, k) = (x.nrows(), net.n_outputs());
    let tape = net.record(w, x);
    let seed = Mat::from_fn(n * k, k, |m, j| if m % k == j { 1.0 } else { 0.0 });
    let mut jac = Mat::<f64>::zeros(n * k, net.n_params());
    net.backprop(w, &tape, seed, k, Sink::Rows(jac.as_mut()));
    (B::output(&tape).clone(), jac)
}

/// [`Network::forward_jacobian`]: chunks of examples in parallel above a few chunks.
pub(crate) fn forward_jacobian<B: Backprop + Sync>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
) -> (Mat<f64>, Mat<f64>) {
    let (n, k) = (x.nrows(), net.n_outputs());
    if n <= 4 * JACOBIAN_CHUNK {
        return jacobian_chunk(net, w, x);
    }
    let starts: Vec<usize> = (0..n).step_by(JACOBIAN_CHUNK).collect();
    let blocks: Vec<(Mat<f64>, Mat<f64>)> = starts
        .par_iter()
        .map(|&s| jacobian_chunk(net, w, x.subrows(s, JACOBIAN_CHUNK.min(n - s))))
        .collect();
    let mut f = Mat::<f64>::zeros(n, k);
    let mut jac = Mat::<f64>::zeros(n * k, net.n_params());
    for (s, (fb, jb)) in starts.iter().zip(&blocks) {
        f.as_mut().subrows_mut(*s, fb.nrows()).copy_from(fb);
        jac.as_mut().subrows_mut(s * k, jb.nrows()).copy_from(jb);
    }
    (f, jac)
}
