//! A Linear map over the last axis, `z_t = W a_t + b` at each of `positions` positions per
//! example (one for a vector; the tokens of a sequence), W of shape [outputs, inputs] as
//! `nn.Linear` stores it. Kronecker form: inputs × outputs with `positions` positions.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use super::shared::{add_bias, position_first, rows_contiguous, SharedLinear};
use crate::linalg::Real;
use crate::nn::dense::dense_param_derivs;
use crate::nn::Sink;

/// `z_t = W a_t + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Linear {
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// Positions per example.
    pub positions: usize,
    /// Whether it has a bias.
    pub bias: bool,
}

impl Linear {
    /// Parameters: the weight, then the bias.
    pub fn n_params(&self) -> usize {
        self.outputs * self.inputs + if self.bias { self.outputs } else { 0 }
    }

    fn weight<'a, T>(&self, w: &'a [T]) -> MatRef<'a, T> {
        MatRef::from_row_major_slice(&w[..self.outputs * self.inputs], self.outputs, self.inputs)
    }

    /// `Z` (N × positions·outputs), `w` the op's parameters.
    pub(crate) fn forward<T: Real>(&self, w: &[T], x: &Mat<T>) -> Mat<T> {
        let (n, t, i, o) = (x.nrows(), self.positions, self.inputs, self.outputs);
        let mut z = Mat::<T>::zeros(n, t * o);
        for p in 0..t {
            matmul(
                z.as_mut().subcols_mut(p * o, o),
                Accum::Replace,
                x.as_ref().subcols(p * i, i),
                self.weight(w).transpose(),
                T::one_impl(),
                Par::Seq,
            );
        }
        if self.bias {
            add_bias(z.as_mut(), &w[o * i..], t, false);
        }
        z
    }

    /// Parameter derivatives of the rows `g` into `sink` (parameters at `off`) and, with
    /// `need_input`, the input cotangent `G W` per position.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        w: &[f64],
        off: usize,
        x: &Mat<f64>,
        g: &Mat<f64>,
        rpe: usize,
        sink: &mut Sink<'_>,
        need_input: bool,
    ) -> Option<Mat<f64>> {
        let (t, i, o) = (self.positions, self.inputs, self.outputs);
        let wl = self.weight(w);
        if t == 1 && self.bias {
            dense_param_derivs(sink, x.as_ref(), g.as_ref(), rpe, off, i, o);
            return need_input.then(|| {
                let mut gi = Mat::<f64>::zeros(g.nrows(), i);
                matmul(gi.as_mut(), Accum::Replace, g.as_ref(), wl, 1.0, Par::Seq);
                gi
            });
        }
        let g_t = rows_contiguous(g.as_ref());
        let width = g.ncols();
        let shared = SharedLinear {
            w: wl,
            bias: self.bias,
            w_off: off,
            b_off: off + o * i,
            positions: t,
        };
        let patches = |e: usize| Mat::from_fn(t, i, |p, c| x[(e, p * i + c)]);
        let rows = |m: usize| position_first(&g_t, width, m, o);
        // The input cotangent transposed (a contiguous column per row), transposed back once.
        let mut gi_t = need_input.then(|| Mat::<f64>::zeros(t * i, g.nrows()));
        let mut back = |m: usize, b: MatRef<'_, f64>| {
            let dst = crate::linalg::col_mut(gi_t.as_mut().expect("asked for").as_mut(), m);
            for p in 0..t {
                for c in 0..i {
                    dst[p * i + c] = b[(p, c)];
                }
            }
        };
        shared.backward(
            sink,
            g.nrows(),
            rpe,
            &patches,
            &rows,
            need_input.then_some(&mut back as &mut dyn FnMut(usize, MatRef<'_, f64>)),
        );
        gi_t.map(|t| {
            let mut gi = Mat::<f64>::zeros(g.nrows(), t.nrows());
            crate::linalg::transpose_into(gi.as_mut(), t.as_ref());
            gi
        })
    }
}
