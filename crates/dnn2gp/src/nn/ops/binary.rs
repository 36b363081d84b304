//! Element-wise arithmetic between two activations, or an activation and a constant, with
//! NumPy broadcasting over the per-example shapes: `y = a + b`, `a − b`, `a ⊙ b`, `a ⊘ b`.
//! Derivatives: `∂y/∂a = 1, 1, b, 1/b`; `∂y/∂b = 1, −1, a, −a/b²`, summed over the entries
//! an operand was broadcast to.

use faer::Mat;

use super::Unary;
use crate::error::{Error, Result};
use crate::linalg::Real;

crate::words! {
    /// An element-wise binary operation.
    pub enum BinaryKind("binary operation") {
        /// `a + b`.
        Add = ["add"],
        /// `a − b`.
        Sub = ["sub"],
        /// `a ⊙ b`.
        Mul = ["mul"],
        /// `a ⊘ b`.
        Div = ["div"],
    }
}

impl BinaryKind {
    /// `a ∘ b`.
    pub fn apply<T: Real>(self, a: T, b: T) -> T {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
        }
    }
}

/// One operand: the node's next input (an activation), or a constant.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Operand {
    /// An activation of this per-example shape.
    Input {
        /// Its per-example shape.
        shape: Vec<usize>,
    },
    /// A constant, the same for every example.
    Constant {
        /// Its shape.
        shape: Vec<usize>,
        /// Its values, row-major.
        values: Vec<f64>,
    },
}

impl Operand {
    fn shape(&self) -> &[usize] {
        match self {
            Operand::Input { shape } | Operand::Constant { shape, .. } => shape,
        }
    }
}

/// `y = a ∘ b` with broadcasting.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Binary {
    /// The operation.
    pub kind: BinaryKind,
    /// The left operand.
    pub a: Operand,
    /// The right operand.
    pub b: Operand,
}

/// The NumPy broadcast of two shapes, or `None` where they do not broadcast.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i < r - s.len() {
            1
        } else {
            s[i - (r - s.len())]
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each entry of `out` (row-major), the entry of `s` broadcast to it.
pub fn broadcast_index(s: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let pad = r - s.len();
    let total: usize = out.iter().product();
    let mut strides = vec![0usize; r];
    let mut acc = 1;
    for i in (0..r).rev() {
        if i >= pad && s[i - pad] != 1 {
            strides[i] = acc;
        }
        if i >= pad {
            acc *= s[i - pad];
        }
    }
    (0..total)
        .map(|mut flat| {
            let mut idx = 0;
            for i in (0..r).rev() {
                idx += (flat % out[i]) * strides[i];
                flat /= out[i];
            }
            idx
        })
        .collect()
}

impl Binary {
    /// The operation, checked: the operands broadcast, and at least one is an activation.
    pub fn new(kind: BinaryKind, a: Operand, b: Operand) -> Result<Self> {
        if broadcast_shape(a.shape(), b.shape()).is_none() {
            return Err(Error::Invalid(format!(
                "shapes {:?} and {:?} do not broadcast",
                a.shape(),
                b.shape()
            )));
        }
        if matches!(
            (&a, &b),
            (Operand::Constant { .. }, Operand::Constant { .. })
        ) {
            return Err(Error::Invalid(
                "an operation on two constants is a constant".into(),
            ));
        }
        Ok(Binary { kind, a, b })
    }

    /// The per-example output shape.
    pub fn shape(&self) -> Vec<usize> {
        broadcast_shape(self.a.shape(), self.b.shape()).expect("checked")
    }

    /// How many of the node's inputs are activations.
    pub fn arity(&self) -> usize {
        [&self.a, &self.b]
            .iter()
            .filter(|o| matches!(o, Operand::Input { .. }))
            .count()
    }

    /// Row `r` of operand `o` (the next activation in `x`, or the constant) and its index map.
    fn operands<'a, T>(&'a self, x: &[&'a Mat<T>]) -> [(Side<'a, T>, Vec<usize>); 2] {
        let out = self.shape();
        let mut next = x.iter();
        [&self.a, &self.b].map(|o| {
            let side = match o {
                Operand::Input { .. } => Side::Act(next.next().expect("an input per activation")),
                Operand::Constant { values, .. } => Side::Const(values),
            };
            (side, broadcast_index(o.shape(), &out))
        })
    }

    /// `Y = A ∘ B` (N × out).
    pub(crate) fn forward<T: Real>(&self, x: &[&Mat<T>]) -> Mat<T> {
        let n = x[0].nrows();
        let [(a, ia), (b, ib)] = self.operands(x);
        let mut y = Mat::<T>::zeros(n, ia.len());
        // Output column by output column: each operand a contiguous column or a constant.
        crate::linalg::wide(|| {
            for (i, (&p, &q)) in ia.iter().zip(&ib).enumerate() {
                let dst = crate::linalg::col_mut(y.as_mut(), i);
                let f = |u, v| self.kind.apply(u, v);
                match (&a, &b) {
                    (Side::Act(ma), Side::Act(mb)) => {
                        let (sa, sb) = (
                            crate::linalg::col(ma.as_ref(), p),
                            crate::linalg::col(mb.as_ref(), q),
                        );
                        (dst.iter_mut().zip(sa).zip(sb)).for_each(|((d, &u), &v)| *d = f(u, v))
                    }
                    (Side::Act(ma), Side::Const(_)) => {
                        let v = b.at(0, q);
                        (dst.iter_mut().zip(crate::linalg::col(ma.as_ref(), p)))
                            .for_each(|(d, &u)| *d = f(u, v))
                    }
                    (Side::Const(_), Side::Act(mb)) => {
                        let u = a.at(0, p);
                        (dst.iter_mut().zip(crate::linalg::col(mb.as_ref(), q)))
                            .for_each(|(d, &v)| *d = f(u, v))
                    }
                    (Side::Const(_), Side::Const(_)) => dst.fill(f(a.at(0, p), b.at(0, q))),
                }
            }
        });
        y
    }

    /// Whether the left operand is an activation of the output's shape, whose memory the
    /// output can take ([`Binary::forward_over`]).
    pub(crate) fn left_in_place(&self) -> bool {
        matches!(&self.a, Operand::Input { shape } if *shape == self.shape())
    }

    /// `φ(A ∘ B)` written over `a` (the left operand, of the output's shape), `rest` the right
    /// operand where it is an activation, `post` an element-wise `φ` that reads only the
    /// result: one pass, column by column.
    pub(crate) fn forward_over<T: Real>(
        &self,
        mut a: Mat<T>,
        rest: &[&Mat<T>],
        post: Option<Unary>,
    ) -> Mat<T> {
        let ib = broadcast_index(self.b.shape(), &self.shape());
        let b = match &self.b {
            Operand::Input { .. } => Side::Act(rest[0]),
            Operand::Constant { values, .. } => Side::Const(values),
        };
        crate::linalg::wide(|| {
            for (i, &q) in ib.iter().enumerate() {
                let dst = crate::linalg::col_mut(a.as_mut(), i);
                match &b {
                    Side::Act(mb) => (dst.iter_mut().zip(crate::linalg::col(mb.as_ref(), q)))
                        .for_each(|(d, &v)| *d = self.kind.apply(*d, v)),
                    Side::Const(_) => {
                        let v = b.at(0, q);
                        dst.iter_mut().for_each(|d| *d = self.kind.apply(*d, v));
                    }
                }
                if let Some(u) = post {
                    u.apply(dst);
                }
            }
        });
        a
    }

    /// The cotangents of the activation operands for rows `g` (`rpe` per example).
    pub(crate) fn vjp(&self, x: &[&Mat<f64>], g: &Mat<f64>, rpe: usize) -> Vec<Mat<f64>> {
        let [(a, ia), (b, ib)] = self.operands(x);
        let m = g.nrows();
        let mut out = Vec::new();
        for (left, (side, idx)) in [(true, (&a, &ia)), (false, (&b, &ib))] {
            let Side::Act(s) = side else { continue };
            let mut gi = Mat::<f64>::zeros(m, s.ncols());
            // Output column by output column (contiguous memory).
            for (i, (&p, &q)) in ia.iter().zip(&ib).enumerate() {
                let gc = crate::linalg::col(g.as_ref(), i);
                let dst = crate::linalg::col_mut(gi.as_mut(), idx[i]);
                match (self.kind, left) {
                    (BinaryKind::Add, _) | (BinaryKind::Sub, true) => {
                        dst.iter_mut().zip(gc).for_each(|(d, v)| *d += v)
                    }
                    (BinaryKind::Sub, false) => dst.iter_mut().zip(gc).for_each(|(d, v)| *d -= v),
                    (kind, left) => {
                        for (r, (d, v)) in dst.iter_mut().zip(gc).enumerate() {
                            let (av, bv) = (a.at(r / rpe, p), b.at(r / rpe, q));
                            *d += v * match (kind, left) {
                                (BinaryKind::Mul, true) => bv,
                                (BinaryKind::Mul, false) => av,
                                (BinaryKind::Div, true) => 1.0 / bv,
                                _ => -av / (bv * bv),
                            };
                        }
                    }
                }
            }
            out.push(gi);
        }
        out
    }
}

/// An operand's values: an activation (one row per example) or a constant.
enum Side<'a, T> {
    Act(&'a Mat<T>),
    Const(&'a [f64]),
}

impl<T: Real> Side<'_, T> {
    fn at(&self, e: usize, i: usize) -> T {
        match self {
            Side::Act(m) => m[(e, i)],
            Side::Const(v) => T::of(v[i]),
        }
    }
}
