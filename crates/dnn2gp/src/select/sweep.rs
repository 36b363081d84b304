//! The sweep protocol of the paper (section 3 of the math reference): for each value on a
//! grid, retrain `w*` from the same initialisation, linearise, and evaluate the GP log marginal
//! likelihood, the train MSE and the test MSE of the network.

use crate::progress::Progress;
use rayon::prelude::*;

use crate::curvature::Linearization;
use crate::data::Split;
use crate::error::{Error, Result, Warning};
use crate::gp::variational::converged_linearizations;
use crate::gp::{Dnn2Gp, Space};
use crate::likelihood::Gaussian;
use crate::nn::{Activation, Network, Sequential};
use crate::train::vogn::{self, VognConfig};
use crate::train::{fit_map, is_stationary as stationary, MapConfig, Objective, STATIONARY_RTOL};

crate::words! {
    /// How the posterior of each fit is obtained.
    pub enum Method("method") {
        /// MAP by Adam + polish, then Laplace-GGN (DNN2GP-Laplace).
        Laplace = ["laplace"],
        /// VOGN, then the converged GP at samples of q (DNN2GP-VI).
        Vi = ["vi"],
    }
}

crate::words! {
    /// The hyperparameter swept.
    pub enum SweepParam("sweep parameter") {
        /// Prior precision δ.
        Delta = ["delta"],
        /// Noise standard deviation σ.
        Sigma = ["sigma"],
        /// Width of every hidden layer.
        Width = ["width"],
    }
}

impl SweepParam {
    /// The symbol used in titles: δ, σ or width.
    pub fn symbol(self) -> &'static str {
        match self {
            SweepParam::Delta => "δ",
            SweepParam::Sigma => "σ",
            SweepParam::Width => "width",
        }
    }
}

/// What is swept and the fixed settings.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    /// The parameter swept.
    pub param: SweepParam,
    /// Its values.
    pub values: Vec<f64>,
    /// Hidden widths (replaced by the swept width for `Width`).
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// δ when not swept.
    pub delta: f64,
    /// σ when not swept.
    pub sigma: f64,
    /// Laplace or VI.
    pub method: Method,
    /// MAP training settings (Laplace).
    pub map: MapConfig,
    /// VOGN settings (VI).
    pub vogn: VognConfig,
    /// Samples of q at which the converged VI GP is linearised; its −log marglik is averaged
    /// over them (0: linearised at the mean).
    pub vi_gp_samples: usize,
    /// Seed of the shared initialisation.
    pub init_seed: u64,
    /// Space of the GP computations.
    pub space: Space,
    /// Memory limit in bytes.
    pub memory_limit: u128,
}

/// One value on one data set (or the mean over sets).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SweepPoint {
    /// The swept value.
    pub value: f64,
    /// `−log p(ỹ)` of the GP.
    pub neg_log_marglik: f64,
    /// The paper's Laplace form, `−log p(ỹ) + ½ gᵀA⁻¹g` (equal at a stationary point; for VI
    /// `g = Jᵀr + δμ` at the samples).
    pub laplace_neg_log_marglik: f64,
    /// Mean squared error of `f_{w*}` on the training set (target units).
    pub train_mse: f64,
    /// Mean squared error of `f_{w*}` on the test set (target units).
    pub test_mse: f64,
    /// `‖∇L‖` at `w*` (Laplace) or at `μ` (VI).
    pub grad_norm: f64,
    /// `‖∇L‖` relative to its scale ([`crate::train::Stationarity`]); above
    /// [`crate::train::STATIONARY_RTOL`] the fit is not stationary.
    pub grad_rel: f64,
}

impl SweepPoint {
    /// `½ gᵀA⁻¹g`, the gap between the two evidences (0 at a stationary point).
    pub fn stationarity_gap(&self) -> f64 {
        self.laplace_neg_log_marglik - self.neg_log_marglik
    }
}

/// All points of a sweep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepResult {
    /// The parameter swept.
    pub param: SweepParam,
    /// How each posterior was obtained.
    pub method: Method,
    /// Per data set: its name and one point per value.
    pub per_set: Vec<(String, Vec<SweepPoint>)>,
    /// Means over the data sets.
    pub mean: Vec<SweepPoint>,
}

impl SweepResult {
    /// The mean point minimising `key`.
    pub fn argmin(&self, key: impl Fn(&SweepPoint) -> f64) -> SweepPoint {
        self.mean[self.argmin_index(key)]
    }

    /// The index of the mean point minimising `key`.
    pub fn argmin_index(&self, key: impl Fn(&SweepPoint) -> f64) -> usize {
        (0..self.mean.len())
            .min_by(|&a, &b| key(&self.mean[a]).total_cmp(&key(&self.mean[b])))
            .expect("non-empty sweep")
    }

    /// The warnings of a sweep: Laplace fits that are not stationary (the rule of
    /// [`crate::train::Stationarity`]; VOGN's mean is a stationary point of the expected loss,
    /// not of `L`, so VI fits are not judged by it), and a −log marglik minimum at an end of
    /// the grid.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        let bad: Vec<(&str, &SweepPoint)> = self
            .per_set
            .iter()
            .flat_map(|(name, pts)| pts.iter().map(move |p| (name.as_str(), p)))
            .filter(|(_, p)| self.method == Method::Laplace && !stationary(p.grad_rel))
            .collect();
        if let Some((set, worst)) = bad
            .iter()
            .max_by(|a, b| a.1.grad_rel.total_cmp(&b.1.grad_rel))
        {
            let fits: usize = self.per_set.iter().map(|(_, p)| p.len()).sum();
            out.push(Warning::new(
                crate::train::NOT_STATIONARY,
                format!(
                    "{} of {fits} fits did not reach a stationary point (‖∇L‖ above \
                     {STATIONARY_RTOL:.0e} of its scale ‖Σ J_i'r_i‖ + δ‖w*‖; the worst, {} = {} \
                     on {set}: ‖∇L‖ = {:.3e}, {:.2e} of its scale, ½gᵀA⁻¹g = {:.3e} nats). Their \
                     marginal likelihoods are not reliable: see the grad_rel and \
                     stationarity_gap columns",
                    bad.len(),
                    self.param,
                    worst.value,
                    worst.grad_norm,
                    worst.grad_rel,
                    worst.stationarity_gap()
                ),
            ));
        }
        let i = self.argmin_index(|p| p.neg_log_marglik);
        if self.mean.len() > 1 && (i == 0 || i + 1 == self.mean.len()) {
            out.push(Warning::new(
                "minimum_at_grid_edge",
                format!(
                    "−log marglik is smallest at {} = {}, the {} end of the grid: the optimum may \
                     lie beyond it; extend the grid",
                    self.param,
                    self.mean[i].value,
                    if i == 0 { "lower" } else { "upper" }
                ),
            ));
        }
        out
    }
}

fn mse(net: &Sequential, w: &[f64], d: &crate::data::Dataset, scale: f64) -> f64 {
    let f = net.forward(w, d.x.as_ref());
    let n = (f.nrows() * f.ncols()) as f64;
    let se: f64 = (0..f.nrows())
        .flat_map(|i| (0..f.ncols()).map(move |k| (i, k)))
        .map(|(i, k)| (f[(i, k)] - d.y[(i, k)]).powi(2))
        .sum();
    se / n * scale * scale
}

/// Trains and evaluates one value on one split.
pub fn evaluate(spec: &SweepSpec, split: &Split, value: f64) -> Result<SweepPoint> {
    let (mut delta, mut sigma, mut hidden) = (spec.delta, spec.sigma, spec.hidden.clone());
    match spec.param {
        SweepParam::Delta => delta = value,
        SweepParam::Sigma => sigma = value,
        SweepParam::Width => {
            if value < 1.0 || value.fract() != 0.0 {
                return Err(Error::Invalid(format!(
                    "width {value} is not a positive integer"
                )));
            }
            hidden.iter_mut().for_each(|h| *h = value as usize);
        }
    }
    let mut sizes = vec![split.train.x.ncols()];
    sizes.extend(hidden);
    sizes.push(split.train.y.ncols());
    let net = Sequential::mlp(sizes, spec.activation)?;
    let lik = Gaussian::new(sigma)?;
    let obj = Objective::on(&net, &lik, &split.train, delta);
    let w0 = net.init(spec.init_seed);
    let (w, lins) = match spec.method {
        Method::Laplace => {
            let fit = fit_map(&obj, &w0, &spec.map, None)?;
            let lin = Linearization::new(&net, &lik, obj.x, obj.y, &fit.w);
            (fit.w, vec![lin])
        }
        Method::Vi => {
            let q = vogn::run(&obj, &w0, &spec.vogn, None)?.state;
            let lins = converged_linearizations(
                &net,
                &lik,
                obj.x,
                obj.y,
                &q.mu,
                &q.precision,
                spec.vi_gp_samples,
                spec.vogn.seed,
            );
            (q.mu, lins)
        }
    };
    // Mean over the linearisations (one for Laplace) of −log p(ỹ) and of the gap.
    let (mut nlml, mut gap) = (0.0, 0.0);
    for lin in &lins {
        let gp = Dnn2Gp::new(lin, delta, spec.space, spec.memory_limit)?;
        nlml -= gp.log_marginal_likelihood()? / lins.len() as f64;
        gap += gp.stationarity_gap() / lins.len() as f64;
    }
    let st = obj.stationarity(&w);
    Ok(SweepPoint {
        value,
        neg_log_marglik: nlml,
        laplace_neg_log_marglik: nlml + gap,
        train_mse: mse(&net, &w, &split.train, split.y_scale),
        test_mse: mse(&net, &w, &split.test, split.y_scale),
        grad_norm: st.grad_norm,
        grad_rel: st.relative,
    })
}

/// Runs the sweep over all splits in parallel; `progress` ticks once per (split, value).
pub fn run_sweep(
    spec: &SweepSpec,
    splits: &[Split],
    progress: Option<&dyn Progress>,
) -> Result<SweepResult> {
    if spec.values.is_empty() || splits.is_empty() {
        return Err(Error::Invalid(
            "a sweep needs at least one value and one data set".into(),
        ));
    }
    let width = spec.param == SweepParam::Width;
    if let Some(v) =
        (spec.values.iter()).find(|v| !(v.is_finite() && **v > 0.0) || (width && v.fract() != 0.0))
    {
        return Err(Error::Invalid(format!(
            "{} = {v}: every swept value must be a positive {}",
            spec.param,
            if width { "integer" } else { "number" }
        )));
    }
    let jobs: Vec<(usize, usize)> = (0..splits.len())
        .flat_map(|s| (0..spec.values.len()).map(move |v| (s, v)))
        .collect();
    let points: Vec<SweepPoint> = jobs
        .par_iter()
        .map(|&(s, v)| {
            let p = evaluate(spec, &splits[s], spec.values[v]);
            if let Some(pb) = progress {
                pb.advance(1);
            }
            p
        })
        .collect::<Result<_>>()?;
    let nv = spec.values.len();
    let per_set: Vec<(String, Vec<SweepPoint>)> = splits
        .iter()
        .enumerate()
        .map(|(s, sp)| (sp.name.clone(), points[s * nv..(s + 1) * nv].to_vec()))
        .collect();
    let ns = splits.len() as f64;
    let mean = (0..nv)
        .map(|v| {
            let avg =
                |f: fn(&SweepPoint) -> f64| per_set.iter().map(|(_, p)| f(&p[v])).sum::<f64>() / ns;
            SweepPoint {
                value: spec.values[v],
                neg_log_marglik: avg(|p| p.neg_log_marglik),
                laplace_neg_log_marglik: avg(|p| p.laplace_neg_log_marglik),
                train_mse: avg(|p| p.train_mse),
                test_mse: avg(|p| p.test_mse),
                grad_norm: avg(|p| p.grad_norm),
                grad_rel: avg(|p| p.grad_rel),
            }
        })
        .collect();
    Ok(SweepResult {
        param: spec.param,
        method: spec.method,
        per_set,
        mean,
    })
}
