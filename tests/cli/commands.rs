//! The command line: each command end to end on small settings, and bad input refused with
//! exit code 2, a message naming the culprit, and no output written.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use dnn2gp::nn::{Activation, Sequential};

#[test]
fn train_then_gp_on_toy_data() {
    let dir = common::tmpdir();
    let (model, gp) = (dir.path().join("model"), dir.path().join("gp"));
    let s = ok(&[
        "train",
        "--data",
        "toy",
        "--hidden",
        "10",
        "--delta",
        "0.5",
        "--epochs",
        "300",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(s.contains("P = 41"), "{s}");
    for f in ["model.json", "history.csv", "model.safetensors"] {
        assert!(model.join(f).exists(), "{f}");
    }
    // One model file: the self-describing model, a state_dict under PyTorch's names; the
    // record holds the run, not the model.
    assert!(!model.join("params.npy").exists());
    let saved = dnn2gp::train::model::Model::load(&model.join("model.safetensors")).unwrap();
    let net = Sequential::mlp(vec![2, 10, 1], Activation::Tanh).unwrap();
    assert_eq!(saved.net, net.clone().into());
    let from_st =
        dnn2gp::nn::weights::load(&model.join("model.safetensors"), &net.param_layout()).unwrap();
    assert_eq!(from_st, saved.w);
    let record = json(&model.join("model.json"));
    assert!(record.get("architecture").is_none() && record["loss"].is_number());
    ok(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--samples",
        "50",
        "--out",
        gp.to_str().unwrap(),
    ]);
    let summary = json(&gp.join("gp.json"));
    let (lml, lap) = (
        summary["log_marglik"].as_f64().unwrap(),
        summary["laplace_log_evidence"].as_f64().unwrap(),
    );
    assert!(summary["grad_norm"].as_f64().unwrap() < 1e-8);
    assert!((lml - lap).abs() < 1e-7 * lml.abs(), "{lml} vs {lap}");
    assert_eq!(summary["space"], "weight");
    for f in [
        "kernel.npy",
        "test_predictive.csv",
        "predictive.csv",
        "regression.png",
        "regression.svg",
    ] {
        assert!(gp.join(f).exists(), "{f}");
    }
    // The function-space GP gives the same marginal likelihood.
    let gp2 = dir.path().join("gp2");
    ok(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--space",
        "function",
        "--samples",
        "10",
        "--out",
        gp2.to_str().unwrap(),
    ]);
    let lml2 = json(&gp2.join("gp.json"))["log_marglik"].as_f64().unwrap();
    assert!((lml - lml2).abs() < 1e-8 * lml.abs());
    // The δ path at this MAP passes through the same value at the model's δ = 0.5.
    let gp3 = dir.path().join("gp3");
    ok(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--delta-grid",
        "0.05,0.5,5",
        "--samples",
        "10",
        "--out",
        gp3.to_str().unwrap(),
    ]);
    let path = std::fs::read_to_string(gp3.join("marglik_path.csv")).unwrap();
    let row: Vec<f64> = path
        .lines()
        .nth(2)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(row[0], 0.5);
    assert!((row[1] - lml).abs() < 1e-8 * lml.abs() && (row[2] - lap).abs() < 1e-8 * lap.abs());
    // --marglik: δ and σ are the library's maximum of the evidence on the same data.
    let gp4 = dir.path().join("gp4");
    let said = ok(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--marglik",
        "--samples",
        "10",
        "--out",
        gp4.to_str().unwrap(),
    ]);
    assert!(said.contains("by the Laplace evidence"), "{said}");
    let chosen = json(&gp4.join("gp.json"));
    let m = dnn2gp::train::model::Model::load(&model.join("model.safetensors")).unwrap();
    let split = dnn2gp::data::toy::toy_sets(&dnn2gp::data::toy::ToyConfig::default(), 1).remove(0);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    assert_eq!(
        m.data.as_deref(),
        Some(dnn2gp::train::model::fingerprint(x, y).as_str())
    );
    let mut la = dnn2gp::posterior::Laplace::fit(
        m,
        x,
        y,
        dnn2gp::posterior::HessianStructure::Full,
        &Default::default(),
    )
    .unwrap();
    let best = la.optimize_noise_and_prior().unwrap();
    assert_eq!(chosen["delta"].as_f64().unwrap(), best.delta);
    assert!((chosen["sigma"].as_f64().unwrap() - best.sigma).abs() < 1e-12 * best.sigma);
    let evidence = chosen["laplace_log_evidence"].as_f64().unwrap();
    assert!((evidence - best.log_marglik).abs() < 1e-8 * evidence.abs());
    // w* is not the MAP at the chosen δ, σ: the warning says to retrain at them.
    let warned = chosen["warnings"].to_string();
    assert!(
        warned.contains("retrain at the chosen values (`dnn2gp train … --delta ")
            && warned.contains(&format!("δ = {}", chosen["delta"].as_f64().unwrap())[..9]),
        "{warned}"
    );
}

#[test]
fn sweep_writes_csv_with_the_documented_header() {
    let dir = common::tmpdir();
    let out = dir.path().join("sweep");
    ok(&[
        "sweep",
        "--data",
        "toy",
        "--sets",
        "2",
        "--hidden",
        "5",
        "--grid",
        "0.1,1,10",
        "--epochs",
        "200",
        "--out",
        out.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "param,value,neg_log_marglik,train_mse,test_mse,laplace_neg_log_marglik,\
             stationarity_gap,grad_norm,grad_rel"
        )
    );
    assert_eq!(lines.count(), 3);
    let sets = std::fs::read_to_string(out.join("sweep_sets.csv")).unwrap();
    assert_eq!(sets.lines().count(), 1 + 2 * 3);
    assert!(out.join("sweep.png").exists() && out.join("sweep.svg").exists());
    let width = dir.path().join("width");
    ok(&[
        "sweep",
        "--data",
        "toy",
        "--param",
        "width",
        "--grid",
        "2,8",
        "--epochs",
        "100",
        "--out",
        width.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(width.join("sweep.csv"))
        .unwrap()
        .contains("width,8,"));
}

#[test]
fn demo_writes_figures_and_summary() {
    let dir = common::tmpdir();
    let out = dir.path().join("demo");
    ok(&[
        "demo",
        "--sets",
        "1",
        "--grid-points",
        "3",
        "--epochs",
        "200",
        "--vi-epochs",
        "50",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = json(&out.join("summary.json"));
    assert!(s["chosen_delta_laplace"].as_f64().unwrap() > 0.0);
    assert!(s["chosen_delta_vi"].as_f64().unwrap() > 0.0);
    for f in [
        "laplace/sweep.png",
        "vi/sweep.png",
        "sweep_both.png",
        "sweep_both.svg",
        "regression.png",
        "regression.svg",
    ] {
        let meta = std::fs::metadata(out.join(f)).unwrap();
        assert!(meta.len() > 1000, "{f}");
    }
}

#[test]
fn snelson_model_from_shared_data() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let model = dir.path().join("m");
    ok(&[
        "train",
        "--data",
        "snelson",
        "--data-dir",
        data.to_str().unwrap(),
        "--hidden",
        "32",
        "--activation",
        "sigmoid",
        "--delta",
        "0.1",
        "--sigma",
        "0.286",
        "--epochs",
        "2000",
        "--lr",
        "0.01",
        "--out",
        model.to_str().unwrap(),
    ]);
    let gp = dir.path().join("gp");
    ok(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--samples",
        "100",
        "--out",
        gp.to_str().unwrap(),
    ]);
    // The DNN2GP band widens away from the data: variance at x = 10 far above that at x = 4.
    let csv = std::fs::read_to_string(gp.join("predictive.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let var_at = |x: f64| {
        rows.iter()
            .min_by(|a, b| (a[0] - x).abs().total_cmp(&(b[0] - x).abs()))
            .unwrap()[3]
    };
    assert!(
        var_at(10.0) > 20.0 * var_at(4.0),
        "{} vs {}",
        var_at(10.0),
        var_at(4.0)
    );
    assert!(var_at(-4.0) > 20.0 * var_at(4.0));
}

#[test]
fn bad_input_exits_2_without_output() {
    let dir = common::tmpdir();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "x,y\n1,2\n3,abc\n").unwrap();
    // A model folder with a truncated model file.
    let model = dir.path().join("model");
    ok(&[
        "train",
        "--hidden",
        "3",
        "--epochs",
        "10",
        "--polish-iters",
        "0",
        "--out",
        s(&model),
    ]);
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(model.join("model.safetensors"), &bytes[..bytes.len() - 8]).unwrap();
    refusals(
        &dir.path().join("out"),
        &[
            (vec!["train", "--data", s(&bad)], "bad.csv:3"),
            (vec!["train", "--delta", "-1", "--epochs", "1"], "--delta"),
            (vec!["train", "--sigma", "0", "--epochs", "1"], "--sigma"),
            (
                vec!["train", "--activation", "swish", "--epochs", "1"],
                "swish",
            ),
            (vec!["train", "--arch", "2:dense3,swish,dense1"], "--arch"),
            (
                vec!["train", "--arch", "3:dense1", "--epochs", "1"],
                "3 inputs",
            ),
            (vec!["sweep", "--grid", "logspace:-2:x:3"], "--grid"),
            (vec!["sweep", "--param", "depth"], "depth"),
            (vec!["sweep", "--arch", "2:dense3,tanh,dense1"], "--arch"),
            (vec!["train", "--no-such-flag"], "--no-such-flag"),
            (vec!["gp", "--model", s(&model)], "model.safetensors"),
            (
                vec!["gp", "--model", s(&model), "--hessian", "blockdiag"],
                "blockdiag",
            ),
        ],
    );
}

#[test]
fn memory_limit_is_enforced_before_allocating() {
    let dir = common::tmpdir();
    let model = dir.path().join("model");
    ok(&[
        "train",
        "--hidden",
        "3",
        "--epochs",
        "10",
        "--out",
        model.to_str().unwrap(),
    ]);
    let out = dir.path().join("out");
    let err = refused(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--space",
        "function",
        "--max-memory",
        "0.00001",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("GiB") && err.contains("limit"), "{err}");
}

#[test]
fn help_has_examples() {
    let s = ok(&["--help"]);
    assert!(s.contains("Examples:") && s.contains("dnn2gp demo"));
    for cmd in [
        vec!["demo"],
        vec!["train"],
        vec!["import"],
        vec!["gp"],
        vec!["vi"],
        vec!["sweep"],
        vec!["reproduce", "mnist"],
        vec!["reproduce", "binary-mnist"],
        vec!["data", "fetch"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        assert!(ok(&args).contains("Example"), "{cmd:?}");
    }
}

#[test]
fn vi_command_writes_predictives_and_kernel_evolution() {
    let dir = common::tmpdir();
    let out = dir.path().join("vi");
    let s = ok(&[
        "vi",
        "--data",
        "toy",
        "--hidden",
        "5",
        "--delta",
        "1",
        "--vi-epochs",
        "40",
        "--mc-samples",
        "2",
        "--kernel-every",
        "10",
        "--kernel-points",
        "12",
        "--samples",
        "20",
        "--vi-gp-samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(s.contains("40 steps"), "{s}");
    let summary = json(&out.join("vi.json"));
    assert!(summary["log_marglik_converged"]
        .as_f64()
        .unwrap()
        .is_finite());
    let (shape, kernels) = dnn2gp::io::read_npy(&out.join("kernels.npy")).unwrap();
    assert_eq!(shape, vec![4, 12, 12], "snapshots at steps 0, 10, 20, 30");
    // Each kernel is symmetric positive semi-definite on its diagonal.
    assert!((0..12).all(|i| kernels[i * 12 + i] >= 0.0));
    for f in [
        "mu.npy",
        "precision.npy",
        "regression.png",
        "kernel_evolution.png",
        "kernel_evolution.svg",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let err = refused(&["vi", "--beta", "1.5", "--out", out.to_str().unwrap()]);
    assert!(err.contains("--beta"), "{err}");
    let err = refused(&["vi", "--covariance", "kron", "--out", out.to_str().unwrap()]);
    assert!(err.contains("kron"), "{err}");
}

#[test]
fn sweep_with_both_methods() {
    let dir = common::tmpdir();
    let out = dir.path().join("both");
    ok(&[
        "sweep",
        "--data",
        "toy",
        "--method",
        "both",
        "--hidden",
        "4",
        "--grid",
        "0.3,3",
        "--epochs",
        "100",
        "--vi-epochs",
        "30",
        "--vi-gp-samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    for f in [
        "laplace/sweep.csv",
        "vi/sweep.csv",
        "sweep_both.png",
        "sweep_both.svg",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let vi = std::fs::read_to_string(out.join("vi/sweep.csv")).unwrap();
    assert_eq!(vi.lines().count(), 3);
}

#[test]
fn malformed_inputs_everywhere_exit_2_with_the_culprit_named() {
    let dir = common::tmpdir();
    let d = dir.path();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let out = d.join("out");
    let o = out.to_str().unwrap();
    let nan = write("nan.csv", b"x,y\n1,2\n2,nan\n");
    let ragged = write("ragged.csv", b"1,2\n3\n");
    let empty = write("empty.csv", b"");
    let binary = write("binary.csv", &[0xff, 0xfe, 0x00, 0x01]);
    let garbage = write("w.safetensors", b"not a safetensors file");
    let mnist = d.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    // Labels with the images' magic number; the images file truncated.
    std::fs::write(
        mnist.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28],
    )
    .unwrap();
    for name in [
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(mnist.join(name), [0u8, 0, 8, 1, 0, 0, 0, 1, 7]).unwrap();
    }
    let dd = d.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--data", &nan, "--epochs", "1"], "nan.csv:3"),
        (
            vec!["train", "--data", &ragged, "--epochs", "1"],
            "ragged.csv:2",
        ),
        (
            vec!["train", "--data", &empty, "--epochs", "1"],
            "empty.csv",
        ),
        (
            vec!["train", "--data", &binary, "--epochs", "1"],
            "binary.csv",
        ),
        (
            vec!["train", "--data", "uci:nosuchset", "--data-dir", dd],
            "nosuchset",
        ),
        (
            vec![
                "train",
                "--data",
                "toy",
                "--toy-noise",
                "0.1,1",
                "--epochs",
                "1",
            ],
            "noise",
        ),
        (vec!["train", "--epochs", "1", "--lr", "-0.1"], "--lr"),
        (
            vec!["train", "--epochs", "1", "--likelihood", "poisson"],
            "poisson",
        ),
        (
            vec!["import", "--weights", &garbage, "--hidden", "3"],
            "w.safetensors",
        ),
        (vec!["gp", "--model", dd], "model.json"),
        (
            vec!["reproduce", "mnist", "--data-dir", dd, "--epochs", "1"],
            "train-images-idx3-ubyte",
        ),
        (
            vec![
                "reproduce",
                "mnist",
                "--data-dir",
                dd,
                "--per-class",
                "100000",
            ],
            "GiB",
        ),
        (
            vec!["train", "--max-memory", "-1", "--epochs", "1"],
            "--max-memory",
        ),
        (vec!["sweep", "--grid", "logspace:2:-2:0"], "--grid"),
        (
            vec!["vi", "--mc-samples", "0", "--vi-epochs", "1"],
            "sample",
        ),
    ];
    for (mut args, words) in cases {
        args.extend(["--out", o]);
        let err = refused(&args);
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote output");
    }
}

#[test]
fn training_that_diverges_says_at_which_step() {
    let dir = common::tmpdir();
    let out = dir.path().join("out");
    // Finite data whose squared residuals overflow.
    let huge = dir.path().join("huge.csv");
    std::fs::write(&huge, "x,y\n0,1e200\n1,-1e200\n2,1e200\n").unwrap();
    let run = run(&[
        "train",
        "--data",
        huge.to_str().unwrap(),
        "--hidden",
        "3",
        "--epochs",
        "50",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("diverged at step"), "{err}");
    assert!(!out.exists());
}
