//! BatchNorm in inference form: the running statistics are constants of the trained network,
//! γ and β its parameters: `y_{c,s} = γ_c x̂_{c,s} + β_c`, `x̂ = (x − μ_c)/√(v_c + ε)`.
//! VJP `∂x = g γ_c / √(v_c + ε)`; `∂γ_c = Σ_s g_{c,s} x̂_{c,s}`, `∂β_c = Σ_s g_{c,s}`.

use faer::Mat;

use crate::linalg::Real;

/// BatchNorm over `channels` with `spatial` entries each (1 after a linear layer).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchNorm {
    /// Channels.
    pub channels: usize,
    /// Entries per channel and example.
    pub spatial: usize,
    /// The running means μ.
    pub mean: Vec<f64>,
    /// The running variances v.
    pub var: Vec<f64>,
    /// ε.
    pub eps: f64,
    /// Whether γ and β are parameters (else γ = 1, β = 0).
    pub affine: bool,
}

impl BatchNorm {
    /// Parameters: γ then β, or none.
    pub fn n_params(&self) -> usize {
        if self.affine {
            2 * self.channels
        } else {
            0
        }
    }

    fn scale<T: Real>(&self, w: &[T], c: usize) -> f64 {
        let g = if self.affine { w[c].f64() } else { 1.0 };
        g / (self.var[c] + self.eps).sqrt()
    }

    fn normalised(&self, x: f64, c: usize) -> f64 {
        (x - self.mean[c]) / (self.var[c] + self.eps).sqrt()
    }

    /// Per channel, `γ/√(v + ε)` and `β − γ μ/√(v + ε)`: `y = a x + b`.
    pub(crate) fn affine<T: Real>(&self, w: &[T]) -> (Vec<T>, Vec<T>) {
        (0..self.channels)
            .map(|c| {
                let a = self.scale(w, c);
                let shift = if self.affine {
                    w[self.channels + c].f64()
                } else {
                    0.0
                };
                (T::of(a), T::of(shift - a * self.mean[c]))
            })
            .unzip()
    }

    /// `Y`, with `w` the op's parameters (γ, β).
    pub(crate) fn forward<T: Real>(&self, w: &[T], x: &Mat<T>) -> Mat<T> {
        self.forward_owned(w, x.clone())
    }

    /// [`BatchNorm::forward`] in place.
    pub(crate) fn forward_owned<T: Real>(&self, w: &[T], mut y: Mat<T>) -> Mat<T> {
        let (a, b) = self.affine(w);
        for j in 0..y.ncols() {
            let c = j / self.spatial;
            crate::linalg::col_mut(y.as_mut(), j)
                .iter_mut()
                .for_each(|v| *v = a[c] * *v + b[c]);
        }
        y
    }

    /// `∂X = G γ/√(v + ε)`.
    pub(crate) fn vjp(&self, w: &[f64], mut g: Mat<f64>) -> Mat<f64> {
        let (a, _) = self.affine(w);
        for j in 0..g.ncols() {
            let c = j / self.spatial;
            crate::linalg::col_mut(g.as_mut(), j)
                .iter_mut()
                .for_each(|v| *v *= a[c]);
        }
        g
    }

    /// The parameter derivatives of each row (M × 2·channels): `∂γ`, then `∂β`.
    pub(crate) fn param_rows(&self, x: &Mat<f64>, g: &Mat<f64>, rpe: usize) -> Mat<f64> {
        let (c, s) = (self.channels, self.spatial);
        let mut d = Mat::<f64>::zeros(g.nrows(), 2 * c);
        // Column by column (contiguous memory): entry j of channel j / s.
        let mut xh = vec![0.0; x.nrows()];
        for j in 0..g.ncols() {
            let ch = j / s;
            let xj = crate::linalg::col(x.as_ref(), j);
            xh.iter_mut()
                .zip(xj)
                .for_each(|(h, &v)| *h = self.normalised(v, ch));
            let gj = crate::linalg::col(g.as_ref(), j);
            let dg = crate::linalg::col_mut(d.as_mut(), ch);
            dg.iter_mut()
                .zip(gj)
                .enumerate()
                .for_each(|(m, (o, v))| *o += v * xh[m / rpe]);
            let db = crate::linalg::col_mut(d.as_mut(), c + ch);
            db.iter_mut().zip(gj).for_each(|(o, v)| *o += v);
        }
        d
    }
}
