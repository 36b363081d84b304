//! Networks `f_w : R^D → R^K` with a flat parameter vector `w ∈ R^P`, their forward pass,
//! loss gradients `Σ_i J_iᵀ r_i` and exact per-example Jacobians `J(x) = ∂f_w(x)/∂w`.
//!
//! The layout: [`Network`] (this file) is the interface; [`graph`] a network as a graph of
//! operations over named tensors (what `Model` holds: any network), one operation per file in
//! [`ops`] (forward, input VJP, parameter derivatives into every accumulator); a new operation
//! is a file there, a variant of [`ops::Op`] and, with parameters, its tensors in
//! [`ops::Op::tensors`]. A graph built from a spec string runs as its chain of layers:
//! [`layer`] the layers a
//! [`Sequential`] chains (dense, convolution, pooling, activation, flatten) and their shapes;
//! [`sequential`] its forward pass, Jacobians and backpropagation; `spec` its spec strings
//! (`1x28x28:conv6k5,relu,pool,…`); `conv` the patch (im2col) and pooling kernels; `dense`
//! and `mlp` the fused dense path of an MLP; `factors` the per-layer Jacobian factors behind
//! the kernels; [`activation`]; [`weights`] the state_dict names and safetensors files. A new
//! layer is a variant of [`Layer`] with its shape, a forward and backward step in
//! `sequential.rs`, a word in `spec.rs` and, with parameters, its names in [`weights`].

pub mod activation;
mod conv;
mod dense;
mod factors;
pub mod graph;
pub mod layer;
mod mlp;
pub mod ops;
pub mod sequential;
mod spec;
pub mod weights;

use faer::{Mat, MatRef};

use crate::linalg::stack_rows;
use rayon::prelude::*;

pub use crate::linalg::Real;
pub use activation::Activation;
pub(crate) use factors::Factor;
pub use factors::{JacobianFactors, NtkBlocks};
pub use graph::{Graph, GraphBuilder, KronShape, Node, StepProfile};
pub use layer::{Layer, MAX_PARAMS};
pub(crate) use mlp::Mlp;
pub use sequential::Sequential;

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
    /// that `requests` makes from `F`: `Σ_m J_{n(m)}ᵀ c_m` ([`Reduce::Sum`]), the elementwise
    /// `Σ_m (J_{n(m)}ᵀ c_m)²` ([`Reduce::SumSq`]) or both ([`Reduce::SumAndSumSq`]), without
    /// forming J.
    fn forward_reduce(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
    ) -> (Mat<f64>, Vec<Vec<f64>>) {
        let mut out = Vec::new();
        let f = self.forward_reduce_into(w, x, requests, &mut out);
        (f, out)
    }
    /// [`Network::forward_reduce`] into the vectors of `out`, reused where they exist (so that
    /// a training loop allocates them once), one per request.
    fn forward_reduce_into(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
        out: &mut Vec<Vec<f64>>,
    ) -> Mat<f64>;

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

    /// `J(X)` as per-layer factors ([`JacobianFactors`]), for kernels without forming J.
    fn jacobian_factors(&self, w: &[f64], x: MatRef<'_, f64>) -> JacobianFactors<f64>;
    /// [`Network::jacobian_factors`] rounded to f32.
    fn jacobian_factors_f32(&self, w: &[f64], x: MatRef<'_, f64>) -> JacobianFactors<f32>;

    /// The empirical NTK `J(X_a) J(X_b)ᵀ` (N_aK × N_bK), from per-layer factors: a dense layer's
    /// Jacobian rows are `g ⊗ ã`, so it adds `(G_a G_bᵀ) ⊙ (A_a A_bᵀ + 1)`, expanded over the K
    /// rows of each example, at `N_a N_b Σ_l (out_l + in_l)` instead of `N_a N_b P`. The
    /// symmetric product is recognised when `X_a` and `X_b` are the same matrix.
    fn ntk(&self, w: &[f64], xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f64> {
        ntk_of(|x| self.jacobian_factors(w, x), xa, xb)
    }
    /// The NTK in f32 (twice the GEMM rate, half the memory).
    fn ntk_f32(&self, w: &[f64], xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f32> {
        ntk_of(|x| self.jacobian_factors_f32(w, x), xa, xb)
    }
    /// Its diagonal `‖J_m‖²`, one value per row `n·K + k`.
    fn ntk_diag(&self, w: &[f64], x: MatRef<'_, f64>) -> Vec<f64> {
        self.jacobian_factors(w, x).diag()
    }
    /// What a GP predictive at `X*` needs: `J(X)J(X)ᵀ`, `J(X*)J(X)ᵀ` and `diag J(X*)J(X*)ᵀ`,
    /// from one set of factors of the stacked inputs `[X; X*]`.
    fn ntk_blocks(&self, w: &[f64], x: MatRef<'_, f64>, xs: MatRef<'_, f64>) -> NtkBlocks {
        let rows = x.nrows() * self.n_outputs();
        let f = self.jacobian_factors(w, stack_rows(x, xs).as_ref());
        let mut test_diag = f.diag();
        test_diag.drain(..rows);
        NtkBlocks {
            kernel: f.gram_rows(rows),
            test_diag,
        }
    }
    /// Initial parameters from a seed.
    fn init(&self, seed: u64) -> Vec<f64>;
    /// Each layer's [`KronSums`] (first layer first) for the cotangent rows `roots(F)`
    /// (`rpe` rows per example) backpropagated from one forward pass on `X`.
    fn kron_sums(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        roots: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
        rpe: usize,
    ) -> Vec<KronSums>;
}

/// [`Network::kron_sums`] from one recorded forward pass.
pub(crate) fn kron_sums<B: Backprop>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
    roots: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
    rpe: usize,
) -> Vec<KronSums> {
    let tape = net.record(w, x);
    let g = roots(B::output(&tape).as_ref());
    let mut out = Vec::new();
    net.backprop(w, &tape, g, rpe, Sink::Kron(&mut out));
    out.reverse();
    out
}

/// `J(X_a) J(X_b)ᵀ` from the factors `of` each side; one set and the symmetric product when
/// `X_a` and `X_b` are the same matrix.
fn ntk_of<T: Real>(
    of: impl Fn(MatRef<'_, f64>) -> JacobianFactors<T>,
    xa: MatRef<'_, f64>,
    xb: MatRef<'_, f64>,
) -> Mat<T> {
    let same = xa.as_ptr() == xb.as_ptr()
        && xa.nrows() == xb.nrows()
        && xa.ncols() == xb.ncols()
        && xa.row_stride() == xb.row_stride()
        && xa.col_stride() == xb.col_stride();
    if same {
        of(xa).gram()
    } else {
        of(xa).cross(of(xb))
    }
}

crate::words! {
    /// The scalar type a forward pass computes in (numpy's names: `float` is float64).
    pub enum Dtype("dtype") {
        /// Double precision (the default: the paper's identities hold to 1e-8 and beyond).
        F64 = ["f64", "float64", "double", "float", "f8", "d"],
        /// Single precision: twice the GEMM rate, half the memory traffic.
        F32 = ["f32", "float32", "single", "f4"],
    }
}

/// [`predict`] with the forward pass in `dtype`.
pub fn predict_in(net: &Graph, w: &[f64], x: MatRef<'_, f64>, dtype: Dtype) -> Mat<f64> {
    match dtype {
        Dtype::F64 => predict(net, w, x),
        Dtype::F32 => in_chunks(x, net.n_outputs(), |xc| net.forward_in(w, xc, dtype)),
    }
}

/// Rows per chunk of a large batch's forward pass (one thread each).
pub(crate) const CHUNK: usize = 256;

/// `f` of each chunk of rows of `X`, in parallel, stacked.
fn in_chunks(
    x: MatRef<'_, f64>,
    width: usize,
    f: impl Fn(MatRef<'_, f64>) -> Mat<f64> + Sync,
) -> Mat<f64> {
    let n = x.nrows();
    let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
    let parts: Vec<Mat<f64>> = starts
        .par_iter()
        .map(|&s| f(x.subrows(s, CHUNK.min(n - s))))
        .collect();
    let mut out = Mat::zeros(n, width);
    for (s, p) in starts.iter().zip(&parts) {
        out.as_mut().subrows_mut(*s, p.nrows()).copy_from(p);
    }
    out
}

/// Outputs `F` (N×K) of a large input batch, in parallel over chunks of rows.
pub fn predict(net: &dyn Network, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
    in_chunks(x, net.n_outputs(), |xc| net.forward(w, xc))
}

/// How a backward pass reduces the per-row parameter derivatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Their sum (a gradient).
    Sum,
    /// The sum of their elementwise squares (a diagonal GGN or empirical Fisher).
    SumSq,
    /// Both from one backward pass, concatenated `[Σ; Σ²]` (2P).
    SumAndSumSq,
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
    /// Both of the above from one pass.
    SumAndSumSq(&'a mut [f64], &'a mut [f64]),
    /// One row per cotangent row: a Jacobian block (rows × P).
    Rows(faer::MatMut<'a, f64>),
    /// Each layer's share of the Jacobian rows (last layer first): what structured kernels
    /// need.
    Factors(&'a mut Vec<Factor>),
    /// Each layer's Kronecker sums `Σ a aᵀ` and `Σ g gᵀ` (last layer first): what KFAC needs.
    Kron(&'a mut Vec<KronSums>),
    /// None: the parameters are held fixed (only the cotangents below are wanted).
    Discard,
}

/// One KFAC unit's sums over a batch: for a layer, `A = Σ_{n,t} a_{nt} a_{nt}ᵀ` over its
/// inputs (a conv layer's patches, `t` over its output positions; `count` terms) and
/// `G = Σ_{m,t} g_{mt} g_{mt}ᵀ` over the cotangent rows backpropagated to its outputs, its
/// bias (if any) sharing `G`; for a tensor without Kronecker form (BatchNorm's γ), `A` the
/// count of examples (1×1) and `G = Σ_m d_m d_mᵀ` over its derivative rows: its exact block.
#[derive(Debug, Clone, PartialEq)]
pub struct KronSums {
    /// `Σ a aᵀ` (inputs × inputs; the bias is kept apart).
    pub a: Mat<f64>,
    /// `Σ g gᵀ` (outputs × outputs).
    pub g: Mat<f64>,
    /// Weight-sharing positions per example (1 for a dense layer, `oh·ow` for a conv layer).
    pub positions: usize,
    /// Whether a bias shares `G`.
    pub bias: bool,
    /// The terms summed in `A`: examples × positions.
    pub count: usize,
}

impl KronSums {
    /// Adds another batch's sums.
    pub fn add(&mut self, other: &KronSums) {
        self.a += &other.a;
        self.g += &other.g;
        self.count += other.count;
    }
}

/// Number of examples per parallel Jacobian chunk.
pub(crate) const JACOBIAN_CHUNK: usize = 64;

/// A network that records a forward pass and backpropagates cotangent rows through it; the
/// reductions and Jacobians of [`Network`] are built on it once for every architecture.
pub(crate) trait Backprop: Sync {
    /// Number of parameters P.
    fn params(&self) -> usize;
    /// Number of outputs K.
    fn outputs(&self) -> usize;
    /// What the forward pass keeps.
    type Tape;
    /// Runs the forward pass on `X`.
    fn record(&self, w: &[f64], x: MatRef<'_, f64>) -> Self::Tape;
    /// The outputs `F` in a tape.
    fn output(tape: &Self::Tape) -> &Mat<f64>;
    /// Backpropagates cotangent rows `g` (row m of example `m / rpe`) into `sink`.
    fn backprop(&self, w: &[f64], tape: &Self::Tape, g: Mat<f64>, rpe: usize, sink: Sink<'_>);
}

/// [`Network::forward_reduce_into`] from one recorded forward pass.
pub(crate) fn reduce<B: Backprop>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
    requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
    out: &mut Vec<Vec<f64>>,
) -> Mat<f64> {
    let tape = net.record(w, x);
    let f = B::output(&tape).clone();
    let cots = requests(f.as_ref());
    out.resize_with(cots.len(), Vec::new);
    let p = net.params();
    for (c, acc) in cots.into_iter().zip(out.iter_mut()) {
        acc.clear();
        acc.resize(
            if c.reduce == Reduce::SumAndSumSq {
                2 * p
            } else {
                p
            },
            0.0,
        );
        let sink = match c.reduce {
            Reduce::Sum => Sink::Sum(acc),
            Reduce::SumSq => Sink::SumSq(acc),
            Reduce::SumAndSumSq => {
                let (s, q) = acc.split_at_mut(p);
                Sink::SumAndSumSq(s, q)
            }
        };
        net.backprop(w, &tape, c.rows, c.rows_per_example, sink);
    }
    f
}

/// Records the forward pass on `X` and backpropagates the seeds `e_k` (row `n·K + k` for
/// output k of example n) into `sink`: the Jacobian rows, in whatever form the sink keeps them.
/// Returns the tape.
pub(crate) fn backprop_output_seeds<B: Backprop>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
    sink: Sink<'_>,
) -> B::Tape {
    let (n, k) = (x.nrows(), net.outputs());
    let tape = net.record(w, x);
    let seed = Mat::from_fn(n * k, k, |m, j| if m % k == j { 1.0 } else { 0.0 });
    net.backprop(w, &tape, seed, k, sink);
    tape
}

/// Outputs and Jacobian rows of a chunk of examples.
fn jacobian_chunk<B: Backprop>(net: &B, w: &[f64], x: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
    let mut jac = Mat::<f64>::zeros(x.nrows() * net.outputs(), net.params());
    let tape = backprop_output_seeds(net, w, x, Sink::Rows(jac.as_mut()));
    (B::output(&tape).clone(), jac)
}

/// [`Network::forward_jacobian`]: chunks of examples in parallel above a few chunks.
pub(crate) fn forward_jacobian<B: Backprop + Sync>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
) -> (Mat<f64>, Mat<f64>) {
    let (n, k) = (x.nrows(), net.outputs());
    if n <= 4 * JACOBIAN_CHUNK {
        return jacobian_chunk(net, w, x);
    }
    let starts: Vec<usize> = (0..n).step_by(JACOBIAN_CHUNK).collect();
    let blocks: Vec<(Mat<f64>, Mat<f64>)> = starts
        .par_iter()
        .map(|&s| jacobian_chunk(net, w, x.subrows(s, JACOBIAN_CHUNK.min(n - s))))
        .collect();
    let mut f = Mat::<f64>::zeros(n, k);
    let mut jac = Mat::<f64>::zeros(n * k, net.params());
    for (s, (fb, jb)) in starts.iter().zip(&blocks) {
        f.as_mut().subrows_mut(*s, fb.nrows()).copy_from(fb);
        jac.as_mut().subrows_mut(s * k, jb.nrows()).copy_from(jb);
    }
    (f, jac)
}
