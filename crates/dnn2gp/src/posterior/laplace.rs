//! The Laplace-GGN posterior of a model on its training data ([`Laplace`]): laplace-torch's
//! `Laplace(model, likelihood, subset_of_weights="all" | "last_layer", hessian_structure=…)`
//! after `fit`. It holds the model, the GGN in its structure ([`super::structure`]), the
//! factorised posterior at the current prior ([`LaplaceGgn`]) and the data terms of the
//! evidence; the evidence, the prior and noise searches and the files are in the files beside
//! this one.

use faer::{Mat, MatRef};

use super::base::Posterior;
use super::base::{check_inputs, predictive_of};
use super::curvature::{Curvature, DataTerms, FitOptions};
use super::last_layer::{covered_network, Cover, LastLayer};
use super::link::{inputs_per_block, Link, Predictive};
use super::structure::GgnStructure;
use super::weight_posterior::LaplaceGgn;
use super::{HessianStructure, PriorDiagonal, PriorPrecision, Subset};
use crate::curvature::kron::factored_covariance_blocks;
use crate::error::{Error, Result};
use crate::nn::{Dtype, Graph, Network};
use crate::progress::Progress;
use crate::rng::seeded;
use crate::train::model::Model;

/// The Laplace-GGN posterior `N(θ*, (H + D)⁻¹)` of a model over all its weights or its last
/// layer, H in one of the structures.
#[derive(Debug, Clone)]
pub struct Laplace {
    pub(crate) model: Model,
    /// What it covers: all weights, the last layer, or chosen weights.
    pub(crate) cover: Cover,
    /// The GGN over the covered weights, in its structure.
    pub(crate) ggn: Box<dyn GgnStructure>,
    /// The posterior at the current prior.
    pub(crate) posterior: LaplaceGgn,
    /// The data terms of the evidence.
    pub(crate) data: DataTerms,
    /// The prior precision the posterior is at.
    pub(crate) prior: PriorPrecision,
    /// The temperature T: the posterior is `N(θ*, (H/T + D)⁻¹)` and the evidence's data fit
    /// `log p(D | θ*)/T` (laplace-torch's `temperature`; 1 is the posterior itself).
    pub(crate) temperature: f64,
}

impl Laplace {
    /// Fits the posterior of `model` on its training data `(X, Y)` (targets in the
    /// likelihood's form) over all weights: see [`Laplace::fit_subset`].
    pub fn fit(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        opts: &FitOptions<'_>,
    ) -> Result<Self> {
        Self::fit_subset(model, x, y, structure, Subset::All, opts)
    }

    /// Fits the posterior over `subset` of the weights: the full GGN from the stacked
    /// Jacobians (memory checked first), its diagonal streamed without forming J, its KFAC
    /// factors streamed layer by layer, or its top eigenpairs matrix-free. For the last layer,
    /// the network below is run once to give the features φ(x) and the GGN is that of the last
    /// layer on them.
    pub fn fit_subset(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        subset: Subset,
        opts: &FitOptions<'_>,
    ) -> Result<Self> {
        let c = Self::curvature_of(&model, x, y, structure, subset, opts)?;
        Self::from_curvature_unchecked(model, c)
    }

    /// The posterior of `model` from the statistics of its whole training data
    /// ([`Laplace::curvature`], summed over chunks); the statistics must be of this model's
    /// network (their shapes are checked).
    pub fn from_curvature(model: Model, c: Curvature) -> Result<Self> {
        let fits = match c.subset {
            Subset::Subnetwork => {
                let p = c.ggn.tensors().first().map_or(0, |(_, s, _)| s[0]);
                p == c.indices.len() && c.indices.iter().all(|i| *i < model.w.len())
            }
            subset => c.ggn.fits(&covered_network(&model.net, subset)?),
        };
        if !fits {
            return Err(Error::Invalid(format!(
                "the curvature's shapes are not those of a {} posterior over the {} of {}",
                c.structure(),
                c.subset,
                model.net.spec()
            )));
        }
        Self::from_curvature_unchecked(model, c)
    }

    fn from_curvature_unchecked(model: Model, c: Curvature) -> Result<Self> {
        let cover = match c.subset {
            Subset::Subnetwork => Cover::weights(c.indices, model.w.len())?,
            subset => Cover::of_subset(&model.net, subset)?,
        };
        Self::assemble(model, cover, c.ggn, c.data)
    }

    /// Fits the posterior over the weights at `indices` of `w` (laplace-torch's subnetwork
    /// Laplace), the rest held at `w*`: the full GGN `Σ_i J_{i,S}ᵀ Λ_i J_{i,S}` of the chosen
    /// columns S of the Jacobian, or its diagonal.
    pub fn fit_subnetwork(
        model: Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        indices: Vec<usize>,
        opts: &FitOptions<'_>,
    ) -> Result<Self> {
        let c = Self::curvature_subnetwork(&model, x, y, structure, indices, opts)?;
        Self::from_curvature_unchecked(model, c)
    }

    /// A diagonal Gaussian `N(w, diag(p)⁻¹)` over all the model's weights (VOGN's `q` at its
    /// mean) as a posterior whose curvature is `H = diag(p) − δI`: its predictive, samples and
    /// file are a Laplace posterior's, its data terms those of the model on `(X, Y)`.
    pub fn from_diagonal_precision(
        model: Model,
        precision: &[f64],
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
    ) -> Result<Self> {
        if precision.len() != model.w.len() {
            return Err(Error::Invalid(format!(
                "a diagonal precision of {} values for {} weights",
                precision.len(),
                model.w.len()
            )));
        }
        if let Some(i) = precision.iter().position(|p| !(p.is_finite() && *p > 0.0)) {
            return Err(Error::Invalid(format!(
                "precision {i} is {}, not a positive number",
                precision[i]
            )));
        }
        let lik = model.likelihood()?;
        let data = DataTerms::of(lik.as_ref(), model.predict(x).as_ref(), y);
        let h = precision.iter().map(|p| p - model.delta).collect();
        Self::assemble(
            model,
            Cover::All,
            Box::new(super::structure::Diag::new(h)),
            data,
        )
    }

    /// The posterior at the model's δ from the GGN of the covered weights.
    pub(crate) fn assemble(
        model: Model,
        cover: Cover,
        mut ggn: Box<dyn GgnStructure>,
        data: DataTerms,
    ) -> Result<Self> {
        ggn.adopt(match &cover {
            Cover::LastLayer(ll) => &ll.head,
            _ => &model.net,
        });
        let mean = cover.take(&model.w);
        let tensors = cover.prior_tensors(&model.net).len();
        let delta = model.delta;
        let posterior = ggn.posterior(
            mean.clone(),
            PriorDiagonal {
                per_parameter: &vec![delta; mean.len()],
                per_tensor: &vec![delta; tensors],
            },
            1.0,
        )?;
        Ok(Laplace {
            model,
            cover,
            ggn,
            posterior,
            data,
            prior: PriorPrecision::Scalar(delta),
            temperature: 1.0,
        })
    }

    /// The functional covariance at the rows of `x`, a block of inputs at a time, and the
    /// outputs when asked. Structures whose covariance is diagonal in a per-layer basis (KFAC,
    /// diagonal): from the per-layer Jacobian factors
    /// ([`crate::curvature::kron::factored_covariance_blocks`]), without forming J; full and
    /// low rank through J. The last layer's features are computed once per block.
    fn covariance_by_input_block(
        &self,
        x: MatRef<'_, f64>,
        outputs: bool,
        progress: Option<&dyn Progress>,
    ) -> (Mat<f64>, Vec<f64>) {
        self.blocks(x, outputs, progress, false)
    }

    /// [`Laplace::covariance_by_input_block`] at the rows of `x`, or (`features`) at the last
    /// layer's features given in `x`.
    fn blocks(
        &self,
        x: MatRef<'_, f64>,
        outputs: bool,
        progress: Option<&dyn Progress>,
        features: bool,
    ) -> (Mat<f64>, Vec<f64>) {
        let (sub, w) = self.covered();
        let k = sub.n_outputs();
        let layers = match self.cover {
            Cover::Weights(_) => None,
            _ => self.ggn.layer_variances(&self.posterior, sub),
        };
        let rows = inputs_per_block(k, sub.n_params(), x.nrows());
        let mut f = Mat::zeros(if outputs { x.nrows() } else { 0 }, k);
        let cov = (0..x.nrows())
            .step_by(rows)
            .flat_map(|s| {
                let xb = x.subrows(s, rows.min(x.nrows() - s));
                let mut run = |inputs: MatRef<'_, f64>| {
                    if outputs {
                        f.as_mut()
                            .subrows_mut(s, xb.nrows())
                            .copy_from(crate::nn::predict_in(sub, w, inputs, self.model.dtype));
                    }
                    match &layers {
                        Some(l) => factored_covariance_blocks(&sub.jacobian_factors(w, inputs), l),
                        None => self.covariance_blocks(self.covered_jacobian(inputs).as_ref()),
                    }
                };
                let blocks = if features {
                    run(xb)
                } else {
                    self.with_inputs(xb, run)
                };
                if let Some(pb) = progress {
                    pb.advance(xb.nrows() as u64);
                }
                blocks
            })
            .collect();
        (f, cov)
    }

    /// The network the posterior's Jacobian is taken of (the last layer alone, or all of it)
    /// and its weights.
    fn covered(&self) -> (&Graph, &[f64]) {
        match &self.cover {
            Cover::LastLayer(ll) => (&ll.head, &self.model.w[ll.offset..]),
            _ => (&self.model.net, &self.model.w),
        }
    }

    /// `f` of the covered network's inputs at `x`: x itself, or the features φ(x).
    fn with_inputs<R>(&self, x: MatRef<'_, f64>, f: impl FnOnce(MatRef<'_, f64>) -> R) -> R {
        match &self.cover {
            Cover::LastLayer(ll) => f(ll.features(&self.model.w, x, self.model.dtype).as_ref()),
            _ => f(x),
        }
    }

    /// The stacked Jacobians at the covered network's inputs `x` with respect to the covered
    /// weights (a subnetwork's columns of the whole network's).
    fn covered_jacobian(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let (sub, w) = self.covered();
        let j = sub.jacobian(w, x);
        match &self.cover {
            Cover::Weights(idx) => Mat::from_fn(j.nrows(), idx.len(), |r, c| j[(r, idx[c])]),
            _ => j,
        }
    }

    /// The fitted weight-space posterior over the covered weights (its factor, jitter,
    /// warnings).
    pub fn weight_posterior(&self) -> &LaplaceGgn {
        &self.posterior
    }

    /// The GGN over the covered weights, in its structure.
    pub fn ggn(&self) -> &dyn GgnStructure {
        self.ggn.as_ref()
    }

    /// The data terms of the evidence.
    pub fn data_terms(&self) -> DataTerms {
        self.data
    }

    /// `−log p(D | θ*)` at noise σ (`None`: the fitted one), divided by the temperature.
    pub fn neg_log_likelihood(&self, sigma: Option<f64>) -> Result<f64> {
        Ok(self.nll_at(sigma)?.0)
    }

    /// The last layer's inputs φ(x) at the rows of `x` (a last-layer posterior only): computed
    /// once, they serve [`Laplace::predict_at_features`] at every prior.
    pub fn last_layer_features(&self, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
        let ll = self.last_layer()?;
        check_inputs(&self.model, x)?;
        Ok(ll.features(&self.model.w, x, self.model.dtype))
    }

    /// The last-layer split, or why a posterior of another cover has no features.
    fn last_layer(&self) -> Result<&LastLayer> {
        match &self.cover {
            Cover::LastLayer(ll) => Ok(ll),
            _ => Err(Error::Invalid(format!(
                "features are a last-layer posterior's; this one covers {}",
                self.cover.subset().weights()
            ))),
        }
    }

    /// The GLM predictive of a last-layer posterior at the last layer's inputs φ (rows of
    /// [`Laplace::last_layer_features`]): the same as [`Posterior::predict`] at the inputs
    /// they came from.
    pub fn predict_at_features(&self, phi: MatRef<'_, f64>, link: Link) -> Result<Predictive> {
        let ll = self.last_layer()?;
        if phi.ncols() != ll.head.n_inputs() {
            return Err(Error::Invalid(format!(
                "features of {} columns; the last layer takes {}",
                phi.ncols(),
                ll.head.n_inputs()
            )));
        }
        let (mean, covariance) = self.blocks(phi, true, None, true);
        predictive_of(&self.model, mean, covariance, link)
    }

    /// A subnetwork's weights (their indices in `w`, in the posterior's order); empty for the
    /// other covers.
    pub fn subnetwork_indices(&self) -> &[usize] {
        match &self.cover {
            Cover::Weights(idx) => idx,
            _ => &[],
        }
    }

    /// The temperature T of `N(θ*, (H/T + D)⁻¹)`.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// The scalar type of its forward passes from now on (outputs, features, the network at
    /// weight draws); the posterior is unchanged.
    pub fn set_dtype(&mut self, dtype: Dtype) {
        self.model.dtype = dtype;
    }

    /// Refits the posterior at temperature T from the same curvature (no data pass): H scaled
    /// by `T_old/T`, at the same prior.
    pub fn set_temperature(&mut self, temperature: f64) -> Result<()> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::option(
                "temperature",
                format!("must be a positive number, got {temperature}"),
            ));
        }
        let ggn = self.ggn.scaled(self.temperature / temperature);
        let d = self.per_tensor(&self.prior)?;
        let old = std::mem::replace(&mut self.ggn, ggn);
        match self.posterior_at(&d) {
            Ok(p) => {
                self.posterior = p;
                self.temperature = temperature;
                Ok(())
            }
            Err(e) => {
                self.ggn = old;
                Err(e)
            }
        }
    }
}

impl Posterior for Laplace {
    fn model(&self) -> &Model {
        &self.model
    }

    fn structure(&self) -> HessianStructure {
        self.ggn.kind()
    }

    fn prior(&self) -> PriorPrecision {
        self.prior.clone()
    }

    fn warnings(&self) -> Vec<crate::error::Warning> {
        self.posterior.warnings()
    }

    fn subset(&self) -> Subset {
        self.cover.subset()
    }

    /// For the last layer: the head's Jacobian at the features, `I_K ⊗ [φ(x)ᵀ, 1]`; for a
    /// subnetwork the chosen columns.
    fn jacobian(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        self.with_inputs(x, |x| self.covered_jacobian(x))
    }

    /// The last layer's features are computed once per block of inputs for both.
    fn outputs_and_covariance(
        &self,
        x: MatRef<'_, f64>,
        outputs: bool,
        progress: Option<&dyn Progress>,
    ) -> (Mat<f64>, Vec<f64>) {
        self.covariance_by_input_block(x, outputs, progress)
    }

    /// At another σ: the data term at σ′ and H scaled by `σ²/σ′²`.
    /// `delta = None`: at the posterior's prior (one δ, or δ_g per tensor).
    fn log_marginal_likelihood(&self, delta: Option<f64>, sigma: Option<f64>) -> Result<f64> {
        let prior = delta.map_or_else(|| self.prior.clone(), PriorPrecision::Scalar);
        self.log_marginal_likelihood_at(&prior, sigma)
    }

    fn covariance_times(&self, v: &[f64]) -> Vec<f64> {
        self.posterior.covariance_times(v)
    }

    fn covariance_blocks(&self, jac: MatRef<'_, f64>) -> Vec<f64> {
        self.posterior
            .functional_covariance_blocks(jac, self.model.net.n_outputs())
    }

    fn covariance_between(&self, ja: MatRef<'_, f64>, jb: MatRef<'_, f64>) -> Mat<f64> {
        self.posterior.kernel(ja, jb)
    }

    /// The last layer's: the features `φ̃ = [φ(x), 1]` once and every draw's `W̃ = [W, b]` in
    /// one product `φ̃ [W̃_1; …; W̃_n]ᵀ` (the same draws as [`Posterior::sample`]).
    fn outputs_at_draws(&self, x: MatRef<'_, f64>, n: usize, seed: u64) -> Vec<Mat<f64>> {
        let draws = self.posterior.sample(n, &mut seeded(seed));
        let Cover::LastLayer(ll) = &self.cover else {
            return (draws.iter())
                .map(|d| {
                    self.model
                        .predict_at(&self.cover.place(&self.model.w, d), x)
                })
                .collect();
        };
        let phi = ll.features(&self.model.w, x, self.model.dtype);
        let (rows, d, k) = (phi.nrows(), phi.ncols(), self.model.net.n_outputs());
        let phi1 = Mat::from_fn(rows, d + 1, |i, j| if j < d { phi[(i, j)] } else { 1.0 });
        // Row s·K + o of the stack: output o's weights of draw s, then its bias.
        let stack = Mat::from_fn(n * k, d + 1, |r, j| {
            let (s, o) = (r / k, r % k);
            if j < d {
                draws[s][o * d + j]
            } else {
                draws[s][k * d + o]
            }
        });
        let out = crate::linalg::a_bt(phi1.as_ref(), stack.as_ref());
        (0..n)
            .map(|s| Mat::from_fn(rows, k, |i, o| out[(i, s * k + o)]))
            .collect()
    }

    fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f64>> {
        self.posterior
            .sample(n, &mut seeded(seed))
            .iter()
            .map(|draw| self.cover.place(&self.model.w, draw))
            .collect()
    }
}
