//! The mean over axes of a per-example tensor (ONNX `ReduceMean`, global average pooling):
//! `y_o = Σ_{i ↦ o} x_i / c`, with c entries per output; the VJP spreads `g_o / c` back.

use faer::Mat;

use crate::linalg::Real;

/// The mean of a tensor of shape `shape` over `axes` (kept as axes of length 1 or dropped: the
/// flat layout is the same).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mean {
    /// The input's per-example shape.
    pub shape: Vec<usize>,
    /// The axes averaged over.
    pub axes: Vec<usize>,
}

impl Mean {
    /// The output shape with the averaged axes kept as 1.
    pub fn kept_shape(&self) -> Vec<usize> {
        (0..self.shape.len())
            .map(|a| {
                if self.axes.contains(&a) {
                    1
                } else {
                    self.shape[a]
                }
            })
            .collect()
    }

    /// For each input entry, its output entry; and the count per output.
    fn map(&self) -> (Vec<usize>, f64) {
        let out = self.kept_shape();
        let idx = super::binary::broadcast_index(&out, &self.shape);
        let count: usize = self.axes.iter().map(|&a| self.shape[a]).product();
        (idx, count as f64)
    }

    /// `Y` (N × outputs).
    pub(crate) fn forward<T: Real>(&self, x: &Mat<T>) -> Mat<T> {
        let (idx, c) = self.map();
        let width: usize = self.kept_shape().iter().product();
        let mut y = Mat::<T>::zeros(x.nrows(), width);
        for (i, &o) in idx.iter().enumerate() {
            let src = crate::linalg::col(x.as_ref(), i);
            crate::linalg::col_mut(y.as_mut(), o)
                .iter_mut()
                .zip(src)
                .for_each(|(d, &v)| *d += v);
        }
        let c = T::of(c);
        for j in 0..width {
            y.col_mut(j).iter_mut().for_each(|v| *v /= c);
        }
        y
    }

    /// `∂x_i = g_{o(i)} / c`.
    pub(crate) fn vjp(&self, g: &Mat<f64>) -> Mat<f64> {
        let (idx, c) = self.map();
        Mat::from_fn(g.nrows(), idx.len(), |m, i| g[(m, idx[i])] / c)
    }
}
