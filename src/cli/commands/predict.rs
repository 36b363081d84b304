//! `predict`: the predictive of a model at new inputs through its posterior, on the one
//! predictive path `gp`, `evaluate` and Python share (`Posterior::predict`): the mean and the
//! variances of f and y for regression, class probabilities by a link for a classifier. The
//! posterior is fitted on the model's training data (any structure, all weights or the last
//! layer, the prior and noise as asked) or read from a saved posterior.

use std::path::{Path, PathBuf};

use anyhow::Result;
use faer::Mat;
use serde::Serialize;

use crate::cli::args::{PredictCmd, PriorArg};
use crate::cli::class_report::ClassTable;
use crate::cli::ctx::{positive, Ctx};
use crate::cli::model_dir::{load_fitted, Fitted};
use crate::cli::outdir::OutDir;
use crate::cli::posterior::{self, Chosen};
use crate::cli::sources::train_data;
use crate::report::plot::significant;
use dnn2gp::data::csv::read_table;
use dnn2gp::data::mnist;
use dnn2gp::experiments::regression::gaussian_scores;
use dnn2gp::gp::{FunctionSpace, Space};
use dnn2gp::io::{num, write_csv, write_json};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::Network;
use dnn2gp::posterior::{
    HessianStructure, Laplace, Link, LinkApprox, Posterior, PriorPrecision, Subset,
};
use dnn2gp::train::model::Model;
use dnn2gp::{Error, Warning};

/// The saved posterior of a folder written by `reproduce`.
const POSTERIOR_FILE: &str = "posterior.safetensors";

/// What `predict` writes to `predict.json`.
#[derive(Debug, Serialize)]
struct PredictSummary {
    inputs: usize,
    likelihood: String,
    hessian: HessianStructure,
    subset: Subset,
    space: Option<Space>,
    /// The prior precision: one δ, or one per parameter tensor; how it was chosen.
    delta: f64,
    prior_precision: PriorPrecision,
    prior: Chosen,
    /// The Gaussian noise σ (regression).
    sigma: Option<f64>,
    /// The link of the class probabilities (classification).
    link: Option<LinkApprox>,
    /// With targets: the mean squared error of the network's output (regression), or the
    /// accuracy of the predictive's and of the MAP network's probabilities.
    test_mse: Option<f64>,
    test_accuracy: Option<f64>,
    test_accuracy_map: Option<f64>,
    /// With targets: the mean −log of the predictive density of y (regression, per output) or
    /// of the label's probability (classification, floored at 1e-12), and the MAP network's.
    test_nll: Option<f64>,
    test_nll_map: Option<f64>,
    warnings: Vec<Warning>,
}

/// Where the posterior comes from.
enum Source {
    /// A model and its training data: the posterior is fitted.
    Fit(Box<Fitted>),
    /// A saved posterior.
    Saved(PathBuf),
}

/// The source of `--model`: a saved posterior (a file, or a folder written by `reproduce`), or
/// a model (folder, or file with `--train-data`).
fn source(ctx: &Ctx, a: &PredictCmd) -> Result<Source> {
    let path = &a.model;
    let saved = if path.is_dir() {
        let file = path.join(POSTERIOR_FILE);
        if !file.exists() && path.join("architecture.json").exists() {
            return Err(Error::option(
                "--model",
                format!(
                    "{} was written by an older `dnn2gp reproduce` (architecture.json, \
                     posterior_variance.npy) and holds no {POSTERIOR_FILE}: rerun `dnn2gp \
                     reproduce mnist --model {}/model.safetensors --arch SPEC --out NEW` to fit \
                     its posterior again (no training)",
                    path.display(),
                    path.display()
                ),
            )
            .into());
        }
        file.exists().then_some(file)
    } else if path.is_file() && Laplace::is_saved_posterior(path)? {
        Some(path.clone())
    } else {
        None
    };
    if let Some(file) = saved {
        if a.train_data.is_some() {
            return Err(Error::option(
                "--train-data",
                format!(
                    "{} is a saved posterior: it needs no training data",
                    file.display()
                ),
            )
            .into());
        }
        return Ok(Source::Saved(file));
    }
    Ok(Source::Fit(Box::new(load_fitted(
        ctx,
        path,
        train_data(a.train_data.as_deref())?,
        "--train-data",
    )?)))
}

/// The new inputs (M × D) and their targets, when given: the last CSV column, or `--labels`
/// for IDX images.
struct NewInputs {
    x: Mat<f64>,
    targets: Option<Vec<f64>>,
}

/// Reads `--inputs` for a network of `d` inputs: an IDX image file, or a CSV of `d` columns
/// (or `d + 1` with targets).
fn read_inputs(a: &PredictCmd, d: usize) -> Result<NewInputs> {
    let path = &a.inputs;
    if mnist::is_idx(path)? {
        let x = mnist::read_images(path)?;
        if x.ncols() != d {
            return Err(Error::option(
                "--inputs",
                format!(
                    "{}: images of {} pixels; the network takes {d}",
                    path.display(),
                    x.ncols()
                ),
            )
            .into());
        }
        let targets = match &a.labels {
            None => None,
            Some(l) => {
                let labels = mnist::read_labels(l)?;
                if labels.len() != x.nrows() {
                    return Err(Error::option(
                        "--labels",
                        format!(
                            "{}: {} labels for {} images",
                            l.display(),
                            labels.len(),
                            x.nrows()
                        ),
                    )
                    .into());
                }
                Some(labels.iter().map(|&l| l as f64).collect())
            }
        };
        return Ok(NewInputs { x, targets });
    }
    if a.labels.is_some() {
        return Err(Error::option(
            "--labels",
            "applies to IDX images; a CSV's last column holds the targets",
        )
        .into());
    }
    let rows = read_table(path)?;
    let width = rows[0].len();
    if width != d && width != d + 1 {
        return Err(Error::option(
            "--inputs",
            format!(
                "{}: {width} columns; the model takes {d} inputs (give {d} columns, or {} with \
                 a target in the last)",
                path.display(),
                d + 1
            ),
        )
        .into());
    }
    Ok(NewInputs {
        x: Mat::from_fn(rows.len(), d, |i, j| rows[i][j]),
        targets: (width == d + 1).then(|| rows.iter().map(|r| r[d]).collect()),
    })
}

/// Labels of a classifier from target values, checked against its classes; a binary model's
/// IDX labels may be its two digits (from `reproduce binary-mnist`'s record).
fn labels(
    targets: &[f64],
    model: &Model,
    what: &Path,
    digits: Option<[usize; 2]>,
) -> Result<Vec<usize>> {
    let k = model.net.n_outputs();
    let classes = if k == 1 { 2 } else { k };
    targets
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let l = v as usize;
            let l = match digits {
                Some(d) => d.iter().position(|x| *x == l).unwrap_or(usize::MAX),
                None if v >= 0.0 && v.fract() == 0.0 => l,
                None => usize::MAX,
            };
            if l < classes {
                Ok(l)
            } else {
                Err(Error::Invalid(format!(
                    "{}: example {}: target {v} is not a class label of the model ({})",
                    what.display(),
                    i + 1,
                    match digits {
                        Some(d) => format!("its digits {} and {}", d[0], d[1]),
                        None => format!("0 to {}", classes - 1),
                    }
                ))
                .into())
            }
        })
        .collect()
}

/// The two digits of a binary model written by `reproduce binary-mnist` (its `summary.json`).
fn binary_digits(dir: &Path) -> Option<[usize; 2]> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let d = v["digits"].as_array()?;
    Some([d.first()?.as_u64()? as usize, d.get(1)?.as_u64()? as usize])
}

/// `predict`.
pub(crate) fn run(ctx: &Ctx, a: PredictCmd) -> Result<()> {
    positive("--samples", a.samples)?;
    let approx = a.link.unwrap_or(LinkApprox::Probit);
    let link = Link::new(approx, a.samples, 0).map_err(|e| e.for_option("--samples"))?;
    let src = source(ctx, &a)?;
    // The model (the saved posterior's, read once here and kept), and the checks of the options
    // against it, before any work.
    let (saved, fitted) = match src {
        Source::Saved(file) => {
            let la = Laplace::load(&file)?;
            for (given, option, have) in [
                (
                    a.posterior.hessian.map(|h| h.to_string()),
                    "--hessian",
                    la.structure().to_string(),
                ),
                (
                    a.posterior.subset.map(|s| s.to_string()),
                    "--subset",
                    la.subset().to_string(),
                ),
            ] {
                if given.as_ref().is_some_and(|g| *g != have) {
                    return Err(Error::option(
                        option,
                        format!(
                            "{} holds a {} posterior over {}; its structure is fixed",
                            file.display(),
                            la.structure(),
                            la.subset().weights()
                        ),
                    )
                    .into());
                }
            }
            (Some((la, file)), None)
        }
        Source::Fit(f) => (None, Some(*f)),
    };
    let model = match (&saved, &fitted) {
        (Some((la, _)), _) => la.model().clone(),
        (_, Some(f)) => f.model.clone(),
        _ => unreachable!("one source"),
    };
    let kind = model.likelihood;
    posterior::check(
        &a.posterior,
        kind,
        &model.net,
        fitted.as_ref().map_or(0, |f| f.split.train.len()),
        if fitted.is_some() {
            ctx.memory
        } else {
            u128::MAX
        },
    )?;
    if a.link.is_some() && kind == LikelihoodKind::Gaussian {
        return Err(Error::option(
            "--link",
            "turns a classifier's logits into class probabilities; the model is a regression",
        )
        .into());
    }
    if approx == LinkApprox::Bridge && kind == LikelihoodKind::Bernoulli {
        return Err(Error::option("--link", "bridge needs two or more classes").into());
    }
    let new = read_inputs(&a, model.net.n_inputs())?;
    let digits = saved
        .as_ref()
        .and_then(|(_, f)| f.parent().and_then(binary_digits))
        .filter(|_| a.labels.is_some() && kind == LikelihoodKind::Bernoulli);
    let labels = match (&new.targets, kind) {
        (Some(t), LikelihoodKind::Gaussian) => {
            let _ = t;
            None
        }
        (Some(t), _) => Some(labels(t, &model, &a.inputs, digits)?),
        (None, _) => None,
    };
    // The full posterior over all weights in function space when that is the smaller.
    let full_all =
        a.posterior.structure() == HessianStructure::Full && a.posterior.weights() == Subset::All;
    let function_space = fitted.as_ref().filter(|_| full_all).is_some_and(|f| {
        let nk = f.split.train.len() * model.net.n_outputs();
        a.space.resolve(model.net.n_params(), nk) == Space::Function
    });
    if function_space
        && posterior::needs_fit(&a.posterior)
        && a.posterior.prior != Some(PriorArg::Model)
    {
        let searches = a.posterior.marglik
            || a.posterior.prior == Some(PriorArg::Marglik)
            || a.posterior.sigma.is_some();
        if searches {
            return Err(Error::option(
                "--space",
                "the function-space posterior is fitted at given δ and σ: give --prior NUMBER \
                 (`dnn2gp gp --delta-grid` shows the evidence over δ), or --space weight",
            )
            .into());
        }
    }
    let mut inputs: Vec<&Path> = vec![a.model.as_path(), a.inputs.as_path()];
    inputs.extend(a.labels.as_deref());
    if let Some(f) = &fitted {
        inputs.extend(f.src.paths());
    }
    let out = OutDir::open("--out", &a.out, &inputs)?;

    // The posterior.
    let mut warnings = fitted
        .as_ref()
        .map_or_else(Vec::new, |f| f.warnings.clone());
    let (post, chosen, space): (Box<dyn Posterior>, Chosen, Option<Space>) = match (saved, fitted) {
        (Some((mut la, _)), _) => {
            let chosen = posterior::choose_prior(&mut la, &a.posterior)?;
            (Box::new(la), chosen, None)
        }
        (None, Some(f)) if function_space => {
            let mut m = f.model.clone();
            let chosen = match a.posterior.prior {
                Some(PriorArg::Value(d)) => {
                    m.delta = d;
                    Chosen::Given
                }
                _ => Chosen::Model,
            };
            let (x, y) = (f.split.train.x.as_ref(), f.split.train.y.as_ref());
            let fs = FunctionSpace::fit(m, x, y, ctx.memory)?;
            (Box::new(fs), chosen, Some(Space::Function))
        }
        (None, Some(f)) => {
            let (x, y) = (f.split.train.x.as_ref(), f.split.train.y.as_ref());
            let mut la = posterior::fit(ctx, f.model.clone(), x, y, &a.posterior)?;
            let chosen = posterior::choose_prior(&mut la, &a.posterior)?;
            let space = full_all.then_some(Space::Weight);
            (Box::new(la), chosen, space)
        }
        (None, None) => unreachable!("one source"),
    };
    ctx.warn(&mut warnings, post.warnings());
    let bar = ctx.bar(new.x.nrows() as u64, "predictive");
    let pred = post.predict_with(new.x.as_ref(), link, Some(&bar))?;
    bar.finish_and_clear();

    // The files and the scores.
    let m = new.x.nrows();
    let model = post.model();
    let mut files = Vec::new();
    let (mut mse, mut acc, mut acc_map, mut nll, mut nll_map) = (None, None, None, None, None);
    if kind == LikelihoodKind::Gaussian {
        let k = model.net.n_outputs();
        let (vf, vy) = (pred.functional_variance(), pred.variance());
        let mean: Vec<f64> = (0..m * k).map(|r| pred.mean[(r / k, r % k)]).collect();
        if let Some(t) = &new.targets {
            let y: Vec<f64> = t.iter().flat_map(|v| std::iter::repeat_n(*v, k)).collect();
            let (e, n) = gaussian_scores(&y, &mean, &vy);
            (mse, nll) = (Some(e), Some(n));
        }
        let rows: Vec<Vec<String>> = (0..m * k)
            .map(|r| {
                vec![
                    (r / k).to_string(),
                    (r % k).to_string(),
                    num(mean[r]),
                    num(vf[r]),
                    num(vy[r]),
                ]
            })
            .collect();
        let path = out.path().join("predictions.csv");
        write_csv(
            &path,
            &["example", "output", "mean", "var_f", "var_y"],
            &rows,
        )?;
        files.push(path);
    } else {
        // The Monte Carlo probabilities beside the chosen link's, as a check on it.
        let mc = Link::new(LinkApprox::Mc, a.samples, 0)?;
        let more: &[Link] = if link.approx() == LinkApprox::Mc {
            &[]
        } else {
            &[mc]
        };
        let table = ClassTable::new(&pred, link, more)?;
        table.write(out.path(), labels.as_deref(), &mut files)?;
        if let Some(l) = &labels {
            let (p, map) = (
                table.metrics(&format!("p_{}", link.approx()), l)?,
                table.metrics("p_map", l)?,
            );
            (acc, nll, acc_map, nll_map) = (Some(p.acc), Some(p.nll), Some(map.acc), Some(map.nll));
        }
    }
    let prior = post.prior();
    let summary = PredictSummary {
        inputs: m,
        likelihood: kind.to_string(),
        hessian: post.structure(),
        subset: post.subset(),
        space,
        delta: model.delta,
        prior_precision: prior.clone(),
        prior: chosen,
        sigma: (kind == LikelihoodKind::Gaussian).then_some(model.sigma),
        link: (kind != LikelihoodKind::Gaussian).then_some(approx),
        test_mse: mse,
        test_accuracy: acc,
        test_accuracy_map: acc_map,
        test_nll: nll,
        test_nll_map: nll_map,
        warnings,
    };
    let path = out.path().join("predict.json");
    write_json(&path, &summary)?;
    files.push(path);
    let delta = posterior::describe_prior(&prior, None);
    println!(
        "predicted {m} inputs with {} {} ({} posterior over {}, {delta} ({chosen}){}){}",
        model.net.spec(),
        kind,
        post.structure(),
        post.subset().weights(),
        match kind {
            LikelihoodKind::Gaussian => format!(", σ = {}", significant(model.sigma, 6)),
            _ => format!(", {approx} link"),
        },
        match (mse, nll, acc, acc_map, nll_map) {
            (Some(e), Some(n), ..) => format!(": MSE {e:.5}, NLL {n:.4}"),
            (_, Some(n), Some(p), Some(pm), Some(nm)) => format!(
                ": accuracy {:.2}% (MAP {:.2}%), NLL {n:.4} (MAP {nm:.4})",
                100.0 * p,
                100.0 * pm
            ),
            _ => String::new(),
        }
    );
    out.commit(&files)
}
