//! The commands: thin wrappers over the library that read inputs, write outputs and report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::report::plot::{save, RegressionFigure};
use crate::report::plot::{HeatPanel, HeatmapGrid};
use crate::report::regression::panels;
use crate::report::sweep::figure;
use crate::report::sweep::write_sweep;
use dnn2gp::curvature::Linearization;
use dnn2gp::curvature::Precision;
use dnn2gp::data::source::Source;
use dnn2gp::data::toy::ToyConfig;
use dnn2gp::data::{linspace, logspace, Split};
use dnn2gp::experiments;
use dnn2gp::experiments::regression::{compare, mc_predictive, Comparison, GpReportOptions};
use dnn2gp::gp::{DeltaPath, Space};
use dnn2gp::io::{num, read_npy, write_csv, write_json, write_npy, write_npy_mat};
use dnn2gp::likelihood::{Likelihood, LikelihoodKind};
use dnn2gp::linalg::{available_memory, check_memory, mat_bytes};
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::posterior::{HessianStructure, Laplace, Posterior};
use dnn2gp::select::{run_sweep, Method, SweepParam, SweepResult, SweepSpec};
use dnn2gp::train::model::{fingerprint, Model};
use dnn2gp::train::vogn::{self, Snapshot, VognConfig};
use dnn2gp::train::{fit_map, Adam, MapConfig, MapResult, Objective, Plateau};
use dnn2gp::{Error, Warning};

use super::args::{
    Cli, Command, DataArgs, DataCmd, DemoArgs, GpCmd, ImportCmd, ModelArgs, ModelDataArgs,
    ReproduceCmd, SweepCmd, TrainArgs, TrainCmd, ViCmd, VognArgs,
};
use super::images;
use super::outdir::OutDir;

/// Shared settings of one invocation.
pub(super) struct Ctx {
    pub(super) quiet: bool,
    pub(super) memory: u128,
}

impl Ctx {
    pub(super) fn bar(&self, len: u64, msg: &str) -> super::progress::Bar {
        super::progress::bar(self.quiet, len, msg)
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let memory = match cli.max_memory {
        Some(g) if g.is_finite() && g > 0.0 => (g * (1u64 << 30) as f64) as u128,
        Some(g) => {
            return Err(Error::Invalid(format!(
                "--max-memory must be a positive number of GiB, got {g}"
            ))
            .into())
        }
        None => available_memory(),
    };
    let ctx = Ctx {
        quiet: cli.quiet,
        memory,
    };
    match cli.command {
        Command::Demo(a) => demo(&ctx, a),
        Command::Train(a) => train(&ctx, a),
        Command::Import(a) => import(&ctx, a),
        Command::Gp(a) => gp(&ctx, a),
        Command::Sweep(a) => sweep(&ctx, a),
        Command::Vi(a) => vi(&ctx, a),
        Command::Reproduce(ReproduceCmd::Mnist(a)) => images::reproduce_mnist(&ctx, a),
        Command::Reproduce(ReproduceCmd::BinaryMnist(a)) => images::reproduce_binary(&ctx, a),
        Command::Data(DataCmd::Fetch(a)) => images::fetch(&ctx, a),
        Command::Predict(a) => super::predict::predict(&ctx, a),
        Command::Evaluate(a) => super::evaluate::evaluate(&ctx, a),
        Command::Bench(a) => {
            for _ in 0..a.reps.max(1) {
                for run in dnn2gp_bench::run(&a.workload, &a.baselines)? {
                    println!("{}", serde_json::to_string(&run)?);
                }
            }
            Ok(())
        }
    }
}

fn source(d: &DataArgs) -> Result<Source> {
    let is_toy = d.data.split(':').next() == Some("toy");
    let toy_options = [
        ("--sets", d.sets.is_some()),
        ("--toy-noise", d.toy_noise.is_some()),
        ("--toy-n", d.toy_n.is_some()),
        ("--toy-n-test", d.toy_n_test.is_some()),
        ("--data-seed", d.data_seed.is_some()),
    ];
    if let Some((option, _)) = toy_options.iter().find(|(_, given)| *given && !is_toy) {
        return Err(Error::Invalid(format!(
            "{option} applies to --data toy only, not to --data {}",
            d.data
        ))
        .into());
    }
    let defaults = ToyConfig::default();
    let noise: [f64; 3] = match &d.toy_noise {
        None => defaults.noise,
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|_| Error::Invalid("--toy-noise needs three values".into()))?,
    };
    if noise.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(Error::Invalid(format!(
            "--toy-noise values must be non-negative, got {noise:?}"
        ))
        .into());
    }
    let sets = d.sets.unwrap_or(1);
    positive("--sets", sets)?;
    let toy = ToyConfig {
        n_train: d.toy_n.unwrap_or(defaults.n_train),
        n_test: d.toy_n_test.unwrap_or(defaults.n_test),
        noise,
        seed: d.data_seed.unwrap_or(defaults.seed),
        ..defaults
    };
    positive("--toy-n", toy.n_train)?;
    positive("--toy-n-test", toy.n_test)?;
    Ok(Source::parse(
        &d.data,
        &d.data_dir,
        toy,
        sets,
        d.test.clone(),
        d.append_one,
    )?)
}

fn map_config(t: &TrainArgs) -> Result<MapConfig> {
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(Error::Invalid(format!("--lr must be positive, got {}", t.lr)).into());
    }
    if t.batch_size == Some(0) {
        return Err(Error::Invalid("--batch-size must be positive".into()).into());
    }
    if !(t.plateau_factor > 0.0 && t.plateau_factor < 1.0) {
        return Err(Error::Invalid(format!(
            "--plateau-factor must be in (0, 1), got {}",
            t.plateau_factor
        ))
        .into());
    }
    positive("--plateau-patience", t.plateau_patience)?;
    Ok(MapConfig {
        adam: Adam {
            lr: t.lr,
            plateau: (!t.no_plateau).then(|| Plateau {
                factor: t.plateau_factor,
                patience: t.plateau_patience,
                ..Plateau::default()
            }),
            ..Adam::default()
        },
        epochs: t.epochs,
        batch_size: t.batch_size,
        seed: t.seed,
        polish_iters: t.polish_iters,
        ..MapConfig::default()
    })
}

fn architecture(split: &Split, m: &ModelArgs) -> Result<Sequential> {
    let mut sizes = vec![split.train.x.ncols()];
    sizes.extend(&m.hidden);
    sizes.push(split.train.y.ncols());
    Ok(Sequential::mlp(sizes, m.activation.parse::<Activation>()?)?)
}

/// Refuses networks whose parameters and optimiser state (8 vectors of P) would not fit.
pub(super) fn check_parameter_memory(ctx: &Ctx, p: usize) -> Result<()> {
    Ok(check_memory(
        &format!("a network of {p} parameters (weights, gradients, optimiser state)"),
        8 * mat_bytes(p, 1),
        ctx.memory,
        "use a smaller network",
    )?)
}

/// The data source, its first split, the network and the likelihood of a command; checks δ.
fn setup(
    ctx: &Ctx,
    data: &DataArgs,
    model: &ModelArgs,
) -> Result<(Source, Split, Sequential, Box<dyn Likelihood>)> {
    let src = one_data_set(source(data)?)?;
    let kind = model.likelihood.parse::<LikelihoodKind>()?;
    if model.classes.is_some() && kind != LikelihoodKind::Categorical {
        return Err(Error::Invalid(format!(
            "--classes applies to --likelihood categorical, not {}",
            model.likelihood
        ))
        .into());
    }
    let split = prepare_split(src.load()?.remove(0), kind, model.classes, &data.data)?;
    let net = architecture(&split, model)?;
    check_parameter_memory(ctx, net.n_params())?;
    let lik = kind.build(model.sigma)?;
    dnn2gp::train::check_delta(model.delta)?;
    Ok((src, split, net, lik))
}

/// The split's targets in the likelihood's form ([`LikelihoodKind::prepare_targets`]); the
/// test targets get the training set's number of classes.
fn prepare_split(
    mut split: Split,
    kind: LikelihoodKind,
    classes: Option<usize>,
    data: &str,
) -> Result<Split> {
    let take = |m: &mut faer::Mat<f64>| std::mem::replace(m, faer::Mat::zeros(0, 0));
    split.train.y = kind.prepare_targets(take(&mut split.train.y), classes, data)?;
    let k = (kind == LikelihoodKind::Categorical).then(|| split.train.y.ncols());
    split.test.y = kind.prepare_targets(
        take(&mut split.test.y),
        k,
        &format!("the test set of {data}"),
    )?;
    Ok(split)
}

/// An architecture as `model.json` holds it: a spec string, or (older folders) an MLP's
/// `{"sizes": [...], "activation": "..."}`, read as the spec of that MLP.
fn architecture_spec<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Spec(String),
        Mlp {
            sizes: Vec<usize>,
            activation: Activation,
        },
    }
    match Stored::deserialize(d)? {
        Stored::Spec(s) => Ok(s),
        Stored::Mlp { sizes, activation } => Sequential::mlp(sizes, activation)
            .map(|n| n.spec())
            .map_err(serde::de::Error::custom),
    }
}

/// What `train` writes to `model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ModelFile {
    /// The architecture spec ([`Sequential::parse`]); folders written before spec strings
    /// hold an MLP's widths and activation.
    #[serde(deserialize_with = "architecture_spec")]
    pub(super) architecture: String,
    pub(super) likelihood: String,
    pub(super) sigma: f64,
    pub(super) delta: f64,
    pub(super) n_params: usize,
    pub(super) data: Source,
    pub(super) loss: f64,
    pub(super) grad_norm: f64,
    /// `‖∇L‖` relative to its scale (the stationarity rule); absent in older files.
    #[serde(default)]
    pub(super) grad_rel: f64,
    pub(super) epochs: usize,
    pub(super) polish_iters: usize,
    pub(super) seconds: f64,
}

fn fit(
    ctx: &Ctx,
    net: &Sequential,
    lik: &dyn Likelihood,
    split: &Split,
    delta: f64,
    cfg: &MapConfig,
    seed: u64,
) -> Result<MapResult> {
    let obj = Objective::on(net, lik, &split.train, delta);
    let pb = ctx.bar(cfg.epochs as u64, "training");
    let res = fit_map(&obj, &net.init(seed), cfg, Some(&pb))?;
    pb.finish_and_clear();
    Ok(res)
}

fn train(ctx: &Ctx, a: TrainCmd) -> Result<()> {
    let (src, split, net, lik) = setup(ctx, &a.data, &a.model)?;
    let cfg = map_config(&a.train)?;
    let out = OutDir::open("--out", &a.out, &src.paths())?;
    let t0 = Instant::now();
    let res = fit(
        ctx,
        &net,
        lik.as_ref(),
        &split,
        a.model.delta,
        &cfg,
        a.train.seed,
    )?;
    let files = write_model(
        out.path(),
        &net,
        lik.as_ref(),
        &a.model,
        src,
        &split,
        &res,
        t0,
    )?;
    println!(
        "trained {} (P = {}) on {}: loss {:.6}, ‖∇L‖ = {:.2e} after {} epochs + {} polish steps",
        net.spec(),
        net.n_params(),
        split.name,
        res.loss,
        res.grad_norm,
        res.epochs,
        res.polish_iters
    );
    out.commit(&files)
}

/// Writes a model folder (`model.json`, `params.npy`, `model.safetensors`, `history.csv`),
/// warning when `w` is not a stationary point of the loss on `split`.
#[allow(clippy::too_many_arguments)]
fn write_model(
    out: &Path,
    net: &Sequential,
    lik: &dyn Likelihood,
    m: &ModelArgs,
    data: Source,
    split: &Split,
    res: &MapResult,
    t0: Instant,
) -> Result<Vec<PathBuf>> {
    let stationarity = Objective::on(net, lik, &split.train, m.delta).stationarity(&res.w);
    if let Some(w) = stationarity.warning(None) {
        eprintln!("warning: {}", w.message);
    }
    let file = ModelFile {
        architecture: net.spec(),
        likelihood: lik.name().into(),
        sigma: m.sigma,
        delta: m.delta,
        n_params: net.n_params(),
        // Absolute paths: the model folder can be used from any working directory.
        data: data.absolute()?,
        loss: res.loss,
        grad_norm: res.grad_norm,
        grad_rel: stationarity.relative,
        epochs: res.epochs,
        polish_iters: res.polish_iters,
        seconds: t0.elapsed().as_secs_f64(),
    };
    save_model(out, &file, res, split)
}

/// `import`: a model folder from weights trained elsewhere (no training), for `gp`.
fn import(ctx: &Ctx, a: ImportCmd) -> Result<()> {
    let t0 = Instant::now();
    let (src, split, net, lik) = setup(ctx, &a.data, &a.model)?;
    let mut inputs = src.paths();
    inputs.push(&a.weights);
    let out = OutDir::open("--out", &a.out, &inputs)?;
    let w = dnn2gp::nn::weights::load(&a.weights, &net.param_layout())?;
    let obj = Objective::on(&net, lik.as_ref(), &split.train, a.model.delta);
    let (loss, g) = obj.value_grad(&w);
    let res = MapResult {
        w,
        loss,
        grad_norm: dnn2gp::linalg::norm(&g),
        epochs: 0,
        polish_iters: 0,
        final_lr: 0.0,
        history: Vec::new(),
    };
    let files = write_model(
        out.path(),
        &net,
        lik.as_ref(),
        &a.model,
        src,
        &split,
        &res,
        t0,
    )?;
    println!(
        "imported {} (P = {}) from {}: loss {:.6} on {}, ‖∇L‖ = {:.2e}",
        net.spec(),
        net.n_params(),
        a.weights.display(),
        res.loss,
        split.name,
        res.grad_norm
    );
    out.commit(&files)
}

fn save_model(
    dir: &Path,
    file: &ModelFile,
    res: &MapResult,
    split: &Split,
) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = [
        "params.npy",
        "model.safetensors",
        "history.csv",
        "model.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    write_npy(&files[0], &[res.w.len()], &res.w)?;
    let mut model = Model::new(
        Sequential::parse(&file.architecture)?,
        res.w.clone(),
        file.likelihood.parse()?,
        file.sigma,
        file.delta,
    )?;
    model.data = Some(fingerprint(split.train.x.as_ref(), split.train.y.as_ref()));
    model.save(&files[1], dnn2gp::nn::weights::StoredDtype::F64)?;
    write_history(&files[2], "loss", &res.history)?;
    write_json(&files[3], file)?;
    Ok(files)
}

/// Writes a per-epoch loss history as `epoch,<name>`.
fn write_history(path: &Path, name: &str, history: &[f64]) -> Result<()> {
    let rows: Vec<Vec<String>> = history
        .iter()
        .enumerate()
        .map(|(i, l)| vec![(i + 1).to_string(), num(*l)])
        .collect();
    Ok(write_csv(path, &["epoch", name], &rows)?)
}

/// A model folder's record (`model.json`) and its [`Model`] (architecture and hyperparameters
/// from the record, weights from `params.npy`).
fn load_model(dir: &Path) -> Result<(ModelFile, Model)> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let file: ModelFile = serde_json::from_str(&text)
        .map_err(|e| Error::parse(&path, e.line(), format!("not a dnn2gp model file: {e}")))?;
    let params = dir.join("params.npy");
    let net = Sequential::parse(&file.architecture)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let (shape, w) = read_npy(&params)?;
    let model = Model::new(net, w, file.likelihood.parse()?, file.sigma, file.delta)
        .map_err(|e| Error::Invalid(format!("{}: {e} (shape {shape:?})", params.display())))?;
    Ok((file, model))
}

/// Summary of a GP fit, written as JSON.
#[derive(Debug, Serialize)]
struct GpSummary {
    delta: f64,
    sigma: f64,
    hessian: HessianStructure,
    space: Space,
    n_train: usize,
    n_params: usize,
    log_marglik: f64,
    laplace_log_evidence: f64,
    stationarity_gap: f64,
    grad_norm: f64,
    grad_rel: f64,
    jitter: f64,
    /// Gaussian: MSE of the network's output; Bernoulli: the Brier score of the probit
    /// probabilities.
    test_mse: f64,
    /// Gaussian: −log of the predictive density of y; Bernoulli: −log of the probit
    /// probability of the label.
    test_nll: f64,
    /// Bernoulli: the fraction of labels the probit probability gets right.
    test_accuracy: Option<f64>,
    warnings: Vec<Warning>,
}

/// Fits the GP ([`dnn2gp::experiments::regression::gp_report`]) and writes kernel, test
/// predictive, figure and summary.
#[allow(clippy::too_many_arguments)]
fn gp_report(
    ctx: &Ctx,
    out: &Path,
    net: &Sequential,
    lik: &dyn Likelihood,
    src: &Source,
    split: &Split,
    w: &[f64],
    delta: f64,
    hessian: HessianStructure,
    mc_hessian: HessianStructure,
    space: Space,
    samples: usize,
    grid_points: usize,
) -> Result<(GpSummary, Vec<PathBuf>, Linearization)> {
    let grid = src.plot_grid(split, grid_points);
    let opts = GpReportOptions {
        delta,
        hessian,
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
    )?;
    let mut warnings = Vec::new();
    warn(&mut warnings, r.warnings);
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
        files.extend(write_comparison(
            out,
            cmp,
            split,
            "Laplace",
            &cmp.net_mean,
            delta,
            lik,
        )?);
    }
    let summary = GpSummary {
        delta,
        sigma: lik.observation_variance(&[0.0])[0].sqrt(),
        hessian,
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
pub(super) fn write_kernel(
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
fn write_gp_summary(out: &Path, summary: &GpSummary, files: &mut Vec<PathBuf>) -> Result<()> {
    let spath = out.join("gp.json");
    write_json(&spath, summary)?;
    files.push(spath);
    Ok(())
}

/// Writes `predictive.csv` and the regression figure.
fn write_comparison(
    out: &Path,
    cmp: &Comparison,
    split: &Split,
    method: &str,
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
            method,
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

fn fmt_g(v: f64) -> String {
    format!("{}", (v * 1e4).round() / 1e4)
}

/// A saved model with its training data (from `model.json`, or `data` instead), checked
/// against its architecture.
pub(super) struct Fitted {
    pub(super) model: Model,
    pub(super) kind: LikelihoodKind,
    pub(super) lik: Box<dyn Likelihood>,
    pub(super) src: Source,
    pub(super) split: Split,
    /// Warnings about the model and its data, for the command's JSON.
    pub(super) warnings: Vec<Warning>,
}

/// The model of `--model` (a model folder, or a model file with `--data`) and its training
/// data, prepared for its likelihood. Data other than the model's training data (by the model
/// file's fingerprint) is warned about: the GP is then not the model's Laplace posterior.
pub(super) fn load_fitted(path: &Path, data: Option<Source>, data_option: &str) -> Result<Fitted> {
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "--model {}: no such model folder or model file",
            path.display()
        ))
        .into());
    }
    let (model, src, what) = if path.is_file() {
        let model = Model::load(path)?;
        let src = data.ok_or_else(|| {
            Error::Invalid(format!(
                "--model {}: a model file records its training data's fingerprint, not where the \
                 data is; give the data with {data_option}",
                path.display()
            ))
        })?;
        (model, src, path.display().to_string())
    } else {
        let (file, model) = load_model(path)?;
        let src = match data {
            Some(d) => d.reading_as(&file.data),
            None => file.data,
        };
        (model, src, path.join("model.json").display().to_string())
    };
    let net = &model.net;
    let kind = model.likelihood;
    let classes = (kind == LikelihoodKind::Categorical).then(|| net.n_outputs());
    let split = prepare_split(src.load()?.remove(0), kind, classes, &what)?;
    if net.n_inputs() != split.train.x.ncols() || net.n_outputs() != split.train.y.ncols() {
        return Err(Error::Invalid(format!(
            "{what}: architecture {} does not fit its data ({} inputs, {} outputs)",
            net.spec(),
            split.train.x.ncols(),
            split.train.y.ncols()
        ))
        .into());
    }
    let mut warnings = Vec::new();
    let seen = fingerprint(split.train.x.as_ref(), split.train.y.as_ref());
    if let Some(trained) = model.data.as_ref().filter(|t| **t != seen) {
        warn(
            &mut warnings,
            [Warning::new(
                "other_data",
                format!(
                    "the data ({seen}) is not the model's training data ({trained}): w* is not \
                     a MAP estimate on it, so the GP is not the model's Laplace posterior"
                ),
            )],
        );
    }
    let lik = model.likelihood()?;
    Ok(Fitted {
        model,
        kind,
        lik,
        src,
        split,
        warnings,
    })
}

/// The training data a model command reads: `--data` (with `--test`, `--data-dir`) instead of
/// what `model.json` records.
fn data_override(d: &ModelDataArgs) -> Result<Option<Source>> {
    d.data
        .as_deref()
        .map(|spec| {
            Source::parse(
                spec,
                &d.data_dir,
                ToyConfig::default(),
                1,
                d.test.clone(),
                false,
            )
        })
        .transpose()?
        .map(one_data_set)
        .transpose()
}

/// Refuses several CSV data sets where a command fits one network.
pub(super) fn one_data_set(src: Source) -> Result<Source> {
    if let Source::Sets { sets } = &src {
        return Err(Error::Invalid(format!(
            "--data names {} CSV files: `sweep` averages over several data sets; this command fits \
             one network on one",
            sets.len()
        ))
        .into());
    }
    Ok(src)
}

/// The options of `gp`, checked before any work.
pub(super) struct GpOptions {
    pub(super) delta: f64,
    pub(super) grid: Option<Vec<f64>>,
    pub(super) hessian: HessianStructure,
    mc_hessian: HessianStructure,
    space: Space,
}

/// A `--hessian` of the GP report (`gp`, `predict`): full or diag; KFAC and low-rank
/// posteriors come from `evaluate`.
pub(super) fn full_or_diag(option: &str, value: &str) -> Result<HessianStructure> {
    match value.parse()? {
        h @ (HessianStructure::Kron | HessianStructure::LowRank) => Err(Error::Invalid(format!(
            "{option} {h}: this command's GP takes full or diag; {h} (and last-layer) \
             posteriors are fitted by `dnn2gp evaluate --hessian {h}`"
        ))
        .into()),
        h => Ok(h),
    }
}

fn gp(ctx: &Ctx, a: GpCmd) -> Result<()> {
    if a.marglik && a.delta.is_some() {
        return Err(Error::Invalid(
            "--marglik chooses δ by the evidence; give it or --delta, not both".into(),
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
        hessian: full_or_diag("--hessian", &a.hessian)?,
        mc_hessian: full_or_diag("--mc-hessian", &a.mc_hessian)?,
        space: a.space.parse()?,
    };
    dnn2gp::train::check_delta(opts.delta)?;
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
        return super::predict::gp_classifier(ctx, &a, fitted, &opts, out);
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

/// Parses `logspace:A:B:N`, `linspace:A:B:N` or a comma list given to `option`.
pub(super) fn parse_grid(option: &str, spec: &str) -> Result<Vec<f64>> {
    let bad = || {
        Error::Invalid(format!(
            "{option} '{spec}': expected logspace:A:B:N, linspace:A:B:N or a list like 0.1,1,10"
        ))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let vals = match parts.as_slice() {
        [kind @ ("logspace" | "linspace"), a, b, n] => {
            let (a, b): (f64, f64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            let n: usize = n.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad().into());
            }
            if *kind == "logspace" {
                logspace(a, b, n)
            } else {
                linspace(a, b, n)
            }
        }
        [list] => list
            .split(',')
            .map(|t| t.trim().parse::<f64>().map_err(|_| bad()))
            .collect::<std::result::Result<_, _>>()?,
        _ => return Err(bad().into()),
    };
    if vals.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(
            Error::Invalid(format!("{option} '{spec}': every value must be positive")).into(),
        );
    }
    Ok(vals)
}

fn sweep_summary(res: &SweepResult, warnings: &[Warning]) -> serde_json::Value {
    let best = res.argmin(|p| p.neg_log_marglik);
    let best_test = res.argmin(|p| p.test_mse);
    serde_json::json!({
        "param": res.param,
        "chosen_by_marglik": best,
        "best_by_test_mse": best_test,
        "mean": res.mean,
        "warnings": warnings,
    })
}

fn vogn_config(v: &VognArgs, seed: u64) -> Result<VognConfig> {
    if !(v.beta > 0.0 && v.beta <= 1.0) {
        return Err(Error::Invalid(format!("--beta must be in (0, 1], got {}", v.beta)).into());
    }
    if let Some(m) = v.momentum.filter(|m| !(0.0..1.0).contains(m)) {
        return Err(Error::Invalid(format!("--momentum must be in [0, 1), got {m}")).into());
    }
    if v.vi_lr.is_some_and(|l| !(l.is_finite() && l > 0.0))
        || v.vi_batch_size == Some(0)
        || v.mc_samples == 0
    {
        return Err(Error::Invalid(
            "--vi-lr, --vi-batch-size and --mc-samples must be positive".into(),
        )
        .into());
    }
    Ok(VognConfig {
        beta: v.beta,
        lr: v.vi_lr,
        mc_samples: v.mc_samples,
        batch_size: v.vi_batch_size,
        epochs: v.vi_epochs,
        covariance: v.covariance.parse()?,
        curvature: v.curvature.parse()?,
        momentum: v.momentum,
        init_precision: v.init_precision,
        deterministic: v.ogn,
        seed,
        snapshot_every: 0,
    })
}

fn parse_methods(s: &str) -> Result<Vec<Method>> {
    Ok(match s {
        "both" => vec![Method::Laplace, Method::Vi],
        m => vec![m.parse()?],
    })
}

/// Runs the sweep for each method (into `out/<method>/` when there are several, plus a combined
/// figure `out/sweep_both`); prints the chosen values.
fn run_methods(
    ctx: &Ctx,
    base: &SweepSpec,
    methods: &[Method],
    splits: &[Split],
    out: &Path,
    title: &str,
    files: &mut Vec<PathBuf>,
) -> Result<Vec<(Method, SweepResult)>> {
    let mut results = Vec::new();
    for &method in methods {
        let spec = SweepSpec {
            method,
            ..base.clone()
        };
        let dir = if methods.len() > 1 {
            out.join(method.to_string())
        } else {
            out.to_path_buf()
        };
        println!("{method}:");
        let res = run_and_report(
            ctx,
            &spec,
            splits,
            &dir,
            &format!("{title} ({method})"),
            files,
        )?;
        let best = res.argmin(|p| p.neg_log_marglik);
        let best_test = res.argmin(|p| p.test_mse);
        println!(
            "{method}: {} = {} minimises −log marglik ({:.4}); {} = {} minimises test MSE ({:.4})",
            spec.param,
            fmt_g(best.value),
            best.neg_log_marglik,
            spec.param,
            fmt_g(best_test.value),
            best_test.test_mse
        );
        results.push((method, res));
    }
    if results.len() > 1 {
        let labelled: Vec<(String, &SweepResult)> =
            results.iter().map(|(m, r)| (label(*m), r)).collect();
        let refs: Vec<(&str, &SweepResult)> =
            labelled.iter().map(|(l, r)| (l.as_str(), *r)).collect();
        files.extend(save(&figure(&refs, title), &out.join("sweep_both"))?);
    }
    Ok(results)
}

fn label(m: Method) -> String {
    match m {
        Method::Laplace => "Laplace".into(),
        Method::Vi => "VI".into(),
    }
}

fn sweep(ctx: &Ctx, a: SweepCmd) -> Result<()> {
    let src = source(&a.data)?;
    let splits = src.load()?;
    let values = parse_grid("--grid", &a.grid)?;
    if a.model.likelihood.parse::<LikelihoodKind>()? != LikelihoodKind::Gaussian {
        return Err(Error::Invalid(format!(
            "--likelihood {}: sweep fits regression networks (gaussian) only; use `train` and \
             `gp --delta-grid` for a classifier",
            a.model.likelihood
        ))
        .into());
    }
    let methods = parse_methods(&a.method)?;
    let spec = SweepSpec {
        param: a.param.parse::<SweepParam>()?,
        values,
        hidden: a.model.hidden.clone(),
        activation: a.model.activation.parse()?,
        delta: a.model.delta,
        sigma: a.model.sigma,
        method: methods[0],
        map: map_config(&a.train)?,
        vogn: vogn_config(&a.vogn, a.train.seed)?,
        vi_gp_samples: a.vogn.vi_gp_samples,
        init_seed: a.train.seed,
        space: a.space.parse()?,
        memory_limit: ctx.memory,
    };
    let out = OutDir::open("--out", &a.out, &src.paths())?;
    let mut files = Vec::new();
    run_methods(
        ctx,
        &spec,
        &methods,
        &splits,
        out.path(),
        &format!("{} sweep on {}", spec.param.symbol(), a.data.data),
        &mut files,
    )?;
    out.commit(&files)
}

/// What `vi` writes to `vi.json`.
#[derive(Debug, Serialize)]
struct ViSummary {
    architecture: String,
    n_params: usize,
    delta: f64,
    sigma: f64,
    vogn: VognConfig,
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

fn vi(ctx: &Ctx, a: ViCmd) -> Result<()> {
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
    let run = vogn::run(&obj, &net.init(a.seed), &cfg, Some(&pb))?;
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
    warn(&mut warnings, converged.warnings);
    if let (Some((xs, grid)), Some(pred)) = (grid, converged.prediction) {
        warn(
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
            "VI",
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
    net: &Sequential,
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
            .map(|&i| HeatPanel::linear(format!("step {}", snapshots[i].t), kernels[i].clone()))
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

fn run_and_report(
    ctx: &Ctx,
    spec: &SweepSpec,
    splits: &[Split],
    out: &Path,
    title: &str,
    files: &mut Vec<PathBuf>,
) -> Result<SweepResult> {
    let pb = ctx.bar((spec.values.len() * splits.len()) as u64, "sweep");
    let res = run_sweep(spec, splits, Some(&pb))?;
    pb.finish_and_clear();
    files.extend(write_sweep(out, &res, title)?);
    let mut warnings = Vec::new();
    warn(&mut warnings, res.warnings());
    let jpath = out.join("sweep.json");
    write_json(&jpath, &sweep_summary(&res, &warnings))?;
    files.push(jpath);
    print_sweep_table(&res);
    Ok(res)
}

fn print_sweep_table(res: &SweepResult) {
    println!(
        "{:>10} {:>16} {:>12} {:>12}",
        res.param.to_string(),
        "neg_log_marglik",
        "train_mse",
        "test_mse"
    );
    for p in &res.mean {
        println!(
            "{:>10.4} {:>16.4} {:>12.5} {:>12.5}",
            p.value, p.neg_log_marglik, p.train_mse, p.test_mse
        );
    }
}

/// Shows each new warning on stderr and keeps it, once, for the JSON summary.
pub(super) fn warn(into: &mut Vec<Warning>, new: impl IntoIterator<Item = Warning>) {
    for w in new {
        if !into.contains(&w) {
            eprintln!("warning: {}", w.message);
            into.push(w);
        }
    }
}

/// Refuses a count of 0 for `option`.
pub(super) fn positive(option: &str, v: usize) -> Result<()> {
    at_least(option, v, 1)
}

/// Refuses a count below `min` for `option`.
pub(super) fn at_least(option: &str, v: usize, min: usize) -> Result<()> {
    if v < min {
        return Err(Error::Invalid(format!("{option} must be at least {min}, got {v}")).into());
    }
    Ok(())
}

fn demo(ctx: &Ctx, a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    positive("--sets", a.sets)?;
    positive("--epochs", a.epochs)?;
    positive("--vi-epochs", a.vi_epochs)?;
    at_least("--grid-points", a.grid_points, 2)?;
    let vi_sets = a.vi_sets.unwrap_or(a.sets.min(3));
    positive("--vi-sets", vi_sets)?;
    if vi_sets > a.sets {
        return Err(Error::Invalid(format!(
            "--vi-sets {vi_sets} exceeds --sets {}: VI runs on the first sets of the Laplace sweep",
            a.sets
        ))
        .into());
    }
    let out = OutDir::open("--out", &a.out, &[])?;
    let mut files = Vec::new();
    let toy = ToyConfig::default();
    let src = Source::Toy {
        config: toy,
        sets: a.sets,
    };
    let splits = src.load()?;
    let map = MapConfig {
        epochs: a.epochs,
        adam: Adam {
            lr: 0.05,
            ..Adam::default()
        },
        ..MapConfig::default()
    };
    let vogn = VognConfig {
        epochs: a.vi_epochs,
        mc_samples: 10,
        ..VognConfig::default()
    };
    let spec = SweepSpec {
        param: SweepParam::Delta,
        values: logspace(-2.0, 2.0, a.grid_points),
        hidden: vec![20],
        activation: Activation::Tanh,
        delta: 1.0,
        sigma: 1.0,
        method: Method::Laplace,
        map: map.clone(),
        vogn,
        vi_gp_samples: 10,
        init_seed: 0,
        space: Space::Auto,
        memory_limit: ctx.memory,
    };
    println!(
        "δ sweep over {} values: Laplace on {} toy data sets, VI (VOGN, full covariance, 10 MC samples) on {}; \
         MLP 2-20-1 tanh, σ = 1",
        spec.values.len(),
        splits.len(),
        vi_sets
    );
    let mut results = run_methods(
        ctx,
        &spec,
        &[Method::Laplace],
        &splits,
        &out.path().join("laplace"),
        "δ selection on the toy data",
        &mut files,
    )?;
    let vi_spec = SweepSpec {
        method: Method::Vi,
        ..spec.clone()
    };
    results.extend(run_methods(
        ctx,
        &vi_spec,
        &[Method::Vi],
        &splits[..vi_sets],
        &out.path().join("vi"),
        "δ selection on the toy data",
        &mut files,
    )?);
    let labelled: Vec<(String, &SweepResult)> =
        results.iter().map(|(m, r)| (label(*m), r)).collect();
    let refs: Vec<(&str, &SweepResult)> = labelled.iter().map(|(l, r)| (l.as_str(), *r)).collect();
    files.extend(save(
        &figure(&refs, "δ selection on the toy data: Laplace and VI"),
        &out.path().join("sweep_both"),
    )?);
    let chosen: Vec<serde_json::Value> = results
        .iter()
        .map(|(m, r)| {
            let (best, test) = (r.argmin(|p| p.neg_log_marglik), r.argmin(|p| p.test_mse));
            serde_json::json!({ "method": m, "chosen_delta": best.value, "chosen": best,
                                "best_delta_by_test_mse": test.value, "best_by_test_mse": test })
        })
        .collect();
    let best = results[0].1.argmin(|p| p.neg_log_marglik);
    // The Laplace GP at the chosen δ on the first data set.
    let split = &splits[0];
    let net = Sequential::mlp(vec![2, 20, 1], Activation::Tanh)?;
    let lik = dnn2gp::likelihood::Gaussian::new(1.0)?;
    let fitted = fit(ctx, &net, &lik, split, best.value, &map, 0)?;
    let (gp_summary, gp_files, _) = gp_report(
        ctx,
        out.path(),
        &net,
        &lik,
        &src,
        split,
        &fitted.w,
        best.value,
        HessianStructure::Full,
        HessianStructure::Diag,
        Space::Auto,
        1000,
        400,
    )?;
    files.extend(gp_files);
    write_gp_summary(out.path(), &gp_summary, &mut files)?;
    let summary = serde_json::json!({
        "data": "toy (paper settings), inputs [x, 1]",
        "architecture": net.spec(),
        "sigma": 1.0,
        "sets": splits.len(),
        "chosen_delta": best.value,
        "chosen_delta_laplace": chosen[0]["chosen_delta"],
        "chosen_delta_vi": chosen[1]["chosen_delta"],
        "methods": chosen,
        "gp_at_chosen_delta": gp_summary,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    let spath = out.path().join("summary.json");
    write_json(&spath, &summary)?;
    files.push(spath);
    println!(
        "chosen δ: Laplace {}, VI {} (test-MSE minima at {} and {})",
        fmt_g(chosen[0]["chosen_delta"].as_f64().unwrap_or(f64::NAN)),
        fmt_g(chosen[1]["chosen_delta"].as_f64().unwrap_or(f64::NAN)),
        fmt_g(
            chosen[0]["best_delta_by_test_mse"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
        fmt_g(
            chosen[1]["best_delta_by_test_mse"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
    );
    out.commit(&files)?;
    println!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
