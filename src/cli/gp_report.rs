//! The GP report of a regression or Bernoulli model (`gp`, `demo`): the kernel, the test
//! predictive, the 1-D comparison figure and `gp.json`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::cli::ctx::{fmt_g, Ctx};
use crate::report::plot::{save, RegressionFigure};
use crate::report::regression::panels;
use dnn2gp::curvature::Linearization;
use dnn2gp::data::source::Source;
use dnn2gp::data::Split;
use dnn2gp::experiments;
use dnn2gp::experiments::regression::{Comparison, GpReportOptions};
use dnn2gp::gp::Space;
use dnn2gp::io::{num, write_csv, write_json, write_npy_mat};
use dnn2gp::likelihood::Likelihood;
use dnn2gp::nn::{Graph, Network};
use dnn2gp::posterior::{HessianStructure, Laplace, Posterior, Subset};
use dnn2gp::{Error, Warning};

/// Summary of a GP fit, written as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct GpSummary {
    pub(crate) delta: f64,
    pub(crate) sigma: f64,
    /// The posterior whose evidence and variance are reported (full over all weights: the
    /// GP's own).
    pub(crate) hessian: HessianStructure,
    pub(crate) subset: Subset,
    pub(crate) space: Space,
    pub(crate) n_train: usize,
    pub(crate) n_params: usize,
    pub(crate) log_marglik: f64,
    pub(crate) laplace_log_evidence: f64,
    pub(crate) stationarity_gap: f64,
    pub(crate) grad_norm: f64,
    pub(crate) grad_rel: f64,
    pub(crate) jitter: f64,
    /// Gaussian: MSE of the network's output; Bernoulli: the Brier score of the probit
    /// probabilities.
    pub(crate) test_mse: f64,
    /// Gaussian: −log of the predictive density of y; Bernoulli: −log of the probit
    /// probability of the label.
    pub(crate) test_nll: f64,
    /// Bernoulli: the fraction of labels the probit probability gets right.
    pub(crate) test_accuracy: Option<f64>,
    pub(crate) warnings: Vec<Warning>,
}

/// Fits the GP ([`dnn2gp::experiments::regression::gp_report`]) and writes kernel, test
/// predictive, figure and summary.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gp_report(
    ctx: &Ctx,
    out: &Path,
    net: &Graph,
    lik: &dyn Likelihood,
    src: &Source,
    split: &Split,
    w: &[f64],
    delta: f64,
    mc_hessian: HessianStructure,
    space: Space,
    samples: usize,
    grid_points: usize,
    posterior: Option<&Laplace>,
) -> Result<(GpSummary, Vec<PathBuf>, Linearization)> {
    let grid = src.plot_grid(split, grid_points);
    let opts = GpReportOptions {
        delta,
        mc_hessian,
        space,
        samples,
        memory_limit: ctx.memory,
    };
    let (r, lin) = experiments::regression::gp_report(
        net,
        lik,
        split,
        w,
        grid.as_ref().map(|(xs, g)| (xs.as_slice(), g.as_ref())),
        &opts,
        posterior.map(|p| p as &dyn Posterior),
    )?;
    let mut warnings = Vec::new();
    ctx.warn(&mut warnings, r.warnings);
    let mut files = Vec::new();
    write_kernel(out, &r.ntk, delta, &mut files)?;
    let (t, k) = (&r.test, net.n_outputs());
    let rows: Vec<Vec<String>> = (0..t.y.len())
        .map(|m| {
            vec![
                (m / k).to_string(),
                (m % k).to_string(),
                num(t.y[m]),
                num(t.net_mean[m]),
                num(t.gp_mean[m]),
                num(t.var_f[m]),
                num(t.var_y[m]),
            ]
        })
        .collect();
    let tpath = out.join("test_predictive.csv");
    write_csv(
        &tpath,
        &[
            "example", "output", "y", "net_mean", "gp_mean", "var_f", "var_y",
        ],
        &rows,
    )?;
    files.push(tpath);
    if let Some(cmp) = &r.comparison {
        // Each panel names its posterior: the sampled one, and the one whose GP is drawn.
        let gp = match posterior {
            Some(p) if p.subset() == Subset::LastLayer => {
                format!("DNN2GP-Laplace ({}, last layer)", p.structure())
            }
            Some(p) => format!("DNN2GP-Laplace ({})", p.structure()),
            None => "DNN2GP-Laplace (full)".to_string(),
        };
        files.extend(write_comparison(
            out,
            cmp,
            split,
            [&format!("DNN-Laplace (MC, {mc_hessian})"), &gp],
            &cmp.net_mean,
            delta,
            lik,
        )?);
    }
    let summary = GpSummary {
        delta,
        sigma: lik.observation_variance(&[0.0])[0].sqrt(),
        hessian: posterior.map_or(HessianStructure::Full, |p| p.structure()),
        subset: posterior.map_or(Subset::All, |p| p.subset()),
        space: r.space,
        n_train: split.train.len(),
        n_params: net.n_params(),
        log_marglik: r.log_marglik,
        laplace_log_evidence: r.laplace_log_evidence,
        stationarity_gap: r.stationarity_gap,
        grad_norm: r.stationarity.grad_norm,
        grad_rel: r.stationarity.relative,
        jitter: r.jitter,
        test_mse: t.mse,
        test_nll: t.nll,
        test_accuracy: t.accuracy,
        warnings,
    };
    Ok((summary, files, lin))
}

/// Writes `kernel.npy`, the DNN2GP kernel `δ⁻¹ J Jᵀ` on the training inputs, from the NTK.
pub(crate) fn write_kernel(
    out: &Path,
    ntk: &faer::Mat<f64>,
    delta: f64,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let path = out.join("kernel.npy");
    let m = ntk.nrows();
    write_npy_mat(
        &path,
        faer::Mat::from_fn(m, m, |i, j| ntk[(i, j)] / delta).as_ref(),
    )?;
    files.push(path);
    Ok(())
}

/// Writes `gp.json`.
pub(crate) fn write_gp_summary(
    out: &Path,
    summary: &GpSummary,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let spath = out.join("gp.json");
    write_json(&spath, summary)?;
    files.push(spath);
    Ok(())
}

/// Writes `predictive.csv` and the regression figure.
pub(crate) fn write_comparison(
    out: &Path,
    cmp: &Comparison,
    split: &Split,
    titles: [&str; 2],
    dnn2gp_mean: &[f64],
    delta: f64,
    lik: &dyn Likelihood,
) -> Result<Vec<PathBuf>> {
    let (header, rows) = cmp.table();
    let ppath = out.join("predictive.csv");
    write_csv(&ppath, &header, &rows)?;
    let fig = RegressionFigure {
        title: format!(
            "{} — δ = {}, σ = {}",
            split.name,
            fmt_g(delta),
            fmt_g(lik.observation_variance(&[0.0])[0].sqrt())
        ),
        panels: panels(
            cmp,
            &Source::plot_x(split),
            &split.train.y_vec(),
            titles,
            dnn2gp_mean,
        ),
        // Held-out points where they are not the training points themselves.
        test: if split.test.x == split.train.x {
            (Vec::new(), Vec::new())
        } else {
            (
                split.test.x.col(0).iter().copied().collect(),
                split.test.y.col(0).iter().copied().collect(),
            )
        },
    };
    let mut files = vec![ppath];
    files.extend(save(&fig, &out.join("regression"))?);
    Ok(files)
}

/// A `--hessian` of the GP report (`gp`, `predict`): full or diag; KFAC and low-rank
/// posteriors come from `evaluate`.
pub(crate) fn full_or_diag(option: &str, value: HessianStructure) -> Result<HessianStructure> {
    match value {
        h @ (HessianStructure::Kron | HessianStructure::LowRank) => Err(Error::option(
            option,
            format!(
                "{h}: this command's GP takes full or diag; {h} (and last-layer) posteriors are \
                 fitted by `dnn2gp evaluate --hessian {h}`"
            ),
        )
        .into()),
        h => Ok(h),
    }
}
