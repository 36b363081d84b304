//! `predict`: the predictive of a saved model at new inputs, from its Laplace-GGN posterior
//! (the DNN2GP GP for Gaussian and Bernoulli likelihoods; the weight-space GLM predictive for
//! the categorical, whose Λ has no inverse).

use std::path::{Path, PathBuf};

use anyhow::Result;
use faer::{Mat, MatRef};
use serde::Serialize;

use dnn2gp::curvature::Linearization;
use dnn2gp::data::csv::read_table;
use dnn2gp::data::mnist;
use dnn2gp::data::source::Source;
use dnn2gp::data::toy::ToyConfig;
use dnn2gp::gp::{predict_at, DeltaPath, Dnn2Gp, Space};
use dnn2gp::io::{num, read_npy, write_csv, write_json, write_npy};
use dnn2gp::likelihood::classification::{probit, sigmoid};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::linalg::{check_memory, mat_bytes};
use dnn2gp::nn::{Network, Sequential};
use dnn2gp::posterior::fitted::{blocks_by_input_block, class_probabilities, inputs_per_block};
use dnn2gp::posterior::Link;
use dnn2gp::posterior::{HessianStructure, LaplaceGgn};
use dnn2gp::train::Stationarity;
use dnn2gp::{Error, Warning};

use super::args::{GpCmd, PredictCmd};
use super::commands::{
    full_or_diag, load_fitted, one_data_set, positive, warn, write_kernel, Ctx, Fitted, GpOptions,
};
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
    dnn2gp::train::check_delta(delta)?;
    let hessian = full_or_diag("--hessian", &a.hessian)?;
    let space: Space = a.space.parse()?;
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

/// `--train-data`: one training set, read from `$DNN2GP_DATA` (default `data`) for the named
/// data sets.
fn train_data(spec: Option<&str>) -> Result<Option<Source>> {
    let dir = std::env::var_os("DNN2GP_DATA").map_or_else(|| "data".into(), PathBuf::from);
    spec.map(|s| {
        one_data_set(Source::parse(
            s,
            &dir,
            ToyConfig::default(),
            1,
            None,
            false,
        )?)
    })
    .transpose()
}

/// The index of the largest entry.
fn argmax(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// The GLM predictive of a softmax model at new inputs: logits `f_{w*}(x)`, the K×K blocks of
/// `J Σ Jᵀ`, and the class probabilities at the MAP, by the probit approximation and by Monte
/// Carlo (`f ~ N(f_{w*}(x), J Σ Jᵀ)` through the softmax) — laplace-torch's `glm` predictive
/// with its `probit` and `mc` links.
pub(super) struct ClassPredictive {
    logits: Mat<f64>,
    blocks: Vec<f64>,
    p_map: Vec<Vec<f64>>,
    pub(super) p_probit: Vec<Vec<f64>>,
    pub(super) p_mc: Vec<Vec<f64>>,
}

/// [`ClassPredictive`] at `xs` under the posterior `post`, with `mc_samples` draws per input.
pub(super) fn class_predictive(
    ctx: &Ctx,
    post: &LaplaceGgn,
    net: &dyn Network,
    w: &[f64],
    xs: MatRef<'_, f64>,
    mc_samples: usize,
    seed: u64,
) -> Result<ClassPredictive> {
    let (m, k, p) = (xs.nrows(), net.n_outputs(), net.n_params());
    // The Jacobian a block of inputs at a time (256 MiB or one input).
    check_memory(
        "the Jacobian of one input (K×P)",
        mat_bytes(inputs_per_block(k, p, m) * k, p),
        ctx.memory,
        "use a smaller network",
    )?;
    let mut blocks = blocks_by_input_block((k, p), xs, &|x| net.jacobian(w, x), &|j| {
        post.functional_covariance_blocks(j, k)
    });
    let mut logits = net.forward(w, xs);
    // One Bernoulli logit f is the softmax of [0, f] with covariance [[0, 0], [0, v]]: the same
    // probabilities (1 − s(f), s(f)), by every link, for the two classes.
    if k == 1 {
        logits = Mat::from_fn(m, 2, |i, c| if c == 1 { logits[(i, 0)] } else { 0.0 });
        blocks = blocks.iter().flat_map(|&v| [0.0, 0.0, 0.0, v]).collect();
    }
    let rows = |p: Mat<f64>| -> Vec<Vec<f64>> {
        (0..p.nrows())
            .map(|i| (0..p.ncols()).map(|c| p[(i, c)]).collect())
            .collect()
    };
    let zero = vec![0.0; blocks.len()];
    let p_map = rows(class_probabilities(&logits, &zero, Link::Probit)?);
    let p_probit = rows(class_probabilities(&logits, &blocks, Link::Probit)?);
    let p_mc = rows(class_probabilities(
        &logits,
        &blocks,
        Link::MonteCarlo {
            samples: mc_samples,
            seed,
        },
    )?);
    Ok(ClassPredictive {
        logits,
        blocks,
        p_map,
        p_probit,
        p_mc,
    })
}

/// Accuracy and mean negative log probability of the labels under probabilities `p`.
pub(super) fn scores(p: &[Vec<f64>], labels: &[usize]) -> (f64, f64) {
    let n = labels.len().max(1) as f64;
    let hits = p
        .iter()
        .zip(labels)
        .filter(|(p, &l)| argmax(p) == l)
        .count();
    let nll: f64 = p
        .iter()
        .zip(labels)
        .map(|(p, &l)| -p[l].max(f64::MIN_POSITIVE).ln())
        .sum();
    (hits as f64 / n, nll / n)
}

impl ClassPredictive {
    /// Writes `predictions.csv` (one row per input and class: logit, `var_f`, `p_map`,
    /// `p_probit`, `p_mc`, and `y` when labels are given) and `f_var.npy` (M×K×K).
    pub(super) fn write(
        &self,
        dir: &Path,
        labels: Option<&[usize]>,
        files: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let (m, k) = (self.logits.nrows(), self.logits.ncols());
        let path = dir.join("f_var.npy");
        write_npy(&path, &[m, k, k], &self.blocks)?;
        files.push(path);
        let mut header = vec!["example", "class"];
        if labels.is_some() {
            header.push("y");
        }
        header.extend(["logit", "var_f", "p_map", "p_probit", "p_mc"]);
        let mut rows = Vec::with_capacity(m * k);
        for i in 0..m {
            for c in 0..k {
                let mut r = vec![i.to_string(), c.to_string()];
                if let Some(l) = labels {
                    r.push(u8::from(l[i] == c).to_string());
                }
                r.extend([
                    num(self.logits[(i, c)]),
                    num(self.blocks[i * k * k + c * k + c]),
                    num(self.p_map[i][c]),
                    num(self.p_probit[i][c]),
                    num(self.p_mc[i][c]),
                ]);
                rows.push(r);
            }
        }
        let path = dir.join("predictions.csv");
        write_csv(&path, &header, &rows)?;
        files.push(path);
        Ok(())
    }
}

/// What `gp` writes to `gp.json` for a softmax model.
#[derive(Debug, Serialize)]
struct ClassifierSummary {
    delta: f64,
    hessian: HessianStructure,
    n_train: usize,
    n_params: usize,
    classes: usize,
    /// `log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|J'ΛJ + δI|`.
    laplace_log_evidence: f64,
    grad_norm: f64,
    grad_rel: f64,
    /// On the test set: accuracy and mean −log p(label) at the MAP, by probit, by Monte Carlo.
    test_accuracy_map: f64,
    test_nll_map: f64,
    test_accuracy_probit: f64,
    test_nll_probit: f64,
    test_accuracy_mc: f64,
    test_nll_mc: f64,
    mc_samples: usize,
    warnings: Vec<Warning>,
}

/// `gp` on a softmax model: its Λ has no inverse, so there are no pseudo-targets and no GP
/// marginal likelihood; the Laplace-GGN posterior gives the kernel `δ⁻¹JJᵀ`, the GLM predictive
/// on the test set (logits, K×K blocks, MAP, probit and Monte Carlo probabilities, accuracy and
/// NLL) and the Laplace evidence, over `--delta-grid` too.
pub(super) fn gp_classifier(
    ctx: &Ctx,
    a: &GpCmd,
    fitted: Fitted,
    opts: &GpOptions,
    out: OutDir,
) -> Result<()> {
    let Fitted {
        model,
        lik,
        split,
        warnings: model_warnings,
        ..
    } = fitted;
    let (net, w) = (&model.net, &model.w);
    let (delta, hessian) = (opts.delta, opts.hessian);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let (n, k, p) = (x.nrows(), net.n_outputs(), net.n_params());
    check_memory(
        "the kernel (NK×NK)",
        mat_bytes(n * k, n * k),
        ctx.memory,
        "use a subset of the data",
    )?;
    let lin = Linearization::checked(net, lik.as_ref(), x, y, w, ctx.memory)?;
    let post = LaplaceGgn::fit(&lin, delta, hessian, ctx.memory)?;
    let stationarity = Stationarity::new(&lin.loss_gradient(), w, delta);
    let mut warnings = model_warnings;
    warn(&mut warnings, post.warnings());
    warn(&mut warnings, stationarity.warning(None));
    let mut files = Vec::new();
    write_kernel(out.path(), &net.ntk(w, x, x), delta, &mut files)?;
    let labels = argmax_rows(split.test.y.as_ref());
    let cp = class_predictive(ctx, &post, net, w, split.test.x.as_ref(), a.samples, 0)?;
    cp.write(out.path(), Some(&labels), &mut files)?;
    let (acc_map, nll_map) = scores(&cp.p_map, &labels);
    let (acc_probit, nll_probit) = scores(&cp.p_probit, &labels);
    let (acc_mc, nll_mc) = scores(&cp.p_mc, &labels);
    let evidence = post.log_marginal_likelihood(&lin)?;
    if let Some(deltas) = &opts.grid {
        // The Laplace evidence over δ: the GGN's eigenvalues once (full), or its diagonal.
        let path = match hessian {
            HessianStructure::Full => Some(DeltaPath::laplace(&lin, ctx.memory)?),
            _ => None,
        };
        let h = lin.ggn_diag();
        let mut rows = Vec::with_capacity(deltas.len());
        for &d in deltas {
            let e = match &path {
                Some(path) => path.laplace_log_evidence(d)?,
                None => LaplaceGgn::from_ggn_diagonal(w.clone(), &h, d)?
                    .log_marginal_likelihood(&lin)?,
            };
            rows.push(vec![num(d), num(e)]);
        }
        let mpath = out.path().join("marglik_path.csv");
        write_csv(&mpath, &["delta", "laplace_log_evidence"], &rows)?;
        files.push(mpath);
    }
    let summary = ClassifierSummary {
        delta,
        hessian,
        n_train: n,
        n_params: p,
        classes: k,
        laplace_log_evidence: evidence,
        grad_norm: stationarity.grad_norm,
        grad_rel: stationarity.relative,
        test_accuracy_map: acc_map,
        test_nll_map: nll_map,
        test_accuracy_probit: acc_probit,
        test_nll_probit: nll_probit,
        test_accuracy_mc: acc_mc,
        test_nll_mc: nll_mc,
        mc_samples: a.samples,
        warnings,
    };
    let spath = out.path().join("gp.json");
    write_json(&spath, &summary)?;
    files.push(spath);
    println!(
        "Laplace-GGN of the softmax model {} (P = {p}, N = {n}, K = {k}, {hessian}): evidence \
         {evidence:.6}; test accuracy {:.2}% (probit), NLL {nll_probit:.4} (probit), {nll_mc:.4} \
         (MC), {nll_map:.4} (MAP)",
        net.spec(),
        100.0 * acc_probit
    );
    out.commit(&files)
}

/// The index of the largest entry of each row.
fn argmax_rows(m: MatRef<'_, f64>) -> Vec<usize> {
    (0..m.nrows())
        .map(|i| argmax(&m.row(i).iter().copied().collect::<Vec<_>>()))
        .collect()
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
