//! The marginal likelihood over many prior precisions δ at one linearisation, from a single
//! eigendecomposition (no retraining: the MAP, J, r and Λ stay fixed).
//!
//! With `B = Λ^{1/2} J` (NK×P) and the eigenvalues `s` of the smaller of `BBᵀ`, `BᵀB`:
//! - Laplace evidence (one definition, laplace-torch's, as [`crate::posterior::LaplaceGgn`]):
//!   `log p(D | w*) − (δ/2)‖c‖² + (P/2) log δ − ½ log|BᵀB + δI|`, with `log|BᵀB + δI| = Σ log(s_i + δ) + (P − #s) log δ` (the two
//!   Gram matrices share their eigenvalues up to |NK − P| zeros);
//! - GP marginal likelihood (function space): `−½ vᵀ(BBᵀ/δ + I)⁻¹v − ½ log|BBᵀ/δ + I|
//!   + ½ log|Λ̃| − (NK/2) log 2π` with `v = Λ^{1/2} ỹ`; from the tridiagonal form
//!   `BBᵀ = Q T Qᵀ` and `c = Qᵀv`, both terms come from the LDLᵀ of `T/δ + I`, and
//!   `log|BᵀB + δI| = log|T/δ + I| + NK log δ + (P − NK) log δ`;
//!   (weight space, `BᵀB = V D Vᵀ`): the Laplace evidence with `log p(D | w*)` replaced by its
//!   Gaussian form `−½ Σ rᵀΛ⁻¹r + ½ log|Λ̃| − (NK/2) log 2π` (the same for a Gaussian
//!   likelihood), plus `½ Σ (Vᵀg)_i²/(d_i + δ)` with `g = Jᵀr + δc`.
//!
//! Each δ then costs O(min(NK, P)). The function space needs only a tridiagonalisation
//! (no eigenvectors), and can start from a structured kernel ([`DeltaPath::with_ntk`]). When
//! `BBᵀ` has numerical rank r below NK/8 (smooth networks on low-dimensional inputs), a
//! pivoted Cholesky `BBᵀ ≈ LLᵀ` stopped at the dense method's own backward error replaces the
//! O(N³K³) tridiagonalisation by O(NK r²) work: `BBᵀ ≈ U D Uᵀ` from the thin SVD of L, with the
//! part of v outside U's span kept as one more term.

use faer::{Mat, Side};

use super::Space;
use crate::curvature::Linearization;
use crate::error::{Error, Result};
use crate::linalg::{
    a_bt, at_b, check_memory, dot, low_rank_form, mat_bytes, mat_t_vec, tridiagonal_logdet_quad,
    tridiagonalize,
};
use crate::posterior::evidence::laplace_evidence;
use crate::train::check_delta;

enum Form {
    /// `BBᵀ = Q T Qᵀ`: T's diagonal `d` and sub-diagonal `e`, and `c = Qᵀ Λ^{1/2} ỹ`.
    Function {
        d: Vec<f64>,
        e: Vec<f64>,
        c: Vec<f64>,
    },
    /// Eigenvalues `d` of `BᵀB`, `Vᵀ Jᵀ r` and `Vᵀ c`.
    Weight {
        d: Vec<f64>,
        vg: Vec<f64>,
        vc: Vec<f64>,
    },
}

/// The eigen form of the tridiagonal `T`, with its eigenvalues floored at 0: the fallback
/// where rounding left `T/δ + I` without a positive LDLᵀ at a small δ.
struct FlooredEigen {
    /// `max(λ_i, 0)`.
    lambda: Vec<f64>,
    /// `(Uᵀc)_i²`.
    c_sq: Vec<f64>,
    /// How many `λ_i` were below 0.
    floored: usize,
}

/// Marginal likelihoods as functions of δ at a fixed linearisation.
pub struct DeltaPath {
    p: usize,
    /// `log p(D | w*)`.
    log_lik: f64,
    /// `−½ Σ rᵀΛ⁻¹r + ½ log|Λ̃| − (NK/2) log 2π`, the Gaussian form of `log p(D | w*)`.
    data_term: f64,
    /// `½ log|Λ̃| − (NK/2) log 2π`.
    norm_term: f64,
    c_sq: f64,
    form: Form,
    low_rank: Option<(usize, f64)>,
    /// Negative eigenvalues of `BᵀB` floored at 0 (weight space).
    floored: usize,
    /// Whether the GP terms exist (Λ invertible).
    gp: bool,
    eigen: std::sync::OnceLock<Result<FlooredEigen>>,
}

/// The whitened Gram matrix `Λ^{1/2} K Λ^{1/2}` from an NTK `K` (blocks of K×K).
fn whiten(lin: &Linearization, mut k: Mat<f64>) -> Mat<f64> {
    let roots = lin.curvature().sqrt();
    let (kk, nk) = (roots.k(), lin.n() * lin.k());
    if roots.is_diagonal() {
        let s = roots.diagonal();
        for j in 0..nk {
            for i in 0..nk {
                k[(i, j)] *= s[i] * s[j];
            }
        }
        return k;
    }
    let r = Mat::from_fn(nk, nk, |i, j| {
        if i / kk == j / kk {
            roots.block(i / kk)[(i % kk) * kk + j % kk]
        } else {
            0.0
        }
    });
    a_bt(
        crate::linalg::a_b(r.as_ref(), k.as_ref()).as_ref(),
        r.as_ref(),
    )
}

/// The eigenvalues of the tridiagonal `T` (diagonal `d`, sub-diagonal `e`) floored at 0, and
/// the squared coordinates of `c` in its eigenvectors.
fn floored_eigen(d: &[f64], e: &[f64], c: &[f64]) -> Result<FlooredEigen> {
    let n = d.len();
    let t = Mat::from_fn(n, n, |i, j| match i.abs_diff(j) {
        0 => d[i],
        1 => e[i.min(j)],
        _ => 0.0,
    });
    let evd = t.self_adjoint_eigen(Side::Lower).map_err(|_| {
        Error::Numerical("eigendecomposition of the tridiagonal Gram form did not converge".into())
    })?;
    let uc = mat_t_vec(evd.U(), c);
    Ok(FlooredEigen {
        lambda: (0..n).map(|i| evd.S()[i].max(0.0)).collect(),
        c_sq: uc.iter().map(|v| v * v).collect(),
        floored: (0..n).filter(|&i| evd.S()[i] < 0.0).count(),
    })
}

impl DeltaPath {
    /// Eigendecomposes the smaller Gram matrix (`space` forces one: `Function` for NK×NK,
    /// `Weight` for P×P); refuses matrices above `memory_limit` bytes.
    pub fn new(lin: &Linearization, space: Space, memory_limit: u128) -> Result<Self> {
        Self::build(lin, space, None, memory_limit, true)
    }

    /// The Laplace evidence alone, in weight space: for a likelihood whose Λ has no inverse (the
    /// softmax), where the GP marginal likelihood does not exist
    /// ([`DeltaPath::log_marginal_likelihood`] then refuses).
    pub fn laplace(lin: &Linearization, memory_limit: u128) -> Result<Self> {
        Self::build(lin, Space::Weight, None, memory_limit, false)
    }

    /// The function-space path from a precomputed NTK `J Jᵀ` of the training inputs (e.g.
    /// [`crate::nn::Network::ntk`], from per-layer factors).
    pub fn with_ntk(lin: &Linearization, ntk: Mat<f64>, memory_limit: u128) -> Result<Self> {
        lin.check_ntk(&ntk)?;
        Self::build(lin, Space::Function, Some(ntk), memory_limit, true)
    }

    fn build(
        lin: &Linearization,
        space: Space,
        ntk: Option<Mat<f64>>,
        memory_limit: u128,
        gp: bool,
    ) -> Result<Self> {
        let (nk, p) = (lin.n() * lin.k(), lin.n_params());
        let space = space.resolve(p, nk);
        let side = if space == Space::Function { nk } else { p };
        check_memory(
            "the Gram matrix of the δ path",
            3 * mat_bytes(side, side),
            memory_limit,
            "use the smaller space (--space auto) or a subset of the data",
        )?;
        // The GP's terms need Λ⁻¹; the Laplace evidence alone does not.
        let (targets, data_term, norm_term) = if gp {
            let lam_inv = lin.lambda_inv()?;
            let norm_term =
                0.5 * lin.sum_log_det_lambda()? - 0.5 * nk as f64 * std::f64::consts::TAU.ln();
            let quad_r = dot(lin.residuals(), &lam_inv.apply(lin.residuals()));
            (lin.pseudo_targets()?, -0.5 * quad_r + norm_term, norm_term)
        } else {
            (Vec::new(), f64::NAN, f64::NAN)
        };
        let eig = |m: Mat<f64>| {
            m.self_adjoint_eigen(Side::Lower).map_err(|_| {
                Error::Numerical("eigendecomposition of the Gram matrix did not converge".into())
            })
        };
        let mut low_rank = None;
        let mut floored = 0;
        let form = if space == Space::Function {
            let gram = match ntk {
                Some(k) => whiten(lin, k),
                None => {
                    let b = lin.sqrt_lambda_jac();
                    a_bt(b.as_ref(), b.as_ref())
                }
            };
            let v = lin.curvature().sqrt().apply(&targets);
            match low_rank_form(gram.as_ref(), &v, nk / 8) {
                Some(lr) => {
                    low_rank = Some((lr.rank, lr.residual_trace));
                    Form::Function {
                        e: vec![0.0; lr.d.len() - 1],
                        d: lr.d,
                        c: lr.c,
                    }
                }
                None => {
                    let (d, e, c) = tridiagonalize(gram, &v);
                    Form::Function { d, e, c }
                }
            }
        } else {
            let b = lin.sqrt_lambda_jac();
            let evd = eig(at_b(b.as_ref(), b.as_ref()))?;
            let vg = mat_t_vec(evd.U(), &lin.loss_gradient());
            let vc = mat_t_vec(evd.U(), lin.center());
            floored = (0..p).filter(|&i| evd.S()[i] < 0.0).count();
            Form::Weight {
                d: (0..p).map(|i| evd.S()[i].max(0.0)).collect(),
                vg,
                vc,
            }
        };
        Ok(DeltaPath {
            p,
            log_lik: -lin.nll(),
            data_term,
            norm_term,
            gp,
            c_sq: dot(lin.center(), lin.center()),
            form,
            low_rank,
            floored,
            eigen: std::sync::OnceLock::new(),
        })
    }

    /// `(log|T/δ + I|, cᵀ(T/δ + I)⁻¹c)` of the function-space form: by the LDLᵀ of the
    /// tridiagonal, or, where rounding leaves it without positive pivots (T has eigenvalues
    /// of about −ε‖T‖, which matter once δ is that small), from the eigenvalues of T floored at
    /// 0, as the weight space floors those of `BᵀB`.
    fn shifted(&self, d: &[f64], e: &[f64], c: &[f64], delta: f64) -> Result<(f64, f64)> {
        if let Some(out) = tridiagonal_logdet_quad(d, e, 1.0 / delta, c) {
            return Ok(out);
        }
        let eig = self
            .eigen
            .get_or_init(|| floored_eigen(d, e, c))
            .as_ref()
            .map_err(|e| Error::Numerical(e.to_string()))?;
        Ok(eig
            .lambda
            .iter()
            .zip(&eig.c_sq)
            .fold((0.0, 0.0), |(ld, q), (l, c2)| {
                let m = l / delta + 1.0;
                (ld + m.ln(), q + c2 / m)
            }))
    }

    /// How many eigenvalues of the Gram matrix were below 0 (rounding) and floored at 0: those
    /// of `BᵀB` in weight space; in function space those of the tridiagonal form, once a δ
    /// needed the eigen fallback.
    pub fn floored_eigenvalues(&self) -> usize {
        self.floored
            + self
                .eigen
                .get()
                .and_then(|e| e.as_ref().ok())
                .map_or(0, |e| e.floored)
    }

    /// `log|BᵀB + δI|`, the log-determinant of the posterior precision at δ.
    pub fn log_det_precision(&self, delta: f64) -> Result<f64> {
        // BBᵀ and BᵀB share their eigenvalues but for |NK − P| zeros, each adding log δ.
        Ok(match &self.form {
            Form::Function { d, e, c } => {
                self.shifted(d, e, c, delta)?.0 + self.p as f64 * delta.ln()
            }
            Form::Weight { d, .. } => {
                d.iter().map(|v| (v + delta).ln()).sum::<f64>()
                    + (self.p as f64 - d.len() as f64) * delta.ln()
            }
        })
    }

    /// `(r, tr E)` when the whitened Gram matrix had numerical rank `r < NK/8` and was kept as
    /// `L Lᵀ + E` (pivoted Cholesky, [`crate::linalg::low_rank_form`]); `None` when it was
    /// tridiagonalised. The log-determinants at δ then differ from the exact ones by at most
    /// `tr E / δ`.
    pub fn low_rank(&self) -> Option<(usize, f64)> {
        self.low_rank
    }

    /// The Laplace evidence at δ, `log p(D | w*) − (δ/2)‖c‖² + (P/2) log δ − ½ log|A|`.
    pub fn laplace_log_evidence(&self, delta: f64) -> Result<f64> {
        Ok(self.log_lik + self.prior_terms(delta)?)
    }

    /// `−(δ/2)‖c‖² + (P/2) log δ − ½ log|BᵀB + δI|`.
    fn prior_terms(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        let log_det = self.log_det_precision(delta)?;
        Ok(laplace_evidence(0.0, delta, self.c_sq, self.p, log_det))
    }

    /// The GP log marginal likelihood `log p(ỹ)` at δ.
    pub fn log_marginal_likelihood(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        if !self.gp {
            return Err(Error::Invalid(
                "the GP marginal likelihood needs the noise Λ⁻¹, which this likelihood's curvature \
                 does not have; the Laplace evidence is available"
                    .into(),
            ));
        }
        Ok(match &self.form {
            Form::Function { d, e, c } => {
                let (logdet, quad) = self.shifted(d, e, c, delta)?;
                -0.5 * quad - 0.5 * logdet + self.norm_term
            }
            Form::Weight { d, vg, vc } => {
                let gap: f64 = d
                    .iter()
                    .zip(vg.iter().zip(vc))
                    .map(|(d, (g, c))| (g + delta * c).powi(2) / (d + delta))
                    .sum();
                self.data_term + self.prior_terms(delta)? + 0.5 * gap
            }
        })
    }
}
