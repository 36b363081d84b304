//! `gp`: the Laplace-GGN posterior (every structure, all weights or the last layer) and the
//! DNN2GP GP of a saved model.

use anyhow::Result;
use serde::Serialize;

use crate::cli::args::GpCmd;
use crate::cli::class_report::ClassTable;
use crate::cli::ctx::{at_least, fmt_g, parse_grid, positive, Ctx};
use crate::cli::gp_report::{full_or_diag, gp_report, write_gp_summary, write_kernel};
use crate::cli::model_dir::{load_fitted, Fitted};
use crate::cli::outdir::OutDir;
use crate::cli::posterior::{self, Chosen};
use crate::cli::sources::data_override;
use crate::report::plot::significant;
use dnn2gp::gp::classification::argmax_rows;
use dnn2gp::gp::DeltaPath;
use dnn2gp::io::{num, write_csv, write_json};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::linalg::{check_memory, mat_bytes};
use dnn2gp::nn::Network;
use dnn2gp::posterior::{HessianStructure, Laplace, Link, Posterior, PriorPrecision, Subset};
use dnn2gp::train::Objective;
use dnn2gp::Warning;

/// `gp`.
pub(crate) fn run(ctx: &Ctx, a: GpCmd) -> Result<()> {
    let mut fitted = load_fitted(ctx, &a.model, data_override(&a.data)?, "--data")?;
    let grid = a
        .delta_grid
        .as_deref()
        .map(|g| parse_grid("--delta-grid", g))
        .transpose()?;
    let mc_hessian = full_or_diag("--mc-hessian", a.mc_hessian)?;
    positive("--samples", a.samples)?;
    at_least("--grid-points", a.grid_points, 2)?;
    let n = fitted.split.train.len();
    posterior::check(&a.posterior, fitted.kind, &fitted.model.net, n, ctx.memory)?;
    let categorical = fitted.kind == LikelihoodKind::Categorical;
    if categorical {
        let k = fitted.model.net.n_outputs();
        check_memory(
            "the kernel (NK×NK)",
            mat_bytes(n * k, n * k),
            ctx.memory,
            "use a subset of the data",
        )?;
    }
    let mut inputs = fitted.src.paths();
    inputs.push(&a.model);
    let out = OutDir::open("--out", &a.out, &inputs)?;
    // The structured or last-layer posterior, or the prior and noise by the evidence; the full
    // posterior over all weights is the GP's own.
    let mut chosen = Chosen::Model;
    let trained_at = (fitted.model.delta, fitted.model.sigma);
    let la = if categorical || posterior::needs_fit(&a.posterior) {
        let (x, y) = (fitted.split.train.x.as_ref(), fitted.split.train.y.as_ref());
        let mut la = posterior::fit(ctx, fitted.model.clone(), x, y, &a.posterior)?;
        chosen = posterior::choose_prior(&mut la, &a.posterior)?;
        if chosen == Chosen::Evidence {
            println!(
                "by the Laplace evidence ({} GGN over {}): {}{} (log evidence {:.6})",
                la.structure(),
                la.subset().weights(),
                posterior::describe_prior(la.prior_precision(), Some(6)),
                if fitted.kind == LikelihoodKind::Gaussian {
                    format!(", σ = {:.6}", la.model().sigma)
                } else {
                    String::new()
                },
                la.log_marginal_likelihood(None, None)?
            );
        }
        (fitted.model.delta, fitted.model.sigma) = (la.model().delta, la.model().sigma);
        fitted.lik = fitted.model.likelihood()?;
        Some(la)
    } else {
        None
    };
    // w* is the MAP at the δ and σ it was trained with, not at those the evidence chose.
    let retrain;
    let ctx = if chosen == Chosen::Evidence {
        let (delta, sigma) = (fitted.model.delta, fitted.model.sigma);
        let noise = |s: f64| match fitted.kind {
            LikelihoodKind::Gaussian => format!(", σ = {}", significant(s, 6)),
            _ => String::new(),
        };
        let noise_option = match fitted.kind {
            LikelihoodKind::Gaussian => format!(" --sigma {}", significant(sigma, 6)),
            _ => String::new(),
        };
        // `dnn2gp train` trains chains of layers; a graph from ONNX is retrained where it came
        // from.
        let how = if fitted.model.net.chain().is_some() {
            format!(
                "`dnn2gp train … --delta {}{noise_option}`",
                significant(delta, 6)
            )
        } else {
            "where the network was trained, then `dnn2gp import --onnx` again".to_string()
        };
        retrain = ctx.with_advice(format!(
            "the evidence chose δ = {}{} for weights trained at δ = {}{}: retrain at the chosen \
             values ({how}) and fit again for the exact identities",
            significant(delta, 6),
            noise(sigma),
            significant(trained_at.0, 6),
            noise(trained_at.1),
        ));
        &retrain
    } else {
        ctx
    };
    if categorical {
        let la = la.expect("fitted above");
        return classifier(ctx, &a, fitted, (la, chosen), grid.as_deref(), out);
    }
    let structured =
        a.posterior.structure() != HessianStructure::Full || a.posterior.weights() != Subset::All;
    let Fitted {
        model,
        lik,
        src,
        split,
        warnings,
        ..
    } = fitted;
    let (net, w, delta) = (&model.net, &model.w, model.delta);
    let posterior = la.as_ref().filter(|_| structured);
    let (mut s, mut files, lin) = gp_report(
        ctx,
        out.path(),
        net,
        lik.as_ref(),
        &src,
        &split,
        w,
        delta,
        mc_hessian,
        a.space,
        a.samples,
        a.grid_points,
        posterior,
    )?;
    s.warnings.extend(warnings);
    println!(
        "GP of {} (P = {}, N = {}, {} space): log marglik {:.6} (Laplace evidence {:.6} of the {} \
         posterior over {}, ‖∇L‖ = {:.2e}), {}",
        net.spec(),
        s.n_params,
        s.n_train,
        s.space,
        s.log_marglik,
        s.laplace_log_evidence,
        s.hessian,
        s.subset.weights(),
        s.grad_norm,
        match s.test_accuracy {
            Some(acc) => format!("test accuracy {:.2}%, NLL {:.4}", 100.0 * acc, s.test_nll),
            None => format!("test MSE {:.5}", s.test_mse),
        }
    );
    if let Some(deltas) = grid {
        let path = DeltaPath::new(&lin, a.space, ctx.memory)?;
        let mut rows = Vec::with_capacity(deltas.len());
        let mut best = (f64::NAN, f64::NEG_INFINITY, 0);
        for (i, &d) in deltas.iter().enumerate() {
            let lml = path.log_marginal_likelihood(d)?;
            let lap = match posterior {
                Some(la) => la.log_marginal_likelihood(Some(d), None)?,
                None => path.laplace_log_evidence(d)?,
            };
            if lml > best.1 {
                best = (d, lml, i);
            }
            rows.push(vec![num(d), num(lml), num(lap)]);
        }
        if path.floored_eigenvalues() > 0 {
            ctx.warn(
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
        grid_edge(ctx, &mut s.warnings, &deltas, best.2, best.0);
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

/// Warns of a maximum at an end of `--delta-grid` (`at` its index, δ its value).
fn grid_edge(ctx: &Ctx, warnings: &mut Vec<Warning>, deltas: &[f64], at: usize, delta: f64) {
    if deltas.len() > 1 && (at == 0 || at + 1 == deltas.len()) {
        ctx.warn(
            warnings,
            [Warning::new(
                "minimum_at_grid_edge",
                format!(
                    "--delta-grid: the marginal likelihood is largest at δ = {delta}, an end of \
                     the grid; the optimum may lie beyond it: extend --delta-grid"
                ),
            )],
        );
    }
}

/// What `gp` writes to `gp.json` for a softmax model.
#[derive(Debug, Serialize)]
struct ClassifierSummary {
    delta: f64,
    /// The prior precision: one δ, or one per parameter tensor.
    prior_precision: PriorPrecision,
    prior: Chosen,
    hessian: HessianStructure,
    subset: Subset,
    n_train: usize,
    n_params: usize,
    classes: usize,
    /// `log p(D | θ*) − (δ/2)‖θ*‖² + (P/2) log δ − ½ log|H + δI|` of the posterior.
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
fn classifier(
    ctx: &Ctx,
    a: &GpCmd,
    fitted: Fitted,
    (la, chosen): (Laplace, Chosen),
    grid: Option<&[f64]>,
    out: OutDir,
) -> Result<()> {
    let Fitted {
        model,
        lik,
        split,
        warnings: model_warnings,
        ..
    } = fitted;
    let (net, w, delta) = (&model.net, &model.w, model.delta);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let (n, k, p) = (x.nrows(), net.n_outputs(), net.n_params());
    let stationarity = Objective {
        net,
        lik: lik.as_ref(),
        x,
        y,
        delta,
    }
    .stationarity(w);
    let mut warnings = model_warnings;
    ctx.warn(&mut warnings, la.weight_posterior().warnings());
    ctx.warn(&mut warnings, stationarity.warning(None));
    let mut files = Vec::new();
    write_kernel(out.path(), &net.ntk(w, x, x), delta, &mut files)?;
    let labels = argmax_rows(split.test.y.as_ref());
    let bar = ctx.bar(split.test.len() as u64, "predictive");
    let pred = la.predict_with(split.test.x.as_ref(), Link::Probit, Some(&bar))?;
    bar.finish_and_clear();
    let mc = Link::MonteCarlo {
        samples: a.samples,
        seed: 0,
    };
    let table = ClassTable::new(&pred, Link::Probit, &[mc])?;
    table.write(out.path(), Some(&labels), &mut files)?;
    let score = |name: &str| table.metrics(name, &labels);
    let (map, probit, mc) = (score("p_map")?, score("p_probit")?, score("p_mc")?);
    let evidence = la.log_marginal_likelihood(None, None)?;
    if let Some(deltas) = grid {
        // The Laplace evidence over δ from the posterior's eigenvalues.
        let rows = deltas
            .iter()
            .map(|&d| {
                Ok(vec![
                    num(d),
                    num(la.log_marginal_likelihood(Some(d), None)?),
                ])
            })
            .collect::<dnn2gp::Result<Vec<_>>>()?;
        let mpath = out.path().join("marglik_path.csv");
        write_csv(&mpath, &["delta", "laplace_log_evidence"], &rows)?;
        files.push(mpath);
    }
    let summary = ClassifierSummary {
        delta,
        prior_precision: la.prior_precision().clone(),
        prior: chosen,
        hessian: la.structure(),
        subset: la.subset(),
        n_train: n,
        n_params: p,
        classes: k,
        laplace_log_evidence: evidence,
        grad_norm: stationarity.grad_norm,
        grad_rel: stationarity.relative,
        test_accuracy_map: map.acc,
        test_nll_map: map.nll,
        test_accuracy_probit: probit.acc,
        test_nll_probit: probit.nll,
        test_accuracy_mc: mc.acc,
        test_nll_mc: mc.nll,
        mc_samples: a.samples,
        warnings,
    };
    let spath = out.path().join("gp.json");
    write_json(&spath, &summary)?;
    files.push(spath);
    println!(
        "Laplace-GGN of the softmax model {} (P = {p}, N = {n}, K = {k}, {} over {}, {} ({})): \
         evidence {evidence:.6}; test accuracy {:.2}% (probit; MAP {:.2}%), NLL {:.4} (probit), \
         {:.4} (MC), {:.4} (MAP)",
        net.spec(),
        la.structure(),
        la.subset().weights(),
        posterior::describe_prior(la.prior_precision(), None),
        chosen,
        100.0 * probit.acc,
        100.0 * map.acc,
        probit.nll,
        mc.nll,
        map.nll
    );
    out.commit(&files)
}
