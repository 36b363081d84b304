//! Training options as the core's settings: the MLP of `--hidden`/`--activation`, Adam and
//! VOGN settings, and the set-up shared by the commands that train.

use anyhow::Result;

use crate::cli::args::{DataArgs, ModelArgs, TrainArgs, VognArgs};
use crate::cli::ctx::{check_parameter_memory, positive, Ctx};
use crate::cli::sources::{one_data_set, prepare_split, source};
use dnn2gp::data::source::Source;
use dnn2gp::data::Split;
use dnn2gp::likelihood::{Likelihood, LikelihoodKind};
use dnn2gp::nn::{Graph, Network, Sequential};
use dnn2gp::train::vogn::VognConfig;
use dnn2gp::train::{fit_map, Adam, MapConfig, MapResult, Objective, Plateau};
use dnn2gp::Error;

pub(crate) fn map_config(t: &TrainArgs) -> Result<MapConfig> {
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(Error::option("--lr", format!("must be positive, got {}", t.lr)).into());
    }
    if t.batch_size == Some(0) {
        return Err(Error::option("--batch-size", "must be positive").into());
    }
    if !(t.plateau_factor > 0.0 && t.plateau_factor < 1.0) {
        return Err(Error::option(
            "--plateau-factor",
            format!("must be in (0, 1), got {}", t.plateau_factor),
        )
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

pub(crate) fn vogn_config(v: &VognArgs, seed: u64) -> Result<VognConfig> {
    if !(v.beta > 0.0 && v.beta <= 1.0) {
        return Err(Error::option("--beta", format!("must be in (0, 1], got {}", v.beta)).into());
    }
    if let Some(m) = v.momentum.filter(|m| !(0.0..1.0).contains(m)) {
        return Err(Error::option("--momentum", format!("must be in [0, 1), got {m}")).into());
    }
    if let Some(l) = v.vi_lr.filter(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(Error::option("--vi-lr", format!("must be positive, got {l}")).into());
    }
    if v.vi_batch_size == Some(0) {
        return Err(Error::option("--vi-batch-size", "must be positive").into());
    }
    positive("--mc-samples", v.mc_samples)?;
    positive("--vi-epochs", v.vi_epochs)?;
    Ok(VognConfig {
        beta: v.beta,
        lr: v.vi_lr,
        mc_samples: v.mc_samples,
        batch_size: v.vi_batch_size,
        epochs: v.vi_epochs,
        covariance: v.covariance,
        curvature: v.curvature,
        momentum: v.momentum,
        init_precision: v.init_precision,
        deterministic: v.ogn,
        seed,
        snapshot_every: 0,
    })
}

/// The network of `--arch`, or the MLP of `--hidden` and `--activation`, for the data's
/// inputs and outputs.
pub(crate) fn architecture(split: &Split, m: &ModelArgs) -> Result<Graph> {
    let (d, k) = (split.train.x.ncols(), split.train.y.ncols());
    let Some(spec) = &m.arch else {
        let mut sizes = vec![d];
        sizes.extend(&m.hidden);
        sizes.push(k);
        return Ok(Sequential::mlp(sizes, m.activation)?.into());
    };
    let net = Sequential::parse(spec).map_err(|e| e.for_option("--arch"))?;
    if (net.n_inputs(), net.n_outputs()) != (d, k) {
        return Err(Error::option(
            "--arch",
            format!(
                "{spec} takes {} inputs and gives {} outputs; the data {} has {d} inputs and {k} \
                 targets",
                net.n_inputs(),
                net.n_outputs(),
                split.name
            ),
        )
        .into());
    }
    Ok(net.into())
}

/// The data source, its first split, the network and the likelihood of a command; checks δ.
pub(crate) fn setup(
    ctx: &Ctx,
    data: &DataArgs,
    model: &ModelArgs,
) -> Result<(Source, Split, Graph, Box<dyn Likelihood>)> {
    let (src, split, lik) = setup_data(data, model)?;
    let net = architecture(&split, model)?;
    check_parameter_memory(ctx, net.n_params())?;
    Ok((src, split, net, lik))
}

/// The data source, its first split and the likelihood of a command; checks δ.
pub(crate) fn setup_data(
    data: &DataArgs,
    model: &ModelArgs,
) -> Result<(Source, Split, Box<dyn Likelihood>)> {
    let src = one_data_set(source(data)?)?;
    let kind = model.likelihood;
    if model.classes.is_some() && kind != LikelihoodKind::Categorical {
        return Err(Error::option(
            "--classes",
            format!(
                "applies to --likelihood categorical, not {}",
                model.likelihood
            ),
        )
        .into());
    }
    let split = prepare_split(src.load()?.remove(0), kind, model.classes, &data.data)?;
    let lik = kind
        .build(model.sigma)
        .map_err(|e| e.for_option("--sigma"))?;
    dnn2gp::train::check_delta(model.delta).map_err(|e| e.for_option("--delta"))?;
    Ok((src, split, lik))
}

pub(crate) fn fit(
    ctx: &Ctx,
    net: &Graph,
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

/// The options of `vi` and `sweep` that set VOGN's α, s and β.
pub(crate) const VOGN_OPTIONS: &str = "--vi-lr sets α, --init-precision s, --beta β";

/// A VOGN run's numerical failure (a divergence) with the options of this command that set α,
/// s and β.
pub(crate) fn vogn_options(e: dnn2gp::Error, options: &str) -> dnn2gp::Error {
    match e {
        dnn2gp::Error::Numerical(m) => dnn2gp::Error::Numerical(format!("{m} ({options})")),
        e => e,
    }
}
