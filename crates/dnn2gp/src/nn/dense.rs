//! Parameter derivatives of a dense layer `z = W a + b` for a batch of cotangent rows `g`
//! (row m belongs to example `m / rpe`): `∂(gᵀz)/∂W = g aᵀ`, `∂(gᵀz)/∂b = g`.

use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};

use super::{Factor, KronSums, Sink};
use crate::linalg::at_b;

/// Adds the layer's parameter derivatives (weight at `w_off`, `o×i` row-major, then the bias)
/// to `sink`, reduced over the rows of `g` as the sink asks.
pub(crate) fn dense_param_derivs(
    sink: &mut Sink<'_>,
    a_in: MatRef<'_, f64>,
    g: MatRef<'_, f64>,
    rpe: usize,
    w_off: usize,
    i: usize,
    o: usize,
) {
    let b_off = w_off + o * i;
    let n = a_in.nrows();
    let sum_into = |grad: &mut [f64]| {
        // (gᵀ A)ᵀ = Aᵀ g, stored column-major (in×out) = row-major [out, in].
        let gw = MatMut::from_column_major_slice_mut(&mut grad[w_off..b_off], i, o);
        if rpe == 1 {
            matmul(gw, Accum::Add, a_in.transpose(), g, 1.0, Par::Seq);
        } else {
            matmul(
                gw,
                Accum::Add,
                a_in.transpose(),
                per_example(g, n, rpe, |v| v).as_ref(),
                1.0,
                Par::Seq,
            );
        }
        for j in 0..o {
            grad[b_off + j] += g.col(j).iter().sum::<f64>();
        }
    };
    let sumsq_into = |sq: &mut [f64]| {
        // Σ_m g[m,o]² a[n(m),i]² = Σ_n (Σ_{m∈n} g[m,o]²) a[n,i]²: one product.
        let gsq = per_example(g, n, rpe, |v| v * v);
        let asq = per_example(a_in, n, 1, |v| v * v);
        let sw = MatMut::from_column_major_slice_mut(&mut sq[w_off..b_off], i, o);
        matmul(sw, Accum::Add, asq.transpose(), gsq.as_ref(), 1.0, Par::Seq);
        for j in 0..o {
            sq[b_off + j] += gsq.col(j).iter().sum::<f64>();
        }
    };
    match sink {
        Sink::Discard => {}
        Sink::Sum(grad) => sum_into(grad),
        Sink::SumSq(sq) => sumsq_into(sq),
        Sink::SumAndSumSq(grad, sq) => {
            sum_into(grad);
            sumsq_into(sq);
        }
        Sink::Kron(f) => f.push(KronSums {
            a: at_b(a_in, a_in),
            g: at_b(g, g),
            positions: 1,
            bias: true,
            count: n,
        }),
        Sink::Factors(f) => f.push(Factor::Dense {
            g: g.to_owned(),
            a: Mat::from_fn(n, i + 1, |e, c| if c < i { a_in[(e, c)] } else { 1.0 }),
        }),
        Sink::Rows(jac) => {
            for j in 0..o {
                let gj = g.col(j);
                for c in 0..i {
                    let ac = a_in.col(c);
                    let dst = jac.rb_mut().col_mut(w_off + j * i + c);
                    if rpe == 1 {
                        for ((d, g), a) in dst.iter_mut().zip(gj.iter()).zip(ac.iter()) {
                            *d = g * a;
                        }
                    } else {
                        for (m, d) in dst.iter_mut().enumerate() {
                            *d = gj[m] * ac[m / rpe];
                        }
                    }
                }
                jac.rb_mut().col_mut(b_off + j).copy_from(gj);
            }
        }
    }
}

/// Per-example sums `Σ_{m ∈ e} f(g_m)` over the `rpe` consecutive rows of each of the `n`
/// examples, column by column.
fn per_example(g: MatRef<'_, f64>, n: usize, rpe: usize, f: impl Fn(f64) -> f64) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(n, g.ncols());
    for j in 0..g.ncols() {
        let dst = out.as_mut().col_mut(j);
        let mut src = g.col(j).iter();
        if rpe == 1 {
            crate::linalg::wide(|| dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f(v)));
        } else {
            for d in dst.iter_mut() {
                *d = (&mut src).take(rpe).map(|&v| f(v)).sum();
            }
        }
    }
    out
}
