//! Structured kernels `J_a J_bᵀ` from per-layer Jacobian factors, without forming J.
//!
//! The stacked Jacobian rows of a dense layer `z = W a + b` are `g_m ⊗ ã_{n(m)}` with
//! `ã = [a, 1]`, so the layer adds `(G_a G_bᵀ) ⊙ (Ã_a Ã_bᵀ)` to the kernel (the second factor
//! indexed by example). Any other layer with parameters adds `B_a B_bᵀ` of its own Jacobian
//! block. Kernels are computed in parallel column tiles, so that each tile's products and
//! Hadamard updates stay in cache; a symmetric kernel computes its lower half and mirrors it.
//! Factors come from the f64 backward pass and are rounded once to the kernel's type
//! ([`Real`]: f64, or f32 at twice the GEMM rate).

use faer::linalg::matmul::matmul;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{backprop_output_seeds, Backprop, Sink, JACOBIAN_CHUNK};
use crate::linalg::{col, col_mut, Real};

/// Columns per parallel kernel tile (rounded up to whole examples).
const TILE: usize = 128;
/// Bytes per column of the row blocks a tile is computed in: 512 f32 or 256 f64 rows
/// (rounded up to whole examples), so that a block's three matrices stay in the core's L2.
const ROW_BLOCK_BYTES: usize = 2048;

/// One layer's share of stacked Jacobian rows.
#[derive(Debug, Clone)]
pub(crate) enum Factor<T = f64> {
    /// A dense layer: row m of its Jacobian block is `G_m ⊗ Ã_{n(m)}`, with `G` (rows ×
    /// outputs) and `Ã = [A, 1]` (examples × (inputs + 1)): weights, then the bias.
    Dense { g: Mat<T>, a: Mat<T> },
    /// A dense layer whose outputs are the network's `k > 1` outputs (`G_m = e_{m mod k}`):
    /// row m of its Jacobian block is `e_{m mod k} ⊗ Ã_{n(m)}`, so it adds
    /// `δ_{kk'} (Ã_a Ã_bᵀ)_{nn'}` to the kernel, with no `G` product and no Hadamard update.
    Outputs { a: Mat<T>, k: usize },
    /// Any other layer with parameters: its Jacobian block (rows × the layer's parameters).
    Block(Mat<T>),
}

impl<T> Factor<T> {
    /// Number of Jacobian rows.
    fn rows(&self) -> usize {
        match self {
            Factor::Dense { g, .. } | Factor::Block(g) => g.nrows(),
            Factor::Outputs { a, k } => a.nrows() * k,
        }
    }
}

/// The rows and columns of a kernel of the row factors `fa`.
enum Cols<'a, T> {
    /// `J_a[..rows] J_aᵀ`: the first `rows` rows of `fa` against all of them. The leading
    /// square block is symmetric: its lower half is computed and its upper half mirrored.
    Same { rows: usize },
    /// All rows of `fa` against the rows of other factors.
    Of(&'a [Factor<T>]),
}

/// `J_a J_bᵀ` from factors, `k` rows per example.
fn factor_kernel<T: Real>(fa: &[Factor<T>], cols: Cols<'_, T>, k: usize) -> Mat<T> {
    let (m, n) = kernel_shape(fa, &cols);
    let sym = matches!(cols, Cols::Same { .. });
    let mut out = Mat::<T>::zeros(m, n);
    factor_kernel_into(fa, cols, k, out.as_mut());
    if sym {
        crate::linalg::mirror_lower(out.as_mut().subcols_mut(0, m));
    }
    out
}

/// Rows and columns of a kernel.
fn kernel_shape<T>(fa: &[Factor<T>], cols: &Cols<'_, T>) -> (usize, usize) {
    let m = fa.first().map_or(0, Factor::rows);
    match cols {
        Cols::Same { rows } => (*rows, m),
        Cols::Of(fb) => (m, fb.first().map_or(0, Factor::rows)),
    }
}

/// Adds `J_a J_bᵀ` to `out` (zeros for the kernel itself); with [`Cols::Same`], only the
/// lower half of the leading square block, which [`crate::linalg::mirror_lower`] completes.
fn factor_kernel_into<T: Real>(fa: &[Factor<T>], cols: Cols<'_, T>, k: usize, out: MatMut<'_, T>) {
    let (m, _) = kernel_shape(fa, &cols);
    // Columns before `split` are those of the symmetric block.
    let (fb, split) = match cols {
        Cols::Same { rows } => (fa, rows),
        Cols::Of(fb) => (fb, 0),
    };
    assert!(
        fa.len() == fb.len()
            && fa.iter().zip(fb).all(|p| matches!(
                p,
                (Factor::Dense { .. }, Factor::Dense { .. })
                    | (Factor::Outputs { .. }, Factor::Outputs { .. })
                    | (Factor::Block(_), Factor::Block(_))
            )),
        "both sides of a kernel come from the same network"
    );
    // Column tiles of whole examples; a symmetric tile starts at its diagonal block. Each tile
    // goes through all layers one row block at a time, so that the block of the kernel, the
    // block's products and its Hadamard updates stay in the core's cache.
    let tile = k * TILE.div_ceil(k);
    let block = k * (ROW_BLOCK_BYTES / std::mem::size_of::<T>()).div_ceil(k);
    let (left, right) = out.split_at_col_mut(split);
    let tiles = |dst: MatMut<'_, T>, first: usize| {
        dst.par_col_chunks_mut(tile)
            .enumerate()
            .with_max_len(1)
            .for_each(|(t, dst)| {
                let (c0, w) = (first + t * tile, dst.ncols());
                let r0 = if c0 < split { c0 } else { 0 };
                let mut dst = dst.subrows_mut(r0, m - r0);
                let mut gg = Mat::<T>::zeros(block, w);
                let mut xx = Mat::<T>::zeros(block / k, w / k);
                let mut xe = Mat::<T>::zeros(block, w / k);
                for b0 in (r0..m).step_by(block) {
                    let h = block.min(m - b0);
                    let mut d = dst.rb_mut().subrows_mut(b0 - r0, h);
                    for (a, b) in fa.iter().zip(fb) {
                        let (aa, ab, gs) = match (a, b) {
                            (Factor::Block(ja), Factor::Block(jb)) => {
                                a_bt_seq(
                                    d.rb_mut(),
                                    Accum::Add,
                                    ja.as_ref().subrows(b0, h),
                                    jb.as_ref().subrows(c0, w),
                                );
                                continue;
                            }
                            (Factor::Dense { g: ga, a: aa }, Factor::Dense { g: gb, a: ab }) => {
                                (aa, ab, Some((ga, gb)))
                            }
                            (Factor::Outputs { a: aa, .. }, Factor::Outputs { a: ab, .. }) => {
                                (aa, ab, None)
                            }
                            _ => unreachable!("checked above"),
                        };
                        let mut xx = xx.as_mut().subrows_mut(0, h / k);
                        a_bt_seq(
                            xx.rb_mut(),
                            Accum::Replace,
                            aa.as_ref().subrows(b0 / k, h / k),
                            ab.as_ref().subrows(c0 / k, w / k),
                        );
                        let Some((ga, gb)) = gs else {
                            // Output o of each column's example meets output o of each row's.
                            for c in 0..w {
                                let x = col(xx.rb(), c / k);
                                col_mut(d.rb_mut(), c)[c % k..]
                                    .iter_mut()
                                    .step_by(k)
                                    .zip(x)
                                    .for_each(|(d, &x)| *d += x);
                            }
                            continue;
                        };
                        let mut gg = gg.as_mut().subrows_mut(0, h);
                        a_bt_seq(
                            gg.rb_mut(),
                            Accum::Replace,
                            ga.as_ref().subrows(b0, h),
                            gb.as_ref().subrows(c0, w),
                        );
                        // Each example's entry of Ã_a Ã_bᵀ, repeated over its k rows.
                        let x = if k == 1 {
                            xx.rb()
                        } else {
                            let mut e = xe.as_mut().subrows_mut(0, h);
                            for j in 0..w / k {
                                col_mut(e.rb_mut(), j)
                                    .chunks_exact_mut(k)
                                    .zip(col(xx.rb(), j))
                                    .for_each(|(e, &x)| e.fill(x));
                            }
                            xe.as_ref().subrows(0, h)
                        };
                        hadamard_add(d.rb_mut(), gg.rb(), x, k);
                    }
                }
            });
    };
    rayon::join(|| tiles(left, 0), || tiles(right, split));
}

/// `D = A Bᵀ` (or `D += A Bᵀ`) on the calling thread.
fn a_bt_seq<T: Real>(dst: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
    matmul(dst, accum, a, b.transpose(), T::one_impl(), Par::Seq);
}

/// Floating-point operations of the products in [`factor_kernel_into`]: `2·(entries)·out_l`
/// for `G_a G_bᵀ`, `2·(example pairs)·(in_l + 1)` for `Ã_a Ã_bᵀ`, `2·(entries)·P_l` for a block
/// (entries: the whole kernel, or the lower half of a symmetric one, as its tiles cover it).
fn factor_kernel_flops<T>(fa: &[Factor<T>], cols: &Cols<'_, T>, k: usize) -> f64 {
    let (m, n) = kernel_shape(fa, cols);
    let tile = k * TILE.div_ceil(k);
    let entries: f64 = match cols {
        Cols::Same { .. } => {
            (0..m)
                .step_by(tile)
                .map(|c0| ((m - c0) * tile.min(m - c0)) as f64)
                .sum::<f64>()
                + (m * (n - m)) as f64
        }
        Cols::Of(_) => (m * n) as f64,
    };
    let pairs = entries / (k * k) as f64;
    fa.iter()
        .map(|f| match f {
            Factor::Dense { g, a } => 2.0 * (entries * g.ncols() as f64 + pairs * a.ncols() as f64),
            Factor::Outputs { a, .. } => 2.0 * pairs * a.ncols() as f64,
            Factor::Block(b) => 2.0 * entries * b.ncols() as f64,
        })
        .sum()
}

/// `D += G ⊙ X`, where the k columns of one example share its column of `X`.
fn hadamard_add<T: Real>(mut dst: MatMut<'_, T>, gg: MatRef<'_, T>, xx: MatRef<'_, T>, k: usize) {
    for c in 0..dst.ncols() {
        col_mut(dst.rb_mut(), c)
            .iter_mut()
            .zip(col(gg, c))
            .zip(col(xx, c / k))
            .for_each(|((d, &g), &x)| *d += g * x);
    }
}

/// The diagonal of `J Jᵀ` from factors: `Σ_dense ‖G_m‖² ‖Ã_{n(m)}‖² + Σ_other ‖B_m‖²`
/// (`‖G_m‖ = 1` for [`Factor::Outputs`]).
fn factor_kernel_diag(f: &[Factor], k: usize) -> Vec<f64> {
    use crate::linalg::row_sq_norms;
    let mut out = vec![0.0; f.first().map_or(0, Factor::rows)];
    for fac in f {
        match fac {
            Factor::Dense { g, a } => {
                let (gn, an) = (row_sq_norms(g.as_ref()), row_sq_norms(a.as_ref()));
                out.iter_mut()
                    .zip(gn)
                    .enumerate()
                    .for_each(|(m, (o, v))| *o += v * an[m / k]);
            }
            Factor::Outputs { a, .. } => {
                let an = row_sq_norms(a.as_ref());
                out.iter_mut()
                    .enumerate()
                    .for_each(|(m, o)| *o += an[m / k]);
            }
            Factor::Block(j) => out
                .iter_mut()
                .zip(row_sq_norms(j.as_ref()))
                .for_each(|(o, v)| *o += v),
        }
    }
    out
}

/// The factors of the stacked Jacobian rows (K per example, seeds `e_k`), computed in parallel
/// over chunks of examples, stacked by rows and rounded to `T`.
fn forward_factors<B: Backprop + Sync, T: Real>(
    net: &B,
    w: &[f64],
    x: MatRef<'_, f64>,
) -> Vec<Factor<T>> {
    let (n, k) = (x.nrows(), net.outputs());
    let starts: Vec<usize> = (0..n).step_by(JACOBIAN_CHUNK).collect();
    let chunks: Vec<Vec<Factor>> = starts
        .par_iter()
        .map(|&s| {
            let xc = x.subrows(s, JACOBIAN_CHUNK.min(n - s));
            let mut f = Vec::new();
            backprop_output_seeds(net, w, xc, Sink::Factors(&mut f));
            f
        })
        .collect();
    let stack = |part: &dyn Fn(&Vec<Factor>) -> &Mat<f64>| {
        let parts: Vec<&Mat<f64>> = chunks.iter().map(part).collect();
        let rows = parts.iter().map(|m| m.nrows()).sum();
        let mut out = Mat::<T>::zeros(rows, parts[0].ncols());
        let mut r0 = 0;
        for p in parts {
            for j in 0..p.ncols() {
                out.as_mut()
                    .col_mut(j)
                    .subrows_mut(r0, p.nrows())
                    .iter_mut()
                    .zip(p.col(j).iter())
                    .for_each(|(o, &v)| *o = T::of(v));
            }
            r0 += p.nrows();
        }
        out
    };
    (0..chunks.first().map_or(0, Vec::len))
        .map(|l| match &chunks[0][l] {
            Factor::Dense { .. } => cheaper_form(
                stack(&|c| match &c[l] {
                    Factor::Dense { g, .. } => g,
                    _ => unreachable!("same layer in every chunk"),
                }),
                stack(&|c| match &c[l] {
                    Factor::Dense { a, .. } => a,
                    _ => unreachable!("same layer in every chunk"),
                }),
                k,
            ),
            Factor::Block(_) => Factor::Block(stack(&|c| match &c[l] {
                Factor::Block(b) => b,
                _ => unreachable!("same layer in every chunk"),
            })),
            Factor::Outputs { .. } => unreachable!("layers give dense factors or blocks"),
        })
        .collect()
}

/// Cost of one Hadamard update per kernel entry, in GEMM flops: the update is memory-bound
/// (about 1 ns per entry and layer against 8.6 ns for 1044 GEMM flops, measured on B2).
const HADAMARD_FLOPS: usize = 125;
/// Largest Jacobian block formed for a dense layer instead of its factors.
const MAX_BLOCK_BYTES: usize = 256 << 20;

/// A dense layer's factors, or its Jacobian block `G_m ⊗ Ã_{n(m)}` where that is cheaper per
/// kernel entry: `2·out·(in + 1)` flops for the block's product against
/// `2·out + 2·(in + 1)/k² + HADAMARD_FLOPS` for the two factor products and the Hadamard update
/// (a layer with one output, or with one input and its bias, for instance). A layer that feeds
/// the `k > 1` outputs directly (`G_m = e_{m mod k}`) becomes [`Factor::Outputs`]: `2·(in + 1)/k²`
/// flops and a `1/k` share of an update, cheaper than both.
fn cheaper_form<T: Real>(g: Mat<T>, a: Mat<T>, k: usize) -> Factor<T> {
    let (rows, out, inp) = (g.nrows(), g.ncols(), a.ncols());
    if k > 1 && out == k && g == outputs_g(rows, k) {
        return Factor::Outputs { a, k };
    }
    let block_flops = 2 * out * inp;
    let factor_flops = 2 * out + 2 * inp / (k * k) + HADAMARD_FLOPS;
    if block_flops >= factor_flops || rows * out * inp * std::mem::size_of::<T>() > MAX_BLOCK_BYTES
    {
        return Factor::Dense { g, a };
    }
    block_form(&g, &a, k)
}

/// `G_m = e_{m mod k}` (rows × k): the factor of a layer that feeds the outputs directly.
fn outputs_g<T: Real>(rows: usize, k: usize) -> Mat<T> {
    Mat::from_fn(rows, k, |m, o| {
        if m % k == o {
            T::one_impl()
        } else {
            T::zero_impl()
        }
    })
}

/// The Jacobian block of a dense layer, rows `G_m ⊗ Ã_{n(m)}`, in the parameter order (the
/// weight row-major, then the bias).
fn block_form<T: Real>(g: &Mat<T>, a: &Mat<T>, k: usize) -> Factor<T> {
    let (out, inp) = (g.ncols(), a.ncols() - 1);
    Factor::Block(Mat::from_fn(g.nrows(), out * (inp + 1), |m, c| {
        if c < out * inp {
            g[(m, c / inp)] * a[(m / k, c % inp)]
        } else {
            g[(m, c - out * inp)] * a[(m / k, inp)]
        }
    }))
}

/// Gives both sides of a cross kernel the same form for every layer. A side's form can depend
/// on its data (an exact `G = e_k`, a block's size), so a layer that is [`Factor::Outputs`] on
/// one side only is written out as factors, and one that is a block on one side becomes a
/// block on the other.
fn same_forms<T: Real>(fa: &mut [Factor<T>], fb: &mut [Factor<T>], k: usize) {
    for (a, b) in fa.iter_mut().zip(fb.iter_mut()) {
        let block = matches!(a, Factor::Block(_)) || matches!(b, Factor::Block(_));
        if matches!((&*a, &*b), (Factor::Outputs { .. }, Factor::Outputs { .. })) {
            continue;
        }
        for f in [a, b] {
            *f = match std::mem::replace(f, Factor::Block(Mat::new())) {
                Factor::Outputs { a, k } => {
                    let g = outputs_g(a.nrows() * k, k);
                    if block {
                        block_form(&g, &a, k)
                    } else {
                        Factor::Dense { g, a }
                    }
                }
                Factor::Dense { g, a } if block => block_form(&g, &a, k),
                other => other,
            };
        }
    }
}

/// The kernel blocks of a GP predictive at test inputs `X*`, from one set of factors of the
/// stacked inputs `[X; X*]`.
#[derive(Debug, Clone)]
pub struct NtkBlocks {
    /// `J(X) [J(X); J(X*)]ᵀ` (NK × (N + N*)K): the symmetric train block `J(X)J(X)ᵀ` beside
    /// `J(X)J(X*)ᵀ`, whose columns (one per test row) are the right-hand sides of the
    /// predictive's solve.
    pub kernel: Mat<f64>,
    /// `diag J(X*)J(X*)ᵀ` (N*K).
    pub test_diag: Vec<f64>,
}

impl NtkBlocks {
    /// Rows of the train block.
    pub fn train_rows(&self) -> usize {
        self.kernel.nrows()
    }

    /// `J(X) J(X)ᵀ`.
    pub fn train(&self) -> MatRef<'_, f64> {
        self.kernel.as_ref().subcols(0, self.train_rows())
    }

    /// `J(X*) J(X)ᵀ`, a transposed view.
    pub fn cross(&self) -> MatRef<'_, f64> {
        let n = self.train_rows();
        self.kernel
            .as_ref()
            .subcols(n, self.kernel.ncols() - n)
            .transpose()
    }
}

/// The stacked Jacobian `J(X)` of a network at `w` (K rows per example, row `n·K + k` =
/// `∂f_k(x_n)/∂w`), held as per-layer factors: `J` as an operator for kernels `J_a J_bᵀ`, never
/// formed. A dense layer keeps `G ⊗ Ã` (`Ã = [A, 1]`), or its Jacobian block where a cost model
/// says that is cheaper per kernel entry; other layers keep their blocks. `T` is the kernel's
/// type: f64, or f32 at twice the GEMM rate (factors are rounded once from the f64 pass).
#[derive(Debug, Clone)]
pub struct JacobianFactors<T = f64> {
    layers: Vec<Factor<T>>,
    k: usize,
}

impl<T: Real> JacobianFactors<T> {
    /// The factors of `J(X)` at `w`, from one forward and one backward pass per chunk of
    /// examples, in parallel.
    pub(crate) fn new<B: Backprop + Sync>(net: &B, w: &[f64], x: MatRef<'_, f64>) -> Self {
        Self {
            layers: forward_factors::<B, T>(net, w, x),
            k: net.outputs(),
        }
    }

    /// Each layer's factor, last layer first.
    pub(crate) fn layers(&self) -> &[Factor<T>] {
        &self.layers
    }

    /// Rows per example K.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows `NK` of `J`.
    pub fn rows(&self) -> usize {
        self.layers.first().map_or(0, Factor::rows)
    }

    /// The factors of output `c`'s rows alone (one row per example, `k = 1`): the Jacobian
    /// `∂f_c(X)/∂w`, for per-output (independent) kernels.
    pub fn output(&self, c: usize) -> Self {
        let k = self.k;
        assert!(c < k, "output {c} of {k}");
        let pick = |m: &Mat<T>| Mat::from_fn(m.nrows() / k, m.ncols(), |e, j| m[(e * k + c, j)]);
        let layers = self
            .layers
            .iter()
            .map(|f| match f {
                Factor::Dense { g, a } => Factor::Dense {
                    g: pick(g),
                    a: a.clone(),
                },
                // `G_m = e_c` for every example: the one output's rows are `ã_n`.
                Factor::Outputs { a, .. } => Factor::Dense {
                    g: Mat::from_fn(a.nrows(), k, |_, j| {
                        if j == c {
                            T::one_impl()
                        } else {
                            T::zero_impl()
                        }
                    }),
                    a: a.clone(),
                },
                Factor::Block(b) => Factor::Block(pick(b)),
            })
            .collect();
        Self { layers, k: 1 }
    }

    /// `J Jᵀ` (NK × NK): the lower half computed, the upper half mirrored.
    pub fn gram(&self) -> Mat<T> {
        self.gram_rows(self.rows())
    }

    /// `J[..rows] Jᵀ` (rows × NK): the first `rows` rows against all of them.
    pub fn gram_rows(&self, rows: usize) -> Mat<T> {
        factor_kernel(&self.layers, Cols::Same { rows }, self.k)
    }

    /// Adds the lower half of `J[..rows] J[..rows]ᵀ` and all of `J[..rows] J[rows..]ᵀ` to `out`
    /// (rows × NK; zeros for the kernel itself), which [`crate::linalg::mirror_lower`] on its
    /// leading square completes. Returns the floating-point operations of the products.
    pub fn add_gram_lower(&self, rows: usize, out: MatMut<'_, T>) -> f64 {
        let cols = Cols::Same { rows };
        let flops = factor_kernel_flops(&self.layers, &cols, self.k);
        factor_kernel_into(&self.layers, cols, self.k, out);
        flops
    }

    /// `J_a J_bᵀ` (N_aK × N_bK) against the factors of the same network on other inputs.
    pub fn cross(mut self, mut other: Self) -> Mat<T> {
        same_forms(&mut self.layers, &mut other.layers, self.k);
        factor_kernel(&self.layers, Cols::Of(&other.layers), self.k)
    }
}

impl JacobianFactors<f64> {
    /// `diag J Jᵀ`: `‖J_m‖²` for each row m.
    pub fn diag(&self) -> Vec<f64> {
        factor_kernel_diag(&self.layers, self.k)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        block_form, cheaper_form, factor_kernel, factor_kernel_diag, same_forms, Cols, Factor,
    };
    use faer::Mat;

    /// Narrow layers become Jacobian blocks (rows `g_m ⊗ ã_{n(m)}`); wide ones keep factors.
    #[test]
    fn the_cost_model_picks_blocks_for_narrow_layers_only() {
        let (g, a) = (
            Mat::from_fn(6, 1, |m, _| m as f64 + 1.0),
            Mat::from_fn(3, 4, |e, c| (e * 4 + c) as f64),
        );
        let Factor::Block(b) = cheaper_form(g, a, 2) else {
            panic!("one output: a block")
        };
        assert_eq!((b.nrows(), b.ncols()), (6, 4));
        assert_eq!(b[(5, 3)], 6.0 * 11.0);
        let wide = cheaper_form(Mat::<f64>::zeros(6, 100), Mat::<f64>::zeros(3, 101), 2);
        assert!(matches!(wide, Factor::Dense { .. }));
    }

    /// A layer feeding the outputs (`G_m = e_{m mod k}`) is recognised, and its kernel and
    /// diagonal equal those of its dense factors, in and across the symmetric block.
    #[test]
    fn the_output_layer_needs_no_g_product() {
        let (k, n) = (3, 700);
        let g = Mat::from_fn(n * k, k, |m, o| f64::from(u8::from(m % k == o)));
        let a = Mat::from_fn(n, 5, |e, c| ((e * 7 + c * 3) % 11) as f64 - 5.0);
        let mut other = g.clone();
        other[(4, 0)] = 1e-300;
        assert!(!matches!(
            cheaper_form(other, a.clone(), k),
            Factor::Outputs { .. }
        ));
        let Factor::Outputs { .. } = cheaper_form(g.clone(), a.clone(), k) else {
            panic!("identity G: the output form")
        };
        let outputs = [cheaper_form(g.clone(), a.clone(), k)];
        let dense = [Factor::Dense { g, a }];
        for rows in [n * k, 400 * k] {
            let (o, d) = (
                factor_kernel(&outputs, Cols::Same { rows }, k),
                factor_kernel(&dense, Cols::Same { rows }, k),
            );
            assert_eq!((o.nrows(), o.ncols()), (rows, n * k));
            assert_eq!(o, d);
        }
        assert_eq!(
            factor_kernel_diag(&outputs, k),
            factor_kernel_diag(&dense, k)
        );
    }

    /// A cross kernel whose sides chose different forms for a layer (an exact `G = e_k` on one
    /// side only; a block on one side only) gets one form for both, and the kernel `J_a J_bᵀ`.
    #[test]
    fn both_sides_of_a_cross_kernel_get_one_form() {
        let k = 2;
        let (na, nb) = (5, 4);
        let ga = Mat::from_fn(na * k, k, |m, o| f64::from(u8::from(m % k == o)));
        let gb = Mat::from_fn(nb * k, k, |m, o| ((m * 3 + o * 5) % 7) as f64 - 3.0);
        let aa = Mat::from_fn(na, 3, |e, c| ((e * 5 + c) % 4) as f64 - 1.5);
        let ab = Mat::from_fn(nb, 3, |e, c| ((e + c * 3) % 5) as f64 - 2.0);
        let blocks = |g: &Mat<f64>, a: &Mat<f64>| match block_form(g, a, k) {
            Factor::Block(j) => j,
            _ => unreachable!("a block"),
        };
        let (ja, jb) = (blocks(&ga, &aa), blocks(&gb, &ab));
        let expected = &ja * jb.transpose();
        let outputs = || Factor::Outputs { a: aa.clone(), k };
        let dense_b = || Factor::Dense {
            g: gb.clone(),
            a: ab.clone(),
        };
        for (fa, fb, swapped) in [
            (outputs(), dense_b(), false),
            (outputs(), Factor::Block(jb.clone()), false),
            (Factor::Block(ja.clone()), dense_b(), false),
            (dense_b(), outputs(), true),
        ] {
            let (mut fa, mut fb) = (vec![fa], vec![fb]);
            same_forms(&mut fa, &mut fb, k);
            let kernel = factor_kernel(&fa, Cols::Of(&fb), k);
            let want = if swapped {
                expected.transpose().to_owned()
            } else {
                expected.clone()
            };
            assert_eq!(kernel, want);
        }
    }
}
