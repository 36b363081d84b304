//! `reproduce mnist`: LeNet-5 by Adam, the diagonal Laplace-GGN, the GP views.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::cli::args::{ImageData, ImagesCmd};
use crate::cli::ctx::{positive, Ctx};
use crate::cli::images::{
    check_image_args, check_views_memory, gp_views, image_architecture, image_side, load_images,
    load_weights, open_out, save_run, shown_images, with_test_accuracy, EpochRecord, ViewSummary,
};
use dnn2gp::data::mnist::one_hot;
use dnn2gp::data::Dataset;
use dnn2gp::gp::classification::accuracy;
use dnn2gp::io::write_json;
use dnn2gp::likelihood::{Categorical, LikelihoodKind};
use dnn2gp::nn::{predict, Network};
use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace};
use dnn2gp::train::model::Model;
use dnn2gp::train::{adam, check_delta, steps_per_epoch, Adam, MapConfig, Objective};
use dnn2gp::Error;

#[derive(Debug, Serialize)]
struct MnistSummary {
    data: String,
    n_params: usize,
    train_images: usize,
    delta: f64,
    trained: bool,
    epochs: Vec<EpochRecord>,
    test_accuracy: f64,
    train_seconds: f64,
    ggn_seconds: f64,
    views: ViewSummary,
}

/// `reproduce mnist`.
pub(crate) fn run(ctx: &Ctx, a: ImagesCmd) -> Result<()> {
    let ia = &a.images;
    check_image_args(ia)?;
    check_delta(a.delta).map_err(|e| e.for_option("--delta"))?;
    if ia.model.is_none() {
        positive("--epochs", a.epochs)?;
        if !(a.lr.is_finite() && a.lr > 0.0) {
            return Err(Error::Invalid(format!("--lr must be positive, got {}", a.lr)).into());
        }
    }
    let k = 10;
    let net = image_architecture(ctx, ia, image_side(ia.data), k)?;
    check_views_memory(ctx, ia.first.unwrap_or(ia.per_class * k), &net)?;
    let d = &load_images(ia, &net)?;
    let out = open_out(&a.out, ia)?;
    let mut files = Vec::new();
    let train = Dataset::new(d.train_x.clone(), one_hot(&d.train_y, k))?;
    let lik = Categorical;
    let t0 = Instant::now();
    let (w, records) = match &ia.model {
        Some(path) => (load_weights(path, &net)?, Vec::new()),
        None => {
            let obj = Objective::on(&net, &lik, &train, a.delta);
            let cfg = MapConfig {
                adam: Adam {
                    lr: a.lr,
                    plateau: None,
                    ..Adam::default()
                },
                epochs: a.epochs,
                batch_size: Some(ia.batch_size),
                seed: ia.seed,
                polish_iters: 0,
                ..MapConfig::default()
            };
            let pb = ctx.bar(
                (a.epochs * steps_per_epoch(train.len(), cfg.batch_size)) as u64,
                "Adam",
            );
            let res = with_test_accuracy(ctx, &net, d.test_x.as_ref(), &d.test_y, |hook| {
                adam::run_with(&obj, &net.init(ia.seed), &cfg, Some(&pb), hook).map(|r| r.w)
            })?;
            pb.finish_and_clear();
            res
        }
    };
    let train_seconds = t0.elapsed().as_secs_f64();
    let test_accuracy = accuracy(predict(&net, &w, d.test_x.as_ref()).as_ref(), &d.test_y);
    eprintln!(
        "test accuracy {:.2}% ({} parameters, {:.0} s)",
        100.0 * test_accuracy,
        net.n_params(),
        train_seconds
    );

    let t1 = Instant::now();
    let pb = ctx.bar(train.len() as u64, "GGN diagonal");
    let model = Model::new(
        net.clone(),
        w.clone(),
        LikelihoodKind::Categorical,
        1.0,
        a.delta,
    )?;
    let fit = FitOptions {
        memory_limit: ctx.memory,
        progress: Some(&pb),
        ..FitOptions::default()
    };
    let la = Laplace::fit(
        model,
        train.x.as_ref(),
        train.y.as_ref(),
        HessianStructure::Diag,
        &fit,
    )?;
    pb.finish_and_clear();
    let variances = la.weight_posterior().variances();
    save_run(out.path(), &la, &variances, &records, &mut files)?;
    let ggn_seconds = t1.elapsed().as_secs_f64();

    let (xs, ys) = shown_images(
        ia,
        d.train_x.as_ref(),
        &d.train_y,
        d.test_x.as_ref(),
        &d.test_y,
        k,
    )?;
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
        if ia.data == ImageData::Digits {
            "Digits"
        } else {
            "MNIST"
        },
        &(0..k).map(|c| c.to_string()).collect::<Vec<_>>(),
        out.path(),
        &mut files,
    )?;
    eprintln!(
        "GP posterior mean arg-max agrees with the network on {:.1}% of the {} images",
        100.0 * views.gp_mean_agreement,
        views.images
    );
    let summary = MnistSummary {
        data: ia.data.to_string(),
        n_params: net.n_params(),
        train_images: train.len(),
        delta: a.delta,
        trained: ia.model.is_none(),
        epochs: records,
        test_accuracy,
        train_seconds,
        ggn_seconds,
        views,
    };
    let path = out.path().join("summary.json");
    write_json(&path, &summary)?;
    files.push(path);
    out.commit(&files)
}
