//! The marginal likelihood over many prior precisions δ at one linearisation, from a single
//! eigendecomposition (no retraining: the MAP, J, r and Λ stay fixed).
//!
//! With `B = Λ^{1/2} J` (NK×P) and the eigenvalues `s` of the smaller of `BBᵀ`, `BᵀB`:
//! - Laplace evidence: `−½ Σ rᵀΛ⁻¹r + ½ log|Λ̃| − (NK/2) log 2π − (δ/2)‖c‖² + (P/2) log δ
//!   − ½ log|BᵀB + δI|`, with `log|BᵀB + δI| = Σ log(s_i + δ) + (P − #s) log δ` (the two
//!   Gram matrices share their eigenvalues up to |NK − P| zeros);
//! - GP marginal likelihood (function space, `BBᵀ = U S Uᵀ`, `z = Uᵀ Λ^{1/2} ỹ`):
//!   `−½ Σ z_i²/(s_i/δ + 1) − ½ Σ log(s_i/δ + 1) + ½ log|Λ̃| − (NK/2) log 2π`;
//!   (weight space, `BᵀB = V D Vᵀ`): the Laplace evidence plus `½ Σ (Vᵀg)_i²/(d_i + δ)` with
//!   `g = Jᵀr + δc`.
//!
//! Each δ then costs O(min(NK, P)).

use faer::{Mat, Side};

use super::Space;
use crate::error::{Error, Result};
use crate::linalg::{a_bt, at_b, check_memory, dot, mat_bytes, mat_t_vec, sym_sqrt};
use crate::posterior::laplace::check_delta;
use crate::posterior::linearization::is_scaled_identity;
use crate::posterior::Linearization;

enum Form {
    /// Eigenvalues `s` of `BBᵀ` and `z = Uᵀ Λ^{1/2} ỹ`.
    Function { s: Vec<f64>, z: Vec<f64> },
    /// Eigenvalues `d` of `BᵀB`, `Vᵀ Jᵀ r` and `Vᵀ c`.
    Weight {
        d: Vec<f64>,
        vg: Vec<f64>,
        vc: Vec<f64>,
    },
}

/// Marginal likelihoods as functions of δ at a fixed linearisation.
pub struct DeltaPath {
    p: usize,
    /// `−½ Σ rᵀΛ⁻¹r + ½ log|Λ̃| − (NK/2) log 2π`.
    data_term: f64,
    /// `½ log|Λ̃| − (NK/2) log 2π`.
    norm_term: f64,
    c_sq: f64,
    form: Form,
}

/// `Λ_i^{1/2} v_i` for every example (symmetric roots).
fn sqrt_lambda_times(lin: &Linearization, v: &[f64]) -> Vec<f64> {
    let k = lin.k;
    let mut out = vec![0.0; v.len()];
    for i in 0..lin.n {
        let b = &lin.lambda[i * k * k..(i + 1) * k * k];
        if is_scaled_identity(k, b) {
            (0..k).for_each(|a| out[i * k + a] = b[0].sqrt() * v[i * k + a]);
        } else {
            let root = sym_sqrt(lin.lambda_block(i).as_ref());
            for a in 0..k {
                out[i * k + a] = (0..k).map(|c| root[(a, c)] * v[i * k + c]).sum();
            }
        }
    }
    out
}

impl DeltaPath {
    /// Eigendecomposes the smaller Gram matrix (`space` forces one: `Function` for NK×NK,
    /// `Weight` for P×P); refuses matrices above `memory_limit` bytes.
    pub fn new(lin: &Linearization, space: Space, memory_limit: u128) -> Result<Self> {
        let (nk, p) = (lin.n * lin.k, lin.n_params());
        let space = space.resolve(p, nk);
        let side = if space == Space::Function { nk } else { p };
        check_memory(
            "the Gram matrix of the δ path",
            3 * mat_bytes(side, side),
            memory_limit,
            "use the smaller space (--space auto) or a subset of the data",
        )?;
        let targets = lin.pseudo_targets()?;
        let lam_inv = lin.lambda_inv()?;
        let log_det_lambda = lin.sum_log_det_lambda()?;
        let norm_term = 0.5 * log_det_lambda - 0.5 * nk as f64 * std::f64::consts::TAU.ln();
        let quad_r = dot(&lin.resid, &lin.apply_blocks(&lam_inv, &lin.resid));
        let b = lin.sqrt_lambda_jac();
        let eig = |m: Mat<f64>| {
            m.self_adjoint_eigen(Side::Lower).map_err(|_| {
                Error::Numerical("eigendecomposition of the Gram matrix did not converge".into())
            })
        };
        let form = if space == Space::Function {
            let evd = eig(a_bt(b.as_ref(), b.as_ref()))?;
            let z = mat_t_vec(evd.U(), &sqrt_lambda_times(lin, &targets));
            Form::Function {
                s: (0..nk).map(|i| evd.S()[i].max(0.0)).collect(),
                z,
            }
        } else {
            let evd = eig(at_b(b.as_ref(), b.as_ref()))?;
            let vg = mat_t_vec(evd.U(), &lin.loss_gradient());
            let vc = mat_t_vec(evd.U(), &lin.center);
            Form::Weight {
                d: (0..p).map(|i| evd.S()[i].max(0.0)).collect(),
                vg,
                vc,
            }
        };
        Ok(DeltaPath {
            p,
            data_term: -0.5 * quad_r + norm_term,
            norm_term,
            c_sq: dot(&lin.center, &lin.center),
            form,
        })
    }

    /// `log|BᵀB + δI|`.
    fn log_det_precision(&self, delta: f64) -> f64 {
        let s = match &self.form {
            Form::Function { s, .. } => s,
            Form::Weight { d, .. } => d,
        };
        // BBᵀ and BᵀB share their eigenvalues but for |NK − P| zeros, each adding log δ.
        s.iter().map(|v| (v + delta).ln()).sum::<f64>()
            + (self.p as f64 - s.len() as f64) * delta.ln()
    }

    /// The paper's Laplace evidence at δ.
    pub fn laplace_log_evidence(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        Ok(
            self.data_term - 0.5 * delta * self.c_sq + 0.5 * self.p as f64 * delta.ln()
                - 0.5 * self.log_det_precision(delta),
        )
    }

    /// The GP log marginal likelihood `log p(ỹ)` at δ.
    pub fn log_marginal_likelihood(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        Ok(match &self.form {
            Form::Function { s, z } => {
                let (mut quad, mut logdet) = (0.0, 0.0);
                for (s, z) in s.iter().zip(z) {
                    let e = s / delta + 1.0;
                    quad += z * z / e;
                    logdet += e.ln();
                }
                -0.5 * quad - 0.5 * logdet + self.norm_term
            }
            Form::Weight { d, vg, vc } => {
                let gap: f64 = d
                    .iter()
                    .zip(vg.iter().zip(vc))
                    .map(|(d, (g, c))| (g + delta * c).powi(2) / (d + delta))
                    .sum();
                self.laplace_log_evidence(delta)? + 0.5 * gap
            }
        })
    }
}
