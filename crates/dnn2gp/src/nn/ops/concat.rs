//! Concatenation of activations along an axis: `y = [x_1, x_2, …]`; the VJP hands each input
//! its block of the cotangent.

use faer::Mat;

use crate::linalg::{col, col_mut, Real};

/// Concatenation of inputs of the given per-example shapes along `axis`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Concat {
    /// The inputs' per-example shapes.
    pub shapes: Vec<Vec<usize>>,
    /// The axis.
    pub axis: usize,
}

impl Concat {
    /// The output shape.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = self.shapes[0].clone();
        s[self.axis] = self.shapes.iter().map(|t| t[self.axis]).sum();
        s
    }

    /// For each input, the output entries its entries land on (row-major).
    fn targets(&self) -> Vec<Vec<usize>> {
        let out = self.shape();
        let inner: usize = out[self.axis + 1..].iter().product();
        let outer: usize = out[..self.axis].iter().product();
        let mut start = 0;
        self.shapes
            .iter()
            .map(|s| {
                let block = s[self.axis] * inner;
                let stride = out[self.axis] * inner;
                let t = (0..outer)
                    .flat_map(|o| (0..block).map(move |j| o * stride + start + j))
                    .collect();
                start += block;
                t
            })
            .collect()
    }

    /// `Y = [X_1, X_2, …]`.
    pub(crate) fn forward<T: Real>(&self, x: &[&Mat<T>]) -> Mat<T> {
        let n = x[0].nrows();
        let width: usize = self.shape().iter().product();
        let mut y = Mat::<T>::zeros(n, width);
        for (xi, t) in x.iter().zip(self.targets()) {
            for (j, &o) in t.iter().enumerate() {
                col_mut(y.as_mut(), o).copy_from_slice(col(xi.as_ref(), j));
            }
        }
        y
    }

    /// Each input's block of `G`.
    pub(crate) fn vjp(&self, g: &Mat<f64>) -> Vec<Mat<f64>> {
        self.targets()
            .into_iter()
            .map(|t| Mat::from_fn(g.nrows(), t.len(), |m, j| g[(m, t[j])]))
            .collect()
    }
}
