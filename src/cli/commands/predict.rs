//! `predict`: the predictive of a saved model at new inputs, from its Laplace-GGN posterior
//! (the DNN2GP GP for Gaussian and Bernoulli likelihoods; the weight-space GLM predictive for
//! the categorical, whose Λ has no inverse).

use std::path::PathBuf;

use anyhow::Result;
use faer::Mat;
use serde::Serialize;

use crate::cli::args::PredictCmd;
use crate::cli::class_report::{class_predictive, scores};
use crate::cli::ctx::{positive, warn, Ctx};
use crate::cli::gp_report::full_or_diag;
use crate::cli::model_dir::{load_fitted, Fitted};
use crate::cli::outdir::OutDir;
use crate::cli::sources::train_data;
use dnn2gp::curvature::Linearization;
use dnn2gp::data::csv::read_table;
use dnn2gp::data::mnist::{self};
use dnn2gp::gp::{predict_at, Dnn2Gp, Space};
use dnn2gp::io::{num, read_npy, write_csv, write_json};
use dnn2gp::likelihood::classification::{probit, sigmoid};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::{Network, Sequential};
use dnn2gp::posterior::{HessianStructure, LaplaceGgn};
use dnn2gp::{Error, Warning};

/// What `predict` writes to `predict.json`.
#[derive(Debug, Serialize)]
struct PredictSummary {
    inputs: usize,
    likelihood: String,
    delta: f64,
    hessian: HessianStructure,
    space: Space,
    /// With a target column: mean squared error (regression) or accuracy (classification).
    test_mse: Option<f64>,
    test_accuracy: Option<f64>,
    /// With a target column: the mean negative log predictive density (regression) or the mean
    /// negative log probit probability of the label (classification).
    test_nll: Option<f64>,
    warnings: Vec<Warning>,
}

/// `predict`.
pub(crate) fn run(ctx: &Ctx, a: PredictCmd) -> Result<()> {
    if !a.model.join("model.json").exists() && a.model.join("architecture.json").exists() {
        return predict_images(ctx, a);
    }
    if a.labels.is_some() {
        return Err(Error::Invalid(
            "--labels applies to image models (folders written by `reproduce`); a CSV's last \
             column holds the targets"
                .into(),
        )
        .into());
    }
    let Fitted {
        model,
        kind,
        lik,
        src,
        split,
        warnings: model_warnings,
    } = load_fitted(
        &a.model,
        train_data(a.train_data.as_deref())?,
        "--train-data",
    )?;
    let (net, w) = (&model.net, &model.w);
    let (d, k) = (net.n_inputs(), net.n_outputs());
    let delta = a.delta.unwrap_or(model.delta);
    dnn2gp::train::check_delta(delta).map_err(|e| e.for_option("--delta"))?;
    let hessian = full_or_diag("--hessian", a.hessian)?;
    let space: Space = a.space;
    positive("--samples", a.samples)?;
    // New inputs: D columns, or D + 1 with a target in the last one.
    let rows = read_table(&a.data)?;
    let width = rows[0].len();
    if width != d && width != d + 1 {
        return Err(Error::Invalid(format!(
            "{}: {width} columns; the model takes {d} inputs (give {d} columns, or {} with a \
             target in the last)",
            a.data.display(),
            d + 1
        ))
        .into());
    }
    let xs = Mat::from_fn(rows.len(), d, |i, j| rows[i][j]);
    let targets: Option<Vec<f64>> = (width == d + 1).then(|| rows.iter().map(|r| r[d]).collect());
    if let Some(y) = &targets {
        let y = Mat::from_fn(y.len(), 1, |i, _| y[i]);
        let what = a.data.display().to_string();
        kind.prepare_targets(y, (kind == LikelihoodKind::Categorical).then_some(k), &what)?;
    }
    let mut inputs = src.paths();
    inputs.extend([a.model.as_path(), a.data.as_path()]);
    let out = OutDir::open("--out", &a.out, &inputs)?;
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let lin = Linearization::checked(net, lik.as_ref(), x, y, w, ctx.memory)?;
    let f = net.forward(w, xs.as_ref());
    let m = xs.nrows();
    let mut warnings = model_warnings;
    let mut files: Vec<PathBuf> = Vec::new();
    let (mut header, mut table): (Vec<&str>, Vec<Vec<String>>) = (Vec::new(), Vec::new());
    // With targets: (MSE or accuracy, mean NLL).
    let scored: Option<(f64, f64)>;
    let used_space;
    if kind == LikelihoodKind::Categorical {
        let post = LaplaceGgn::fit(&lin, delta, hessian, ctx.memory)?;
        warn(&mut warnings, post.warnings());
        used_space = Space::Weight;
        let cp = class_predictive(ctx, &post, net, w, xs.as_ref(), a.samples, 0)?;
        let labels: Option<Vec<usize>> = targets
            .as_ref()
            .map(|t| t.iter().map(|&v| v as usize).collect());
        scored = labels.as_ref().map(|l| scores(&cp.p_probit, l));
        cp.write(out.path(), labels.as_deref(), &mut files)?;
    } else {
        let gp = Dnn2Gp::of(net, x, &lin, delta, space, ctx.memory)?;
        warn(&mut warnings, gp.warnings());
        used_space = gp.space;
        let diag = match hessian {
            HessianStructure::Full => None,
            _ => Some(LaplaceGgn::fit(&lin, delta, hessian, ctx.memory)?),
        };
        let pred = predict_at(&gp, diag.as_ref(), net, w, x, xs.as_ref(), ctx.memory)?;
        warn(&mut warnings, pred.clamped.clone());
        if kind == LikelihoodKind::Gaussian {
            header.extend(["example", "output", "mean", "var_f", "var_y"]);
            let noise = model.sigma * model.sigma;
            let (mut se, mut nll) = (0.0, 0.0);
            for i in 0..m {
                for c in 0..k {
                    let (mean, vf) = (f[(i, c)], pred.var[i * k + c]);
                    let vy = vf + noise;
                    if let Some(t) = &targets {
                        se += (mean - t[i]).powi(2);
                        nll +=
                            0.5 * ((mean - t[i]).powi(2) / vy + (std::f64::consts::TAU * vy).ln());
                    }
                    table.push(vec![
                        i.to_string(),
                        c.to_string(),
                        num(mean),
                        num(vf),
                        num(vy),
                    ]);
                }
            }
            scored = targets
                .as_ref()
                .map(|_| (se / (m * k) as f64, nll / m as f64));
        } else {
            header.extend(["example", "logit", "var_f", "p_map", "p_probit"]);
            let (mut hits, mut nll) = (0usize, 0.0);
            for i in 0..m {
                let (fi, vf) = (f[(i, 0)], pred.var[i]);
                let pp = probit(&[fi], &[vf])[0];
                if let Some(t) = &targets {
                    nll -= if t[i] == 1.0 {
                        pp.ln()
                    } else {
                        (1.0 - pp).ln()
                    };
                    hits += usize::from((pp > 0.5) == (t[i] == 1.0));
                }
                table.push(vec![
                    i.to_string(),
                    num(fi),
                    num(vf),
                    num(sigmoid(fi)),
                    num(pp),
                ]);
            }
            scored = targets
                .as_ref()
                .map(|_| (hits as f64 / m as f64, nll / m as f64));
        }
    }
    if !table.is_empty() {
        let path = out.path().join("predictions.csv");
        write_csv(&path, &header, &table)?;
        files.push(path);
    }
    let regression = kind == LikelihoodKind::Gaussian;
    let summary = PredictSummary {
        inputs: m,
        likelihood: model.likelihood.to_string(),
        delta,
        hessian,
        space: used_space,
        test_mse: scored.filter(|_| regression).map(|s| s.0),
        test_accuracy: scored.filter(|_| !regression).map(|s| s.0),
        test_nll: scored.map(|s| s.1),
        warnings,
    };
    let path = out.path().join("predict.json");
    write_json(&path, &summary)?;
    files.push(path);
    println!(
        "predicted {m} inputs with {} {} (δ = {delta}, {hessian} posterior, {} space){}",
        net.spec(),
        model.likelihood,
        used_space,
        match (summary.test_mse, summary.test_accuracy, summary.test_nll) {
            (Some(mse), _, Some(nll)) => format!(": MSE {mse:.5}, NLL {nll:.4}"),
            (_, Some(acc), Some(nll)) => format!(": accuracy {:.2}%, NLL {nll:.4}", 100.0 * acc),
            _ => String::new(),
        }
    );
    out.commit(&files)
}

/// `predict` for a folder written by `reproduce mnist` or `reproduce binary-mnist`: the network
/// from `architecture.json` and `model.safetensors`, its saved diagonal posterior
/// (`posterior_variance.npy`), images from an IDX file, labels (for accuracy and NLL) from
/// another.
fn predict_images(ctx: &Ctx, a: PredictCmd) -> Result<()> {
    let dir = &a.model;
    if a.delta.is_some() {
        return Err(Error::Invalid(format!(
            "--delta applies to models from `train` or `import`; {} holds its posterior \
             variances already",
            dir.display()
        ))
        .into());
    }
    positive("--samples", a.samples)?;
    let arch = dir.join("architecture.json");
    let text = std::fs::read_to_string(&arch).map_err(|e| Error::io(&arch, e))?;
    let net: Sequential = serde_json::from_str(&text)
        .map_err(|e| Error::parse(&arch, e.line(), format!("not an architecture: {e}")))?;
    let w = dnn2gp::nn::weights::load(&dir.join("model.safetensors"), &net.param_layout())?;
    let var_path = dir.join("posterior_variance.npy");
    let (_, variances) = read_npy(&var_path)?;
    let summary_path = dir.join("summary.json");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path).map_err(|e| Error::io(&summary_path, e))?,
    )
    .map_err(|e| Error::parse(&summary_path, e.line(), e.to_string()))?;
    let delta = summary["delta"].as_f64().ok_or_else(|| {
        Error::parse(
            &summary_path,
            1,
            "no \"delta\" (not written by `reproduce`)",
        )
    })?;
    let post = LaplaceGgn::from_variances(w.clone(), &variances, delta)
        .map_err(|e| Error::Invalid(format!("{}: {e}", var_path.display())))?;
    let xs = mnist::read_images(&a.data)?;
    if xs.ncols() != net.n_inputs() {
        return Err(Error::Invalid(format!(
            "{}: images of {} pixels; the network takes {}",
            a.data.display(),
            xs.ncols(),
            net.n_inputs()
        ))
        .into());
    }
    // Labels: digits; a binary model's two digits become 0 and 1.
    let labels = match &a.labels {
        None => None,
        Some(path) => {
            let raw = mnist::read_labels(path)?;
            if raw.len() != xs.nrows() {
                return Err(Error::Invalid(format!(
                    "{}: {} labels for {} images",
                    path.display(),
                    raw.len(),
                    xs.nrows()
                ))
                .into());
            }
            let digits: Option<Vec<usize>> = summary["digits"].as_array().map(|d| {
                d.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            });
            Some(match digits {
                Some(d) if d.len() == 2 => raw
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        d.iter().position(|x| x == l).ok_or_else(|| {
                            Error::Invalid(format!(
                                "{}: image {i} is a {l}, not one of the model's digits {} and {}",
                                path.display(),
                                d[0],
                                d[1]
                            ))
                        })
                    })
                    .collect::<dnn2gp::Result<Vec<usize>>>()?,
                _ => raw,
            })
        }
    };
    let mut inputs = vec![dir.as_path(), a.data.as_path()];
    inputs.extend(a.labels.as_deref());
    let out = OutDir::open("--out", &a.out, &inputs)?;
    let cp = class_predictive(ctx, &post, &net, &w, xs.as_ref(), a.samples, 0)?;
    let mut files = Vec::new();
    cp.write(out.path(), labels.as_deref(), &mut files)?;
    let scored = labels.as_ref().map(|l| scores(&cp.p_probit, l));
    let summary = PredictSummary {
        inputs: xs.nrows(),
        likelihood: if net.n_outputs() == 1 {
            "bernoulli"
        } else {
            "categorical"
        }
        .into(),
        delta,
        hessian: HessianStructure::Diag,
        space: Space::Weight,
        test_mse: None,
        test_accuracy: scored.map(|s| s.0),
        test_nll: scored.map(|s| s.1),
        warnings: Vec::new(),
    };
    let path = out.path().join("predict.json");
    write_json(&path, &summary)?;
    files.push(path);
    println!(
        "predicted {} images with {} parameters (diagonal posterior){}",
        xs.nrows(),
        net.n_params(),
        scored
            .map(|(acc, nll)| format!(": accuracy {:.2}%, NLL {nll:.4}", 100.0 * acc))
            .unwrap_or_default()
    );
    out.commit(&files)
}
