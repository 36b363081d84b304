//! `vi`: VOGN training, the DNN-VI and DNN2GP-VI predictives, the VI marginal likelihood and
//! the kernel during training.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::cli::args::ViCmd;
use crate::cli::ctx::{at_least, positive, Ctx};
use crate::cli::gp_report::write_comparison;
use crate::cli::model_dir::write_history;
use crate::cli::outdir::OutDir;
use crate::cli::training::{setup, vogn_config, vogn_options, VOGN_OPTIONS};
use crate::report::plot::{save, HeatPanel, HeatmapGrid};
use dnn2gp::curvature::Precision;
use dnn2gp::data::source::Source;
use dnn2gp::data::Split;
use dnn2gp::experiments::regression::{compare, mc_predictive};
use dnn2gp::io::{write_csv, write_json, write_npy, write_npy_mat};

use dnn2gp::nn::{Graph, Network};

use dnn2gp::train::vogn::{self, Snapshot, VognConfig};
use dnn2gp::train::Objective;
use dnn2gp::Warning;

/// What `vi` writes to `vi.json`.
#[derive(Debug, Serialize)]
struct ViSummary {
    architecture: String,
    n_params: usize,
    delta: f64,
    sigma: f64,
    vogn: VognConfig,
    /// The mean step α used.
    mean_step: f64,
    steps: usize,
    /// `E_q[log p(ỹ)]` estimated over the samples of q: the expected GP marginal likelihood
    /// under q, not the evidence of q (by Jensen, `log E_q[p(ỹ)] ≥ E_q[log p(ỹ)]`, so it is
    /// a lower bound of the log of the averaged evidence).
    log_marglik_converged: f64,
    gp_samples: usize,
    grad_norm_at_mean: f64,
    grad_rel_at_mean: f64,
    jitter: f64,
    seconds: f64,
    warnings: Vec<Warning>,
}

pub(crate) fn run(ctx: &Ctx, a: ViCmd) -> Result<()> {
    let t0 = Instant::now();
    let (src, split, net, lik) = setup(ctx, &a.data, &a.model)?;
    let delta = a.model.delta;
    let mut cfg = vogn_config(&a.vogn, a.seed)?;
    cfg.snapshot_every = a.kernel_every;
    positive("--samples", a.samples)?;
    at_least("--grid-points", a.grid_points, 2)?;
    at_least("--kernel-points", a.kernel_points, 2)?;
    let out = OutDir::open("--out", &a.out, &src.paths())?;
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let obj = Objective::on(&net, lik.as_ref(), &split.train, delta);
    let pb = ctx.bar(cfg.epochs as u64, "VOGN");
    let run = vogn::run(&obj, &net.init(a.seed), &cfg, Some(&pb))
        .map_err(|e| vogn_options(e, VOGN_OPTIONS))?;
    pb.finish_and_clear();
    let q = &run.state;
    let mut files = Vec::new();
    let p = net.n_params();
    let mpath = out.path().join("mu.npy");
    write_npy(&mpath, &[p], &q.mu)?;
    let ppath = out.path().join("precision.npy");
    match &q.precision {
        Precision::Diag(d) => write_npy(&ppath, &[p], d)?,
        full => write_npy_mat(&ppath, full.dense().as_ref())?,
    }
    let hpath = out.path().join("history.csv");
    write_history(&hpath, "loss_estimate", &run.history)?;
    files.extend([mpath, ppath, hpath]);
    // The converged GP at samples of q: log marglik and predictive averaged over the samples.
    let grid = src.plot_grid(&split, a.grid_points);
    let converged = dnn2gp::experiments::vi::converged_gp(
        &net,
        lik.as_ref(),
        x,
        y,
        &q.mu,
        &q.precision,
        delta,
        a.vogn.vi_gp_samples,
        cfg.seed,
        grid.as_ref().map(|(_, g)| g.as_ref()),
        ctx.memory,
    )?;
    let (lml, jitter) = (converged.log_marglik, converged.jitter);
    let mut warnings = Vec::new();
    ctx.warn(&mut warnings, converged.warnings);
    if let (Some((xs, grid)), Some(pred)) = (grid, converged.prediction) {
        ctx.warn(
            &mut warnings,
            pred.clamped.as_ref().map(|w| w.on("the plotting grid")),
        );
        let mc = mc_predictive(
            &net,
            &mut |rng| q.precision.sample(&q.mu, rng),
            grid.as_ref(),
            a.samples,
            0,
        );
        let net_mean: Vec<f64> = net
            .forward(&q.mu, grid.as_ref())
            .col(0)
            .iter()
            .copied()
            .collect();
        let mc_mean = mc.0.clone();
        let cmp = compare(
            net_mean,
            pred,
            mc,
            lik.as_ref(),
            x,
            &split.train.y_vec(),
            &xs,
            grid.as_ref(),
        )?;
        files.extend(write_comparison(
            out.path(),
            &cmp,
            &split,
            ["DNN-VI", "DNN2GP-VI"],
            &mc_mean,
            delta,
            lik.as_ref(),
        )?);
    }
    if !run.snapshots.is_empty() {
        files.extend(kernel_evolution(
            out.path(),
            &net,
            &src,
            &split,
            &run.snapshots,
            cfg.beta,
            delta,
            a.kernel_points,
        )?);
    }
    let stationarity = obj.stationarity(&q.mu);
    let summary = ViSummary {
        architecture: net.spec(),
        n_params: p,
        delta,
        sigma: a.model.sigma,
        vogn: cfg.clone(),
        mean_step: cfg.mean_step(),
        steps: q.t,
        log_marglik_converged: lml,
        gp_samples: a.vogn.vi_gp_samples,
        grad_norm_at_mean: stationarity.grad_norm,
        grad_rel_at_mean: stationarity.relative,
        jitter,
        seconds: t0.elapsed().as_secs_f64(),
        warnings,
    };
    let spath = out.path().join("vi.json");
    write_json(&spath, &summary)?;
    files.push(spath);
    println!(
        "VOGN on {} ({}, P = {}): {} steps, converged GP log marglik {:.4}, ‖∇L(μ)‖ = {:.2e}",
        split.name,
        net.spec(),
        p,
        q.t,
        lml,
        summary.grad_norm_at_mean
    );
    out.commit(&files)
}

/// The kernel `J(x) S_t J(x')ᵀ` of Theorem 2 on fixed inputs at the kept steps:
/// `kernels.npy` (T×M×M), `kernel_steps.csv`, and a figure of up to six of them. The Jacobians
/// are taken at the mean μ_t, not at the step's sample w_t: the sample is a random draw each
/// step, and the kernel at μ_t is the one the run converges to without that noise (Theorem 2
/// holds at the sample; the two agree as Σ_t shrinks).
#[allow(clippy::too_many_arguments)]
fn kernel_evolution(
    out: &Path,
    net: &Graph,
    src: &Source,
    split: &Split,
    snapshots: &[Snapshot],
    beta: f64,
    delta: f64,
    points: usize,
) -> Result<Vec<PathBuf>> {
    let inputs = match src.plot_grid(split, points) {
        Some((_, grid)) => grid,
        None => split
            .train
            .x
            .as_ref()
            .subrows(0, points.min(split.train.len()))
            .to_owned(),
    };
    let m = inputs.nrows() * net.n_outputs();
    let kernels = dnn2gp::experiments::vi::kernel_evolution(
        net,
        snapshots,
        inputs.as_ref(),
        beta,
        delta,
        u128::MAX,
    )?;
    let flat: Vec<f64> = kernels
        .iter()
        .flat_map(|k| (0..m).flat_map(move |i| (0..m).map(move |j| k[(i, j)])))
        .collect();
    let kpath = out.join("kernels.npy");
    write_npy(&kpath, &[kernels.len(), m, m], &flat)?;
    let spath = out.join("kernel_steps.csv");
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| vec![i.to_string(), s.t.to_string()])
        .collect();
    write_csv(&spath, &["index", "step"], &rows)?;
    let shown = 6.min(kernels.len());
    let pick: Vec<usize> = (0..shown)
        .map(|i| i * (kernels.len() - 1) / (shown - 1).max(1))
        .collect();
    let fig = HeatmapGrid {
        title: "GP kernel J(x) Sₜ J(x')ᵀ during VOGN training (J at the mean μₜ; each panel on \
                its own scale)"
            .into(),
        panels: pick
            .iter()
            .map(|&i| {
                HeatPanel::linear(format!("step {}", snapshots[i].t), kernels[i].clone())
                    .axes("input x", "input x'")
            })
            .collect(),
        diverging: true,
        shared_scale: false,
        row_classes: None,
        class_names: Vec::new(),
    };
    let mut files = vec![kpath, spath];
    files.extend(save(&fig, &out.join("kernel_evolution"))?);
    Ok(files)
}
