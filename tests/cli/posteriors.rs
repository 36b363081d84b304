//! `gp` and `predict` fit every structure through the one posterior, with the same prior and
//! noise options; their numbers are the library's, and `predict` and `evaluate` score the same
//! probabilities alike.

use std::path::{Path, PathBuf};

use crate::common;
use crate::util::*;
use dnn2gp::data::csv::read_dataset;
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::Network;
use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Posterior, Subset};
use dnn2gp::train::model::Model;

/// 4×4 "images" of three classes with pixel values k/255, as a CSV (16 pixels, then the label)
/// and as IDX images and labels with the same bytes; `n` of them from `seed`.
fn images(dir: &Path, stem: &str, n: usize, seed: u64) -> (PathBuf, PathBuf, PathBuf) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let (mut csv, mut px, mut lab) = (String::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % 3;
        let row: Vec<u8> = (0..16)
            .map(|j| {
                let on = (j % 3 == c) as u32 * 150;
                ((next() % 90) + on) as u8
            })
            .collect();
        csv.push_str(
            &row.iter()
                .map(|v| format!("{:?}", *v as f64 / 255.0))
                .chain([c.to_string()])
                .collect::<Vec<_>>()
                .join(","),
        );
        csv.push('\n');
        px.extend(&row);
        lab.push(c as u8);
    }
    let idx = |dims: &[u32], body: &[u8]| {
        let mut b = vec![0u8, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend(body);
        b
    };
    let paths = (
        dir.join(format!("{stem}.csv")),
        dir.join(format!("{stem}-images.idx")),
        dir.join(format!("{stem}-labels.idx")),
    );
    std::fs::write(&paths.0, csv).unwrap();
    std::fs::write(&paths.1, idx(&[n as u32, 4, 4], &px)).unwrap();
    std::fs::write(&paths.2, idx(&[n as u32], &lab)).unwrap();
    paths
}

/// A trained classifier on 4×4 images: its folder, and the training and test sets.
fn classifier(
    dir: &Path,
    arch: &str,
) -> (
    PathBuf,
    (PathBuf, PathBuf, PathBuf),
    (PathBuf, PathBuf, PathBuf),
) {
    let train = images(dir, "train", 90, 1);
    let test = images(dir, "test", 30, 2);
    let model = dir.join(format!("model-{}", arch.len()));
    ok(&[
        "train",
        "--data",
        s(&train.0),
        "--likelihood",
        "categorical",
        "--arch",
        arch,
        "--epochs",
        "300",
        "--polish-iters",
        "100",
        "--out",
        s(&model),
    ]);
    (model, train, test)
}

/// The model of a folder and its training data, as the library reads them.
fn library(model: &Path, csv: &Path) -> (Model, faer::Mat<f64>, faer::Mat<f64>) {
    let m = Model::load(&model.join("model.safetensors")).unwrap();
    let d = read_dataset(csv).unwrap();
    let k = m.net.n_outputs();
    let y = LikelihoodKind::Categorical
        .prepare_targets(d.y, Some(k), "train")
        .unwrap();
    (m, d.x, y)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
}

/// `gp` on a CNN brought in by `--arch` (a CSV of pixels): every structure over all weights
/// and the last layer, its evidence the library's posterior's, and δ by the evidence for
/// KFAC.
#[test]
fn gp_fits_every_structure_over_all_weights_or_the_last_layer() {
    let dir = common::tmpdir();
    let arch = "1x4x4:conv3k3,relu,flatten,dense3";
    let (model, train, _) = classifier(dir.path(), arch);
    let (m, x, y) = library(&model, &train.0);
    for h in ["full", "diag", "kron", "lowrank"] {
        for subset in ["all", "last-layer"] {
            let out = dir.path().join(format!("gp-{h}-{subset}"));
            let mut args = vec![
                "gp",
                "--model",
                s(&model),
                "--hessian",
                h,
                "--subset",
                subset,
            ];
            if h == "lowrank" {
                args.extend(["--rank", "8"]);
            }
            args.extend(["--samples", "20", "--out", s(&out)]);
            ok(&args);
            let g = json(&out.join("gp.json"));
            let (hs, ss): (HessianStructure, Subset) =
                (h.parse().unwrap(), subset.parse().unwrap());
            assert_eq!(g["hessian"], hs.to_string());
            assert_eq!(g["subset"], ss.to_string());
            let opts = FitOptions {
                rank: 8,
                ..FitOptions::default()
            };
            let la = Laplace::fit_subset(m.clone(), x.as_ref(), y.as_ref(), hs, ss, &opts).unwrap();
            let e = la.log_marginal_likelihood(None, None).unwrap();
            let got = g["laplace_log_evidence"].as_f64().unwrap();
            assert!(close(got, e, 1e-10), "{h} {subset}: {got} vs {e}");
        }
    }
    // δ at the evidence's maximum of the KFAC posterior over all weights.
    let out = dir.path().join("gp-marglik");
    let printed = ok(&[
        "gp",
        "--model",
        s(&model),
        "--hessian",
        "kron",
        "--marglik",
        "--samples",
        "20",
        "--out",
        s(&out),
    ]);
    assert!(
        printed.contains("by the Laplace evidence (kron GGN over all weights)"),
        "{printed}"
    );
    let mut la = Laplace::fit(
        m,
        x.as_ref(),
        y.as_ref(),
        HessianStructure::Kron,
        &FitOptions::default(),
    )
    .unwrap();
    let best = la.optimize_prior_precision().unwrap();
    let g = json(&out.join("gp.json"));
    assert!(
        close(g["delta"].as_f64().unwrap(), best.delta, 1e-12),
        "{g}"
    );
    assert_eq!(g["prior"], "evidence");
}

/// `predict` and `evaluate` give the same NLL and accuracy for the same model, images and
/// posterior: one predictive path and one set of metrics.
#[test]
fn predict_and_evaluate_score_the_same_probabilities_alike() {
    let dir = common::tmpdir();
    let (model, train, test) =
        classifier(dir.path(), "1x4x4:conv3k3,relu,flatten,dense8,relu,dense3");
    for (h, subset) in [("kron", "last-layer"), ("diag", "all")] {
        let (p, e) = (
            dir.path().join(format!("p-{h}")),
            dir.path().join(format!("e-{h}")),
        );
        ok(&[
            "predict",
            "--model",
            s(&model),
            "--inputs",
            s(&test.0),
            "--hessian",
            h,
            "--subset",
            subset,
            "--prior",
            "marglik",
            "--out",
            s(&p),
        ]);
        ok(&[
            "evaluate",
            "--model",
            s(&model.join("model.safetensors")),
            "--train-images",
            s(&train.1),
            "--train-labels",
            s(&train.2),
            "--test-images",
            s(&test.1),
            "--test-labels",
            s(&test.2),
            "--hessian",
            h,
            "--subset",
            subset,
            "--out",
            s(&e),
        ]);
        let (pj, ej) = (
            json(&p.join("predict.json")),
            json(&e.join("evaluate.json")),
        );
        let method = &ej["methods"][1];
        let clean = &method["sets"][0]["metrics"];
        assert_eq!(pj["test_nll"], clean["nll"], "{h}: {pj} vs {method}");
        assert_eq!(pj["test_accuracy"], clean["acc"]);
        assert_eq!(pj["delta"], method["prior_precision"]);
        let map = &ej["methods"][0]["sets"][0]["metrics"];
        assert_eq!(pj["test_nll_map"], map["nll"]);
    }
}

/// `predict` takes `gp`'s prior and noise options: a given σ and δ, or both by the evidence
/// (the library's optimum), and names them beside the scores.
#[test]
fn predict_takes_the_prior_and_noise_options() {
    let dir = common::tmpdir();
    let model = dir.path().join("model");
    ok(&[
        "train",
        "--hidden",
        "6",
        "--epochs",
        "300",
        "--out",
        s(&model),
    ]);
    let new = dir.path().join("new.csv");
    std::fs::write(&new, "x,one,y\n-2,1,0.5\n0,1,-0.2\n2,1,1.1\n").unwrap();
    let out = dir.path().join("p1");
    let printed = ok(&[
        "predict",
        "--model",
        s(&model),
        "--inputs",
        s(&new),
        "--sigma",
        "0.3",
        "--delta",
        "2",
        "--out",
        s(&out),
    ]);
    assert!(
        printed.contains("δ = 2 (given), σ = 0.3") && printed.contains("MSE"),
        "{printed}"
    );
    let p = json(&out.join("predict.json"));
    assert_eq!(
        (p["delta"].as_f64(), p["sigma"].as_f64()),
        (Some(2.0), Some(0.3))
    );
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    for row in csv.lines().skip(1) {
        let v: Vec<f64> = row.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(close(v[4], v[3] + 0.09, 1e-12), "{row}");
    }
    let out = dir.path().join("p2");
    let printed = ok(&[
        "predict",
        "--model",
        s(&model),
        "--inputs",
        s(&new),
        "--marglik",
        "--out",
        s(&out),
    ]);
    assert!(printed.contains("(by the evidence)"), "{printed}");
    let m = Model::load(&model.join("model.safetensors")).unwrap();
    let split = dnn2gp::data::toy::toy_sets(&dnn2gp::data::toy::ToyConfig::default(), 1).remove(0);
    let mut la = Laplace::fit(
        m,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        HessianStructure::Full,
        &FitOptions::default(),
    )
    .unwrap();
    let best = la.optimize_noise_and_prior().unwrap();
    let p = json(&out.join("predict.json"));
    assert!(
        close(p["delta"].as_f64().unwrap(), best.delta, 1e-12),
        "{p}"
    );
    assert!(
        close(p["sigma"].as_f64().unwrap(), best.sigma, 1e-12),
        "{p}"
    );
}
