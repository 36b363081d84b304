//! Element-wise functions `y = φ(x)` and their derivatives `φ'(x)`, taken from the input (so
//! GELU and SiLU, which are not monotone, are exact): ReLU, LeakyReLU, ELU, GELU (erf and tanh
//! forms), SiLU, Softplus, tanh, sigmoid, and the arithmetic ONNX writes them in (exp, log,
//! sqrt, erf, negation, reciprocal, a constant power, identity).

use faer::{Mat, MatRef};

use crate::linalg::{col, col_mut, Real};
use crate::math::{exp, ln, tanh};

crate::words! {
    /// An element-wise function.
    pub enum UnaryKind("element-wise function") {
        /// `max(x, 0)`.
        Relu = ["relu"],
        /// `x` for `x > 0`, else `α x`.
        LeakyRelu = ["leaky_relu", "leakyrelu"],
        /// `x` for `x > 0`, else `α (eˣ − 1)`.
        Elu = ["elu"],
        /// `x Φ(x) = x (1 + erf(x/√2)) / 2`.
        Gelu = ["gelu"],
        /// `x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2`.
        GeluTanh = ["gelu_tanh"],
        /// `x σ(x)`.
        Silu = ["silu", "swish"],
        /// `log(1 + e^{βx}) / β`.
        Softplus = ["softplus"],
        /// `tanh x`.
        Tanh = ["tanh"],
        /// `1 / (1 + e^{−x})`.
        Sigmoid = ["sigmoid"],
        /// `eˣ`.
        Exp = ["exp"],
        /// `log x`.
        Log = ["log"],
        /// `√x`.
        Sqrt = ["sqrt"],
        /// `erf x`.
        Erf = ["erf"],
        /// `−x`.
        Neg = ["neg"],
        /// `1/x`.
        Reciprocal = ["reciprocal"],
        /// `x^α`.
        Pow = ["pow"],
        /// `x` (inference-mode dropout, identity).
        Identity = ["identity", "dropout"],
    }
}

/// An element-wise function with its constant `α` (LeakyReLU's slope, ELU's scale, Softplus's
/// β, the power of Pow; unused by the others).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Unary {
    /// The function.
    pub kind: UnaryKind,
    /// Its constant.
    pub alpha: f64,
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + exp(-x))
}

impl Unary {
    /// A function without a constant.
    pub fn new(kind: UnaryKind) -> Self {
        Unary { kind, alpha: 0.0 }
    }

    /// `φ(x)`.
    pub fn value(self, x: f64) -> f64 {
        let a = self.alpha;
        match self.kind {
            UnaryKind::Relu => x.max(0.0),
            UnaryKind::LeakyRelu => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
            UnaryKind::Elu => {
                if x > 0.0 {
                    x
                } else {
                    a * (exp(x) - 1.0)
                }
            }
            UnaryKind::Gelu => 0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)),
            UnaryKind::GeluTanh => {
                0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
            }
            UnaryKind::Silu => x * sigmoid(x),
            UnaryKind::Softplus => {
                let z = a * x;
                // log(1 + e^z) without overflow.
                (z.max(0.0) + ln(1.0 + exp(-z.abs()))) / a
            }
            UnaryKind::Tanh => tanh(x),
            UnaryKind::Sigmoid => sigmoid(x),
            UnaryKind::Exp => exp(x),
            UnaryKind::Log => ln(x),
            UnaryKind::Sqrt => x.sqrt(),
            UnaryKind::Erf => libm::erf(x),
            UnaryKind::Neg => -x,
            UnaryKind::Reciprocal => 1.0 / x,
            UnaryKind::Pow => x.powf(a),
            UnaryKind::Identity => x,
        }
    }

    /// `φ'(x)`.
    pub fn derivative(self, x: f64) -> f64 {
        let a = self.alpha;
        match self.kind {
            UnaryKind::Relu => f64::from(u8::from(x > 0.0)),
            UnaryKind::LeakyRelu => {
                if x > 0.0 {
                    1.0
                } else {
                    a
                }
            }
            UnaryKind::Elu => {
                if x > 0.0 {
                    1.0
                } else {
                    a * exp(x)
                }
            }
            // Φ(x) + x φ(x).
            UnaryKind::Gelu => {
                0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))
                    + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
            }
            UnaryKind::GeluTanh => {
                let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
                let t = tanh(u);
                0.5 * (1.0 + t)
                    + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x)
            }
            // σ(x) (1 + x (1 − σ(x))).
            UnaryKind::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            UnaryKind::Softplus => sigmoid(a * x),
            UnaryKind::Tanh => {
                let t = tanh(x);
                1.0 - t * t
            }
            UnaryKind::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            UnaryKind::Exp => exp(x),
            UnaryKind::Log => 1.0 / x,
            UnaryKind::Sqrt => 0.5 / x.sqrt(),
            UnaryKind::Erf => 2.0 / std::f64::consts::PI.sqrt() * exp(-x * x),
            UnaryKind::Neg => -1.0,
            UnaryKind::Reciprocal => -1.0 / (x * x),
            UnaryKind::Pow => a * x.powf(a - 1.0),
            UnaryKind::Identity => 1.0,
        }
    }

    /// `Y = φ(X)`.
    pub(crate) fn forward<T: Real>(self, x: MatRef<'_, T>) -> Mat<T> {
        self.forward_owned(x.to_owned())
    }

    /// [`Unary::forward`] in place.
    pub(crate) fn forward_owned<T: Real>(self, mut y: Mat<T>) -> Mat<T> {
        for j in 0..y.ncols() {
            self.apply(col_mut(y.as_mut(), j));
        }
        y
    }

    /// `v ← φ(v)` in place (ReLU without leaving `T`; the others through f64).
    pub(crate) fn apply<T: Real>(self, v: &mut [T]) {
        match self.kind {
            UnaryKind::Relu => {
                let zero = T::zero_impl();
                crate::linalg::wide(|| {
                    v.iter_mut()
                        .for_each(|v| *v = if *v > zero { *v } else { zero })
                })
            }
            _ => v.iter_mut().for_each(|v| *v = T::of(self.value(v.f64()))),
        }
    }

    /// `g ⊙ φ'(x_{n(m)})` for cotangent rows `g` (`rpe` rows per example).
    pub(crate) fn vjp(self, x: MatRef<'_, f64>, mut g: Mat<f64>, rpe: usize) -> Mat<f64> {
        for j in 0..g.ncols() {
            let xs = col(x, j);
            col_mut(g.as_mut(), j)
                .iter_mut()
                .enumerate()
                .for_each(|(m, v)| *v *= self.derivative(xs[m / rpe]));
        }
        g
    }
}
