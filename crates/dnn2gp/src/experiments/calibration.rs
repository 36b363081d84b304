//! Calibration of class probabilities, as Laplace Redux (Daxberger et al. 2021) reports it:
//! accuracy, NLL, ECE over equal-width confidence bins, Brier score and mean confidence on a
//! test set; reliability diagrams; out-of-distribution detection by the maximum probability
//! (AUROC, FPR at 95% TPR); and the rotated-MNIST shift (images rotated about their centre).

use std::time::Instant;

use faer::{Mat, MatRef};

use crate::error::{Error, Result, Warning};
use crate::likelihood::classification::softmax;
use crate::nn::Graph;
use crate::posterior::{
    FitOptions, HessianStructure, Laplace, Link, Posterior, PredType, PriorPrecision,
    PriorStructure, Subset,
};
use crate::train::model::Model;

/// Confidence bins of the ECE (Laplace Redux's and laplace-torch's 15).
pub const ECE_BINS: usize = 15;

/// Calibration metrics of class probabilities against labels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Fraction of arg-max predictions equal to the label.
    pub acc: f64,
    /// Mean `−log p_y` (probabilities floored at 1e-12).
    pub nll: f64,
    /// `Σ_b (n_b/N) |acc_b − conf_b|` over [`ECE_BINS`] equal-width bins `(lo, hi]` of the
    /// confidence `max_c p_c`.
    pub ece: f64,
    /// Mean `Σ_c (p_c − [c = y])²`.
    pub brier: f64,
    /// Mean confidence `max_c p_c`.
    pub conf: f64,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Bin {
    /// Confidence range `(lo, hi]`.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Predictions in the bin.
    pub count: usize,
    /// Their accuracy (0 when empty).
    pub accuracy: f64,
    /// Their mean confidence (0 when empty).
    pub confidence: f64,
}

/// Checks that `p` (M × C) has one row per label and every label names a column.
fn check(p: MatRef<'_, f64>, labels: &[usize]) -> Result<()> {
    if p.nrows() != labels.len() {
        return Err(Error::Invalid(format!(
            "{} rows of probabilities for {} labels",
            p.nrows(),
            labels.len()
        )));
    }
    if let Some(i) = labels.iter().position(|&y| y >= p.ncols()) {
        return Err(Error::Invalid(format!(
            "label {i} is {}, but there are {} classes",
            labels[i],
            p.ncols()
        )));
    }
    Ok(())
}

/// The arg-max class and the confidence `max_c p_c` of each row.
fn predictions(p: MatRef<'_, f64>) -> Vec<(usize, f64)> {
    (0..p.nrows())
        .map(|i| {
            (0..p.ncols()).fold((0, f64::NEG_INFINITY), |best, c| {
                if p[(i, c)] > best.1 {
                    (c, p[(i, c)])
                } else {
                    best
                }
            })
        })
        .collect()
}

/// The reliability diagram: `bins` equal-width bins `(lo, hi]` of the confidence.
pub fn reliability(p: MatRef<'_, f64>, labels: &[usize], bins: usize) -> Result<Vec<Bin>> {
    check(p, labels)?;
    let mut out: Vec<Bin> = (0..bins)
        .map(|b| Bin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: 0,
            accuracy: 0.0,
            confidence: 0.0,
        })
        .collect();
    for ((c, conf), &y) in predictions(p).into_iter().zip(labels) {
        // (lo, hi]: the bin whose upper end is the first at or above the confidence.
        let b = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        out[b].count += 1;
        out[b].accuracy += f64::from(u8::from(c == y));
        out[b].confidence += conf;
    }
    for b in &mut out {
        if b.count > 0 {
            b.accuracy /= b.count as f64;
            b.confidence /= b.count as f64;
        }
    }
    Ok(out)
}

/// [`Metrics`] of probabilities `p` (M × C, rows summing to 1) against labels.
pub fn metrics(p: MatRef<'_, f64>, labels: &[usize]) -> Result<Metrics> {
    Ok(summarise(p, labels, &reliability(p, labels, ECE_BINS)?))
}

/// [`Metrics`] from the checked probabilities and their [`ECE_BINS`] reliability bins.
fn summarise(p: MatRef<'_, f64>, labels: &[usize], bins: &[Bin]) -> Metrics {
    let m = labels.len().max(1) as f64;
    let preds = predictions(p);
    let acc = preds
        .iter()
        .zip(labels)
        .filter(|((c, _), y)| c == *y)
        .count() as f64
        / m;
    let nll = labels
        .iter()
        .enumerate()
        .map(|(i, &y)| -p[(i, y)].max(1e-12).ln())
        .sum::<f64>()
        / m;
    let brier = labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            (0..p.ncols())
                .map(|c| (p[(i, c)] - f64::from(u8::from(c == y))).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / m;
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / m * (b.accuracy - b.confidence).abs())
        .sum();
    let conf = preds.iter().map(|(_, c)| c).sum::<f64>() / m;
    Metrics {
        acc,
        nll,
        ece,
        brier,
        conf,
    }
}

/// Out-of-distribution detection by the confidence `max_c p_c` (in-distribution positive).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ood {
    /// Area under the ROC curve (ties count one half).
    pub auroc: f64,
    /// The fraction of out-of-distribution inputs at or above the confidence threshold that
    /// keeps 95% of the in-distribution inputs.
    pub fpr95: f64,
}

/// [`Ood`] from the probabilities on in- and out-of-distribution inputs.
pub fn ood(p_in: MatRef<'_, f64>, p_out: MatRef<'_, f64>) -> Result<Ood> {
    if p_in.nrows() == 0 || p_out.nrows() == 0 {
        return Err(Error::Invalid(
            "OOD detection needs in- and out-of-distribution inputs".into(),
        ));
    }
    let conf = |p| {
        predictions(p)
            .into_iter()
            .map(|(_, c)| c)
            .collect::<Vec<f64>>()
    };
    let (mut s_in, s_out) = (conf(p_in), conf(p_out));
    // AUROC = P(s_in > s_out) + ½ P(s_in = s_out), by sorting the out scores once.
    let mut sorted = s_out.clone();
    sorted.sort_by(f64::total_cmp);
    let below = |v: f64| sorted.partition_point(|s| *s < v);
    let at_or_below = |v: f64| sorted.partition_point(|s| *s <= v);
    let auroc = s_in
        .iter()
        .map(|&v| (below(v) + at_or_below(v)) as f64 / 2.0)
        .sum::<f64>()
        / (s_in.len() * s_out.len()) as f64;
    // The threshold keeping 95% of the in-distribution scores: their 5% quantile.
    s_in.sort_by(f64::total_cmp);
    let t = s_in[((0.05 * s_in.len() as f64).floor() as usize).min(s_in.len() - 1)];
    let fpr95 = s_out.iter().filter(|&&s| s >= t).count() as f64 / s_out.len() as f64;
    Ok(Ood { auroc, fpr95 })
}

/// Square images (rows of `side²` pixels, row-major) rotated counter-clockwise by `degrees`
/// about the image centre `((side − 1)/2, (side − 1)/2)`, bilinear, zero outside: each output
/// pixel takes the input at its inverse-rotated position.
pub fn rotate(images: MatRef<'_, f64>, side: usize, degrees: f64) -> Result<Mat<f64>> {
    if images.ncols() != side * side {
        return Err(Error::Invalid(format!(
            "images of {} pixels are not {side}×{side}",
            images.ncols()
        )));
    }
    let (sin, cos) = degrees.to_radians().sin_cos();
    let c = (side as f64 - 1.0) / 2.0;
    // For each output pixel: the four input pixels and their weights.
    let taps: Vec<Vec<(usize, f64)>> = (0..side * side)
        .map(|o| {
            let (r, q) = ((o / side) as f64 - c, (o % side) as f64 - c);
            // Counter-clockwise on screen (rows grow downwards): the inverse rotation.
            let x = cos * q - sin * r + c;
            let y = sin * q + cos * r + c;
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let mut t = Vec::with_capacity(4);
            for (dy, wy) in [(0.0, 1.0 - fy), (1.0, fy)] {
                for (dx, wx) in [(0.0, 1.0 - fx), (1.0, fx)] {
                    let (yy, xx) = (y0 + dy, x0 + dx);
                    let w = wy * wx;
                    if w > 0.0 && yy >= 0.0 && xx >= 0.0 && yy < side as f64 && xx < side as f64 {
                        t.push((yy as usize * side + xx as usize, w));
                    }
                }
            }
            t
        })
        .collect();
    Ok(Mat::from_fn(images.nrows(), side * side, |i, o| {
        taps[o].iter().map(|&(s, w)| w * images[(i, s)]).sum()
    }))
}

/// A posterior to evaluate: a structure over a subset of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The curvature structure.
    pub structure: HessianStructure,
    /// The weights it covers.
    pub subset: Subset,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.structure, self.subset)
    }
}

/// Where the prior precision comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prior {
    /// The model's δ.
    Model,
    /// The evidence's maximum, one δ or one per parameter tensor
    /// ([`Laplace::optimize_prior_precision_as`]).
    Marglik(PriorStructure),
    /// A given δ.
    Fixed(f64),
}

/// How the posteriors predict (laplace-torch's `pred_type`, `link_approx` and
/// `temperature`): the linearised network through a link, or the network at weight draws (the
/// draws of a Monte Carlo link), from the posterior at temperature T.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predicting {
    /// `glm` or `nn`.
    pub pred: PredType,
    /// The link of `glm`; for `nn`, [`Link::MonteCarlo`] gives the draws.
    pub link: Link,
    /// T of `N(θ*, (H/T + D)⁻¹)`.
    pub temperature: f64,
}

impl Predicting {
    /// The GLM predictive through `link` at T = 1.
    pub fn glm(link: Link) -> Self {
        Predicting {
            pred: PredType::Glm,
            link,
            temperature: 1.0,
        }
    }
}

/// Inputs with labels (a test set), or without (an out-of-distribution set: labels empty).
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Name in reports (`rotated 30°`, a file's name).
    pub name: String,
    /// The inputs (M × D).
    pub x: Mat<f64>,
    /// Their classes.
    pub labels: Vec<usize>,
}

/// One set's numbers for one method.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetReport {
    /// The set's name.
    pub name: String,
    /// The metrics.
    pub metrics: Metrics,
    /// The reliability diagram ([`ECE_BINS`] bins).
    pub reliability: Vec<Bin>,
}

/// OOD detection against the first test set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OodReport {
    /// The out-of-distribution set's name.
    pub name: String,
    /// The in-distribution set it is told apart from.
    pub against: String,
    /// AUROC and FPR95.
    #[serde(flatten)]
    pub ood: Ood,
}

/// Everything measured for one method (the MAP network, or a posterior).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MethodReport {
    /// `map`, or `laplace STRUCTURE SUBSET`.
    pub method: String,
    /// The posterior's structure and subset (none for the MAP).
    pub structure: Option<HessianStructure>,
    /// The subset.
    pub subset: Option<Subset>,
    /// Parameters the posterior covers.
    pub params: Option<usize>,
    /// The prior precision used: one δ, or δ_g per tensor of `prior_tensors`.
    pub prior_precision: Option<PriorPrecision>,
    /// The parameter tensors of a prior per layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_tensors: Option<Vec<String>>,
    /// The evidence there.
    pub log_marglik: Option<f64>,
    /// Seconds: fit, marglik, predict.
    pub timings_s: Vec<(String, f64)>,
    /// The test sets.
    pub sets: Vec<SetReport>,
    /// The OOD sets.
    pub ood: Vec<OodReport>,
    /// Numerical events of the fit.
    pub warnings: Vec<Warning>,
}

/// Probabilities of the MAP network: the softmax of its outputs (`[1 − σ(f), σ(f)]` for one
/// logit).
pub fn map_probabilities(model: &Model, x: MatRef<'_, f64>) -> Mat<f64> {
    let f = model.predict(x);
    let k = f.ncols();
    let c = if k == 1 { 2 } else { k };
    let mut p = Mat::zeros(f.nrows(), c);
    for i in 0..f.nrows() {
        let row: Vec<f64> = if k == 1 {
            vec![0.0, f[(i, 0)]]
        } else {
            (0..k).map(|j| f[(i, j)]).collect()
        };
        for (j, v) in softmax(&row).into_iter().enumerate() {
            p[(i, j)] = v;
        }
    }
    p
}

/// The reports of one method from its probability function on each set.
fn report(
    tests: &[Inputs],
    ood_sets: &[Inputs],
    probs: &dyn Fn(MatRef<'_, f64>) -> Result<Mat<f64>>,
) -> Result<(Vec<SetReport>, Vec<OodReport>)> {
    let mut sets = Vec::with_capacity(tests.len());
    let mut first = None;
    for t in tests {
        let p = probs(t.x.as_ref())?;
        let bins = reliability(p.as_ref(), &t.labels, ECE_BINS)?;
        sets.push(SetReport {
            name: t.name.clone(),
            metrics: summarise(p.as_ref(), &t.labels, &bins),
            reliability: bins,
        });
        first.get_or_insert(p);
    }
    let mut oods = Vec::with_capacity(ood_sets.len());
    if let (Some(p_in), Some(t)) = (&first, tests.first()) {
        for o in ood_sets {
            oods.push(OodReport {
                name: o.name.clone(),
                against: t.name.clone(),
                ood: ood(p_in.as_ref(), probs(o.x.as_ref())?.as_ref())?,
            });
        }
    }
    Ok((sets, oods))
}

/// Refuses, before any work, methods that cannot run: a prior per layer for a low-rank
/// posterior, a fit over N examples above `memory_limit` bytes
/// ([`Laplace::check_memory`]).
pub fn check_methods(
    net: &Graph,
    n: usize,
    methods: &[Method],
    prior: Prior,
    memory_limit: u128,
) -> Result<()> {
    for m in methods {
        if prior == Prior::Marglik(PriorStructure::Layerwise)
            && m.structure == HessianStructure::LowRank
        {
            return Err(Error::Invalid(
                "a prior precision per layer (prior structure layerwise) needs a full, diag or \
                 kron posterior, not lowrank: its precision U diag(s) Uᵀ + δI has one δ"
                    .into(),
            ));
        }
        Laplace::check_memory(net, n, m.structure, m.subset, memory_limit)?;
    }
    Ok(())
}

/// Calibration of the MAP network and of each posterior `methods` of `model` fitted on its
/// training data `(x, y)` (one-hot targets), on `tests` (the first also the in-distribution
/// set of the OOD scores) and `ood_sets`, with the predictive `link`; each posterior's prior
/// precision from `prior`. `done` is told each method's report as it finishes.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Model,
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    methods: &[Method],
    prior: Prior,
    predicting: Predicting,
    tests: &[Inputs],
    ood_sets: &[Inputs],
    fit: &FitOptions<'_>,
    done: &mut dyn FnMut(&MethodReport),
) -> Result<Vec<MethodReport>> {
    check_methods(&model.net, x.nrows(), methods, prior, fit.memory_limit)?;
    let mut out = Vec::with_capacity(methods.len() + 1);
    let t0 = Instant::now();
    let (sets, ood) = report(tests, ood_sets, &|x| Ok(map_probabilities(model, x)))?;
    let map = MethodReport {
        method: "map".into(),
        structure: None,
        subset: None,
        params: None,
        prior_precision: None,
        prior_tensors: None,
        log_marglik: None,
        timings_s: vec![("predict".into(), t0.elapsed().as_secs_f64())],
        sets,
        ood,
        warnings: Vec::new(),
    };
    done(&map);
    out.push(map);
    for m in methods {
        let mut timings = Vec::new();
        let t0 = Instant::now();
        let mut la = Laplace::fit_subset(model.clone(), x, y, m.structure, m.subset, fit)?;
        if predicting.temperature != 1.0 {
            la.set_temperature(predicting.temperature)?;
        }
        timings.push(("fit".to_string(), t0.elapsed().as_secs_f64()));
        let t0 = Instant::now();
        match prior {
            Prior::Model => {}
            Prior::Marglik(structure) => {
                la.optimize_prior_precision_as(structure)?;
            }
            Prior::Fixed(d) => la.set_prior_precision(d)?,
        }
        let log_marglik = la.log_marginal_likelihood(None, None)?;
        timings.push(("marglik".to_string(), t0.elapsed().as_secs_f64()));
        let t0 = Instant::now();
        let (sets, ood) = report(tests, ood_sets, &|x| {
            let pred = match (predicting.pred, predicting.link) {
                (PredType::Nn, Link::MonteCarlo { samples, seed }) => {
                    la.predict_nn(x, samples, seed)?
                }
                (PredType::Nn, _) => {
                    return Err(Error::Invalid(
                        "the network's predictive draws weights: a Monte Carlo link".into(),
                    ))
                }
                (PredType::Glm, link) => la.predict(x, link)?,
            };
            Ok(pred.probabilities.expect("a classification likelihood"))
        })?;
        timings.push(("predict".to_string(), t0.elapsed().as_secs_f64()));
        let r = MethodReport {
            method: format!("laplace {m}"),
            structure: Some(m.structure),
            subset: Some(m.subset),
            params: Some(la.weight_posterior().mean.len()),
            prior_precision: Some(la.prior_precision().clone()),
            prior_tensors: matches!(la.prior_precision(), PriorPrecision::Layerwise(_))
                .then(|| la.prior_tensors().into_iter().map(|(n, _)| n).collect()),
            log_marglik: Some(log_marglik),
            timings_s: timings,
            sets,
            ood,
            warnings: la.weight_posterior().warnings(),
        };
        done(&r);
        out.push(r);
    }
    Ok(out)
}
