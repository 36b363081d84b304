//! Likelihoods `p(y | f)`: per-example loss `ℓ = −log p(y | f)`, residual `r = ∇_f ℓ` and
//! curvature `Λ = ∇²_f ℓ` (the only second-order term the GGN keeps). Gaussian for regression;
//! Bernoulli and categorical on logits for classification.

pub mod classification;
mod gaussian;

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, MatRef};

use crate::error::{Error, Result};

pub use classification::{Bernoulli, Categorical};
pub use gaussian::Gaussian;

/// A per-example likelihood over `K` outputs.
pub trait Likelihood: Sync + std::fmt::Debug {
    /// Name as used on the command line.
    fn name(&self) -> &'static str;
    /// `ℓ(y, f) = −log p(y | f)` for one example.
    fn nll(&self, f: &[f64], y: &[f64]) -> f64;
    /// `r = ∇_f ℓ(y, f)`, written into `r` (length K).
    fn residual(&self, f: &[f64], y: &[f64], r: &mut [f64]);
    /// `Λ = ∇²_f ℓ(y, f)`, written row-major into `lam` (K×K).
    fn curvature(&self, f: &[f64], y: &[f64], lam: &mut [f64]);
    /// Variance added to the variance of `f` to get the predictive variance of `y`.
    fn observation_variance(&self, f: &[f64]) -> Vec<f64>;
    /// The mean of `y` given `f` (the inverse link): `f`, `s(f)` or `softmax(f)`.
    fn mean(&self, f: &[f64]) -> Vec<f64>;

    /// A root `R` of the curvature, `RᵀR = Λ`, written row-major into `root` (K×K): its rows
    /// are cotangents whose squared parameter derivatives sum to the GGN's diagonal. The
    /// default is the symmetric root of [`Likelihood::curvature`].
    fn curvature_root(&self, f: &[f64], y: &[f64], root: &mut [f64]) {
        let k = f.len();
        self.curvature(f, y, root);
        if !is_scaled_identity(k, root) {
            let s = crate::linalg::sym_sqrt(Mat::from_fn(k, k, |a, c| root[a * k + c]).as_ref());
            (0..k * k).for_each(|m| root[m] = s[(m / k, m % k)]);
        } else {
            let d = root[0].sqrt();
            (0..k).for_each(|a| root[a * k + a] = d);
        }
    }

    /// `Σ_i ℓ(y_i, f_i)` over the rows of `F` and `Y`.
    fn nll_sum(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> f64 {
        let (mut fr, mut yr) = (vec![0.0; f.ncols()], vec![0.0; y.ncols()]);
        (0..f.nrows())
            .map(|i| {
                copy_row(f, i, &mut fr);
                copy_row(y, i, &mut yr);
                self.nll(&fr, &yr)
            })
            .sum()
    }

    /// Residuals `R` (N×K), row i = `r(y_i, f_i)`.
    fn residuals(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Mat<f64> {
        let k = f.ncols();
        let mut out = Mat::zeros(f.nrows(), k);
        let (mut fr, mut yr, mut r) = (vec![0.0; k], vec![0.0; y.ncols()], vec![0.0; k]);
        for i in 0..f.nrows() {
            copy_row(f, i, &mut fr);
            copy_row(y, i, &mut yr);
            self.residual(&fr, &yr, &mut r);
            for (j, v) in r.iter().enumerate() {
                out[(i, j)] = *v;
            }
        }
        out
    }
}

/// Copies row `i` of `m` into `out`.
fn copy_row(m: MatRef<'_, f64>, i: usize, out: &mut [f64]) {
    for (o, v) in out.iter_mut().zip(m.row(i).iter()) {
        *o = *v;
    }
}

/// Curvatures of all examples, `N·K·K` values, block i = `Λ_i` row-major.
pub fn curvatures(lik: &dyn Likelihood, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Vec<f64> {
    let k = f.ncols();
    let mut out = vec![0.0; f.nrows() * k * k];
    let (mut fr, mut yr) = (vec![0.0; k], vec![0.0; y.ncols()]);
    for (i, block) in out.chunks_mut(k * k).enumerate() {
        copy_row(f, i, &mut fr);
        copy_row(y, i, &mut yr);
        lik.curvature(&fr, &yr, block);
    }
    out
}

/// A block-diagonal matrix `blockdiag(B_1, …, B_N)` of K×K blocks: the curvature
/// `Λ = blockdiag(Λ_i)` and its inverse and root, applied to stacked NK vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDiag {
    k: usize,
    /// N blocks, each K×K row-major.
    values: Vec<f64>,
}

impl BlockDiag {
    /// From N blocks of K×K values, row-major, one after the other.
    pub fn new(k: usize, values: Vec<f64>) -> Self {
        assert!(
            k > 0 && values.len().is_multiple_of(k * k),
            "whole K×K blocks"
        );
        BlockDiag { k, values }
    }

    /// The curvatures `Λ_i` of `lik` at outputs `F` and targets `Y`.
    pub fn curvatures(lik: &dyn Likelihood, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Self {
        Self::new(f.ncols(), curvatures(lik, f, y))
    }

    /// The block size K.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The number of blocks N.
    pub fn len(&self) -> usize {
        self.values.len() / (self.k * self.k)
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Block i, row-major.
    pub fn block(&self, i: usize) -> &[f64] {
        let kk = self.k * self.k;
        &self.values[i * kk..(i + 1) * kk]
    }

    /// Block i as a matrix.
    pub fn block_mat(&self, i: usize) -> Mat<f64> {
        let (k, b) = (self.k, self.block(i));
        Mat::from_fn(k, k, |r, c| b[r * k + c])
    }

    /// All blocks, row-major, one after the other.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Whether every block is a multiple of the identity, `B_i = c_i I`.
    pub fn is_scaled_identity(&self) -> bool {
        self.values
            .chunks(self.k * self.k)
            .all(|b| is_scaled_identity(self.k, b))
    }

    /// `B v` for a stacked NK vector.
    pub fn apply(&self, v: &[f64]) -> Vec<f64> {
        let k = self.k;
        (0..v.len())
            .map(|m| {
                let (i, a) = (m / k, m % k);
                let b = self.block(i);
                (0..k).map(|c| b[a * k + c] * v[i * k + c]).sum()
            })
            .collect()
    }

    /// `B⁻¹`, block by block; `Err(i)` names the first block that is not positive definite.
    pub fn inverse(&self) -> std::result::Result<BlockDiag, usize> {
        let mut values = Vec::with_capacity(self.values.len());
        for i in 0..self.len() {
            let inv = self
                .block_mat(i)
                .llt(faer::Side::Lower)
                .map_err(|_| i)?
                .inverse();
            values.extend((0..self.k * self.k).map(|m| inv[(m / self.k, m % self.k)]));
        }
        Ok(BlockDiag::new(self.k, values))
    }

    /// `log |B| = Σ_i log |B_i|`; `Err(i)` names the first block that is not positive definite.
    pub fn log_det(&self) -> std::result::Result<f64, usize> {
        let mut s = 0.0;
        for i in 0..self.len() {
            let llt = self.block_mat(i).llt(faer::Side::Lower).map_err(|_| i)?;
            s += 2.0 * (0..self.k).map(|j| llt.L()[(j, j)].ln()).sum::<f64>();
        }
        Ok(s)
    }

    /// The symmetric square roots `B_i^{1/2}` (`√c I` for `B_i = c I`; negative eigenvalues
    /// from rounding clipped).
    pub fn sqrt(&self) -> BlockDiag {
        let k = self.k;
        let values = (0..self.len())
            .flat_map(|i| {
                let b = self.block(i);
                let r = if is_scaled_identity(k, b) {
                    Mat::from_fn(k, k, |a, c| if a == c { b[0].sqrt() } else { 0.0 })
                } else {
                    crate::linalg::sym_sqrt(self.block_mat(i).as_ref())
                };
                (0..k * k).map(move |m| r[(m / k, m % k)])
            })
            .collect();
        BlockDiag::new(k, values)
    }

    /// Whether every block is diagonal.
    pub fn is_diagonal(&self) -> bool {
        let k = self.k;
        self.values
            .chunks(k * k)
            .all(|b| (0..k * k).all(|m| m / k == m % k || b[m] == 0.0))
    }

    /// The diagonal entries of all blocks (NK).
    pub fn diagonal(&self) -> Vec<f64> {
        let k = self.k;
        (0..self.len() * k)
            .map(|m| self.block(m / k)[(m % k) * (k + 1)])
            .collect()
    }

    /// `tr B`.
    pub fn trace(&self) -> f64 {
        let k = self.k;
        self.values
            .chunks(k * k)
            .map(|b| (0..k).map(|a| b[a * k + a]).sum::<f64>())
            .sum()
    }
}

/// Rows `R_i` of every example stacked (NK×K), `R_iᵀR_i = Λ_i`: cotangents for a backward
/// pass that sums squares, `Σ_i Σ_a (∂(R_i f_i)_a/∂w)² = diag(Σ_i J_iᵀ Λ_i J_i)`.
pub fn curvature_root_rows(
    lik: &dyn Likelihood,
    f: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
) -> Mat<f64> {
    let k = f.ncols();
    let mut rows = Mat::zeros(f.nrows() * k, k);
    let (mut fr, mut yr, mut root) = (vec![0.0; k], vec![0.0; y.ncols()], vec![0.0; k * k]);
    for i in 0..f.nrows() {
        copy_row(f, i, &mut fr);
        copy_row(y, i, &mut yr);
        lik.curvature_root(&fr, &yr, &mut root);
        for (m, v) in root.iter().enumerate() {
            rows[(i * k + m / k, m % k)] = *v;
        }
    }
    rows
}

crate::words! {
    /// The likelihoods users name on the command line, with laplace-torch's aliases:
    /// `regression` for the Gaussian, `classification` for the categorical (the Bernoulli for a
    /// network of one output, [`LikelihoodKind::for_outputs`]).
    pub enum LikelihoodKind("likelihood") {
        /// Gaussian with noise standard deviation σ.
        Gaussian = ["gaussian", "regression"],
        /// Bernoulli on one logit.
        Bernoulli = ["bernoulli", "binary"],
        /// Categorical (softmax) on K logits.
        Categorical = ["categorical", "softmax", "classification"],
    }
}

impl LikelihoodKind {
    /// The likelihood of a network of `k` outputs: a categorical one on one output is the
    /// Bernoulli (laplace-torch's `"classification"` for a binary network).
    pub fn for_outputs(self, k: usize) -> Self {
        match self {
            LikelihoodKind::Categorical if k == 1 => LikelihoodKind::Bernoulli,
            other => other,
        }
    }

    /// laplace-torch's word for it: `"regression"` or `"classification"`.
    pub fn laplace_word(self) -> &'static str {
        match self {
            LikelihoodKind::Gaussian => "regression",
            _ => "classification",
        }
    }

    /// Checks targets `Y` (N rows) and brings them to this likelihood's form. Gaussian: any
    /// finite values. Bernoulli: one column of 0/1. Categorical: one-hot rows of K columns,
    /// from one column of integer labels `0..K−1` (K = `classes`, else the largest label + 1)
    /// or from K columns already one-hot. `what` names the data in messages (a file, "the test
    /// set").
    pub fn prepare_targets(
        self,
        y: Mat<f64>,
        classes: Option<usize>,
        what: &str,
    ) -> Result<Mat<f64>> {
        let bad =
            |i: usize, msg: String| Error::Invalid(format!("{what}: example {}: {msg}", i + 1));
        let label = |i: usize, v: f64| -> Result<usize> {
            if v >= 0.0 && v.fract() == 0.0 && v < 1e9 {
                Ok(v as usize)
            } else {
                Err(bad(
                    i,
                    format!("target {v} is not a class label (an integer 0, 1, 2, …)"),
                ))
            }
        };
        match self {
            LikelihoodKind::Gaussian => Ok(y),
            LikelihoodKind::Bernoulli => {
                if y.ncols() != 1 {
                    return Err(Error::Invalid(format!(
                        "{what}: the bernoulli likelihood takes one target column of 0/1, got {}",
                        y.ncols()
                    )));
                }
                for i in 0..y.nrows() {
                    if label(i, y[(i, 0)])? > 1 {
                        return Err(bad(i, format!("target {} is not 0 or 1", y[(i, 0)])));
                    }
                }
                Ok(y)
            }
            LikelihoodKind::Categorical if y.ncols() == 1 => {
                let labels = (0..y.nrows())
                    .map(|i| label(i, y[(i, 0)]))
                    .collect::<Result<Vec<usize>>>()?;
                let k = classes.unwrap_or_else(|| labels.iter().max().map_or(0, |m| m + 1));
                if k < 2 {
                    return Err(Error::Invalid(format!(
                        "{what}: the categorical likelihood needs at least 2 classes, got {k} \
                         (set --classes)"
                    )));
                }
                if let Some(i) = labels.iter().position(|&l| l >= k) {
                    return Err(bad(
                        i,
                        format!("label {} is not below --classes {k}", labels[i]),
                    ));
                }
                Ok(Mat::from_fn(y.nrows(), k, |i, c| {
                    f64::from(u8::from(labels[i] == c))
                }))
            }
            LikelihoodKind::Categorical => {
                if let Some(k) = classes.filter(|&k| k != y.ncols()) {
                    return Err(Error::Invalid(format!(
                        "{what}: {} one-hot target columns, but --classes {k}",
                        y.ncols()
                    )));
                }
                for i in 0..y.nrows() {
                    let row: Vec<f64> = y.row(i).iter().copied().collect();
                    let ones = row.iter().filter(|&&v| v == 1.0).count();
                    if ones != 1 || row.iter().any(|&v| v != 0.0 && v != 1.0) {
                        return Err(bad(
                            i,
                            format!(
                                "targets {row:?} are not one-hot; give one column of integer \
                                 labels or K columns with a single 1"
                            ),
                        ));
                    }
                }
                Ok(y)
            }
        }
    }

    /// The likelihood with noise `sigma` (used by the Gaussian).
    pub fn build(self, sigma: f64) -> Result<Box<dyn Likelihood>> {
        match self {
            LikelihoodKind::Gaussian => Ok(Box::new(Gaussian::new(sigma)?)),
            LikelihoodKind::Bernoulli => Ok(Box::new(Bernoulli)),
            LikelihoodKind::Categorical => Ok(Box::new(Categorical)),
        }
    }
}

/// Whether a K×K block is `c I`.
pub fn is_scaled_identity(k: usize, b: &[f64]) -> bool {
    (0..k).all(|i| {
        (0..k).all(|j| {
            if i == j {
                b[i * k + j] == b[0]
            } else {
                b[i * k + j] == 0.0
            }
        })
    })
}
