//! The precision `A = Σ⁻¹` of a Gaussian `N(μ, Σ)` over the weights, factorised, full,
//! diagonal, Kronecker-factored (KFAC) or low rank plus δI: what the Laplace posterior and VOGN's `q` both hold, with the sampling and
//! variance code they share.

use faer::{Mat, MatRef};

use super::{Kron, LowRank};
use crate::error::Result;
use crate::linalg::{at_b, col_sq_norms, wide, Cholesky, SpdFactor};
use crate::rng::{normals, normals_then, Rng};

/// `A = Σ⁻¹`, full, diagonal, KFAC or low rank.
#[derive(Debug, Clone)]
pub enum Precision {
    /// A full precision `A = M Mᵀ`.
    Full {
        /// Its factor: Cholesky, or the eigen form where rounding defeats Cholesky.
        factor: SpdFactor,
        /// `A` itself, kept where it is updated step by step (VOGN).
        matrix: Option<Mat<f64>>,
    },
    /// The diagonal entries of A.
    Diag(Vec<f64>),
    /// Kronecker blocks per layer, eigendecomposed.
    Kron(Kron),
    /// The top eigenpairs of the GGN plus δI.
    LowRank(LowRank),
}

impl Precision {
    /// A full precision from its matrix (Cholesky with jitter if needed), keeping the matrix.
    pub fn full(matrix: Mat<f64>, what: &str) -> Result<Self> {
        let factor = SpdFactor::Cholesky(Cholesky::new(matrix.as_ref(), what)?);
        Ok(Precision::Full {
            factor,
            matrix: Some(matrix),
        })
    }

    /// The dimension P.
    pub fn dim(&self) -> usize {
        match self {
            Precision::Full { factor, .. } => factor.dim(),
            Precision::Diag(d) => d.len(),
            Precision::Kron(k) => k.dim(),
            Precision::LowRank(l) => l.dim(),
        }
    }

    /// `A` as a dense matrix (the kept matrix, else `M Mᵀ`).
    pub fn dense(&self) -> Mat<f64> {
        match self {
            Precision::Full {
                matrix: Some(m), ..
            } => m.clone(),
            Precision::Full { factor, .. } => factor.matrix(),
            Precision::Diag(d) => {
                Mat::from_fn(d.len(), d.len(), |i, j| if i == j { d[i] } else { 0.0 })
            }
            Precision::Kron(k) => k.dense(),
            Precision::LowRank(l) => l.dense(),
        }
    }

    /// `Σ v = A⁻¹ v`.
    pub fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        match self {
            Precision::Full { factor, .. } => factor.solve_vec(v),
            Precision::Diag(d) => v.iter().zip(d).map(|(v, d)| v / d).collect(),
            Precision::Kron(k) => k.covariance_times(v),
            Precision::LowRank(l) => l.covariance_times(v),
        }
    }

    /// A draw `μ + M⁻ᵀ z`, `z ~ N(0, I)`, from `N(μ, Σ)`.
    pub fn sample(&self, mu: &[f64], rng: &mut Rng) -> Vec<f64> {
        match self {
            Precision::Full { factor, .. } => {
                let e = factor.solve_lt_vec(&normals(rng, mu.len()));
                mu.iter().zip(&e).map(|(m, e)| m + e).collect()
            }
            Precision::Diag(d) => normals_then(rng, mu.len(), |o, e| {
                let (mu, d) = (&mu[o..o + e.len()], &d[o..o + e.len()]);
                wide(|| {
                    for ((e, m), d) in e.iter_mut().zip(mu).zip(d) {
                        *e = m + *e / d.sqrt();
                    }
                })
            }),
            Precision::Kron(k) => k.sample(mu, rng),
            Precision::LowRank(l) => l.sample(mu, rng),
        }
    }

    /// Marginal variances `diag(J Σ Jᵀ)` for the rows of `J`.
    pub fn functional_variance(&self, j: MatRef<'_, f64>) -> Vec<f64> {
        match self {
            Precision::Full { factor, .. } => col_sq_norms(factor.solve_l(j.transpose()).as_ref()),
            Precision::Diag(d) => (0..j.nrows())
                .map(|m| j.row(m).iter().zip(d).map(|(j, d)| j * j / d).sum())
                .collect(),
            Precision::Kron(k) => crate::linalg::row_sq_norms(k.whiten(j).as_ref()),
            Precision::LowRank(l) => (0..j.nrows())
                .map(|r| l.kernel(j.subrows(r, 1), j.subrows(r, 1))[(0, 0)])
                .collect(),
        }
    }

    /// The kernel `J_a Σ J_bᵀ`.
    pub fn kernel(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        match self {
            Precision::Full { factor, .. } => {
                let (va, vb) = (
                    factor.solve_l(ja.transpose()),
                    factor.solve_l(jb.transpose()),
                );
                at_b(va.as_ref(), vb.as_ref())
            }
            Precision::Diag(d) => {
                let scaled = Mat::from_fn(ja.nrows(), ja.ncols(), |r, c| ja[(r, c)] / d[c]);
                crate::linalg::a_bt(scaled.as_ref(), jb)
            }
            Precision::Kron(k) => crate::linalg::a_bt(k.whiten(ja).as_ref(), k.whiten(jb).as_ref()),
            Precision::LowRank(l) => l.kernel(ja, jb),
        }
    }

    /// The K×K blocks `J_i Σ J_iᵀ` for stacked Jacobians `J` (NK×P), row-major (N·K·K).
    pub fn covariance_blocks(&self, j: MatRef<'_, f64>, k: usize) -> Vec<f64> {
        let n = j.nrows() / k;
        match self {
            Precision::Full { factor, .. } => {
                // V = M⁻¹ Jᵀ, so block i is V_iᵀ V_i.
                let v = factor.solve_l(j.transpose());
                (0..n)
                    .flat_map(|i| {
                        let v = &v;
                        (0..k * k).map(move |m| {
                            let (a, b) = (i * k + m / k, i * k + m % k);
                            v.col(a)
                                .iter()
                                .zip(v.col(b).iter())
                                .map(|(x, y)| x * y)
                                .sum()
                        })
                    })
                    .collect()
            }
            Precision::Diag(d) => {
                let s: Vec<f64> = d.iter().map(|v| 1.0 / v).collect();
                diag_covariance_blocks(j, k, &s)
            }
            Precision::Kron(kron) => {
                diag_covariance_blocks(kron.whiten(j).as_ref(), k, &vec![1.0; kron.dim()])
            }
            Precision::LowRank(l) => (0..n)
                .flat_map(|i| {
                    let ji = j.subrows(i * k, k);
                    let c = l.kernel(ji, ji);
                    (0..k * k).map(move |m| c[(m / k, m % k)])
                })
                .collect(),
        }
    }

    /// `log |A|`.
    pub fn log_det(&self) -> f64 {
        match self {
            Precision::Full { factor, .. } => factor.log_det(),
            Precision::Diag(d) => d.iter().map(|v| v.ln()).sum(),
            Precision::Kron(k) => k.log_det(),
            Precision::LowRank(l) => l.log_det(),
        }
    }

    /// The variances `diag(Σ)`.
    pub fn variances(&self) -> Vec<f64> {
        match self {
            Precision::Full { .. } => {
                let c = self.covariance();
                (0..c.nrows()).map(|i| c[(i, i)]).collect()
            }
            Precision::Diag(d) => d.iter().map(|v| 1.0 / v).collect(),
            Precision::Kron(k) => k.variances(),
            Precision::LowRank(l) => l.variances(),
        }
    }

    /// The dense covariance `Σ` (P×P); for small networks and tests.
    pub fn covariance(&self) -> Mat<f64> {
        let p = self.dim();
        match self {
            Precision::Full { factor, .. } => factor.solve(Mat::<f64>::identity(p, p).as_ref()),
            Precision::Diag(d) => Mat::from_fn(p, p, |i, j| if i == j { 1.0 / d[i] } else { 0.0 }),
            Precision::Kron(k) => k.covariance(),
            Precision::LowRank(l) => l.covariance(),
        }
    }

    /// Jitter the Cholesky factorisation added (0 for the eigen form and the diagonal).
    pub fn jitter(&self) -> f64 {
        match self {
            Precision::Full { factor, .. } => factor.jitter(),
            Precision::Diag(_) | Precision::Kron(_) | Precision::LowRank(_) => 0.0,
        }
    }
}

/// The K×K blocks `C_i = J_i Σ J_iᵀ` of a diagonal covariance `Σ = diag(s)`, from the stacked
/// Jacobians alone:
/// `(C_i)_ab = Σ_p J_ia,p s_p J_ib,p`, `N·K²·P` operations instead of `N²K²P`.
pub fn diag_covariance_blocks(jac: MatRef<'_, f64>, k: usize, s: &[f64]) -> Vec<f64> {
    use rayon::prelude::*;
    let n = jac.nrows() / k;
    // Per example, `C_i = (J_i diag(s)) J_iᵀ` as one K×P by P×K product: J_i's K rows are
    // adjacent in each (column-major) column, so both operands are read along memory.
    (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let ji = jac.subrows(i * k, k);
            let scaled = Mat::from_fn(k, ji.ncols(), |r, c| ji[(r, c)] * s[c]);
            let c = crate::linalg::a_bt(scaled.as_ref(), ji);
            (0..k * k).map(move |m| c[(m / k, m % k)])
        })
        .collect()
}
