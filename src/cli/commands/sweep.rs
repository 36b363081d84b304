//! `sweep`: retrain over a grid of δ, σ or width; −log marglik, train and test MSE.

use anyhow::Result;

use crate::cli::args::{Methods, SweepCmd};
use crate::cli::ctx::{parse_grid, Ctx};
use crate::cli::outdir::OutDir;
use crate::cli::sources::source;
use crate::cli::sweep_report::run_methods;
use crate::cli::training::{map_config, vogn_config};
use dnn2gp::likelihood::LikelihoodKind;

use dnn2gp::select::{Method, SweepSpec};
use dnn2gp::Error;

/// The sweeps `--method` asks for.
fn methods(m: Methods) -> Vec<Method> {
    match m {
        Methods::Laplace => vec![Method::Laplace],
        Methods::Vi => vec![Method::Vi],
        Methods::Both => vec![Method::Laplace, Method::Vi],
    }
}

pub(crate) fn run(ctx: &Ctx, a: SweepCmd) -> Result<()> {
    let src = source(&a.data)?;
    let splits = src.load()?;
    let values = parse_grid("--grid", &a.grid)?;
    if a.model.arch.is_some() {
        return Err(Error::option(
            "--arch",
            "sweep retrains an MLP of --hidden and --activation (a width sweep changes its \
             widths); give those instead",
        )
        .into());
    }
    if a.model.likelihood != LikelihoodKind::Gaussian {
        return Err(Error::option(
            format!("--likelihood {}", a.model.likelihood),
            "sweep fits regression networks (gaussian) only; use `train` and `gp --delta-grid` \
             for a classifier",
        )
        .into());
    }
    LikelihoodKind::Gaussian
        .build(a.model.sigma)
        .map_err(|e| e.for_option("--sigma"))?;
    dnn2gp::train::check_delta(a.model.delta).map_err(|e| e.for_option("--delta"))?;
    let methods = methods(a.method);
    let spec = SweepSpec {
        param: a.param,
        values,
        hidden: a.model.hidden.clone(),
        activation: a.model.activation,
        delta: a.model.delta,
        sigma: a.model.sigma,
        method: methods[0],
        map: map_config(&a.train)?,
        vogn: vogn_config(&a.vogn, a.train.seed)?,
        vi_gp_samples: a.vogn.vi_gp_samples,
        init_seed: a.train.seed,
        space: a.space,
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
