//! One posterior interface in laplace-torch's shape ([`Posterior`], its `BaseLaplace`): the
//! model, the structure and subset, the evidence at any prior and noise, `Σ v`, the functional
//! covariance and variance at new inputs, the kernel `J(x) Σ J(x′)ᵀ`, the GLM predictive
//! through a link, and samples. [`super::Laplace`] (every structure, all weights or the last
//! layer) and [`crate::gp::FunctionSpace`] (the full posterior through the NK×NK Gram matrix)
//! implement it; the command line and Python call only this.

use faer::{Mat, MatRef};

use super::link::{blocks_by_input_block, class_probabilities, diagonals, Link, Predictive};
use super::{HessianStructure, PriorPrecision, Subset};
use crate::error::{Error, Result, Warning};
use crate::likelihood::LikelihoodKind;
use crate::nn::Network;
use crate::progress::Progress;
use crate::train::model::Model;

/// A Gaussian posterior `N(μ, Σ)` over a network's weights (all, or a subset) and what it
/// gives, in the shape of laplace-torch's `BaseLaplace`. The structures (full, diag, kron,
/// lowrank) and subsets (all, last layer) are members; the command line and the examples call
/// only this.
pub trait Posterior {
    /// The model: network, `μ = w*`, likelihood, σ, δ.
    fn model(&self) -> &Model;

    /// The curvature structure.
    fn structure(&self) -> HessianStructure;

    /// The prior precision the posterior is at (one δ unless a structure holds one per tensor).
    fn prior(&self) -> PriorPrecision {
        PriorPrecision::Scalar(self.model().delta)
    }

    /// The numerical events of the fit (jitter added, eigenvalues floored), for warnings.
    fn warnings(&self) -> Vec<Warning> {
        Vec::new()
    }

    /// The weights the posterior covers.
    fn subset(&self) -> Subset {
        Subset::All
    }

    /// The stacked Jacobians `∂f(x_m)/∂θ` (MK × P_θ) with respect to the weights θ the
    /// posterior covers.
    fn jacobian(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let m = self.model();
        m.net.jacobian(&m.w, x)
    }

    /// The Laplace evidence `log p(D) ≈ log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|A|` at
    /// prior precision `delta` and Gaussian noise `sigma` (`None`: the fitted values), from one
    /// fit: laplace-torch's `log_marginal_likelihood(prior_precision, sigma_noise)`.
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64>;

    /// `Σ v` (v over the covered weights).
    fn covariance_times(&self, v: &[f64]) -> Vec<f64>;

    /// The K×K blocks `J_m Σ J_mᵀ` for stacked Jacobians `J` (MK×P), row-major.
    fn covariance_blocks(&self, jac: MatRef<'_, f64>) -> Vec<f64>;

    /// `J_a Σ J_bᵀ` for stacked Jacobians.
    fn covariance_between(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64>;

    /// `n` draws `w ~ N(μ, Σ)` from `seed` (laplace-torch's `sample`), each a full weight
    /// vector (weights outside the subset at `w*`).
    fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f64>>;

    /// The functional covariance: K×K blocks `J(x_m) Σ J(x_m)ᵀ` at the rows of `x`, row-major
    /// (M·K·K), a block of inputs at a time (at most 256 MiB of Jacobian).
    fn functional_covariance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        self.outputs_and_covariance(x, false, None).1
    }

    /// The outputs `f_{w*}(x)` (M×K; when `outputs`, else 0×0) and the functional covariance at
    /// the rows of `x`, a block of inputs at a time; `progress` advances by the inputs done.
    fn outputs_and_covariance(
        &self,
        x: MatRef<'_, f64>,
        outputs: bool,
        progress: Option<&dyn Progress>,
    ) -> (Mat<f64>, Vec<f64>) {
        let m = self.model();
        let p = self.jacobian(x.subrows(0, x.nrows().min(1))).ncols();
        let cov = blocks_by_input_block(
            (m.net.n_outputs(), p),
            x,
            &|x| self.jacobian(x),
            &|j| self.covariance_blocks(j),
            progress,
        );
        let f = if outputs {
            crate::nn::predict(&m.net, &m.w, x)
        } else {
            Mat::zeros(0, 0)
        };
        (f, cov)
    }

    /// The functional variance `diag J(x) Σ J(x)ᵀ` (M·K, row `m·K + k`).
    fn functional_variance(&self, x: MatRef<'_, f64>) -> Vec<f64> {
        diagonals(&self.functional_covariance(x), self.model().net.n_outputs())
    }

    /// The posterior kernel `κ(x, x') = J(x) Σ J(x')ᵀ` (M_aK × M_bK).
    fn kernel(&self, xa: MatRef<'_, f64>, xb: MatRef<'_, f64>) -> Mat<f64> {
        let (ja, jb) = (self.jacobian(xa), self.jacobian(xb));
        self.covariance_between(ja.as_ref(), jb.as_ref())
    }

    /// The GLM predictive at the rows of `x`: the mean `f_{w*}(x)`, the functional covariance,
    /// σ² for the Gaussian, and class probabilities by `link` for the Bernoulli and the
    /// categorical (one Bernoulli logit f is the softmax of `[0, f]`).
    fn predict(&self, x: MatRef<'_, f64>, link: Link) -> Result<Predictive> {
        self.predict_with(x, link, None)
    }

    /// [`Posterior::predict`], `progress` advancing by the inputs done.
    fn predict_with(
        &self,
        x: MatRef<'_, f64>,
        link: Link,
        progress: Option<&dyn Progress>,
    ) -> Result<Predictive> {
        let m = self.model();
        if x.ncols() != m.net.n_inputs() {
            return Err(Error::Invalid(format!(
                "inputs of {} columns; the network takes {}",
                x.ncols(),
                m.net.n_inputs()
            )));
        }
        let (mean, covariance) = self.outputs_and_covariance(x, true, progress);
        let (noise, probabilities) = match m.likelihood {
            LikelihoodKind::Gaussian => (m.sigma * m.sigma, None),
            _ => (0.0, Some(class_probabilities(&mean, &covariance, link)?)),
        };
        Ok(Predictive {
            mean,
            covariance,
            noise,
            probabilities,
        })
    }
}
