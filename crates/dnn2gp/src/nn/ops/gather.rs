//! Rearrangements of a per-example tensor: `y_i = x_{π(i)}` for a fixed index map π —
//! reshape and flatten (π the identity: no copy of meaning, the flat layout is unchanged),
//! transpose (a permutation of axes) and slices. The VJP scatters back: `∂x_{π(i)} += g_i`.

use faer::Mat;

use crate::linalg::{col, col_mut, Real};

/// `y_i = x_{index[i]}`; no index: the identity (reshape, flatten).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gather {
    /// The index map, one source entry per output entry; none for the identity.
    pub index: Option<Vec<usize>>,
    /// The per-example output shape.
    pub shape: Vec<usize>,
}

/// The index map of `transpose(x, perm)` for a tensor of shape `shape` (row-major).
pub fn transpose_index(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let r = shape.len();
    let mut strides = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let total: usize = shape.iter().product();
    (0..total)
        .map(|mut flat| {
            let mut src = 0;
            for i in (0..r).rev() {
                src += (flat % out[i]) * strides[perm[i]];
                flat /= out[i];
            }
            src
        })
        .collect()
}

/// The index map of `x[starts[a]..ends[a]:steps[a]]` along each axis, and the output shape.
pub fn slice_index(
    shape: &[usize],
    starts: &[usize],
    ends: &[usize],
    steps: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let r = shape.len();
    let out: Vec<usize> = (0..r)
        .map(|a| (ends[a].saturating_sub(starts[a])).div_ceil(steps[a].max(1)))
        .collect();
    let mut strides = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let total: usize = out.iter().product();
    let idx = (0..total)
        .map(|mut flat| {
            let mut src = 0;
            for a in (0..r).rev() {
                src += (starts[a] + (flat % out[a]) * steps[a]) * strides[a];
                flat /= out[a];
            }
            src
        })
        .collect();
    (idx, out)
}

impl Gather {
    /// `Y = X[:, π]`.
    pub(crate) fn forward<T: Real>(&self, x: &Mat<T>) -> Mat<T> {
        match &self.index {
            None => x.clone(),
            Some(idx) => {
                let mut y = Mat::<T>::zeros(x.nrows(), idx.len());
                for (i, &j) in idx.iter().enumerate() {
                    col_mut(y.as_mut(), i).copy_from_slice(col(x.as_ref(), j));
                }
                y
            }
        }
    }

    /// `∂X[:, π(i)] += G[:, i]`, `width` the input's entries per example.
    pub(crate) fn vjp(&self, g: Mat<f64>, width: usize) -> Mat<f64> {
        match &self.index {
            None => g,
            Some(idx) => {
                let mut gi = Mat::<f64>::zeros(g.nrows(), width);
                for (i, &s) in idx.iter().enumerate() {
                    for m in 0..g.nrows() {
                        gi[(m, s)] += g[(m, i)];
                    }
                }
                gi
            }
        }
    }
}
