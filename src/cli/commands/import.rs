//! `import`: a model folder from a network trained elsewhere (weights and an architecture,
//! or an ONNX file; no training), for `gp`.

use std::time::Instant;

use anyhow::Result;

use crate::cli::args::ImportCmd;
use crate::cli::ctx::check_parameter_memory;
use crate::cli::ctx::Ctx;
use crate::cli::model_dir::write_model;
use crate::cli::outdir::OutDir;
use crate::cli::training::{setup, setup_data};

use dnn2gp::nn::Network;

use dnn2gp::train::{MapResult, Objective};
use dnn2gp::Error;

/// `import`: a model folder from weights trained elsewhere (no training), for `gp`.
pub(crate) fn run(ctx: &Ctx, a: ImportCmd) -> Result<()> {
    let t0 = Instant::now();
    let (option, file) = match (&a.onnx, &a.weights) {
        (Some(f), _) => ("--onnx", f),
        (None, Some(f)) => ("--weights", f),
        (None, None) => unreachable!("clap requires one"),
    };
    if !file.is_file() {
        return Err(Error::option(option, format!("{}: no such file", file.display())).into());
    }
    // The network and its weights are read (and checked against the data) before the output
    // folder is touched.
    let (src, split, net, w, lik) = match &a.onnx {
        Some(path) => {
            let imported = dnn2gp_onnx::read(path)?;
            for w in &imported.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            let (src, split, lik) = setup_data(&a.data, &a.model)?;
            let net = imported.graph;
            let (d, k) = (split.train.x.ncols(), split.train.y.ncols());
            if (net.n_inputs(), net.n_outputs()) != (d, k) {
                let hint = if k == 1 && net.n_outputs() > 1 && net.n_inputs() == d {
                    " (a classifier's labels need --likelihood categorical)"
                } else {
                    ""
                };
                return Err(Error::option(
                    "--onnx",
                    format!(
                        "{}: the network takes {} inputs and gives {} outputs; the data {} has \
                         {d} inputs and {k} targets{hint}",
                        path.display(),
                        net.n_inputs(),
                        net.n_outputs(),
                        split.name
                    ),
                )
                .into());
            }
            check_parameter_memory(ctx, net.n_params())?;
            (src, split, net, imported.weights, lik)
        }
        None => {
            let (src, split, net, lik) = setup(ctx, &a.data, &a.model)?;
            let w = dnn2gp::nn::weights::load(file, &net.param_layout())?;
            (src, split, net, w, lik)
        }
    };
    let mut inputs = src.paths();
    inputs.push(file);
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
        file.display(),
        res.loss,
        split.name,
        res.grad_norm
    );
    out.commit(&files)
}
