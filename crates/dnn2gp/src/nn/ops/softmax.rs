//! Softmax over the last axis: `y = e^{x − max x} / Σ e^{x − max x}` per group of `size`
//! entries; VJP `y ⊙ (g − ⟨g, y⟩)`.

use faer::Mat;

use crate::linalg::Real;
use crate::math::exp;

/// Softmax over consecutive groups of `size` entries (the last axis).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Softmax {
    /// Entries of the last axis.
    pub size: usize,
}

impl Softmax {
    /// `Y` (N × width).
    pub(crate) fn forward<T: Real>(&self, x: &Mat<T>) -> Mat<T> {
        let mut y = x.clone();
        let l = self.size;
        let mut ex = vec![0.0; l];
        for e in 0..x.nrows() {
            for s in (0..x.ncols()).step_by(l) {
                let top = (s..s + l)
                    .map(|j| x[(e, j)].f64())
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut z = 0.0;
                for (j, v) in (s..s + l).zip(ex.iter_mut()) {
                    *v = exp(x[(e, j)].f64() - top);
                    z += *v;
                }
                (s..s + l)
                    .zip(&ex)
                    .for_each(|(j, v)| y[(e, j)] = T::of(v / z));
            }
        }
        y
    }

    /// `∂x = y ⊙ (g − ⟨g, y⟩)` per group, with `y` of example `m / rpe`.
    pub(crate) fn vjp(&self, y: &Mat<f64>, mut g: Mat<f64>, rpe: usize) -> Mat<f64> {
        let l = self.size;
        for m in 0..g.nrows() {
            let e = m / rpe;
            for s in (0..g.ncols()).step_by(l) {
                let dot: f64 = (s..s + l).map(|j| g[(m, j)] * y[(e, j)]).sum();
                (s..s + l).for_each(|j| g[(m, j)] = y[(e, j)] * (g[(m, j)] - dot));
            }
        }
        g
    }
}
