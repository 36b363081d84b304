//! Multi-layer perceptron `f(x) = W_L φ(… φ(W_1 x + b_1) …) + b_L` with hand-written
//! backward pass and per-example Jacobians.
//!
//! For a dense layer `z = W a + b` with output sensitivity `g = ∂f_k/∂z` (one row per output
//! k and example), `∂f_k/∂W = g aᵀ`, `∂f_k/∂b = g` and the sensitivity passed down is
//! `(g W) ⊙ φ'(a_in)`. Stacking the K rows of all N examples makes the backward pass a matrix
//! product of an NK×out matrix with `W`.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use super::dense::dense_param_derivs;
use super::{Activation, Backprop, Sink};
use crate::error::{Error, Result};
use crate::linalg::{col, col_mut};

/// An MLP with layer sizes `[D, h_1, …, K]`, one activation on every hidden layer and a
/// linear output: the fused dense path of a [`super::Sequential`] that is one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mlp {
    /// Layer widths, input first, output last.
    pub(crate) sizes: Vec<usize>,
    /// Hidden activation.
    pub(crate) activation: Activation,
}

impl Mlp {
    /// An MLP with the given sizes (at least input and output) and hidden activation.
    pub fn new(sizes: Vec<usize>, activation: Activation) -> Result<Self> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(Error::Invalid(format!(
                "architecture {sizes:?}: needs at least an input and an output width, all positive"
            )));
        }
        let params = sizes.windows(2).fold(0usize, |a, w| {
            a.saturating_add(w[1].saturating_mul(w[0].saturating_add(1)))
        });
        let max = crate::nn::MAX_PARAMS;
        if params > max {
            return Err(Error::Invalid(format!(
                "architecture {sizes:?} would have {params} parameters; at most {max} are supported"
            )));
        }
        Ok(Mlp { sizes, activation })
    }

    /// Parses `"2-20-1"` (widths separated by `-`, `x` or `,`).
    pub fn parse(spec: &str, activation: Activation) -> Result<Self> {
        let sizes = spec
            .split(['-', 'x', ','])
            .map(|t| {
                t.trim().parse::<usize>().map_err(|_| {
                    Error::Invalid(format!(
                        "architecture '{spec}': '{t}' is not a positive width (expected e.g. 2-20-1)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Mlp::new(sizes, activation)
    }

    /// Offset of layer `l`'s weight in the flat vector.
    fn offsets(&self) -> Vec<usize> {
        let mut off = Vec::with_capacity(self.sizes.len());
        let mut o = 0;
        for l in 0..self.sizes.len() - 1 {
            off.push(o);
            o += self.sizes[l + 1] * (self.sizes[l] + 1);
        }
        off.push(o);
        off
    }

    /// Weight `W_l` (out×in) as a view of the flat vector.
    fn weight<'a>(&self, w: &'a [f64], off: usize, l: usize) -> MatRef<'a, f64> {
        let (i, o) = (self.sizes[l], self.sizes[l + 1]);
        MatRef::from_row_major_slice(&w[off..off + o * i], o, i)
    }

    /// Post-activation outputs of every layer: `[X, A_1, …, A_{L−1}, F]`.
    fn forward_all(&self, w: &[f64], x: MatRef<'_, f64>) -> Vec<Mat<f64>> {
        let off = self.offsets();
        let n_layers = self.sizes.len() - 1;
        let mut acts = Vec::with_capacity(n_layers + 1);
        acts.push(x.to_owned());
        for l in 0..n_layers {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            let a = acts.last().expect("input pushed");
            let mut z = Mat::<f64>::zeros(a.nrows(), o);
            matmul(
                z.as_mut(),
                Accum::Replace,
                a.as_ref(),
                self.weight(w, off[l], l).transpose(),
                1.0,
                Par::Seq,
            );
            let bias = &w[off[l] + o * i..off[l] + o * i + o];
            let act = if l + 1 < n_layers {
                self.activation
            } else {
                Activation::Identity
            };
            for (j, &b) in bias.iter().enumerate() {
                act.apply_slice(col_mut(z.as_mut(), j), b);
            }
            acts.push(z);
        }
        acts
    }

    /// Backpropagates cotangent rows `g` (M×K, row m belonging to example `m / rpe`).
    fn backward(&self, w: &[f64], acts: &[Mat<f64>], g: Mat<f64>, rpe: usize, mut sink: Sink<'_>) {
        let off = self.offsets();
        let n_layers = self.sizes.len() - 1;
        let mut g = g;
        for l in (0..n_layers).rev() {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            let a_in = &acts[l];
            let w_off = off[l];
            dense_param_derivs(&mut sink, a_in.as_ref(), g.as_ref(), rpe, w_off, i, o);
            if l > 0 {
                let mut g_in = Mat::<f64>::zeros(g.nrows(), i);
                matmul(
                    g_in.as_mut(),
                    Accum::Replace,
                    g.as_ref(),
                    self.weight(w, w_off, l),
                    1.0,
                    Par::Seq,
                );
                for c in 0..i {
                    let (gc, ac) = (col_mut(g_in.as_mut(), c), col(a_in.as_ref(), c));
                    self.activation.scale_by_derivative(gc, ac, rpe);
                }
                g = g_in;
            }
        }
    }

    /// Outputs `F` (N×K) for inputs `X` (N×D).
    pub(crate) fn forward(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        self.check_input(w, x);
        self.forward_all(w, x).pop().expect("output layer")
    }

    fn check_input(&self, w: &[f64], x: MatRef<'_, f64>) {
        assert_eq!(w.len(), self.params(), "parameter vector length");
        assert_eq!(x.ncols(), self.sizes[0], "input width");
    }
}

impl Backprop for Mlp {
    type Tape = Vec<Mat<f64>>;

    fn params(&self) -> usize {
        *self.offsets().last().expect("offsets end with P")
    }

    fn outputs(&self) -> usize {
        *self.sizes.last().expect("sizes non-empty")
    }

    fn record(&self, w: &[f64], x: MatRef<'_, f64>) -> Self::Tape {
        self.check_input(w, x);
        self.forward_all(w, x)
    }

    fn output(tape: &Self::Tape) -> &Mat<f64> {
        tape.last().expect("output layer")
    }

    fn backprop(&self, w: &[f64], tape: &Self::Tape, g: Mat<f64>, rpe: usize, sink: Sink<'_>) {
        self.backward(w, tape, g, rpe, sink)
    }
}
