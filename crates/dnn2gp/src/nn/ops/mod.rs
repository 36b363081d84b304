//! The operations of a [`super::Graph`], one per file: each has its forward pass, the
//! vector–Jacobian product for its inputs and, with parameters, their derivatives into every
//! accumulator of the backward pass (`Sink`). Linear maps (`linear`, `conv`) go
//! through `shared` (Kronecker form); the other parameters (`batch_norm`, `layer_norm`) give
//! their derivative rows, from which `shared::rows_into_sink` serves every accumulator.

mod batch_norm;
mod binary;
mod concat;
mod conv;
mod gather;
mod layer_norm;
mod linear;
mod matmul;
mod mean;
mod pool;
mod shared;
mod softmax;
mod unary;

pub use batch_norm::BatchNorm;
pub use binary::{broadcast_index, broadcast_shape, Binary, BinaryKind, Operand};
pub use concat::Concat;
pub use conv::Conv;
pub use gather::{slice_index, transpose_index, Gather};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use matmul::MatMul;
pub use mean::Mean;
pub use pool::{Pool, PoolKind};
pub use softmax::Softmax;
pub use unary::{Unary, UnaryKind};

use faer::Mat;

pub(crate) use conv::{ConvPlan, Fused, Scratch};

use super::Sink;
use crate::linalg::Real;
use shared::rows_into_sink;

/// `image` after the axes of length 1 that lead an image input's `[c, h, w]` (a batch of one,
/// as ONNX shapes have it).
fn leading_ones(input: &[usize], image: Vec<usize>) -> Vec<usize> {
    let lead = input.len().saturating_sub(3);
    if input[..lead].iter().all(|&d| d == 1) {
        let mut s = vec![1; lead];
        s.extend(image);
        s
    } else {
        image
    }
}

/// One operation of a graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `z_t = W a_t + b`.
    Linear(Linear),
    /// 2-D convolution.
    Conv(Conv),
    /// BatchNorm (inference form).
    BatchNorm(BatchNorm),
    /// LayerNorm.
    LayerNorm(LayerNorm),
    /// An element-wise function.
    Unary(Unary),
    /// Element-wise arithmetic with broadcasting.
    Binary(Binary),
    /// Max or average pooling.
    Pool(Pool),
    /// The mean over axes.
    Mean(Mean),
    /// Reshape, flatten, transpose, slice.
    Gather(Gather),
    /// Concatenation.
    Concat(Concat),
    /// Softmax over the last axis.
    Softmax(Softmax),
    /// The product of two activations.
    MatMul(MatMul),
}

/// A parameter tensor's role: the weight of a linear map (Kronecker form: `inputs` ×
/// `outputs`, `positions` per example), its bias, or a tensor without a Kronecker form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear map's weight.
    Weight {
        /// Inputs (a convolution's patch entries).
        inputs: usize,
        /// Outputs.
        outputs: usize,
    },
    /// A linear map's bias.
    Bias,
    /// Any other parameter (BatchNorm's and LayerNorm's γ and β, a grouped convolution's).
    Other,
}

impl Op {
    /// Parameters.
    pub fn n_params(&self) -> usize {
        match self {
            Op::Linear(l) => l.n_params(),
            Op::Conv(c) => c.n_params(),
            Op::BatchNorm(b) => b.n_params(),
            Op::LayerNorm(l) => l.n_params(),
            _ => 0,
        }
    }

    /// The parameter tensors: suffix of the name (`weight`, `bias`), shape and role.
    pub fn tensors(&self) -> Vec<(&'static str, Vec<usize>, Role)> {
        let kron = |inputs, outputs| Role::Weight { inputs, outputs };
        match self {
            Op::Linear(l) => {
                let mut t = vec![(
                    "weight",
                    vec![l.outputs, l.inputs],
                    kron(l.inputs, l.outputs),
                )];
                if l.bias {
                    t.push(("bias", vec![l.outputs], Role::Bias));
                }
                t
            }
            Op::Conv(c) => {
                let shape = vec![
                    c.out_channels,
                    c.in_channels / c.groups,
                    c.kernel[0],
                    c.kernel[1],
                ];
                let grouped = c.groups > 1;
                let mut t = vec![(
                    "weight",
                    shape,
                    if grouped {
                        Role::Other
                    } else {
                        kron(c.patch(), c.out_channels)
                    },
                )];
                if c.bias {
                    t.push((
                        "bias",
                        vec![c.out_channels],
                        if grouped { Role::Other } else { Role::Bias },
                    ));
                }
                t
            }
            Op::BatchNorm(b) if b.affine => vec![
                ("weight", vec![b.channels], Role::Other),
                ("bias", vec![b.channels], Role::Other),
            ],
            Op::LayerNorm(l) => {
                let mut t = Vec::new();
                if l.scale {
                    t.push(("weight", vec![l.size], Role::Other));
                }
                if l.shift {
                    t.push(("bias", vec![l.size], Role::Other));
                }
                t
            }
            _ => Vec::new(),
        }
    }

    /// The per-example output shape for inputs of shapes `x`, or why they do not fit.
    pub fn output_shape(&self, x: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let size = |s: &[usize]| s.iter().product::<usize>();
        let arity = match self {
            Op::Binary(b) => b.arity(),
            Op::Concat(c) => c.shapes.len(),
            Op::MatMul(_) => 2,
            _ => 1,
        };
        if x.len() != arity {
            return Err(format!("{} inputs where it takes {arity}", x.len()));
        }
        let want = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
        Ok(match self {
            Op::Linear(l) => {
                let last = x[0].last().copied().unwrap_or(0);
                // One position reads any input of its size (the flat layout is the same).
                if l.positions == 1 && size(x[0]) == l.inputs && last != l.inputs {
                    return Ok(vec![l.outputs]);
                }
                want(
                    last == l.inputs && size(x[0]) == l.inputs * l.positions,
                    format!(
                        "input {:?} for a Linear of {} inputs at {} positions",
                        x[0], l.inputs, l.positions
                    ),
                )?;
                let mut s = x[0].to_vec();
                *s.last_mut().expect("non-empty") = l.outputs;
                s
            }
            Op::Conv(c) => {
                want(
                    size(x[0]) == c.in_channels * c.input[0] * c.input[1],
                    format!(
                        "input {:?} for a convolution of {:?}",
                        x[0],
                        [c.in_channels, c.input[0], c.input[1]]
                    ),
                )?;
                let [oh, ow] = c.output();
                leading_ones(x[0], vec![c.out_channels, oh, ow])
            }
            Op::Pool(p) => {
                want(
                    size(x[0]) == p.channels * p.input[0] * p.input[1],
                    format!(
                        "input {:?} for pooling of {:?}",
                        x[0],
                        [p.channels, p.input[0], p.input[1]]
                    ),
                )?;
                let [oh, ow] = p.output();
                leading_ones(x[0], vec![p.channels, oh, ow])
            }
            Op::BatchNorm(b) => {
                want(
                    size(x[0]) == b.channels * b.spatial,
                    format!(
                        "input {:?} for a BatchNorm of {} channels",
                        x[0], b.channels
                    ),
                )?;
                x[0].to_vec()
            }
            Op::LayerNorm(l) => {
                want(
                    x[0].last() == Some(&l.size) && size(x[0]) == l.size * l.positions,
                    format!("input {:?} for a LayerNorm over {}", x[0], l.size),
                )?;
                x[0].to_vec()
            }
            Op::Unary(_) => x[0].to_vec(),
            Op::Binary(b) => {
                let mut inputs = x.iter();
                for o in [&b.a, &b.b] {
                    if let Operand::Input { shape } = o {
                        let s = inputs.next().expect("arity checked");
                        want(
                            s == shape,
                            format!("input {s:?} where the operation expects {shape:?}"),
                        )?;
                    }
                }
                b.shape()
            }
            Op::Mean(m) => {
                want(
                    x[0] == m.shape.as_slice(),
                    format!("input {:?} for a mean over {:?}", x[0], m.shape),
                )?;
                m.kept_shape()
            }
            Op::Gather(g) => {
                let n = g.index.as_ref().map_or(size(&g.shape), |i| i.len());
                want(
                    n == size(&g.shape)
                        && (g.index.is_some() || size(x[0]) == n)
                        && g.index
                            .as_ref()
                            .is_none_or(|i| i.iter().all(|&v| v < size(x[0]))),
                    format!("input {:?} does not reshape to {:?}", x[0], g.shape),
                )?;
                g.shape.clone()
            }
            Op::Concat(c) => {
                want(
                    x.iter().zip(&c.shapes).all(|(a, b)| *a == b.as_slice()),
                    format!("inputs {x:?} for a concatenation of {:?}", c.shapes),
                )?;
                c.shape()
            }
            Op::Softmax(s) => {
                want(
                    x[0].last() == Some(&s.size),
                    format!("input {:?} for a softmax over {}", x[0], s.size),
                )?;
                x[0].to_vec()
            }
            Op::MatMul(m) => {
                want(
                    size(x[0]) == m.batch * m.rows * m.inner
                        && size(x[1]) == m.batch * m.inner * m.cols,
                    format!(
                        "inputs {:?} and {:?} for a product of {}×{} and {}×{} matrices",
                        x[0], x[1], m.rows, m.inner, m.inner, m.cols
                    ),
                )?;
                let mut s = x[0][..x[0].len().saturating_sub(2)].to_vec();
                s.extend([m.rows, m.cols]);
                s
            }
        })
    }

    /// The output (N × width) for the inputs `x`, `w` the op's parameters.
    pub(crate) fn forward<T: Real>(&self, w: &[T], x: &[&Mat<T>]) -> Mat<T> {
        match self {
            Op::Linear(l) => l.forward(w, x[0]),
            Op::Conv(c) => c.forward(w, x[0]),
            Op::BatchNorm(b) => b.forward(w, x[0]),
            Op::LayerNorm(l) => l.forward(w, x[0]),
            Op::Unary(u) => u.forward(x[0].as_ref()),
            Op::Binary(b) => b.forward(x),
            Op::Pool(p) => p.forward(x[0]),
            Op::Mean(m) => m.forward(x[0]),
            Op::Gather(g) => g.forward(x[0]),
            Op::Concat(c) => c.forward(x),
            Op::Softmax(s) => s.forward(x[0]),
            Op::MatMul(m) => m.forward(x[0], x[1]),
        }
    }

    /// Floating-point operations per example of the products (a convolution's
    /// `2·out·positions·patch`, a Linear's `2·in·out·positions`, a product's); 0 for the
    /// element-wise and data-movement operations.
    pub fn flops(&self) -> usize {
        match self {
            Op::Linear(l) => 2 * l.inputs * l.outputs * l.positions,
            Op::Conv(c) => {
                let [oh, ow] = c.output();
                2 * c.out_channels * oh * ow * c.patch()
            }
            Op::MatMul(m) => 2 * m.batch * m.rows * m.inner * m.cols,
            _ => 0,
        }
    }

    /// Whether [`Op::forward_owned`] works in place.
    pub(crate) fn in_place(&self) -> bool {
        match self {
            Op::Unary(_) | Op::BatchNorm(_) => true,
            Op::Gather(g) => g.index.is_none(),
            _ => false,
        }
    }

    /// [`Op::forward`] of one input that no later node reads, in place where
    /// [`Op::in_place`] says so.
    pub(crate) fn forward_owned<T: Real>(&self, w: &[T], x: Mat<T>) -> Mat<T> {
        match self {
            Op::Unary(u) => u.forward_owned(x),
            Op::BatchNorm(b) => b.forward_owned(w, x),
            Op::Gather(g) if g.index.is_none() => x,
            _ => self.forward(w, &[&x]),
        }
    }

    /// Backpropagates the rows `g` (`rpe` per example): the parameters' derivatives (at `off`
    /// in the flat vector) into `sink`, and the cotangent of each input that `need` asks for.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        w: &[f64],
        off: usize,
        x: &[&Mat<f64>],
        y: &Mat<f64>,
        g: Mat<f64>,
        rpe: usize,
        sink: &mut Sink<'_>,
        need: &[bool],
    ) -> Vec<Option<Mat<f64>>> {
        let examples = x.first().map_or(0, |x| x.nrows());
        let one = |m: Mat<f64>| vec![need[0].then_some(m)];
        match self {
            Op::Linear(l) => vec![l.backward(w, off, x[0], &g, rpe, sink, need[0])],
            Op::Conv(c) => vec![c.backward(w, off, x[0], &g, rpe, sink, need[0])],
            Op::BatchNorm(b) => {
                if b.affine {
                    let d = b.param_rows(x[0], &g, rpe);
                    rows_into_sink(sink, d, off, &[b.channels, b.channels], examples);
                }
                one(b.vjp(w, g))
            }
            Op::LayerNorm(l) => {
                let (d, gi) = l.backward(w, x[0], &g, rpe);
                if l.n_params() > 0 {
                    let lens = vec![l.size; l.n_params() / l.size];
                    rows_into_sink(sink, d, off, &lens, examples);
                }
                one(gi)
            }
            Op::Unary(u) => one(u.vjp(x[0].as_ref(), g, rpe)),
            Op::Binary(b) => b.vjp(x, &g, rpe).into_iter().map(Some).collect(),
            Op::Pool(p) => one(p.vjp(x[0], &g, rpe)),
            Op::Mean(m) => one(m.vjp(&g)),
            Op::Gather(gt) => one(gt.vjp(g, x[0].ncols())),
            Op::Concat(c) => c.vjp(&g).into_iter().map(Some).collect(),
            Op::Softmax(s) => one(s.vjp(y, g, rpe)),
            Op::MatMul(m) => m.vjp(x[0], x[1], &g, rpe).into_iter().map(Some).collect(),
        }
    }
}
