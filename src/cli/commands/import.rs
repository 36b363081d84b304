//! `import`: a model folder from weights trained elsewhere (no training), for `gp`.

use std::time::Instant;

use anyhow::Result;

use crate::cli::args::ImportCmd;
use crate::cli::ctx::Ctx;
use crate::cli::model_dir::write_model;
use crate::cli::outdir::OutDir;
use crate::cli::training::setup;

use dnn2gp::nn::Network;

use dnn2gp::train::{MapResult, Objective};
use dnn2gp::Error;

/// `import`: a model folder from weights trained elsewhere (no training), for `gp`.
pub(crate) fn run(ctx: &Ctx, a: ImportCmd) -> Result<()> {
    let t0 = Instant::now();
    if !a.weights.is_file() {
        return Err(Error::option(
            "--weights",
            format!("{}: no such file", a.weights.display()),
        )
        .into());
    }
    let (src, split, net, lik) = setup(ctx, &a.data, &a.model)?;
    // The weights are read (and their tensors checked against the network) before the output
    // folder is touched.
    let w = dnn2gp::nn::weights::load(&a.weights, &net.param_layout())?;
    let mut inputs = src.paths();
    inputs.push(&a.weights);
    let out = OutDir::open("--out", &a.out, &inputs)?;
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
    let files = write_model(ctx, out.path(), &net, &a.model, src, &split, &res, t0)?;
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
