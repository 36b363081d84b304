//! `demo`: the main job on built-in toy data.

use std::time::Instant;

use anyhow::Result;

use crate::cli::args::DemoArgs;
use crate::cli::ctx::{at_least, fmt_g, parse_grid, positive, Ctx};
use crate::cli::gp_report::{gp_report, write_gp_summary};
use crate::cli::outdir::OutDir;
use crate::cli::sweep_report::{label, run_methods};
use crate::cli::training::fit;
use crate::report::plot::save;
use crate::report::sweep::figure;
use dnn2gp::data::logspace;
use dnn2gp::data::source::Source;
use dnn2gp::data::toy::ToyConfig;
use dnn2gp::gp::Space;
use dnn2gp::io::write_json;
use dnn2gp::nn::{Activation, Graph, Sequential};
use dnn2gp::posterior::HessianStructure;
use dnn2gp::select::{Method, SweepParam, SweepResult, SweepSpec};
use dnn2gp::train::vogn::VognConfig;
use dnn2gp::train::{Adam, MapConfig};
use dnn2gp::Error;

pub(crate) fn run(ctx: &Ctx, a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    positive("--sets", a.sets)?;
    positive("--epochs", a.epochs)?;
    positive("--vi-epochs", a.vi_epochs)?;
    let values = match a.grid_points {
        Some(n) => {
            at_least("--grid-points", n, 2)?;
            logspace(-2.0, 2.0, n)
        }
        None => parse_grid("--grid", &a.grid)?,
    };
    if values.len() < 2 {
        return Err(Error::option("--grid", "needs at least two values").into());
    }
    let vi_sets = a.vi_sets.unwrap_or(a.sets.min(3));
    positive("--vi-sets", vi_sets)?;
    if vi_sets > a.sets {
        return Err(Error::option(
            "--vi-sets",
            format!(
                "{vi_sets} exceeds --sets {}: VI runs on the first sets of the Laplace sweep",
                a.sets
            ),
        )
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
        values,
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
    let net: Graph = Sequential::mlp(vec![2, 20, 1], Activation::Tanh)?.into();
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
        HessianStructure::Diag,
        Space::Auto,
        1000,
        400,
        None,
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
