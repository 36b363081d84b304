//! One posterior interface in laplace-torch's shape ([`Posterior`], its `BaseLaplace`): the
//! model, the structure and subset, the evidence at any prior and noise, `Σ v`, the functional
//! covariance and variance at new inputs, the kernel `J(x) Σ J(x′)ᵀ`, the GLM predictive
//! through a link, and samples. [`super::Laplace`] (every structure, all weights or the last
//! layer) and [`crate::gp::FunctionSpace`] (the full posterior through the NK×NK Gram matrix)
//! implement it; the command line and Python call only this.

use faer::{Mat, MatRef};

use super::link::{blocks_by_input_block, class_probabilities, diagonals, Link, Predictive};
use super::{HessianStructure, PredType, PriorPrecision, Subset};
use crate::error::{Error, Result, Warning};
use crate::likelihood::classification::softmax;
use crate::likelihood::LikelihoodKind;
use crate::linalg::sym_sqrt;
use crate::nn::Network;
use crate::progress::Progress;
use crate::rng::{normals, seeded};
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
            m.predict(x)
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
        check_inputs(m, x)?;
        let (mean, covariance) = self.outputs_and_covariance(x, true, progress);
        predictive_of(m, mean, covariance, link)
    }

    /// The network's outputs at the rows of `x` for each of `n` weight draws of
    /// [`Posterior::sample`] from `seed` (a posterior over the last layer computes the features
    /// once and runs the last layer per draw).
    fn outputs_at_draws(&self, x: MatRef<'_, f64>, n: usize, seed: u64) -> Vec<Mat<f64>> {
        let m = self.model();
        self.sample(n, seed)
            .iter()
            .map(|w| m.predict_at(w, x))
            .collect()
    }

    /// `n` draws of the outputs at the rows of `x` (laplace-torch's `functional_samples`), each
    /// M×K, from `seed`: [`PredType::Glm`] `f ~ N(f_{θ*}(x_m), J_m Σ J_mᵀ)` input by input;
    /// [`PredType::Nn`] the network `f_θ(x)` at weights `θ ~ N(θ*, Σ)`.
    fn functional_samples(
        &self,
        x: MatRef<'_, f64>,
        pred: PredType,
        n: usize,
        seed: u64,
    ) -> Result<Vec<Mat<f64>>> {
        let m = self.model();
        check_inputs(m, x)?;
        Ok(match pred {
            PredType::Nn => self.outputs_at_draws(x, n, seed),
            PredType::Glm => {
                let (f, cov) = self.outputs_and_covariance(x, true, None);
                let k = f.ncols();
                let roots: Vec<Mat<f64>> = cov
                    .chunks(k * k)
                    .map(|b| sym_sqrt(Mat::from_fn(k, k, |r, c| b[r * k + c]).as_ref()))
                    .collect();
                let mut rng = seeded(seed);
                (0..n)
                    .map(|_| {
                        let mut draw = f.clone();
                        for (i, root) in roots.iter().enumerate() {
                            let z = normals(&mut rng, k);
                            for r in 0..k {
                                draw[(i, r)] += (0..k).map(|c| root[(r, c)] * z[c]).sum::<f64>();
                            }
                        }
                        draw
                    })
                    .collect()
            }
        })
    }

    /// The predictive of the network at `samples` weight draws from `seed` (laplace-torch's
    /// `pred_type="nn"`): the draws' mean outputs and K×K sample covariances (divisor
    /// `samples − 1`), and for classification the mean of their softmax (one Bernoulli logit:
    /// of `[0, f]`).
    fn predict_nn(&self, x: MatRef<'_, f64>, samples: usize, seed: u64) -> Result<Predictive> {
        if samples < 2 {
            return Err(Error::option(
                "samples",
                "the network's predictive needs at least two weight draws",
            ));
        }
        let draws = self.functional_samples(x, PredType::Nn, samples, seed)?;
        let (rows, k) = (x.nrows(), self.model().net.n_outputs());
        let s = samples as f64;
        let m = self.model();
        let classes = match m.likelihood {
            LikelihoodKind::Gaussian => 0,
            _ if k == 1 => 2,
            _ => k,
        };
        // Per input: the draws' sum, their outer products' sum and their softmax's sum.
        let (mut sum, mut outer, mut p) = (
            vec![0.0; rows * k],
            vec![0.0; rows * k * k],
            vec![0.0; rows * classes],
        );
        let mut f = vec![0.0; k];
        for d in &draws {
            for i in 0..rows {
                (0..k).for_each(|a| f[a] = d[(i, a)]);
                sum[i * k..(i + 1) * k]
                    .iter_mut()
                    .zip(&f)
                    .for_each(|(t, v)| *t += v);
                let o = &mut outer[i * k * k..(i + 1) * k * k];
                for (a, fa) in f.iter().enumerate() {
                    o[a * k..(a + 1) * k]
                        .iter_mut()
                        .zip(&f)
                        .for_each(|(t, v)| *t += fa * v);
                }
                if classes > 0 {
                    let sm = if k == 1 {
                        softmax(&[0.0, f[0]])
                    } else {
                        softmax(&f)
                    };
                    p[i * classes..(i + 1) * classes]
                        .iter_mut()
                        .zip(sm)
                        .for_each(|(t, v)| *t += v / s);
                }
            }
        }
        let mean = Mat::from_fn(rows, k, |i, a| sum[i * k + a] / s);
        // The sample covariance `(Σ f fᵀ − s f̄ f̄ᵀ)/(s − 1)`.
        let covariance = (0..rows * k * k)
            .map(|j| {
                let (i, a, b) = (j / (k * k), j / k % k, j % k);
                (outer[j] - s * mean[(i, a)] * mean[(i, b)]) / (s - 1.0)
            })
            .collect();
        let (noise, probabilities) = match classes {
            0 => (m.sigma * m.sigma, None),
            c => (0.0, Some(Mat::from_fn(rows, c, |i, a| p[i * c + a]))),
        };
        Ok(Predictive {
            mean,
            covariance,
            noise,
            probabilities,
        })
    }
}

/// Refuses inputs whose columns are not the network's inputs.
pub(crate) fn check_inputs(m: &Model, x: MatRef<'_, f64>) -> Result<()> {
    if x.ncols() != m.net.n_inputs() {
        return Err(Error::Invalid(format!(
            "inputs of {} columns; the network takes {}",
            x.ncols(),
            m.net.n_inputs()
        )));
    }
    Ok(())
}

/// The predictive of the outputs `mean` and their covariance blocks: σ² added for the Gaussian,
/// class probabilities by `link` for the Bernoulli and the categorical.
pub(crate) fn predictive_of(
    m: &Model,
    mean: Mat<f64>,
    covariance: Vec<f64>,
    link: Link,
) -> Result<Predictive> {
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
