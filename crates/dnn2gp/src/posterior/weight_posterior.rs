//! The weight-space Gaussian `N(w*, Σ)` a posterior holds, its precision factorised:
//! `Σ⁻¹ = A = H + D` with H the GGN `Σ_i J_iᵀ Λ_i J_i` (full), its diagonal, its per-layer
//! Kronecker factors or its top eigenpairs, and D the prior; from a [`Linearization`] (the
//! GP's weight space) or from a structure (`structure/`). Its Laplace evidence:
//!
//! `log p(D) ≈ log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|A|`
//!
//! (laplace-torch's `log_marginal_likelihood`; for the Gaussian, `log p(D | w*) =
//! −½ Σ_i r_iᵀ Λ_i⁻¹ r_i + ½ Σ_i log|Λ_i| − (NK/2) log 2π`).

use faer::{Mat, MatRef};

use crate::curvature::{Kron, Linearization, LowRank, Precision};
use crate::error::Warning;
use crate::error::{Error, Result};
use crate::linalg::{check_memory, dot, mat_bytes, Cholesky, SpdFactor};
use crate::rng::Rng;
use crate::train::check_delta;

use super::evidence::laplace_evidence;
use super::HessianStructure;

/// A δ below this multiple of the GGN's rounding level `ε·tr(JᵀΛJ)` is warned about: the
/// evidence there depends on eigenvalues f64 cannot resolve.
pub const RESOLVED_DELTA: f64 = 1e3;

/// The largest jitter the weight-space Cholesky may add, relative to δ: `A = JᵀΛJ + δI` has
/// every eigenvalue ≥ δ, so a larger one would change the posterior; past it the eigen form
/// `V diag(max(s, 0) + δ) Vᵀ` of `JᵀΛJ` is used instead.
pub const MAX_JITTER_OVER_DELTA: f64 = 1e-3;

/// A fitted Laplace-GGN posterior.
#[derive(Debug, Clone)]
pub struct LaplaceGgn {
    /// Prior precision δ (the smallest, under a prior precision per layer).
    pub delta: f64,
    /// Mean `w*`.
    pub mean: Vec<f64>,
    /// Structure of the precision.
    pub structure: HessianStructure,
    precision: Precision,
    /// Negative eigenvalues of `JᵀΛJ` (rounding) floored at 0 by the eigen form.
    floored: usize,
    /// `τ = ε·tr(JᵀΛJ)`: eigenvalues of the GGN below about τ are rounding, not data.
    resolution: f64,
}

impl LaplaceGgn {
    /// Fits the posterior at the linearisation point, refusing a P×P matrix above
    /// `memory_limit` bytes.
    pub fn fit(
        lin: &Linearization,
        delta: f64,
        structure: HessianStructure,
        memory_limit: u128,
    ) -> Result<Self> {
        check_delta(delta)?;
        let p = lin.n_params();
        let precision = match structure {
            HessianStructure::Full => {
                check_memory(
                    "the full P×P GGN",
                    3 * mat_bytes(p, p),
                    memory_limit,
                    "use --hessian diag, or the function-space GP (--space function) when N·K < P",
                )?;
                return Self::from_ggn(lin.center().to_vec(), lin.ggn(), delta);
            }
            HessianStructure::Diag => {
                Precision::Diag(lin.ggn_diag().into_iter().map(|d| d + delta).collect())
            }
            HessianStructure::Kron | HessianStructure::LowRank => {
                return Err(Error::Invalid(format!(
                    "a {structure} posterior is fitted from the network (posterior::Laplace), \
                     not from a linearisation"
                )))
            }
        };
        Ok(LaplaceGgn {
            delta,
            mean: lin.center().to_vec(),
            structure,
            precision,
            floored: 0,
            resolution: 0.0,
        })
    }

    /// The full posterior at `mean` from the GGN `H` (P×P): `A = H + δI` factorised by
    /// [`factor_precision`].
    pub fn from_ggn(mean: Vec<f64>, h: Mat<f64>, delta: f64) -> Result<Self> {
        let p = mean.len();
        Self::from_ggn_prior(mean, h, &vec![delta; p])
    }

    /// The full posterior with a prior precision per parameter `d` (a layerwise prior):
    /// `A = H + diag(d)`, factorised by [`factor_precision`].
    pub fn from_ggn_prior(mean: Vec<f64>, h: Mat<f64>, d: &[f64]) -> Result<Self> {
        let delta = check_prior(d, mean.len())?;
        let p = mean.len();
        if h.nrows() != p || h.ncols() != p {
            return Err(Error::Invalid(format!(
                "a {}×{} GGN for {p} parameters",
                h.nrows(),
                h.ncols()
            )));
        }
        let resolution = f64::EPSILON * (0..p).map(|i| h[(i, i)]).sum::<f64>();
        let (factor, floored) = factor_precision(h, d)?;
        Ok(LaplaceGgn {
            delta,
            mean,
            structure: HessianStructure::Full,
            precision: Precision::Full {
                factor,
                matrix: None,
            },
            floored,
            resolution,
        })
    }

    /// The KFAC posterior at `mean`: `Σ⁻¹ = c (G ⊗ A) + δI` per layer.
    pub fn from_kron(mean: Vec<f64>, kron: Kron) -> Result<Self> {
        let deltas = kron.deltas();
        let delta = check_prior(&deltas, deltas.len())?;
        if kron.dim() != mean.len() {
            return Err(Error::Invalid(format!(
                "Kronecker factors for {} parameters and a mean of {}",
                kron.dim(),
                mean.len()
            )));
        }
        Ok(LaplaceGgn {
            delta,
            mean,
            structure: HessianStructure::Kron,
            floored: kron.floored_eigenvalues(),
            precision: Precision::Kron(kron),
            resolution: 0.0,
        })
    }

    /// The low-rank posterior at `mean`: `Σ⁻¹ = c U diag(s) Uᵀ + δI`.
    pub fn from_low_rank(mean: Vec<f64>, low: LowRank) -> Result<Self> {
        check_delta(low.delta)?;
        if low.dim() != mean.len() {
            return Err(Error::Invalid(format!(
                "eigenvectors of {} parameters and a mean of {}",
                low.dim(),
                mean.len()
            )));
        }
        Ok(LaplaceGgn {
            delta: low.delta,
            mean,
            structure: HessianStructure::LowRank,
            floored: 0,
            precision: Precision::LowRank(low),
            resolution: 0.0,
        })
    }

    /// How many negative eigenvalues of `JᵀΛJ` the eigen form floored at 0 (0 when the
    /// Cholesky factorisation succeeded).
    pub fn floored_eigenvalues(&self) -> usize {
        self.floored
    }

    /// How far rounding in `JᵀΛJ` can move `½ log|A|` and so the evidence:
    /// `(P/2)·log(1 + τ/δ)` with `τ = ε·tr(JᵀΛJ)` (0 for a diagonal posterior).
    pub fn evidence_uncertainty(&self) -> f64 {
        0.5 * self.mean.len() as f64 * (self.resolution / self.delta).ln_1p()
    }

    /// Whether the precision is held in the eigen form (the Cholesky factorisation of
    /// `JᵀΛJ + δI` failed within [`MAX_JITTER_OVER_DELTA`]).
    pub fn is_eigen_form(&self) -> bool {
        matches!(
            self.precision,
            Precision::Full {
                factor: SpdFactor::Eigen { .. },
                ..
            }
        )
    }

    /// The numerical events of the fit (jitter added, eigen form used), for warnings.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        let jitter = self.jitter();
        if jitter > 0.0 {
            out.push(Warning::new(
                "jitter",
                format!(
                    "the Cholesky factorisation of the posterior precision J'ΛJ + δI added jitter \
                     {jitter:.3e} to its diagonal ({:.2e} of δ = {:.3e})",
                    jitter / self.delta,
                    self.delta
                ),
            ));
        }
        if self.delta < RESOLVED_DELTA * self.resolution {
            out.push(Warning::new(
                "unresolved_delta",
                format!(
                    "δ = {:.3e} is within {RESOLVED_DELTA:.0e}× of the rounding level of J'ΛJ, \
                     τ = ε·tr(J'ΛJ) = {:.3e}: its eigenvalues below τ are not resolved in f64, so \
                     log|J'ΛJ + δI| and the evidence are uncertain by up to (P/2)·log(1 + τ/δ) = \
                     {:.3e} nats",
                    self.delta,
                    self.resolution,
                    self.evidence_uncertainty()
                ),
            ));
        }
        if self.structure == HessianStructure::Kron && self.floored > 0 {
            out.push(Warning::new(
                "floored_eigenvalues",
                format!(
                    "{} eigenvalues of the KFAC factors were negative beyond rounding and were \
                     floored at 0",
                    self.floored
                ),
            ));
        }
        if self.is_eigen_form() {
            out.push(Warning::new(
                "eigen_form",
                format!(
                    "the posterior precision J'ΛJ + δI (δ = {:.3e}) could not be factorised by Cholesky \
                     with jitter up to {MAX_JITTER_OVER_DELTA:.0e}·δ; its eigendecomposition was used \
                     instead, {} negative eigenvalues of J'ΛJ (rounding) floored at 0",
                    self.delta, self.floored
                ),
            ));
        }
        out
    }

    /// The diagonal posterior `N(mean, diag(variances))` (a saved one, or VOGN's q), with
    /// prior precision δ.
    pub fn from_variances(mean: Vec<f64>, variances: &[f64], delta: f64) -> Result<Self> {
        if let Some(i) = variances.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::Invalid(format!(
                "posterior variance {i} is {}, not a positive number",
                variances[i]
            )));
        }
        Self::diagonal(mean, variances.iter().map(|v| 1.0 / v).collect(), delta)
    }

    /// The diagonal posterior at `w*` from a GGN diagonal `h`: `Σ⁻¹ = diag(h) + δI`.
    pub fn from_ggn_diagonal(mean: Vec<f64>, h: &[f64], delta: f64) -> Result<Self> {
        Self::diagonal(mean, h.iter().map(|d| d + delta).collect(), delta)
    }

    /// The diagonal posterior with a prior precision per parameter `d` (a layerwise prior):
    /// `Σ⁻¹ = diag(h + d)`.
    pub fn from_ggn_diagonal_prior(mean: Vec<f64>, h: &[f64], d: &[f64]) -> Result<Self> {
        let delta = check_prior(d, h.len())?;
        Self::diagonal(mean, h.iter().zip(d).map(|(h, d)| h + d).collect(), delta)
    }

    /// `N(mean, diag(precision)⁻¹)` with prior precision δ.
    fn diagonal(mean: Vec<f64>, precision: Vec<f64>, delta: f64) -> Result<Self> {
        check_delta(delta)?;
        if precision.len() != mean.len() {
            return Err(Error::Invalid(format!(
                "a diagonal posterior of {} entries for {} parameters",
                precision.len(),
                mean.len()
            )));
        }
        Ok(LaplaceGgn {
            delta,
            mean,
            structure: HessianStructure::Diag,
            precision: Precision::Diag(precision),
            floored: 0,
            resolution: 0.0,
        })
    }

    /// The posterior variances `diag(Σ)`.
    pub fn variances(&self) -> Vec<f64> {
        self.precision.variances()
    }

    /// The factorised precision `A = Σ⁻¹`.
    pub fn precision(&self) -> &Precision {
        &self.precision
    }

    /// Jitter added to the precision's diagonal by the Cholesky ladder (at most
    /// [`MAX_JITTER_OVER_DELTA`]·δ).
    pub fn jitter(&self) -> f64 {
        self.precision.jitter()
    }

    /// `log |Σ⁻¹|`.
    pub fn log_det_precision(&self) -> f64 {
        self.precision.log_det()
    }

    /// `Σ v = A⁻¹ v`.
    pub fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        self.precision.covariance_times(v)
    }

    /// Marginal variances `diag(J* Σ J*ᵀ)` of the linearised outputs, one per row of `J*`.
    pub fn functional_variance(&self, jstar: MatRef<'_, f64>) -> Vec<f64> {
        self.precision.functional_variance(jstar)
    }

    /// `n` draws `w ~ N(w*, Σ)`.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| self.precision.sample(&self.mean, rng))
            .collect()
    }

    /// The Laplace evidence of the paper (see the module doc), for every likelihood. For the
    /// Gaussian it equals the GP marginal likelihood when `w*` is a stationary point; otherwise
    /// it is lower by `½ gᵀ A⁻¹ g`.
    pub fn log_marginal_likelihood(&self, lin: &Linearization) -> Result<f64> {
        Ok(laplace_evidence(
            -lin.nll(),
            self.delta,
            dot(&self.mean, &self.mean),
            self.mean.len(),
            self.log_det_precision(),
        ))
    }

    /// The posterior kernel `J_a Σ J_bᵀ` for stacked Jacobians.
    pub fn kernel(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        self.precision.kernel(ja, jb)
    }

    /// The K×K blocks `J*_i Σ J*_iᵀ` of the functional covariance at N test inputs (stacked
    /// Jacobians NK×P), row-major, `N·K·K` values: laplace-torch's GLM `f_var`.
    pub fn functional_covariance_blocks(&self, jstar: MatRef<'_, f64>, k: usize) -> Vec<f64> {
        self.precision.covariance_blocks(jstar, k)
    }

    /// The dense covariance `Σ` (P×P); for small networks and tests.
    pub fn covariance(&self) -> Mat<f64> {
        self.precision.covariance()
    }
}

/// Factorises `A = H + diag(d)` for the GGN `H` and a prior precision per parameter `d`:
/// Cholesky with jitter at most [`MAX_JITTER_OVER_DELTA`]·min d; failing that, when d is one
/// δ, the eigen form of `H` with its eigenvalues floored at 0. Returns the factor and the
/// number of floored eigenvalues.
pub fn factor_precision(mut h: Mat<f64>, d: &[f64]) -> Result<(SpdFactor, usize)> {
    const WHAT: &str = "posterior precision J'ΛJ + δI";
    let p = h.nrows();
    let smallest = d.iter().copied().fold(f64::INFINITY, f64::min);
    for i in 0..p {
        h[(i, i)] += d[i];
    }
    if let Some(c) = Cholesky::with_max_jitter(h.as_ref(), WHAT, MAX_JITTER_OVER_DELTA * smallest)?
    {
        return Ok((SpdFactor::Cholesky(c), 0));
    }
    if d.iter().any(|v| *v != smallest) {
        return Err(Error::Numerical(format!(
            "the {WHAT} with a prior precision per layer could not be factorised by Cholesky \
             with jitter up to {MAX_JITTER_OVER_DELTA:.0e}·min δ = {:.3e}",
            MAX_JITTER_OVER_DELTA * smallest
        )));
    }
    for i in 0..p {
        h[(i, i)] -= smallest;
    }
    SpdFactor::eigen_shifted(h.as_ref(), smallest, WHAT)
}

/// Checks a prior precision per parameter (P values, each a valid δ) and returns the smallest,
/// the δ that bounds the jitter and the warnings.
fn check_prior(d: &[f64], p: usize) -> Result<f64> {
    if d.len() != p {
        return Err(Error::Invalid(format!(
            "{} prior precisions for {p} parameters",
            d.len()
        )));
    }
    d.iter().try_for_each(|v| check_delta(*v))?;
    Ok(d.iter().copied().fold(f64::INFINITY, f64::min))
}
