//! B6 and B8: post-hoc Laplace on the peer's network trained on all of MNIST (B6: LeNet-5,
//! `b6_laplace_mnist.py`; B8: a ResNet with BatchNorm read from its ONNX file,
//! `b8_laplace_resnet.py`), as laplace-torch's standard workflow runs it: fit the GGN on all
//! 60,000 training images, the prior precision by the evidence, the GLM probit predictive on
//! the 2,000 test images at 8 rotations; per angle the calibration metrics, and the first 200
//! probabilities of each angle against the peer's where the peer finished.

use std::path::{Path, PathBuf};
use std::time::Instant;

use faer::Mat;

use dnn2gp::data::mnist;
use dnn2gp::error::{Error, Result};
use dnn2gp::experiments::calibration::{map_probabilities, metrics};
use dnn2gp::gp::{FunctionalGp, Outputs};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::{weights, Dtype, Sequential};
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Laplace, Link, Posterior, PriorStructure, Subset,
};
use dnn2gp::train::model::Model;

use super::{peak_rss_mib, BenchRun};

/// The rotations of the peer's test file, angle-major.
pub const ANGLES: [u32; 8] = [0, 15, 30, 45, 60, 90, 120, 180];
/// Test images per angle.
const N_TEST: usize = 2000;
/// Probabilities per angle in the peer's files.
const PEER_ROWS: usize = 200;
/// The peer's LeNet-5 (max pooling), PyTorch's `nn.Sequential` numbering.
pub const LENET5: &str =
    "1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,dense120,relu,dense84,relu,dense10";

/// B6's variants: `map`, or a structure over a subset (`kron:last_layer`, …), with the prior
/// by the evidence, one δ (these) or one per tensor (`kron:last_layer:layerwise`).
pub const VARIANTS: [&str; 7] = [
    "map",
    "kron:last_layer",
    "full:last_layer",
    "diag:last_layer",
    "lowrank:last_layer",
    "kron:all",
    "diag:all",
];

/// MNIST's folder: `$DNN2GP_DATA/mnist`, else `data/mnist` beside the baselines.
fn mnist_dir(baselines_data: &Path) -> PathBuf {
    std::env::var_os("DNN2GP_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| baselines_data.join("../../data"))
        .join("mnist")
}

/// B8's variants, as the peer names them (`_frozen_bn`: BatchNorm's γ and β held, the peer's
/// `--freeze-bn`).
pub const B8_VARIANTS: [&str; 5] = [
    "map",
    "kron:last_layer",
    "kron:all",
    "kron:all:frozen_bn",
    "diag:all",
];

/// A workload of this file: B6 (LeNet-5) or B8 (the ResNet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// B6's LeNet-5, from its state_dict.
    B6,
    /// B8's ResNet, from its ONNX file.
    B8,
}

impl Net {
    /// The peer's file prefix: `b6_seed0`, `b8_seed0`.
    fn prefix(self) -> &'static str {
        match self {
            Net::B6 => "b6_seed0",
            Net::B8 => "b8_seed0",
        }
    }

    /// The peer's trained network (a categorical model, δ = 1).
    fn model(self, dir: &Path) -> Result<Model> {
        let (net, w) = match self {
            Net::B6 => {
                let net = Sequential::parse(LENET5)?;
                let w = weights::load(
                    &dir.join("b6_seed0_lenet5.safetensors"),
                    &net.param_layout(),
                )?;
                (net.into(), w)
            }
            Net::B8 => {
                let m = dnn2gp_onnx::read(&dir.join("b8_seed0_resnet.onnx"))?;
                (m.graph, m.weights)
            }
        };
        Model::new(net, w, LikelihoodKind::Categorical, 1.0, 1.0)
    }
}

/// The peer's network (a categorical model, δ = 1) and B6's rotated test images and labels,
/// checked: [`ANGLES`] × 2,000.
fn peer_files(dir: &Path, net: Net) -> Result<(Model, Mat<f64>, Vec<usize>)> {
    let model = net.model(dir)?;
    let xr = mnist::read_images(&dir.join("b6_seed0_rotated-images.idx.gz"))?;
    let yr = mnist::read_labels(&dir.join("b6_seed0_rotated-labels.idx.gz"))?;
    if xr.nrows() != ANGLES.len() * N_TEST || yr.len() != xr.nrows() {
        return Err(Error::Invalid(format!(
            "the rotated test set has {} images and {} labels; expected {}",
            xr.nrows(),
            yr.len(),
            ANGLES.len() * N_TEST
        )));
    }
    Ok((model, xr, yr))
}

/// Each step of the network's forward pass over B6's 16,000 rotated test images in `dtype`
/// ([`dnn2gp::nn::Graph::forward_profile`]): seconds and GFLOP/s per step, to set against
/// `bench gemm`.
pub fn layers(dir: &Path, net: Net, dtype: Dtype) -> Result<BenchRun> {
    let (model, xr, _) = peer_files(dir, net)?;
    let t0 = Instant::now();
    let steps = model.net.forward_profile(&model.w, xr.as_ref(), dtype);
    let wall = t0.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads() as f64;
    let n = xr.nrows() as f64;
    let rows: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "nodes": s.nodes,
                "gflop": s.flops as f64 * n / 1e9,
                "seconds": s.seconds / threads,
                "gflops": (s.flops > 0).then(|| s.flops as f64 * n / (s.seconds / threads) / 1e9),
            })
        })
        .collect();
    let flops: f64 = steps.iter().map(|s| s.flops as f64 * n).sum();
    Ok(BenchRun {
        workload: format!("layers {net:?}"),
        timings_s: vec![("forward".to_string(), wall)],
        total_s: 0.0,
        max_rel_diff_vs_peer: None,
        peer_file: None,
        info: serde_json::json!({
            "dtype": dtype.word(),
            "images": xr.nrows(),
            "threads": threads,
            "gflop": flops / 1e9,
            "gflops": flops / wall / 1e9,
            "steps": rows,
        }),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Runs one variant of [`VARIANTS`] (B6) or [`B8_VARIANTS`] (B8).
pub fn b6(dir: &Path, net: Net, variant: &str, dtype: Dtype) -> Result<BenchRun> {
    let t_start = Instant::now();
    let (model, xr, yr) = peer_files(dir, net)?;
    let model = model.with_dtype(dtype);
    let prefix = net.prefix();
    let mut timings = Vec::new();
    let mut info = serde_json::Map::new();
    let (probs, peer) = if variant == "map" {
        let t0 = Instant::now();
        let p = map_probabilities(&model, xr.as_ref());
        timings.push(("predict".to_string(), t0.elapsed().as_secs_f64()));
        (p, Some(format!("{prefix}_probs_map.csv")))
    } else {
        let parts: Vec<&str> = variant.split(':').collect();
        let frozen = parts.last() == Some(&"frozen_bn");
        let parts = &parts[..parts.len() - usize::from(frozen)];
        let (structure, subset, prior_structure) = match parts[..] {
            [s, sub] => (s, sub, "scalar"),
            [s, sub, p] => (s, sub, p),
            _ => {
                return Err(Error::Invalid(format!(
                    "variant '{variant}': expected map or STRUCTURE:SUBSET[:layerwise] (e.g. \
                     kron:last_layer, diag:all)"
                )))
            }
        };
        let model = if frozen {
            model.freeze(&model.net.batchnorm_tensors())?
        } else {
            model
        };
        let structure: HessianStructure = structure.parse()?;
        let subset: Subset = subset.parse()?;
        let prior_structure: PriorStructure = prior_structure.parse()?;
        let t0 = Instant::now();
        let train = mnist::load(&mnist_dir(dir))?;
        let y = mnist::one_hot(&train.train_y, 10);
        info.insert("load_s".into(), t0.elapsed().as_secs_f64().into());
        let t0 = Instant::now();
        let mut la = Laplace::fit_subset(
            model,
            train.train_x.as_ref(),
            y.as_ref(),
            structure,
            subset,
            &FitOptions::default(),
        )?;
        timings.push(("fit".to_string(), t0.elapsed().as_secs_f64()));
        let t0 = Instant::now();
        let log_marglik = la.optimize_prior_precision_as(prior_structure)?;
        timings.push(("marglik".to_string(), t0.elapsed().as_secs_f64()));
        info.insert(
            "prior_precision".into(),
            serde_json::to_value(la.prior_precision()).expect("plain"),
        );
        if prior_structure == PriorStructure::Layerwise {
            let names: Vec<String> = la.prior_tensors().into_iter().map(|(n, _)| n).collect();
            info.insert("prior_tensors".into(), names.into());
        }
        info.insert("log_marglik".into(), log_marglik.into());
        info.insert("P".into(), la.weight_posterior().mean.len().into());
        let t0 = Instant::now();
        let pred = la.predict(xr.as_ref(), Link::Probit)?;
        timings.push(("predict".to_string(), t0.elapsed().as_secs_f64()));
        let name = format!(
            "laplace_{subset}_{structure}{}",
            if frozen { "_frozen_bn" } else { "" }
        );
        // The peer's probabilities came at its own (scalar) prior precision: compare there too.
        let peer_delta = peer_prior_precision(dir, net, &name);
        if let Some(delta) = peer_delta.filter(|_| prior_structure == PriorStructure::Scalar) {
            la.set_prior_precision(delta)?;
            let first = Mat::from_fn(ANGLES.len() * PEER_ROWS, xr.ncols(), |i, j| {
                xr[((i / PEER_ROWS) * N_TEST + i % PEER_ROWS, j)]
            });
            let p = la.predict(first.as_ref(), Link::Probit)?;
            let p = p.probabilities.expect("categorical");
            let theirs = peer_probs(&dir.join(format!("{prefix}_probs_{name}.csv")))?;
            info.insert("peer_prior_precision".into(), delta.into());
            info.insert(
                "max_abs_dp_vs_peer_at_its_prior".into(),
                max_abs_diff(&rows_of(p.as_ref(), 0..p.nrows()), &theirs).into(),
            );
        }
        let peer = format!("{prefix}_probs_{name}.csv");
        (
            pred.probabilities.expect("categorical"),
            (dir.join(&peer).exists() && prior_structure == PriorStructure::Scalar).then_some(peer),
        )
    };
    let mut per_angle = serde_json::Map::new();
    let mut ours = Vec::new();
    for (a, angle) in ANGLES.iter().enumerate() {
        let rows = probs.as_ref().subrows(a * N_TEST, N_TEST);
        let m = metrics(rows, &yr[a * N_TEST..(a + 1) * N_TEST])?;
        per_angle.insert(angle.to_string(), serde_json::to_value(m).expect("plain"));
        ours.extend(rows_of(rows, 0..PEER_ROWS));
    }
    info.insert("dtype".into(), dtype.word().into());
    info.insert("metrics".into(), per_angle.into());
    if let Some(peer) = &peer {
        let theirs = peer_probs(&dir.join(peer))?;
        info.insert(
            "max_abs_dp_vs_peer".into(),
            max_abs_diff(&ours, &theirs).into(),
        );
    }
    info.insert("wall_s".into(), t_start.elapsed().as_secs_f64().into());
    Ok(BenchRun {
        workload: format!("{net:?} {variant}"),
        timings_s: timings,
        total_s: 0.0,
        max_rel_diff_vs_peer: None,
        peer_file: peer.map(|p| dir.join(p).display().to_string()),
        info: info.into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The rows `range` of a matrix, row-major.
fn rows_of(m: faer::MatRef<'_, f64>, range: std::ops::Range<usize>) -> Vec<f64> {
    range
        .flat_map(|i| (0..m.ncols()).map(move |c| m[(i, c)]))
        .collect()
}

/// A peer's probabilities file, row-major.
fn peer_probs(path: &Path) -> Result<Vec<f64>> {
    Ok(dnn2gp::data::csv::read_table(path)?
        .into_iter()
        .flatten()
        .collect())
}

/// `max |a − b|`.
fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// The prior precision of the peer's last recorded run `name` (`results/b6.jsonl` or
/// `b8.jsonl` beside the data folder), if any.
fn peer_prior_precision(dir: &Path, net: Net, name: &str) -> Option<f64> {
    let file = format!("../results/{}.jsonl", &net.prefix()[..2]);
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["peer"] == name)
        .find_map(|v| v["prior_precision"].as_f64())
}

/// Test images per angle in B7 (the peer's recorded run: `--limit 50`).
const B7_PER_ANGLE: usize = 50;

/// B7: the function-space GP ([`FunctionalGp`]) of the B6 LeNet-5 on the first `m` training
/// images, with independent outputs or the full K×K coupling, δ by the evidence of the
/// independent GP (for m above 2,000 that of the 1,600-image GP: the evidence's
/// eigendecompositions are m³ each, (mK)³ coupled), the probit predictive on the first 50 test
/// images of each angle.
pub fn b7(dir: &Path, m: usize, outputs: Outputs) -> Result<BenchRun> {
    let (model, xr, yr) = peer_files(dir, Net::B6)?;
    let train = mnist::load(&mnist_dir(dir))?;
    if m == 0 || m > train.train_x.nrows() {
        return Err(Error::Invalid(format!("B7 with m = {m} training images")));
    }
    let memory = dnn2gp::linalg::available_memory();
    FunctionalGp::check_memory(&model.net, m, outputs, memory)?;
    let mut timings = Vec::new();
    let mut info = serde_json::Map::new();
    // δ from the independent GP on min(m, 1,600) points.
    let t0 = Instant::now();
    let small = m.min(1600);
    let mut ind = FunctionalGp::fit(
        model.clone(),
        train.train_x.as_ref().subrows(0, small),
        mnist::one_hot(&train.train_y[..small], 10).as_ref(),
        Outputs::Independent,
        memory,
    )?;
    timings.push((
        format!("fit_independent_m{small}"),
        t0.elapsed().as_secs_f64(),
    ));
    let t0 = Instant::now();
    let mut at = model.clone();
    at.delta = ind.optimize_prior_precision()?;
    timings.push((
        format!("marglik_independent_m{small}"),
        t0.elapsed().as_secs_f64(),
    ));
    let gp = if m == small && outputs == Outputs::Independent {
        ind
    } else {
        drop(ind);
        let t0 = Instant::now();
        let x = train.train_x.as_ref().subrows(0, m);
        let y = mnist::one_hot(&train.train_y[..m], 10);
        let gp = FunctionalGp::fit(at, x, y.as_ref(), outputs, memory)?;
        timings.push(("fit".to_string(), t0.elapsed().as_secs_f64()));
        gp
    };
    info.insert(
        "outputs".into(),
        serde_json::to_value(outputs).expect("plain"),
    );
    info.insert("prior_precision".into(), gp.model().delta.into());
    info.insert("log_marglik".into(), gp.log_marginal_likelihood().into());
    let xs = Mat::from_fn(ANGLES.len() * B7_PER_ANGLE, xr.ncols(), |i, j| {
        xr[((i / B7_PER_ANGLE) * N_TEST + i % B7_PER_ANGLE, j)]
    });
    let t0 = Instant::now();
    let p = gp.predict(xs.as_ref(), Link::Probit)?;
    timings.push(("predict".to_string(), t0.elapsed().as_secs_f64()));
    let mut per_angle = serde_json::Map::new();
    for (a, angle) in ANGLES.iter().enumerate() {
        let labels: Vec<usize> = (0..B7_PER_ANGLE).map(|i| yr[a * N_TEST + i]).collect();
        let met = metrics(p.as_ref().subrows(a * B7_PER_ANGLE, B7_PER_ANGLE), &labels)?;
        per_angle.insert(angle.to_string(), serde_json::to_value(met).expect("plain"));
    }
    info.insert("m".into(), m.into());
    info.insert("images_per_angle".into(), B7_PER_ANGLE.into());
    info.insert("metrics".into(), per_angle.into());
    Ok(BenchRun {
        workload: format!("B7 m={m} {}", format!("{outputs:?}").to_lowercase()),
        timings_s: timings,
        total_s: 0.0,
        max_rel_diff_vs_peer: None,
        peer_file: None,
        info: info.into(),
        peak_rss_mib: peak_rss_mib(),
    })
}
