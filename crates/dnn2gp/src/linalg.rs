//! Dense linear algebra helpers on top of `faer`: products, Cholesky with a jitter ladder,
//! log-determinants and triangular solves.

use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The floating types dense kernels are computed in: f64, or f32 at twice the GEMM rate.
pub trait Real:
    faer::traits::RealField
    + Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::DivAssign
    + std::iter::Sum
    + 'static
{
    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
    /// This value in f64 (exact).
    fn f64(self) -> f64;
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        f64::from(self)
    }
}

/// `m` rounded to `T` (a copy for f64).
pub fn to_real<T: Real>(m: MatRef<'_, f64>) -> Mat<T> {
    convert(m, T::of)
}

/// `m` in f64 (exact).
pub fn to_f64<T: Real>(m: MatRef<'_, T>) -> Mat<f64> {
    convert(m, T::f64)
}

/// `f` of each entry, column by column.
fn convert<A: Copy, B: Real>(m: MatRef<'_, A>, f: impl Fn(A) -> B) -> Mat<B> {
    let mut out = Mat::<B>::zeros(m.nrows(), m.ncols());
    wide(|| {
        for j in 0..m.ncols() {
            let dst = col_mut(out.as_mut(), j);
            (dst.iter_mut().zip(m.col(j).iter())).for_each(|(d, &v)| *d = f(v));
        }
    });
    out
}

/// Parallelism for an operation of about `flops` floating-point operations: sequential below
/// 2·10⁶, where threads cost more than they save.
pub fn par_for(flops: usize) -> Par {
    if flops < 2_000_000 {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

/// Column `j` of a matrix whose columns are contiguous (every owned `Mat`), as a slice.
pub fn col<T>(m: MatRef<'_, T>, j: usize) -> &[T] {
    m.col(j).try_as_col_major().expect("contiguous").as_slice()
}

/// [`col`], mutable.
pub fn col_mut<T>(m: MatMut<'_, T>, j: usize) -> &mut [T] {
    m.col_mut(j)
        .try_as_col_major_mut()
        .expect("contiguous")
        .as_slice_mut()
}

/// Runs `f` compiled for the widest vector unit the CPU has: AVX-512, else AVX2, found at run
/// time (baseline x86-64 has only 2-lane SSE2). Element-wise loops in `f` then vectorise 8 or
/// 4 lanes wide. The code is the same, and Rust never contracts `a·b + c` into an FMA, so the
/// results are bit-identical on every CPU.
#[inline]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected;
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has every feature `avx512` is compiled for (checked just above).
            return unsafe { x86::avx512(f) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above, for `avx2`.
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2")]
    pub(super) fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// `Σ_c f(start_c, len_c)` over consecutive chunks of `chunk` rows out of `n`, each giving a
/// scalar and a vector of length `len` ([`par_chunk_reduce`], 256 chunks at a time).
pub fn par_chunk_sum<F>(n: usize, chunk: usize, len: usize, f: F) -> (f64, Vec<f64>)
where
    F: Fn(usize, usize) -> (f64, Vec<f64>) + Sync,
{
    par_chunk_reduce(n, chunk, 256, f, |(t, acc), (u, v)| {
        *t += u;
        acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    })
    .unwrap_or_else(|| (0.0, vec![0.0; len]))
}

/// `f(start_c, len_c)` over consecutive chunks of `chunk` rows out of `n`, combined by `add`:
/// `group` chunks run in parallel at a time and are added in order, so the result does not
/// depend on the number of threads. `None` for no rows.
pub fn par_chunk_reduce<T, F, A>(n: usize, chunk: usize, group: usize, f: F, add: A) -> Option<T>
where
    T: Send,
    F: Fn(usize, usize) -> T + Sync,
    A: Fn(&mut T, T),
{
    use rayon::prelude::*;
    let starts: Vec<usize> = (0..n).step_by(chunk.max(1)).collect();
    let mut total: Option<T> = None;
    for g in starts.chunks(group.max(1)) {
        let parts: Vec<T> = g.par_iter().map(|&s| f(s, chunk.min(n - s))).collect();
        for p in parts {
            match &mut total {
                None => total = Some(p),
                Some(t) => add(t, p),
            }
        }
    }
    total
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

/// One rung of the ladder in place: factorises `A + εI` (lower half of `A` read) into its lower
/// triangle, using the strict upper one as scratch. `false` (and `A` overwritten) when it is not
/// positive definite.
pub fn try_cholesky_in_place(mut a: MatMut<'_, f64>, jitter: f64) -> bool {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
    let n = a.nrows();
    let par = par_for(n * n * n / 3);
    let mut buf = MemBuffer::new(cholesky_in_place_scratch::<f64>(n, par, Default::default()));
    for i in 0..n {
        a[(i, i)] += jitter;
    }
    cholesky_in_place(
        a.rb_mut(),
        Default::default(),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .is_ok()
}

/// The jitters of [`JITTER_LADDER`] for `A`: relative to its mean absolute diagonal. Refuses a
/// matrix that is not square or holds NaN or Inf.
pub fn jitter_ladder(a: MatRef<'_, f64>, what: &str) -> Result<Vec<f64>> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(Error::Invalid(format!(
            "{what}: Cholesky of a non-square {}×{} matrix",
            n,
            a.ncols()
        )));
    }
    if (0..n)
        .into_par_iter()
        .with_min_len(64)
        .any(|j| a.col(j).subrows(j, n - j).iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Numerical(format!(
            "{what}: matrix contains NaN or Inf"
        )));
    }
    let scale = (0..n).map(|i| a[(i, i)].abs()).sum::<f64>() / n.max(1) as f64;
    let scale = if scale > 0.0 { scale } else { 1.0 };
    Ok(JITTER_LADDER.iter().map(|r| r * scale).collect())
}

/// The error when every rung of the ladder failed.
pub fn ladder_failed(what: &str) -> Error {
    Error::Numerical(format!(
        "{what}: Cholesky failed even with jitter {:.1e}·mean(diag); the matrix is not positive definite",
        JITTER_LADDER[JITTER_LADDER.len() - 1]
    ))
}

/// Copies the strict lower triangle of a square matrix into its upper one: the two diagonal
/// quarters recursively, in parallel with the transposed copy of the off-diagonal one.
pub fn mirror_lower<T: Real>(a: MatMut<'_, T>) {
    let n = a.nrows();
    if n <= 128 {
        let mut a = a;
        for j in 1..n {
            for i in 0..j {
                let v = a[(j, i)];
                a[(i, j)] = v;
            }
        }
        return;
    }
    let h = n / 2;
    let (a11, a12, a21, a22) = a.split_at_mut(h, h);
    rayon::join(
        || rayon::join(|| mirror_lower(a11), || mirror_lower(a22)),
        || transpose_into(a12, a21.rb()),
    );
}

/// `D = Sᵀ` in 64×64 blocks, so that both sides are read and written along cache lines.
pub(crate) fn transpose_into<T: Real>(mut d: MatMut<'_, T>, s: MatRef<'_, T>) {
    const B: usize = 64;
    for j0 in (0..d.ncols()).step_by(B) {
        for i0 in (0..d.nrows()).step_by(B) {
            let (h, w) = (B.min(d.nrows() - i0), B.min(d.ncols() - j0));
            d.rb_mut()
                .submatrix_mut(i0, j0, h, w)
                .copy_from(s.submatrix(j0, i0, w, h).transpose());
        }
    }
}

impl Cholesky {
    /// Factorises `A` (symmetric, lower half read), climbing [`JITTER_LADDER`] on failure.
    pub fn new(a: MatRef<'_, f64>, what: &str) -> Result<Self> {
        Self::with_max_jitter(a, what, f64::INFINITY)?.ok_or_else(|| ladder_failed(what))
    }

    /// [`Cholesky::new`] climbing only the rungs whose jitter is at most `max_jitter`; `None`
    /// when none of them factorises.
    pub fn with_max_jitter(
        a: MatRef<'_, f64>,
        what: &str,
        max_jitter: f64,
    ) -> Result<Option<Self>> {
        for jitter in jitter_ladder(a, what)? {
            if jitter > max_jitter {
                break;
            }
            let mut m = a.to_owned();
            if try_cholesky_in_place(m.as_mut(), jitter) {
                for j in 1..m.ncols() {
                    m.as_mut().col_mut(j).subrows_mut(0, j).fill(0.0);
                }
                return Ok(Some(Cholesky { l: m, jitter }));
            }
        }
        Ok(None)
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
        solve_triangular_in_place(self.l.as_ref(), false, x.as_mut());
        x
    }

    /// `A⁻¹ B = L⁻ᵀ L⁻¹ B`.
    pub fn solve(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut x = self.solve_l(b);
        solve_triangular_in_place(self.l.as_ref(), true, x.as_mut());
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

/// A factor `A = M Mᵀ` of a symmetric positive-definite matrix: its Cholesky factor
/// (`M = L`), or the eigen form `M = V diag(√s)` of `A = V diag(s) Vᵀ`, for a matrix whose
/// rounding errors defeat the Cholesky factorisation.
#[derive(Debug, Clone)]
pub enum SpdFactor {
    /// `M = L`, lower triangular.
    Cholesky(Cholesky),
    /// `M = V diag(root)`, V orthogonal.
    Eigen {
        /// Eigenvectors `V`.
        v: Mat<f64>,
        /// `√s`, the square roots of the eigenvalues.
        root: Vec<f64>,
    },
}

impl SpdFactor {
    /// The eigen form of `H + δI` for a symmetric positive semi-definite `H`, its eigenvalues
    /// floored at 0; also returns how many were negative (rounding) before the floor.
    pub fn eigen_shifted(h: MatRef<'_, f64>, delta: f64, what: &str) -> Result<(Self, usize)> {
        let evd = h.self_adjoint_eigen(Side::Lower).map_err(|_| {
            Error::Numerical(format!("{what}: eigendecomposition did not converge"))
        })?;
        let s = evd.S();
        let floored = (0..h.nrows()).filter(|&i| s[i] < 0.0).count();
        let root = (0..h.nrows())
            .map(|i| (s[i].max(0.0) + delta).sqrt())
            .collect();
        Ok((
            SpdFactor::Eigen {
                v: evd.U().to_owned(),
                root,
            },
            floored,
        ))
    }

    /// `M⁻¹ B`.
    pub fn solve_l(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        match self {
            SpdFactor::Cholesky(c) => c.solve_l(b),
            SpdFactor::Eigen { v, root } => {
                let mut x = at_b(v.as_ref(), b);
                for (i, r) in root.iter().enumerate() {
                    x.as_mut().row_mut(i).iter_mut().for_each(|e| *e /= r);
                }
                x
            }
        }
    }

    /// `A⁻¹ B = M⁻ᵀ M⁻¹ B`.
    pub fn solve(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        match self {
            SpdFactor::Cholesky(c) => c.solve(b),
            SpdFactor::Eigen { v, root } => {
                let mut x = self.solve_l(b);
                for (i, r) in root.iter().enumerate() {
                    x.as_mut().row_mut(i).iter_mut().for_each(|e| *e /= r);
                }
                a_b(v.as_ref(), x.as_ref())
            }
        }
    }

    /// `A⁻¹ v` for a vector `v`.
    pub fn solve_vec(&self, v: &[f64]) -> Vec<f64> {
        let x = self.solve(MatRef::from_column_major_slice(v, v.len(), 1));
        x.col(0).iter().copied().collect()
    }

    /// `M⁻ᵀ z` (maps a standard normal draw to a draw with covariance `A⁻¹`).
    pub fn solve_lt_vec(&self, z: &[f64]) -> Vec<f64> {
        match self {
            SpdFactor::Cholesky(c) => c.solve_lt_vec(z),
            SpdFactor::Eigen { v, root } => {
                let scaled: Vec<f64> = z.iter().zip(root).map(|(z, r)| z / r).collect();
                mat_vec(v.as_ref(), &scaled)
            }
        }
    }

    /// The dimension of A.
    pub fn dim(&self) -> usize {
        match self {
            SpdFactor::Cholesky(c) => c.l.nrows(),
            SpdFactor::Eigen { root, .. } => root.len(),
        }
    }

    /// `A = M Mᵀ`.
    pub fn matrix(&self) -> Mat<f64> {
        match self {
            SpdFactor::Cholesky(c) => a_bt(c.l.as_ref(), c.l.as_ref()),
            SpdFactor::Eigen { v, root } => {
                let m = Mat::from_fn(v.nrows(), v.ncols(), |i, j| v[(i, j)] * root[j]);
                a_bt(m.as_ref(), m.as_ref())
            }
        }
    }

    /// `log|A|`.
    pub fn log_det(&self) -> f64 {
        match self {
            SpdFactor::Cholesky(c) => c.log_det(),
            SpdFactor::Eigen { root, .. } => 2.0 * root.iter().map(|r| r.ln()).sum::<f64>(),
        }
    }

    /// The jitter the Cholesky ladder added (0 for the eigen form).
    pub fn jitter(&self) -> f64 {
        match self {
            SpdFactor::Cholesky(c) => c.jitter,
            SpdFactor::Eigen { .. } => 0.0,
        }
    }
}

/// `L⁻¹ B` (or `L⁻ᵀ B`, `transposed`) in place, for a lower triangular `L`. Many right-hand
/// sides are split into one share per thread, each solved sequentially, so that the threads
/// never wait on one another (faer's parallel solve synchronises them at every block).
pub fn solve_triangular_in_place(l: MatRef<'_, f64>, transposed: bool, b: MatMut<'_, f64>) {
    let solve = |b: MatMut<'_, f64>, par| {
        if transposed {
            faer::linalg::triangular_solve::solve_upper_triangular_in_place(l.transpose(), b, par)
        } else {
            solve_lower_triangular_in_place(l, b, par)
        }
    };
    let (n, k, threads) = (l.nrows(), b.ncols(), rayon::current_num_threads());
    let par = par_for(n * n * k);
    if matches!(par, Par::Seq) || k < threads {
        return solve(b, par);
    }
    b.par_col_chunks_mut(k.div_ceil(threads))
        .for_each(|c| solve(c, Par::Seq));
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

/// Refuses an allocation of `bytes` above `limit`, naming `what` and the alternative
/// ([`Error::Memory`]).
pub fn check_memory(what: &str, bytes: u128, limit: u128, advice: &str) -> Result<()> {
    if bytes > limit {
        return Err(Error::Memory {
            what: what.to_string(),
            bytes,
            limit,
            advice: advice.to_string(),
        });
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

/// A symmetric PSD matrix of low numerical rank, in the form [`tridiagonalize`] gives:
/// `A ≈ U diag(d) Uᵀ` with `U` (n×r) orthonormal, `c = [Uᵀv, ‖v − UUᵀv‖]` and `d` padded with a
/// zero for the last entry of `c`, so that `vᵀ(sA + I)⁻¹v` and `|sA + I|` come from
/// [`tridiagonal_logdet_quad`] on a diagonal of length r + 1.
#[derive(Debug, Clone)]
pub struct LowRank {
    /// The r eigenvalues and a trailing zero.
    pub d: Vec<f64>,
    /// `Uᵀv` and `‖v − UUᵀv‖`.
    pub c: Vec<f64>,
    /// The rank r.
    pub rank: usize,
    /// `tr(A − LLᵀ)`, the trace of what was dropped: `|log|sA + I| − log|sL Lᵀ + I|| ≤ s·tr`.
    pub residual_trace: f64,
}

/// [`LowRank`] from a pivoted Cholesky `A ≈ L Lᵀ` (lower half of `A` read), stopped once the
/// residual's trace is at most `n·ε·max_i A_ii` (the backward error of a dense
/// tridiagonalisation), and the thin SVD `L = U S Wᵀ` (`d = S²`). O(n r²); `None` if the rank
/// passes `max_rank`.
pub fn low_rank_form(a: MatRef<'_, f64>, v: &[f64], max_rank: usize) -> Option<LowRank> {
    let n = a.nrows();
    let mut diag: Vec<f64> = (0..n).map(|i| a[(i, i)]).collect();
    let tol = n as f64 * f64::EPSILON * diag.iter().cloned().fold(0.0, f64::max);
    let mut l = Mat::<f64>::with_capacity(n, max_rank.min(n));
    let mut pivoted = vec![false; n];
    let residual_trace = loop {
        let trace: f64 = diag.iter().sum();
        if trace <= tol {
            break trace;
        }
        let r = l.ncols();
        if r == max_rank.min(n) {
            return None;
        }
        let (p, &dp) = diag
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .expect("n > 0 while the trace is positive");
        if dp.is_nan() {
            return None;
        }
        // Column r: (A[:, p] − L L[p, :]ᵀ) / √d_p on the rows not yet pivoted.
        let root = dp.sqrt();
        let mut col: Vec<f64> = (0..n)
            .map(|i| if i >= p { a[(i, p)] } else { a[(p, i)] })
            .collect();
        for t in 0..r {
            let f = l[(p, t)];
            col.iter_mut()
                .zip(l.col(t).iter())
                .for_each(|(c, l)| *c -= f * l);
        }
        l.resize_with(n, r + 1, |i, _| {
            if pivoted[i] || i == p {
                0.0
            } else {
                col[i] / root
            }
        });
        for i in 0..n {
            let v = l[(i, r)];
            diag[i] = (diag[i] - v * v).max(0.0);
        }
        l[(p, r)] = root;
        diag[p] = 0.0;
        pivoted[p] = true;
    };
    let rank = l.ncols();
    let (u, d): (Mat<f64>, Vec<f64>) = if rank == 0 {
        (Mat::zeros(n, 0), Vec::new())
    } else {
        let svd = l.thin_svd().ok()?;
        let s = svd.S().column_vector();
        (svd.U().to_owned(), (0..rank).map(|i| s[i] * s[i]).collect())
    };
    let mut c = mat_t_vec(u.as_ref(), v);
    let mut rest = v.to_vec();
    for (j, cj) in c.iter().enumerate() {
        rest.iter_mut()
            .zip(u.col(j).iter())
            .for_each(|(r, u)| *r -= cj * u);
    }
    c.push(dot(&rest, &rest).sqrt());
    let mut d = d;
    d.push(0.0);
    Some(LowRank {
        d,
        c,
        rank,
        residual_trace,
    })
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

/// `[A; B]`.
pub fn stack_rows(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::zeros(a.nrows() + b.nrows(), a.ncols());
    out.as_mut().subrows_mut(0, a.nrows()).copy_from(a);
    out.as_mut().subrows_mut(a.nrows(), b.nrows()).copy_from(b);
    out
}

/// `‖A − B‖²_F`, the sum of squared differences of two matrices of one shape.
pub fn sq_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    a.col_iter()
        .zip(b.col_iter())
        .map(|(x, y)| {
            x.iter()
                .zip(y.iter())
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
        })
        .sum()
}
