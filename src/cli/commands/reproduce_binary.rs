//! `reproduce binary-mnist`: two digits by VOGN, the GP views.

use std::time::Instant;

use anyhow::Result;
use faer::{Mat, MatRef};
use serde::Serialize;

use crate::cli::args::{BinaryCmd, ImageSplit};
use crate::cli::ctx::{positive, Ctx};
use crate::cli::images::{
    check_image_args, check_views_memory, gp_views, image_architecture, image_side, load_images,
    load_weights, open_out, save_run, shown_images, with_test_accuracy, EpochRecord, ViewSummary,
};
use dnn2gp::curvature::Precision;
use dnn2gp::data::mnist::{self};
use dnn2gp::data::Dataset;
use dnn2gp::gp::classification::accuracy;
use dnn2gp::io::write_json;
use dnn2gp::likelihood::{Bernoulli, LikelihoodKind};
use dnn2gp::nn::{predict, Network};
use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Posterior};
use dnn2gp::train::model::Model;
use dnn2gp::train::vogn::{self, Covariance, Curvature, VognConfig};
use dnn2gp::train::{check_delta, gather_rows, steps_per_epoch, Objective};
use dnn2gp::Error;

#[derive(Debug, Serialize)]
struct BinarySummary {
    data: String,
    digits: [usize; 2],
    n_params: usize,
    train_images: usize,
    delta: f64,
    vogn: Option<VognConfig>,
    epochs: Vec<EpochRecord>,
    test_accuracy: f64,
    train_seconds: f64,
    views: ViewSummary,
}

/// The examples of digits `a` and `b` with labels 0 (a) and 1 (b).
fn two_digits(x: MatRef<'_, f64>, labels: &[usize], a: usize, b: usize) -> (Mat<f64>, Vec<usize>) {
    let (idx, _) = mnist::binary(labels, a, b);
    (
        gather_rows(x, &idx),
        idx.iter().map(|&i| usize::from(labels[i] == b)).collect(),
    )
}

/// `reproduce binary-mnist`.
pub(crate) fn run(ctx: &Ctx, a: BinaryCmd) -> Result<()> {
    let ia = &a.images;
    check_image_args(ia)?;
    check_delta(a.delta).map_err(|e| e.for_option("--delta"))?;
    positive("--epochs", a.vi_epochs)?;
    let (da, db) = match a.digits.as_slice() {
        [x, y] if x != y && *x < 10 && *y < 10 => (*x, *y),
        other => {
            return Err(Error::Invalid(format!(
                "--digits needs two different digits 0..9, got {other:?}"
            ))
            .into())
        }
    };
    let net = image_architecture(ctx, ia, image_side(ia.data), 1)?;
    check_views_memory(ctx, ia.first.unwrap_or(ia.per_class * 2), &net)?;
    let d = &load_images(ia, &net)?;
    let (xtr, ytr) = two_digits(d.train_x.as_ref(), &d.train_y, da, db);
    let (xte, yte) = two_digits(d.test_x.as_ref(), &d.test_y, da, db);
    if ytr.is_empty() || yte.is_empty() {
        return Err(Error::Invalid(format!("no images of digits {da} and {db}")).into());
    }
    let out = open_out(&a.out, ia)?;
    let mut files = Vec::new();
    let targets = Mat::from_fn(ytr.len(), 1, |i, _| ytr[i] as f64);
    let train = Dataset::new(xtr, targets)?;
    let lik = Bernoulli;
    let t0 = Instant::now();
    let model = |w: Vec<f64>| Model::new(net.clone(), w, LikelihoodKind::Bernoulli, 1.0, a.delta);
    let (la, variances, records, cfg) = match &ia.model {
        Some(path) => {
            // Without a variational posterior, the Laplace-GGN diagonal stands in for Σ.
            let fit = FitOptions {
                memory_limit: ctx.memory,
                ..FitOptions::default()
            };
            let la = Laplace::fit(
                model(load_weights(path, &net)?)?,
                train.x.as_ref(),
                train.y.as_ref(),
                HessianStructure::Diag,
                &fit,
            )?;
            let s = la.weight_posterior().variances();
            (la, s, Vec::new(), None)
        }
        None => {
            let cfg = VognConfig {
                beta: a.beta,
                lr: Some(a.vi_lr),
                mc_samples: a.mc_samples,
                batch_size: Some(ia.batch_size),
                epochs: a.vi_epochs,
                covariance: Covariance::Diag,
                curvature: Curvature::Ggn,
                momentum: Some(a.momentum),
                init_precision: a.init_precision,
                deterministic: false,
                seed: ia.seed,
                snapshot_every: 0,
            };
            let obj = Objective::on(&net, &lik, &train, a.delta);
            let pb = ctx.bar(
                (a.vi_epochs * steps_per_epoch(train.len(), cfg.batch_size)) as u64,
                "VOGN",
            );
            let mut state = None;
            let (w, records) = with_test_accuracy(ctx, &net, xte.as_ref(), &yte, |hook| {
                let run = vogn::run_with(&obj, &net.init(ia.seed), &cfg, Some(&pb), hook).map_err(
                    |e| {
                        crate::cli::training::vogn_options(
                            e,
                            "--lr sets α, --init-precision s, --beta β",
                        )
                    },
                )?;
                let mu = run.state.mu.clone();
                state = Some(run.state);
                Ok(mu)
            })?;
            pb.finish_and_clear();
            let precision = match state.map(|s| s.precision) {
                Some(Precision::Diag(d)) => d,
                _ => unreachable!("diagonal VOGN"),
            };
            let s = precision.iter().map(|v| 1.0 / v).collect();
            // q = N(μ, diag(p)⁻¹) as a posterior with curvature p − δ, for `predict`.
            let la = Laplace::from_diagonal_precision(
                model(w)?,
                &precision,
                train.x.as_ref(),
                train.y.as_ref(),
            )?;
            (la, s, records, Some(cfg))
        }
    };
    let w = la.model().w.clone();
    let train_seconds = t0.elapsed().as_secs_f64();
    save_run(out.path(), &la, &variances, &records, &mut files)?;
    let test_accuracy = accuracy(predict(&net, &w, xte.as_ref()).as_ref(), &yte);
    eprintln!(
        "test accuracy {:.2}% on digits {da} vs {db} ({:.0} s)",
        100.0 * test_accuracy,
        train_seconds
    );
    // The shown images: the first per_class of each digit, with labels 0/1.
    let (xs, ys) = {
        let (xa, la) = match ia.images {
            ImageSplit::Test => (xte.as_ref(), yte.as_slice()),
            _ => (train.x.as_ref(), ytr.as_slice()),
        };
        shown_images(ia, xa, la, xa, la, 2)?
    };
    let views = gp_views(
        ctx,
        &net,
        &lik,
        &w,
        &variances,
        a.delta,
        xs.as_ref(),
        &ys,
        ia.images.word(),
        &format!("Binary MNIST {da} vs {db} (VOGN)"),
        &[da.to_string(), db.to_string()],
        out.path(),
        &mut files,
    )?;
    let summary = BinarySummary {
        data: ia.data.to_string(),
        digits: [da, db],
        n_params: net.n_params(),
        train_images: train.len(),
        delta: a.delta,
        vogn: cfg,
        epochs: records,
        test_accuracy,
        train_seconds,
        views,
    };
    let path = out.path().join("summary.json");
    write_json(&path, &summary)?;
    files.push(path);
    out.commit(&files)
}
