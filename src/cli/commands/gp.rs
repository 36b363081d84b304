//! `gp`: the Laplace-GGN posterior and the DNN2GP GP of a saved model.

use anyhow::Result;
use serde::Serialize;

use crate::cli::args::GpCmd;
use crate::cli::class_report::{class_predictive, scores};
use crate::cli::ctx::{at_least, fmt_g, parse_grid, positive, warn, Ctx};
use crate::cli::gp_report::{full_or_diag, gp_report, write_gp_summary, write_kernel};
use crate::cli::model_dir::{load_fitted, Fitted};
use crate::cli::outdir::OutDir;
use crate::cli::sources::data_override;
use dnn2gp::curvature::Linearization;
use dnn2gp::gp::classification::argmax_rows;
use dnn2gp::gp::{DeltaPath, Space};
use dnn2gp::io::{num, write_csv, write_json};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::linalg::{check_memory, mat_bytes};
use dnn2gp::nn::Network;
use dnn2gp::posterior::{HessianStructure, Laplace, LaplaceGgn, Posterior};
use dnn2gp::train::Stationarity;
use dnn2gp::{Error, Warning};

/// The options of `gp`, checked before any work.
pub(crate) struct GpOptions {
    pub(crate) delta: f64,
    pub(crate) grid: Option<Vec<f64>>,
    pub(crate) hessian: HessianStructure,
    mc_hessian: HessianStructure,
    space: Space,
}

pub(crate) fn run(ctx: &Ctx, a: GpCmd) -> Result<()> {
    if a.marglik && a.delta.is_some() {
        return Err(Error::option(
            "--marglik",
            "chooses δ by the evidence; give it or --delta, not both",
        )
        .into());
    }
    let mut fitted = load_fitted(&a.model, data_override(&a.data)?, "--data")?;
    let mut opts = GpOptions {
        delta: a.delta.unwrap_or(fitted.model.delta),
        grid: a
            .delta_grid
            .as_deref()
            .map(|g| parse_grid("--delta-grid", g))
            .transpose()?,
        hessian: full_or_diag("--hessian", a.hessian)?,
        mc_hessian: full_or_diag("--mc-hessian", a.mc_hessian)?,
        space: a.space,
    };
    dnn2gp::train::check_delta(opts.delta).map_err(|e| e.for_option("--delta"))?;
    positive("--samples", a.samples)?;
    at_least("--grid-points", a.grid_points, 2)?;
    let mut inputs = fitted.src.paths();
    inputs.push(&a.model);
    let out = OutDir::open("--out", &a.out, &inputs)?;
    if a.marglik {
        // laplace-torch's optimize_prior_precision(method="marglik"), and σ for regression.
        let (x, y) = (fitted.split.train.x.as_ref(), fitted.split.train.y.as_ref());
        let fit = dnn2gp::posterior::FitOptions {
            memory_limit: ctx.memory,
            ..Default::default()
        };
        let mut la = Laplace::fit(fitted.model.clone(), x, y, opts.hessian, &fit)?;
        let evidence = if fitted.kind == LikelihoodKind::Gaussian {
            la.optimize_noise_and_prior()?.log_marglik
        } else {
            la.optimize_prior_precision()?.log_marglik
        };
        (opts.delta, fitted.model.sigma) = (la.model().delta, la.model().sigma);
        fitted.lik = fitted.model.likelihood()?;
        println!(
            "by the Laplace evidence ({} GGN): δ = {:.6}{} (log evidence {evidence:.6})",
            opts.hessian,
            opts.delta,
            if fitted.kind == LikelihoodKind::Gaussian {
                format!(", σ = {:.6}", fitted.model.sigma)
            } else {
                String::new()
            }
        );
    }
    if fitted.kind == LikelihoodKind::Categorical {
        return gp_classifier(ctx, &a, fitted, &opts, out);
    }
    let Fitted {
        model,
        lik,
        src,
        split,
        warnings,
        ..
    } = fitted;
    let (net, w) = (model.net, model.w);
    let GpOptions {
        delta,
        grid,
        hessian,
        mc_hessian,
        space,
    } = opts;
    let (mut s, mut files, lin) = gp_report(
        ctx,
        out.path(),
        &net,
        lik.as_ref(),
        &src,
        &split,
        &w,
        delta,
        hessian,
        mc_hessian,
        space,
        a.samples,
        a.grid_points,
    )?;
    s.warnings.extend(warnings);
    println!(
        "GP of {} (P = {}, N = {}, {} space): log marglik {:.6} (Laplace evidence {:.6}, ‖∇L‖ = {:.2e}), {}",
        net.spec(),
        s.n_params,
        s.n_train,
        s.space,
        s.log_marglik,
        s.laplace_log_evidence,
        s.grad_norm,
        match s.test_accuracy {
            Some(acc) => format!("test accuracy {:.2}%, NLL {:.4}", 100.0 * acc, s.test_nll),
            None => format!("test MSE {:.5}", s.test_mse),
        }
    );
    if let Some(deltas) = grid {
        let path = DeltaPath::new(&lin, space, ctx.memory)?;
        let mut rows = Vec::with_capacity(deltas.len());
        let mut best = (f64::NAN, f64::NEG_INFINITY, 0);
        for (i, &d) in deltas.iter().enumerate() {
            let (lml, lap) = (
                path.log_marginal_likelihood(d)?,
                path.laplace_log_evidence(d)?,
            );
            if lml > best.1 {
                best = (d, lml, i);
            }
            rows.push(vec![num(d), num(lml), num(lap)]);
        }
        if path.floored_eigenvalues() > 0 {
            warn(
                &mut s.warnings,
                [Warning::new(
                    "floored_eigenvalues",
                    format!(
                        "--delta-grid: {} eigenvalues of the Gram matrix were below 0 (rounding) \
                         and were floored at 0",
                        path.floored_eigenvalues()
                    ),
                )],
            );
        }
        if deltas.len() > 1 && (best.2 == 0 || best.2 + 1 == deltas.len()) {
            warn(
                &mut s.warnings,
                [Warning::new(
                    "minimum_at_grid_edge",
                    format!(
                        "--delta-grid: the marginal likelihood is largest at δ = {}, an end of \
                         the grid; the optimum may lie beyond it: extend --delta-grid",
                        best.0
                    ),
                )],
            );
        }
        let mpath = out.path().join("marglik_path.csv");
        write_csv(
            &mpath,
            &["delta", "log_marglik", "laplace_log_evidence"],
            &rows,
        )?;
        files.push(mpath);
        println!(
            "at this MAP the GP marginal likelihood is largest at δ = {} ({:.4})",
            fmt_g(best.0),
            best.1
        );
    }
    write_gp_summary(out.path(), &s, &mut files)?;
    out.commit(&files)
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
pub(crate) fn gp_classifier(
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
