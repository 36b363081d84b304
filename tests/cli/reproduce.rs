//! `reproduce mnist` and `reproduce binary-mnist` end to end on small settings (the 8×8 digits,
//! and LeNet-5 on the first MNIST images), the saved model reloaded, and bad options refused.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use std::path::Path;

use dnn2gp::io::read_npy;

#[test]
fn mnist_views_on_digits_and_reloading_the_model() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let out = dir.path().join("digits");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    ok(&[
        "reproduce",
        "mnist",
        "--data",
        "digits",
        "--data-dir",
        d,
        "--epochs",
        "30",
        "--lr",
        "0.01",
        "--out",
        o,
    ]);
    let s = json(&out.join("summary.json"));
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.85, "{s}");
    assert_eq!(s["epochs"].as_array().unwrap().len(), 30);
    let v = &s["views"];
    assert_eq!(v["images"], 300);
    assert!(v["gp_mean_agreement"].as_f64().unwrap() >= 0.95, "{v}");
    assert_eq!(shape(&out.join("kernel_full.npy")), vec![3000, 3000]);
    assert_eq!(shape(&out.join("kernel_diag.npy")), vec![300, 300]);
    assert_eq!(shape(&out.join("kernel_sum.npy")), vec![300, 300]);
    for name in ["gp_mean", "p", "p_probit", "var_f", "var_y", "logits"] {
        assert_eq!(
            shape(&out.join(format!("{name}.npy"))),
            vec![300, 10],
            "{name}"
        );
    }
    let (_, labels) = read_npy(&out.join("labels.npy")).unwrap();
    assert!(labels.windows(2).all(|w| w[0] <= w[1]), "sorted by class");
    // The diag view is the trace over classes of the full kernel.
    let (_, full) = read_npy(&out.join("kernel_full.npy")).unwrap();
    let (_, diag) = read_npy(&out.join("kernel_diag.npy")).unwrap();
    let tr: f64 = (0..10)
        .map(|k| full[(3 * 10 + k) * 3000 + 7 * 10 + k])
        .sum();
    assert!((diag[3 * 300 + 7] - tr).abs() <= 1e-12 * tr.abs().max(1.0));
    for f in [
        "gp.png",
        "gp.svg",
        "predictive.png",
        "predictive.svg",
        "model.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }

    // Reloading the saved weights gives the same network outputs and no training.
    let again = dir.path().join("again");
    let model = out.join("model.safetensors");
    ok(&[
        "reproduce",
        "mnist",
        "--data",
        "digits",
        "--data-dir",
        d,
        "--model",
        model.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    let (_, a) = read_npy(&out.join("logits.npy")).unwrap();
    let (_, b) = read_npy(&again.join("logits.npy")).unwrap();
    assert_eq!(a, b);
    assert_eq!(json(&again.join("summary.json"))["trained"], false);
}

#[test]
fn binary_vogn_on_digits() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let out = dir.path().join("bin");
    ok(&[
        "reproduce",
        "binary-mnist",
        "--data",
        "digits",
        "--data-dir",
        data.to_str().unwrap(),
        "--digits",
        "0,1",
        "--vi-epochs",
        "30",
        "--vi-lr",
        "0.01",
        "--beta",
        "0.01",
        "--batch-size",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = json(&out.join("summary.json"));
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.9, "{s}");
    assert_eq!(s["views"]["images"], 60);
    assert_eq!(s["views"]["outputs"], 1);
    assert_eq!(shape(&out.join("kernel_full.npy")), vec![60, 60]);
    assert_eq!(shape(&out.join("var_f.npy")), vec![60, 1]);
    // VOGN's variances are positive and bounded by the prior variance 1/δ.
    let (_, s2) = read_npy(&out.join("posterior_variance.npy")).unwrap();
    assert!(s2.iter().all(|v| *v > 0.0 && *v <= 0.1 + 1e-12));
}

#[test]
fn lenet5_on_the_first_mnist_images() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let out = dir.path().join("mnist");
    ok(&[
        "reproduce",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--train-limit",
        "2000",
        "--epochs",
        "3",
        "--lr",
        "0.005",
        "--per-class",
        "3",
        "--images",
        "test",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = json(&out.join("summary.json"));
    assert_eq!(s["n_params"], 44426);
    assert_eq!(s["train_images"], 2000);
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.8, "{s}");
    assert_eq!(shape(&out.join("kernel_full.npy")), vec![300, 300]);
    assert_eq!(shape(&out.join("gp_mean.npy")), vec![30, 10]);
    // The weights load back under PyTorch's names.
    let layout = dnn2gp::nn::Sequential::lenet5(1, 28, 10)
        .unwrap()
        .param_layout();
    let w = dnn2gp::nn::weights::load(&out.join("model.safetensors"), &layout).unwrap();
    assert_eq!(w.len(), 44426);
}

#[test]
fn bad_options_are_refused_before_any_work() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let d = data.to_str().unwrap();
    let o = dir.path().join("x");
    let o = o.to_str().unwrap();
    for (args, words) in [
        (
            vec![
                "reproduce",
                "binary-mnist",
                "--data",
                "digits",
                "--digits",
                "3,3",
            ],
            "two different digits",
        ),
        (
            vec![
                "reproduce",
                "binary-mnist",
                "--data",
                "digits",
                "--digits",
                "3,12",
            ],
            "two different digits",
        ),
        (
            vec![
                "reproduce",
                "mnist",
                "--data",
                "digits",
                "--images",
                "valid",
            ],
            "--images",
        ),
        (
            vec!["reproduce", "mnist", "--data", "cifar"],
            "unknown image data 'cifar'",
        ),
        (
            vec![
                "reproduce",
                "mnist",
                "--data",
                "digits",
                "--arch",
                "1x8x8:conv6k3,relu,dense7",
            ],
            "outputs",
        ),
        (
            vec![
                "reproduce",
                "mnist",
                "--data",
                "digits",
                "--arch",
                "1x8x8:conv6k9",
            ],
            "kernel 9",
        ),
        (
            vec!["reproduce", "mnist", "--data", "digits", "--delta", "-1"],
            "--delta",
        ),
        (
            vec!["reproduce", "mnist", "--data", "digits", "--lr", "0"],
            "--lr",
        ),
        (
            vec!["reproduce", "mnist", "--data", "digits", "--per-class", "0"],
            "--per-class",
        ),
        (
            vec![
                "reproduce",
                "mnist",
                "--data",
                "digits",
                "--train-limit",
                "0",
            ],
            "--train-limit",
        ),
        (
            vec!["reproduce", "mnist", "--data", "digits", "--first", "0"],
            "--first",
        ),
        (
            vec![
                "reproduce",
                "mnist",
                "--data",
                "digits",
                "--batch-size",
                "0",
            ],
            "--batch-size",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--data-dir", d, "--out", o]);
        if args[1] == "mnist" {
            all.extend(["--epochs", "1"]);
        }
        let out = run(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(
            err.contains(words) && !err.contains("panicked"),
            "{all:?}: {err}"
        );
        assert!(!Path::new(o).exists(), "{all:?} wrote output");
    }
    // A folder without MNIST says how to get it.
    let out = run(&["reproduce", "mnist", "--data-dir", o, "--out", o]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dnn2gp data fetch mnist"));
}

#[test]
fn the_saved_posterior_variance_is_the_dense_ggn_diagonal() {
    // The streamed GGN diagonal behind posterior_variance.npy, against diag(JᵀΛJ) formed from
    // the dense Jacobian of the saved network on the same 40 digits.
    use dnn2gp::curvature::Linearization;
    use dnn2gp::likelihood::Categorical;
    use dnn2gp::nn::{Network, Sequential};
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let out = dir.path().join("digits");
    let delta = 2.0;
    ok(&[
        "reproduce",
        "mnist",
        "--data",
        "digits",
        "--data-dir",
        data.to_str().unwrap(),
        "--train-limit",
        "40",
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--delta",
        "2",
        "--first",
        "25",
        "--out",
        out.to_str().unwrap(),
    ]);
    // --first 25: the GP views on exactly the first 25 training images.
    let s = json(&out.join("summary.json"));
    assert_eq!(s["views"]["images"], 25, "{s}");
    let (shape, labels) = read_npy(&out.join("labels.npy")).unwrap();
    assert_eq!(shape, [25]);
    assert!(labels.windows(2).all(|p| p[0] <= p[1]), "sorted by class");
    let net = Sequential::parse("1x8x8:conv6k3,relu,pool,flatten,dense32,relu,dense10").unwrap();
    let w = dnn2gp::nn::weights::load(&out.join("model.safetensors"), &net.param_layout()).unwrap();
    let d = dnn2gp::data::mnist::load_digits(&data.join("digits/digits.csv.gz"), 1500).unwrap();
    let x = d.train_x.as_ref().subrows(0, 40);
    let y = faer::Mat::from_fn(40, 10, |i, c| f64::from(u8::from(d.train_y[i] == c)));
    let lin = Linearization::new(&net, &Categorical, x, y.as_ref(), &w);
    let dense = dnn2gp::linalg::col_sq_norms(lin.sqrt_lambda_jac().as_ref());
    let (shape, saved) = read_npy(&out.join("posterior_variance.npy")).unwrap();
    assert_eq!(shape, [net.n_params()]);
    let mut informative = 0;
    for (s, h) in saved.iter().zip(&dense) {
        let expected = 1.0 / (h + delta);
        assert!(
            (s - expected).abs() <= 1e-10 * expected,
            "{s} vs {expected}"
        );
        informative += usize::from(*h > 1e-6);
    }
    assert!(
        informative > net.n_params() / 2,
        "the data inform most weights"
    );
}

#[test]
fn predict_on_idx_images_with_a_reproduced_model() {
    // A folder written by `reproduce mnist`, the first 40 test images as an IDX file of their
    // own: probit and Monte Carlo probabilities from the saved diagonal posterior, and the
    // accuracy on exactly those images.
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let model = dir.path().join("lenet");
    ok(&[
        "reproduce",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--train-limit",
        "300",
        "--epochs",
        "1",
        "--per-class",
        "1",
        "--out",
        model.to_str().unwrap(),
    ]);
    // gp takes a model and its data: on this folder it points to its model file and to predict.
    let gp = dir.path().join("gp");
    let o = run(&["gp", "--model", s(&model), "--out", s(&gp)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model.safetensors with --data") && err.contains("dnn2gp predict --model"),
        "{err}"
    );
    assert!(!gp.exists());
    let images =
        dnn2gp::data::mnist::read_images(&data.join("mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let labels =
        dnn2gp::data::mnist::read_labels(&data.join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let n = 40usize;
    let mut idx = vec![0u8, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        idx.extend(d.to_be_bytes());
    }
    for i in 0..n {
        idx.extend(images.row(i).iter().map(|v| (v * 255.0).round() as u8));
    }
    let mut lab = vec![0u8, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    lab.extend(labels[..n].iter().map(|&l| l as u8));
    let (img_path, lab_path) = (dir.path().join("x.idx"), dir.path().join("y.idx"));
    std::fs::write(&img_path, idx).unwrap();
    std::fs::write(&lab_path, lab).unwrap();
    let out = dir.path().join("pred");
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--data",
        img_path.to_str().unwrap(),
        "--labels",
        lab_path.to_str().unwrap(),
        "--samples",
        "20",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = json(&out.join("predict.json"));
    assert_eq!(s["inputs"], 40);
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&acc) && s["test_nll"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert_eq!(shape(&out.join("f_var.npy")), vec![40, 10, 10]);
    // The probabilities of each image sum to 1: the MAP's and the probit link's.
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert!(
        csv.starts_with("example,class,y,logit,var_f,p_map,p_probit,p_mc\n"),
        "{csv}"
    );
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    for image in rows.chunks(10) {
        for col in [5, 6, 7] {
            let sum: f64 = image.iter().map(|r| r[col]).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        }
    }
    assert!(
        s["test_accuracy_map"].as_f64().is_some() && s["link"] == "probit",
        "{s}"
    );
    // The saved posterior at another δ, through another link; its structure is fixed.
    let p2 = dir.path().join("p2");
    let printed = ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--data",
        img_path.to_str().unwrap(),
        "--labels",
        lab_path.to_str().unwrap(),
        "--delta",
        "2",
        "--link",
        "mc",
        "--samples",
        "20",
        "--out",
        p2.to_str().unwrap(),
    ]);
    assert!(
        printed.contains("δ = 2 (given)") && printed.contains("mc link"),
        "{printed}"
    );
    assert!(printed.contains("(MAP "), "{printed}");
    assert_eq!(json(&p2.join("predict.json"))["delta"], 2.0);
    let csv = std::fs::read_to_string(p2.join("predictions.csv")).unwrap();
    assert!(
        csv.starts_with("example,class,y,logit,var_f,p_map,p_mc\n"),
        "{csv}"
    );
    let o = run(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--data",
        img_path.to_str().unwrap(),
        "--hessian",
        "kron",
        "--out",
        dir.path().join("p3").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--hessian"));
}

#[test]
fn idx_images_of_another_size_are_refused_not_cropped() {
    // 10×10 images in the MNIST file names: LeNet-5 takes 28×28, so the run stops before
    // training, naming the sizes (before, a conv-first network cropped them silently).
    let dir = common::tmpdir();
    let mnist = dir.path().join("mnist");
    std::fs::create_dir(&mnist).unwrap();
    let n = 12u32;
    for (name, magic, dims, body) in [
        (
            "train-images-idx3-ubyte",
            3u8,
            vec![n, 10, 10],
            vec![7u8; 1200],
        ),
        (
            "t10k-images-idx3-ubyte",
            3,
            vec![n, 10, 10],
            vec![7u8; 1200],
        ),
        (
            "train-labels-idx1-ubyte",
            1,
            vec![n],
            (0..12u8).map(|i| i % 10).collect(),
        ),
        (
            "t10k-labels-idx1-ubyte",
            1,
            vec![n],
            (0..12u8).map(|i| i % 10).collect(),
        ),
    ] {
        let mut bytes = vec![0u8, 0, 8, magic];
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(body);
        std::fs::write(mnist.join(name), bytes).unwrap();
    }
    let out = dir.path().join("o");
    let o = run(&[
        "reproduce",
        "mnist",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("have 100 pixels each") && err.contains("784 inputs"),
        "{err}"
    );
    assert!(!out.exists());
}
