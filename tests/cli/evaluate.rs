//! `evaluate` end to end on a slice of MNIST with the B6 baseline's LeNet-5 (a PyTorch
//! `state_dict` read with `--arch`): every structure, rotated and OOD sets, the files and their
//! numbers against the library; bad options refused with exit code 2 before any work.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use std::io::Write;
use std::path::{Path, PathBuf};

use dnn2gp::data::mnist;
use dnn2gp::experiments::calibration::{map_probabilities, metrics};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::{weights, Sequential};
use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Link, Posterior, Subset};
use dnn2gp::train::model::Model;

const LENET5: &str =
    "1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,dense120,relu,dense84,relu,dense10";

/// Writes IDX images (N×28×28, u8) or labels.
fn write_idx(path: &Path, dims: &[usize], bytes: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&[0, 0, 8, dims.len() as u8]).unwrap();
    for d in dims {
        f.write_all(&(*d as u32).to_be_bytes()).unwrap();
    }
    f.write_all(bytes).unwrap();
}

/// The first `n` images and labels of an MNIST pair as IDX files in `dir`.
fn slice(dir: &Path, images: &Path, labels: &Path, n: usize, stem: &str) -> (PathBuf, PathBuf) {
    let x = mnist::read_images(images).unwrap();
    let y = mnist::read_labels(labels).unwrap();
    let px: Vec<u8> = (0..n)
        .flat_map(|i| (0..784).map(move |j| (i, j)))
        .map(|(i, j)| (x[(i, j)] * 255.0).round() as u8)
        .collect();
    let (pi, pl) = (
        dir.join(format!("{stem}-images.idx")),
        dir.join(format!("{stem}-labels.idx")),
    );
    write_idx(&pi, &[n, 28, 28], &px);
    write_idx(
        &pl,
        &[n],
        &y[..n].iter().map(|v| *v as u8).collect::<Vec<_>>(),
    );
    (pi, pl)
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    weights: PathBuf,
    train: (PathBuf, PathBuf),
    test: (PathBuf, PathBuf),
    noise: PathBuf,
}

fn setup() -> Option<Setup> {
    let data = common::shared_data()?;
    let base = common::shared_baselines()?;
    let dir = common::tmpdir();
    let root = dir.path().to_path_buf();
    let m = data.join("mnist");
    let train = slice(
        &root,
        &m.join("train-images-idx3-ubyte.gz"),
        &m.join("train-labels-idx1-ubyte.gz"),
        600,
        "train",
    );
    let test = slice(
        &root,
        &m.join("t10k-images-idx3-ubyte.gz"),
        &m.join("t10k-labels-idx1-ubyte.gz"),
        120,
        "test",
    );
    let noise = root.join("noise-images.idx");
    let px: Vec<u8> = (0..50 * 784).map(|i| ((i * 7919) % 256) as u8).collect();
    write_idx(&noise, &[50, 28, 28], &px);
    Some(Setup {
        _dir: dir,
        root,
        weights: base.join("b6_seed0_lenet5.safetensors"),
        train,
        test,
        noise,
    })
}

/// The B6 LeNet-5, as the library reads it.
fn lenet5(t: &Setup) -> Model {
    let net = Sequential::parse(LENET5).unwrap();
    let w = weights::load(&t.weights, &net.param_layout()).unwrap();
    Model::new(net, w, LikelihoodKind::Categorical, 1.0, 1.0).unwrap()
}

/// The setup's training images and one-hot labels.
fn training_data(t: &Setup) -> (faer::Mat<f64>, faer::Mat<f64>) {
    let x = mnist::read_images(&t.train.0).unwrap();
    (
        x,
        mnist::one_hot(&mnist::read_labels(&t.train.1).unwrap(), 10),
    )
}

/// `evaluate` run with `args`, which must succeed, and the `evaluate.json` it wrote in `out`.
fn evaluate_json(args: &[&str], out: &Path) -> serde_json::Value {
    let run = run(args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("evaluate.json")).unwrap()).unwrap()
}

/// `evaluate` with the B6 LeNet-5 and the setup's training and test files.
fn base_args(t: &Setup) -> Vec<&str> {
    vec![
        "evaluate",
        "--model",
        s(&t.weights),
        "--arch",
        LENET5,
        "--train-images",
        s(&t.train.0),
        "--train-labels",
        s(&t.train.1),
        "--test-images",
        s(&t.test.0),
        "--test-labels",
        s(&t.test.1),
    ]
}

/// Every structure on the last layer (and KFAC on all weights), two angles and an OOD set:
/// the files are written and the MAP's numbers equal the library's on the same images.
#[test]
fn evaluate_writes_every_method_and_the_maps_numbers_are_the_librarys() {
    let Some(t) = setup() else { return };
    let out = t.root.join("eval");
    let mut args = base_args(&t);
    args.extend([
        "--angles",
        "0,90",
        "--ood-images",
        s(&t.noise),
        "--hessian",
        "kron,diag,full,lowrank",
        "--rank",
        "20",
        "--out",
        s(&out),
    ]);
    let json = evaluate_json(&args, &out);
    for f in [
        "evaluate.json",
        "metrics.csv",
        "reliability.csv",
        "ood.csv",
        "reliability.png",
        "reliability.svg",
        "shift.png",
        "shift.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let methods = json["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 5);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5 * 2);
    // The MAP on the clean set, from the library directly.
    let model = lenet5(&t);
    let x = mnist::read_images(&t.test.0).unwrap();
    let y = mnist::read_labels(&t.test.1).unwrap();
    let m = metrics(map_probabilities(&model, x.as_ref()).as_ref(), &y).unwrap();
    let map = &methods[0]["sets"][0]["metrics"];
    assert_eq!(map["acc"].as_f64().unwrap(), m.acc);
    assert_eq!(map["nll"].as_f64().unwrap(), m.nll);
    assert_eq!(map["ece"].as_f64().unwrap(), m.ece);
    for r in &methods[1..] {
        let delta = r["prior_precision"].as_f64().unwrap();
        assert!(delta > 0.0 && r["log_marglik"].as_f64().unwrap().is_finite());
        let auroc = r["ood"][0]["auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auroc));
        // Rotating by 90° shifts the data: the NLL grows.
        let (n0, n90) = (
            r["sets"][0]["metrics"]["nll"].as_f64().unwrap(),
            r["sets"][1]["metrics"]["nll"].as_f64().unwrap(),
        );
        assert!(n90 > n0, "{}: {n0} at 0°, {n90} at 90°", r["method"]);
    }
}

/// `--prior-structure layerwise`: one δ per tensor of the last layer in the JSON, the ones the
/// library's evidence maximum gives on the same images.
#[test]
fn evaluate_chooses_a_prior_per_layer_as_the_library_does() {
    let Some(t) = setup() else { return };
    let out = t.root.join("layerwise");
    let mut args = base_args(&t);
    args.extend([
        "--hessian",
        "kron,diag",
        "--prior-structure",
        "layerwise",
        "--out",
        s(&out),
    ]);
    let json = evaluate_json(&args, &out);
    assert_eq!(json["prior_structure"], "layerwise");
    let model = lenet5(&t);
    let (x, y) = training_data(&t);
    for (r, structure) in json["methods"].as_array().unwrap()[1..]
        .iter()
        .zip([HessianStructure::Kron, HessianStructure::Diag])
    {
        assert_eq!(
            r["prior_tensors"],
            serde_json::json!(["11.weight", "11.bias"])
        );
        let mut la = Laplace::fit_subset(
            model.clone(),
            x.as_ref(),
            y.as_ref(),
            structure,
            Subset::LastLayer,
            &FitOptions::default(),
        )
        .unwrap();
        let best = la.optimize_prior_precision_layerwise().unwrap();
        assert_eq!(r["prior_precision"], serde_json::json!(best.deltas));
        assert_eq!(r["log_marglik"].as_f64().unwrap(), best.log_marglik);
        assert_ne!(best.deltas[0], best.deltas[1]);
    }
}

/// laplace-torch's other predictives: the network at weight draws (`--pred-type nn`) from a
/// posterior at a temperature, and the normalised bridge: the library's numbers, recorded.
#[test]
fn evaluate_predicts_with_the_network_at_weight_draws_and_a_temperature() {
    let Some(t) = setup() else { return };
    let model = lenet5(&t);
    let (x, y) = training_data(&t);
    let xt = mnist::read_images(&t.test.0).unwrap();
    let labels = mnist::read_labels(&t.test.1).unwrap();
    let mut la = Laplace::fit_subset(
        model,
        x.as_ref(),
        y.as_ref(),
        HessianStructure::Kron,
        Subset::LastLayer,
        &FitOptions::default(),
    )
    .unwrap();
    la.set_temperature(0.5).unwrap();
    la.optimize_prior_precision().unwrap();
    for (extra, pred) in [
        (
            vec!["--pred-type", "nn", "--samples", "30"],
            la.predict_nn(xt.as_ref(), 30, 0),
        ),
        (
            vec!["--link", "bridge_norm"],
            la.predict(xt.as_ref(), Link::BridgeNorm),
        ),
    ] {
        let out = t.root.join(extra[1]);
        let mut args = base_args(&t);
        args.extend(["--temperature", "0.5", "--out", s(&out)]);
        args.extend(extra.iter().copied());
        let json = evaluate_json(&args, &out);
        assert_eq!(json["temperature"], 0.5);
        let p = pred.unwrap().probabilities.unwrap();
        let nll = (0..xt.nrows())
            .map(|i| -p[(i, labels[i] as usize)].ln())
            .sum::<f64>()
            / xt.nrows() as f64;
        let got = json["methods"][1]["sets"][0]["metrics"]["nll"]
            .as_f64()
            .unwrap();
        assert!((got - nll).abs() < 1e-12 * nll, "{extra:?}: {got} {nll}");
    }
}

/// `--dtype f32`: the forward passes in f32 give f64's numbers to 1e-4 (last-layer KFAC, whose
/// fit and predictive are forward passes), and evaluate.json says which ran.
#[test]
fn evaluate_in_f32_gives_the_numbers_of_f64() {
    let Some(t) = setup() else { return };
    let mut json = Vec::new();
    for dtype in ["f64", "f32"] {
        let out = t.root.join(format!("dtype-{dtype}"));
        let mut args = base_args(&t);
        args.extend(["--hessian", "kron", "--dtype", dtype, "--out", s(&out)]);
        json.push(evaluate_json(&args, &out));
    }
    assert_eq!(json[1]["dtype"], "f32");
    let methods = |i: usize| json[i]["methods"].as_array().unwrap().clone();
    assert_eq!(methods(0).len(), 2, "the MAP and last-layer KFAC");
    for (m64, m32) in methods(0).iter().zip(&methods(1)) {
        for metric in ["nll", "ece", "brier", "conf"] {
            let [a, b] = [m64, m32].map(|m| m["sets"][0]["metrics"][metric].as_f64().unwrap());
            assert!(
                (a - b).abs() < 1e-4,
                "{} {metric}: f64 {a}, f32 {b}",
                m64["name"]
            );
        }
    }
}

/// Bad options and inputs: exit code 2, the culprit named, nothing written.
#[test]
fn evaluate_refuses_bad_options_before_any_work() {
    let Some(t) = setup() else { return };
    let out = t.root.join("never");
    let mut base = base_args(&t);
    base.extend(["--out", s(&out)]);
    let noise = s(&t.noise);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--hessian", "kron,bogus"], "--hessian"),
        (vec!["--subset", "first-layer"], "--subset"),
        (vec!["--angles", "0,north"], "--angles"),
        (vec!["--prior", "-3"], "--prior"),
        (vec!["--prior-structure", "per-weight"], "--prior-structure"),
        (
            vec!["--prior-structure", "layerwise", "--prior", "3"],
            "--prior-structure",
        ),
        (
            vec![
                "--prior-structure",
                "layerwise",
                "--hessian",
                "kron,lowrank",
            ],
            "layerwise",
        ),
        (vec!["--link", "logit"], "--link"),
        (vec!["--rank", "0"], "--rank"),
        (vec!["--rank", "5"], "give --hessian lowrank"),
        (vec!["--samples", "5"], "draws of --link mc"),
        (vec!["--pred-type", "mean"], "--pred-type"),
        (vec!["--pred-type", "nn", "--link", "probit"], "--link"),
        (
            vec!["--pred-type", "nn", "--samples", "1"],
            "two weight draws",
        ),
        (vec!["--temperature", "0"], "--temperature"),
        (vec!["--dtype", "f16"], "--dtype"),
        (vec!["--freeze", "batchnorm"], "give --subset all"),
        (vec!["--subset", "subnetwork"], "subnetwork_indices"),
        (vec!["--limit", "0"], "--limit"),
        (vec!["--ood-images", "/nonexistent/x.idx"], "--ood-images"),
        (
            vec!["--rotated", "--angles", "0,30,60,90,120,150,180"],
            "--rotated",
        ),
        (vec!["--arch", "4:dense3"], "tensors"),
        (vec!["--test-images", noise], "labels"),
        (
            vec![
                "--hessian",
                "full",
                "--subset",
                "all",
                "--max-memory",
                "0.01",
            ],
            "GiB",
        ),
    ];
    for (extra, culprit) in cases {
        // Each pair replaces the option's value in `base`, or is added.
        let mut args: Vec<&str> = base.to_vec();
        let mut rest = extra.iter().copied().peekable();
        while let Some(opt) = rest.next() {
            let value = rest.next_if(|v| !v.starts_with("--") || v.parse::<f64>().is_ok());
            match (args.iter().position(|a| *a == opt), value) {
                (Some(i), Some(v)) => args[i + 1] = v,
                (_, v) => args.extend(std::iter::once(opt).chain(v)),
            }
        }
        let run = run(&args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(culprit), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    // Images without their labels, or labels without their images: the data folder's other
    // file is not theirs.
    for (drop, culprit) in [
        ("--test-labels", "--test-images"),
        ("--train-images", "--train-labels"),
    ] {
        let i = base.iter().position(|a| *a == drop).unwrap();
        let mut args = base.clone();
        args.drain(i..i + 2);
        let run = run(&args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{drop}: {err}");
        assert!(
            err.contains(&format!("{culprit}: give {drop} with it")),
            "{drop}: {err}"
        );
        assert!(!out.exists());
    }
}
