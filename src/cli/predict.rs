//! `predict`: the predictive of a saved model at new inputs, from its Laplace-GGN posterior
//! (the DNN2GP GP for Gaussian and Bernoulli likelihoods; the weight-space GLM predictive for
//! the categorical, whose Λ has no inverse).

use std::path::PathBuf;

use anyhow::Result;
use faer::Mat;
use serde::Serialize;

use dnn2gp::data::csv::read_table;
use dnn2gp::gp::{Dnn2Gp, Space};
use dnn2gp::likelihood::classification::{probit, sigmoid, softmax};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::linalg::{check_memory, mat_bytes};
use dnn2gp::nn::Network;
use dnn2gp::posterior::{HessianStructure, LaplaceGgn, Linearization};
use dnn2gp::report::files::{num, write_csv, write_json, write_npy};
use dnn2gp::{Error, Warning};

use super::args::PredictCmd;
use super::commands::{gp_predict, load_fitted, warn, Ctx, Fitted};
use super::outdir::OutDir;

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
pub(super) fn predict(ctx: &Ctx, a: PredictCmd) -> Result<()> {
    let Fitted {
        file,
        w,
        kind,
        lik,
        src,
        split,
    } = load_fitted(&a.model, None)?;
    let net = &file.architecture;
    let (d, k) = (net.n_inputs(), net.n_outputs());
    let delta = a.delta.unwrap_or(file.delta);
    dnn2gp::posterior::laplace::check_delta(delta)?;
    let hessian: HessianStructure = a.hessian.parse()?;
    let space: Space = a.space.parse()?;
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
    let (n, p) = (x.nrows(), net.n_params());
    check_memory(
        "the training Jacobian (NK×P)",
        mat_bytes(n * k, p),
        ctx.memory,
        "use a subset of the training data",
    )?;
    let lin = Linearization::new(net, lik.as_ref(), x, y, &w);
    let f = net.forward(&w, xs.as_ref());
    let m = xs.nrows();
    let mut warnings = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let (mut header, mut table): (Vec<&str>, Vec<Vec<String>>) = (Vec::new(), Vec::new());
    let (mut se, mut nll, mut hits) = (0.0, 0.0, 0usize);
    let used_space;
    if kind == LikelihoodKind::Categorical {
        // p = E[softmax f] by the probit approximation, f ~ N(f_{w*}(x), J Σ Jᵀ) blockwise.
        let post = LaplaceGgn::fit(&lin, delta, hessian, ctx.memory)?;
        warn(&mut warnings, post.warnings());
        used_space = Space::Weight;
        check_memory(
            "the Jacobian of the prediction inputs (MK×P)",
            mat_bytes(m * k, p),
            ctx.memory,
            "predict fewer inputs at a time",
        )?;
        let blocks = post.functional_covariance_blocks(net.jacobian(&w, xs.as_ref()).as_ref(), k);
        let path = out.path().join("f_var.npy");
        write_npy(&path, &[m, k, k], &blocks)?;
        files.push(path);
        header.extend(["example", "class", "logit", "var_f", "p_map", "p_probit"]);
        for i in 0..m {
            let fi: Vec<f64> = (0..k).map(|c| f[(i, c)]).collect();
            let var: Vec<f64> = (0..k).map(|c| blocks[i * k * k + c * k + c]).collect();
            let (pm, pp) = (softmax(&fi), probit(&fi, &var));
            if let Some(t) = &targets {
                let label = t[i] as usize;
                nll -= pp[label].ln();
                hits += usize::from(argmax(&pp) == label);
            }
            for c in 0..k {
                table.push(vec![
                    i.to_string(),
                    c.to_string(),
                    num(fi[c]),
                    num(var[c]),
                    num(pm[c]),
                    num(pp[c]),
                ]);
            }
        }
    } else {
        let gp = Dnn2Gp::new(&lin, delta, space, ctx.memory)?;
        warn(&mut warnings, gp.warnings());
        used_space = gp.space;
        let diag = match hessian {
            HessianStructure::Diag => Some(LaplaceGgn::fit(&lin, delta, hessian, ctx.memory)?),
            HessianStructure::Full => None,
        };
        let pred = gp_predict(ctx, &gp, diag.as_ref(), net, &w, x, xs.as_ref())?;
        warn(&mut warnings, pred.clamped.clone());
        if kind == LikelihoodKind::Gaussian {
            header.extend(["example", "output", "mean", "var_f", "var_y"]);
            let noise = file.sigma * file.sigma;
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
        } else {
            header.extend(["example", "logit", "var_f", "p_map", "p_probit"]);
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
        }
    }
    let path = out.path().join("predictions.csv");
    write_csv(&path, &header, &table)?;
    files.push(path);
    let mf = m as f64;
    let regression = kind == LikelihoodKind::Gaussian;
    let summary = PredictSummary {
        inputs: m,
        likelihood: file.likelihood.clone(),
        delta,
        hessian,
        space: used_space,
        test_mse: targets
            .as_ref()
            .filter(|_| regression)
            .map(|_| se / (mf * k as f64)),
        test_accuracy: targets
            .as_ref()
            .filter(|_| !regression)
            .map(|_| hits as f64 / mf),
        test_nll: targets.as_ref().map(|_| nll / mf),
        warnings,
    };
    let path = out.path().join("predict.json");
    write_json(&path, &summary)?;
    files.push(path);
    println!(
        "predicted {m} inputs with {} {} (δ = {delta}, {hessian} posterior, {} space){}",
        net.spec(),
        file.likelihood,
        used_space,
        match (summary.test_mse, summary.test_accuracy, summary.test_nll) {
            (Some(mse), _, Some(nll)) => format!(": MSE {mse:.5}, NLL {nll:.4}"),
            (_, Some(acc), Some(nll)) => format!(": accuracy {:.2}%, NLL {nll:.4}", 100.0 * acc),
            _ => String::new(),
        }
    );
    out.commit(&files)
}

/// The index of the largest entry.
fn argmax(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}
