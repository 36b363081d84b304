//! The GP of DNN2GP (Theorem 1): `f ~ GP(0, δ⁻¹ J(x) J(x')ᵀ)` observed through pseudo-targets
//! `ỹ = J w* − Λ⁻¹ r` with noise `Λ̃⁻¹ = blockdiag(Λ_i⁻¹)`.
//!
//! Its posterior is the posterior of the linear model `ỹ = J w + ε`, `w ~ N(0, δ⁻¹ I)`, so every
//! quantity has two forms: weight space (P×P, `A = JᵀΛJ + δI`) and function space (NK×NK,
//! `G = δ⁻¹ J Jᵀ + Λ̃⁻¹`). They agree to rounding; [`Space::Auto`] picks the smaller.

pub mod classification;
pub mod delta_path;
pub mod function_space;
pub mod functional;
pub mod kernel;
pub mod rbf;
pub mod variational;

use std::borrow::Cow;

use faer::{Mat, MatRef};

use crate::curvature::Linearization;
use crate::error::{Error, Result, Warning};
use crate::likelihood::BlockDiag;
use crate::linalg::{
    a_bt, check_memory, col_sq_norms, dot, jitter_ladder, ladder_failed, mat_bytes, mat_t_vec,
    mat_vec, row_sq_norms, solve_triangular_in_place, try_cholesky_in_place, Cholesky,
    JITTER_LADDER,
};
use crate::nn::{Network, NtkBlocks};
use crate::posterior::evidence::laplace_evidence;
use crate::posterior::{HessianStructure, LaplaceGgn};
use crate::train::check_delta;

pub use classification::{data_space_predictive, DataSpacePredictive};
pub use delta_path::DeltaPath;
pub use function_space::FunctionSpace;
pub use functional::{FunctionalGp, Outputs};
pub use kernel::{kernel, kernel_diag, kernel_view, nt_order, KernelView};

crate::words! {
    /// Where to compute: the P×P weight space or the NK×NK function space.
    pub enum Space("space") {
        /// The smaller of the two.
        Auto = ["auto"],
        /// P×P.
        Weight = ["weight"],
        /// NK×NK.
        Function = ["function"],
    }
}

impl Space {
    /// Resolves `Auto` to the space with the smaller matrix.
    pub fn resolve(self, p: usize, nk: usize) -> Space {
        match self {
            Space::Auto if p <= nk => Space::Weight,
            Space::Auto => Space::Function,
            s => s,
        }
    }
}

/// Predictive marginals of the GP at test inputs, one value per (example, output).
#[derive(Debug, Clone)]
pub struct GpPrediction {
    /// GP mean `κ*X G⁻¹ ỹ = J* m` (equal to `J* w*` at a stationary point).
    pub mean: Vec<f64>,
    /// GP variance of f, `κ** − κ*X G⁻¹ κX* = diag(J* Σ J*ᵀ)`, never negative.
    pub var: Vec<f64>,
    /// Set when some variances came out negative and were clamped at 0.
    pub clamped: Option<Warning>,
}

impl GpPrediction {
    /// A prediction from a mean and variances computed as a difference, which can cancel below
    /// 0: those are clamped at 0 (see [`clamp_variances`]).
    pub fn clamping(mean: Vec<f64>, mut var: Vec<f64>) -> Self {
        let clamped = clamp_variances(&mut var);
        GpPrediction { mean, var, clamped }
    }
}

/// Per-entry mean and variance of a stream of vectors, by Welford's update (no cancellation
/// of `E[x²] − E[x]²`): `m ← m + (x − m)/n`, `M₂ ← M₂ + (x − m_old)(x − m_new)`.
#[derive(Debug, Clone, Default)]
pub struct RunningMoments {
    n: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl RunningMoments {
    /// Adds one vector (all of the same length).
    pub fn push(&mut self, x: &[f64]) {
        if self.n == 0 {
            self.mean = vec![0.0; x.len()];
            self.m2 = vec![0.0; x.len()];
        }
        self.n += 1;
        let n = self.n as f64;
        for ((m, m2), x) in self.mean.iter_mut().zip(&mut self.m2).zip(x) {
            let d = x - *m;
            *m += d / n;
            *m2 += d * (x - *m);
        }
    }

    /// The number of vectors added.
    pub fn count(&self) -> usize {
        self.n
    }

    /// The mean.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The population variance `M₂/n` (0 for fewer than two vectors).
    pub fn variance(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.m2.iter().map(|v| v / n).collect()
    }
}

/// The moments of an equal-weight mixture of GP predictives (for instance the converged VI GP
/// at several samples of q), by the law of total variance: mean `E_s[m_s]`, variance
/// `E_s[v_s] + Var_s[m_s]`.
pub fn mixture(preds: &[GpPrediction]) -> GpPrediction {
    let (mut means, mut vars) = (RunningMoments::default(), RunningMoments::default());
    for p in preds {
        means.push(&p.mean);
        vars.push(&p.var);
    }
    let var = vars
        .mean()
        .iter()
        .zip(means.variance())
        .map(|(v, m)| v + m)
        .collect();
    GpPrediction {
        mean: means.mean().to_vec(),
        var,
        clamped: preds.iter().find_map(|p| p.clamped.clone()),
    }
}

/// Clamps at 0 the variances that a difference `κ** − κ*ᵀG⁻¹κ*` took below 0 (cancellation:
/// the two terms agree to rounding where the data pin f down, and grow as δ⁻¹ and δ⁻²); the
/// warning says how many, and how far below 0 the worst was.
pub fn clamp_variances(var: &mut [f64]) -> Option<Warning> {
    let (mut count, mut worst) = (0usize, 0.0f64);
    for v in var.iter_mut().filter(|v| **v < 0.0) {
        count += 1;
        worst = worst.min(*v);
        *v = 0.0;
    }
    (count > 0).then(|| {
        Warning::new(
            "clamped_variance",
            format!(
                "{count} of {} predictive variances came out negative (down to {worst:.3e}, \
                 cancellation in κ** − κ*ᵀG⁻¹κ*) and were set to 0; the weight space \
                 (--space weight) computes them as squared norms, which cannot go negative",
                var.len()
            ),
        )
    })
}

enum Solver {
    Weight(LaplaceGgn),
    Function { chol: Cholesky, alpha: Vec<f64> },
}

/// The fitted DNN2GP Gaussian process.
pub struct Dnn2Gp<'a> {
    lin: Cow<'a, Linearization>,
    /// Prior precision δ.
    pub delta: f64,
    /// The space in which it was computed.
    pub space: Space,
    /// Pseudo-targets ỹ.
    pub targets: Vec<f64>,
    /// Posterior mean of the linear model, `m = A⁻¹ Jᵀ Λ̃ ỹ = c − A⁻¹ g`.
    pub posterior_mean: Vec<f64>,
    solver: Solver,
}

impl<'a> Dnn2Gp<'a> {
    /// Builds the GP from a linearisation, refusing matrices above `memory_limit` bytes.
    pub fn new(
        lin: &'a Linearization,
        delta: f64,
        space: Space,
        memory_limit: u128,
    ) -> Result<Self> {
        Self::build(Cow::Borrowed(lin), delta, space, None, memory_limit)
    }

    /// The GP of `net` linearised as `lin` on the inputs `x`: in function space its kernel is
    /// the NTK of `net`'s per-layer factors ([`Network::ntk`], no product of Jacobians), in
    /// weight space as [`Dnn2Gp::new`].
    pub fn of(
        net: &dyn Network,
        x: MatRef<'_, f64>,
        lin: &'a Linearization,
        delta: f64,
        space: Space,
        memory_limit: u128,
    ) -> Result<Self> {
        Self::with_factors(net, x, Cow::Borrowed(lin), delta, space, memory_limit)
    }

    /// [`Dnn2Gp::of`] holding its linearisation (a GP kept beyond the scope that made it).
    pub fn owned(
        net: &dyn Network,
        x: MatRef<'_, f64>,
        lin: Linearization,
        delta: f64,
        space: Space,
        memory_limit: u128,
    ) -> Result<Dnn2Gp<'static>> {
        Dnn2Gp::with_factors(net, x, Cow::Owned(lin), delta, space, memory_limit)
    }

    fn with_factors(
        net: &dyn Network,
        x: MatRef<'_, f64>,
        lin: Cow<'a, Linearization>,
        delta: f64,
        space: Space,
        memory_limit: u128,
    ) -> Result<Self> {
        let nk = lin.n() * lin.k();
        let space = space.resolve(lin.n_params(), nk);
        let ntk = match space {
            Space::Function => {
                check_function_memory(nk, memory_limit)?;
                Some(net.ntk(lin.point(), x, x))
            }
            _ => None,
        };
        Self::build(lin, delta, space, ntk, memory_limit)
    }

    /// The linearisation the GP is built on.
    pub fn linearization(&self) -> &Linearization {
        &self.lin
    }

    /// The function-space GP from a precomputed NTK `J Jᵀ` of the training inputs (for example
    /// [`crate::nn::Network::ntk`], which forms it from per-layer factors without J).
    pub fn from_ntk(
        lin: &'a Linearization,
        delta: f64,
        ntk: Mat<f64>,
        memory_limit: u128,
    ) -> Result<Self> {
        lin.check_ntk(&ntk)?;
        Self::build(
            Cow::Borrowed(lin),
            delta,
            Space::Function,
            Some(ntk),
            memory_limit,
        )
    }

    fn build(
        lin: Cow<'a, Linearization>,
        delta: f64,
        space: Space,
        ntk: Option<Mat<f64>>,
        memory_limit: u128,
    ) -> Result<Self> {
        check_delta(delta)?;
        let (p, nk) = (lin.n_params(), lin.n() * lin.k());
        let space = space.resolve(p, nk);
        let targets = lin.pseudo_targets()?;
        let (solver, posterior_mean) = match space {
            Space::Weight => {
                let lap = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, memory_limit)?;
                let lam_t = lin.curvature().apply(&targets);
                let m = lap.covariance_times(&mat_t_vec(lin.jacobian(), &lam_t));
                (Solver::Weight(lap), m)
            }
            _ => {
                check_function_memory(nk, memory_limit)?;
                let mut g = match ntk {
                    Some(mut k) => {
                        k.as_mut()
                            .col_iter_mut()
                            .for_each(|c| c.iter_mut().for_each(|v| *v /= delta));
                        k
                    }
                    None => kernel(lin.jacobian(), lin.jacobian(), delta),
                };
                add_blocks(&mut g, &lin.lambda_inv()?, 1.0);
                let chol = Cholesky::new(g.as_ref(), "GP Gram matrix δ⁻¹JJ' + Λ⁻¹")?;
                let alpha = chol.solve_vec(&targets);
                let m: Vec<f64> = mat_t_vec(lin.jacobian(), &alpha)
                    .into_iter()
                    .map(|v| v / delta)
                    .collect();
                (Solver::Function { chol, alpha }, m)
            }
        };
        Ok(Dnn2Gp {
            lin,
            delta,
            space,
            targets,
            posterior_mean,
            solver,
        })
    }

    /// Jitter the Cholesky ladder added (0 if none).
    pub fn jitter(&self) -> f64 {
        match &self.solver {
            Solver::Weight(l) => l.jitter(),
            Solver::Function { chol, .. } => chol.jitter,
        }
    }

    /// The numerical events of the fit: jitter, relative to the term of the diagonal it
    /// protects (δ in weight space, the mean noise variance `Λ⁻¹` in function space), and the
    /// eigen form of the weight-space precision.
    pub fn warnings(&self) -> Vec<Warning> {
        match &self.solver {
            Solver::Weight(l) => l.warnings(),
            Solver::Function { chol, .. } if chol.jitter > 0.0 => {
                let noise = self.lin.mean_noise_variance();
                vec![Warning::new(
                    "jitter",
                    format!(
                        "the Cholesky factorisation of the GP Gram matrix δ⁻¹JJ' + Λ⁻¹ (δ = {:.3e}) \
                         added jitter {:.3e} to its diagonal, {:.2e} times the mean noise variance \
                         {noise:.3e} it adds to: variances and the marginal likelihood are those \
                         of a noisier model; the weight space (--space weight) needs none",
                        self.delta,
                        chol.jitter,
                        chol.jitter / noise
                    ),
                )]
            }
            Solver::Function { .. } => Vec::new(),
        }
    }

    /// GP predictive of f at test Jacobians `J*` (MK×P).
    pub fn predict(&self, jstar: MatRef<'_, f64>) -> GpPrediction {
        match &self.solver {
            Solver::Weight(lap) => GpPrediction {
                mean: mat_vec(jstar, &self.posterior_mean),
                var: lap.functional_variance(jstar),
                clamped: None,
            },
            Solver::Function { .. } => {
                let k_sx = a_bt(jstar, self.lin.jacobian());
                self.predict_ntk(k_sx, &row_sq_norms(jstar))
                    .expect("function-space solver")
            }
        }
    }

    /// Function-space GP predictive from NTK blocks: `J* Jᵀ` (MK×NK) and the diagonal of
    /// `J* J*ᵀ` (for instance from [`crate::nn::Network::ntk`]); a weight-space GP needs J*.
    pub fn predict_ntk(&self, ntk_sx: Mat<f64>, ntk_ss_diag: &[f64]) -> Result<GpPrediction> {
        let Solver::Function { chol, alpha } = &self.solver else {
            return Err(Error::Invalid(
                "predicting from NTK blocks needs the function-space GP".into(),
            ));
        };
        let mut k_sx = ntk_sx;
        k_sx.as_mut()
            .col_iter_mut()
            .for_each(|c| c.iter_mut().for_each(|v| *v /= self.delta));
        let mean = mat_vec(k_sx.as_ref(), alpha);
        let v = chol.solve_l(k_sx.transpose());
        let var = ntk_ss_diag
            .iter()
            .zip(col_sq_norms(v.as_ref()))
            .map(|(a, b)| a / self.delta - b)
            .collect();
        Ok(GpPrediction::clamping(mean, var))
    }

    /// The GP log marginal likelihood
    /// `log p(ỹ) = −½ ỹᵀ G⁻¹ ỹ − ½ log|G| − (NK/2) log 2π`, computed in the chosen space
    /// (weight space: `−½ (ỹ − Jm)ᵀΛ̃(ỹ − Jm) + ½ log|Λ̃| − (NK/2) log 2π − (δ/2)‖m‖²
    /// + (P/2) log δ − ½ log|A|`).
    pub fn log_marginal_likelihood(&self) -> Result<f64> {
        let lin = &*self.lin;
        let nk = (lin.n() * lin.k()) as f64;
        let log2pi = std::f64::consts::TAU.ln();
        Ok(match &self.solver {
            Solver::Function { chol, alpha } => {
                -0.5 * dot(&self.targets, alpha) - 0.5 * chol.log_det() - 0.5 * nk * log2pi
            }
            Solver::Weight(lap) => {
                let m = &self.posterior_mean;
                let e: Vec<f64> = self
                    .targets
                    .iter()
                    .zip(mat_vec(lin.jacobian(), m))
                    .map(|(t, jm)| t - jm)
                    .collect();
                let p = m.len() as f64;
                -0.5 * dot(&e, &lin.curvature().apply(&e)) + 0.5 * lin.sum_log_det_lambda()?
                    - 0.5 * nk * log2pi
                    - 0.5 * self.delta * dot(m, m)
                    + 0.5 * p * self.delta.ln()
                    - 0.5 * lap.log_det_precision()
            }
        })
    }

    /// The Laplace evidence with the full GGN, `log p(D | w*) − (δ/2)‖c‖² + (P/2) log δ
    /// − ½ log|A|` ([`LaplaceGgn::log_marginal_likelihood`]), in the chosen space: in function
    /// space from `log|A| = P log δ + log|G| + Σ_i log|Λ_i|`, so that it never forms P×P:
    /// `log p(D | w*) − (δ/2)‖c‖² − ½ log|G| − ½ Σ_i log|Λ_i|`.
    pub fn laplace_log_evidence(&self) -> Result<f64> {
        let lin = &*self.lin;
        match &self.solver {
            Solver::Weight(lap) => lap.log_marginal_likelihood(lin),
            // `log|A| = P log δ + log|G| + Σ_i log|Λ_i|`.
            Solver::Function { chol, .. } => {
                let p = lin.n_params();
                let log_det_a =
                    p as f64 * self.delta.ln() + chol.log_det() + lin.sum_log_det_lambda()?;
                Ok(laplace_evidence(
                    -lin.nll(),
                    self.delta,
                    dot(lin.center(), lin.center()),
                    p,
                    log_det_a,
                ))
            }
        }
    }

    /// `½ gᵀ A⁻¹ g` with `g = Jᵀr + δc` (`= ∇L(w*)` for Laplace): the gap between this marginal
    /// likelihood and the paper's Laplace evidence, zero at a stationary point. Uses
    /// `A⁻¹ g = c − m`.
    pub fn stationarity_gap(&self) -> f64 {
        let lin = &*self.lin;
        let g: Vec<f64> = lin
            .loss_gradient()
            .iter()
            .zip(lin.center())
            .map(|(g, w)| g + self.delta * w)
            .collect();
        let a_inv_g: Vec<f64> = lin
            .center()
            .iter()
            .zip(&self.posterior_mean)
            .map(|(w, m)| w - m)
            .collect();
        0.5 * dot(&g, &a_inv_g)
    }
}

/// Refuses a function-space GP whose Gram matrix and its copies exceed `limit` bytes.
fn check_function_memory(nk: usize, limit: u128) -> Result<()> {
    check_memory(
        "the function-space Gram matrix (NK×NK)",
        3 * mat_bytes(nk, nk),
        limit,
        "use --space weight when P < N·K, or a subset of the data",
    )
}

/// `G += B/d` for a block-diagonal `B` on the diagonal blocks of `G`.
pub(crate) fn add_blocks(g: &mut Mat<f64>, blocks: &BlockDiag, d: f64) {
    let k = blocks.k();
    for i in 0..blocks.len() {
        let b = blocks.block(i);
        for a in 0..k {
            for e in 0..k {
                g[(i * k + a, i * k + e)] += b[a * k + e] / d;
            }
        }
    }
}

/// The GLM predictive variance under a Gaussian likelihood with noise σ², computed inside the
/// storage of [`NtkBlocks`] (no copy of the kernel) at one `rung` of
/// [`crate::linalg::JITTER_LADDER`]. For `G = δ⁻¹K + σ²I + εI` it factorises
/// `δG = K + δ(σ² + ε)I = LLᵀ` in the train block, solves `V = L⁻¹K_{XX*}` in place of the
/// other columns and returns `var_m = δ⁻¹(k**_m − ‖V_m‖²)` (`= δ⁻¹k**_m − δ⁻²k*_mᵀG⁻¹k*_m`,
/// with no pass over the kernel to scale it) and ε; `None` when that rung fails (the blocks are
/// then spent).
pub fn gaussian_variance_in_place(
    blocks: &mut NtkBlocks,
    delta: f64,
    sigma: f64,
    rung: usize,
) -> Result<Option<GaussianVariance>> {
    use faer::reborrow::Reborrow;
    check_delta(delta)?;
    crate::likelihood::Gaussian::new(sigma)?;
    let n = blocks.train_rows();
    let (mut top, mut cross) = blocks.kernel.as_mut().split_at_col_mut(n);
    for i in 0..n {
        top[(i, i)] += delta * sigma * sigma;
    }
    // The ladder of δG is δ times that of G.
    let jitter = jitter_ladder(top.rb(), GAUSSIAN_GRAM)?[rung];
    if !try_cholesky_in_place(top.as_mut(), jitter) {
        return Ok(None);
    }
    solve_triangular_in_place(top.rb(), false, cross.as_mut());
    let var = blocks
        .test_diag
        .iter()
        .zip(col_sq_norms(cross.rb()))
        .map(|(k, v)| (k - v) / delta)
        .collect();
    Ok(Some(GaussianVariance::new(var, jitter / delta, sigma)))
}

/// The GLM predictive variance of [`gaussian_variance_in_place`] and
/// [`gaussian_glm_variance`].
#[derive(Debug, Clone)]
pub struct GaussianVariance {
    /// `var_f` at each test row, clamped at 0.
    pub var: Vec<f64>,
    /// The jitter ε added to `G`'s diagonal (0 if none).
    pub jitter: f64,
    /// Jitter added, and negative variances clamped.
    pub warnings: Vec<Warning>,
}

impl GaussianVariance {
    fn new(mut var: Vec<f64>, jitter: f64, sigma: f64) -> Self {
        let mut warnings: Vec<Warning> = clamp_variances(&mut var).into_iter().collect();
        if jitter > 0.0 {
            warnings.push(Warning::new(
                "jitter",
                format!(
                    "the Cholesky factorisation of the GP Gram matrix δ⁻¹JJ' + σ²I added jitter \
                     {jitter:.3e} to its diagonal, {:.2e} times σ² = {:.3e}",
                    jitter / (sigma * sigma),
                    sigma * sigma
                ),
            ));
        }
        GaussianVariance {
            var,
            jitter,
            warnings,
        }
    }
}

const GAUSSIAN_GRAM: &str = "GP Gram matrix δ⁻¹JJ' + σ²I";

/// The GLM predictive variance of `net` at `X*` under a Gaussian likelihood (noise σ²) with
/// prior precision δ, from per-layer factors ([`crate::nn::Network::ntk_blocks`]) and
/// [`gaussian_variance_in_place`], climbing the jitter ladder; a rung that fails recomputes
/// the kernel.
pub fn gaussian_glm_variance(
    net: &dyn crate::nn::Network,
    w: &[f64],
    x: MatRef<'_, f64>,
    xs: MatRef<'_, f64>,
    delta: f64,
    sigma: f64,
) -> Result<GaussianVariance> {
    for rung in 0..JITTER_LADDER.len() {
        let mut blocks = net.ntk_blocks(w, x, xs);
        if let Some(out) = gaussian_variance_in_place(&mut blocks, delta, sigma, rung)? {
            return Ok(out);
        }
    }
    Err(ladder_failed(GAUSSIAN_GRAM))
}

/// The GP predictive of `net` at new inputs `X*`: from NTK blocks in function space (no J* of
/// MK×P), from J* in weight space (checked against `memory_limit`); the functional variance of
/// another `posterior` (a structured or last-layer Laplace) replaces the GP's when given.
#[allow(clippy::too_many_arguments)]
pub fn predict_at(
    gp: &Dnn2Gp<'_>,
    posterior: Option<&dyn crate::posterior::Posterior>,
    net: &dyn Network,
    w: &[f64],
    x: MatRef<'_, f64>,
    xs: MatRef<'_, f64>,
    memory_limit: u128,
) -> Result<GpPrediction> {
    let mut pred = if gp.space == Space::Function {
        gp.predict_ntk(net.ntk(w, xs, x), &net.ntk_diag(w, xs))?
    } else {
        crate::linalg::check_memory(
            "the Jacobian of the prediction inputs (MK×P)",
            crate::linalg::mat_bytes(xs.nrows() * net.n_outputs(), net.n_params()),
            memory_limit,
            "use --space function",
        )?;
        gp.predict(net.jacobian(w, xs).as_ref())
    };
    if let Some(post) = posterior {
        pred.var = post.functional_variance(xs);
    }
    Ok(pred)
}
