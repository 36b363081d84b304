//! The DNN2GP GP in function space as a member of the posterior interface: the Laplace-GGN
//! posterior `N(w*, Σ)`, `Σ⁻¹ = JᵀΛJ + δI`, held through the NK×NK Gram matrix
//! `G = δ⁻¹JJᵀ + Λ⁻¹` instead of a P×P matrix (Woodbury):
//!
//! `Σ = δ⁻¹I − δ⁻² Jᵀ G⁻¹ J`, so `J_a Σ J_bᵀ = δ⁻¹ J_a J_bᵀ − δ⁻² (J_a Jᵀ) G⁻¹ (J J_bᵀ)`.
//!
//! Samples are exact by pathwise conditioning: `w = w* + w₀ − δ⁻¹ Jᵀ G⁻¹ (J w₀ + ε)` with
//! `w₀ ~ N(0, δ⁻¹I)` and `ε ~ N(0, Λ⁻¹)`. The evidence at other δ and σ comes from one
//! spectral form of the kernel ([`DeltaPath`]).

use faer::{Mat, MatRef};

use super::delta_path::DeltaPath;
use crate::curvature::Linearization;
use crate::error::Result;
use crate::likelihood::BlockDiag;
use crate::linalg::{a_bt, at_b, check_memory, dot, mat_bytes, mat_t_vec, mat_vec, Cholesky};
use crate::nn::Network;
use crate::posterior::evidence::at_sigma;
use crate::posterior::evidence::laplace_evidence;
use crate::posterior::{HessianStructure, Posterior};
use crate::rng::{normals, seeded};
use crate::train::model::Model;

/// The function-space member of [`Posterior`] (its structure is the full GGN).
pub struct FunctionSpace {
    model: Model,
    lin: Linearization,
    /// `G = δ⁻¹JJᵀ + Λ⁻¹ = LLᵀ`.
    gram: Cholesky,
    /// `Λ⁻¹`, for the samples' noise.
    noise: BlockDiag,
    /// The δ path of the evidence (built from the NTK once).
    path: DeltaPath,
    /// `Σ_i ‖f(x_i) − y_i‖²`, for the evidence at another σ (Gaussian).
    sse: f64,
}

impl FunctionSpace {
    /// Fits the posterior of `model` on `(X, Y)`: the Jacobian (NK×P) and the NK×NK Gram
    /// matrix, both checked against `memory_limit` first; Λ must be invertible (Gaussian and
    /// Bernoulli likelihoods).
    pub fn fit(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        memory_limit: u128,
    ) -> Result<Self> {
        let (n, k) = (x.nrows(), model.net.n_outputs());
        check_memory(
            "the function-space Gram matrix (NK×NK), three times",
            3 * mat_bytes(n * k, n * k),
            memory_limit,
            "use the weight-space Laplace posterior when P < N·K",
        )?;
        let lik = model.likelihood()?;
        let lin = Linearization::checked(&model.net, lik.as_ref(), x, y, &model.w, memory_limit)?;
        let noise = lin.lambda_inv()?;
        let ntk = model.net.ntk(&model.w, x, x);
        let mut g = ntk.clone();
        g.as_mut()
            .col_iter_mut()
            .for_each(|c| c.iter_mut().for_each(|v| *v /= model.delta));
        super::add_blocks(&mut g, &noise, 1.0);
        let gram = Cholesky::new(g.as_ref(), "GP Gram matrix δ⁻¹JJ' + Λ⁻¹")?;
        let path = DeltaPath::with_ntk(&lin, ntk, memory_limit)?;
        let f = lin.outputs();
        let sse = crate::linalg::sq_diff(f, y);
        Ok(FunctionSpace {
            model,
            lin,
            gram,
            noise,
            path,
            sse,
        })
    }

    /// `J_a Σ J_bᵀ = δ⁻¹ J_a J_bᵀ − δ⁻² (J_a Jᵀ) G⁻¹ (J J_bᵀ)` from `aa = J_a J_bᵀ`,
    /// `xa = J_a Jᵀ` and `xb = J J_bᵀ`.
    fn woodbury(&self, aa: Mat<f64>, xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f64> {
        let d = self.model.delta;
        let (va, vb) = (self.gram.solve_l(xa.transpose()), self.gram.solve_l(xb));
        let c = at_b(va.as_ref(), vb.as_ref());
        Mat::from_fn(aa.nrows(), aa.ncols(), |i, j| {
            aa[(i, j)] / d - c[(i, j)] / (d * d)
        })
    }
}

impl Posterior for FunctionSpace {
    fn model(&self) -> &Model {
        &self.model
    }

    fn structure(&self) -> HessianStructure {
        HessianStructure::Full
    }

    /// For the Gaussian, `log|JᵀJ/σ'² + δ'I| = P log c + log|JᵀJ/σ² + (δ'/c) I|` with
    /// `c = σ²/σ'²`, from the δ path.
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64> {
        let m = &self.model;
        let delta = delta.unwrap_or(m.delta);
        crate::train::check_delta(delta)?;
        let nk = self.lin.n() * self.lin.k();
        let p = m.w.len();
        let (nll, c) = at_sigma(m, self.lin.nll(), self.sse, nk, sigma, 1.0)?;
        let log_det = p as f64 * c.ln() + self.path.log_det_precision(delta / c)?;
        Ok(laplace_evidence(-nll, delta, dot(&m.w, &m.w), p, log_det))
    }

    fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        let d = self.model.delta;
        let jv = mat_vec(self.lin.jacobian(), v);
        let back = mat_t_vec(self.lin.jacobian(), &self.gram.solve_vec(&jv));
        v.iter()
            .zip(back)
            .map(|(v, b)| v / d - b / (d * d))
            .collect()
    }

    fn covariance_blocks(&self, jac: MatRef<'_, f64>) -> Vec<f64> {
        let k = self.model.net.n_outputs();
        let d = self.model.delta;
        let cross = a_bt(self.lin.jacobian(), jac);
        let v = self.gram.solve_l(cross.as_ref());
        (0..jac.nrows() / k)
            .flat_map(|i| {
                let v = &v;
                (0..k * k).map(move |m| {
                    let (a, b) = (i * k + m / k, i * k + m % k);
                    let jj: f64 = jac
                        .row(a)
                        .iter()
                        .zip(jac.row(b).iter())
                        .map(|(x, y)| x * y)
                        .sum();
                    let vv: f64 = v
                        .col(a)
                        .iter()
                        .zip(v.col(b).iter())
                        .map(|(x, y)| x * y)
                        .sum();
                    jj / d - vv / (d * d)
                })
            })
            .collect()
    }

    fn covariance_between(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        let j = self.lin.jacobian();
        self.woodbury(a_bt(ja, jb), a_bt(ja, j).as_ref(), a_bt(j, jb).as_ref())
    }

    fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = seeded(seed);
        let (d, p, nk) = (
            self.model.delta,
            self.model.w.len(),
            self.lin.n() * self.lin.k(),
        );
        let root = self.noise.sqrt();
        (0..n)
            .map(|_| {
                let w0: Vec<f64> = normals(&mut rng, p).iter().map(|z| z / d.sqrt()).collect();
                let eps = root.apply(&normals(&mut rng, nk));
                let r: Vec<f64> = mat_vec(self.lin.jacobian(), &w0)
                    .iter()
                    .zip(&eps)
                    .map(|(a, b)| a + b)
                    .collect();
                let back = mat_t_vec(self.lin.jacobian(), &self.gram.solve_vec(&r));
                self.model
                    .w
                    .iter()
                    .zip(w0.iter().zip(back))
                    .map(|(m, (w0, b))| m + w0 - b / d)
                    .collect()
            })
            .collect()
    }
}
