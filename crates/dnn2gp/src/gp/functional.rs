//! The DNN2GP GP of a classifier in function space on m training points (laplace-torch's
//! `FunctionalLaplace`): the prior kernel `K = δ⁻¹ J Jᵀ` (from per-layer factors) and the noise
//! precision Λ of the likelihood, factorised as `B = I + Λ^{½} K Λ^{½} = LLᵀ`, giving
//!
//! `J* Σ J*ᵀ = K** − K*ᵀ Λ^{½} B⁻¹ Λ^{½} K*`
//!
//! and the evidence `log p(D_m | w*) − (δ/2)‖w*‖² − ½ log|B|` (determinant lemma:
//! `log|JᵀΛJ + δI| = P log δ + log|B|`), whose δ maximum comes from the eigenvalues of
//! `Λ^{½} J Jᵀ Λ^{½}`. With [`Outputs::Coupled`] the kernel is mK×mK and Λ^{½} holds each
//! point's K×K root of the softmax curvature: this is the Laplace-GGN posterior on the m
//! points. With [`Outputs::Independent`] (`independent_outputs=True`) each output c has its
//! own m×m kernel `δ⁻¹ J_c J_cᵀ` and `Λ_c = diag(Λ_i,cc)`: output c's variance under the
//! weight-space posterior of output c alone, `(J_cᵀ Λ_c J_c + δI)⁻¹`, and
//! `−½ Σ_c log|B_c|` in the evidence; for one logit both are the full posterior's.
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{Error, Result};
use crate::linalg::{check_memory, dot, mat_bytes, sym_sqrt, Cholesky};
use crate::nn::{Graph, JacobianFactors, Layer, Network};
use crate::posterior::evidence::laplace_evidence;
use crate::posterior::evidence::{evidence_gradient, root_in_log};
use crate::posterior::link::class_probabilities;
use crate::posterior::Link;
use crate::train::model::Model;

/// How the K outputs' GPs relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outputs {
    /// K GPs of m points, Λ's diagonal (laplace-torch's `independent_outputs=True`).
    Independent,
    /// One GP of mK values, Λ's K×K blocks: the full K×K coupling.
    Coupled,
}

/// One GP of the classifier: an output's (independent) or all of them (coupled).
#[derive(Debug, Clone)]
struct Group {
    /// `Λ^{½}` at the m points: m blocks of b×b, row-major (b = 1, or K coupled).
    root: Vec<f64>,
    b: usize,
    /// `B = I + δ⁻¹ Λ^{½} J Jᵀ Λ^{½} = LLᵀ` (the kernel itself is `δ(LLᵀ − I)`).
    chol: Cholesky,
}

/// `R M` in place for a block-diagonal `R` (m blocks of b×b, row-major) and M with mb rows: in
/// parallel over blocks of columns, each b-row slab one small product (b = 1: a scaling).
fn root_times(root: &[f64], b: usize, m: &mut Mat<f64>) {
    use rayon::prelude::*;
    m.as_mut().par_col_chunks_mut(256).for_each(|mut cols| {
        if b == 1 {
            for j in 0..cols.ncols() {
                cols.as_mut()
                    .col_mut(j)
                    .iter_mut()
                    .zip(root)
                    .for_each(|(v, r)| *v *= r);
            }
            return;
        }
        let mut tmp = Mat::<f64>::zeros(b, cols.ncols());
        for (e, r) in root.chunks(b * b).enumerate() {
            matmul(
                tmp.as_mut(),
                Accum::Replace,
                MatRef::from_row_major_slice(r, b, b),
                cols.as_ref().subrows(e * b, b),
                1.0,
                Par::Seq,
            );
            cols.as_mut().subrows_mut(e * b, b).copy_from(&tmp);
        }
    });
}

/// The function-space GP of a classifier on m points.
#[derive(Debug, Clone)]
pub struct FunctionalGp {
    model: Model,
    x: Mat<f64>,
    outputs: Outputs,
    groups: Vec<Group>,
    /// `−log p(D_m | w*)`.
    nll: f64,
}

impl FunctionalGp {
    /// The GP of `model` on the m points `(X, Y)` (targets in the likelihood's form) at the
    /// model's δ; the kernels are refused above `memory_limit` bytes before any work.
    pub fn fit(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        outputs: Outputs,
        memory_limit: u128,
    ) -> Result<Self> {
        Self::check_memory(&model.net, x.nrows(), outputs, memory_limit)?;
        let (m, k) = (x.nrows(), model.net.n_outputs());
        let lik = model.likelihood()?;
        let f = model.predict(x);
        let nll = lik.nll_sum(f.as_ref(), y);
        let factors = model.net.jacobian_factors(&model.w, x);
        // Λ_i (K×K) at each point.
        let mut lam = vec![0.0; m * k * k];
        let (mut fr, mut yr) = (vec![0.0; k], vec![0.0; y.ncols()]);
        for (e, l) in lam.chunks_mut(k * k).enumerate() {
            (0..k).for_each(|a| fr[a] = f[(e, a)]);
            (0..y.ncols()).for_each(|a| yr[a] = y[(e, a)]);
            lik.curvature(&fr, &yr, l);
        }
        let mut groups = Vec::new();
        let parts: Vec<(Vec<f64>, usize, Mat<f64>)> = match outputs {
            Outputs::Coupled => {
                let root: Vec<f64> = lam
                    .chunks(k * k)
                    .flat_map(|l| {
                        let r = sym_sqrt(MatRef::from_row_major_slice(l, k, k));
                        (0..k * k).map(move |i| r[(i / k, i % k)])
                    })
                    .collect();
                vec![(root, k, factors.gram())]
            }
            Outputs::Independent => (0..k)
                .map(|c| {
                    let root = lam
                        .chunks(k * k)
                        .map(|l| l[c * k + c].max(0.0).sqrt())
                        .collect();
                    let gram = if k == 1 {
                        factors.gram()
                    } else {
                        factors.output(c).gram()
                    };
                    (root, 1, gram)
                })
                .collect(),
        };
        for (root, b, mut gram) in parts {
            // `S = R (J Jᵀ) R`, then `B = I + S/δ`.
            root_times(&root, b, &mut gram);
            let mut s = gram.transpose().to_owned();
            drop(gram);
            root_times(&root, b, &mut s);
            let chol = factor_scaled(s, model.delta)?;
            groups.push(Group { root, b, chol });
        }
        Ok(FunctionalGp {
            model,
            x: x.to_owned(),
            outputs,
            groups,
            nll,
        })
    }

    /// Refuses a GP of `net` on m points whose kernels exceed `limit` bytes ([`Self::bytes`]),
    /// before any work.
    pub fn check_memory(net: &Graph, m: usize, outputs: Outputs, limit: u128) -> Result<()> {
        let (what, advice) = match outputs {
            Outputs::Independent => ("independent outputs' m×m", "use fewer training points"),
            Outputs::Coupled => (
                "coupled mK×mK",
                "use fewer training points or independent outputs",
            ),
        };
        check_memory(
            &format!(
                "the Jacobian factors of the {m} points and the {what} kernel's factor and two \
                 more copies"
            ),
            Self::bytes(net, m, outputs),
            limit,
            advice,
        )
    }

    /// Bytes the fit holds at once: the factors and, per kernel, itself, its scaled copy and
    /// its factor (one output's at a time when independent).
    pub fn bytes(net: &Graph, m: usize, outputs: Outputs) -> u128 {
        let side = match outputs {
            Outputs::Independent => m,
            Outputs::Coupled => m * net.n_outputs(),
        };
        let kept = match outputs {
            Outputs::Independent => net.n_outputs() as u128,
            Outputs::Coupled => 1,
        };
        factor_bytes(net, m) + (kept + 2) * mat_bytes(side, side)
    }

    /// The model (its δ is the GP's).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Independent or coupled outputs.
    pub fn outputs(&self) -> Outputs {
        self.outputs
    }

    /// The evidence `log p(D_m | w*) − (δ/2)‖w*‖² − ½ Σ_g log|B_g|` (laplace-torch's
    /// `log_likelihood − ½(log_det_ratio + scatter)`).
    pub fn log_marginal_likelihood(&self) -> f64 {
        let w = &self.model.w;
        let log_det_b: f64 = self.groups.iter().map(|g| g.chol.log_det()).sum();
        // In `laplace_evidence`'s terms, `log|A| = P log δ + Σ_g log|B_g|`.
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
    /// `Λ^{½} J Jᵀ Λ^{½}` (the nonzero eigenvalues of the GGN), exactly (see
    /// [`crate::posterior::Laplace::optimize_prior_precision`]); the GP is refitted there.
    /// Returns δ*.
    pub fn optimize_prior_precision(&mut self) -> Result<f64> {
        let mut lambda = Vec::new();
        let mut kernels = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let s = scaled_kernel(&g.chol, self.model.delta);
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
        for (g, s) in self.groups.iter_mut().zip(kernels) {
            g.chol = factor_scaled(s, self.model.delta)?;
        }
        Ok(self.model.delta)
    }

    /// The K×K functional covariances `J*_i Σ J*_iᵀ` at the rows of `xs` (row-major, M·K·K;
    /// diagonal for independent outputs); coupled, 256 inputs at a time (the solve's right-hand
    /// sides are mK × 256K).
    pub fn functional_covariance(&self, xs: MatRef<'_, f64>) -> Vec<f64> {
        let (net, w) = (&self.model.net, &self.model.w);
        let k = net.n_outputs();
        let chunk = match self.outputs {
            Outputs::Independent => xs.nrows().max(1),
            Outputs::Coupled => 256,
        };
        let ft = net.jacobian_factors(w, self.x.as_ref());
        let mut out = vec![0.0; xs.nrows() * k * k];
        for s in (0..xs.nrows()).step_by(chunk) {
            let n = chunk.min(xs.nrows() - s);
            let fs = net.jacobian_factors(w, xs.subrows(s, n));
            let blocks = &mut out[s * k * k..(s + n) * k * k];
            for (c, g) in self.groups.iter().enumerate() {
                let (a, b) = match self.outputs {
                    Outputs::Independent if k > 1 => (fs.output(c), ft.output(c)),
                    _ => (fs.clone(), ft.clone()),
                };
                let slot = |i: usize, r: usize, q: usize| match self.outputs {
                    Outputs::Coupled => i * k * k + r * k + q,
                    Outputs::Independent => i * k * k + c * k + c,
                };
                self.covariance_into(g, a, b, &mut |i, r, q, v| blocks[slot(i, r, q)] = v);
            }
        }
        out
    }

    /// `J*_i Σ J*_iᵀ` of one group at the inputs of `fs` (per input, b×b), told to `put(i,
    /// r, q, value)`: `K** − ‖L⁻¹ Λ^{½} K*‖²` column pairs.
    fn covariance_into(
        &self,
        g: &Group,
        fs: JacobianFactors,
        ft: JacobianFactors,
        put: &mut dyn FnMut(usize, usize, usize, f64),
    ) {
        let (b, delta) = (g.b, self.model.delta);
        let kss = fs.gram();
        // `Λ^{½} K*` (mb × Mb), then `L⁻¹` of it.
        let mut scaled = fs.cross(ft).transpose().to_owned();
        root_times(&g.root, b, &mut scaled);
        for j in 0..scaled.ncols() {
            scaled.col_mut(j).iter_mut().for_each(|v| *v /= delta);
        }
        let v = g.chol.solve_l(scaled.as_ref());
        for i in 0..kss.nrows() / b {
            for r in 0..b {
                for q in 0..b {
                    let (cr, cq) = (i * b + r, i * b + q);
                    let vv: f64 = v
                        .col(cr)
                        .iter()
                        .zip(v.col(cq).iter())
                        .map(|(x, y)| x * y)
                        .sum();
                    let c = kss[(cr, cq)] / delta - vv;
                    put(i, r, q, if r == q { c.max(0.0) } else { c });
                }
            }
        }
    }

    /// The functional variances `var f_c(x*)` (M × K) at the rows of `xs`.
    pub fn functional_variance(&self, xs: MatRef<'_, f64>) -> Mat<f64> {
        let k = self.model.net.n_outputs();
        let c = self.functional_covariance(xs);
        Mat::from_fn(xs.nrows(), k, |i, a| c[i * k * k + a * k + a])
    }

    /// Class probabilities at `xs` by `link` from the mean `f_{w*}(x*)` and the K×K
    /// covariances.
    pub fn predict(&self, xs: MatRef<'_, f64>, link: Link) -> Result<Mat<f64>> {
        let f = self.model.predict(xs);
        class_probabilities(&f, &self.functional_covariance(xs), link)
    }
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

/// `S = Λ^{½} J Jᵀ Λ^{½} = δ(LLᵀ − I)` from a group's factor.
fn scaled_kernel(chol: &Cholesky, delta: f64) -> Mat<f64> {
    let l = chol.l.as_ref();
    let mut s = crate::linalg::a_bt(l, l);
    for j in 0..s.ncols() {
        for i in 0..s.nrows() {
            s[(i, j)] = delta * (s[(i, j)] - f64::from(u8::from(i == j)));
        }
    }
    s
}

/// Bytes of the per-layer Jacobian factors of `n` inputs (K rows each: a conv layer's Jacobian
/// block, a dense layer's `G` and `Ã`), twice (the chunks' factors are stacked into one set),
/// and of one output's selection.
fn factor_bytes(net: &Graph, n: usize) -> u128 {
    let k = net.n_outputs();
    let values: usize = match net.chain() {
        Some(chain) => chain
            .layers()
            .iter()
            .map(|l| match *l {
                Layer::Conv2d { .. } => n * k * l.n_params(),
                Layer::Dense { inputs, outputs } => n * k * outputs + n * (inputs + 1),
                _ => 0,
            })
            .sum(),
        // Every operation's block of the Jacobian.
        None => n * k * net.n_params(),
    };
    8 * values as u128 * (2 * k as u128 + 1) / k as u128
}
