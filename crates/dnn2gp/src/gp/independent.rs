//! The DNN2GP GP of a classifier in function space on m training points with independent
//! outputs (laplace-torch's `FunctionalLaplace(independent_outputs=True)`): for each output c,
//! the prior kernel `K_c = δ⁻¹ J_c J_cᵀ` (m×m, from per-layer factors) and the noise precision
//! `Λ_c = diag(∂²ℓ/∂f_c²)` (the diagonal of the softmax curvature), factorised as
//! `B_c = I + Λ_c^{½} K_c Λ_c^{½} = L_c L_cᵀ`, giving
//!
//! `var f_c(x*) = k_c** − ‖L_c⁻¹ Λ_c^{½} k_c*‖²`
//!
//! (output c's variance under the weight-space posterior of output c alone,
//! `(J_cᵀ Λ_c J_c + δI)⁻¹`) and laplace-torch's evidence for it,
//! `log p(D_m | w*) − (δ/2)‖w*‖² − ½ Σ_c log|B_c|`; for one logit both are those of the full
//! Laplace-GGN posterior (determinant lemma). The prior precision maximising the evidence comes
//! from the eigenvalues of `Λ_c^{½} J_c J_cᵀ Λ_c^{½}`.

use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};
use crate::linalg::{check_memory, dot, mat_bytes, Cholesky};
use crate::nn::{Layer, Network, Sequential};
use crate::posterior::fitted::{class_probabilities, evidence_gradient, root_in_log};
use crate::posterior::laplace::laplace_evidence;
use crate::posterior::Link;
use crate::train::model::Model;

/// One output's GP.
#[derive(Debug, Clone)]
struct Output {
    /// `Λ_c^{½}` at the m points.
    root: Vec<f64>,
    /// `B_c = I + δ⁻¹ Λ^{½} J J ᵀ Λ^{½} = LLᵀ` (the kernel itself is `δ(LLᵀ − I)`).
    chol: Cholesky,
}

/// The independent-output function-space GP of a classifier on m points.
#[derive(Debug, Clone)]
pub struct IndependentGp {
    model: Model,
    x: Mat<f64>,
    outputs: Vec<Output>,
    /// `−log p(D_m | w*)`.
    nll: f64,
}

impl IndependentGp {
    /// The GP of `model` on the m points `(X, Y)` (targets in the likelihood's form) at the
    /// model's δ; the m×m kernels are refused above `memory_limit` bytes before any work.
    pub fn fit(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        memory_limit: u128,
    ) -> Result<Self> {
        let (m, k) = (x.nrows(), model.net.n_outputs());
        check_memory(
            "the Jacobian factors of the m points, the factor of each output's m×m kernel and \
             two more m×m matrices",
            factor_bytes(&model.net, m) + (k as u128 + 2) * mat_bytes(m, m),
            memory_limit,
            "use fewer training points",
        )?;
        let lik = model.likelihood()?;
        let f = crate::nn::predict(&model.net, &model.w, x);
        let nll = lik.nll_sum(f.as_ref(), y);
        let factors = model.net.jacobian_factors(&model.w, x);
        let mut lam = vec![0.0; k * k];
        let roots: Vec<Vec<f64>> = {
            let mut r = vec![vec![0.0; m]; k];
            let (mut fr, mut yr) = (vec![0.0; k], vec![0.0; y.ncols()]);
            for e in 0..m {
                (0..k).for_each(|a| fr[a] = f[(e, a)]);
                (0..y.ncols()).for_each(|a| yr[a] = y[(e, a)]);
                lik.curvature(&fr, &yr, &mut lam);
                (0..k).for_each(|c| r[c][e] = lam[c * k + c].max(0.0).sqrt());
            }
            r
        };
        let mut outputs = Vec::with_capacity(k);
        for (c, root) in roots.into_iter().enumerate() {
            let mut s = if k == 1 {
                factors.gram()
            } else {
                factors.output(c).gram()
            };
            for j in 0..m {
                for i in 0..m {
                    s[(i, j)] *= root[i] * root[j];
                }
            }
            let chol = Self::factor_scaled(s, model.delta)?;
            outputs.push(Output { root, chol });
        }
        Ok(IndependentGp {
            model,
            x: x.to_owned(),
            outputs,
            nll,
        })
    }

    /// `B = I + S/δ = LLᵀ` for `S = Λ^{½} J Jᵀ Λ^{½}`.
    fn factor_scaled(mut s: Mat<f64>, delta: f64) -> Result<Cholesky> {
        for j in 0..s.ncols() {
            for i in 0..s.nrows() {
                s[(i, j)] = s[(i, j)] / delta + f64::from(u8::from(i == j));
            }
        }
        Cholesky::new(s.as_ref(), "the GP's I + Λ^½KΛ^½")
    }

    /// `S = Λ^{½} J Jᵀ Λ^{½} = δ(LLᵀ − I)` from an output's factor.
    fn scaled_kernel(o: &Output, delta: f64) -> Mat<f64> {
        let l = o.chol.l.as_ref();
        let mut s = crate::linalg::a_bt(l, l);
        for j in 0..s.ncols() {
            for i in 0..s.nrows() {
                s[(i, j)] = delta * (s[(i, j)] - f64::from(u8::from(i == j)));
            }
        }
        s
    }

    /// The model (its δ is the GP's).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The evidence `log p(D_m | w*) − (δ/2)‖w*‖² − ½ Σ_c log|B_c|` (laplace-torch's
    /// `log_likelihood − ½(log_det_ratio + scatter)`).
    pub fn log_marginal_likelihood(&self) -> f64 {
        let w = &self.model.w;
        let log_det_b: f64 = self.outputs.iter().map(|o| o.chol.log_det()).sum();
        // In `laplace_evidence`'s terms, `log|A| = P log δ + Σ_c log|B_c|`.
        let p = w.len();
        laplace_evidence(
            -self.nll,
            self.model.delta,
            dot(w, w),
            p,
            p as f64 * self.model.delta.ln() + log_det_b,
        )
    }

    /// The prior precision maximising the evidence, from the eigenvalues of each
    /// `Λ_c^{½} J_c J_cᵀ Λ_c^{½}` (the nonzero eigenvalues of the GGN), exactly (see
    /// [`crate::posterior::Laplace::optimize_prior_precision`]); the GP is refitted there.
    /// Returns δ*.
    pub fn optimize_prior_precision(&mut self) -> Result<f64> {
        let mut lambda = Vec::new();
        let mut kernels = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            let s = Self::scaled_kernel(o, self.model.delta);
            let ev = s
                .as_ref()
                .self_adjoint_eigenvalues(Side::Lower)
                .map_err(|_| {
                    Error::Numerical("the kernel's eigendecomposition did not converge".into())
                })?;
            lambda.extend(ev);
            kernels.push(s);
        }
        let w2 = dot(&self.model.w, &self.model.w);
        let t = root_in_log(&|t| evidence_gradient(&lambda, w2, t.exp())).ok_or_else(|| {
            Error::Numerical("the evidence has no maximum in δ ∈ [e^-40, e^40]".into())
        })?;
        self.model.delta = t.exp();
        for (o, s) in self.outputs.iter_mut().zip(kernels) {
            o.chol = Self::factor_scaled(s, self.model.delta)?;
        }
        Ok(self.model.delta)
    }

    /// The functional variances `var f_c(x*)` (M × K) at the rows of `xs`.
    pub fn functional_variance(&self, xs: MatRef<'_, f64>) -> Mat<f64> {
        let (net, w) = (&self.model.net, &self.model.w);
        let k = net.n_outputs();
        let fs = net.jacobian_factors(w, xs);
        let ft = net.jacobian_factors(w, self.x.as_ref());
        let mut out = Mat::zeros(xs.nrows(), k);
        let delta = self.model.delta;
        for (c, o) in self.outputs.iter().enumerate() {
            let (a, b) = if k == 1 {
                (fs.clone(), ft.clone())
            } else {
                (fs.output(c), ft.output(c))
            };
            let kss = a.diag();
            // Λ^{½} k* (m × M), then L⁻¹ of it.
            let cross = a.cross(b);
            let scaled = Mat::from_fn(o.root.len(), xs.nrows(), |i, j| {
                o.root[i] * cross[(j, i)] / delta
            });
            let v = o.chol.solve_l(scaled.as_ref());
            for j in 0..xs.nrows() {
                let q: f64 = v.col(j).iter().map(|x| x * x).sum();
                out[(j, c)] = (kss[j] / delta - q).max(0.0);
            }
        }
        out
    }

    /// Class probabilities at `xs` by `link` from the mean `f_{w*}(x*)` and the independent
    /// variances (diagonal K×K covariances).
    pub fn predict(&self, xs: MatRef<'_, f64>, link: Link) -> Result<Mat<f64>> {
        let f = crate::nn::predict(&self.model.net, &self.model.w, xs);
        let v = self.functional_variance(xs);
        let k = f.ncols();
        let blocks: Vec<f64> = (0..xs.nrows())
            .flat_map(|i| {
                let v = &v;
                (0..k * k).map(move |m| if m / k == m % k { v[(i, m / k)] } else { 0.0 })
            })
            .collect();
        class_probabilities(&f, &blocks, link)
    }
}

/// Bytes of the per-layer Jacobian factors of `n` inputs (K rows each: a conv layer's Jacobian
/// block, a dense layer's `G` and `Ã`), twice (the chunks' factors are stacked into one set),
/// and of one output's selection.
fn factor_bytes(net: &Sequential, n: usize) -> u128 {
    let k = net.n_outputs();
    let values: usize = net
        .layers()
        .iter()
        .map(|l| match *l {
            Layer::Conv2d { .. } => n * k * l.n_params(),
            Layer::Dense { inputs, outputs } => n * k * outputs + n * (inputs + 1),
            _ => 0,
        })
        .sum();
    8 * values as u128 * (2 * k as u128 + 1) / k as u128
}
