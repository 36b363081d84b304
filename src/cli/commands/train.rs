//! `train`: the MAP network (Adam, then an L-BFGS polish), saved as a model folder.

use std::time::Instant;

use anyhow::Result;

use crate::cli::args::TrainCmd;
use crate::cli::ctx::Ctx;
use crate::cli::model_dir::write_model;
use crate::cli::outdir::OutDir;
use crate::cli::training::{fit, map_config, setup};

use dnn2gp::nn::Network;

/// `train`.
pub(crate) fn run(ctx: &Ctx, a: TrainCmd) -> Result<()> {
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
    let files = write_model(ctx, out.path(), &net, &a.model, src, &split, &res, t0)?;
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
