//! LayerNorm over the last axis (`size` entries) at each of `positions` positions:
//! `y = γ ⊙ x̂ + β`, `x̂ = (x − μ)/σ`, `μ`, `σ² − ε` the mean and (biased) variance of the
//! position's entries. VJP `∂x = (ĝ − mean(ĝ) − x̂ mean(ĝ ⊙ x̂))/σ` with `ĝ = g ⊙ γ`;
//! `∂γ = Σ_t g_t ⊙ x̂_t`, `∂β = Σ_t g_t`.

use faer::Mat;

use crate::linalg::Real;

/// LayerNorm of `positions` vectors of `size` entries per example.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerNorm {
    /// Entries normalised together.
    pub size: usize,
    /// Positions per example.
    pub positions: usize,
    /// ε.
    pub eps: f64,
    /// Whether γ is a parameter (else 1).
    pub scale: bool,
    /// Whether β is a parameter (else 0).
    pub shift: bool,
}

impl LayerNorm {
    /// Parameters: γ then β, where present.
    pub fn n_params(&self) -> usize {
        self.size * (usize::from(self.scale) + usize::from(self.shift))
    }

    /// `x̂` and σ of one position of an example.
    fn normalise<T: Real>(&self, x: &Mat<T>, e: usize, t: usize) -> (Vec<f64>, f64) {
        let l = self.size;
        let v: Vec<f64> = (0..l).map(|j| x[(e, t * l + j)].f64()).collect();
        let mu = v.iter().sum::<f64>() / l as f64;
        let var = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / l as f64;
        let sd = (var + self.eps).sqrt();
        (v.iter().map(|a| (a - mu) / sd).collect(), sd)
    }

    fn gamma<T: Real>(&self, w: &[T], j: usize) -> f64 {
        if self.scale {
            w[j].f64()
        } else {
            1.0
        }
    }

    /// `Y`.
    pub(crate) fn forward<T: Real>(&self, w: &[T], x: &Mat<T>) -> Mat<T> {
        let l = self.size;
        let beta = usize::from(self.scale) * l;
        let mut y = Mat::<T>::zeros(x.nrows(), x.ncols());
        for e in 0..x.nrows() {
            for t in 0..self.positions {
                let (xh, _) = self.normalise(x, e, t);
                for j in 0..l {
                    let b = if self.shift { w[beta + j].f64() } else { 0.0 };
                    y[(e, t * l + j)] = T::of(self.gamma(w, j) * xh[j] + b);
                }
            }
        }
        y
    }

    /// For rows `g` (`rpe` per example), from one normalisation per position: the parameter
    /// derivatives of each row (M × params: `∂γ`, then `∂β`) and `∂X`.
    pub(crate) fn backward(
        &self,
        w: &[f64],
        x: &Mat<f64>,
        g: &Mat<f64>,
        rpe: usize,
    ) -> (Mat<f64>, Mat<f64>) {
        let l = self.size;
        let beta = usize::from(self.scale) * l;
        let mut d = Mat::<f64>::zeros(g.nrows(), self.n_params());
        let mut gi = Mat::<f64>::zeros(g.nrows(), g.ncols());
        for e in 0..x.nrows() {
            for t in 0..self.positions {
                let (xh, sd) = self.normalise(x, e, t);
                for m in e * rpe..((e + 1) * rpe).min(g.nrows()) {
                    let gt: Vec<f64> = (0..l).map(|j| g[(m, t * l + j)]).collect();
                    for j in 0..l {
                        if self.scale {
                            d[(m, j)] += gt[j] * xh[j];
                        }
                        if self.shift {
                            d[(m, beta + j)] += gt[j];
                        }
                    }
                    let gh: Vec<f64> = (0..l).map(|j| gt[j] * self.gamma(w, j)).collect();
                    let mg = gh.iter().sum::<f64>() / l as f64;
                    let mgx = gh.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / l as f64;
                    for j in 0..l {
                        gi[(m, t * l + j)] = (gh[j] - mg - xh[j] * mgx) / sd;
                    }
                }
            }
        }
        (d, gi)
    }
}
