//! Dense linear algebra helpers on top of `faer`: products, Cholesky with a jitter ladder,
//! log-determinants and triangular solves.

use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{Error, Result};

/// Parallelism for an operation of about `flops` floating-point operations: sequential below
/// 2·10⁶, where threads cost more than they save.
pub fn par_for(flops: usize) -> Par {
    if flops < 2_000_000 {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

/// `Σ_c f(start_c, len_c)` over consecutive chunks of `chunk` rows out of `n`, each giving a
/// scalar and a vector of length `len`; chunks run in parallel, a few hundred at a time, and
/// are summed in order, so the result does not depend on the number of threads.
pub fn par_chunk_sum<F>(n: usize, chunk: usize, len: usize, f: F) -> (f64, Vec<f64>)
where
    F: Fn(usize, usize) -> (f64, Vec<f64>) + Sync,
{
    use rayon::prelude::*;
    let starts: Vec<usize> = (0..n).step_by(chunk.max(1)).collect();
    let (mut total, mut acc) = (0.0, vec![0.0; len]);
    for group in starts.chunks(256) {
        let parts: Vec<(f64, Vec<f64>)> =
            group.par_iter().map(|&s| f(s, chunk.min(n - s))).collect();
        for (t, v) in parts {
            total += t;
            acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
    }
    (total, acc)
}

/// `C = A B` for views (the transposes are free views).
fn product(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut c = Mat::zeros(a.nrows(), b.ncols());
    let par = par_for(2 * a.nrows() * a.ncols() * b.ncols());
    matmul(c.as_mut(), Accum::Replace, a, b, 1.0, par);
    c
}

/// `A Bᵀ`.
pub fn a_bt(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    product(a, b.transpose())
}

/// `Aᵀ B`.
pub fn at_b(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    product(a.transpose(), b)
}

/// `A B`.
pub fn a_b(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    product(a, b)
}

/// `A v` for a vector `v`.
pub fn mat_vec(a: MatRef<'_, f64>, v: &[f64]) -> Vec<f64> {
    let vm = MatRef::from_column_major_slice(v, v.len(), 1);
    let out = a_b(a, vm);
    out.col(0).iter().copied().collect()
}

/// `Aᵀ v` for a vector `v`.
pub fn mat_t_vec(a: MatRef<'_, f64>, v: &[f64]) -> Vec<f64> {
    let vm = MatRef::from_column_major_slice(v, v.len(), 1);
    let out = at_b(a, vm);
    out.col(0).iter().copied().collect()
}

/// Euclidean dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Lower Cholesky factor `L` of a symmetric positive-definite matrix (`A = L Lᵀ`), with the
/// jitter that was added to the diagonal to make the factorisation succeed.
#[derive(Debug, Clone)]
pub struct Cholesky {
    /// The lower-triangular factor.
    pub l: Mat<f64>,
    /// `ε` with `A + ε I = L Lᵀ` (0 when none was needed).
    pub jitter: f64,
}

/// Jitter ladder, relative to the mean diagonal: the first value that factorises is used.
pub const JITTER_LADDER: [f64; 8] = [0.0, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2];

impl Cholesky {
    /// Factorises `A` (symmetric, lower half read), climbing [`JITTER_LADDER`] on failure.
    pub fn new(a: MatRef<'_, f64>, what: &str) -> Result<Self> {
        let n = a.nrows();
        if a.ncols() != n {
            return Err(Error::Invalid(format!(
                "{what}: Cholesky of a non-square {}×{} matrix",
                n,
                a.ncols()
            )));
        }
        if a.col_iter().any(|c| c.iter().any(|v| !v.is_finite())) {
            return Err(Error::Numerical(format!(
                "{what}: matrix contains NaN or Inf"
            )));
        }
        let scale = if n == 0 {
            1.0
        } else {
            (0..n).map(|i| a[(i, i)].abs()).sum::<f64>() / n as f64
        };
        let scale = if scale > 0.0 { scale } else { 1.0 };
        use faer::dyn_stack::{MemBuffer, MemStack};
        use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
        let par = par_for(n * n * n / 3);
        let mut buf = MemBuffer::new(cholesky_in_place_scratch::<f64>(n, par, Default::default()));
        for rel in JITTER_LADDER {
            let jitter = rel * scale;
            let mut m = a.to_owned();
            for i in 0..n {
                m[(i, i)] += jitter;
            }
            let stack = MemStack::new(&mut buf);
            if cholesky_in_place(
                m.as_mut(),
                Default::default(),
                par,
                stack,
                Default::default(),
            )
            .is_ok()
            {
                // The strict upper triangle still holds A's; L is the lower one.
                for j in 1..n {
                    m.as_mut().col_mut(j).subrows_mut(0, j).fill(0.0);
                }
                return Ok(Cholesky { l: m, jitter });
            }
        }
        Err(Error::Numerical(format!(
            "{what}: Cholesky failed even with jitter {:.1e}·mean(diag); the matrix is not positive definite",
            JITTER_LADDER[JITTER_LADDER.len() - 1]
        )))
    }

    /// Parallelism of a triangular solve with `k` right-hand sides.
    fn par(&self, k: usize) -> Par {
        par_for(self.l.nrows() * self.l.nrows() * k)
    }

    /// `log |A| = 2 Σ log L_ii`.
    pub fn log_det(&self) -> f64 {
        2.0 * (0..self.l.nrows())
            .map(|i| self.l[(i, i)].ln())
            .sum::<f64>()
    }

    /// `L⁻¹ B`.
    pub fn solve_l(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut x = b.to_owned();
        let par = self.par(b.ncols());
        solve_lower_triangular_in_place(self.l.as_ref(), x.as_mut(), par);
        x
    }

    /// `A⁻¹ B = L⁻ᵀ L⁻¹ B`.
    pub fn solve(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut x = self.solve_l(b);
        let par = self.par(b.ncols());
        faer::linalg::triangular_solve::solve_upper_triangular_in_place(
            self.l.as_ref().transpose(),
            x.as_mut(),
            par,
        );
        x
    }

    /// `A⁻¹ v` for a vector `v`.
    pub fn solve_vec(&self, v: &[f64]) -> Vec<f64> {
        let x = self.solve(MatRef::from_column_major_slice(v, v.len(), 1));
        x.col(0).iter().copied().collect()
    }

    /// `L⁻ᵀ v` (maps a standard normal draw to a draw with covariance `A⁻¹`).
    pub fn solve_lt_vec(&self, v: &[f64]) -> Vec<f64> {
        let mut x = Mat::from_fn(v.len(), 1, |i, _| v[i]);
        faer::linalg::triangular_solve::solve_upper_triangular_in_place(
            self.l.as_ref().transpose(),
            x.as_mut(),
            Par::Seq,
        );
        x.col(0).iter().copied().collect()
    }
}

/// Column sums of squares, `diag(Bᵀ B)`.
pub fn col_sq_norms(b: MatRef<'_, f64>) -> Vec<f64> {
    b.col_iter()
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect()
}

/// Row sums of squares, `diag(B Bᵀ)`.
pub fn row_sq_norms(b: MatRef<'_, f64>) -> Vec<f64> {
    let mut out = vec![0.0; b.nrows()];
    for c in b.col_iter() {
        for (o, v) in out.iter_mut().zip(c.iter()) {
            *o += v * v;
        }
    }
    out
}

/// Estimated bytes of an `r × c` f64 matrix.
pub fn mat_bytes(r: usize, c: usize) -> u128 {
    r as u128 * c as u128 * 8
}

/// Refuses an allocation of `bytes` above `limit`, naming `what` and the alternative.
pub fn check_memory(what: &str, bytes: u128, limit: u128, advice: &str) -> Result<()> {
    if bytes > limit {
        return Err(Error::Memory(format!(
            "{what} needs {:.2} GiB, above the memory limit of {:.2} GiB; {advice}",
            bytes as f64 / (1u128 << 30) as f64,
            limit as f64 / (1u128 << 30) as f64
        )));
    }
    Ok(())
}

/// Memory available for new allocations: `MemAvailable` from `/proc/meminfo`, or 8 GiB where
/// that cannot be read.
pub fn available_memory() -> u128 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u128>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}

/// Symmetric PSD square root `U S^{1/2} Uᵀ` of a small symmetric matrix (negative eigenvalues
/// from rounding are clipped to 0).
pub fn sym_sqrt(a: MatRef<'_, f64>) -> Mat<f64> {
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .expect("eigendecomposition of a small symmetric matrix");
    let (u, s) = (evd.U(), evd.S());
    let k = a.nrows();
    Mat::from_fn(k, k, |i, j| {
        (0..k)
            .map(|l| u[(i, l)] * s[l].max(0.0).sqrt() * u[(j, l)])
            .sum()
    })
}

/// Householder tridiagonalisation of a symmetric matrix (lower half read), `A = Q T Qᵀ`,
/// returning the diagonal and sub-diagonal of `T` and `Qᵀ v`: what a family of shifted solves
/// `vᵀ(A + μI)⁻¹v` and determinants `|A + μI|` needs, each then O(n), without the O(n³)
/// accumulation of eigenvectors.
pub fn tridiagonalize(mut a: Mat<f64>, v: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
    use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
    use faer::linalg::householder::{
        apply_block_householder_sequence_transpose_on_the_left_in_place_scratch as apply_scratch,
        apply_block_householder_sequence_transpose_on_the_left_in_place_with_conj as apply,
    };
    let n = a.nrows();
    let mut c = v.to_vec();
    if n < 2 {
        return ((0..n).map(|i| a[(i, i)]).collect(), Vec::new(), c);
    }
    let par = par_for(n * n * n);
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
    let mut h = Mat::<f64>::zeros(bs, n - 1);
    let mut buf = MemBuffer::new(StackReq::any_of(&[
        tridiag_in_place_scratch::<f64>(n, par, Default::default()),
        apply_scratch::<f64>(n - 1, bs, 1),
    ]));
    let stack = MemStack::new(&mut buf);
    tridiag_in_place(a.as_mut(), h.as_mut(), par, stack, Default::default());
    let rest = faer::MatMut::from_column_major_slice_mut(&mut c[1..], n - 1, 1);
    apply(
        a.as_ref().submatrix(1, 0, n - 1, n - 1),
        h.as_ref(),
        faer::Conj::No,
        rest,
        par,
        stack,
    );
    let d = (0..n).map(|i| a[(i, i)]).collect();
    let e = (0..n - 1).map(|i| a[(i + 1, i)]).collect();
    (d, e, c)
}

/// For the symmetric tridiagonal `M = s·T + I` (`T` with diagonal `d`, sub-diagonal `e`):
/// `(log|M|, cᵀM⁻¹c)` by its LDLᵀ factorisation, in O(n). `None` if M is not positive definite.
pub fn tridiagonal_logdet_quad(d: &[f64], e: &[f64], s: f64, c: &[f64]) -> Option<(f64, f64)> {
    let (mut logdet, mut quad) = (0.0, 0.0);
    let (mut y_prev, mut l_prev) = (0.0, 0.0);
    for i in 0..d.len() {
        let off = if i > 0 { s * e[i - 1] } else { 0.0 };
        let piv = s * d[i] + 1.0 - l_prev * off;
        if piv.is_nan() || piv <= 0.0 {
            return None;
        }
        let y = c[i] - l_prev * y_prev;
        logdet += piv.ln();
        quad += y * y / piv;
        l_prev = if i + 1 < d.len() { s * e[i] / piv } else { 0.0 };
        y_prev = y;
    }
    Some((logdet, quad))
}
