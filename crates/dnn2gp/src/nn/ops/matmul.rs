//! The product of two activations (attention's `Q Kᵀ` and `P V`): per example and per batch
//! index b, `Y_b = A_b B_b` with `A_b` (r × s), `B_b` (s × c); VJP `∂A_b = G_b B_bᵀ`,
//! `∂B_b = A_bᵀ G_b`.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use crate::linalg::Real;

/// `Y_b = A_b B_b` over `batch` matrices per example.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatMul {
    /// Matrices per example.
    pub batch: usize,
    /// Rows of A.
    pub rows: usize,
    /// Columns of A, rows of B.
    pub inner: usize,
    /// Columns of B.
    pub cols: usize,
}

impl MatMul {
    fn views<'a, T>(&self, row: &'a [T], r: usize, c: usize, b: usize) -> MatRef<'a, T> {
        MatRef::from_row_major_slice(&row[b * r * c..(b + 1) * r * c], r, c)
    }

    /// `Y` (N × batch·rows·cols).
    pub(crate) fn forward<T: Real>(&self, a: &Mat<T>, b: &Mat<T>) -> Mat<T> {
        let (r, s, c) = (self.rows, self.inner, self.cols);
        let mut y = Mat::<T>::zeros(a.nrows(), self.batch * r * c);
        for e in 0..a.nrows() {
            let (ar, br): (Vec<T>, Vec<T>) = (
                a.row(e).iter().copied().collect(),
                b.row(e).iter().copied().collect(),
            );
            let mut out = vec![T::zero_impl(); self.batch * r * c];
            for bi in 0..self.batch {
                let dst = faer::MatMut::from_row_major_slice_mut(
                    &mut out[bi * r * c..(bi + 1) * r * c],
                    r,
                    c,
                );
                matmul(
                    dst,
                    Accum::Replace,
                    self.views(&ar, r, s, bi),
                    self.views(&br, s, c, bi),
                    T::one_impl(),
                    Par::Seq,
                );
            }
            out.iter().enumerate().for_each(|(j, v)| y[(e, j)] = *v);
        }
        y
    }

    /// `(∂A, ∂B)` for rows `g` (`rpe` per example).
    pub(crate) fn vjp(
        &self,
        a: &Mat<f64>,
        b: &Mat<f64>,
        g: &Mat<f64>,
        rpe: usize,
    ) -> [Mat<f64>; 2] {
        let (r, s, c) = (self.rows, self.inner, self.cols);
        let m = g.nrows();
        let mut ga = Mat::<f64>::zeros(m, a.ncols());
        let mut gb = Mat::<f64>::zeros(m, b.ncols());
        for row in 0..m {
            let e = row / rpe;
            let (ar, br, gr): (Vec<f64>, Vec<f64>, Vec<f64>) = (
                a.row(e).iter().copied().collect(),
                b.row(e).iter().copied().collect(),
                g.row(row).iter().copied().collect(),
            );
            let mut da = vec![0.0; a.ncols()];
            let mut db = vec![0.0; b.ncols()];
            for bi in 0..self.batch {
                let gm = self.views(&gr, r, c, bi);
                matmul(
                    faer::MatMut::from_row_major_slice_mut(
                        &mut da[bi * r * s..(bi + 1) * r * s],
                        r,
                        s,
                    ),
                    Accum::Replace,
                    gm,
                    self.views(&br, s, c, bi).transpose(),
                    1.0,
                    Par::Seq,
                );
                matmul(
                    faer::MatMut::from_row_major_slice_mut(
                        &mut db[bi * s * c..(bi + 1) * s * c],
                        s,
                        c,
                    ),
                    Accum::Replace,
                    self.views(&ar, r, s, bi).transpose(),
                    gm,
                    1.0,
                    Par::Seq,
                );
            }
            da.iter().enumerate().for_each(|(j, v)| ga[(row, j)] = *v);
            db.iter().enumerate().for_each(|(j, v)| gb[(row, j)] = *v);
        }
        [ga, gb]
    }
}
