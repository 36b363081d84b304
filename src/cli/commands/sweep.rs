//! `sweep`: retrain over a grid of δ, σ or width; −log marglik, train and test MSE.

use anyhow::Result;

use crate::cli::args::SweepCmd;
use crate::cli::ctx::{parse_grid, Ctx};
use crate::cli::outdir::OutDir;
use crate::cli::sources::source;
use crate::cli::sweep_report::run_methods;
use crate::cli::training::{map_config, vogn_config};
use dnn2gp::likelihood::LikelihoodKind;

use dnn2gp::select::{Method, SweepParam, SweepSpec};
use dnn2gp::Error;

fn parse_methods(s: &str) -> Result<Vec<Method>> {
    Ok(match s {
        "both" => vec![Method::Laplace, Method::Vi],
        m => vec![m.parse()?],
    })
}

pub(crate) fn run(ctx: &Ctx, a: SweepCmd) -> Result<()> {
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
